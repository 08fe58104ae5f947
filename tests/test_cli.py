"""The `fcpts` command: full mode end to end on a fabricated ImageFolder, clear errors, a reproducible demo."""
import json
import shutil

import pytest
import torch

from conftest import fabricate_image
from fcpts.cli import main

TINY = ["--model", "resnet18", "--weights", "none", "--image-size", "32", "--calib", "6", "--steps", "2",
        "--batch-size", "4", "--quiet", "--set", "eval_batch_size=8", "--set", "num_workers=0"]


def test_full_mode_runs_end_to_end_on_a_fabricated_imagefolder(imagefolder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.8", "--out", str(out), *TINY]) == 0
    for name in ("sparse_state_dict.pt", "allocation.json", "history.csv", "layers.csv", "metrics.json",
                 "config.yaml", "calibration.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    state = torch.load(out / "sparse_state_dict.pt", weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() in (2, 4)]
    zeros, total = sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
    assert zeros == round(0.8 * total) == metrics["zeros"]
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["calib_size"] == 6
    assert len(json.loads((out / "calibration.json").read_text())["indices"]) == 6
    # a second run into the same folder must not overwrite the first one's results
    with pytest.raises(SystemExit, match="already holds results"):
        main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.8", "--out", str(out), *TINY])


def test_wrong_imagenet_path_gets_a_clear_error(tmp_path, capsys):
    code = main(["run", "--dataset", "imagenet", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *TINY])
    assert code == 2 and "nowhere" in capsys.readouterr().err


def test_flat_val_folder_gets_a_clear_error(imagefolder, tmp_path, capsys):
    shutil.rmtree(imagefolder / "val")
    for i in range(3):
        fabricate_image(imagefolder / "val" / f"ILSVRC2012_val_0000000{i}.JPEG", 50 + i)
    code = main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--out", str(tmp_path / "o"), *TINY])
    assert code == 2 and "valprep" in capsys.readouterr().err


def test_empty_class_folder_gets_a_clear_error(imagefolder, tmp_path, capsys):
    (imagefolder / "train" / "n09999999").mkdir()
    (imagefolder / "val" / "n09999999").mkdir()
    code = main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--out", str(tmp_path / "o"), *TINY])
    assert code == 2 and "no image files" in capsys.readouterr().err


def test_target_outside_unit_interval_from_the_command_line(imagefolder, tmp_path, capsys):
    code = main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "1.2",
                 "--out", str(tmp_path / "o"), *TINY])
    assert code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_demo_prints_the_same_numbers_twice(tmp_path, capsys):
    # The embedded ResNet-50 (trained and cached on first use), a 2-step FCPTS and both baselines at 80 %.
    args = ["demo", "--targets", "0.8", "--set", "steps=2", "--set", "calib_size=64", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    second = capsys.readouterr().out
    table = lambda text: [line.rsplit(maxsplit=1)[0] for line in text.splitlines() if "%" in line]  # drop times
    assert table(first) == table(second) and len(table(first)) == 4
    rows = json.loads((tmp_path / "a" / "demo.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"dense", "FCPTS", "uniform+BN", "global+BN"}
    assert all(r["achieved_sparsity"] == pytest.approx(0.8, abs=1e-7) for r in rows if r["method"] != "dense")
    assert (tmp_path / "a" / "demo_allocation_80.png").is_file()


@pytest.mark.parametrize("method,tier", [("str", None), ("dsa", None), ("probmask", None), ("erk", "b")])
def test_run_any_registered_post_training_method(imagefolder, tmp_path, method, tier):
    out = tmp_path / method
    args = ["run", "--method", method, "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.7",
            "--out", str(out), *TINY] + (["--tier", tier] if tier else [])
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["zeros"] == round(0.7 * metrics["total"])
    state = torch.load(out / "sparse_state_dict.pt", weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() in (2, 4)]
    assert sum(int((w == 0).sum()) for w in weights) == metrics["zeros"]
    assert json.loads((out / "allocation.json").read_text())
    if tier is None:
        assert (out / "history.csv").is_file()


@pytest.mark.parametrize("args,message", [(["--method", "magic"], "unknown method"),
                                          (["--method", "prune_train-uniform"], "training family"),
                                          (["--method", "erk", "--tier", "z"], "does not apply")])
def test_run_rejects_methods_it_cannot_run(imagefolder, tmp_path, capsys, args, message):
    code = main(["run", *args, "--dataset", "imagenet", "--data", str(imagefolder), "--out", str(tmp_path / "o"), *TINY])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing left behind


# ----- a newcomer's bad inputs: one line that names the file or value, and nothing left behind -----
def test_corrupt_image_gets_a_one_line_error_naming_it(imagefolder, tmp_path, capsys):
    bad = imagefolder / "train" / "n01440764" / "n01440764_9.JPEG"
    bad.write_bytes(b"<html>403 Forbidden</html>")  # what a failed download leaves behind
    out = tmp_path / "o"
    code = main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--out", str(out),
                 *TINY[:TINY.index("--calib") + 1], "13", *TINY[TINY.index("--calib") + 2:]])  # every train image
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(bad) in err and "not a readable image" in err and "delete or replace" in err
    assert not out.exists(), "a failed run left its results folder behind"


def test_corrupt_image_read_by_a_dataloader_worker_is_one_line(imagefolder):
    """In a worker process the error comes back wrapped in the worker's traceback: still one line."""
    from fcpts.data import UnreadableImageError, imagenet_datasets
    from fcpts.evaluate import evaluate

    bad = imagefolder / "val" / "n01443537" / "ILSVRC2012_val_n01443537_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    _, val = imagenet_datasets(imagefolder, weights="", model="resnet18", image_size=32, calib_size=4)
    model = torchvision_model()
    with pytest.raises(UnreadableImageError) as failure:
        evaluate(model, val, batch_size=2, device="cpu", progress=False, num_workers=1)
    message = str(failure.value)
    assert len(message.splitlines()) == 1 and message.startswith(str(bad)), message


def torchvision_model():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3)


def test_unknown_model_leaves_no_results_folder(imagefolder, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--out", str(out),
                 *[a if a != "resnet18" else "resnet_typo" for a in TINY]])
    err = capsys.readouterr().err
    assert code == 2 and "resnet_typo" in err
    assert not out.exists(), "a failed run left an empty results folder"


def test_a_failed_run_keeps_a_folder_the_user_made(imagefolder, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    code = main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--out", str(out),
                 *[a if a != "resnet18" else "resnet_typo" for a in TINY]])
    assert code == 2 and out.is_dir()


def test_default_num_workers_never_exceed_the_cores():
    import os

    from fcpts import Config
    from fcpts.config import default_num_workers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert Config().num_workers == default_num_workers() == min(4, cores)
    assert Config(num_workers=7).num_workers == 7  # an explicit value is the user's


def test_run_with_the_kit_recipe_reports_its_choice_and_stays_exact(imagefolder, tmp_path):
    # 12 train images: the kit's 64 held-out images would leave none, so the run holds out 4 (--set wins)
    out = tmp_path / "kit"
    args = ["run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.7", "--out", str(out),
            *TINY[:TINY.index("--calib") + 1], "12", *TINY[TINY.index("--calib") + 2:],
            "--recipe", "kit", "--set", "select_holdout=4"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"]["chosen"] in ("reconstructed", "start") and metrics["selection"]["holdout"] == 4
    assert set(metrics["selection"]["scores"]) == {"reconstructed", "start"}
    assert metrics["zeros"] == round(0.7 * metrics["total"])
    assert "select_holdout: 4" in (out / "config.yaml").read_text()


def test_the_kit_recipe_is_one_flag_away_from_the_released_one():
    from fcpts import Config
    from fcpts.config import KIT_RECIPE

    kit = Config.kit_cpu()
    assert all(getattr(kit, k) == v for k, v in KIT_RECIPE.items())
    assert kit.with_recipe("released") == Config.quick_cpu()
    assert Config.quick_cpu().with_recipe("kit") == kit and Config().with_recipe("kit") == Config.kit()
    assert Config.from_dict({"preset": "kit_cpu", "steps": 5}) == Config.kit_cpu(steps=5)
    with pytest.raises(ValueError, match="unknown recipe"):
        Config().with_recipe("fast")
