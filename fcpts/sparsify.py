"""The FCPTS loop: learn per-layer thresholds under a global budget, then project exactly and squash.

    result = fcpts.sparsify(model, calibration_images, target=0.8, config=fcpts.Config.quick_cpu())

The input model is never modified: the student and the frozen teacher are copies.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .allocation import erk_allocation, uniform_allocation, zero_budget
from .calibration import CalibrationStream, recalibrate_bn
from .config import Config, check_target
from .evaluate import resolve_device
from .masking import (ThresholdSparsifier, all_weight_layers, check_finite, count_zeros, unparametrize,
                      weight_sparsity_table)
from .objective import OutputRecorder, block_mse, block_names, controllable_loss, kd_loss
from .projection import project_masks


@dataclass
class SparsifyResult:
    model: nn.Module  # squashed: plain modules, real zeros, original state_dict keys
    allocation: dict[str, float]  # {layer: sparsity} of the returned model (prunable layers)
    init_allocation: dict[str, float]  # where the thresholds started (ERK by default)
    thresholds: dict[str, float]  # final thresholds after the projection (τ · t_l)
    history: list[dict]  # one row per step: step, sparsity, loss_rec, loss_c, loss, lr
    layer_history: list[dict]  # every `layer_log_every` steps: step and each layer's sparsity
    target: float
    sparsity_before_projection: float  # what the thresholds gave at the last step
    sparsity_after_projection: float  # exact zero fraction of the returned model
    zeros: int
    total: int
    projection_shift: float  # τ; 1.0 means the thresholds already met the target exactly
    wall_time: float  # seconds for the whole call
    config: Config = field(repr=False)

    def layer_table(self):
        """Per-layer table (name, shape, count, sparsity, threshold) as a pandas DataFrame."""
        import pandas as pd

        rows = weight_sparsity_table(self.model)
        for row in rows:
            row["threshold"] = self.thresholds.get(row["layer"])
            row["init_sparsity"] = self.init_allocation.get(row["layer"], 0.0)
        return pd.DataFrame(rows)


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def start_allocation(model: nn.Module, target: float, config: Config) -> dict[str, float]:
    """Where the thresholds start: ERK (γ = ``config.erk_gamma``, released) or uniform (``config.init``)."""
    if config.init == "erk":
        return erk_allocation(model, target, config.include, config.exclude, gamma=config.erk_gamma)
    return uniform_allocation(model, target, config.include, config.exclude)


def _optimizer(student: nn.Module, thresholds: list[nn.Parameter], config: Config) -> torch.optim.Optimizer:
    threshold_ids = {id(p) for p in thresholds}
    others = [p for p in student.parameters() if p.requires_grad and id(p) not in threshold_ids]
    groups = [dict(params=others, weight_decay=config.weight_decay),
              dict(params=thresholds, weight_decay=0.0)]  # never decay thresholds: it would bias the allocation
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def _set_bn_mode(model: nn.Module, mode: str) -> None:
    model.train(mode == "train")


class _TeacherCache:
    """Teacher logits per calibration image, computed once (exact only when inputs do not change)."""

    def __init__(self, teacher: nn.Module, stream: CalibrationStream, device: torch.device):
        if not stream.indexed:
            raise ValueError("cache_teacher needs the calibration data as a Tensor or Dataset, not a DataLoader")
        self.logits: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for x, idx in stream.one_pass():
                for i, row in zip(idx.tolist(), teacher(x.to(device))):
                    self.logits[i] = row

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.logits[i] for i in idx.tolist()])


def sparsify(model: nn.Module, calibration_data, target: float | None = None, config: Config | None = None,
             allocation: dict[str, float] | None = None, learn_thresholds: bool = True) -> SparsifyResult:
    """Run FCPTS on a copy of ``model`` and return the exactly-sparse, squashed result.

    ``allocation`` (optional) replaces the ERK start; with ``learn_thresholds=False`` the thresholds stay
    frozen at it, which gives any allocation the same reconstruction budget as FCPTS (baseline tier c).
    """
    start_time = time.perf_counter()
    config = config or Config()
    if target is not None:
        config = config.replace(target=check_target(target))
    target = config.target
    check_finite(model)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)

    teacher = copy.deepcopy(model).to(device)
    teacher.requires_grad_(False)
    student = copy.deepcopy(model).to(device)
    layers, zeros_target = zero_budget(student, target, config.include, config.exclude)
    init_allocation = dict(allocation) if allocation is not None else start_allocation(student, target, config)
    sparsifier = ThresholdSparsifier.from_config(student, init_allocation, config)
    threshold_params = sparsifier.threshold_parameters()
    for p in threshold_params:
        p.requires_grad_(learn_thresholds)

    stream = CalibrationStream(calibration_data, config.batch_size, config.seed, config.num_workers)
    optimizer = _optimizer(student, threshold_params, config)
    warmup = stream.batches_per_pass if config.warmup_steps < 0 else config.warmup_steps
    _set_bn_mode(student, config.bn_mode)
    _set_bn_mode(teacher, config.bn_mode)
    teacher_cache = _TeacherCache(teacher, stream, device) if config.cache_teacher else None
    blocks = block_names(student, config.block_patterns) if config.block_mse_weight > 0 else []

    history, layer_history = [], []
    batches = iter(stream)
    bar = tqdm(range(config.steps), desc=f"FCPTS {target:.0%}", disable=not config.progress, leave=False)
    with ExitStack() as hooks:
        s_rec = hooks.enter_context(OutputRecorder(student, blocks)) if blocks else None
        t_rec = hooks.enter_context(OutputRecorder(teacher, blocks)) if blocks else None
        for step in bar:
            lr = lr_at(step, config.steps, config.lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, idx = next(batches)
            x = x.to(device, non_blocking=True)
            if teacher_cache is not None:
                teacher_logits = teacher_cache(idx).to(device)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            student_logits = student(x)
            loss_rec = kd_loss(student_logits, teacher_logits, config.temperature)
            if blocks:
                loss_rec = loss_rec + config.block_mse_weight * block_mse(s_rec.outputs, t_rec.outputs)
            sparsity = sparsifier.global_sparsity()
            loss_c = controllable_loss(sparsity, target, config.objective)
            loss = loss_rec + config.lam * loss_c
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at step {step} (L_rec={loss_rec.item():.4g}, S={sparsity.item():.4f}); "
                    "lower Config.base_lr, set Config.grad_clip (e.g. 5.0), or check the calibration inputs")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
            optimizer.step()
            history.append(dict(step=step, sparsity=sparsity.item(), loss_rec=loss_rec.item(),
                                loss_c=loss_c.item(), loss=loss.item(), lr=lr))
            if step % config.layer_log_every == 0 or step == config.steps - 1:
                layer_history.append(dict(step=step, **sparsifier.layer_sparsities()))
            bar.set_postfix(S=f"{sparsity.item():.4f}", L_rec=f"{loss_rec.item():.4f}")

    # --- exact control: project, then squash the masks into plain weights ---
    before = float(sparsifier.global_sparsity().detach())
    thresholds = sparsifier.thresholds()
    dense_weights = {n: m.parametrizations.weight.original.detach() for n, m in layers.items()}
    zeros_elsewhere = sum(int((m.weight == 0).sum()) for n, m in all_weight_layers(student).items() if n not in layers)
    if config.project:
        masks, tau = project_masks(dense_weights, thresholds, zeros_target, zeros_elsewhere)
    else:
        masks, tau = {n: sparsifier.masks()[n].mask(w).detach() for n, w in dense_weights.items()}, 1.0
    for module in layers.values():
        unparametrize(module, leave_parametrized=False)
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.mul_(masks[name])
    if config.bn_mode == "eval":
        recalibrate_bn(student, stream, config.bn_recalibration_batches, device=device)
    student.eval()
    zeros, total = count_zeros(student)
    final_allocation = {r["layer"]: r["sparsity"] for r in weight_sparsity_table(student) if r["layer"] in layers}
    return SparsifyResult(
        model=student, allocation=final_allocation, init_allocation=init_allocation,
        thresholds={n: t * tau for n, t in thresholds.items()} if config.project else thresholds,
        history=history, layer_history=layer_history, target=target,
        sparsity_before_projection=before, sparsity_after_projection=zeros / total, zeros=zeros, total=total,
        projection_shift=tau, wall_time=time.perf_counter() - start_time, config=config)
