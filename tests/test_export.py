"""fcpts.export: the sparse file restores the pruned model exactly (fp32) or to fp16 rounding, is smaller than the
dense file, refuses what it cannot load with a clear message, and ``fcpts export RUN_DIR`` writes it once."""
import os

import numpy as np
import pytest
import torch
import torchvision

from conftest import make_model
from fcpts import load_sparse, save_sparse
from fcpts.allocation import masked_copy, uniform_allocation
from fcpts.cli import main
from fcpts.export import BIT_ORDER, FORMAT, export_run, load_sparse_state_dict, worth_encoding
from test_cli import TINY


@pytest.fixture(scope="module")
def pruned():
    """resnet18 (10 classes), magnitude-pruned to exactly 80 % with real zeros, BN stats made non-trivial."""
    model = make_model("resnet18")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.normal_(0, 0.1)
    return masked_copy(model, uniform_allocation(model, 0.8)).eval()


def fresh_resnet18():
    torch.manual_seed(123)  # other values than the pruned model's: loading must replace them all
    return torchvision.models.resnet18(num_classes=10).eval()


def test_fp32_round_trip_gives_identical_outputs(pruned, images32, tmp_path):
    summary = save_sparse(pruned, tmp_path / "m.pt")
    restored = load_sparse(tmp_path / "m.pt", fresh_resnet18())
    with torch.no_grad():
        assert torch.equal(restored(images32), pruned(images32))
    expected = pruned.state_dict()
    for name, tensor in restored.state_dict().items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name
    weights = [m.weight for m in pruned.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert summary["nonzeros"] == sum(int((w != 0).sum()) for w in weights)  # BN tensors are dense: not encoded
    assert summary["encoded"] == len(weights) and summary["tensors"] == len(expected)
    assert summary["bytes"] == os.path.getsize(tmp_path / "m.pt")


def test_file_is_self_describing_and_weights_only_readable(pruned, tmp_path):
    save_sparse(pruned, tmp_path / "m.pt")
    doc = torch.load(tmp_path / "m.pt", weights_only=True)
    assert doc["format"] == FORMAT and doc["version"] == 1 and doc["bit_order"] == BIT_ORDER
    entry = doc["tensors"]["conv1.weight"]
    assert entry["encoding"] == "bitmask" and entry["shape"] == [64, 3, 7, 7] and entry["dtype"] == "float32"
    # the documented bit layout: element i is bit i % 8 (least significant first) of byte i // 8
    flat = pruned.conv1.weight.detach().reshape(-1)
    byte = entry["mask"].numpy().astype(int)
    bits = (byte[np.arange(flat.numel()) // 8] >> (np.arange(flat.numel()) % 8)) & 1
    assert np.array_equal(bits.astype(bool), (flat != 0).numpy())
    assert torch.equal(entry["values"], flat[flat != 0])
    assert doc["tensors"]["bn1.running_var"]["encoding"] == "dense"
    assert doc["tensors"]["bn1.num_batches_tracked"]["tensor"].dtype == torch.int64


def test_fp16_values_round_and_zeros_stay_where_they_were(pruned, tmp_path):
    summary = save_sparse(pruned, tmp_path / "m16.pt", values_dtype=torch.float16)
    assert summary["values_dtype"] == "float16"
    restored = load_sparse(tmp_path / "m16.pt", fresh_resnet18()).state_dict()
    for name, original in pruned.state_dict().items():
        got = restored[name]
        assert got.dtype == original.dtype, name
        if original.is_floating_point() and (original == 0).any() and original.dim() in (2, 4):
            assert torch.equal(got == 0, original == 0), name  # zeros exactly where they were, no new ones
            assert torch.equal(got, original.half().float()), name  # exactly fp16 rounding (round to nearest)
        else:
            assert torch.equal(got, original), name  # dense tensors (BN, biases, counters) as they were


def test_sparse_file_is_smaller_than_the_dense_file(pruned, tmp_path):
    torch.save(pruned.state_dict(), tmp_path / "dense.pt")
    dense = os.path.getsize(tmp_path / "dense.pt")
    fp32 = save_sparse(pruned, tmp_path / "m.pt")["bytes"]
    fp16 = save_sparse(pruned, tmp_path / "m16.pt", values_dtype=torch.float16)["bytes"]
    assert fp16 < fp32 < 0.3 * dense  # 80 % zeros: 20 % of the values + 1 bit per weight (~3 %) + overhead


def test_encoding_rule_and_other_dtypes(tmp_path):
    w = torch.ones(320)
    assert not worth_encoding(w, zeros=0) and not worth_encoding(torch.zeros(8, dtype=torch.int64), zeros=8)
    assert not worth_encoding(w, zeros=10) and worth_encoding(w, zeros=11)  # 40 + 4*(320-z) < 1280 <=> z > 10
    g = torch.Generator().manual_seed(0)
    state = {"d": torch.randn(4, 6, generator=g, dtype=torch.float64).clamp(min=0),  # about half zeros
             "b": torch.randn(5, 7, generator=g).clamp(min=0).to(torch.bfloat16), "e": torch.zeros(0),
             "n": torch.tensor([float("nan"), 0.0, float("inf"), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])}
    for values_dtype in (torch.float32, torch.float16):
        save_sparse(state, tmp_path / "s.pt", values_dtype=values_dtype)
        back = load_sparse_state_dict(tmp_path / "s.pt")
        assert torch.equal(back["b"], state["b"]) and back["e"].shape == (0,)  # bf16: never narrowed
        assert torch.equal(back["n"].nan_to_num(7.0), state["n"].nan_to_num(7.0))
        assert back["d"].dtype == torch.float64 and torch.equal(back["d"] == 0, state["d"] == 0)
        assert torch.equal(back["d"], state["d"] if values_dtype == torch.float32 else state["d"].half().double())


def test_fp16_refuses_values_it_cannot_hold(tmp_path):
    state = {"w": torch.tensor([1e6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])}
    with pytest.raises(ValueError, match="float16 range.*no --fp16"):
        save_sparse(state, tmp_path / "w.pt", values_dtype=torch.float16)
    assert not (tmp_path / "w.pt").exists()


def test_bad_files_give_clear_errors(pruned, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=f"not a {FORMAT} file.*fcpts export"):
        load_sparse(tmp_path / "junk.pt", fresh_resnet18())
    torch.save(pruned.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain state_dict"):
        load_sparse(tmp_path / "plain.pt", fresh_resnet18())
    save_sparse(pruned, tmp_path / "m.pt")
    doc = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**doc, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="version 99.*export the run again"):
        load_sparse(tmp_path / "v99.pt", fresh_resnet18())
    entry = doc["tensors"]["fc.weight"]
    doc["tensors"]["fc.weight"] = {**entry, "values": entry["values"][:-1]}
    torch.save(doc, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="fc.weight.*corrupt"):
        load_sparse(tmp_path / "cut.pt", fresh_resnet18())
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_sparse(tmp_path / "absent.pt", fresh_resnet18())


def test_wrong_model_gives_a_clear_error(pruned, tmp_path):
    save_sparse(pruned, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"other shapes.*fc.weight \(10, 512\) vs model \(1000, 512\).*config.yaml"):
        load_sparse(tmp_path / "m.pt", torchvision.models.resnet18())  # 1000 classes
    with pytest.raises(ValueError, match="missing.*unexpected.*num_classes"):
        load_sparse(tmp_path / "m.pt", make_model("cnn"))


def test_parametrized_models_are_refused(pruned, tmp_path):
    from torch.nn.utils import parametrize

    class Identity(torch.nn.Module):
        def forward(self, w):
            return w

    model = fresh_resnet18()
    parametrize.register_parametrization(model.fc, "weight", Identity())
    with pytest.raises(ValueError, match="squash"):
        save_sparse(model, tmp_path / "p.pt")
    save_sparse(pruned, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="plain model"):
        load_sparse(tmp_path / "m.pt", model)


def test_export_run_default_name_relative_out_and_no_overwrite(pruned, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="sparse_state_dict.pt"):
        export_run(run_dir)
    torch.save(pruned.state_dict(), run_dir / "sparse_state_dict.pt")
    assert export_run(run_dir) == run_dir / "sparse_model.pt"
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(run_dir)
    assert export_run(run_dir, overwrite=True, fp16=True).is_file()
    monkeypatch.chdir(tmp_path)
    out = export_run(run_dir, out="elsewhere/m.pt")
    assert (tmp_path / "elsewhere" / "m.pt").is_file() and out == tmp_path / "elsewhere" / "m.pt"


def test_cli_export_on_a_real_run_folder(imagefolder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.8", "--out", str(out),
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["export", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sparse_model.pt" in printed and "x smaller" in printed
    dense = torch.load(out / "sparse_state_dict.pt", weights_only=True)
    restored = load_sparse_state_dict(out / "sparse_model.pt")
    assert restored.keys() == dense.keys() and all(torch.equal(restored[k], dense[k]) for k in dense)
    assert (out / "sparse_model.pt").stat().st_size < 0.3 * (out / "sparse_state_dict.pt").stat().st_size
    before = (out / "sparse_model.pt").read_bytes()
    assert main(["export", str(out), "--fp16"]) == 2  # refuses to overwrite: one error line, the file untouched
    assert "--overwrite" in capsys.readouterr().err and (out / "sparse_model.pt").read_bytes() == before
    assert main(["export", str(out), "--fp16", "--overwrite"]) == 0
    assert (out / "sparse_model.pt").stat().st_size < len(before)
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "sparse_state_dict.pt" in capsys.readouterr().err


def test_export_size_benchmark_tiny(tmp_path):
    from benchmarks import export_size

    doc = export_size.run_export_size(targets=(0.5, 0.9), model_name="resnet18", num_classes=10, xz_preset=0,
                                      threads=None, out=tmp_path / "export_size.json", progress=False)
    rows = doc["results"]
    assert [r["target"] for r in rows] == [0.5, 0.9] and (tmp_path / "export_size.md").is_file()
    for r in rows:
        assert r["weight_zeros"] == round(r["target"] * r["weights"])
        assert r["sparse16_bytes"] < r["sparse32_bytes"] < r["dense_bytes"] and r["gzip_bytes"] < r["dense_bytes"]
    assert rows[1]["sparse32_bytes"] < rows[0]["sparse32_bytes"]
    assert "| 90% |" in (tmp_path / "export_size.md").read_text()
