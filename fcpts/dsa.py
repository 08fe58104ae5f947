"""DSA-style (unstructured, parameter budget): DSA's differentiable keep ratios adapted to weights (method.md §7.3).

DSA (Ning et al., ECCV 2020) learns per-channel-group keep ratios under a FLOPs budget. Here, as the kit must
run it under FCPTS's post-training budget and counting, each prunable layer l has one keep ratio
α_l = σ(a_l) over its *weights*, and the budget is the parameter count Σ_l n_l α_l = (1 − S*)·N:

* importance b = |w| (detached); keep probability p = clip(σ(β₂(ln b − ln β₁)) + 0.01, 0, 1), with ln β₁
  *solved* in every forward so that mean p = α_l (``solve_log_beta1``: a safeguarded Newton on ln β₁, warm
  started from the last step, the bisection bracket keeping it safe);
* masks m ~ Bernoulli(p) with a straight-through backward (∂m/∂p = 1);
* the implicit gradient to α: ∂L/∂α_l = n_l Σ_i (∂L/∂p_i) f′_i / Σ_j f′_j (a softmax of log f′; the clip and
  the +0.01 are ignored in the backward, as in DSA);
* the budget by an ADMM-style loop [unverified form]: the loss gets (ρ/2)‖α − z + u‖², and after each step
  z = the projection of α + u onto {Σ n_l z_l = K, α_min ≤ z ≤ α_max} (z_l = clip(v_l − λ n_l), λ by
  bisection), u ← u + α − z.

ρ, the α optimiser's learning rate and the α/weight step ratio (``alpha_every``; 1:1 by default) are
[unverified]: they are named options of ``DsaConfig`` with the chosen defaults documented there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .learner import Learner, logit
from .masking import kth_smallest_abs, lowest_k_mask
from .options import Options
from .projection import project_masks


@dataclass
class DsaConfig(Options):
    """DSA-style under the PTS budget. [code] = DSA's op.py; the rest is [unverified] and chosen here."""

    beta2: float = 1.0  # shape of the keep probability [code: a fixed constant]
    floor: float = 0.01  # p = clip(σ(...) + floor, 0, 1) [code]
    alpha_lr: float = 0.01  # Adam on the raw ratios a_l, warm-up + cosine like the weights [unverified]
    alpha_every: int = 1  # the α/weight step ratio: α steps on every k-th weight step [unverified]
    rho: float = 1.0  # ADMM penalty weight [unverified]
    alpha_min: float = 0.02  # box of the budget projection; above the floor so mean p = α stays solvable
    alpha_max: float = 0.999  # top of that box (ERK's dense layers start here)
    train_masks: str = "bernoulli"  # masks while learning: m ~ Bernoulli(p) [code]; "topk" [adapted]: the
    #   round(α_l·n_l) largest |w| of each layer, deterministic, with the same straight-through gradient to p
    final: str = "topk"  # final masks: the round(α_l·n_l) largest |w| per layer ("topk"), or one Bernoulli draw
    #   ("sample": the draw sets each layer's count; the projection then keeps that layer's largest |w|)
    tol: float = 1e-6  # |mean p − α| of the β₁ solve

    def __post_init__(self):
        if self.train_masks not in ("bernoulli", "topk"):
            raise ValueError(f"DsaConfig.train_masks must be 'bernoulli' or 'topk', got {self.train_masks!r}")
        if self.final not in ("topk", "sample"):
            raise ValueError(f"DsaConfig.final must be 'topk' or 'sample', got {self.final!r}")
        if not self.floor < self.alpha_min < self.alpha_max < 1.0 or self.beta2 <= 0 or self.rho < 0:
            raise ValueError("DsaConfig: need floor < alpha_min < alpha_max < 1, beta2 > 0 and rho >= 0")
        if self.alpha_every < 1:
            raise ValueError("DsaConfig.alpha_every must be at least 1")


@torch.no_grad()
def solve_log_beta1(log_b: torch.Tensor, alpha: float, beta2: float = 1.0, floor: float = 0.01,
                    guess: float | None = None, tol: float = 1e-6, iterations: int = 100) -> float:
    """ln β₁ such that mean(clip(σ(β₂(ln b − ln β₁)) + floor, 0, 1)) = α (decreasing in ln β₁)."""
    if not floor < alpha < 1.0:
        raise ValueError(f"keep ratio {alpha} must lie strictly between the floor {floor} and 1")

    def gap(x: float) -> tuple[float, float]:
        sig = torch.sigmoid(beta2 * (log_b - x))
        p = sig + floor
        inside = p < 1
        g = float(p.clamp_max(1).mean()) - alpha
        slope = -beta2 * float((sig * (1 - sig) * inside).mean())
        return g, slope

    lo = float(log_b.min()) - 40.0 / beta2  # gap(lo) ≈ 1 − α > 0
    hi = float(log_b.max()) + 40.0 / beta2  # gap(hi) ≈ floor − α < 0
    x = guess if guess is not None and lo < guess < hi else 0.5 * (lo + hi)
    for _ in range(iterations):
        g, slope = gap(x)
        if abs(g) <= tol:
            return x
        if g > 0:
            lo = x
        else:
            hi = x
        step = x - g / slope if slope < 0 else math.nan
        x = step if lo < step < hi else 0.5 * (lo + hi)
    return x


class _KeepProbability(torch.autograd.Function):
    """p(α) with ln β₁ solved inside; backward = DSA's implicit gradient to α (none to the importance)."""

    @staticmethod
    def forward(ctx, log_b, alpha, log_beta1, beta2, floor):
        z = beta2 * (log_b - log_beta1)
        ctx.save_for_backward(F.logsigmoid(z) + F.logsigmoid(-z))  # log f′ (up to the constant log β₂)
        return (torch.sigmoid(z) + floor).clamp_max(1.0)

    @staticmethod
    def backward(ctx, grad_p):
        (log_fprime,) = ctx.saved_tensors
        share = torch.softmax(log_fprime.flatten().double(), dim=0)
        grad_alpha = log_fprime.numel() * (grad_p.flatten().double() * share).sum()
        return None, grad_alpha.to(grad_p.dtype), None, None, None


def keep_probability(weight: torch.Tensor, alpha: torch.Tensor, beta2: float = 1.0, floor: float = 0.01,
                     guess: float | None = None, tol: float = 1e-6) -> tuple[torch.Tensor, float]:
    """(p, ln β₁): DSA's keep probability of every weight of one layer at keep ratio ``alpha`` (a scalar tensor
    that receives the implicit gradient)."""
    log_b = weight.detach().abs().clamp_min(torch.finfo(weight.dtype).tiny).log()
    log_beta1 = solve_log_beta1(log_b, float(alpha.detach()), beta2, floor, guess, tol)
    return _KeepProbability.apply(log_b, alpha, log_beta1, beta2, floor), log_beta1


class BernoulliKeep(nn.Module):
    """Parametrization w -> w ⊙ m, m ~ Bernoulli(p(α)) with m's gradient passed straight to p."""

    def __init__(self, weight: torch.Tensor, alpha0: float, options: DsaConfig, generator: torch.Generator):
        super().__init__()
        start = min(max(alpha0, options.alpha_min), options.alpha_max)
        self.raw = nn.Parameter(torch.tensor(logit(start), dtype=weight.dtype, device=weight.device))
        self.options, self.generator, self.log_beta1 = options, generator, None
        self.pruned = 0

    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.raw)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        o = self.options
        alpha = self.alpha()
        # Clamp the value, not the gradient: a plain clamp would cut the task gradient of every layer that
        # starts at the box's edge (ERK's dense layers start at alpha_max); the ADMM term pulls α back inside.
        alpha = alpha + (alpha.clamp(o.alpha_min, o.alpha_max) - alpha).detach()
        p, self.log_beta1 = keep_probability(weight, alpha, o.beta2, o.floor, self.log_beta1, o.tol)
        if o.train_masks == "topk":  # deterministic: the layer's largest |w| at its keep ratio
            self.pruned = int(round((1.0 - float(alpha.detach())) * weight.numel()))
            draw = (~lowest_k_mask(weight.detach().abs(), self.pruned)).to(weight.dtype)
        else:
            draw = torch.bernoulli(p.detach(), generator=self.generator)
            self.pruned = int(draw.numel() - draw.sum())
        return weight * (draw + p - p.detach())


@torch.no_grad()
def project_budget(values: torch.Tensor, sizes: torch.Tensor, budget: float, lo: float, hi: float,
                   iterations: int = 200) -> torch.Tensor:
    """argmin ‖z − v‖² s.t. Σ n_l z_l = budget, lo ≤ z ≤ hi: z_l = clip(v_l − λ n_l, lo, hi), λ by bisection."""
    v, n = values.double(), sizes.double()
    if not lo * float(n.sum()) <= budget <= hi * float(n.sum()):
        raise ValueError(f"budget {budget:,.0f} weights is outside [{lo} N, {hi} N]")
    left = (float(v.min()) - hi) / float(n.min()) - 1.0  # every z at hi
    right = (float(v.max()) - lo) / float(n.min()) + 1.0  # every z at lo
    for _ in range(iterations):
        mid = 0.5 * (left + right)
        if float(((v - mid * n).clamp(lo, hi) * n).sum()) > budget:
            left = mid
        else:
            right = mid
    return (v - 0.5 * (left + right) * n).clamp(lo, hi)


class DsaLearner(Learner):
    """DSA-style (unstructured, parameter budget): keep ratios start at the ERK densities."""

    name = "dsa"

    def __init__(self, options: DsaConfig | None = None):
        self.options = options or DsaConfig()

    def prepare(self, student, allocation, config):
        self.config = config
        device = next(student.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.attach(student, config, lambda i, n, w: BernoulliKeep(w, 1.0 - allocation[n], self.options, self.generator))
        # kept prunable weights: excluded layers count as dense in N (method.md §1)
        self.budget = self.n_prunable - round(config.target * self.n_total)
        self.sizes = torch.tensor([float(w.numel()) for w in self.originals().values()], dtype=torch.float64,
                                  device=device)
        alphas = self.alphas().detach().double()
        self.z = project_budget(alphas, self.sizes, self.budget, self.options.alpha_min, self.options.alpha_max)
        self.u = torch.zeros_like(self.z)

    def extra_state(self):
        return dict(generator=self.generator.get_state(), z=self.z.clone(), u=self.u.clone())

    def set_extra_state(self, state):
        if "generator" in state:
            self.generator.set_state(state["generator"])
            self.z, self.u = state["z"].clone(), state["u"].clone()

    def raws(self) -> list[nn.Parameter]:
        return [m.raw for m in self.mods().values()]

    def alphas(self) -> torch.Tensor:
        return torch.stack([m.alpha() for m in self.mods().values()])

    def extra_optimizer(self, config):
        return torch.optim.Adam(self.raws(), lr=self.options.alpha_lr)

    def before_step(self, step, steps):
        self.step = step

    def after_backward(self):
        if self.step % self.options.alpha_every:  # not an α step: Adam skips parameters without a gradient
            for raw in self.raws():
                raw.grad = None

    def penalty(self, step, steps):
        alphas = self.alphas()
        gap = alphas - (self.z - self.u).to(alphas.dtype)
        admm = 0.5 * self.options.rho * (gap * gap).sum()
        kept = float((alphas.detach().double() * self.sizes).sum())
        sparsity = torch.tensor(self.global_fraction({n: m.pruned for n, m in self.mods().items()}))
        return admm, sparsity, dict(loss_admm=admm.item(), expected_sparsity=1.0 - (kept + self.n_total - self.n_prunable) / self.n_total)

    @torch.no_grad()
    def after_step(self, step, steps):
        alphas = self.alphas().double()
        self.z = project_budget(alphas + self.u, self.sizes, self.budget, self.options.alpha_min, self.options.alpha_max)
        self.u += alphas - self.z

    @torch.no_grad()
    def layer_sparsities(self):
        return {n: 1.0 - float(a) for n, a in zip(self.mods(), self.alphas())}

    def sparsity_before_projection(self):
        return self.before

    @torch.no_grad()
    def final_masks(self, weights, zeros, zeros_elsewhere, project):
        o = self.options
        alphas = {n: float(a.clamp(o.alpha_min, o.alpha_max)) for n, a in zip(self.mods(), self.alphas())}
        if o.final == "topk":
            thresholds = {n: kth_smallest_abs(w, 1.0 - alphas[n]) for n, w in weights.items()}
            # exactly round((1 - α_l)·n_l) zeros per layer, ties by position (``masking.lowest_k``)
            own = {n: (~lowest_k_mask(w.detach().abs(), int(round((1.0 - alphas[n]) * w.numel())))).to(w.dtype)
                   for n, w in weights.items()}
        else:
            own = {}
            for n, w in weights.items():
                p, _ = keep_probability(w, torch.tensor(alphas[n]), o.beta2, o.floor, None, o.tol)
                own[n] = torch.bernoulli(p, generator=self.generator).to(w.dtype)
            # thresholds that put each layer's cut where its own draw's count is: projection keeps the shape
            thresholds = {n: kth_smallest_abs(w, 1.0 - float(own[n].mean())) for n, w in weights.items()}
        self.before = sum(float((1 - m).sum()) for m in own.values()) / self.n_total  # as FCPTS: prunable layers
        if not project:
            return own, 1.0, thresholds
        masks, tau = project_masks(weights, thresholds, zeros, zeros_elsewhere)
        return masks, tau, {n: t * tau for n, t in thresholds.items()}
