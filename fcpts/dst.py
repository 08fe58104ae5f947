"""Dynamic sparse training (method.md §8): DST-EE (Huang et al., 2023) and RigL (Evci et al., 2020), its c = 0 case.

The number of non-zeros is fixed from the first step, at the ERK per-layer densities of the target. Every ΔT
steps until T_end, in every layer, the policy drops the d(t)·(active) active weights of smallest magnitude and
grows as many inactive ones with the highest acquisition score

    A_i = |∂L/∂w_i| + c · bonus(N_i, u),   bonus = sqrt(ln(u + 1) / (N_i + ε))  ("sqrt", UCB-like)
                                              or   ln(u + 1) / (N_i + ε)        ("linear"),

the dense gradient of that step (RigL's exploitation term) plus an exploration bonus that is large for weights
rarely active: N_i counts the mask states (the start and after every update) in which weight i was active, u is
the number of the update (1, 2, ...). Grown weights start at exactly 0 and their optimiser state (momentum,
Adam's moments) is reset; on an update step the optimiser step is skipped (the rewiring is that step's
update, as in the public PyTorch RigL implementations). d(t) decays by a cosine from d₀ to 0 at T_end.

No official DST-EE code exists and its method section could not be read: the bonus form, c, ε, the gradient
normalisation, the update count u in the bonus and the skipped step are **unverified** choices, each an option
of ``DstConfig``. With c = 0 the acquisition is the plain |∂L/∂w| ranking and the update is RigL's exactly
(``tests/test_dst.py`` checks it against an update written out independently).

Coverage, the fraction of prunable weights that were ever active, is DST-EE's exploration metric; it is logged
at every update. Training (steps, batch, optimiser, lr schedule) is ``PruneTrainConfig``, the same as the
schedule-driven rows, through the same loop (``fcpts.prune_train.train_with_masks``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .allocation import erk_allocation, magnitude_masks
from .guards import check_final_outputs
from .masking import TIE_RULES, lowest_k_mask
from .options import Options
from .prune_train import PruneTrainConfig, PruneTrainResult, train_with_masks


@dataclass
class DstConfig(Options):
    """The mask updates of dynamic sparse training (``dst_train``; the comparison runner's dst-ee rows, and rigl
    with c = 0). The training itself (steps, batch, optimiser, lr) is a ``PruneTrainConfig``."""

    c: float = 0.1  # exploration weight [unverified]; 0 gives RigL
    bonus: str = "sqrt"  # "sqrt": sqrt(ln(u+1)/(N+eps)) (UCB) or "linear": ln(u+1)/(N+eps) [unverified]
    eps: float = 1.0  # keeps the bonus of never-active weights finite [unverified]
    normalize: str = "layer_max"  # |grad| / its layer maximum, so c is scale-free ("none": raw) [unverified]
    delta_t: int = 0  # steps between mask updates; 0: about `updates` updates before T_end
    updates: int = 15  # the number of updates delta_t = 0 aims at (method.md: 10-20 per run)
    d0: float = 0.3  # initial drop fraction (RigL)
    t_end: float = 0.75  # fraction of the steps after which the mask is frozen (RigL)
    skip_step_on_update: bool = True  # no optimiser step on an update step [unverified for DST-EE]
    scratch_masks: str = "random"  # masks of a from-scratch start: "random" (RigL) or "magnitude"
    ties: str = "topk"  # equal scores at a drop/grow cut: "topk" (torch.topk's order; data/dst_digits.csv) or
    #   "index" (the kit's one rule, masking.lowest_k: lowest index first). They differ here: grown weights that
    #   are still exactly 0 tie at the drop cut

    def __post_init__(self) -> None:
        if self.c < 0:
            raise ValueError(f"c must be >= 0, got {self.c}")
        if self.bonus not in ("sqrt", "linear"):
            raise ValueError(f"bonus must be 'sqrt' or 'linear', got {self.bonus!r}")
        if self.normalize not in ("layer_max", "none"):
            raise ValueError(f"normalize must be 'layer_max' or 'none', got {self.normalize!r}")
        if self.eps <= 0 or not 0 <= self.d0 <= 1 or not 0 < self.t_end <= 1 or self.delta_t < 0 or self.updates < 1:
            raise ValueError("need eps > 0, 0 <= d0 <= 1, 0 < t_end <= 1, delta_t >= 0 and updates >= 1")
        if self.scratch_masks not in ("random", "magnitude"):
            raise ValueError(f"scratch_masks must be 'random' or 'magnitude', got {self.scratch_masks!r}")
        if self.ties not in TIE_RULES:
            raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, got {self.ties!r}")


def update_interval(steps: int, config: DstConfig) -> int:
    """ΔT: ``config.delta_t``, or the interval that gives about ``config.updates`` updates before T_end."""
    return config.delta_t or max(1, round(config.t_end * steps / config.updates))


def is_update_step(step: int, steps: int, config: DstConfig) -> bool:
    return 0 < step < config.t_end * steps and step % update_interval(steps, config) == 0


def drop_fraction(step: int, steps: int, config: DstConfig) -> float:
    """d(t): cosine decay from d₀ at step 0 to 0 at T_end (RigL's schedule)."""
    end = config.t_end * steps
    return 0.0 if step >= end else config.d0 / 2 * (1 + math.cos(math.pi * step / end))


def acquisition(grad_abs: torch.Tensor, active_counts: torch.Tensor, update: int, config: DstConfig) -> torch.Tensor:
    """A = |∇| (normalised per layer unless c = 0, which keeps RigL's ranking bit for bit) + c·bonus(N, u)."""
    if config.c == 0:
        return grad_abs
    top = grad_abs.max()
    exploit = grad_abs / top if config.normalize == "layer_max" and top > 0 else grad_abs
    ratio = math.log(update + 1) / (active_counts.to(grad_abs.dtype) + config.eps)
    return exploit + config.c * (ratio.sqrt() if config.bonus == "sqrt" else ratio)


@torch.no_grad()
def rewire(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, active_counts: torch.Tensor, n: int,
           update: int, config: DstConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's update: drop the ``n`` active weights of smallest |w|, grow the ``n`` highest-scoring weights
    that are inactive after the drop (a just-dropped weight may come back, as in RigL). Both selections are
    ``masking.lowest_k`` (exact counts; ties as ``config.ties`` says). Returns (new mask, grown)."""
    flat_mask = mask.flatten().bool()
    if n <= 0:
        return mask.clone(), torch.zeros_like(mask, dtype=torch.bool)
    magnitude = weight.abs().flatten().masked_fill(~flat_mask, math.inf)
    kept = flat_mask & ~lowest_k_mask(magnitude, n, ties=config.ties)
    score = acquisition(grad.abs().flatten(), active_counts.flatten(), update, config).masked_fill(kept, -math.inf)
    grown = lowest_k_mask(score, n, largest=True, ties=config.ties)
    new = kept | grown
    return new.reshape(mask.shape).to(mask.dtype), grown.reshape(mask.shape)


class DynamicSparsity:
    """The masks of dynamic sparse training, for ``train_with_masks``: ERK densities, drop-and-grow rewiring."""

    def __init__(self, student: nn.Module, layers: dict[str, nn.Module], target: float, config: DstConfig,
                 train: PruneTrainConfig, start: str = "dense"):
        self.layers, self.config = layers, config
        self.label = "RigL" if config.c == 0 else "DST-EE"
        # A grown weight starts at 0 and stays there while its gradient is exactly 0 (a dead unit), so a run may
        # end with a few more zeros than inactive weights: the runner reports the real count.
        self.exact_zeros = False
        allocation = erk_allocation(student, target, train.include, train.exclude)
        if start == "dense" or config.scratch_masks == "magnitude":
            self.masks = magnitude_masks(student, allocation, ties=config.ties)  # the start: magnitude-prune to ERK at step 0
        else:
            generator = torch.Generator().manual_seed(train.seed)
            self.masks = {}
            for name, sparsity in allocation.items():
                w = layers[name].weight
                keep = torch.ones(w.numel(), dtype=w.dtype)
                keep[torch.randperm(w.numel(), generator=generator)[:int(round(sparsity * w.numel()))]] = 0
                self.masks[name] = keep.reshape(w.shape).to(w.device)
        self.active_counts = {n: m.to(torch.int32) for n, m in self.masks.items()}  # N_i: the start counts once
        self.total = sum(m.numel() for m in self.masks.values())
        self.updates = 0
        self.coverage_history = [dict(step=0, update=0, coverage=self.coverage())]
        self.last_grown: dict[str, torch.Tensor] = {}

    def coverage(self) -> float:
        """The fraction of the prunable weights that were ever active."""
        return sum(int((c > 0).sum()) for c in self.active_counts.values()) / self.total

    def before_step(self, step: int, steps: int) -> None:
        pass  # the masks change only in after_backward

    def after_backward(self, step: int, steps: int, optimizer: torch.optim.Optimizer) -> bool:
        if not is_update_step(step, steps, self.config):
            return True
        self.updates += 1
        fraction = drop_fraction(step, steps, self.config)
        self.last_grown = {}
        for name, mask in self.masks.items():
            weight = self.layers[name].weight
            n = int(fraction * int(mask.sum()))
            new, grown = rewire(weight.detach(), weight.grad, mask, self.active_counts[name], n, self.updates,
                                self.config)
            with torch.no_grad():
                weight[grown] = 0.0  # grown weights start at zero ...
                for value in optimizer.state.get(weight, {}).values():  # ... with no momentum or Adam moments
                    if torch.is_tensor(value) and value.shape == weight.shape:
                        value[grown] = 0.0
            self.masks[name] = new
            self.active_counts[name] += new.to(torch.int32)
            self.last_grown[name] = grown
        self.coverage_history.append(dict(step=step, update=self.updates, coverage=self.coverage()))
        return not self.config.skip_step_on_update

    def log(self) -> dict:
        return dict(coverage=self.coverage(), updates=self.updates)


def dst_train(model: nn.Module, train_data, target: float, train: PruneTrainConfig | None = None,
              config: DstConfig | None = None, start: str = "dense", on_step=None) -> tuple[PruneTrainResult, list[dict]]:
    """DST-EE (RigL with ``config.c = 0``) on a copy of ``model``: constant non-zeros at the ERK densities of
    ``target`` from the first step; ``start`` "dense" (magnitude masks of the trained model) or "scratch"
    (``config.scratch_masks``). Returns the training result and the coverage after every update."""
    train, config = train or PruneTrainConfig(), config or DstConfig()
    if start not in ("dense", "scratch"):
        raise ValueError(f"start must be 'dense' or 'scratch', got {start!r}")
    policies = []

    def make_policy(student, layers):
        policies.append(DynamicSparsity(student, layers, target, config, train, start))
        return policies[-1]

    result = train_with_masks(model, train_data, target, train, make_policy, on_step)
    check_final_outputs(result.model, train_data, policies[0].label, target, result.steps,
                        hint=f"lower PruneTrainConfig.lr (now {train.lr}) or check the training inputs")
    return result, policies[0].coverage_history
