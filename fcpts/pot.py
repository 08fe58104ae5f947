"""POT-style post-training pruning (Lazarevich et al. 2021; method.md §4.5), in three steps:

1. **Allocation**: one global threshold on the scale-free score |w| / ‖W_l‖₂ (‖·‖₂ the Frobenius norm of the
   layer's whole weight tensor), so layers of small weights are not wiped out as with global magnitude.
   The zero count is exact (round(S*·N), like every allocation of the kit); ``fcpts.baselines.ALLOCATIONS`` lists it
   as ``"pot"`` beside the magnitude allocations.
2. **Weight correction** per output channel, so the pruned channel keeps the dense channel's first two
   moments. ``"pot"`` (default) is the formula of OpenVINO POT's ``MagnitudeSparsity`` (the authors'
   released tool): with W the dense channel and S = mask ⊙ W, scale = std(W)/(std(S) + eps),
   shift = mean(W) − mean(scale·S), then W' = mask ⊙ (scale·W + shift) (population statistics over the
   channel, zeros included). ``"exact"``: the affine map a·w + b of the surviving weights for which the
   masked channel (zeros included) has exactly the dense mean and std (when that is possible; otherwise
   the variance is matched as closely as a non-negative variance allows). ``"none"``: no correction.
3. **Layer-wise calibration**: for every pruned layer, Adam on the mean squared error between the sparse
   layer's output and the dense layer's output, both computed from the *dense* network's inputs to that
   layer (forward hooks on the dense model), masks fixed (gradients masked, pruned weights re-zeroed).
   Layers are calibrated independently. Budget: ``iterations_per_layer`` Adam steps of ``batch_size``
   samples per layer, on ``samples`` calibration images.

``pot_prune`` runs all three and returns a plain model with exactly round(S*·N) zero weights.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .allocation import global_score_allocation, apply_masks, magnitude_masks, zero_budget
from .calibration import CalibrationStream
from .masking import check_finite, count_zeros
from .options import Options


@dataclass
class PotConfig(Options):
    """POT-style post-training pruning (``pot_prune``): the correction and the layer-wise calibration of the
    comparison runner's pot rows in tiers a and b (``--pot-iterations``, ``--pot-lr``)."""

    correction: str = "pot"  # "pot" (OpenVINO POT formula), "exact" or "none"
    calibrate: bool = True  # layer-wise calibration after the correction
    iterations_per_layer: int = 50  # Adam steps per pruned layer
    lr: float = 1e-3  # Adam learning rate (absolute weight units); 1e-4 barely moved the digits ResNet-50
    batch_size: int = 64  # samples per Adam step
    samples: int = 512  # calibration images whose dense layer inputs are recorded
    cache_bytes: int = 1 << 30  # at most this many bytes of recorded layer inputs at once
    eps: float = 1e-9  # POT's safety term in the std ratio
    seed: int = 0  # which calibration images are recorded (and their augmentations), the Adam batches' order
    device: str = "auto"  # "auto": cuda when available, else cpu
    progress: bool = True  # progress bar over the calibrated layers

    def __post_init__(self) -> None:
        if self.correction not in ("pot", "exact", "none"):
            raise ValueError(f"PotConfig.correction = {self.correction!r}; use 'pot', 'exact' or 'none'")
        for name in ("iterations_per_layer", "batch_size", "samples"):
            if int(getattr(self, name)) < (0 if name == "iterations_per_layer" else 1):
                raise ValueError(f"PotConfig.{name} must be positive, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------------------------
# 1. allocation
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def pot_scores(weight: torch.Tensor) -> torch.Tensor:
    """|w| / ‖W‖₂ for one layer (the Frobenius norm of the whole tensor)."""
    w = weight.detach().float().cpu()
    return w.abs() / w.norm().clamp_min(torch.finfo(torch.float32).tiny)


@torch.no_grad()
def pot_allocation(model: nn.Module, target: float, include=("*",), exclude=()) -> dict[str, float]:
    """POT's allocation: the ``round(S*·N)`` lowest scores |w|/‖W_l‖₂ over all selected layers."""
    layers, zeros = zero_budget(model, target, include, exclude)
    return global_score_allocation(layers, zeros, {n: pot_scores(m.weight) for n, m in layers.items()})



# ---------------------------------------------------------------------------------------------------------
# 2. per-output-channel correction
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def correct_weights(dense: torch.Tensor, mask: torch.Tensor, mode: str = "pot", eps: float = 1e-9) -> torch.Tensor:
    """The corrected sparse weight (zeros where ``mask`` is 0) for one layer; channels along dim 0."""
    if mode == "none":
        return dense * mask
    w = dense.detach().double().reshape(dense.shape[0], -1)
    m = mask.detach().double().reshape(dense.shape[0], -1)
    mean_d = w.mean(1, keepdim=True)
    std_d = w.std(1, unbiased=False, keepdim=True)
    if mode == "pot":
        s = w * m
        scale = std_d / (s.std(1, unbiased=False, keepdim=True) + eps)
        shift = mean_d - (s * scale).mean(1, keepdim=True)
        out = (w * scale + shift) * m
    elif mode == "exact":
        n = w.shape[1]
        k = m.sum(1, keepdim=True)
        p = (k / n).clamp_min(1.0 / n)
        kept = k.clamp_min(1.0)
        mean_v = (w * m).sum(1, keepdim=True) / kept
        var_v = (((w - mean_v) * m) ** 2).sum(1, keepdim=True) / kept
        # Survivors u = a v + b: mean over the channel (zeros included) = mean_d needs mean(u) = mean_d / p;
        # second moment = std_d² + mean_d² needs var(u) = (std_d² + mean_d²)/p − mean_d²/p².
        target_mean = mean_d / p
        target_var = ((std_d ** 2 + mean_d ** 2) / p - mean_d ** 2 / p ** 2).clamp_min(0.0)
        a = torch.where(var_v > 0, (target_var / var_v.clamp_min(1e-300)).sqrt(), torch.ones_like(var_v))
        b = target_mean - a * mean_v
        out = (a * w + b) * m
    else:
        raise ValueError(f"unknown correction {mode!r}; use 'pot', 'exact' or 'none'")
    return out.reshape(dense.shape).to(dense.dtype)


# ---------------------------------------------------------------------------------------------------------
# 3. layer-wise calibration on dense inputs
# ---------------------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a hook to end a forward pass once every layer of a chunk has been recorded."""


def _first_images(data, count: int, seed: int) -> torch.Tensor:
    """``count`` calibration inputs as one tensor (read once, so augmentations are drawn once)."""
    stream = CalibrationStream(data, batch_size=min(64, count), seed=seed)
    chunks, have = [], 0
    for x, _ in stream.one_pass():
        chunks.append(x)
        have += x.shape[0]
        if have >= count:
            break
    if not chunks:
        raise ValueError("the calibration set is empty")
    return torch.cat(chunks)[:count]


@torch.no_grad()
def _probe(dense: nn.Module, names: list[str], x: torch.Tensor) -> tuple[list[str], dict[str, int]]:
    """Execution order of ``names`` and the bytes per sample of each layer's input."""
    modules = dict(dense.named_modules())
    order, sizes, handles = [], {}, []
    for name in names:
        def hook(_m, inputs, _out, name=name):
            if name not in sizes:
                order.append(name)
                sizes[name] = inputs[0][0].numel() * inputs[0].element_size()
        handles.append(modules[name].register_forward_hook(hook))
    try:
        dense(x[:1])
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(f"layers never called in a forward pass, cannot calibrate: {', '.join(missing)}")
    return order, sizes


@torch.no_grad()
def record_inputs(dense: nn.Module, names: list[str], images: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """The dense model's inputs to each named layer for all ``images`` (stops the forward pass early)."""
    modules = dict(dense.named_modules())
    last = names[-1]
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for name in names:
        def hook(_m, inputs, _out, name=name):
            store[name].append(inputs[0].detach())
            if name == last:
                raise _Stop
        handles.append(modules[name].register_forward_hook(hook))
    try:
        for start in range(0, images.shape[0], batch_size):
            try:
                dense(images[start:start + batch_size])
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in store.items()}


def _layer_forward(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, bias)
    return F.linear(x, weight, bias)


def calibrate_layer(layer: nn.Module, dense_layer: nn.Module, mask: torch.Tensor, inputs: torch.Tensor,
                    iterations: int, lr: float, batch_size: int, generator: torch.Generator) -> dict:
    """Adam on ‖layer(x) − dense_layer(x)‖² over recorded dense inputs; ``layer`` updated in place."""
    weight = layer.weight.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True) if layer.bias is not None else None
    params = [weight] + ([bias] if bias is not None else [])
    optimizer = torch.optim.Adam(params, lr=lr)
    n = inputs.shape[0]
    with torch.no_grad():
        probe = inputs[: min(n, 256)]
        target_probe = dense_layer(probe)
        before = float(F.mse_loss(_layer_forward(layer, weight, bias, probe), target_probe))
    for _ in range(iterations):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=generator)
        x = inputs[idx.to(inputs.device)]
        with torch.no_grad():
            target = dense_layer(x)
        loss = F.mse_loss(_layer_forward(layer, weight * mask, bias, x), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite calibration loss; lower PotConfig.lr (now {lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            weight.mul_(mask)
    with torch.no_grad():
        after = float(F.mse_loss(_layer_forward(layer, weight, bias, probe), target_probe))
        layer.weight.copy_(weight * mask)
        if bias is not None:
            layer.bias.copy_(bias)
    return dict(mse_before=before, mse_after=after)


def layerwise_calibrate(sparse: nn.Module, dense: nn.Module, masks: dict[str, torch.Tensor], data,
                        config: PotConfig, device: torch.device | None = None) -> dict[str, dict]:
    """Calibrate every masked layer of ``sparse`` against ``dense`` on dense inputs; returns per-layer MSEs."""
    device = device or next(sparse.parameters()).device
    dense = dense.to(device).eval()
    sparse_modules, dense_modules = dict(sparse.named_modules()), dict(dense.named_modules())
    images = _first_images(data, config.samples, config.seed).to(device)
    order, sizes = _probe(dense, list(masks), images)
    # Group layers (in execution order) so that each group's recorded inputs fit in cache_bytes.
    chunks, current, used = [], [], 0
    for name in order:
        need = sizes[name] * images.shape[0]
        if current and used + need > config.cache_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(name)
        used += need
    if current:
        chunks.append(current)
    generator = torch.Generator().manual_seed(config.seed)
    report = {}
    bar = tqdm(total=len(order), desc="POT calibration", disable=not config.progress, leave=False)
    for chunk in chunks:
        inputs = record_inputs(dense, chunk, images)
        for name in chunk:
            report[name] = calibrate_layer(sparse_modules[name], dense_modules[name], masks[name].to(device),
                                           inputs.pop(name), config.iterations_per_layer, config.lr,
                                           config.batch_size, generator)
            bar.update(1)
    bar.close()
    return report


# ---------------------------------------------------------------------------------------------------------
# all together
# ---------------------------------------------------------------------------------------------------------
def pot_prune(model: nn.Module, calibration_data, target: float, config: PotConfig | None = None,
              include=("*",), exclude=()) -> tuple[nn.Module, dict]:
    """POT-style pruning of a copy of ``model``: allocation, correction, layer-wise calibration.

    Returns ``(pruned model in eval mode, info)``; info holds allocation, zeros, total, achieved_sparsity,
    wall_time, steps (Adam steps over all layers), per-layer calibration MSEs and the config.
    """
    start = time.perf_counter()
    config = config or PotConfig()
    check_finite(model)
    from .evaluate import resolve_device

    device = resolve_device(config.device)
    dense = copy.deepcopy(model).to(device).eval()
    sparse = copy.deepcopy(model).to(device).eval()
    allocation = pot_allocation(sparse, target, include, exclude)
    masks = magnitude_masks(sparse, allocation)
    modules = dict(sparse.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            w = modules[name].weight
            w.copy_(correct_weights(w, mask, config.correction, config.eps))
    apply_masks(sparse, masks)
    report = {}
    if config.calibrate and config.iterations_per_layer > 0:
        report = layerwise_calibrate(sparse, dense, masks, calibration_data, config, device)
    apply_masks(sparse, masks)  # exact zeros whatever happened above
    zeros, total = count_zeros(sparse)
    info = dict(allocation=allocation, zeros=zeros, total=total, achieved_sparsity=zeros / total,
                wall_time=time.perf_counter() - start, steps=config.iterations_per_layer * len(masks) if report else 0,
                calibration=report, pot_config=config.to_dict())
    return sparse.eval(), info
