"""Learnable per-layer thresholds on any model: prepare -> (train) -> squash, as in ``torch.ao.pruning``.

Every selected ``nn.Conv2d``/``nn.Linear`` gets a parametrization on its ``weight``: the module computes
w ⊙ 1{|w| > t_l} on the fly, with one learnable scalar per layer. ``squash`` removes the parametrizations
and leaves plain modules whose weights hold real zeros under the original ``state_dict`` keys.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .bridge import Bridge, bridge_slopes, exact_sparsity

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
_EPS = 1e-6
_TINY = 1e-30  # the smallest threshold the sigmoid parameterisation is set to: its logit (-69) stays finite in float32
RELEASED_MIN_SCORE = -30.0  # the released start floors every threshold's logit here


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def prunable_layers(model: nn.Module, include=("*",), exclude=()) -> dict[str, nn.Module]:
    """All Conv2d/Linear layers selected by qualified-name patterns, in model order."""
    candidates = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer: nothing to prune")
    chosen = {n: m for n, m in candidates.items() if _matches(n, include) and not _matches(n, exclude)}
    if not chosen:
        raise ValueError(f"include={list(include)} / exclude={list(exclude)} leave no prunable layer; the model's "
                         f"Conv2d/Linear layers are: {', '.join(list(candidates)[:12])}{' ...' if len(candidates) > 12 else ''}")
    return chosen


def all_weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d/Linear layer: the set over which global sparsity is counted (method.md §1)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def check_finite(model: nn.Module) -> None:
    """NaN or inf weights make every later number meaningless: refuse them up front."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            bad = (~torch.isfinite(p)).sum().item()
            raise ValueError(f"parameter {name!r} holds {bad} NaN/inf value(s); load a clean checkpoint before pruning")


class ThresholdMask(nn.Module):
    """Parametrization w -> w ⊙ m(t) with a learnable threshold t.

    parameterization ``sigmoid`` (released): t = sigmoid(s), absolute units, t in (0, 1).
    parameterization ``scaled``: t = softplus(s) * rms(w0), so s is scale-free across layers.
    gradient ``released``: m is a constant for autograd (the released code computes it under no_grad);
    the threshold moves only through the controllable objective. ``ste``: m = hard + (r - r.detach()) with
    r a linear ramp of width ``window * rms(w0)`` around t, so the reconstruction loss reaches t (and w).
    """

    def __init__(self, weight: torch.Tensor, threshold: float | None, parameterization: str = "sigmoid",
                 gradient: str = "released", window: float = 0.5, bridge: Bridge | None = None,
                 score: torch.Tensor | None = None):
        super().__init__()
        if parameterization not in ("sigmoid", "scaled"):
            raise ValueError(f"unknown parameterization {parameterization!r}; use 'sigmoid' or 'scaled'")
        if gradient not in ("released", "ste"):
            raise ValueError(f"unknown gradient mode {gradient!r}; use 'released' or 'ste'")
        self.parameterization, self.gradient, self.window = parameterization, gradient, window
        rms = weight.detach().float().pow(2).mean().sqrt().clamp_min(_EPS)
        self.register_buffer("scale", rms)
        self.score = nn.Parameter(torch.zeros((), dtype=weight.dtype, device=weight.device))
        if score is not None:  # a raw score computed elsewhere (the released start: ``released_start_score``)
            with torch.no_grad():
                self.score.fill_(score.to(self.score.dtype))
        else:
            self.set_threshold(threshold)
        self.bridge = bridge or Bridge(weight.numel())

    # --- threshold <-> raw score ---
    def threshold(self) -> torch.Tensor:
        if self.parameterization == "sigmoid":
            return torch.sigmoid(self.score)
        return F.softplus(self.score) * self.scale

    @torch.no_grad()
    def set_threshold(self, value: float) -> None:
        if self.parameterization == "sigmoid":
            # The released parameterisation cannot express t >= 1 (or 0): guard the logit. The floor is tiny so
            # that a threshold set below a layer's smallest |w| (nothing pruned) stays below it.
            t = min(max(float(value), _TINY), 1 - _EPS)
            self.score.fill_(math.log(t / (1 - t)))
        else:
            ratio = max(float(value) / float(self.scale), _EPS)
            self.score.fill_(ratio + math.log(-math.expm1(-ratio)))  # inverse softplus, stable

    # --- forward ---
    def _keep(self, weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The hard mask 1{|w| > t} as 0./1. floats; remembers how many weights it prunes for the bridge."""
        # One allocation, compared in place: on CPU this forward is ~2.5x cheaper than building a bool mask,
        # counting it and casting it to float (measured, benchmarks/speed.py). Same mask, bit for bit.
        keep = weight.detach().abs().gt_(t.detach())
        # A float sum of 0/1 is an exact integer while numel <= 2**24; larger layers accumulate in float64.
        kept = keep.sum() if keep.numel() <= 2 ** 24 else keep.sum(dtype=torch.float64)
        # Valid while neither the weight nor the threshold changes in place (optimizer.step bumps both versions).
        self._pruned = ((id(weight), weight._version, self.score._version), keep.numel() - kept)
        return keep

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        t = self.threshold()
        hard = self._keep(weight, t)
        if self.gradient == "released":
            return hard
        width = self.window * self.scale
        ramp = ((weight.abs() - t) / width).clamp(-0.5, 0.5)
        return hard + (ramp - ramp.detach())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # weight * float mask: on CPU this beats torch.where / masked_fill / hardshrink (measured, benchmarks/speed.py).
        return weight * self.mask(weight)

    def _cached_sparsity(self, weight: torch.Tensor) -> torch.Tensor | None:
        cached = getattr(self, "_pruned", None)
        if cached is not None and cached[0] == (id(weight), weight._version, self.score._version):
            return cached[1] / weight.numel()
        return None

    def sparsity(self, weight: torch.Tensor, t: torch.Tensor | None = None,
                 slope: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable layer sparsity through the bridge (the exact count reused from this step's forward).
        ``t``/``slope``: this layer's threshold and bridge slope when the caller computed them for every layer."""
        return self.bridge(weight, self.threshold() if t is None else t, exact=self._cached_sparsity(weight),
                           slope=slope)

    def exact_sparsity(self, weight: torch.Tensor) -> torch.Tensor:
        """The fraction of ``weight`` the mask removes now (no gradient): this step's count if it is still valid."""
        cached = self._cached_sparsity(weight)
        return cached if cached is not None else exact_sparsity(weight, self.threshold().detach())


@dataclass
class LayerInfo:
    name: str
    shape: tuple[int, ...]
    numel: int
    prunable: bool


class ThresholdSparsifier:
    """Holds the thresholds of one model: prepare, global sparsity, projection, squash, report.

    ``allocation`` is the ``{layer name: sparsity}`` the thresholds start from. ``rounding="exact"``: each
    threshold is the k-th smallest |w| of its layer, k = round(S_l * n_l) (just below the smallest |w| when
    k = 0). ``rounding="released"``: the released code's rule (``released_start_score``): k = int(S_l * n_l),
    the logit in float32 floored at -30. Either way a layer with k = 0 keeps every weight.
    """

    def __init__(self, model: nn.Module, allocation: dict[str, float], include=("*",), exclude=(),
                 parameterization: str = "sigmoid", gradient: str = "released", window: float = 0.5,
                 bridge: str = "histogram", bins: int = 100, kde_max_samples: int = 65536,
                 kde_bandwidth: str = "silverman", seed: int = 0, histogram_max_samples: int = 0,
                 rounding: str = "exact"):
        if rounding not in ("exact", "released"):
            raise ValueError(f"unknown rounding {rounding!r}; use 'exact' or 'released'")
        self.model = model
        self.layers = prunable_layers(model, include, exclude)
        every = all_weight_layers(model)
        self.info = {n: LayerInfo(n, tuple(m.weight.shape), m.weight.numel(), n in self.layers) for n, m in every.items()}
        self.n_total = sum(i.numel for i in self.info.values())
        missing = set(self.layers) - set(allocation)
        if missing:
            raise ValueError(f"allocation has no sparsity for layer(s): {', '.join(sorted(missing))}")

        def make(i: int, name: str, w: torch.Tensor) -> ThresholdMask:
            layer_bridge = Bridge(w.numel(), bridge, bins, kde_max_samples, kde_bandwidth, seed=seed + i,
                                  histogram_max_samples=histogram_max_samples)
            if rounding == "released" and parameterization == "sigmoid":
                return ThresholdMask(w, None, parameterization, gradient, window, layer_bridge,
                                     score=released_start_score(w, allocation[name]))
            threshold = kth_smallest_abs(w, allocation[name], "int" if rounding == "released" else "round")
            return ThresholdMask(w, threshold, parameterization, gradient, window, layer_bridge)

        attach_parametrizations(self.layers, make)

    @classmethod
    def from_config(cls, model: nn.Module, allocation: dict[str, float], config,
                    rounding: str = "exact") -> "ThresholdSparsifier":
        """Thresholds with every setting taken from one ``fcpts.Config`` (what ``fcpts.sparsify`` uses).

        ``rounding`` says what ``allocation`` holds: "exact" for exact counts k_l / n_l (any allocation of
        ``fcpts.allocation``: int() could lose a weight to float error there), "released" for the fractions of
        the released start (``start_allocation`` with ``config.init_rounding = "released"``)."""
        return cls(model, allocation, config.include, config.exclude, config.parameterization, config.gradient,
                   config.ste_window, config.bridge, config.histogram_bins, config.kde_max_samples,
                   config.kde_bandwidth, seed=config.seed, histogram_max_samples=config.histogram_max_samples,
                   rounding=rounding)

    def masks(self) -> dict[str, ThresholdMask]:
        return {n: m.parametrizations.weight[0] for n, m in self.layers.items()}

    def threshold_parameters(self) -> list[nn.Parameter]:
        return [m.score for m in self.masks().values()]

    def thresholds(self) -> dict[str, float]:
        return {n: float(m.threshold().detach()) for n, m in self.masks().items()}

    def global_sparsity(self) -> torch.Tensor:
        """S = Σ n_l S_l / N over all Conv2d/Linear weights; excluded layers count as dense. Differentiable.

        The bridges' slopes are estimated for every layer in one batch (``bridge_slopes``); the sum runs layer by
        layer in model order, so S is the same float as summing each layer's ``sparsity`` in turn."""
        masks = self.masks()
        weights = [self.layers[n].parametrizations.weight.original for n in masks]
        thresholds = [mask.threshold() for mask in masks.values()]
        slopes = bridge_slopes([mask.bridge for mask in masks.values()], weights, thresholds)
        total = 0.0
        for (name, mask), weight, t, slope in zip(masks.items(), weights, thresholds, slopes):
            total = total + mask.sparsity(weight, t, slope) * self.info[name].numel
        return total / self.n_total

    @torch.no_grad()
    def layer_sparsities(self) -> dict[str, float]:
        """Each layer's exact sparsity now, read back from the device in one go."""
        masks = self.masks()
        values = [m.exact_sparsity(self.layers[n].parametrizations.weight.original).to(m.score.dtype)
                  for n, m in masks.items()]  # in the threshold's dtype, as the bridge gives it
        return dict(zip(masks, torch.stack(values).tolist()))

    def max_sparsity(self) -> float:
        """The largest global sparsity reachable with the excluded layers left dense."""
        return sum(i.numel for i in self.info.values() if i.prunable) / self.n_total

    @torch.no_grad()
    def report(self) -> list[dict]:
        """One row per Conv2d/Linear layer: name, shape, count, sparsity, threshold (None when excluded)."""
        thresholds, masks = self.thresholds(), self.masks()
        rows = []
        for name, info in self.info.items():
            if info.prunable:
                w = self.layers[name].parametrizations.weight.original
                sparsity = 1.0 - float(masks[name].mask(w).count_nonzero()) / info.numel
            else:
                sparsity = 0.0
            rows.append(dict(layer=name, shape=info.shape, numel=info.numel, sparsity=sparsity,
                             threshold=thresholds.get(name)))
        return rows

    def squash(self) -> nn.Module:
        """Bake the masks into the weights and remove every parametrization: plain modules, real zeros."""
        masks = self.masks()
        squash_layers(self.layers, lambda name, weight: weight * masks[name].mask(weight))
        return self.model


def attach_parametrizations(layers: dict[str, nn.Module], make) -> None:
    """prepare: register ``make(index, name, weight)`` as the parametrization of every layer's ``weight``."""
    for i, (name, module) in enumerate(layers.items()):
        parametrize.register_parametrization(module, "weight", make(i, name, module.weight.detach()), unsafe=True)


@torch.no_grad()
def squash_layers(layers: dict[str, nn.Module], export) -> None:
    """squash: remove every layer's weight parametrization and store ``export(name, dense weight)`` in a plain
    ``weight`` (same ``state_dict`` keys and order): the masks become real zeros."""
    masked = {name: export(name, module.parametrizations.weight.original) for name, module in layers.items()}
    for name, module in layers.items():
        unparametrize(module, leave_parametrized=False)
        module.weight.copy_(masked[name])


def unparametrize(module: nn.Module, leave_parametrized: bool) -> None:
    """Remove the weight parametrization and put ``weight`` back in its original place, so the
    ``state_dict`` keeps its keys *and* their order (``weight`` before ``bias``)."""
    if not parametrize.is_parametrized(module, "weight"):
        return
    order = ["weight"] + [k for k in module._parameters]  # parametrize removed "weight" from this dict
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=leave_parametrized)
    module._parameters = {k: module._parameters[k] for k in order if k in module._parameters}
    module.weight.requires_grad_(True)


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest entry (1-based, 1 <= k <= numel) of ``values``, flattened, as a 0-d CPU tensor.

    ``torch.kthvalue`` on the CPU copy: several times faster than ``topk`` or a sort on CPU, and one code path
    for every device. Only the value is used, never kthvalue's index, so the result does not depend on how
    torch orders equal entries."""
    return torch.kthvalue(values.detach().reshape(-1).cpu(), k).values


TIE_RULES = ("index", "topk")


@torch.no_grad()
def lowest_k(scores: torch.Tensor, k: int, largest: bool = False,
             ties: str = "index") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one "drop the k lowest" rule of the kit: a bool mask (shape of ``scores``) with exactly ``k`` True
    entries, the ``k`` lowest ``scores`` (the ``k`` highest with ``largest=True``), and the cut: the k-th lowest
    (highest) score, a 0-d CPU tensor (None when k = 0).

    Tie rule: entries equal to the cut are taken in order of position in ``scores.flatten()``, lowest index
    first (row-major; for scores concatenated over layers, earlier layers first), as many as the count needs.
    This is the first ``k`` entries of a *stable* sort, ascending (or descending with ``largest=True``). Entries
    strictly below (above) the cut are always taken. Every method that drops or grows weights by a score goes
    through here (``allocation``, ``prune_train.masks_at``, ``dst.rewire``, ``projection.project_scores``, DSA's
    own masks), so on the same tied tensor they select the same entries.

    Found with ``kth_smallest`` (``torch.kthvalue`` on CPU) plus one comparison, faster on CPU than ``topk``; the
    mask lives on ``scores``' device. ``scores`` must be NaN-free; 0 <= k <= numel.

    ``ties="topk"`` is the one exception, kept for dynamic sparse training (``DstConfig.ties``): the entries
    ``torch.topk`` returns, whose order among equal scores torch does not specify. The committed DST rows were
    computed with it, and DST meets real ties (grown weights that are still exactly 0).
    """
    if ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; use one of {', '.join(TIE_RULES)}")
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} of {n} entries")
    if k == 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device), None
    if ties == "topk":
        values, indices = torch.topk(flat, k, largest=largest)
        chosen = torch.zeros(n, dtype=torch.bool, device=flat.device)
        chosen[indices] = True
        return chosen.reshape(scores.shape), values[-1].detach().cpu()
    cut = kth_smallest(flat, n - k + 1 if largest else k)
    at = cut.to(flat.device)
    chosen = flat > at if largest else flat < at
    need = k - int(chosen.sum())
    if need > 0:  # always at least the cut itself: take the ties by position
        ties = torch.nonzero(flat == at).flatten()
        if ties.numel() < need:
            raise ValueError("scores hold NaN: cannot select the lowest k")
        chosen[ties[:need]] = True
    return chosen.reshape(scores.shape), cut


def lowest_k_mask(scores: torch.Tensor, k: int, largest: bool = False, ties: str = "index") -> torch.Tensor:
    """Bool mask of exactly the ``k`` lowest ``scores`` (``largest=True``: highest), ties by position, lowest
    index first: ``lowest_k`` without the cut."""
    return lowest_k(scores, k, largest, ties)[0]


def kth_smallest_abs(weight: torch.Tensor, sparsity: float, count: str = "round") -> float:
    """The threshold that prunes k weights of ``weight``: its k-th smallest |w|, k = round(sparsity * n) (or
    int(sparsity * n) with ``count="int"``, the released rule).

    For k = 0 the threshold sits just below the smallest |w| (nothing pruned).
    """
    flat = weight.detach().abs().flatten().float()
    k = int(round(float(sparsity) * flat.numel())) if count == "round" else int(float(sparsity) * flat.numel())
    if k <= 0:
        return float(flat.min()) * 0.5
    return float(kth_smallest(flat, min(k, flat.numel())))


@torch.no_grad()
def released_start_score(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The released code's starting score s (t = sigmoid(s)) for a layer at ``sparsity`` (its
    ``update_score_str_per_layer_v1_using_table``): k = int(S·n); t = the k-th smallest |w|, or min|w| when k = 0;
    s = logit(t) in float32, floored at -30 (and capped below t = 1, which the sigmoid cannot express).

    One difference, kept on purpose: the released mask gives a weight exactly at the threshold the value 0.5,
    the kit's mask is strict (|w| > t). So where k = 0 the threshold goes a hair (2^-16, relative) below the layer's
    smallest non-zero |w|, past the floor if it must, checked with the sigmoid the mask will run (the weight's
    device and dtype): a layer the start keeps dense keeps every weight.
    """
    flat = weight.detach().abs().flatten().float().cpu()
    k = int(float(sparsity) * flat.numel())
    t = kth_smallest(flat, min(k, flat.numel())) if k > 0 else flat.min()
    score = torch.logit(t.clamp(max=1.0 - 2.0 ** -24)).clamp(min=RELEASED_MIN_SCORE)  # logit(0) = -inf: the floor
    nonzero = flat[flat > 0]
    if k > 0 or nonzero.numel() == 0:
        return score
    smallest = float(nonzero.min())
    below = smallest * (1.0 - 2.0 ** -16)
    logit = math.log(below) - math.log1p(-below)
    as_used = weight.detach().abs()[weight.detach() != 0].min()  # the smallest weight as the mask compares it
    for _ in range(64):
        candidate = torch.tensor(min(float(score), logit), dtype=torch.float32)
        used = candidate.to(device=weight.device, dtype=weight.dtype)
        if torch.sigmoid(used) < as_used and 1.0 / (1.0 + math.exp(-float(used))) < smallest:
            return candidate
        logit -= abs(logit) * 2.0 ** -10 + 1e-6  # a low-precision dtype rounded it up: step down
    raise ValueError(f"cannot set a threshold below the smallest weight ({smallest:.3g}) in {weight.dtype}")


def start_threshold(weight: torch.Tensor, sparsity: float, rounding: str = "released") -> float:
    """The threshold a layer at ``sparsity`` starts at, as ``ThresholdSparsifier`` sets it (sigmoid thresholds):
    the released rule (``released_start_score``) or the exact one (``kth_smallest_abs``)."""
    if rounding == "released":
        return float(torch.sigmoid(released_start_score(weight, sparsity)))
    return kth_smallest_abs(weight, sparsity)


def weight_sparsity_table(model: nn.Module) -> list[dict]:
    """Per-layer zero counts of a plain (squashed or pruned) model's Conv2d/Linear weights."""
    rows = []
    for name, module in all_weight_layers(model).items():
        w = module.weight.detach()
        zeros = int((w == 0).sum())
        rows.append(dict(layer=name, shape=tuple(w.shape), numel=w.numel(), zeros=zeros, sparsity=zeros / w.numel()))
    return rows


def count_zeros(model: nn.Module) -> tuple[int, int]:
    """(zero weights, total weights) over every Conv2d/Linear layer of a plain model."""
    rows = weight_sparsity_table(model)
    return sum(r["zeros"] for r in rows), sum(r["numel"] for r in rows)
