"""Sparsity schedules: end points, monotonicity, the one-cycle midpoint, AGP's cubic and torch's CubicSL."""
import math
import warnings

import numpy as np
import pytest
from torch import nn

from fcpts.schedules import (SCHEDULES, agp, get_schedule, iterative, one_cycle, one_cycle_midpoint,
                             one_cycle_start_offset, one_shot, progress, schedule_values)

GRID = np.linspace(0.0, 1.0, 20001)
PAIRS = [(0.0, 0.8), (0.0, 0.95), (0.2, 0.9), (0.5, 0.5)]


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("s_i,s_f", PAIRS)
def test_end_points(name, s_i, s_f):
    fn = SCHEDULES[name]
    assert fn(1.0, s_i, s_f) == s_f  # exactly, for every schedule
    if name == "one_cycle":  # the published formula starts a little above s_i: documented, checked exactly
        assert fn(0.0, s_i, s_f) == pytest.approx(s_i + one_cycle_start_offset() * (s_f - s_i), abs=1e-15)
        assert one_cycle_start_offset() == pytest.approx((1 + math.exp(-9)) / (1 + math.exp(5)))
        assert one_cycle_start_offset() < 0.007
    else:
        assert fn(0.0, s_i, s_f) == s_i
    # progress is clamped
    assert fn(1.5, s_i, s_f) == s_f and fn(-0.5, s_i, s_f) == fn(0.0, s_i, s_f)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("s_i,s_f", PAIRS)
def test_never_decreasing_on_a_dense_grid(name, s_i, s_f):
    values = np.array([SCHEDULES[name](t, s_i, s_f) for t in GRID])
    assert np.all(np.diff(values) >= -1e-15)
    assert values.min() >= min(s_i, s_f) - 1e-15 and values.max() <= s_f + 1e-15


@pytest.mark.parametrize("beta", [5.0, 6.0])
def test_one_cycle_crosses_the_midpoint_near_beta_over_alpha(beta):
    s_i, s_f, alpha = 0.0, 0.9, 14.0
    values = np.array([one_cycle(t, s_i, s_f, alpha=alpha, beta=beta) for t in GRID])
    crossing = GRID[np.argmax(values >= (s_i + s_f) / 2)]
    assert abs(crossing - beta / alpha) < 1e-3
    assert abs(crossing - one_cycle_midpoint(alpha, beta)) <= GRID[1]
    assert one_cycle_midpoint(alpha, beta) < beta / alpha


def test_agp_is_the_cubic_formula():
    for s_i, s_f in PAIRS:
        for t in np.linspace(0, 1, 101):
            assert agp(t, s_i, s_f) == pytest.approx(s_f + (s_i - s_f) * (1 - t) ** 3, abs=1e-15)


def test_one_shot_and_iterative_shapes():
    assert one_shot(0.4999, 0.0, 0.8) == 0.0 and one_shot(0.5, 0.0, 0.8) == 0.8
    assert one_shot(0.0, 0.0, 0.8, at=0.0) == 0.8  # fasterai's behaviour: prune at once
    with pytest.raises(ValueError):
        one_shot(0.5, 0.0, 0.8, at=1.5)
    # n = 3 stairs: (0, 1/3] -> 1/3 of the way, (1/3, 2/3] -> 2/3, (2/3, 1] -> all the way
    assert iterative(1e-6, 0.0, 0.9) == pytest.approx(0.3)
    assert iterative(1 / 3, 0.0, 0.9) == pytest.approx(0.3)
    assert iterative(0.34, 0.0, 0.9) == pytest.approx(0.6)
    assert iterative(2 / 3, 0.0, 0.9) == pytest.approx(0.6)
    assert iterative(0.7, 0.0, 0.9) == pytest.approx(0.9)
    assert len({round(iterative(t, 0.0, 0.9, n=5), 12) for t in GRID}) == 6


def test_progress_and_schedule_values_end_at_the_target():
    assert progress(0, 10) == 0.0 and progress(9, 10) == 1.0 and progress(0, 1) == 1.0
    for name in SCHEDULES:
        values = schedule_values(name, 37, 0.0, 0.9)
        assert len(values) == 37 and values[-1] == 0.9
    bound = get_schedule("one_cycle", beta=6.0)
    assert bound(0.3, 0.0, 0.8) == one_cycle(0.3, 0.0, 0.8, beta=6.0)
    with pytest.raises(ValueError):
        get_schedule("linear")


@pytest.mark.parametrize("s_i,s_f,t0,dt,n", [(0.0, 0.8, 0, 1, 20), (0.1, 0.9, 3, 2, 5), (0.3, 0.95, 5, 10, 4)])
def test_torch_cubic_sl_agrees_with_agp(s_i, s_f, t0, dt, n):
    """CubicSL: s_t = s_f + (s_0 − s_f)(1 − (t − t0)/(n·Δt))³ clamped to [s_0, s_f], t the scheduler's epoch.
    So init_sl = s_i, final sl = the sparsifier's sparsity_level = s_f, and the progress of agp is
    (t − init_t)/(delta_t · total_t), clamped to [0, 1] (before init_t it holds s_0 unless initially_zero)."""
    from torch.ao.pruning import CubicSL, WeightNormSparsifier

    model = nn.Sequential(nn.Linear(4, 4))
    sparsifier = WeightNormSparsifier(sparsity_level=s_f)
    sparsifier.prepare(model, config=[{"tensor_fqn": "0.weight"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = CubicSL(sparsifier, init_sl=s_i, init_t=t0, delta_t=dt, total_t=n)
        checked = 0
        for _ in range(t0 + dt * n + 5):
            sparsifier.step()
            scheduler.step()
            epoch = scheduler.last_epoch
            t = min(max((epoch - t0) / (dt * n), 0.0), 1.0)
            assert scheduler.get_last_sl()[0] == pytest.approx(agp(t, s_i, s_f), abs=1e-12)
            checked += 0.0 < t < 1.0
    assert checked >= 3
    # initially_zero: 0 before init_t, agp afterwards
    if t0 > 0:
        assert CubicSL.sparsity_compute_fn(s_i, s_f, t0 - 1, t0, dt, n, initially_zero=True) == 0
    assert CubicSL.sparsity_compute_fn(s_i, s_f, t0 + dt, t0, dt, n, True) == pytest.approx(agp(1 / n, s_i, s_f))
