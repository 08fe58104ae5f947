"""One registry of every method the kit compares: each is registered once, by name, with one calling convention.

    from fcpts.registry import METHODS, RunContext, RunSpec
    pruned, info = METHODS["str"].run(ctx, RunSpec("str", "c", "-", 0.8, seed=0))

The runner (``fcpts.runner``), the CLI (``fcpts run --method NAME``) and the notebooks take methods from here.
A method belongs to a family, which says which row variants it has (the runner's ``tier`` and ``schedule``
columns) and where it runs in a sweep:

| family | methods | tier | schedule |
|---|---|---|---|
| ``dense`` | ``dense`` | ``-`` | ``-`` |
| ``allocation`` | ``uniform global erk lamp pot`` | ``a`` / ``b`` / ``c`` (``fcpts.baselines``) | ``-`` |
| ``learner`` | ``fcpts fcpts-kde fcpts-ste str probmask dsa`` | ``c`` (the same reconstruction budget) | ``-`` |
| ``training`` | ``prune_train-uniform prune_train-global`` | ``finetune`` / ``scratch`` | a schedule name |
| ``training`` | ``dst-ee rigl`` (dynamic sparse training, no schedule) | ``finetune`` / ``scratch`` | ``-`` |

Every ``run`` returns ``(pruned model in eval mode, info)``; info may hold steps, wall_time,
sparsity_before_projection, allocation_drift, allocation ({layer: sparsity}) and trajectory (the global
sparsity of every step, learners only) and coverage (the fraction of weights ever active after every mask
update, dynamic sparse training). Adding a method is one ``register(Method(...))`` call.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .baselines import ALLOCATION_METHODS, TIERS, prune_baseline
from .calibration import recalibrate_bn
from .config import Config
from .dsa import DsaConfig, DsaLearner
from .dst import DstConfig, dst_train
from .learners import ProbMaskConfig, ProbMaskLearner, StrConfig, StrLearner
from .pot import PotConfig
from .prune_train import PruneTrainConfig, prune_train
from .sparsify import FcptsLearner, learn_allocation

NONE = "-"


@dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: which method, which variant, which target and seed."""

    method: str
    tier: str
    schedule: str
    target: float
    seed: int
    start: str = "dense"


@dataclass
class RunContext:
    """Everything a method may need, shared by all rows of one sweep (or one CLI run)."""

    config: Config
    model: nn.Module
    bundle: Callable[[int], Any]  # seed -> DataBundle (calib, test, num_classes, name)
    device: torch.device
    train_split: Any = None  # labelled train split (training family only)
    finetune: PruneTrainConfig | None = None
    pot: PotConfig | None = None
    scratch_model: Callable[[int], nn.Module] | None = None
    learner_options: dict[str, Any] = field(default_factory=dict)  # method name -> its options dataclass
    memo: dict = field(default_factory=dict)  # POT tier a, reused by tier b
    progress: bool = False  # progress bars inside a run (the CLI); a sweep has its own

    def config_for(self, seed: int) -> Config:
        return self.config.replace(seed=seed, progress=self.progress)

    def options(self, method: "Method"):
        return self.learner_options.get(method.name) or (method.options() if method.options else None)


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "dense", "allocation", "learner", "training"
    run: Callable[[RunContext, RunSpec], tuple[nn.Module, dict]]
    description: str
    options: Callable[[], Any] | None = None  # default options dataclass (learners), part of the row's fingerprint
    config_overrides: dict = field(default_factory=dict)  # Config fields this method changes (FCPTS variants)
    scheduled: bool = True  # training family: one row per sparsity schedule (False: dynamic sparse training)

    def reconstructs(self, tier: str) -> bool:
        """Whether this method's row in ``tier`` runs the shared reconstruction loop (``learn_allocation``)."""
        return self.family == "learner" or (self.family == "allocation" and tier == "c")

    def settings(self, ctx: RunContext, spec: RunSpec) -> dict | None:
        """What changes this row's numbers beyond the Config and the dense model (None: nothing)."""
        if self.family == "allocation" and self.name == "pot" and spec.tier != "c":
            return {"pot": _pot_settings(ctx.pot)}
        if self.family == "training" and self.scheduled:
            finetune = {**ctx.finetune.to_dict(), "allocation": self.name.split("-", 1)[1]}
            return {"finetune": {k: v for k, v in finetune.items()
                                 if k not in ("seed", "device", "progress", "schedule", "log_every")}}
        if self.family == "training":  # no schedule: the sparsity follows the method's own options
            unused = ("seed", "device", "progress", "schedule", "log_every", "allocation", "schedule_options", "s_i")
            return {"finetune": {k: v for k, v in ctx.finetune.to_dict().items() if k not in unused},
                    "dst": {"name": self.name, **ctx.options(self).to_dict()}}
        extra = {}
        if self.options is not None:
            extra["learner"] = {"name": self.name, **ctx.options(self).to_dict()}
        if self.config_overrides:
            extra["config_overrides"] = dict(self.config_overrides)
        return extra or None


METHODS: dict[str, Method] = {}
FAMILY_PHASE = {"dense": 0, "allocation": 1, "learner": 5, "training": 6}  # cheap rows first in a sweep


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered already")
    if method.family not in FAMILY_PHASE:
        raise ValueError(f"unknown family {method.family!r}; one of {', '.join(FAMILY_PHASE)}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    return METHODS[name]


def methods_of(family: str) -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.family == family)


def variants(method: Method, tiers=TIERS, schedules=(), starts=("dense",)) -> list[tuple[str, str, str]]:
    """(tier, schedule, start) of every row ``method`` contributes at one target and seed."""
    if method.family == "dense":
        return [(NONE, NONE, "dense")]
    if method.family == "allocation":
        return [(tier, NONE, "dense") for tier in tiers]
    if method.family == "learner":
        return [("c", NONE, "dense")]
    names = schedules if method.scheduled else [NONE]
    return [("finetune" if start == "dense" else "scratch", name, start) for start in starts for name in names]


def phase(method: Method, tier: str) -> int:
    if method.family == "allocation":
        return 4 if tier == "c" else (2 if method.name == "pot" else 1)
    if method.name == "fcpts":
        return 3
    return FAMILY_PHASE[method.family]


def _pot_settings(pot: PotConfig | None) -> dict:
    pot = pot or PotConfig(progress=False)
    return {k: v for k, v in pot.to_dict().items() if k not in ("seed", "device", "progress")}


# ----- the families' run functions ---------------------------------------------------------------------------
def _run_dense(ctx: RunContext, spec: RunSpec):
    return ctx.model, dict(steps=0, wall_time=0.0)


def _run_allocation(ctx: RunContext, spec: RunSpec):
    cfg = ctx.config_for(spec.seed)
    calib = ctx.bundle(spec.seed).calib
    if spec.method != "pot" or spec.tier == "c":
        return prune_baseline(ctx.model, calib, spec.target, spec.method, spec.tier, cfg)
    key = (spec.target, spec.seed)
    if spec.tier == "b" and key in ctx.memo:  # POT itself is tier a; tier b only adds BN re-estimation
        pruned, info = ctx.memo.pop(key)
        tic = time.perf_counter()
        recalibrate_bn(pruned, calib, batches=None, batch_size=cfg.batch_size, seed=cfg.seed, device=ctx.device)
        return pruned.eval(), {**info, "tier": "b", "wall_time": info["wall_time"] + time.perf_counter() - tic}
    base = ctx.pot or PotConfig(device=cfg.device, progress=False)
    pcfg = PotConfig(**{**base.to_dict(), "seed": spec.seed, "progress": False})
    pruned, info = prune_baseline(ctx.model, calib, spec.target, "pot", spec.tier, cfg, pcfg)
    if spec.tier == "a":
        ctx.memo[key] = copy.deepcopy((pruned, info))
    return pruned, info


def _learner_runner(make: Callable[[Any], Any]):
    def run(ctx: RunContext, spec: RunSpec):
        method = METHODS[spec.method]
        cfg = ctx.config_for(spec.seed)
        if method.config_overrides:
            cfg = cfg.replace(**method.config_overrides)
        result = learn_allocation(ctx.model, ctx.bundle(spec.seed).calib, spec.target, cfg, make(ctx.options(method)))
        drift = max(abs(result.allocation[n] - s) for n, s in result.init_allocation.items())
        return result.model, dict(steps=cfg.steps, wall_time=result.wall_time, allocation_drift=drift,
                                  sparsity_before_projection=result.sparsity_before_projection,
                                  allocation=result.allocation, trajectory=[h["sparsity"] for h in result.history],
                                  result=result, selected=result.selection["chosen"] if result.selection else NONE)
    return run


def _training_start(ctx: RunContext, spec: RunSpec) -> nn.Module:
    """The model a training-aware row starts from: the dense model, or a fresh one (``scratch``)."""
    if ctx.train_split is None:
        raise ValueError(f"{spec.method} trains with labels: give the runner a labelled train split")
    if spec.start == "dense":
        return ctx.model
    if ctx.scratch_model is not None:
        return ctx.scratch_model(spec.seed)
    from .models import build_model

    torch.manual_seed(spec.seed)
    return build_model(ctx.config.model, weights=None, num_classes=ctx.bundle(spec.seed).num_classes)


def _run_training(ctx: RunContext, spec: RunSpec):
    initial = _training_start(ctx, spec)
    allocation = spec.method.split("-", 1)[1]
    ft = (ctx.finetune or PruneTrainConfig()).replace(schedule=spec.schedule, seed=spec.seed, allocation=allocation,
                                                      device=ctx.config.device, progress=False)
    result = prune_train(initial, ctx.train_split, spec.target, ft)
    return result.model, dict(steps=result.steps, wall_time=result.wall_time)


def _run_dst(ctx: RunContext, spec: RunSpec):
    """DST-EE / RigL with the schedule rows' training settings (steps, optimiser, lr) and the method's options."""
    initial = _training_start(ctx, spec)
    options = ctx.options(METHODS[spec.method])
    if spec.method == "rigl" and options.c != 0:
        raise ValueError(f"rigl is DST-EE with c = 0; got c = {options.c} (use the method dst-ee for c > 0)")
    ft = (ctx.finetune or PruneTrainConfig()).replace(seed=spec.seed, device=ctx.config.device, progress=ctx.progress)
    result, coverage = dst_train(initial, ctx.train_split, spec.target, ft, options, start=spec.start)
    return result.model, dict(steps=result.steps, wall_time=result.wall_time, coverage=coverage)


# ----- the registrations -------------------------------------------------------------------------------------
register(Method("dense", "dense", _run_dense, "the unpruned model"))
_ALLOCATION_TEXT = {
    "uniform": "every layer at S*", "global": "one |w| threshold over all layers", "erk": "Erdős–Rényi-kernel densities",
    "lamp": "LAMP scores, one global cut", "pot": "POT-style: |w|/‖W‖ cut, weight correction, layer-wise calibration",
}
for _name in ALLOCATION_METHODS:
    register(Method(_name, "allocation", _run_allocation, _ALLOCATION_TEXT[_name]))
register(Method("fcpts", "learner", _learner_runner(lambda options: FcptsLearner()),
                "FCPTS: learned thresholds, the bridge and the controllable objective (the Config's recipe)"))
register(Method("fcpts-kde", "learner", _learner_runner(lambda options: FcptsLearner()),
                "FCPTS with the Gaussian-KDE bridge", config_overrides={"bridge": "kde"}))
register(Method("fcpts-ste", "learner", _learner_runner(lambda options: FcptsLearner()),
                "FCPTS with a straight-through gradient from L_rec", config_overrides={"gradient": "ste"}))
register(Method("str", "learner", _learner_runner(StrLearner),
                "STR: soft thresholds, no budget term (ERK start)", options=StrConfig))
register(Method("probmask", "learner", _learner_runner(ProbMaskLearner),
                "ProbMask: per-weight keep probabilities, projected budget", options=ProbMaskConfig))
register(Method("dsa", "learner", _learner_runner(DsaLearner),
                "DSA-style (unstructured, parameter budget): keep ratios with an ADMM budget", options=DsaConfig))
register(Method("prune_train-uniform", "training", _run_training,
                "training-aware pruning with labels, per-layer (uniform) magnitude masks"))
register(Method("prune_train-global", "training", _run_training,
                "training-aware pruning with labels, global magnitude masks"))
register(Method("dst-ee", "training", _run_dst, "DST-EE: constant non-zeros at ERK, drop by magnitude, grow by "
                "|gradient| + an exploration bonus", options=DstConfig, scheduled=False))
register(Method("rigl", "training", _run_dst, "RigL: DST-EE with no exploration bonus (c = 0)",
                options=lambda: DstConfig(c=0.0), scheduled=False))

LEARNERS = ("str", "probmask", "dsa")  # the allocation learners FCPTS argues against (method.md §7)
DISPLAY_NAMES = {"fcpts": "FCPTS", "str": "STR", "probmask": "ProbMask",
                 "dsa": "DSA-style (unstructured, parameter budget)"}
