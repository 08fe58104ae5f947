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
| ``learner`` | ``fcpts fcpts-kde fcpts-ste str probmask dsa`` (+ ``str-adapted probmask-adapted dsa-adapted``) | ``c`` (the same reconstruction budget) | ``-`` |
| ``training`` | ``prune_train-uniform prune_train-global`` | ``finetune`` / ``scratch`` | a schedule name |
| ``training`` | ``dst-ee rigl`` (dynamic sparse training, no schedule) | ``finetune`` / ``scratch`` | ``-`` |

Every ``run`` returns ``(pruned model in eval mode, info)``; info may hold steps, wall_time,
sparsity_before_projection, allocation_drift, allocation ({layer: sparsity}) and trajectory (the global
sparsity of every step, learners only) and coverage (the fraction of weights ever active after every mask
update, dynamic sparse training). Adding a method is one ``register(Method(...))`` call.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .baselines import TIERS, prune_baseline
from .calibration import recalibrate_bn, split_holdout
from .config import Config
from .dsa import DsaConfig, DsaLearner
from .dst import DstConfig, dst_train
from .guards import check_final_outputs
from .learners import ProbMaskConfig, ProbMaskLearner, StrConfig, StrLearner
from .pot import PotConfig
from .prune_train import PruneTrainConfig, prune_train
from .learner import FcptsLearner
from .selection import teacher_agreement
from .sparsify import learn_allocation

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
    """One registered method: how it runs, and everything callers need to know about it (label, colour, role,
    which rows it has), so that no caller spells a method's name."""

    name: str
    family: str  # "dense", "allocation", "learner", "training"
    run: Callable[[RunContext, RunSpec], tuple[nn.Module, dict]]
    description: str
    label: str = ""  # how figures and tables name it (default: the name)
    short: str = ""  # the label in running text, e.g. a verdict line (default: the label)
    color: str = "#7f7f7f"
    role: str = "competitor"  # "reference" (the dense model), "proposed" (FCPTS and its variants), "competitor"
    variant_of: str = ""  # a variant of another method (its rows are not in a default sweep)
    options: Callable[[], Any] | None = None  # default options dataclass (learners), part of the row's fingerprint
    config_overrides: dict = field(default_factory=dict)  # Config fields this method changes (FCPTS variants)
    scheduled: bool = True  # training family: one row per sparsity schedule (False: dynamic sparse training)
    mask_allocation: str = ""  # training family: the masks' allocation ("uniform" per layer or "global")
    tier_b_reuses_a: bool = False  # allocation: tier b re-estimates BN on tier a's model (POT: a costly tier a)
    extra_settings: Callable[[RunContext, "RunSpec"], dict | None] | None = None  # more of what changes a row
    check_options: Callable[[Any], None] | None = None  # raise ValueError for options the method cannot run
    label_free: "LabelFreeGrid | None" = None  # learners: one option chosen without labels on held-out images

    @property
    def display(self) -> str:
        return self.label or self.name

    def reconstructs(self, tier: str) -> bool:
        """Whether this method's row in ``tier`` runs the shared reconstruction loop (``learn_allocation``)."""
        return self.family == "learner" or (self.family == "allocation" and tier == "c")

    def settings(self, ctx: RunContext, spec: RunSpec) -> dict | None:
        """What changes this row's numbers beyond the Config and the dense model (None: nothing)."""
        if self.extra_settings is not None:
            extra = self.extra_settings(ctx, spec)
            if extra is not None:
                return extra
        if self.family == "training" and self.scheduled:
            finetune = {**ctx.finetune.to_dict(), "allocation": self.mask_allocation}
            return {"finetune": {k: v for k, v in finetune.items()
                                 if k not in ("seed", "device", "progress", "schedule", "log_every")}}
        if self.family == "training":  # no schedule: the sparsity follows the method's own options
            unused = ("seed", "device", "progress", "schedule", "log_every", "allocation", "schedule_options", "s_i")
            options = hashed_options(ctx.options(self))
            return {"finetune": {k: v for k, v in ctx.finetune.to_dict().items() if k not in unused},
                    "dst": {"name": self.name, **options}}
        extra = {}
        if self.options is not None:
            extra["learner"] = {"name": self.name, **hashed_options(ctx.options(self))}
        if self.label_free is not None:
            extra["label_free"] = dataclasses.asdict(self.label_free)
        if self.config_overrides:
            extra["config_overrides"] = dict(self.config_overrides)
        return extra or None


# Options added to a class after rows were committed, with the values those rows were computed with.
_ADDED_OPTIONS = {
    "DstConfig": {"ties": "topk"},
    "StrConfig": {"threshold_lr_scale": 1.0},
    "ProbMaskConfig": {"score_start": "constant", "score_start_slope": 6.0},
    "DsaConfig": {"train_masks": "bernoulli"},
}


def hashed_options(options) -> dict:
    """The options that fingerprint a row: all fields, except that a class's added options are left out when every
    one of them has the value the committed rows were computed with (so those rows keep their keys, and any
    other setting, e.g. ProbMask's slope with an ``erk_ranks`` start, is hashed in full)."""
    values = options.to_dict()
    added = _ADDED_OPTIONS.get(type(options).__name__, {})
    if all(values.get(k) == v for k, v in added.items()):
        return {k: v for k, v in values.items() if k not in added}
    return values

METHODS: dict[str, Method] = {}
FAMILY_PHASE = {"dense": 0, "allocation": 1, "learner": 5, "training": 6}  # cheap rows first in a sweep
ROLES = ("reference", "proposed", "competitor")


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered already")
    if method.family not in FAMILY_PHASE:
        raise ValueError(f"unknown family {method.family!r}; one of {', '.join(FAMILY_PHASE)}")
    if method.role not in ROLES:
        raise ValueError(f"unknown role {method.role!r}; one of {', '.join(ROLES)}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    return METHODS[name]


def names(family: str | None = None, role: str | None = None, default: bool = False) -> list[str]:
    """Registered method names of ``family`` and/or ``role``, in registration order; ``default=True`` leaves
    out variants (``variant_of``)."""
    return [n for n, m in METHODS.items() if (family is None or m.family == family)
            and (role is None or m.role == role) and not (default and m.variant_of)]


def _member(method_names, chosen: set[str]):
    """Which of ``method_names`` (a name, or a pandas Series of names) are in ``chosen``."""
    return method_names in chosen if isinstance(method_names, str) else method_names.isin(chosen)


def is_role(method_names, role: str):
    """Which of ``method_names`` (a name, or a pandas Series of names) have ``role``: how tables filter rows."""
    return _member(method_names, set(names(role=role)))


def is_family(method_names, family: str):
    """Which of ``method_names`` (a name, or a pandas Series of names) belong to ``family``."""
    return _member(method_names, set(names(family=family)))


def is_variant(method_names):
    """Which of ``method_names`` are registered variants of another method (``variant_of``: adapted learners,
    FCPTS's estimator variants): the tables of the faithful methods leave them out."""
    return _member(method_names, {n for n, m in METHODS.items() if m.variant_of})


def variant_names(of: str) -> list[str]:
    """The registered variants of method ``of`` (e.g. ``str`` -> ``["str-adapted"]``)."""
    return [n for n, m in METHODS.items() if m.variant_of == of]


def is_scheduled(method_names):
    """Which of ``method_names`` are training-aware methods with one row per sparsity schedule."""
    return _member(method_names, {n for n, m in METHODS.items() if m.family == "training" and m.scheduled})


def training_method(allocation: str) -> Method:
    """The scheduled training-aware method whose masks use ``allocation`` ("uniform" or "global")."""
    for method in METHODS.values():
        if method.family == "training" and method.scheduled and method.mask_allocation == allocation:
            return method
    raise ValueError(f"no training-aware method with {allocation!r} masks; registered: "
                     f"{', '.join(m.mask_allocation for m in METHODS.values() if m.mask_allocation)}")


def label(name: str, short: bool = False) -> str:
    """How figures and tables name a method (``short``: in running text); its name when it is not registered."""
    if name not in METHODS:
        return name
    return (METHODS[name].short or METHODS[name].display) if short else METHODS[name].display


def color(name: str) -> str | None:
    """A method's colour (None when it is not registered)."""
    return METHODS[name].color if name in METHODS else None


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
        return 4 if tier == "c" else (2 if method.tier_b_reuses_a else 1)
    if method.role == "proposed" and not method.variant_of:
        return 3
    return FAMILY_PHASE[method.family]


def _pot_settings(ctx: RunContext, spec: RunSpec) -> dict | None:
    if spec.tier == "c":
        return None
    pot = ctx.pot or PotConfig(progress=False)
    return {"pot": {k: v for k, v in pot.to_dict().items() if k not in ("seed", "device", "progress")}}


# ----- the families' run functions ---------------------------------------------------------------------------
def _run_dense(ctx: RunContext, spec: RunSpec):
    return ctx.model, dict(steps=0, wall_time=0.0)


def _run_allocation(ctx: RunContext, spec: RunSpec):
    cfg = ctx.config_for(spec.seed)
    calib = ctx.bundle(spec.seed).calib
    if not METHODS[spec.method].tier_b_reuses_a or spec.tier == "c":
        return prune_baseline(ctx.model, calib, spec.target, spec.method, spec.tier, cfg)
    key = (spec.target, spec.seed)
    if spec.tier == "b" and key in ctx.memo:  # POT itself is tier a; tier b only adds BN re-estimation
        pruned, info = ctx.memo.pop(key)
        tic = time.perf_counter()
        recalibrate_bn(pruned, calib, batches=None, batch_size=cfg.batch_size, seed=cfg.seed, device=ctx.device)
        check_final_outputs(pruned.eval(), calib, f"{spec.method} tier b", spec.target, info["steps"],
                            batch_size=cfg.batch_size, hint="check the dense model and the calibration inputs")
        return pruned.eval(), {**info, "tier": "b", "wall_time": info["wall_time"] + time.perf_counter() - tic}
    base = ctx.pot or PotConfig(device=cfg.device, progress=False)
    pcfg = PotConfig(**{**base.to_dict(), "seed": spec.seed, "progress": False})
    pruned, info = prune_baseline(ctx.model, calib, spec.target, spec.method, spec.tier, cfg, pcfg)
    if spec.tier == "a":
        ctx.memo[key] = copy.deepcopy((pruned, info))
    return pruned, info


@dataclass(frozen=True)
class LabelFreeGrid:
    """How an adapted learner picks its options without labels. Each candidate learns on the calibration images
    minus ``holdout`` seeded ones (the same images the kit recipe holds out), and the candidate whose KD loss
    against the dense model on the held-out images is lowest wins. ``choices`` is searched one option at a time
    (coordinate search): every value of the first option with the others at their defaults, then every value of
    the next with the first at its winner, and so on; a setting already run is not run again."""

    choices: tuple[tuple[str, tuple], ...]
    holdout: int = 64

    def candidates(self) -> int:
        """How many runs one row costs at most."""
        return 1 + sum(len(values) - 1 for _, values in self.choices)


def _learner_info(result, steps: int) -> dict:
    drift = max(abs(result.allocation[n] - s) for n, s in result.init_allocation.items())
    return dict(steps=steps, wall_time=result.wall_time, allocation_drift=drift,
                sparsity_before_projection=result.sparsity_before_projection, allocation=result.allocation,
                trajectory=[h["sparsity"] for h in result.history], result=result,
                selected=result.selection["chosen"] if result.selection else NONE)


def _learner_runner(make: Callable[[Any], Any]):
    def run(ctx: RunContext, spec: RunSpec):
        method = METHODS[spec.method]
        cfg = ctx.config_for(spec.seed)
        if method.config_overrides:
            cfg = cfg.replace(**method.config_overrides)
        calib = ctx.bundle(spec.seed).calib
        grid = method.label_free
        if grid is None:
            result = learn_allocation(ctx.model, calib, spec.target, cfg, make(ctx.options(method)))
            return result.model, _learner_info(result, cfg.steps)
        cfg = cfg.replace(select_holdout=0)  # the grid holds its images out itself, once
        train, held = split_holdout(calib, grid.holdout, cfg.seed)
        chosen, runs, wall = ctx.options(method), {}, 0.0

        def score(options) -> float:
            nonlocal wall
            key = tuple(getattr(options, f) for f, _ in grid.choices)
            if key not in runs:
                result = learn_allocation(ctx.model, train, spec.target, cfg, make(options))
                wall += result.wall_time
                kd = teacher_agreement(result.model, ctx.model, held.split(cfg.batch_size), cfg.temperature,
                                       ctx.device)["kd"]
                runs[key] = (kd, result)
            return runs[key][0]

        for field_name, values in grid.choices:
            options = [chosen.replace(**{field_name: v}) for v in values]
            chosen = min(options, key=score)  # a tie keeps the earlier value
        key = tuple(getattr(chosen, f) for f, _ in grid.choices)
        info = _learner_info(runs[key][1], cfg.steps)
        selected = " ".join(f"{f}={getattr(chosen, f):g}" for f, _ in grid.choices)
        held_out = {" ".join(f"{f}={v:g}" for (f, _), v in zip(grid.choices, k)): kd for k, (kd, _) in runs.items()}
        # the cost of every candidate is the row's cost
        return runs[key][1].model, {**info, "wall_time": wall, "selected": selected, "holdout_kd": held_out}
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
    allocation = METHODS[spec.method].mask_allocation
    ft = (ctx.finetune or PruneTrainConfig()).replace(schedule=spec.schedule, seed=spec.seed, allocation=allocation,
                                                      device=ctx.config.device, progress=False)
    result = prune_train(initial, ctx.train_split, spec.target, ft)
    return result.model, dict(steps=result.steps, wall_time=result.wall_time)


def _run_dst(ctx: RunContext, spec: RunSpec):
    """DST-EE / RigL with the schedule rows' training settings (steps, optimiser, lr) and the method's options."""
    initial = _training_start(ctx, spec)
    method = METHODS[spec.method]
    options = ctx.options(method)
    if method.check_options is not None:
        method.check_options(options)
    ft = (ctx.finetune or PruneTrainConfig()).replace(seed=spec.seed, device=ctx.config.device, progress=ctx.progress)
    result, coverage = dst_train(initial, ctx.train_split, spec.target, ft, options, start=spec.start)
    return result.model, dict(steps=result.steps, wall_time=result.wall_time, coverage=coverage)


# ----- the registrations -------------------------------------------------------------------------------------
def _check_rigl(options: DstConfig) -> None:
    if options.c != 0:
        raise ValueError(f"rigl is DST-EE with c = 0; got c = {options.c} (use the method dst-ee for c > 0)")


def _fcpts_variant(name: str, label: str, color: str, description: str, variant_of: str = "fcpts", **overrides):
    register(Method(name, "learner", _learner_runner(lambda options: FcptsLearner()), description, label=label,
                    color=color, role="proposed", variant_of=variant_of, config_overrides=overrides))


register(Method("dense", "dense", _run_dense, "the unpruned model", label="dense", color="#333333", role="reference"))
for _name, _label, _color, _text in (
        ("uniform", "uniform", "#1f77b4", "every layer at S*"),
        ("global", "global magnitude", "#2ca02c", "one |w| threshold over all layers"),
        ("erk", "ERK", "#9467bd", "Erdős–Rényi-kernel densities"),
        ("lamp", "LAMP", "#8c564b", "LAMP scores, one global cut")):
    register(Method(_name, "allocation", _run_allocation, _text, label=_label, color=_color))
register(Method("pot", "allocation", _run_allocation,
                "POT-style: |w|/‖W‖ cut, weight correction, layer-wise calibration", label="POT-style",
                color="#e377c2", tier_b_reuses_a=True, extra_settings=_pot_settings))
_fcpts_variant("fcpts", "FCPTS", "#d62728",
               "FCPTS: learned thresholds, the bridge and the controllable objective (the Config's recipe)",
               variant_of="")
_fcpts_variant("fcpts-kde", "FCPTS (KDE bridge)", "#ff9896", "FCPTS with the Gaussian-KDE bridge", bridge="kde")
_fcpts_variant("fcpts-ste", "FCPTS (STE)", "#ff7f0e", "FCPTS with a straight-through gradient from L_rec",
               gradient="ste")
register(Method("str", "learner", _learner_runner(StrLearner), "STR: soft thresholds, no budget term (ERK start)",
                label="STR", color="#1f77b4", options=StrConfig))
register(Method("probmask", "learner", _learner_runner(ProbMaskLearner),
                "ProbMask: per-weight keep probabilities, projected budget", label="ProbMask", color="#2ca02c",
                options=ProbMaskConfig))
register(Method("dsa", "learner", _learner_runner(DsaLearner),
                "DSA-style (unstructured, parameter budget): keep ratios with an ADMM budget",
                label="DSA-style (unstructured, parameter budget)", short="DSA-style", color="#e377c2",
                options=DsaConfig))
# The learners' fair post-training adaptations (options beside the faithful defaults; method.md §7): each picks its
# learning rate (DSA-style: β₂, then its learning rate) without labels on 64 held-out calibration images.
register(Method("str-adapted", "learner", _learner_runner(StrLearner),
                "STR with its thresholds' learning rate chosen without labels", label="STR (adapted)",
                color="#aec7e8", variant_of="str", options=StrConfig,
                label_free=LabelFreeGrid((("threshold_lr_scale", (0.3, 1.0, 3.0)),))))
register(Method("probmask-adapted", "learner", _learner_runner(ProbMaskLearner),
                "ProbMask started from ERK's magnitude ranks, the budget held from the start, its score lr chosen "
                "without labels", label="ProbMask (adapted)", color="#98df8a", variant_of="probmask",
                options=lambda: ProbMaskConfig(score_start="erk_ranks", ramp_start=0.0, ramp_end=0.01),
                label_free=LabelFreeGrid((("score_lr", (2e-3, 6e-3, 2e-2)),))))
register(Method("dsa-adapted", "learner", _learner_runner(DsaLearner),
                "DSA-style with deterministic top-|w| masks at its keep ratios (straight-through), β₂ and then "
                "its keep-ratio lr chosen without labels", label="DSA-style (adapted)", short="DSA-style (adapted)", color="#f7b6d2",
                variant_of="dsa", options=lambda: DsaConfig(train_masks="topk"),
                label_free=LabelFreeGrid((("beta2", (1.0, 4.0, 16.0)), ("alpha_lr", (3e-3, 1e-2, 3e-2))))))
for _allocation, _color in (("uniform", "#17becf"), ("global", "#bcbd22")):
    register(Method(f"prune_train-{_allocation}", "training", _run_training,
                    f"training-aware pruning with labels, {'per-layer (uniform)' if _allocation == 'uniform' else 'global'}"
                    " magnitude masks", label=f"prune + train ({_allocation})", color=_color,
                    mask_allocation=_allocation))
register(Method("dst-ee", "training", _run_dst, "DST-EE: constant non-zeros at ERK, drop by magnitude, grow by "
                "|gradient| + an exploration bonus", label="DST-EE", color="#2ca02c", options=DstConfig,
                scheduled=False))
register(Method("rigl", "training", _run_dst, "RigL: DST-EE with no exploration bonus (c = 0)",
                label="RigL (DST-EE, c = 0)", short="RigL", color="#8c564b", options=lambda: DstConfig(c=0.0), scheduled=False,
                check_options=_check_rigl))
