"""The exact final projection: exactly round(S* · N) zero weights, whatever the penalty left.

The released code only *penalises* |S - S*|, so its final sparsity is whatever the thresholds give at the
last step. Here one shared multiplicative shift τ of all thresholds is chosen — equivalently a global cut on
the scale-free score |w| / t_l — so that exactly the required number of weights falls below it; ties at
the cut are broken by position, lowest index first (``masking.lowest_k``, the one rule every method that drops
weights uses). A layer's learned threshold t_l becomes τ · t_l: the learned allocation's shape is kept, only
its level moves.
"""
from __future__ import annotations

import torch

from .masking import lowest_k


@torch.no_grad()
def project_masks(weights: dict[str, torch.Tensor], thresholds: dict[str, float], zeros: int,
                  zeros_elsewhere: int = 0) -> tuple[dict[str, torch.Tensor], float]:
    """0/1 masks over ``weights`` that remove exactly ``zeros - zeros_elsewhere`` weights, and τ.

    ``zeros_elsewhere`` counts exact zeros outside the prunable layers (excluded layers), so that the whole
    model ends with exactly ``zeros`` zero weights. Weights that are already exactly zero score 0 and go first.
    """
    names = list(weights)
    scores = {n: weights[n].detach().abs().float() / max(thresholds[n], 1e-12) for n in names}
    if zeros < zeros_elsewhere:
        raise ValueError(f"the excluded layers already hold {zeros_elsewhere:,} exact zero weights, more than the "
                         f"{zeros:,} the target asks for; raise the target")
    return project_scores(scores, zeros - zeros_elsewhere)


@torch.no_grad()
def project_scores(scores: dict[str, torch.Tensor], to_prune: int) -> tuple[dict[str, torch.Tensor], float]:
    """0/1 masks that remove exactly the ``to_prune`` lowest of all ``scores`` (ties by position), and the cut.

    The one global cut every method's final step shares: FCPTS, STR and DSA-style score a weight by |w| / t_l,
    ProbMask by its sampled mask and keep probability. A score of exactly 0 must mean "already zero".
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().float() for n in names])
    already_zero = int((flat == 0).sum())  # score 0 marks a weight that is exactly zero already: it goes first
    if already_zero > to_prune:
        raise ValueError(f"the model already holds {already_zero:,} exact zero weights, more than the {to_prune:,} "
                         "the target asks for; raise the target")
    if to_prune > flat.numel():
        raise ValueError(f"cannot zero {to_prune:,} of {flat.numel():,} prunable weights")
    prune, cut = lowest_k(flat, to_prune)
    tau = 0.0 if cut is None else float(cut)
    masks, start = {}, 0
    for n in names:
        size = scores[n].numel()
        masks[n] = (~prune[start:start + size]).reshape(scores[n].shape).to(scores[n].dtype)
        start += size
    return masks, tau
