"""The FCPTS loop end to end on small real models: exact control, determinism, bad input."""
import importlib

import pytest
import torch
from torch import nn

from conftest import make_model
from fcpts import Config, count_zeros, sparsify
from fcpts.masking import prunable_layers


def fast(**kw):
    return Config.quick_cpu(steps=3, batch_size=8, progress=False, layer_log_every=1, **kw)


def data_for(name):
    size = 32 if name == "resnet18" else 8
    return torch.randn(24, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("target", [0.1, 0.5, 0.8, 0.9, 0.98])
def test_exact_zero_count_after_sparsify(name, target):
    model = make_model(name)
    result = sparsify(model, data_for(name), target, fast())
    zeros, total = count_zeros(result.model)
    assert zeros == round(target * total) == result.zeros
    assert result.sparsity_after_projection == zeros / total
    assert 0 <= result.sparsity_before_projection <= 1


@pytest.mark.parametrize("variant", [
    dict(gradient="ste"), dict(parameterization="scaled"), dict(bridge="kde"), dict(objective="pow2"),
    dict(bn_mode="eval"), dict(block_mse_weight=1.0), dict(cache_teacher=True, bn_mode="eval"),
    dict(init="uniform", grad_clip=1.0)])
def test_every_option_keeps_exact_control(variant):
    model = make_model("resnet18")
    result = sparsify(model, data_for("resnet18"), 0.7, fast(**variant))
    zeros, total = count_zeros(result.model)
    assert zeros == round(0.7 * total)


def test_input_model_is_untouched_and_result_is_plain(images):
    model = make_model("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = sparsify(model, images, 0.6, fast())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert list(result.model.state_dict()) == list(before)
    assert set(result.allocation) == set(prunable_layers(model))


def test_history_records_every_step(images):
    result = sparsify(make_model("cnn"), images, 0.5, fast())
    assert [h["step"] for h in result.history] == [0, 1, 2]
    assert {"sparsity", "loss_rec", "loss_c", "loss", "lr"} <= set(result.history[0])
    assert len(result.layer_history) == 3 and result.wall_time > 0
    assert result.layer_table()["sparsity"].between(0, 1).all()


def test_same_seed_same_result_and_other_seed_differs(images):
    a = sparsify(make_model("cnn"), images, 0.7, fast(seed=3))
    b = sparsify(make_model("cnn"), images, 0.7, fast(seed=3))
    c = sparsify(make_model("cnn"), images, 0.7, fast(seed=4))
    assert a.history == b.history
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.history != c.history


@pytest.mark.parametrize("objective,lam", [("abs", 5.0), ("pow2", 10.0)])
def test_controllable_objective_drives_sparsity_to_target(objective, lam):
    # start far from the target (a uniform 0.2 allocation): L_c alone must bring S to 0.6
    model = make_model("cnn")
    from fcpts.allocation import uniform_allocation
    start = uniform_allocation(model, 0.2)
    cfg = Config.quick_cpu(steps=60, batch_size=8, progress=False, lam=lam, objective=objective,
                           parameterization="scaled", base_lr=0.5, weight_decay=0.0)
    result = sparsify(model, torch.randn(32, 3, 8, 8), 0.6, cfg, allocation=start)
    first, last = result.history[0]["sparsity"], result.history[-1]["sparsity"]
    assert abs(first - 0.2) < 0.02
    assert abs(last - 0.6) < 0.02


def test_frozen_thresholds_keep_the_given_allocation(images):
    model = make_model("cnn")
    from fcpts.allocation import uniform_allocation
    alloc = uniform_allocation(model, 0.5)
    result = sparsify(model, images, 0.5, fast(weight_decay=0.0), allocation=alloc, learn_thresholds=False)
    assert result.projection_shift == pytest.approx(1.0, rel=0.02)


# ---- bad input gets a clear error ----

@pytest.mark.parametrize("target", [0.0, 1.0, -0.2, 1.5, float("nan"), "high"])
def test_target_outside_unit_interval(target, images):
    with pytest.raises(ValueError, match="between 0 and 1|in \\(0, 1\\)"):
        sparsify(make_model("cnn"), images, target, fast())


def test_model_without_prunable_layers(images):
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear"):
        sparsify(nn.Sequential(nn.ReLU(), nn.Flatten()), images, 0.5, fast())


def test_include_exclude_leaving_nothing(images):
    with pytest.raises(ValueError, match="leave no prunable layer"):
        sparsify(make_model("cnn"), images, 0.5, fast(include=("does.not.exist*",)))


def test_empty_calibration_data():
    with pytest.raises(ValueError, match="calibration set is empty"):
        sparsify(make_model("cnn"), torch.empty(0, 3, 8, 8), 0.5, fast())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(bad, images):
    model = make_model("cnn")
    with torch.no_grad():
        model.fc.weight[0, 0] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        sparsify(model, images, 0.5, fast())


def test_target_unreachable_because_excluded_layers_are_too_big(images):
    model = make_model("mlp")  # net.1 holds 192*64 of ~15k weights
    with pytest.raises(ValueError, match="excluded layers hold too many weights"):
        sparsify(model, images, 0.5, fast(exclude=("net.1",)))


def test_non_finite_loss_stops_with_a_message(images):
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        sparsify(make_model("cnn"), images * float("nan"), 0.5, fast())


def test_result_does_not_depend_on_earlier_runs_in_the_process():
    # augmented calibration data keeps per-item draw counters; each run must start from the same state
    from fcpts.data import calibration_subset
    base = torch.utils.data.TensorDataset(torch.randn(40, 3, 8, 8), torch.zeros(40, dtype=torch.long))
    from fcpts.data import RandomShift
    calib = calibration_subset(base, 24, seed=0, augment=True, transform=RandomShift(2))
    first = sparsify(make_model("cnn"), calib, 0.6, fast())
    sparsify(make_model("cnn"), calib, 0.6, fast().replace(steps=5))  # reads the data more times in between
    again = sparsify(make_model("cnn"), calib, 0.6, fast())
    assert first.history == again.history


# ---- the step reads nothing back from the device; the history is read in batches ----

def test_history_values_are_plain_floats(images):
    result = sparsify(make_model("cnn"), images, 0.5, fast())
    for row in result.history:
        assert type(row["step"]) is int
        assert all(type(row[k]) is float for k in ("sparsity", "loss_rec", "loss_c", "loss", "lr")), row
    assert all(type(v) is float for row in result.layer_history for k, v in row.items() if k != "step")


def deferred(monkeypatch):
    """Read the history back as on a GPU (every layer_log_every steps and at the end), here on the CPU."""
    loop = importlib.import_module("fcpts.sparsify")  # the module (the package re-exports the function)
    monkeypatch.setattr(loop, "_reads_back_every_step", lambda device: False)


def test_history_read_back_in_batches_is_the_same(images, monkeypatch):
    every_step = sparsify(make_model("cnn"), images, 0.5, fast().replace(steps=7, layer_log_every=3))
    deferred(monkeypatch)
    batched = sparsify(make_model("cnn"), images, 0.5, fast().replace(steps=7, layer_log_every=3))
    assert batched.history == every_step.history and [r["step"] for r in batched.history] == list(range(7))
    assert batched.layer_history == every_step.layer_history


def nan_from_step(monkeypatch, first_bad):
    """KD loss NaN from step ``first_bad`` on (the loop's own kd_loss, wrapped)."""
    loop = importlib.import_module("fcpts.sparsify")  # the module (the package re-exports the function)
    calls = []
    original = loop.kd_loss

    def kd_loss(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) > first_bad else loss
    monkeypatch.setattr(loop, "kd_loss", kd_loss)


@pytest.mark.parametrize("read_back", ["every step", "in batches"])
def test_a_non_finite_loss_names_the_first_bad_step(images, monkeypatch, read_back):
    if read_back == "in batches":
        deferred(monkeypatch)
    nan_from_step(monkeypatch, 3)
    with pytest.raises(FloatingPointError, match=r"fcpts at 50%: non-finite loss at step 3 \(L_rec=nan"):
        sparsify(make_model("cnn"), images, 0.5, fast().replace(steps=9, layer_log_every=5))


def test_an_error_after_an_unread_non_finite_loss_reports_the_loss(images, monkeypatch):
    from fcpts import FcptsLearner, learn_allocation

    class FailsOnNan(FcptsLearner):  # e.g. a learner whose projection refuses NaN scores
        def after_step(self, step, steps):
            if step == 4:
                raise ValueError("scores hold NaN")

    deferred(monkeypatch)
    nan_from_step(monkeypatch, 2)
    with pytest.raises(FloatingPointError, match="non-finite loss at step 2") as failure:
        learn_allocation(make_model("cnn"), images, 0.5, fast().replace(steps=9, layer_log_every=8), FailsOnNan())
    assert isinstance(failure.value.__cause__, ValueError)


# ---- mixed precision ----

def test_bf16_forward_passes_keep_exact_control(images):
    model = make_model("cnn")
    dtypes = set()
    model.features[0].register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))  # copied along
    result = sparsify(model, images, 0.7, fast(precision="bf16").replace(steps=4))
    zeros, total = count_zeros(result.model)
    assert zeros == round(0.7 * total) == result.zeros
    assert torch.bfloat16 in dtypes  # the loop's forward passes ran under autocast
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(type(r["loss"]) is float and r["loss"] == r["loss"] for r in result.history)


@pytest.mark.parametrize("variant", [dict(block_mse_weight=1.0), dict(cache_teacher=True, bn_mode="eval")])
def test_bf16_with_block_mse_or_a_cached_teacher(variant):
    result = sparsify(make_model("resnet18"), data_for("resnet18"), 0.6, fast(precision="bf16", **variant))
    zeros, total = count_zeros(result.model)
    assert zeros == round(0.6 * total)


@pytest.mark.parametrize("bad", ["fp16", "bfloat16", "", None])
def test_an_unknown_precision_is_refused(bad):
    with pytest.raises(ValueError, match=r"Config.precision = .*choose one of fp32, bf16"):
        Config.quick_cpu(precision=bad)


def test_precision_at_its_default_keeps_every_older_row_key():
    from fcpts import table

    model = make_model("cnn")
    assert "precision" not in table.config_digest(Config.quick_cpu(), model)
    assert table.config_digest(Config.quick_cpu(precision="bf16"), model)["precision"] == "bf16"


def test_cuda_only_layout_and_autotuning_stay_off_on_a_cpu():
    from fcpts.sparsify import channels_last_on, cudnn_autotune

    cpu = torch.device("cpu")
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(cpu):
        assert torch.backends.cudnn.benchmark == before
    assert not channels_last_on(cpu)
    cuda = torch.device("cuda")  # the rule only; nothing runs there
    assert channels_last_on(cuda, make_model("cnn")) and not channels_last_on(cuda, nn.Conv3d(2, 2, 1))
