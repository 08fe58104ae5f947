"""The bridge function: a layer's sparsity as a differentiable function of its threshold.

S_l(t) = P(|w| <= t) = ∫_{-t}^{t} p_l(w) dw, so dS_l/dt = p_l(t) + p_l(-t).

Forward we use the exact count (the fraction of weights the mask removes); backward we use a density
estimate p̂_l of the layer's *signed* weights. Two estimators:

* ``histogram`` -- the released FCPTS code: 100 equal bins over [min w, max w], rebuilt from all weights
  at every step (a box kernel of width (max - min)/bins); zero outside the range. ``max_samples > 0``
  (a kit option, off by default) builds it from every k-th weight only, so that a layer of millions of
  weights costs a few microseconds instead of two full passes per step.
* ``kde`` -- a Gaussian kernel with Silverman's (or Scott's) bandwidth, evaluated on a fixed, seeded
  subsample of at most K weights, so the cost stays bounded for layers of millions of weights.

The value and the gradient are stitched with the surrogate trick ``exact + (t - t.detach()) * density``:
its value is the exact count and its derivative with respect to t is the density estimate.
"""
from __future__ import annotations

import math

import torch

_SQRT_2PI = math.sqrt(2 * math.pi)


def exact_sparsity(weight: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Fraction of weights the mask 1{|w| > t} removes, i.e. with |w| <= t (no gradient)."""
    with torch.no_grad():
        return torch.count_nonzero(weight.abs() <= threshold) / weight.numel()  # no float copy of the mask


def histogram_density(weight: torch.Tensor, points: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """Density of the signed weights at ``points`` from an equal-width histogram over [min w, max w]."""
    with torch.no_grad():
        w = weight.detach().flatten().float()
        lo, hi = torch.aminmax(w)  # one pass instead of two
        width = (hi - lo) / bins
        if width <= 0:
            return torch.zeros_like(points, dtype=torch.float32)
        counts = torch.histc(w, bins=bins, min=lo.item(), max=hi.item())
        index = torch.floor((points.float() - lo) / width).long()
        inside = (points >= lo) & (points <= hi)
        index = index.clamp(0, bins - 1)  # the top edge belongs to the last bin, as in torch.histc
        return torch.where(inside, counts[index] / (w.numel() * width), torch.zeros_like(width))


def kde_bandwidth(sample: torch.Tensor, rule: str = "silverman") -> torch.Tensor:
    """Rule-of-thumb bandwidth of a Gaussian KDE (Silverman's robust rule or Scott's rule)."""
    n = sample.numel()
    std = sample.std()
    if rule == "scott":
        return 1.06 * std * n ** (-0.2)
    q75, q25 = torch.quantile(sample, torch.tensor([0.75, 0.25], dtype=sample.dtype))
    spread = torch.minimum(std, (q75 - q25) / 1.34)
    spread = torch.where(spread > 0, spread, std)
    return 0.9 * spread * n ** (-0.2)


def kde_density(sample: torch.Tensor, points: torch.Tensor, rule: str = "silverman") -> torch.Tensor:
    """Gaussian kernel density estimate of ``sample`` at ``points`` (O(len(sample) * len(points)))."""
    with torch.no_grad():
        x = sample.detach().flatten().float()
        h = kde_bandwidth(x, rule).clamp_min(torch.finfo(torch.float32).tiny)
        z = (points.float().reshape(-1, 1) - x.reshape(1, -1)) / h
        return torch.exp(-0.5 * z * z).sum(dim=1).reshape(points.shape) / (x.numel() * h * _SQRT_2PI)


class Bridge:
    """Differentiable threshold -> sparsity map of one layer.

    ``subsample`` (kde only) is a fixed index set drawn once with a seeded generator: the weights it
    points at change as the layer trains, the indices do not, so estimates are reproducible.

    ``histogram_max_samples`` (histogram only): 0 uses every weight, as the released code; n > 0 uses every
    k-th weight of the flattened layer, k = ceil(numel / n) (a strided view: no gather, no randomness).
    """

    def __init__(self, numel: int, estimator: str = "histogram", bins: int = 100, max_samples: int = 65536,
                 bandwidth: str = "silverman", seed: int = 0, histogram_max_samples: int = 0):
        if estimator not in ("histogram", "kde"):
            raise ValueError(f"unknown bridge estimator {estimator!r}; use 'histogram' or 'kde'")
        if histogram_max_samples < 0:
            raise ValueError(f"histogram_max_samples must be >= 0 (0: every weight), got {histogram_max_samples}")
        self.estimator, self.bins, self.bandwidth = estimator, bins, bandwidth
        self.subsample: torch.Tensor | None = None
        self.stride = 1
        if estimator == "kde" and numel > max_samples:
            generator = torch.Generator().manual_seed(seed)
            self.subsample = torch.randperm(numel, generator=generator)[:max_samples]
        if estimator == "histogram" and 0 < histogram_max_samples < numel:
            self.stride = math.ceil(numel / histogram_max_samples)

    def density_at(self, weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p̂(t) + p̂(-t): the derivative of the layer's sparsity with respect to its threshold."""
        points = torch.stack([t.detach(), -t.detach()]).float()
        if self.estimator == "histogram":
            sample = weight.detach().flatten()[:: self.stride] if self.stride > 1 else weight
            return histogram_density(sample, points, self.bins).sum()
        flat = weight.detach().flatten()
        if self.subsample is not None:
            flat = flat[self.subsample.to(flat.device)]
        return kde_density(flat, points, self.bandwidth).sum()

    def __call__(self, weight: torch.Tensor, t: torch.Tensor, exact: torch.Tensor | None = None) -> torch.Tensor:
        """Exact sparsity forward, density-estimate gradient backward (to ``t`` only).

        ``exact``: the fraction |w| <= t when the caller already knows it (the mask's own count), else counted here.
        """
        value = exact_sparsity(weight, t.detach()) if exact is None else exact
        slope = self.density_at(weight, t).to(t.dtype)
        return value.to(t.dtype) + (t - t.detach()) * slope
