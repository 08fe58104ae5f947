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

The histogram needs only two of its bins, the ones that hold t and -t, so ``histogram_density`` counts just
those: it finds the exact float32 edges of torch.histc's bins (``histc_lower_edges``) and counts the weights at
or above each edge, one comparison pass per edge. No full histogram, no value read back to the host (torch.histc
takes its range as Python numbers, which on a GPU waits for the device at every layer of every step), and the
same counts, hence the same densities, as ``histogram_density_histc``, the released rule written with torch.histc
(tests/test_bridge.py compares them). ``histogram_slopes`` does it for every layer of a model in one batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_SQRT_2PI = math.sqrt(2 * math.pi)
_EDGE_WINDOW = 4  # floats searched on either side of an edge's estimate (the estimate is at most 3 floats off)
_EXACT_FLOAT_SUM = 2 ** 24  # a float32 sum of 0/1 values is an exact integer up to this many values
_FEW_EDGES = 16  # up to this many edges one comparison pass each; beyond, one sort and a binary search each
_CPU_CHUNK = 2 ** 17  # on a CPU the comparisons run on slices this long, through one cache-sized scratch buffer


def exact_sparsity(weight: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Fraction of weights the mask 1{|w| > t} removes, i.e. with |w| <= t (no gradient)."""
    with torch.no_grad():
        return torch.count_nonzero(weight.abs() <= threshold) / weight.numel()  # no float copy of the mask


def histogram_density_histc(weight: torch.Tensor, points: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """The released rule as written with torch.histc: the density of the signed weights at ``points`` from an
    equal-width histogram over [min w, max w]. The reference ``histogram_density`` is tested against; it reads
    the range back to the host (``.item()``), which on a GPU waits for the device."""
    with torch.no_grad():
        w = weight.detach().flatten().float()
        lo, hi = torch.aminmax(w)
        width = (hi - lo) / bins
        if width <= 0:
            return torch.zeros_like(points, dtype=torch.float32)
        counts = torch.histc(w, bins=bins, min=lo.item(), max=hi.item())
        index = torch.floor((points.float() - lo) / width).long()
        inside = (points >= lo) & (points <= hi)
        index = index.clamp(0, bins - 1)  # the top edge belongs to the last bin, as in torch.histc
        return torch.where(inside, counts[index] / (w.numel() * width), torch.zeros_like(width))


# ----- the exact bins of torch.histc, without a histogram ------------------------------------------------------
def _to_float32(x: torch.Tensor) -> torch.Tensor:
    """float64 values rounded to float32 (and back to float64). One float32 operation computed in float64 and
    rounded once is the correctly rounded float32 result (+, -, *, / of float32 inputs: 53 >= 2 * 24 + 2), so the
    arithmetic below is torch.histc's float32 arithmetic whatever kernels this torch build uses."""
    return x.float().double()


def _order_key(x: torch.Tensor) -> torch.Tensor:
    """float32 -> int32 keys in the floats' order (consecutive floats, consecutive keys)."""
    bits = x.view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _from_order_key(key: torch.Tensor) -> torch.Tensor:
    return (key ^ ((key >> 31) & 0x7FFFFFFF)).view(torch.float32)


def _first_passing(candidates: torch.Tensor, passing: torch.Tensor) -> torch.Tensor:
    """The first candidate (last dimension, ascending) that passes."""
    first = torch.argmax(passing.to(torch.uint8), dim=-1, keepdim=True)
    return candidates.gather(-1, first).squeeze(-1)


def histc_lower_edges(lo: torch.Tensor, hi: torch.Tensor, k: torch.Tensor, bins: int) -> torch.Tensor:
    """The smallest float32 w that ``torch.histc(w, bins, min=lo, max=hi)`` puts in bin ``k`` or above
    (-inf for k <= 0, +inf for k >= bins), elementwise over ``lo``, ``hi`` (float32) and ``k`` (integers),
    which broadcast together. Bin k then holds the weights in [edge(k), edge(k + 1)).

    torch.histc (CPU and CUDA) puts w in bin trunc(fl(fl(fl(w - lo) * bins) / fl(hi - lo))), the top value
    in the last bin. That is monotone in w, so each bin is an interval of floats, but its edges are not the
    real numbers lo + k (hi - lo) / bins: rounding moves them by a few floats. So, in two monotone steps:
    D = the smallest d >= 0 with fl(fl(d * bins) / (hi - lo)) >= k, among the floats next to k (hi - lo) / bins,
    then the smallest w with fl(w - lo) >= D, among the floats next to lo + (the midpoint below D), the point
    where w - lo starts to round to D. Small tensors only: no pass over the weights."""
    lo64 = lo.double()
    span = _to_float32(hi.double() - lo64)
    k_inner = k.clamp(1, bins - 1).double()
    offsets = torch.arange(-_EDGE_WINDOW, _EDGE_WINDOW + 1, dtype=torch.int32, device=lo.device)
    estimate = (k_inner * span / bins).float()
    # non-negative floats are ordered like their bit patterns
    d = (estimate.view(torch.int32).unsqueeze(-1) + offsets).clamp_min(0).view(torch.float32)
    reaches = _to_float32(_to_float32(d.double() * bins) / span.unsqueeze(-1)) >= k_inner.unsqueeze(-1)
    d_edge = _first_passing(d, reaches)
    below = (d_edge.view(torch.int32) - 1).clamp_min(0).view(torch.float32)
    midpoint = (lo64 + (below.double() + d_edge.double()) / 2).float()
    w = _from_order_key(_order_key(midpoint).unsqueeze(-1) + offsets)
    reaches = _to_float32(w.double() - lo64.unsqueeze(-1)) >= d_edge.double().unsqueeze(-1)
    edge = _first_passing(w, reaches)
    return torch.where(k <= 0, -math.inf, torch.where(k >= bins, math.inf, edge))


def count_at_least(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """How many of ``values`` are >= each of the (1-d) ``edges``, as exact integers in float32 (float64 beyond
    2**24 values). A few edges (the bridge has four): one comparison pass each, written as 0./1. floats and summed
    (on a CPU several times cheaper than counting a bool tensor, measured). Many (a density curve on a grid): one
    sort, then a binary search per edge."""
    dtype = torch.float32 if values.numel() <= _EXACT_FLOAT_SUM else torch.float64
    if edges.numel() > _FEW_EDGES:
        ordered = torch.sort(values.flatten()).values
        return (values.numel() - torch.searchsorted(ordered, edges.contiguous(), side="left")).to(dtype)
    edges = edges.unbind()
    if values.device.type != "cpu" or values.numel() <= _CPU_CHUNK:
        scratch = torch.empty_like(values)
        return torch.stack([torch.ge(values, edge, out=scratch).sum(dtype=dtype) for edge in edges])
    # A large layer on a CPU: slice by slice, so the 0/1 floats stay in cache and no large buffer is allocated
    # (three times faster on the ResNet-50's layers than whole-layer passes, measured; the sums stay exact).
    scratch = values.new_empty(_CPU_CHUNK)
    return torch.stack([torch.stack([torch.ge(piece, edge, out=scratch[: piece.numel()]).sum(dtype=dtype)
                                     for edge in edges]) for piece in values.reshape(-1).split(_CPU_CHUNK)]).sum(0)


def histogram_densities(samples: Sequence[torch.Tensor], points: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """``histogram_density`` of several layers at once: ``points[l]`` (a row of a few points) in layer ``samples[l]``'s
    histogram. Returns float32 of ``points``' shape (layers x points). Per layer one min/max pass and one
    comparison pass per edge (two per point); the bins' arithmetic is batched over the layers."""
    with torch.no_grad():
        samples = [s.detach().float() for s in samples]
        lo, hi = (torch.stack(v).unsqueeze(1) for v in zip(*(torch.aminmax(s) for s in samples)))
        width = (hi - lo) / bins
        inside = (points >= lo) & (points <= hi) & (width > 0)
        index = torch.where(inside, torch.floor((points.float() - lo) / width), 0.0).clamp(0, bins - 1).long()
        edges = histc_lower_edges(lo, hi, torch.cat([index, index + 1], dim=1), bins)
        counts = torch.stack([count_at_least(s, e) for s, e in zip(samples, edges)])  # float64 if any is
        in_bin = (counts[:, : index.shape[1]] - counts[:, index.shape[1]:]).float()
        # built on the host and copied without waiting (torch.tensor(..., device=cuda) would wait for the device)
        n = torch.tensor([s.numel() for s in samples], dtype=torch.float32).to(lo.device, non_blocking=True)
        n = n.unsqueeze(1)
        return torch.where(inside, in_bin / (n * width), 0.0)


def histogram_density(weight: torch.Tensor, points: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """Density of the signed weights at ``points`` from an equal-width histogram over [min w, max w]: the released
    rule (``histogram_density_histc``, the same numbers), counting only the bins that hold the points.

    A few points (the bridge asks for two) cost one pass over the weights per bin edge; more, one sort of them."""
    flat = points.reshape(1, -1)
    return histogram_densities([weight], flat, bins).reshape(points.shape)


def histogram_slopes(samples: Sequence[torch.Tensor], thresholds: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """p̂_l(t_l) + p̂_l(-t_l) of every layer l (``samples[l]``, ``thresholds[l]``) in one batch: the histogram
    bridge's dS_l/dt_l, with no value read back to the host."""
    t = thresholds.detach().float().reshape(-1)
    return histogram_densities(samples, torch.stack([t, -t], dim=1), bins).sum(dim=1)


# ----- the Gaussian kernel -------------------------------------------------------------------------------------
def kde_bandwidth(sample: torch.Tensor, rule: str = "silverman") -> torch.Tensor:
    """Rule-of-thumb bandwidth of a Gaussian KDE (Silverman's robust rule or Scott's rule)."""
    n = sample.numel()
    std = sample.std()
    if rule == "scott":
        return 1.06 * std * n ** (-0.2)
    q75, q25 = torch.quantile(sample, torch.tensor([0.75, 0.25], dtype=sample.dtype, device=sample.device))
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

    def sample(self, weight: torch.Tensor) -> torch.Tensor:
        """The weights the estimate is built from: all of them, every k-th (histogram) or the fixed subsample (kde)."""
        if self.estimator == "histogram":
            return weight.detach().flatten()[:: self.stride] if self.stride > 1 else weight.detach()
        flat = weight.detach().flatten()
        return flat[self.subsample.to(flat.device)] if self.subsample is not None else flat

    def density_at(self, weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p̂(t) + p̂(-t): the derivative of the layer's sparsity with respect to its threshold."""
        if self.estimator == "histogram":
            return histogram_slopes([self.sample(weight)], t.detach().reshape(1), self.bins)[0]
        points = torch.stack([t.detach(), -t.detach()]).float()
        return kde_density(self.sample(weight), points, self.bandwidth).sum()

    def __call__(self, weight: torch.Tensor, t: torch.Tensor, exact: torch.Tensor | None = None,
                 slope: torch.Tensor | None = None) -> torch.Tensor:
        """Exact sparsity forward, density-estimate gradient backward (to ``t`` only).

        ``exact``: the fraction |w| <= t when the caller already knows it (the mask's own count), else counted here.
        ``slope``: ``density_at(weight, t)`` when the caller already has it (``bridge_slopes``), else estimated here.
        """
        value = exact_sparsity(weight, t.detach()) if exact is None else exact
        slope = self.density_at(weight, t) if slope is None else slope
        return value.to(t.dtype) + (t - t.detach()) * slope.to(t.dtype)


def bridge_slopes(bridges: Sequence[Bridge], weights: Sequence[torch.Tensor],
                  thresholds: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``bridges[l].density_at(weights[l], thresholds[l])`` for every layer: the histogram bridges in batches (one
    per bin count), so the bins' arithmetic runs once for the model instead of once per layer; the others one by one."""
    slopes: list[torch.Tensor | None] = [None] * len(bridges)
    batches: dict[int, list[int]] = {}
    for i, bridge in enumerate(bridges):
        if bridge.estimator == "histogram":
            batches.setdefault(bridge.bins, []).append(i)
        else:
            slopes[i] = bridge.density_at(weights[i], thresholds[i])
    for bins, members in batches.items():
        t = torch.stack([thresholds[i].detach().reshape(()) for i in members])
        batch = histogram_slopes([bridges[i].sample(weights[i]) for i in members], t, bins)
        for i, slope in zip(members, batch.unbind()):
            slopes[i] = slope
    return slopes
