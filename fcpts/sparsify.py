"""The FCPTS loop: learn per-layer thresholds under a global budget, then project exactly and squash.

    result = fcpts.sparsify(model, calibration_images, target=0.8, config=fcpts.Config.quick_cpu())

The input model is never modified: the student and the frozen teacher are copies.

An FCPTS step never waits for the device: the history's values stay on it and are read back in one transfer every
``Config.layer_log_every`` steps and at the end (every step on a CPU, where there is nothing to wait for), and the
non-finite-loss check runs on them then, naming the first bad step. (STR, ProbMask and DSA-style still read a
value back in every step of their own: a later change.) On CUDA the student and teacher run in channels_last
memory format with cuDNN autotuning (``channels_last_on``, ``cudnn_autotune``), which changes the last bits of the
results and makes two runs differ slightly unless ``torch.backends.cudnn.deterministic`` is set (it turns the
autotuning off); ``Config.precision`` = "bf16" runs their forward passes under bfloat16 autocast
(``forward_precision``).
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .allocation import (erk_allocation, erk_released_allocation, uniform_allocation, uniform_released_allocation,
                         zero_budget)
from .calibration import CalibrationStream, recalibrate_bn, split_holdout
from .config import Config, check_target
from .evaluate import resolve_device
from .guards import check_final_outputs
from .learner import FcptsLearner, Learner
from .masking import all_weight_layers, check_finite, count_zeros, weight_sparsity_table
from .objective import OutputRecorder, block_mse, block_names, kd_loss
from .selection import KdScorer, select_candidate


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
    # Config.select_holdout > 0: which candidate was returned ("reconstructed" or "start") and every score. When
    # it is the start, thresholds, projection_shift, sparsity_before_projection and the histories still describe
    # the reconstruction that was set aside; allocation, zeros and the model are the start's.
    selection: dict | None = None

    def layer_table(self):
        """Per-layer table (name, shape, count, sparsity, threshold) as a pandas DataFrame."""
        import pandas as pd

        rows = weight_sparsity_table(self.model)
        for row in rows:
            row["threshold"] = self.thresholds.get(row["layer"])
            row["init_sparsity"] = self.init_allocation.get(row["layer"], 0.0)
        return pd.DataFrame(rows)


def lr_at(step: int, steps: int, base: float, warmup: int, schedule: str = "released") -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``steps``: a linear warm-up over ``warmup`` steps
    from 0 to ``base``, then a cosine decay to 0.

    ``released`` is what the authors' loop runs: timm's ``CosineLRScheduler(t_initial=steps, warmup_t=warmup,
    warmup_lr_init=0, lr_min=0)``, which sets the warm-up start (0) when it is built, and ``step_update(i)``
    called *after* the optimiser step of iteration i. So step 0 runs at 0, step s > 0 at timm's value for
    t = s - 1: the ramp t·base/W lags one step (step 1 runs at 0 too), and the cosine is taken over t / steps
    from t = 0, not over what is left after the warm-up. ``ramp_then_cosine`` is the kit's earlier schedule:
    base·(s+1)/W during the warm-up, then a cosine over the remaining steps.
    """
    if schedule == "released":
        # timm's arithmetic, operation for operation, so the lr is the same float (tests/test_released_recipe.py)
        t = step - 1
        if t < 0:  # before the first step_update: timm's warm-up start, or the optimiser's own lr without warm-up
            return 0.0 if warmup > 0 else base
        if t < warmup:
            return 0.0 + t * ((base - 0.0) / warmup)
        if t >= steps:  # past the one cycle: timm's lr_min
            return 0.0
        return 0.0 + 0.5 * (base - 0.0) * (1 + math.cos(math.pi * t / steps))
    if schedule == "ramp_then_cosine":
        if step < warmup:
            return base * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"unknown lr schedule {schedule!r}; use 'released' or 'ramp_then_cosine'")


def start_allocation(model: nn.Module, target: float, config: Config) -> dict[str, float]:
    """Where the thresholds start: ERK (γ = ``config.erk_gamma``, released) or uniform (``config.init``), with
    the released rounding (fractions from floor(S*·n_l) zeros per layer; the thresholds then prune int(S_l·n_l))
    or the exact one (k_l / n_l that add up to round(S*·N) zeros): ``config.init_rounding``."""
    released = config.init_rounding == "released"
    if config.init == "erk":
        if released:
            return erk_released_allocation(model, target, config.include, config.exclude, gamma=config.erk_gamma)
        return erk_allocation(model, target, config.include, config.exclude, gamma=config.erk_gamma)
    if released:
        return uniform_released_allocation(model, target, config.include, config.exclude)
    return uniform_allocation(model, target, config.include, config.exclude)


def exact_start_allocation(model: nn.Module, target: float, config: Config) -> dict[str, float]:
    """The start with exact counts (k_l / n_l adding up to round(S*·N)) whatever ``config.init_rounding`` says:
    the fallback candidate of the held-out selection, which only compares models with the target's zeros."""
    return start_allocation(model, target, config.replace(init_rounding="exact"))


class TeacherCache:
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


def build_optimizer(student: nn.Module, groups: list[dict], config: Config,
                    exclude: tuple[nn.Parameter, ...] = ()) -> torch.optim.Optimizer:
    """SGD over the network's parameters (with weight decay) plus the learner's groups."""
    own = {id(p) for g in groups for p in g["params"]} | {id(p) for p in exclude}
    others = [p for p in student.parameters() if p.requires_grad and id(p) not in own]
    return torch.optim.SGD([dict(params=others, weight_decay=config.weight_decay)] + groups, lr=config.lr,
                           momentum=config.momentum)


@dataclass
class _Run:
    """The state of one ``learn_allocation`` call, built by ``_set_up``, used by ``_train`` and ``_finish``."""

    config: Config
    learner: Learner
    device: torch.device
    world_size: int
    rank: int
    student: nn.Module
    teacher: nn.Module
    dense: nn.Module | None  # the held-out selection's judge and fallback (None without it)
    layers: dict[str, nn.Module]
    zeros_target: int
    init_allocation: dict[str, float]
    fallback: dict[str, float] | None  # the held-out selection's start candidate
    calibration_data: object
    holdout: torch.Tensor | None
    stream: CalibrationStream
    start_time: float
    net: nn.Module | None = None  # the student, DDP-wrapped on several ranks
    optimizer: torch.optim.Optimizer | None = None
    extra_optimizer: torch.optim.Optimizer | None = None
    extra_base_lrs: list[float] = field(default_factory=list)
    base_lr: float = 0.0
    warmup: int = 0
    teacher_cache: TeacherCache | None = None
    blocks: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    layer_history: list[dict] = field(default_factory=list)
    pending: list[dict] = field(default_factory=list)  # history rows whose values are still on the device
    progress: object = None  # the progress bar, updated when the history is read back


def channels_last_on(device: torch.device, model: nn.Module | None = None) -> bool:
    """Whether the loop keeps the student and teacher in channels_last memory format: on CUDA, where convolutions
    run much faster in it (benchmarks/results/gpu_h200_log.md), for models whose tensors are at most 4-d (a Conv3d's
    5-d weight has no channels_last form). Not on a CPU: there it changes the convolution kernels, hence the last
    bits of every number a CPU run gives (the committed results were computed contiguous), for a few percent at
    most (benchmarks/speed.py, part ``layout``). Not under torch.distributed either: the kit's collectives expect
    contiguous tensors."""
    if device.type != "cuda" or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    return model is None or all(t.dim() <= 4 for t in (*model.parameters(), *model.buffers()))


@contextmanager
def cudnn_autotune(device: torch.device):
    """cuDNN autotuning (``torch.backends.cudnn.benchmark``) for the loop's fixed shapes on CUDA, unless
    deterministic algorithms were asked for; the global flag is restored afterwards."""
    if (device.type != "cuda" or torch.backends.cudnn.deterministic
            or torch.are_deterministic_algorithms_enabled()):
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}


def forward_precision(config: Config, device: torch.device):
    """The context the loop's teacher and student forward passes run in: bfloat16 autocast under
    ``precision="bf16"``, nothing under "fp32". Thresholds, masks, the bridge and both losses stay float32."""
    dtype = _AUTOCAST[config.precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _set_up(model: nn.Module, calibration_data, config: Config, learner: Learner,
            allocation: dict[str, float] | None) -> _Run:
    """Copies (student, frozen teacher, the dense judge), the learner at its start, the calibration stream."""
    start_time = time.perf_counter()
    check_finite(model)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rank, world_size = distributed.world()  # (0, 1) unless launched by torchrun: fcpts.distributed
    teacher = copy.deepcopy(model).to(device)
    teacher.requires_grad_(False)
    student = copy.deepcopy(model).to(device)
    if world_size > 1:  # one model on every rank: rank 0's (a model built with random weights differs per rank)
        distributed.broadcast_(list(teacher.state_dict().values()) + list(student.state_dict().values()))
    if channels_last_on(device, student):  # the squashed student goes back to the contiguous format in _finish
        teacher, student = (m.to(memory_format=torch.channels_last) for m in (teacher, student))
    # the held-out selection judges by, and falls back to, the dense model as it is now (the teacher's BN
    # statistics move while it runs in train mode)
    dense = copy.deepcopy(teacher) if config.select_holdout > 0 else None
    layers, zeros_target = zero_budget(student, config.target, config.include, config.exclude)
    init_allocation, fallback = _prepare_start(student, config, learner, allocation)
    holdout = None
    if config.select_holdout > 0:  # kit safeguard: these images never train; they judge the candidates at the end
        calibration_data, holdout = split_holdout(calibration_data, config.select_holdout, config.seed)
    stream = CalibrationStream(calibration_data, config.batch_size, config.seed, config.num_workers,
                               shard=(rank, world_size))
    run = _Run(config, learner, device, world_size, rank, student, teacher, dense, layers, zeros_target,
               learner.start or init_allocation,  # ProbMask starts dense, whatever the ERK start says
               fallback, calibration_data, holdout, stream, start_time)
    _set_up_training(run)
    return run


def _prepare_start(student: nn.Module, config: Config, learner: Learner,
                   allocation: dict[str, float] | None) -> tuple[dict[str, float], dict[str, float] | None]:
    """Attach ``learner`` at its start; return (the start, the held-out selection's fallback allocation or None).

    A given ``allocation`` holds exact counts k_l / n_l, so the learner sees ``init_rounding="exact"`` for it
    (tier c, a user's table); the start computed here follows ``config.init_rounding``. The fallback candidate
    is the start at exactly the target's zeros: the released rounding holds a few zeros fewer, and the selection
    only compares equal budgets."""
    start = dict(allocation) if allocation is not None else start_allocation(student, config.target, config)
    learner.prepare(student, start, config if allocation is None else config.replace(init_rounding="exact"))
    fallback = None
    if config.select_holdout > 0:
        fallback = start if allocation is not None else exact_start_allocation(student, config.target, config)
    return start, fallback


def _set_up_training(run: _Run) -> None:
    """DDP, the optimisers and the lr schedule's constants, the BN mode, the teacher cache, the MSE blocks."""
    config, learner, student = run.config, run.learner, run.student
    run.net = student
    if run.world_size > 1:  # gradients of weights and thresholds averaged over the ranks
        from torch.nn.parallel import DistributedDataParallel

        run.net = DistributedDataParallel(student, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    run.base_lr = config.lr * run.world_size  # the released rule on the global batch: base_lr * batch * world / 256
    run.extra_optimizer = learner.extra_optimizer(config)
    extra_params = tuple(p for g in (run.extra_optimizer.param_groups if run.extra_optimizer else []) for p in g["params"])
    run.optimizer = build_optimizer(student, learner.parameter_groups(config), config, extra_params)
    run.extra_base_lrs = [g["lr"] for g in run.extra_optimizer.param_groups] if run.extra_optimizer else []
    run.warmup = run.stream.batches_per_pass if config.warmup_steps < 0 else config.warmup_steps
    student.train(config.bn_mode == "train")
    run.teacher.train(config.bn_mode == "train")
    if config.cache_teacher:
        with forward_precision(config, run.device):
            run.teacher_cache = TeacherCache(run.teacher, run.stream, run.device)
    run.blocks = block_names(student, config.block_patterns) if config.block_mse_weight > 0 else []


def _train(run: _Run) -> None:
    """``config.steps`` optimiser steps of L_rec (KD, plus the optional block MSE) + the learner's penalty."""
    config = run.config
    batches = iter(run.stream)
    label = "FCPTS" if isinstance(run.learner, FcptsLearner) else run.learner.name
    bar = tqdm(range(config.steps), desc=f"{label} {config.target:.0%}", disable=not config.progress or run.rank > 0,
               leave=False)
    run.progress = bar
    with ExitStack() as hooks:
        hooks.enter_context(cudnn_autotune(run.device))
        recorders = None
        if run.blocks:
            recorders = (hooks.enter_context(OutputRecorder(run.student, run.blocks)),
                         hooks.enter_context(OutputRecorder(run.teacher, run.blocks)))
        for step in bar:
            try:
                _step(run, step, next(batches), recorders)
            except Exception as error:  # a later step can fail on what an unchecked non-finite loss left behind
                diverged = _read_back(run)
                if diverged is not None:
                    raise diverged from error
                raise
            if step % config.layer_log_every == 0 or step == config.steps - 1:
                _check_history(run)
                run.layer_history.append(dict(step=step, **run.learner.layer_sparsities()))
            if run.world_size > 1 and (step % distributed.CHECK_EVERY == 0 or step == config.steps - 1):
                distributed.check_agreement(list(run.student.parameters()), step)


def _set_lr(run: _Run, step: int) -> float:
    lr = lr_at(step, run.config.steps, run.base_lr, run.warmup, run.config.lr_schedule)
    for group in run.optimizer.param_groups:  # a learner's group may run at a multiple of it ("lr_scale")
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
    if run.extra_optimizer is not None:  # the learner's own optimiser follows the same warm-up + cosine shape
        for group, base in zip(run.extra_optimizer.param_groups, run.extra_base_lrs):
            group["lr"] = base * lr / run.base_lr if run.base_lr > 0 else base
    return lr


def _read_back(run: _Run) -> FloatingPointError | None:
    """Move the pending history rows to ``run.history`` as plain floats, one transfer per device. Returns the
    error to raise for the first row with a non-finite loss (it and the rows after it are dropped), else None."""
    rows, run.pending = run.pending, []
    slots = [(row, key) for row in rows for key, value in row.items() if isinstance(value, torch.Tensor)]
    for device in {row[key].device for row, key in slots}:
        here = [(row, key) for row, key in slots if row[key].device == device]
        numbers = torch.stack([row[key].detach().reshape(()).double() for row, key in here]).tolist()
        for (row, key), number in zip(here, numbers):
            row[key] = number
    config = run.config
    for row in rows:
        if not math.isfinite(row["loss"]):
            return FloatingPointError(
                f"{run.learner.name} at {config.target:.0%}: non-finite loss at step {row['step']} "
                f"(L_rec={row['loss_rec']:.4g}, S={row['sparsity']:.4f}); lower Config.base_lr, set Config.grad_clip "
                "(e.g. 5.0), or check the calibration inputs")
        run.history.append(row)
    if rows and run.progress is not None:
        run.progress.set_postfix(S=f"{rows[-1]['sparsity']:.4f}", L_rec=f"{rows[-1]['loss_rec']:.4f}")
    return None


def _check_history(run: _Run) -> None:
    """``_read_back``, raising its error."""
    diverged = _read_back(run)
    if diverged is not None:
        raise diverged


def _step(run: _Run, step: int, batch, recorders) -> None:
    """One optimiser step. Its history row (step, sparsity, loss_rec, the learner's values, loss, lr) joins
    ``run.pending``; on a CPU it is read back, and a non-finite loss raised, before the backward pass."""
    config, learner = run.config, run.learner
    lr = _set_lr(run, step)
    learner.before_step(step, config.steps)
    x, idx = batch
    x = x.to(run.device, non_blocking=True)
    with forward_precision(config, run.device):
        if run.teacher_cache is not None:
            teacher_logits = run.teacher_cache(idx).to(run.device)
        else:
            with torch.no_grad():
                teacher_logits = run.teacher(x)
        student_logits = run.net(x)
    loss_rec = kd_loss(student_logits.float(), teacher_logits.float(), config.temperature)  # float32 under bf16 too
    if recorders is not None:
        student_blocks, teacher_blocks = ({k: v.float() for k, v in r.outputs.items()} for r in recorders)
        loss_rec = loss_rec + config.block_mse_weight * block_mse(student_blocks, teacher_blocks)
    extra, sparsity, logs = learner.penalty(step, config.steps)
    loss = loss_rec + extra
    run.pending.append(dict(step=step, sparsity=_detached(sparsity), loss_rec=loss_rec.detach(),
                            **{k: _detached(v) for k, v in logs.items()}, loss=loss.detach(), lr=lr))
    if _reads_back_every_step(run.device):  # check now, before the backward, as the loop always has
        _check_history(run)
    optimizers = [run.optimizer] + ([run.extra_optimizer] if run.extra_optimizer is not None else [])
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.student.parameters(), config.grad_clip)
    if run.world_size > 1 and run.extra_optimizer is not None:  # the learner's own parameters, outside DDP
        distributed.average_gradients_(p for g in run.extra_optimizer.param_groups for p in g["params"])
    learner.after_backward()
    for optimizer in optimizers:
        optimizer.step()
    learner.after_step(step, config.steps)


def _reads_back_every_step(device: torch.device) -> bool:
    """A CPU has nothing to wait for: read every step's values back (and check them) at once. Elsewhere a read
    waits for the device, so the loop does it every ``Config.layer_log_every`` steps and at the end."""
    return device.type == "cpu"


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


def _finish(run: _Run) -> SparsifyResult:
    """Exact control: project to round(S*·N) zeros, squash, re-estimate BN if asked, select if asked."""
    config, learner, student = run.config, run.learner, run.student
    if learner.selection_batches > 0:
        learner.score_masks = KdScorer(student, run.teacher, run.calibration_data, learner.selection_batches, config,
                                       run.device)
    dense_weights = {n: m.parametrizations.weight.original.detach() for n, m in run.layers.items()}
    zeros_elsewhere = sum(int((m.weight == 0).sum()) for n, m in all_weight_layers(student).items()
                          if n not in run.layers)
    masks, tau, thresholds = learner.final_masks(dense_weights, run.zeros_target, zeros_elsewhere, config.project)
    distributed.broadcast_(list(masks.values()))  # rank 0's projection on every rank
    before = learner.sparsity_before_projection()
    learner.squash(masks, tau, run.layers)
    if config.bn_mode == "eval" or config.bn_recalibrate:
        recalibrate_bn(student, run.stream, config.bn_recalibration_batches, device=run.device)
    distributed.average_buffers_(student)  # BN statistics: each rank's come from its own slices
    if run.world_size > 1:
        distributed.check_agreement(list(student.state_dict().values()), config.steps, "final weights")
    student.eval()
    selection = None
    if run.holdout is not None:
        student, selection = select_candidate(student, run.dense, run.fallback, run.zeros_target, run.stream,
                                              run.holdout, config, run.device)
    if channels_last_on(run.device, student):  # the caller gets the usual layout back
        student = student.to(memory_format=torch.contiguous_format)
    check_final_outputs(student, run.calibration_data, "FCPTS" if isinstance(learner, FcptsLearner) else learner.name,
                        config.target, config.steps, run.device, batch_size=config.batch_size,
                        hint="lower Config.base_lr or set Config.grad_clip (e.g. 5.0), or check the calibration inputs")
    zeros, total = count_zeros(student)
    final_allocation = {r["layer"]: r["sparsity"] for r in weight_sparsity_table(student) if r["layer"] in run.layers}
    return SparsifyResult(
        model=student, allocation=final_allocation, init_allocation=run.init_allocation, thresholds=thresholds,
        history=run.history, layer_history=run.layer_history, target=config.target,
        sparsity_before_projection=before, sparsity_after_projection=zeros / total, zeros=zeros, total=total,
        projection_shift=tau, wall_time=time.perf_counter() - run.start_time, config=config, selection=selection)


def learn_allocation(model: nn.Module, calibration_data, target: float | None, config: Config | None,
                     learner: Learner, allocation: dict[str, float] | None = None) -> SparsifyResult:
    """The shared post-training loop: ``learner`` learns the allocation of a copy of ``model`` under one
    budget (config's calibration stream, batch, steps, KD loss, optimiser, BN mode), then the exact projection
    and the squash. ``allocation`` replaces the start (``start_allocation``: ERK by default)."""
    config = config or Config()
    if target is not None:
        config = config.replace(target=check_target(target))
    run = _set_up(model, calibration_data, config, learner, allocation)
    _train(run)
    return _finish(run)


def sparsify(model: nn.Module, calibration_data, target: float | None = None, config: Config | None = None,
             allocation: dict[str, float] | None = None, learn_thresholds: bool = True) -> SparsifyResult:
    """Run FCPTS on a copy of ``model`` and return the exactly-sparse, squashed result.

    ``allocation`` (optional) replaces the ERK start; with ``learn_thresholds=False`` the thresholds stay
    frozen at it, which gives any allocation the same reconstruction budget as FCPTS (baseline tier c).
    """
    return learn_allocation(model, calibration_data, target, config, FcptsLearner(learn_thresholds), allocation)
