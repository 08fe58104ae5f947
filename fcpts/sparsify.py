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

from . import distributed
from .allocation import (erk_allocation, erk_released_allocation, masked_copy, uniform_allocation,
                         uniform_released_allocation, zero_budget)
from .calibration import CalibrationStream, recalibrate_bn, split_holdout
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



class Learner:
    """What one allocation learner adds to the shared reconstruction loop (``learn_allocation``).

    The loop owns everything the methods share, so they all get exactly FCPTS's post-training budget: the
    copies of the model, the frozen teacher, the calibration stream and its augmentations, the KD loss, the
    SGD optimiser and its lr schedule over the network's own parameters, the BN mode, the non-finite check,
    and the final step (the exact projection to round(S*·N) zeros, then squash). A learner adds its own
    parameters, its penalty, what happens around each optimiser step, and how its masks are projected.
    """

    name = "learner"
    selection_batches = 0  # > 0: the loop sets ``score_masks()``, the KD loss on that many calibration batches
    start: dict[str, float] | None = None  # set by a learner that does not start at the given allocation

    def prepare(self, student: nn.Module, allocation: dict[str, float], config: Config) -> None:
        """Attach the learner to ``student`` (parametrizations on the prunable layers' weights)."""
        raise NotImplementedError

    def parameter_groups(self, config: Config) -> list[dict]:
        """Groups of the learner's own parameters that join the loop's SGD optimiser (with their weight decay)."""
        return []

    def extra_optimizer(self, config: Config) -> torch.optim.Optimizer | None:
        """An optimiser of the learner's own (e.g. Adam on ProbMask's scores), stepped with the SGD one."""
        return None

    def before_step(self, step: int, steps: int) -> None:
        """Called before the step's forward pass (temperature schedules, ...)."""

    def penalty(self, step: int, steps: int) -> tuple[torch.Tensor | float, torch.Tensor, dict]:
        """(extra loss added to L_rec, the global sparsity of this step's masks, values for the history)."""
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called between backward and the optimiser steps (gradient clipping of the learner's own parameters)."""

    def after_step(self, step: int, steps: int) -> None:
        """Called after the optimiser step (projections, dual updates, ...)."""

    def layer_sparsities(self) -> dict[str, float]:
        raise NotImplementedError

    def sparsity_before_projection(self) -> float:
        """The global sparsity the learner's own final masks give, before the kit's exact projection."""
        raise NotImplementedError

    def final_masks(self, weights: dict[str, torch.Tensor], zeros: int, zeros_elsewhere: int,
                    project: bool) -> tuple[dict[str, torch.Tensor], float, dict[str, float]]:
        """(0/1 masks per layer, the projection shift τ, per-layer thresholds to report) at the end."""
        raise NotImplementedError

    def export(self, name: str, weight: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
        """The weight the squashed model stores (default w ⊙ mask; STR stores its shrunk weights)."""
        return weight * mask


class FcptsLearner(Learner):
    """FCPTS: one learnable threshold per layer, the bridge, and λ·L_c (method.md §2)."""

    name = "fcpts"

    def __init__(self, learn_thresholds: bool = True):
        self.learn_thresholds = learn_thresholds

    def prepare(self, student, allocation, config):
        self.config = config
        # the loop's own start follows config.init_rounding; a given allocation is exact (the loop passes a config
        # with init_rounding="exact" for it)
        self.sparsifier = ThresholdSparsifier.from_config(student, allocation, config, rounding=config.init_rounding)
        self.params = self.sparsifier.threshold_parameters()
        for p in self.params:
            p.requires_grad_(self.learn_thresholds)

    def parameter_groups(self, config):
        return threshold_groups(self.params)

    def penalty(self, step, steps):
        sparsity = self.sparsifier.global_sparsity()
        loss_c = controllable_loss(sparsity, self.config.target, self.config.objective)
        return self.config.lam * loss_c, sparsity, dict(loss_c=loss_c.item())

    def layer_sparsities(self):
        return self.sparsifier.layer_sparsities()

    def sparsity_before_projection(self):
        return float(self.sparsifier.global_sparsity().detach())

    def final_masks(self, weights, zeros, zeros_elsewhere, project):
        thresholds = self.sparsifier.thresholds()
        if not project:
            return {n: self.sparsifier.masks()[n].mask(w).detach() for n, w in weights.items()}, 1.0, thresholds
        masks, tau = project_masks(weights, thresholds, zeros, zeros_elsewhere)
        return masks, tau, {n: t * tau for n, t in thresholds.items()}


@torch.no_grad()
def teacher_agreement(student: nn.Module, teacher: nn.Module, inputs, temperature: float,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """The KD loss of ``student`` against ``teacher`` (both in eval mode; the mean of the batches' losses) and
    their top-1 agreement over the images of the batches ``inputs``: how to compare candidates without labels."""
    modes = student.training, teacher.training
    student.eval()
    teacher.eval()
    kd, agree, n, batches = 0.0, 0, 0, 0
    for x in inputs:
        s_logits, t_logits = student(x.to(device)), teacher(x.to(device))
        kd += float(kd_loss(s_logits, t_logits, temperature))
        agree += int((s_logits.argmax(1) == t_logits.argmax(1)).sum())
        n, batches = n + len(x), batches + 1
    student.train(modes[0])
    teacher.train(modes[1])
    return dict(kd=kd / batches, agreement=agree / n)


class _KdScorer:
    """The KD loss of the student as it is now against the teacher, both in eval mode, on the first ``batches``
    calibration batches in a fixed order: how a learner compares candidate masks without labels."""

    def __init__(self, student, teacher, data, batches: int, config: Config, device):
        stream = CalibrationStream(data, config.batch_size, config.seed, 0, shuffle=False)
        self.inputs = [x for (x, _), _ in zip(stream.one_pass(), range(batches))]
        self.student, self.teacher, self.temperature, self.device = student, teacher, config.temperature, device

    def __call__(self) -> float:
        return teacher_agreement(self.student, self.teacher, self.inputs, self.temperature, self.device)["kd"]


def start_candidate(model: nn.Module, allocation: dict[str, float], stream: CalibrationStream,
                    device: torch.device) -> nn.Module:
    """The start without reconstruction: magnitude masks of ``allocation`` on a copy of the dense ``model``,
    then BN re-estimation over one pass of the calibration stream (baseline tier b)."""
    candidate = masked_copy(model, allocation, device)
    recalibrate_bn(candidate, stream, stream.batches_per_pass, device=device)
    return candidate.eval()


def threshold_groups(thresholds: list[nn.Parameter]) -> list[dict]:
    """FCPTS's thresholds as one optimiser group: never decayed (decay would bias the allocation)."""
    return [dict(params=thresholds, weight_decay=0.0)]


def _optimizer(student: nn.Module, groups: list[dict], config: Config,
               exclude: tuple[nn.Parameter, ...] = ()) -> torch.optim.Optimizer:
    """SGD over the network's parameters (with weight decay) plus the learner's groups."""
    own = {id(p) for g in groups for p in g["params"]} | {id(p) for p in exclude}
    others = [p for p in student.parameters() if p.requires_grad and id(p) not in own]
    return torch.optim.SGD([dict(params=others, weight_decay=config.weight_decay)] + groups, lr=config.lr,
                           momentum=config.momentum)


def _prepare_start(student: nn.Module, target: float, config: Config, learner: Learner,
                   allocation: dict[str, float] | None) -> tuple[dict[str, float], dict[str, float] | None]:
    """Attach ``learner`` at its start; return (the start, the held-out selection's fallback allocation or None).

    A given ``allocation`` holds exact counts k_l / n_l, so the learner sees ``init_rounding="exact"`` for it
    (tier c, a user's table); the start computed here follows ``config.init_rounding``. The fallback candidate
    is the start at exactly the target's zeros: the released rounding holds a few zeros fewer, and the selection
    only compares equal budgets."""
    start = dict(allocation) if allocation is not None else start_allocation(student, target, config)
    learner.prepare(student, start, config if allocation is None else config.replace(init_rounding="exact"))
    fallback = None
    if config.select_holdout > 0:
        fallback = start if allocation is not None else exact_start_allocation(student, target, config)
    return start, fallback


def learn_allocation(model: nn.Module, calibration_data, target: float | None, config: Config | None,
                     learner: Learner, allocation: dict[str, float] | None = None) -> SparsifyResult:
    """The shared post-training loop: ``learner`` learns the allocation of a copy of ``model`` under one
    budget (config's calibration stream, batch, steps, KD loss, optimiser, BN mode), then the exact projection
    and the squash. ``allocation`` replaces the start (``start_allocation``: ERK by default)."""
    start_time = time.perf_counter()
    config = config or Config()
    if target is not None:
        config = config.replace(target=check_target(target))
    target = config.target
    check_finite(model)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rank, world_size = distributed.world()  # (0, 1) unless launched by torchrun: fcpts.distributed

    teacher = copy.deepcopy(model).to(device)
    teacher.requires_grad_(False)
    student = copy.deepcopy(model).to(device)
    if world_size > 1:  # one model on every rank: rank 0's (a model built with random weights differs per rank)
        distributed.broadcast_(list(teacher.state_dict().values()) + list(student.state_dict().values()))
    # the held-out selection judges by, and falls back to, the dense model as it is now (the teacher's BN
    # statistics move while it runs in train mode)
    dense = copy.deepcopy(teacher) if config.select_holdout > 0 else None
    layers, zeros_target = zero_budget(student, target, config.include, config.exclude)
    init_allocation, start_alloc = _prepare_start(student, target, config, learner, allocation)
    init_allocation = learner.start or init_allocation  # ProbMask starts dense, whatever the ERK start says

    holdout = None
    if config.select_holdout > 0:  # kit safeguard: these images never train; they judge the candidates at the end
        calibration_data, holdout = split_holdout(calibration_data, config.select_holdout, config.seed)
    stream = CalibrationStream(calibration_data, config.batch_size, config.seed, config.num_workers,
                               shard=(rank, world_size))
    net = student
    if world_size > 1:  # gradients of weights and thresholds averaged over the ranks
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    base_lr = config.lr * world_size  # the released rule on the global batch: base_lr * batch * world / 256
    extra_optimizer = learner.extra_optimizer(config)
    optimizer = _optimizer(student, learner.parameter_groups(config), config,
                           tuple(p for g in (extra_optimizer.param_groups if extra_optimizer else []) for p in g["params"]))
    extra_base_lrs = [g["lr"] for g in extra_optimizer.param_groups] if extra_optimizer else []
    warmup = stream.batches_per_pass if config.warmup_steps < 0 else config.warmup_steps
    _set_bn_mode(student, config.bn_mode)
    _set_bn_mode(teacher, config.bn_mode)
    teacher_cache = _TeacherCache(teacher, stream, device) if config.cache_teacher else None
    blocks = block_names(student, config.block_patterns) if config.block_mse_weight > 0 else []

    history, layer_history = [], []
    batches = iter(stream)
    label = "FCPTS" if learner.name == "fcpts" else learner.name
    bar = tqdm(range(config.steps), desc=f"{label} {target:.0%}", disable=not config.progress or rank > 0,
               leave=False)
    with ExitStack() as hooks:
        s_rec = hooks.enter_context(OutputRecorder(student, blocks)) if blocks else None
        t_rec = hooks.enter_context(OutputRecorder(teacher, blocks)) if blocks else None
        for step in bar:
            lr = lr_at(step, config.steps, base_lr, warmup, config.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if extra_optimizer is not None:  # the learner's own optimiser follows the same warm-up + cosine shape
                for group, base in zip(extra_optimizer.param_groups, extra_base_lrs):
                    group["lr"] = base * lr / base_lr if base_lr > 0 else base
            learner.before_step(step, config.steps)
            x, idx = next(batches)
            x = x.to(device, non_blocking=True)
            if teacher_cache is not None:
                teacher_logits = teacher_cache(idx).to(device)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            student_logits = net(x)
            loss_rec = kd_loss(student_logits, teacher_logits, config.temperature)
            if blocks:
                loss_rec = loss_rec + config.block_mse_weight * block_mse(s_rec.outputs, t_rec.outputs)
            extra, sparsity, logs = learner.penalty(step, config.steps)
            sparsity = sparsity.item()
            loss = loss_rec + extra
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at step {step} (L_rec={loss_rec.item():.4g}, S={sparsity:.4f}); "
                    "lower Config.base_lr, set Config.grad_clip (e.g. 5.0), or check the calibration inputs")
            optimizer.zero_grad(set_to_none=True)
            if extra_optimizer is not None:
                extra_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
            if world_size > 1 and extra_optimizer is not None:  # the learner's own parameters, outside DDP
                distributed.average_gradients_(p for g in extra_optimizer.param_groups for p in g["params"])
            learner.after_backward()
            optimizer.step()
            if extra_optimizer is not None:
                extra_optimizer.step()
            learner.after_step(step, config.steps)
            history.append(dict(step=step, sparsity=sparsity, loss_rec=loss_rec.item(), **logs,
                                loss=loss.item(), lr=lr))
            if step % config.layer_log_every == 0 or step == config.steps - 1:
                layer_history.append(dict(step=step, **learner.layer_sparsities()))
            bar.set_postfix(S=f"{sparsity:.4f}", L_rec=f"{loss_rec.item():.4f}")
            if world_size > 1 and (step % distributed.CHECK_EVERY == 0 or step == config.steps - 1):
                distributed.check_agreement(list(student.parameters()), step)

    # --- exact control: project, then squash the masks into plain weights ---
    if learner.selection_batches > 0:
        learner.score_masks = _KdScorer(student, teacher, calibration_data, learner.selection_batches, config, device)
    dense_weights = {n: m.parametrizations.weight.original.detach() for n, m in layers.items()}
    zeros_elsewhere = sum(int((m.weight == 0).sum()) for n, m in all_weight_layers(student).items() if n not in layers)
    masks, tau, thresholds = learner.final_masks(dense_weights, zeros_target, zeros_elsewhere, config.project)
    distributed.broadcast_(list(masks.values()))  # rank 0's projection on every rank
    before = learner.sparsity_before_projection()
    for module in layers.values():
        unparametrize(module, leave_parametrized=False)
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.copy_(learner.export(name, module.weight, masks[name], tau))
    if config.bn_mode == "eval" or config.bn_recalibrate:
        recalibrate_bn(student, stream, config.bn_recalibration_batches, device=device)
    distributed.average_buffers_(student)  # BN statistics: each rank's come from its own slices
    if world_size > 1:
        distributed.check_agreement(list(student.state_dict().values()), config.steps, "final weights")
    student.eval()
    selection = None
    if holdout is not None:
        student, selection = _select(student, dense, start_alloc, zeros_target, stream, holdout, config, device)
    zeros, total = count_zeros(student)
    final_allocation = {r["layer"]: r["sparsity"] for r in weight_sparsity_table(student) if r["layer"] in layers}
    return SparsifyResult(
        model=student, allocation=final_allocation, init_allocation=init_allocation, thresholds=thresholds,
        history=history, layer_history=layer_history, target=target,
        sparsity_before_projection=before, sparsity_after_projection=zeros / total, zeros=zeros, total=total,
        projection_shift=tau, wall_time=time.perf_counter() - start_time, config=config, selection=selection)


def _select(student: nn.Module, dense: nn.Module, start_alloc: dict[str, float], zeros_target: int,
            stream: CalibrationStream, holdout: torch.Tensor, config: Config, device) -> tuple[nn.Module, dict]:
    """Config.select_holdout: return the reconstructed student or the start (its allocation on the dense
    weights, BN re-estimated), whichever agrees with the dense model's top-1 on more held-out images; on a tie,
    the start. The KD loss of each is reported beside."""
    start = start_candidate(dense, start_alloc, stream, device)
    distributed.average_buffers_(start)  # BN statistics re-estimated on each rank's own slices
    candidates = {"reconstructed": student}
    if count_zeros(start)[0] == zeros_target:  # only a start with exactly the target's zeros (integer-exact allocations)
        candidates["start"] = start
    batches = holdout.split(config.batch_size)
    scores = {name: teacher_agreement(m, dense, batches, config.temperature, device) for name, m in candidates.items()}
    names = list(candidates)
    # the reconstruction must earn its place: the most top-1 agreement with the dense model, a tie to the start
    choice = torch.tensor([max(range(len(names)), key=lambda i: (scores[names[i]]["agreement"], names[i] == "start"))],
                          device=device)
    distributed.broadcast_([choice])  # rank 0's choice everywhere (the scores agree up to rounding)
    chosen = names[int(choice)]
    return candidates[chosen].eval(), dict(chosen=chosen, holdout=len(holdout), scores=scores)


def sparsify(model: nn.Module, calibration_data, target: float | None = None, config: Config | None = None,
             allocation: dict[str, float] | None = None, learn_thresholds: bool = True) -> SparsifyResult:
    """Run FCPTS on a copy of ``model`` and return the exactly-sparse, squashed result.

    ``allocation`` (optional) replaces the ERK start; with ``learn_thresholds=False`` the thresholds stay
    frozen at it, which gives any allocation the same reconstruction budget as FCPTS (baseline tier c).
    """
    return learn_allocation(model, calibration_data, target, config, FcptsLearner(learn_thresholds), allocation)
