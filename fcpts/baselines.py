"""Every allocation baseline in three tiers (method.md §4), so that comparisons with FCPTS are fair:

* tier ``a`` -- masks alone: magnitude masks of the allocation (exactly round(S*·N) zeros), nothing else.
  For POT, tier a is POT itself: its allocation *plus* its per-channel correction and layer-wise
  calibration (that is what POT is).
* tier ``b`` -- tier a, then BatchNorm re-estimation on the calibration set (``recalibrate_bn``, one pass).
* tier ``c`` -- the allocation plus the same reconstruction budget FCPTS gets: ``sparsify(model, calib,
  target, config, allocation=alloc, learn_thresholds=False)``, i.e. FCPTS with frozen thresholds. For POT
  this is POT's *allocation* with FCPTS's reconstruction (``sparsify`` takes its teacher from the model it
  is given, so it must start from the dense model; POT's correction/calibration is not part of tier c).

    pruned, info = prune_baseline(model, calib, 0.8, "erk", "b", Config.quick_cpu())

The input model is never modified.
"""
from __future__ import annotations

import inspect
import time

from torch import nn

from .allocation import ALLOCATIONS as MAGNITUDE_ALLOCATIONS
from .allocation import masked_copy
from .calibration import recalibrate_bn
from .config import Config, check_target
from .evaluate import resolve_device
from .guards import check_final_outputs
from .masking import check_finite, count_zeros, prunable_layers, weight_sparsity_table
from .pot import PotConfig, pot_allocation, pot_prune
from .sparsify import sparsify

# Every allocation a baseline row can use: the magnitude allocations of ``fcpts.allocation`` and POT's.
ALLOCATIONS = {**MAGNITUDE_ALLOCATIONS, "pot": pot_allocation}
ALLOCATION_METHODS = tuple(ALLOCATIONS)
# Allocations whose tiers a/b are a method of their own, not magnitude masks (POT: correction + calibration).
PRUNERS = {"pot": pot_prune}
TIERS = ("a", "b", "c")
TIER_NAMES = {"a": "masks only", "b": "masks + BN re-estimation", "c": "masks + FCPTS reconstruction (frozen thresholds)"}


def baseline_allocation(model: nn.Module, target: float, method: str, config: Config) -> dict[str, float]:
    """``{layer: sparsity}`` of one allocation method under ``config.include/exclude``."""
    if method not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {method!r}; choose one of {', '.join(ALLOCATIONS)}")
    allocate = ALLOCATIONS[method]
    kwargs = dict(gamma=config.erk_gamma) if "gamma" in inspect.signature(allocate).parameters else {}
    return allocate(model, target, config.include, config.exclude, **kwargs)


def prune_baseline(model: nn.Module, calibration_data, target: float, method: str, tier: str,
                   config: Config | None = None, pot_config: PotConfig | None = None) -> tuple[nn.Module, dict]:
    """Prune a copy of ``model`` to exactly ``target`` with one allocation ``method`` at one ``tier``.

    Returns ``(pruned model in eval mode, info)``; info keys: method, tier, target, allocation (the
    returned model's per-layer sparsities), zeros, total, achieved_sparsity, wall_time, steps (optimiser
    steps spent: 0 for a/b of magnitude allocations, POT's Adam steps, config.steps for c), and for tier c
    sparsity_before_projection, init_allocation and allocation_drift (the largest per-layer change).
    """
    start = time.perf_counter()
    config = config or Config()
    target = check_target(target)
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)} ({TIER_NAMES})")
    check_finite(model)
    device = resolve_device(config.device)
    info: dict = dict(method=method, tier=tier, target=target, steps=0)

    if tier == "c":
        allocation = baseline_allocation(model, target, method, config)
        result = sparsify(model, calibration_data, target, config, allocation=allocation, learn_thresholds=False)
        pruned = result.model
        info.update(steps=config.steps, sparsity_before_projection=result.sparsity_before_projection,
                    init_allocation=allocation, selection=result.selection,
                    selected=result.selection["chosen"] if result.selection else "-")
    else:
        if method in PRUNERS:
            pot_config = pot_config or PotConfig(seed=config.seed, device=config.device, progress=config.progress)
            pruned, pot_info = PRUNERS[method](model, calibration_data, target, pot_config, config.include,
                                               config.exclude)
            info.update(steps=pot_info["steps"], calibration=pot_info["calibration"])
        else:
            pruned = masked_copy(model, baseline_allocation(model, target, method, config), device)
        if tier == "b":
            # The weights are zero already; the forward passes only refresh the BN running statistics.
            recalibrate_bn(pruned, calibration_data, batches=None, batch_size=config.batch_size, seed=config.seed,
                           device=device)
    pruned.eval()
    zeros, total = count_zeros(pruned)
    prunable = set(prunable_layers(model, config.include, config.exclude))
    info.update(allocation={r["layer"]: r["sparsity"] for r in weight_sparsity_table(pruned) if r["layer"] in prunable},
                zeros=zeros, total=total, achieved_sparsity=zeros / total, wall_time=time.perf_counter() - start)
    if tier == "c":
        # Frozen thresholds are not frozen masks: weights cross them while training, then the projection
        # restores the exact count. How far the returned per-layer sparsities moved from the allocation:
        info["allocation_drift"] = max(abs(info["allocation"][n] - s) for n, s in info["init_allocation"].items())
    hint = ("lower Config.base_lr or set Config.grad_clip (e.g. 5.0)" if tier == "c"
            else f"lower PotConfig.lr (now {pot_config.lr})" if method in PRUNERS
            else "check the dense model and the calibration inputs")
    check_final_outputs(pruned, calibration_data, f"{method} tier {tier}", target, info["steps"],
                        batch_size=config.batch_size, hint=hint)
    return pruned, info
