"""The released recipe, exactly (issue #21): the lr schedule against timm's scheduler as the authors' code builds
and steps it, and the released ERK start (floor budgets, int() counts, min|w|, float32 logit floored at -30)."""
import math

import pytest
import torch
from torch import nn

from conftest import make_model
from fcpts import Config, count_zeros, sparsify
from fcpts.allocation import erk_densities, erk_released_allocation
from fcpts.masking import (RELEASED_MIN_SCORE, ThresholdSparsifier, all_weight_layers, released_start_score,
                           start_threshold)
from fcpts.sparsify import lr_at

timm_scheduler = pytest.importorskip("timm.scheduler.cosine_lr")


def timm_lrs(steps: int, base: float, warmup: int) -> list[float]:
    """The lr each optimiser step runs at in the authors' loop: their ``build_scheduler`` (cosine, t_initial = all
    iterations, warm-up one pass from WARMUP_LR = 0, MIN_LR = 0, cycle_limit 1, per-iteration updates), and
    ``step_update(global_step)`` right after ``optimizer.step()``."""
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=base, momentum=0.9)
    scheduler = timm_scheduler.CosineLRScheduler(optimizer, t_initial=steps, lr_min=0.0, warmup_lr_init=0.0,
                                                 warmup_t=warmup, cycle_limit=1, t_in_epochs=False)
    lrs = []
    for step in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step_update(step)
    return lrs


@pytest.mark.parametrize("preset", ["released", "quick_cpu"])
def test_lr_schedule_equals_timm_cosine_scheduler(preset):
    config = getattr(Config, preset)()
    warmup = config.calib_size // config.batch_size  # one pass, as the loop's default warm-up
    expected = timm_lrs(config.steps, config.lr, warmup)
    ours = [lr_at(s, config.steps, config.lr, warmup, config.lr_schedule) for s in range(config.steps)]
    assert config.lr_schedule == "released"
    assert ours == expected  # the same floats, step for step
    assert ours[:2] == [0.0, 0.0] and ours[2] == pytest.approx(config.lr / warmup)
    assert max(ours) < config.lr  # the ramp ends one step late, where the cosine has already begun


@pytest.mark.parametrize("steps, warmup", [(1, 0), (5, 0), (3, 8), (10, 10), (7, 1), (150, 7)])
def test_lr_schedule_equals_timm_at_the_edges(steps, warmup):
    """No warm-up (step 0 at the optimiser's own lr), a warm-up longer than the run, one-step runs."""
    assert [lr_at(s, steps, 0.01, warmup) for s in range(steps)] == timm_lrs(steps, 0.01, warmup)


def test_ramp_then_cosine_is_the_earlier_schedule():
    ramp = [lr_at(s, 20, 0.01, 16, "ramp_then_cosine") for s in range(20)]
    released = [lr_at(s, 20, 0.01, 16) for s in range(20)]
    assert ramp[:2] == pytest.approx([0.000625, 0.00125]) and ramp[15] == pytest.approx(0.01)
    assert released[:3] == pytest.approx([0.0, 0.0, 0.000625])
    assert ramp[16] == pytest.approx(0.01) and released[17] == pytest.approx(0.005 * (1 + math.cos(math.pi * 16 / 20)))
    with pytest.raises(ValueError, match="lr schedule"):
        lr_at(0, 20, 0.01, 16, "cosine")


def test_loop_runs_the_released_schedule():
    """The loop's own history: the lr of every step is timm's (warm-up = one pass of the calibration stream)."""
    images = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    config = Config.quick_cpu(steps=12, batch_size=8, progress=False)
    result = sparsify(make_model("cnn"), images, 0.5, config)
    assert [h["lr"] for h in result.history] == timm_lrs(12, config.lr, 4)


# ----- the released ERK start ----------------------------------------------------------------------------------
def test_released_erk_solves_the_floor_budget():
    model = make_model("resnet18")
    layers = all_weight_layers(model)
    target = 0.9
    start = erk_released_allocation(model, target)
    numels = {n: m.weight.numel() for n, m in layers.items()}
    kept = sum((1 - start[n]) * numels[n] for n in layers)
    assert kept == pytest.approx(sum(numels.values()) - sum(math.floor(target * v) for v in numels.values()), rel=1e-9)
    assert all(0.0 <= s < 1.0 for s in start.values())
    pruned = sum(int(start[n] * numels[n]) for n in layers)  # what the thresholds then prune: int() per layer
    assert pruned <= round(target * sum(numels.values())) and pruned > 0.899 * sum(numels.values())


def test_released_erk_differs_from_the_exact_start_only_by_rounding():
    """One layer at a time (released) or every layer over density 1 at once (the kit's exact ERK): ε only grows as
    layers turn dense, so both end with the same dense layers; the fractions differ by the floor budgets only."""
    model = make_model("resnet18")
    layers = all_weight_layers(model)
    shapes = {n: tuple(m.weight.shape) for n, m in layers.items()}
    numels = {n: math.prod(s) for n, s in shapes.items()}
    for target in (0.5, 0.9, 0.98):
        released = erk_released_allocation(model, target)
        exact = erk_densities(shapes, sum(numels.values()) - round(target * sum(numels.values())))
        assert {n for n, s in released.items() if s == 0.0} == {n for n, d in exact.items() if d == 1.0}
        assert all(abs((1 - exact[n]) - released[n]) < 1e-4 for n in layers)  # a few weights per layer


def tiny_first_layer_model() -> nn.Module:
    """A conv net whose first (small, so ERK-dense) layer holds tiny weights, down to below sigmoid(-30)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 64, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():
        first = model[0].weight
        first.copy_(torch.logspace(-15, -7, first.numel()).reshape(first.shape) * torch.sign(torch.randn_like(first)))
    return model


@pytest.mark.parametrize("rounding", ["released", "exact"])
def test_a_layer_erk_makes_dense_keeps_every_tiny_weight(rounding):
    model = tiny_first_layer_model()
    config = Config.quick_cpu(init_rounding=rounding)
    from fcpts.sparsify import start_allocation

    start = start_allocation(model, 0.8, config)
    assert start["0"] == 0.0  # ERK makes the first layer dense
    sparsifier = ThresholdSparsifier.from_config(model, start, config, rounding=rounding)
    rows = {r["layer"]: r for r in sparsifier.report()}
    assert rows["0"]["sparsity"] == 0.0
    w = model[0].parametrizations.weight.original
    assert float(w.detach().abs().min()) < 1e-13 and torch.equal(model[0].weight, w)  # every weight passes the mask


def test_released_start_score_follows_the_released_rule():
    torch.manual_seed(1)
    w = torch.randn(64, 32, 3, 3) * 0.05
    n = w.numel()
    for sparsity in (0.3, 0.8, 0.97):
        score = released_start_score(w, sparsity)
        k = int(sparsity * n)
        kth = torch.kthvalue(w.abs().flatten(), k).values
        assert score.dtype == torch.float32 and score == torch.logit(kth)
        pruned = int((w.abs() <= torch.sigmoid(score)).sum())
        assert abs(pruned - k) <= 1  # float32 logit -> sigmoid may move the threshold by an ulp
    tiny = torch.full((100,), 1e-20)
    tiny[0] = 0.5
    assert released_start_score(tiny, 0.05) == RELEASED_MIN_SCORE  # k = 5 > 0: the floor, as released
    assert torch.sigmoid(released_start_score(tiny, 0.0)) < 1e-20  # k = 0: below the smallest weight
    assert torch.isfinite(released_start_score(torch.full((10,), 3.0), 0.5))  # t >= 1 cannot blow up the logit


@pytest.mark.parametrize("rounding", ["released", "exact"])
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_projection_keeps_the_target_exact_with_either_start(rounding, target):
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = Config.quick_cpu(steps=2, batch_size=8, progress=False, init_rounding=rounding)
    result = sparsify(make_model("resnet18"), images, target, config)
    zeros, total = count_zeros(result.model)
    assert zeros == round(target * total) == result.zeros
    if rounding == "released":  # the floor budget: the start holds at most round(S*·N) zeros
        rows = result.layer_table().to_dict("records")
        start = sum(int(result.init_allocation[r["layer"]] * r["numel"]) for r in rows)
        assert start <= zeros


def released_erk_reference(shapes: dict, target: float) -> dict:
    """The released ERK, written out from its description: per-layer budgets floor(S*·n); solve
    ε·Σ_free raw·n = Σ_free (n − z) − Σ_dense z; while the largest ε·raw passes 1, every layer with that raw
    density joins the dense set."""
    import numpy as np

    n = {k: int(np.prod(s)) for k, s in shapes.items()}
    z = {k: int(np.floor(target * n[k])) for k in shapes}
    raw = {k: np.sum(s) / np.prod(s) for k, s in shapes.items()}
    dense = set()
    while True:
        free = [k for k in shapes if k not in dense]
        eps = (sum(n[k] - z[k] for k in free) - sum(z[k] for k in dense)) / sum(raw[k] * n[k] for k in free)
        top = max(raw[k] for k in free)
        if top * eps <= 1:
            return {k: 0.0 if k in dense else 1.0 - eps * raw[k] for k in shapes}
        dense |= {k for k in free if raw[k] == top}


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.98])
def test_released_erk_equals_the_reference(target):
    model = make_model("resnet18")
    shapes = {n: tuple(m.weight.shape) for n, m in all_weight_layers(model).items()}
    ours, reference = erk_released_allocation(model, target), released_erk_reference(shapes, target)
    assert set(ours) == set(reference)
    assert all(ours[k] == pytest.approx(reference[k], rel=1e-12, abs=1e-15) for k in ours)


def test_an_exact_allocation_keeps_its_counts_whatever_the_config_says():
    """k_l / n_l times n_l can come back as k_l − 1e-12, and int() then drops a zero: ``from_config`` counts an
    allocation the released way only when asked (the loop asks for its own start only, never for a given one)."""
    from fcpts.allocation import erk_allocation

    allocation = erk_allocation(make_model("resnet18"), 0.9)

    def scores(rounding=None, config=Config()):  # Config() has init_rounding="released"
        model = make_model("resnet18")
        kw = {} if rounding is None else dict(rounding=rounding)
        sparsifier = ThresholdSparsifier.from_config(model, allocation, config, **kw)
        return [float(p.detach()) for p in sparsifier.threshold_parameters()]

    assert scores() == scores("exact") != scores("released")


def test_older_rows_keep_their_keys():
    """The hashes the runner gave rows before the loop fields existed, for a fixed tiny model (computed with that
    code): rows that do not run the loop keep them, loop rows computed now get new ones."""
    from fcpts import table as runner_table

    model = make_model("cnn")
    config = Config.quick_cpu()
    base = runner_table.config_digest(config, model)
    assert runner_table.row_hash(base, config, reconstructs=False) == "782a73bedc1a"
    holdout = Config.quick_cpu(select_holdout=64)
    assert runner_table.row_hash(runner_table.config_digest(holdout, model), holdout, reconstructs=False) == "097b0fa1de1b"
    assert runner_table.row_hash(base, config, reconstructs=True) not in ("782a73bedc1a", "097b0fa1de1b")


def test_start_threshold_is_the_threshold_the_sparsifier_sets():
    model = make_model("cnn")
    for rounding in ("released", "exact"):
        from fcpts.sparsify import start_allocation

        config = Config.quick_cpu(init_rounding=rounding)
        start = start_allocation(model, 0.7, config)
        expected = {n: start_threshold(m.weight, start[n], rounding) for n, m in all_weight_layers(model).items()}
        copy = make_model("cnn")
        got = ThresholdSparsifier.from_config(copy, start, config, rounding=rounding).thresholds()
        assert got == pytest.approx(expected, rel=1e-6)
