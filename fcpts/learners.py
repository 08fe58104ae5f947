"""Allocation learners that FCPTS argues against, run under exactly FCPTS's post-training budget (method.md §7).

Each is a ``fcpts.learner.Learner`` for ``fcpts.sparsify.learn_allocation``: the shared loop gives every one of them the
same calibration images and augmentations, batch, steps, KD loss against the frozen dense teacher, SGD on the
network's weights, BN mode and final step (the kit's exact projection to round(S*·N) zeros). What differs is
how the allocation is learned:

* ``StrLearner`` -- STR (Kusupati et al. 2020): one soft threshold per layer, no budget term at all;
* ``ProbMaskLearner`` -- ProbMask (Zhou et al. 2021): a keep probability per weight, binary-concrete masks,
  a global projection that holds a ramped budget in expectation;
* ``fcpts.dsa.DsaLearner`` -- DSA-style (unstructured, parameter budget), in its own module.

    result = learn_allocation(model, calib, 0.8, Config.quick_cpu(), StrLearner())
    result.history[-1]["sparsity"], result.sparsity_before_projection, result.model  # exact 80 % zeros

Details marked [unverified] in method.md are named options of each learner's config; their defaults are
documented on the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .guards import DivergedError
from .learner import Learner, logit
from .masking import kth_smallest_abs
from .options import Options
from .projection import project_masks, project_scores
from .schedules import agp

# ------------------------------------------------------------------------------------------------------------
# STR
# ------------------------------------------------------------------------------------------------------------
@dataclass
class StrConfig(Options):
    """STR under the PTS budget (method.md §7.1)."""

    threshold_weight_decay: float = -1.0  # on the threshold scores; -1: the weights' (STR decays everything alike)
    threshold_lr_scale: float = 1.0  # the thresholds' lr over the weights' (STR: one optimiser, so 1) [adapted: a grid]
    export: str = "shrunk"  # "shrunk": STR's own model, sign(w)·max(|w| − t, 0); "masked": w ⊙ 1{|w| > t}

    def __post_init__(self):
        if self.export not in ("shrunk", "masked"):
            raise ValueError(f"StrConfig.export must be 'shrunk' or 'masked', got {self.export!r}")
        if self.threshold_lr_scale <= 0:
            raise ValueError(f"StrConfig.threshold_lr_scale must be > 0, got {self.threshold_lr_scale}")


class SoftThreshold(nn.Module):
    """Parametrization w -> sign(w)·relu(|w| − σ(s)): STR's soft threshold, the task loss reaches s through it."""

    def __init__(self, weight: torch.Tensor, threshold: float):
        super().__init__()
        self.score = nn.Parameter(torch.tensor(logit(threshold), dtype=weight.dtype, device=weight.device))
        self.pruned = 0

    def threshold(self) -> torch.Tensor:
        return torch.sigmoid(self.score)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        excess = weight.abs() - self.threshold()
        self.pruned = int((excess <= 0).sum())
        return torch.sign(weight) * F.relu(excess)


class StrLearner(Learner):
    """STR: thresholds start at the ERK allocation (else the sparsity would not move in a few hundred steps);
    the reconstruction loss alone moves them; no budget term. Its sparsity is reported, then projected."""

    name = "str"

    def __init__(self, options: StrConfig | None = None):
        self.options = options or StrConfig()

    def prepare(self, student, allocation, config):
        self.attach(student, config, lambda i, n, w: SoftThreshold(w, kth_smallest_abs(w, allocation[n])))

    def parameter_groups(self, config):
        decay = config.weight_decay if self.options.threshold_weight_decay < 0 else self.options.threshold_weight_decay
        group = dict(params=[m.score for m in self.mods().values()], weight_decay=decay)
        return [{**group, "lr_scale": self.options.threshold_lr_scale} if self.options.threshold_lr_scale != 1 else group]

    @torch.no_grad()
    def _pruned(self) -> dict[str, float]:
        return {n: float((w.abs() <= self.mods()[n].threshold()).sum()) for n, w in self.originals().items()}

    def penalty(self, step, steps):
        return 0.0, torch.tensor(self.global_fraction({n: m.pruned for n, m in self.mods().items()})), {}

    def layer_sparsities(self):
        return {n: k / w.numel() for (n, k), w in zip(self._pruned().items(), self.originals().values())}

    def sparsity_before_projection(self):
        return self.global_fraction(self._pruned())

    def thresholds(self) -> dict[str, float]:
        return {n: float(m.threshold().detach()) for n, m in self.mods().items()}

    def final_masks(self, weights, zeros, zeros_elsewhere, project):
        thresholds = self.thresholds()
        self.shrink = {n: (t, t) for n, t in thresholds.items()}  # (trained t, t for revived weights)
        if not project:
            return {n: (w.abs() > thresholds[n]).to(w.dtype) for n, w in weights.items()}, 1.0, thresholds
        masks, tau = project_masks(weights, thresholds, zeros, zeros_elsewhere)
        self.shrink = {n: (t, t * min(tau, 1.0)) for n, t in thresholds.items()}
        return masks, tau, {n: t * tau for n, t in thresholds.items()}

    def export(self, name, weight, mask, tau):
        if self.options.export == "masked":
            return weight * mask
        # STR's own weights: |w| − t. Weights the projection revives (τ < 1, |w| <= t) would be 0 there: they
        # are shrunk by the projected threshold τ·t instead, and never to exactly 0 (the count stays exact).
        t, projected = self.shrink[name]
        magnitude = weight.abs()
        shrunk = torch.where(magnitude > t, magnitude - t, magnitude - projected)
        return torch.sign(weight) * shrunk.clamp_min(torch.finfo(weight.dtype).tiny) * mask


# ------------------------------------------------------------------------------------------------------------
# ProbMask
# ------------------------------------------------------------------------------------------------------------
@dataclass
class ProbMaskConfig(Options):
    """ProbMask under the PTS budget (method.md §7.2). [code] = as in the authors' code."""

    score_init: float = 1.0  # every keep probability at the start [code: score_init_constant]; 1 = the dense model
    score_start: str = "constant"  # "constant": score_init everywhere [code]; "erk_ranks" [adapted]: each layer's
    #   scores σ(slope·(q − c)/min(c, 1 − c)) from the magnitude quantile q of each weight and the layer's ERK
    #   sparsity c: about the ERK mask, the largest weights most likely kept, mean keep probability about 1 − c
    score_start_slope: float = 6.0  # how sharp that start is around each layer's ERK cut
    score_lr: float = 6e-3  # Adam on the scores, no weight decay [code]; follows the loop's warm-up + cosine shape
    ramp_start: float = 0.16  # the pruned fraction ramps (AGP cubic) from 0 at this fraction of the steps [code]
    ramp_end: float = 0.60  # ...to the target at this fraction [code]
    temperature_final: float = 0.03  # inverse temperature 1/((1 − f)(1 − t/T) + f): 1 -> 1/f [code]
    grad_clip: float = 3.0  # gradient-norm clip on the scores [code]; 0: none
    final_samples: int = 10  # hard masks 1{U < s} drawn at the end; the lowest calibration KD loss wins [code: 10]
    selection_batches: int = 2  # calibration batches that score each final draw (no labels: KD against the teacher)
    logit_eps: float = 1e-6  # logit(s) = log(s + eps) − log(1 − s + eps), finite and differentiable at 0 and 1
    # One mask sample per step (the code draws K = 2): K = 2 would double FCPTS's forward/backward budget.

    def __post_init__(self):
        if not 0.0 <= self.ramp_start < self.ramp_end <= 1.0:
            raise ValueError("ProbMaskConfig: need 0 <= ramp_start < ramp_end <= 1")
        if self.score_start not in ("constant", "erk_ranks"):
            raise ValueError(f"ProbMaskConfig.score_start must be 'constant' or 'erk_ranks', got {self.score_start!r}")
        if self.score_start_slope <= 0:
            raise ValueError("ProbMaskConfig.score_start_slope must be > 0")
        if not 0.0 < self.temperature_final <= 1.0 or self.final_samples < 1 or self.selection_batches < 1:
            raise ValueError("ProbMaskConfig: temperature_final in (0, 1], final_samples and selection_batches >= 1")


def inverse_temperature(step: int, steps: int, final: float = 0.03) -> float:
    """ProbMask's τ(t) = 1 / ((1 − f)(1 − t/T) + f), f = ``final``: 1 at t = 0, 1/f at t = T."""
    return 1.0 / ((1.0 - final) * (1.0 - step / max(1, steps)) + final)


def pruned_fraction(step: int, steps: int, target: float, start: float = 0.16, end: float = 0.60) -> float:
    """The cubic (AGP) ramp of ProbMask's pruned fraction: 0 before ``start``·T, ``target`` from ``end``·T."""
    t = (step / max(1, steps) - start) / (end - start)
    return agp(t, 0.0, target)


@torch.no_grad()
def solve_shift(values: list[torch.Tensor], budget: float, lo: float = 0.0, hi: float = 1.0,
                tol: float = 1e-6, iterations: int = 100) -> float:
    """The v ≥ 0 with Σ clip(x − v, lo, hi) = ``budget`` over all ``values`` (0 when the clipped sum is already
    within the budget). The sum is piecewise linear and decreasing in v: a Newton step lands exactly inside a
    linear piece, so a few passes suffice; a bisection bracket keeps it safe. Sums in float64."""

    def total(v: float) -> tuple[float, float]:
        s, slope = 0.0, 0.0
        for x in values:
            shifted = x.double() - v
            s += float(shifted.clamp(lo, hi).sum())
            slope -= float(((shifted > lo) & (shifted < hi)).sum())
        return s, slope

    s0, slope = total(0.0)
    if s0 <= budget + tol:
        return 0.0
    left, right = 0.0, max(float(x.max()) for x in values) - lo  # total(right) = lo·n <= budget
    v = 0.0
    for _ in range(iterations):
        s, slope = total(v)
        if abs(s - budget) <= tol:
            return v
        if s > budget:
            left = v
        else:
            right = v
        step = v - (s - budget) / slope if slope < 0 else math.nan
        v = step if left < step < right else 0.5 * (left + right)
    return v


@torch.no_grad()
def rank_scores(weight: torch.Tensor, sparsity: float, slope: float = 6.0) -> torch.Tensor:
    """Keep probabilities from magnitude ranks (``ProbMaskConfig.score_start="erk_ranks"``): σ(slope·(q − c)/w),
    q = (rank of |w| + 0.5)/n (0 smallest), c = ``sparsity``, w = min(c, 1 − c): 0.5 at the layer's cut, towards 1
    above it and 0 below, the same steepness relative to the kept and the pruned share of the layer."""
    flat = weight.detach().abs().flatten()
    ranks = torch.empty_like(flat)
    ranks[flat.argsort(stable=True)] = torch.arange(flat.numel(), dtype=flat.dtype, device=flat.device)
    q = (ranks + 0.5) / flat.numel()
    width = max(min(sparsity, 1.0 - sparsity), 1.0 / flat.numel())
    return torch.sigmoid(slope * (q - sparsity) / width).view_as(weight)


class ConcreteMask(nn.Module):
    """Parametrization w -> w ⊙ m, m = σ(τ·(logit s + ℓ)), ℓ ~ Logistic(0, 1): ProbMask's binary-concrete mask.
    With ``fixed`` set, a given 0/1 mask is used instead (scoring the final draws)."""

    def __init__(self, weight: torch.Tensor, init: float, eps: float, generator: torch.Generator):
        super().__init__()
        self.score = nn.Parameter(torch.full_like(weight, float(init)))
        self.eps, self.generator, self.inv_temp = eps, generator, 1.0
        self.fixed: torch.Tensor | None = None
        self.pruned = 0

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            return weight * self.fixed
        s = self.score
        u = torch.rand(s.shape, generator=self.generator, device=s.device, dtype=s.dtype).clamp_(1e-12, 1 - 1e-12)
        noise = torch.log(u) - torch.log1p(-u)
        logits = torch.log(s + self.eps) - torch.log(1 - s + self.eps) + noise
        self.pruned = int((logits <= 0).sum())  # m < 0.5 (or exactly at it): the hard reading of this step's mask
        return weight * torch.sigmoid(self.inv_temp * logits)


class ProbMaskLearner(Learner):
    """ProbMask: scores s ∈ [0, 1] per weight (Adam), binary-concrete masks with a rising inverse temperature,
    after every step s ← clip(s − v, 0, 1) with one global v so that Σ s meets the ramped budget."""

    name = "probmask"

    def __init__(self, options: ProbMaskConfig | None = None):
        self.options = options or ProbMaskConfig()
        self.selection_batches = self.options.selection_batches

    def prepare(self, student, allocation, config):
        self.config = config
        self.generator = torch.Generator(device=next(student.parameters()).device).manual_seed(config.seed)
        self.attach(student, config, lambda i, n, w: ConcreteMask(w, self.options.score_init, self.options.logit_eps,
                                                                    self.generator))
        if self.options.score_start == "erk_ranks":
            with torch.no_grad():
                for n, m in self.mods().items():
                    m.score.copy_(rank_scores(self.originals()[n], allocation[n], self.options.score_start_slope))
            self.start = dict(allocation)
        else:
            self.start = {n: 0.0 for n in self.layers}  # every keep probability at 1: ProbMask starts dense, not at ERK

    def scores(self) -> list[nn.Parameter]:
        return [m.score for m in self.mods().values()]

    def extra_state(self):
        return dict(generator=self.generator.get_state())

    def set_extra_state(self, state):
        if "generator" in state:
            self.generator.set_state(state["generator"])

    def extra_optimizer(self, config):
        return torch.optim.Adam(self.scores(), lr=self.options.score_lr, weight_decay=0.0)

    def keep_budget(self, step: int, steps: int) -> float:
        """Σ s the projection holds: prunable weights minus the zeros of the ramped global fraction."""
        r = pruned_fraction(step, steps, self.config.target, self.options.ramp_start, self.options.ramp_end)
        return self.n_prunable - r * self.n_total

    def before_step(self, step, steps):
        tau = inverse_temperature(step, steps, self.options.temperature_final)
        for m in self.mods().values():
            m.inv_temp = tau

    def after_backward(self):
        if self.options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.scores(), self.options.grad_clip)

    def penalty(self, step, steps):
        return 0.0, torch.tensor(self.global_fraction({n: m.pruned for n, m in self.mods().items()})), {}

    @torch.no_grad()
    def after_step(self, step, steps):
        scores = self.scores()
        v = solve_shift(scores, self.keep_budget(step + 1, steps))
        for s in scores:
            s.sub_(v).clamp_(0.0, 1.0)

    @torch.no_grad()
    def layer_sparsities(self):
        """Per layer: the fraction of keep probabilities below 0.5 (the per-step trajectory reads the sampled masks)."""
        return {n: float((m.score < 0.5).sum()) / m.score.numel() for n, m in self.mods().items()}

    def sparsity_before_projection(self):
        return self.before

    @torch.no_grad()
    def final_masks(self, weights, zeros, zeros_elsewhere, project):
        best, best_loss = None, math.inf
        for _ in range(self.options.final_samples):
            draw = {n: (torch.rand(m.score.shape, generator=self.generator, device=m.score.device,
                                   dtype=m.score.dtype) < m.score).to(m.score.dtype) for n, m in self.mods().items()}
            for n, m in self.mods().items():
                m.fixed = draw[n]
            loss = self.score_masks()
            if loss < best_loss:
                best, best_loss = draw, loss
        for m in self.mods().values():
            m.fixed = None
        if best is None:  # every draw scored NaN/inf: there is no mask to choose
            raise DivergedError(
                f"ProbMask diverged at target {self.config.target:g}: all {self.options.final_samples} final mask "
                f"draws (after step {self.config.steps}) give a NaN/inf KD loss on calibration images; lower "
                f"Config.base_lr or ProbMaskConfig.score_lr (now {self.options.score_lr}), or set Config.grad_clip")
        self.selection_loss = best_loss
        self.before = sum(float((1 - best[n]).sum()) for n in best) / self.n_total  # as FCPTS: prunable layers
        if not project:
            return best, 1.0, {}
        # Keep the draw's kept weights first, then by keep probability; exact zeros in w go first of all.
        scores = {n: (weights[n] != 0).float() * (1.0 + best[n] + 0.5 * self.mods()[n].score) for n in best}
        masks, cut = project_scores(scores, zeros - zeros_elsewhere)
        return masks, cut, {}
