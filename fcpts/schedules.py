"""Sparsity schedules for training-aware pruning: pure functions s(t) of the training progress t ∈ [0, 1].

Every schedule has the signature ``schedule(t, s_i, s_f, **options) -> sparsity`` (fractions, not the
percent of ``fasterai``), with s(0) = s_i (one-cycle: see below), s(1) = s_f exactly and s never
decreasing in t when s_f >= s_i (method.md §3). t outside [0, 1] is clamped.

* ``one_shot``: s_i before ``at``, s_f from ``at`` on. fasterai's ``one_shot`` returns s_f for every t
  (the jump happens when the callback starts pruning, ``start_epoch``); here the jump is at t = ``at``,
  default 0.5: train (or fine-tune) dense for the first half of the budget, prune once, fine-tune the rest
  (the train -> prune -> fine-tune pipeline squeezed into one budget). ``at=0`` is fasterai's behaviour
  with start_epoch 0 (prune at once, then fine-tune the whole budget); then s(0) = s_f.
* ``iterative``: a staircase of ``n`` equal steps, s_i + (s_f − s_i)·ceil(n t)/n as in fasterai: the
  first step is taken as soon as t > 0, the last one at t > (n−1)/n.
* ``agp`` (Zhu & Gupta 2017): s_f + (s_i − s_f)(1 − t)³; ``torch.ao.pruning.CubicSL`` computes the same
  curve (tests/test_schedules.py checks it).
* ``one_cycle`` (Hubens et al. 2021): s_i + (s_f − s_i)(1 + e^{−α+β}) / (1 + e^{−αt+β}), α = 14, β = 5
  (the authors' repository; fasterai's default is β = 6). It crosses the midpoint just before t = β/α.
  Its value at t = 0 is *not* exactly s_i: (1 + e^{−α+β})/(1 + e^{β}) ≈ 0.0067 of the way (β = 5) —
  0.54 points of sparsity at s_f = 0.8. ``one_cycle_start_offset`` gives the exact fraction.
"""
from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[..., float]


def _clamp(t: float) -> float:
    t = float(t)
    if math.isnan(t):
        raise ValueError("progress t is NaN")
    return min(max(t, 0.0), 1.0)


def one_shot(t: float, s_i: float, s_f: float, at: float = 0.5) -> float:
    """s_i for t < ``at``, s_f for t >= ``at`` (one prune at progress ``at``; see the module docstring)."""
    if not 0.0 <= at <= 1.0:
        raise ValueError(f"one_shot: 'at' must lie in [0, 1], got {at}")
    return float(s_f) if _clamp(t) >= at else float(s_i)


def iterative(t: float, s_i: float, s_f: float, n: int = 3) -> float:
    """``n`` equal stairs from s_i to s_f: s_i + (s_f − s_i)·ceil(n t)/n (fasterai's ``iterative``)."""
    if int(n) < 1:
        raise ValueError(f"iterative: n must be at least 1, got {n}")
    t = _clamp(t)
    if t >= 1.0:
        return float(s_f)
    # The tiny slack keeps t = k/n (computed in floating point) on the k-th stair, not the (k+1)-th.
    stair = math.ceil(t * n - 1e-9)
    return float(s_i) + (float(s_f) - float(s_i)) * stair / n


def agp(t: float, s_i: float, s_f: float) -> float:
    """Automated gradual pruning (Zhu & Gupta 2017): s_f + (s_i − s_f)(1 − t)³."""
    t = _clamp(t)
    if t <= 0.0:  # exact end points (the formula can be one ulp off in floating point)
        return float(s_i)
    if t >= 1.0:
        return float(s_f)
    return float(s_f) + (float(s_i) - float(s_f)) * (1.0 - t) ** 3


def one_cycle(t: float, s_i: float, s_f: float, alpha: float = 14.0, beta: float = 5.0) -> float:
    """One-Cycle Pruning: s_i + (s_f − s_i)(1 + e^{−α+β}) / (1 + e^{−αt+β}); s(1) = s_f exactly."""
    t = _clamp(t)
    if t >= 1.0:
        return float(s_f)
    fraction = (1.0 + math.exp(-alpha + beta)) / (1.0 + math.exp(-alpha * t + beta))
    return float(s_i) + (float(s_f) - float(s_i)) * fraction


def one_cycle_start_offset(alpha: float = 14.0, beta: float = 5.0) -> float:
    """The fraction of the way from s_i to s_f that one-cycle has already gone at t = 0."""
    return (1.0 + math.exp(-alpha + beta)) / (1.0 + math.exp(beta))


def one_cycle_midpoint(alpha: float = 14.0, beta: float = 5.0) -> float:
    """The progress where one-cycle is half way: (β − ln(1 + 2e^{−α+β}))/α, just below β/α."""
    return (beta - math.log(1.0 + 2.0 * math.exp(-alpha + beta))) / alpha


SCHEDULES: dict[str, Schedule] = {
    "one_shot": one_shot,
    "iterative": iterative,
    "agp": agp,
    "one_cycle": one_cycle,
}
SCHEDULE_LABELS = {"one_shot": "one-shot", "iterative": "iterative", "agp": "AGP", "one_cycle": "one-cycle"}


def get_schedule(name: str, **options) -> Callable[[float, float, float], float]:
    """``SCHEDULES[name]`` with its options bound: ``f(t, s_i, s_f)``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    fn = SCHEDULES[name]
    if not options:
        return fn

    def bound(t: float, s_i: float, s_f: float) -> float:
        return fn(t, s_i, s_f, **options)

    bound.__name__ = f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"
    return bound


def progress(step: int, steps: int) -> float:
    """Progress of training step ``step`` (0-based) out of ``steps``: 0 at the first step, 1 at the last,
    so that the last step trains at exactly s_f."""
    if steps <= 1:
        return 1.0
    return min(max(step / (steps - 1), 0.0), 1.0)


def schedule_values(name: str, steps: int, s_i: float, s_f: float, **options) -> list[float]:
    """The sparsity at every training step 0..steps−1 (progress from ``progress``)."""
    fn = get_schedule(name, **options)
    return [fn(progress(k, steps), s_i, s_f) for k in range(steps)]
