"""Per-layer sparsity allocations under one global budget: ``{layer name: sparsity}``.

Every allocation here counts the budget the same way (method.md §1): the target S* applies to all
Conv2d/Linear weights, N of them; excluded layers stay dense and still count in N; and the per-layer
zero counts k_l are integers that add up to exactly round(S* N) (largest-remainder rounding), so that
every method meets the target exactly and comparisons do not drift.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .config import check_target
from .masking import all_weight_layers, lowest_k_mask, prunable_layers


def zero_budget(model: nn.Module, target: float, include=("*",), exclude=()) -> tuple[dict[str, nn.Module], int]:
    """The prunable layers and the exact number of weights to zero among them."""
    target = check_target(target)
    layers = prunable_layers(model, include, exclude)
    n_all = sum(m.weight.numel() for m in all_weight_layers(model).values())
    n_prunable = sum(m.weight.numel() for m in layers.values())
    zeros = int(round(target * n_all))
    if zeros > n_prunable:
        raise ValueError(
            f"target {target:.4f} needs {zeros:,} zero weights but the selected layers hold only {n_prunable:,} "
            f"of {n_all:,} ({n_prunable / n_all:.1%}); the excluded layers hold too many weights. Lower the target "
            f"to at most {n_prunable / n_all:.4f} or exclude fewer layers")
    return layers, zeros


def exact_counts(fractions: dict[str, float], numels: dict[str, int], total_zeros: int) -> dict[str, int]:
    """Integer zero counts close to ``fractions * numels`` that add up to exactly ``total_zeros``.

    Largest-remainder rounding, never below 0 or above a layer's size.
    """
    ideal = {n: min(max(fractions[n], 0.0), 1.0) * numels[n] for n in numels}
    counts = {n: int(math.floor(v)) for n, v in ideal.items()}
    missing = total_zeros - sum(counts.values())
    order = sorted(numels, key=lambda n: ideal[n] - counts[n], reverse=missing > 0)
    step = 1 if missing > 0 else -1
    while missing != 0:
        moved = False
        for n in order:
            if missing == 0:
                break
            new = counts[n] + step
            if 0 <= new <= numels[n]:
                counts[n], missing, moved = new, missing - step, True
        if not moved:
            raise ValueError(f"cannot place {total_zeros} zeros in layers of {sum(numels.values())} weights")
    return counts


def _as_allocation(counts: dict[str, int], numels: dict[str, int]) -> dict[str, float]:
    return {n: counts[n] / numels[n] for n in counts}


def uniform_allocation(model: nn.Module, target: float, include=("*",), exclude=()) -> dict[str, float]:
    """Every selected layer at (about) the same sparsity, rescaled when some layers are excluded."""
    layers, zeros = zero_budget(model, target, include, exclude)
    numels = {n: m.weight.numel() for n, m in layers.items()}
    share = zeros / sum(numels.values())
    return _as_allocation(exact_counts({n: share for n in numels}, numels, zeros), numels)


def global_score_allocation(layers: dict[str, nn.Module], zeros: int, scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Prune the ``zeros`` lowest scores over all layers at once (``masking.lowest_k``: ties by position, earlier
    layers first); return the per-layer fractions."""
    flat = torch.cat([scores[n].flatten() for n in layers])
    pruned = lowest_k_mask(flat, zeros)
    counts, start = {}, 0
    for n, m in layers.items():
        size = m.weight.numel()
        counts[n] = int(pruned[start:start + size].sum())
        start += size
    return _as_allocation(counts, {n: m.weight.numel() for n, m in layers.items()})


@torch.no_grad()
def global_magnitude_allocation(model: nn.Module, target: float, include=("*",), exclude=()) -> dict[str, float]:
    """One |w| threshold over all selected weights (``prune.global_unstructured`` with L1)."""
    layers, zeros = zero_budget(model, target, include, exclude)
    return global_score_allocation(layers, zeros, {n: m.weight.detach().abs().float().cpu() for n, m in layers.items()})


@torch.no_grad()
def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP (Lee et al. 2021): w_u^2 / Σ_{v >= u} w_v^2 over the layer's weights sorted ascending by |w|."""
    sq = weight.detach().float().cpu().flatten().pow(2)
    sorted_sq, order = torch.sort(sq, stable=True)  # equal |w|: the earlier weight scores lower (``lowest_k``'s rule)
    tail = sorted_sq.flip(0).cumsum(0).flip(0)  # Σ over this and every larger weight
    scores = torch.empty_like(sq)
    scores[order] = sorted_sq / tail.clamp_min(torch.finfo(torch.float32).tiny)
    return scores.reshape(weight.shape)


@torch.no_grad()
def lamp_allocation(model: nn.Module, target: float, include=("*",), exclude=()) -> dict[str, float]:
    """Keep the globally top-scored weights under the LAMP score."""
    layers, zeros = zero_budget(model, target, include, exclude)
    return global_score_allocation(layers, zeros, {n: lamp_scores(m.weight) for n, m in layers.items()})


def erk_densities(shapes: dict[str, tuple[int, ...]], budget: float, gamma: float = 1.0) -> dict[str, float]:
    """ERK densities (Evci et al., RigL): density_l = ε · (Σ dims / Π dims)^γ with ε solved so that
    Σ n_l density_l = ``budget`` (the number of weights to keep); layers over density 1 are made dense
    and ε re-solved until none exceeds 1."""
    numels = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / math.prod(s)) ** gamma for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        remaining = budget - sum(numels[n] for n in dense)
        if not free:
            break
        eps = remaining / sum(numels[n] * raw[n] for n in free)
        over = {n for n in free if eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def erk_allocation(model: nn.Module, target: float, include=("*",), exclude=(), gamma: float = 1.0) -> dict[str, float]:
    """ERK allocation of the selected layers (kernel dimensions included, γ = 1 as in RigL and FCPTS)."""
    layers, zeros = zero_budget(model, target, include, exclude)
    shapes = {n: tuple(m.weight.shape) for n, m in layers.items()}
    numels = {n: m.weight.numel() for n, m in layers.items()}
    densities = erk_densities(shapes, sum(numels.values()) - zeros, gamma)
    return _as_allocation(exact_counts({n: 1.0 - d for n, d in densities.items()}, numels, zeros), numels)


def _released_zero_counts(model: nn.Module, target: float, include, exclude) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """The released code's budget: floor(S*·n_l) zeros for every Conv2d/Linear layer (so a few zeros fewer than
    round(S*·N) in all); excluded layers keep theirs in the budget as ERK's dense layers do."""
    target = check_target(target)
    layers = prunable_layers(model, include, exclude)
    every = all_weight_layers(model)
    return layers, {n: int(math.floor(target * m.weight.numel())) for n, m in every.items()}


def erk_released_allocation(model: nn.Module, target: float, include=("*",), exclude=(),
                            gamma: float = 1.0) -> dict[str, float]:
    """The released ERK start (``Config.init_rounding = "released"``): the same ERK densities (``erk_densities``)
    with the released code's budget, floor(S*·n_l) zeros per layer, as fractions; thresholds then prune
    int(S_l·n_l) weights (``masking.released_start_score``). The released code turns the densest layer dense one
    round at a time where ``erk_densities`` turns every layer over 1 dense at once; ε only grows, so both end with
    the same dense layers. Not an exact-count allocation: see ``erk_allocation`` for that."""
    layers, zeros = _released_zero_counts(model, target, include, exclude)
    kept = sum(m.weight.numel() for m in layers.values()) - sum(zeros.values())
    if kept < 0:
        zero_budget(model, target, include, exclude)  # raises the error that says what to lower
    densities = erk_densities({n: tuple(m.weight.shape) for n, m in layers.items()}, kept, gamma)
    return {n: 1.0 - d for n, d in densities.items()}


def uniform_released_allocation(model: nn.Module, target: float, include=("*",), exclude=()) -> dict[str, float]:
    """Every selected layer at S* (rescaled over the prunable layers when some are excluded), released rounding."""
    layers, zeros = _released_zero_counts(model, target, include, exclude)
    share = sum(zeros.values()) / sum(m.weight.numel() for m in layers.values())
    if share > 1.0:
        zero_budget(model, target, include, exclude)
    return {n: share for n in layers}


ALLOCATIONS = {
    "uniform": uniform_allocation,
    "global": global_magnitude_allocation,
    "erk": erk_allocation,
    "lamp": lamp_allocation,
}


def allocate(method: str, model: nn.Module, target: float, include=("*",), exclude=(), **kwargs) -> dict[str, float]:
    """Dispatch by name: uniform, global, erk, lamp (``fcpts.baselines.ALLOCATIONS`` adds POT's)."""
    if method not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {method!r}; choose one of {', '.join(ALLOCATIONS)}")
    return ALLOCATIONS[method](model, target, include, exclude, **kwargs)


@torch.no_grad()
def magnitude_masks(model: nn.Module, allocation: dict[str, float], ties: str = "index") -> dict[str, torch.Tensor]:
    """Per-layer 0/1 masks that remove exactly round(S_l n_l) smallest-|w| weights of each layer.

    The same sets as ``torch.nn.utils.prune.l1_unstructured`` (and, with ``global_magnitude_allocation``,
    ``prune.global_unstructured``) wherever |w| has no ties at the cut. Ties follow the kit's one rule
    (``masking.lowest_k``: by position, lowest index dropped first), where torch's ``topk`` leaves the order of
    equal values unspecified.
    """
    layers = dict(model.named_modules())
    masks = {}
    for name, sparsity in allocation.items():
        w = layers[name].weight.detach()
        k = int(round(sparsity * w.numel()))
        masks[name] = (~lowest_k_mask(w.abs(), k, ties=ties)).to(w.dtype)
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Zero the masked weights in place (real zeros in a plain ``state_dict``)."""
    layers = dict(model.named_modules())
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)
    return model


def masked_copy(model: nn.Module, allocation: dict[str, float], device: torch.device | str | None = None) -> nn.Module:
    """A copy of ``model`` (on ``device``) with the magnitude masks of ``allocation`` applied: real zeros."""
    pruned = copy.deepcopy(model)
    if device is not None:
        pruned = pruned.to(device)
    return apply_masks(pruned, magnitude_masks(pruned, allocation))
