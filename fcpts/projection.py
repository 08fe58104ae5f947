"""The exact final projection: exactly round(S* · N) zero weights, whatever the penalty left.

The released code only *penalises* |S - S*|, so its final sparsity is whatever the thresholds give at the
last step. Here one shared multiplicative shift τ of all thresholds is chosen — equivalently a global cut on
the scale-free score |w| / t_l — so that exactly the required number of weights falls below it; ties at
the cut are broken by position. A layer's learned threshold t_l becomes τ · t_l: the learned allocation's
shape is kept, only its level moves.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def project_masks(weights: dict[str, torch.Tensor], thresholds: dict[str, float], zeros: int,
                  zeros_elsewhere: int = 0) -> tuple[dict[str, torch.Tensor], float]:
    """0/1 masks over ``weights`` that remove exactly ``zeros - zeros_elsewhere`` weights, and τ.

    ``zeros_elsewhere`` counts exact zeros outside the prunable layers (excluded layers), so that the whole
    model ends with exactly ``zeros`` zero weights. Weights that are already exactly zero score 0 and go first.
    """
    names = list(weights)
    scores = torch.cat([(weights[n].detach().abs().flatten().float() / max(thresholds[n], 1e-12)) for n in names])
    to_prune = zeros - zeros_elsewhere
    already_zero = int((scores == 0).sum())
    if to_prune < 0 or already_zero > to_prune:
        raise ValueError(f"the model already holds {already_zero + zeros_elsewhere:,} exact zero weights, more than "
                         f"the {zeros:,} the target asks for; raise the target")
    if to_prune > scores.numel():
        raise ValueError(f"cannot zero {to_prune:,} of {scores.numel():,} prunable weights")
    prune = torch.zeros_like(scores, dtype=torch.bool)
    tau = 0.0
    if to_prune > 0:
        tau = float(torch.kthvalue(scores.cpu(), to_prune).values)
        prune = scores < tau
        ties = torch.nonzero(scores == tau).flatten()
        prune[ties[: to_prune - int(prune.sum())]] = True
    masks, start = {}, 0
    for n in names:
        size = weights[n].numel()
        masks[n] = (~prune[start:start + size]).reshape(weights[n].shape).to(weights[n].dtype)
        start += size
    return masks, tau
