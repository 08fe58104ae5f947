"""Training-aware pruning (method.md §3): train with labels while the sparsity follows a schedule s(t).

At every training step k (progress t = k/(steps−1), so the last step is at t = 1 and s = s_f exactly):

1. s = schedule(t, s_i, s_f); the exact per-layer zero counts for s come from the kit's allocations
   (``uniform``: every layer at s, the One-Cycle Pruning paper's setting; ``global``: one |w| threshold),
   and the masks drop the smallest |w| (of each layer, or over all layers for ``global``): the same sets as
   ``magnitude_masks``, ties included (both use ``masking.lowest_k``: ``kthvalue``, ties by position);
2. the pruned weights are zeroed, the batch's cross-entropy is back-propagated, the gradients of pruned
   weights are masked, the optimiser steps, and the pruned weights are zeroed again (momentum or Adam
   state cannot revive them).

Masks are recomputed from the current magnitudes whenever the required zero count changes (pruned weights
are exactly zero, so they stay the smallest: with an unchanged count the recomputed mask is the same).
Because pruned weights are held at zero, a pruned weight never grows back (fasterai lets optimiser
momentum move pruned weights between its per-batch re-prunings, so it can). The run ends with exactly
round(s_f·N) zero weights.

Two starts (the caller passes the model): the trained dense checkpoint (fine-tuning), or a fresh
``build_model(name, weights=None)`` (from scratch, as in the One-Cycle Pruning paper). Labels are needed:
unlike FCPTS this is not post-training sparsity; it uses the labelled train split.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .allocation import global_magnitude_allocation, uniform_allocation, zero_budget
from .config import check_target
from .guards import check_final_outputs
from .masking import check_finite, count_zeros, lowest_k_mask, prunable_layers, weight_sparsity_table
from .options import Options
from .schedules import SCHEDULES, get_schedule, progress

_MASK_ALLOCATIONS = {"uniform": uniform_allocation, "global": global_magnitude_allocation}


@dataclass
class PruneTrainConfig(Options):
    """Training with labels: the schedule-driven pruning of ``prune_train`` and the training loop of
    ``fcpts.dst.dst_train``; the comparison runner's training rows (prune_train-uniform, prune_train-global,
    dst-ee, rigl; ``fcpts.runner.default_finetune``, ``--finetune-steps``, ``--finetune-lr``)."""

    schedule: str = "one_cycle"  # a name in fcpts.schedules.SCHEDULES
    schedule_options: dict = field(default_factory=dict)  # e.g. {"beta": 6} or {"at": 0.0}
    allocation: str = "uniform"  # "uniform" (per layer, the paper) or "global" magnitude
    s_i: float = 0.0  # starting sparsity of the schedule
    steps: int = 0  # training steps; 0: use epochs
    epochs: float = 1.0  # used when steps == 0: ceil(epochs * batches per epoch)
    batch_size: int = 64  # labelled training images per step
    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01  # on every parameter (AdamW's decoupled decay, or SGD's)
    momentum: float = 0.9  # sgd only
    lr_schedule: str = "onecycle"  # "onecycle" (fastai's fit_one_cycle, as in the paper), "cosine", "constant"
    label_smoothing: float = 0.0  # of the cross-entropy loss
    include: tuple = ("*",)  # Conv2d/Linear layers whose name matches one of these may be pruned (fnmatch)
    exclude: tuple = ()  # ...unless it matches one of these; excluded layers stay dense
    seed: int = 0  # torch's global seed at the start and the batch order
    device: str = "auto"  # "auto": cuda when available, else cpu
    progress: bool = True  # progress bar
    log_every: int = 10  # record the history every k steps (and at the last)

    def __post_init__(self) -> None:
        self.include, self.exclude = tuple(self.include), tuple(self.exclude)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.allocation not in _MASK_ALLOCATIONS:
            raise ValueError(f"allocation must be one of {', '.join(_MASK_ALLOCATIONS)}, got {self.allocation!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.lr_schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"lr_schedule must be onecycle, cosine or constant, got {self.lr_schedule!r}")
        if self.steps < 0 or (self.steps == 0 and self.epochs <= 0):
            raise ValueError("give a positive number of steps or epochs")
        if not 0.0 <= self.s_i < 1.0:
            raise ValueError(f"s_i must lie in [0, 1), got {self.s_i}")


@dataclass
class PruneTrainResult:
    model: nn.Module  # plain modules, exactly round(s_f N) zero weights, eval mode
    allocation: dict[str, float]  # final per-layer sparsity of the prunable layers
    history: list[dict]  # every log_every steps (and the last): step, t, sparsity, zeros, loss, lr
    target: float
    steps: int
    zeros: int
    total: int
    achieved_sparsity: float
    wall_time: float
    config: PruneTrainConfig = field(repr=False)


def _lr_factor(kind: str, step: int, steps: int) -> float:
    """Multiplier of the peak lr at ``step``: fastai-style one-cycle (25 % cosine warm-up from lr/25, then
    cosine down to lr/25e4, as ``torch.optim.lr_scheduler.OneCycleLR`` with pct_start=0.25), cosine, constant."""
    if kind == "constant":
        return 1.0
    p = step / max(1, steps - 1)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    warm, start, end = 0.25, 1.0 / 25.0, 1.0 / 25e4
    if p < warm:
        return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * p / warm))
    q = (p - warm) / (1.0 - warm)
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * q))


def _batches(data, batch_size: int, seed: int):
    """Endless seeded shuffled batches of ``(x, y)``."""
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=True, drop_last=len(data) >= batch_size, num_workers=0,
        generator=torch.Generator().manual_seed(seed))
    if len(loader) == 0:
        raise ValueError("the training set is empty")
    while True:
        yield from loader


@torch.no_grad()
def masks_at(model: nn.Module, sparsity: float, allocation: str = "uniform", include=("*",), exclude=()) -> dict[str, torch.Tensor] | None:
    """Magnitude masks that zero exactly round(sparsity · N) weights (None for sparsity 0).

    ``uniform``: the per-layer counts of ``uniform_allocation`` (exact, largest remainder), the smallest |w|
    of each layer; ``global``: the smallest |w| over all selected layers. The same sets as
    ``magnitude_masks(model, allocation)``, ties included (the one rule of ``masking.lowest_k``).
    """
    if sparsity <= 0.0:
        return None
    layers, zeros = zero_budget(model, sparsity, include, exclude)
    if allocation == "uniform":
        counts = uniform_allocation(model, sparsity, include, exclude)
        masks = {}
        for name, module in layers.items():
            w = module.weight
            k = int(round(counts[name] * w.numel()))
            masks[name] = (~lowest_k_mask(w.detach().abs(), k)).to(w.dtype)
        return masks
    flat = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
    keep = ~lowest_k_mask(flat, zeros)
    masks, start = {}, 0
    for name, module in layers.items():
        size = module.weight.numel()
        masks[name] = keep[start:start + size].reshape(module.weight.shape).to(module.weight.dtype)
        start += size
    return masks


def _zero_count(model: nn.Module, sparsity: float, include, exclude) -> int:
    if sparsity <= 0.0:
        return 0
    return zero_budget(model, sparsity, include, exclude)[1]


class SchedulePolicy:
    """The masks of schedule-driven pruning: magnitude masks for s(t), recomputed when the zero count changes."""

    def __init__(self, student: nn.Module, layers: dict[str, nn.Module], target: float, config: PruneTrainConfig):
        self.student, self.layers, self.target, self.config = student, layers, target, config
        self.schedule = get_schedule(config.schedule, **config.schedule_options)
        self.masks: dict[str, torch.Tensor] | None = None
        self.mask_zeros, self.t, self.s = -1, 0.0, 0.0
        self.label = config.schedule
        self.exact_zeros = True  # surviving weights never sit at exactly 0: the run ends at round(S*·N) zeros

    def before_step(self, step: int, steps: int) -> None:
        c = self.config
        self.t = progress(step, steps)
        self.s = self.schedule(self.t, c.s_i, self.target)
        zeros_needed = _zero_count(self.student, self.s, c.include, c.exclude)
        if zeros_needed != self.mask_zeros:
            self.masks = masks_at(self.student, self.s, c.allocation, c.include, c.exclude)
            self.mask_zeros = zeros_needed

    def after_backward(self, step: int, steps: int, optimizer: torch.optim.Optimizer) -> bool:
        return True  # take the optimiser step

    def log(self) -> dict:
        return dict(t=self.t, sparsity=self.s, zeros=self.mask_zeros if self.masks is not None else 0)


def train_with_masks(model: nn.Module, train_data, target: float, config: PruneTrainConfig, make_policy,
                     on_step=None) -> PruneTrainResult:
    """The training loop every training-aware method shares: a copy of ``model`` trained with labels
    (cross-entropy, ``config``'s optimiser and lr schedule) under the masks of ``make_policy(student, layers)``.

    Every step: the policy sets its masks (``before_step``), masked weights are zeroed, the batch's gradients
    are computed, the policy may rewire (``after_backward``, which says whether to take the optimiser step),
    gradients are masked, the optimiser steps, masked weights are zeroed again. ``on_step(step, student,
    policy, optimizer)`` (tests) sees the state after every step. Ends with exactly round(target·N) zero weights."""
    start_time = time.perf_counter()
    target = check_target(target)
    check_finite(model)
    from .evaluate import resolve_device

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    student = copy.deepcopy(model).to(device)
    layers = prunable_layers(student, config.include, config.exclude)
    zero_budget(student, target, config.include, config.exclude)  # fails early if the target is impossible
    batches = _batches(train_data, config.batch_size, config.seed)
    steps = _step_count(train_data, config)
    policy = make_policy(student, layers)
    optimizer = _optimizer(student, config)
    history = []
    student.train()
    bar = tqdm(range(steps), desc=f"{policy.label} {target:.0%}", disable=not config.progress, leave=False)
    for step in bar:
        row = _train_step(student, layers, policy, optimizer, next(batches), step, steps, config, device)
        if step % config.log_every == 0 or step == steps - 1:
            history.append(row)
        if on_step is not None:
            on_step(step, student, policy, optimizer)
        bar.set_postfix(loss=f"{row['loss']:.3f}", **{k: f"{row[k]:.3f}" for k in ("sparsity", "coverage") if k in row})
    student.eval()
    zeros, total = count_zeros(student)
    expected = _zero_count(student, target, config.include, config.exclude)
    if zeros < expected or (zeros != expected and policy.exact_zeros):
        raise RuntimeError(f"{policy.label} ended with {zeros} zero weights, expected exactly {expected}; a surviving "
                           "weight reached exactly 0.0 or an excluded layer holds zeros")
    allocation = {r["layer"]: r["sparsity"] for r in weight_sparsity_table(student) if r["layer"] in layers}
    return PruneTrainResult(model=student, allocation=allocation, history=history, target=target, steps=steps,
                            zeros=zeros, total=total, achieved_sparsity=zeros / total,
                            wall_time=time.perf_counter() - start_time, config=config)


def _step_count(train_data, config: PruneTrainConfig) -> int:
    if config.steps > 0:
        return int(config.steps)
    per_epoch = len(train_data) // config.batch_size if not isinstance(train_data, DataLoader) else len(train_data)
    return max(1, math.ceil(config.epochs * max(1, per_epoch)))


def _optimizer(student: nn.Module, config: PruneTrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(student.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


@torch.no_grad()
def _apply(layers: dict[str, nn.Module], masks, attribute: str) -> None:
    """Multiply every masked layer's weight (``data``) or its gradient (``grad``) by its mask."""
    for name, mask in (masks or {}).items():
        tensor = getattr(layers[name].weight, attribute)
        if tensor is not None:
            tensor.mul_(mask)


def _train_step(student, layers, policy, optimizer, batch, step: int, steps: int, config: PruneTrainConfig,
                device) -> dict:
    """One masked training step; returns its history row (the policy's values, loss, lr)."""
    policy.before_step(step, steps)
    _apply(layers, policy.masks, "data")
    lr = config.lr * _lr_factor(config.lr_schedule, step, steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = batch
    loss = F.cross_entropy(student(x.to(device)), y.to(device), label_smoothing=config.label_smoothing)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at step {step} ({policy.label}); lower PruneTrainConfig.lr "
                                 f"(now {config.lr})")
    loss_value = loss.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if policy.after_backward(step, steps, optimizer):
        _apply(layers, policy.masks, "grad")
        optimizer.step()
    _apply(layers, policy.masks, "data")
    return dict(step=step, **policy.log(), loss=loss_value, lr=lr)


def prune_train(model: nn.Module, train_data, target: float, config: PruneTrainConfig | None = None) -> PruneTrainResult:
    """Train a copy of ``model`` on labelled ``train_data`` (a Dataset of ``(x, y)`` or a DataLoader) while
    pruning it along ``config.schedule`` to exactly ``target`` global sparsity."""
    config = config or PruneTrainConfig()
    if config.s_i > check_target(target):
        raise ValueError(f"s_i = {config.s_i} exceeds the target {target}")
    result = train_with_masks(model, train_data, target, config,
                              lambda student, layers: SchedulePolicy(student, layers, target, config))
    check_final_outputs(result.model, train_data, f"prune_train-{config.allocation} ({config.schedule})", target,
                        result.steps, hint=f"lower PruneTrainConfig.lr (now {config.lr}) or check the training inputs")
    return result
