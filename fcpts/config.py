"""One typed block of defaults for the whole kit.

`Config()` is the released FCPTS recipe on ImageNet (method.md §2.4): ResNet-50, 1,024 calibration images,
batch 64, 1,600 SGD steps, histogram bridge, `abs` objective, no gradient from the reconstruction loss to the
thresholds. `Config.quick_cpu()` is the embedded default: the bundled digits at 32 px on a CPU in minutes.
The same object feeds `fcpts.sparsify`, the `fcpts` command (YAML files under `params/`) and the notebooks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .options import Options, field_values

_CHOICES = {
    "parameterization": ("sigmoid", "scaled"),
    "gradient": ("released", "ste"),
    "bridge": ("histogram", "kde"),
    "kde_bandwidth": ("silverman", "scott"),
    "objective": ("abs", "pow2"),
    "init": ("erk", "uniform"),
    "init_rounding": ("released", "exact"),
    "lr_schedule": ("released", "ramp_then_cosine"),
    "bn_mode": ("train", "eval"),
    "precision": ("fp32", "bf16"),
}


def default_num_workers(most: int = 4) -> int:
    """DataLoader worker processes by default: ``most``, but never more than the cores this process may use
    (more only adds processes that wait for a core, and torch warns about it on every loader)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(most, cores))


@dataclass
class Config(Options):
    """The FCPTS recipe, the model and the data: what ``fcpts.sparsify``, the ``fcpts`` command (YAML files under
    ``params/``), the comparison runner (``fcpts.runner``) and the notebooks run. ``Config()`` is the released
    ImageNet recipe, ``Config.quick_cpu()`` the embedded digits default; ``from_dict``/``from_yaml`` accept a
    ``preset`` key (released, quick_cpu, kit, kit_cpu) that the other keys override."""

    # --- what is pruned (qualified module names, fnmatch patterns) ---
    include: tuple[str, ...] = ("*",)  # Conv2d/Linear layers whose name matches one of these may be pruned
    exclude: tuple[str, ...] = ()  # ...unless it matches one of these; excluded layers stay dense but count in N
    # --- learnable thresholds ---
    parameterization: str = "sigmoid"  # released: t = sigmoid(s) in absolute units; "scaled": t = softplus(s)*rms(w0)
    gradient: str = "released"  # released: mask sends no gradient; "ste": straight-through from L_rec to t and w
    ste_window: float = 0.5  # ste: width of the linear ramp around t, in units of the layer's rms(w0)
    # --- bridge: threshold -> sparsity, differentiable ---
    bridge: str = "histogram"  # released: 100 equal bins over [min w, max w]; "kde": Gaussian kernel
    histogram_bins: int = 100  # histogram bridge: equal-width bins between the layer's smallest and largest weight
    histogram_max_samples: int = 0  # 0: every weight (released); n > 0: every k-th weight, <= n per layer (faster)
    kde_bandwidth: str = "silverman"  # kde bridge: bandwidth rule, "silverman" or "scott"
    kde_max_samples: int = 65536  # fixed seeded subsample of at most this many weights per layer
    # --- controllable objective L_c ---
    objective: str = "abs"  # |S - S*| (released) or "pow2": (S - S*)^2
    lam: float = 1.0  # weight of L_c
    # --- initialisation ---
    init: str = "erk"  # thresholds start at the ERK allocation (or "uniform")
    erk_gamma: float = 1.0  # ERK exponent: layer density ∝ (Σ dims / Π dims)^γ (1: RigL's ERK, as released)
    init_rounding: str = "released"  # released: floor(S*·n_l) zeros per layer in the ERK budget, k = int(S_l·n_l),
    #   min|w| when k = 0, the threshold's logit in float32 floored at -30; "exact": largest-remainder counts that add
    #   up to round(S*·N) (the kit's earlier start). Either way a layer ERK makes dense keeps every weight.
    # --- reconstruction ---
    temperature: float = 4.0  # KD temperature; loss scaled by T^2
    block_mse_weight: float = 0.0  # > 0 adds MSE on block outputs (residual blocks by default)
    block_patterns: tuple[str, ...] = ()  # which modules' outputs feed the MSE; empty = residual blocks
    # --- optimisation (SGD, cosine with linear warm-up: fcpts.sparsify.lr_at) ---
    steps: int = 1600  # optimiser steps of the reconstruction loop
    batch_size: int = 64  # calibration images per step
    base_lr: float = 0.04  # per 256 images: lr = base_lr * batch_size / 256
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 3e-4  # on weights, biases and BN; never on thresholds
    warmup_steps: int = -1  # -1: one pass over the calibration set
    lr_schedule: str = "released"  # released: timm's CosineLRScheduler stepped after each optimizer step (steps 0
    #   and 1 at lr 0, the ramp one step late, the cosine over the whole run); "ramp_then_cosine": the kit's earlier
    #   schedule (ramp base·(i+1)/W, then a cosine over the remaining steps)
    grad_clip: float = 0.0  # > 0: clip the global gradient norm (the released code does not)
    bn_mode: str = "train"  # released: student and teacher in train mode; "eval": frozen BN + re-estimation
    bn_recalibration_batches: int = 16  # batches for BN re-estimation after "eval"-mode training
    bn_recalibrate: bool = False  # kit: re-estimate BN statistics at the end after "train"-mode training too
    cache_teacher: bool = False  # reuse teacher logits across passes (only exact when inputs repeat)
    # --- exact control ---
    project: bool = True  # final projection to exactly round(S* N) zeros
    # --- kit safeguard (not in the released code): choose between candidates without labels ---
    select_holdout: int = 0  # > 0: keep this many calibration images out of training; at the end return whichever
    #   of {reconstructed model, start allocation + BN re-estimation} agrees with the dense model's top-1 on more
    #   of them (a tie goes to the start)
    # --- run ---
    target: float = 0.8  # global sparsity S* over all Conv2d/Linear weights
    seed: int = 0  # one seed: calibration sample, augmentations, KDE subsample, initialisation (ImageNet/CIFAR: also the calib split)
    device: str = "auto"  # "auto": cuda when available, else cpu
    precision: str = "fp32"  # "bf16": the loop's teacher and student forward passes under bfloat16 autocast;
    #   thresholds, masks, the bridge and both losses stay float32 (fp32: as released)
    layer_log_every: int = 50  # record per-layer sparsities every k steps; on a GPU the step history is read back
    #   (and checked for a non-finite loss) then too, not every step
    progress: bool = True  # progress bars
    # --- model and data (the CLI and notebooks) ---
    model: str = "resnet50"  # a torchvision classification model (fcpts.models.build_model)
    weights: str = "IMAGENET1K_V1"  # torchvision weights enum member, or "" for none
    dataset: str = "imagenet"  # "digits" (embedded), "imagenet", "cifar10", "cifar100", "folder"
    data_root: str = ""  # ImageNet root; "" -> $IMAGENET_ROOT, else data/imagenet
    image_size: int = 224  # input side in pixels (digits: 8x8 upsampled to it)
    calib_size: int = 1024  # calibration images, a seeded sample of the train split
    calib_augment: bool = True  # RandomResizedCrop + flip (ImageNet) / random shifts (digits)
    eval_batch_size: int = 256  # batch size of test-set evaluation
    num_workers: int = field(default_factory=lambda: default_num_workers())  # data-loading processes
    out_dir: str = "results"  # not read by the kit's code: `fcpts run --out` names the run's folder

    def __post_init__(self) -> None:
        for name in ("include", "exclude", "block_patterns"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            setattr(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Config.{name} = {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        check_target(self.target)
        for name in ("steps", "batch_size", "histogram_bins", "kde_max_samples", "calib_size", "layer_log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Config.{name} must be at least 1, got {getattr(self, name)}")
        if self.histogram_max_samples < 0:
            raise ValueError("Config.histogram_max_samples must be >= 0 (0: every weight, as the released code)")
        if self.lam < 0 or self.temperature <= 0 or self.base_lr < 0 or self.ste_window <= 0:
            raise ValueError("Config: lam and base_lr must be >= 0, temperature and ste_window > 0")
        if self.block_mse_weight > 0 and self.cache_teacher:  # the cache keeps logits, not the teacher's blocks
            raise ValueError("Config.block_mse_weight > 0 needs the teacher's block outputs at every step; "
                             "set cache_teacher=False")

    # ----- presets -----
    @classmethod
    def released(cls, **overrides: Any) -> "Config":
        """The authors' released recipe (method.md §2.4): the defaults."""
        return cls(**overrides)

    @classmethod
    def kit(cls, **overrides: Any) -> "Config":
        """The released recipe with the kit's recipe options on top (``KIT_RECIPE``)."""
        return cls(**{**KIT_RECIPE, **overrides})

    @classmethod
    def kit_cpu(cls, **overrides: Any) -> "Config":
        """The embedded default with the kit's recipe options on top (``KIT_RECIPE``)."""
        return cls.quick_cpu(**{**KIT_RECIPE, **overrides})

    def with_recipe(self, recipe: str) -> "Config":
        """This Config with the options of ``recipe``: "released" (the authors' settings: the fields as they
        are, the kit's options off) or "kit" (``KIT_RECIPE`` on top)."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        off = {k: getattr(Config.quick_cpu(), k) for k in KIT_RECIPE}
        return self.replace(**(KIT_RECIPE if recipe == "kit" else off))

    @classmethod
    def quick_cpu(cls, **overrides: Any) -> "Config":
        """The embedded default: the kit's ResNet-50 on digits at 32 px, minutes on a 2-core CPU."""
        quick = dict(
            dataset="digits", weights="", image_size=32, calib_size=512, steps=150, batch_size=64,
            base_lr=0.04, eval_batch_size=256, num_workers=0, layer_log_every=10,
        )
        quick.update(overrides)
        return cls(**quick)

    # ----- I/O -----
    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    @classmethod
    def from_dict(cls, values: dict[str, Any], preset: str = "") -> "Config":
        """The ``preset`` (a key of ``values``, else the argument, else "released") with ``values`` on top."""
        values = dict(values)
        preset = values.pop("preset", preset) or "released"
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        return getattr(cls, preset)().replace(**field_values(cls, values))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        # a notebook params file (params/*.yaml) is a Config file too: its notebook-only keys are ignored
        return cls.from_dict({k: v for k, v in values.items() if k not in NOTEBOOK_ONLY})

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# The kit recipe (issue #14; benchmarks/results/recipe_ablation.md): options of the kit, not of the released
# code: a label-free guard against ending below FCPTS's own start. The released recipe stays the default.
KIT_RECIPE: dict[str, Any] = dict(select_holdout=64)
RECIPES = ("released", "kit")
PRESETS = ("released", "quick_cpu", "kit", "kit_cpu")

NOTEBOOK_ONLY = ("max_new_runs", "results_dir", "figures_dir", "extends")  # params/*.yaml keys that are not Config fields


def check_target(target: float) -> float:
    """A global sparsity must lie strictly between 0 and 1."""
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target sparsity must be a number in (0, 1), got {target!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"target sparsity must lie strictly between 0 and 1 (e.g. 0.8 for 80 %), got {target}")
    return value


def target_key(value: Any) -> str:
    """A target sparsity as tables compare it: six decimals (0.8 and 0.80000000001 are one target)."""
    return f"{float(value):.6f}"


def at_target(values, target: float):
    """Which of ``values`` (a pandas Series of targets, or one number) are the target ``target``."""
    if hasattr(values, "map"):
        return values.map(target_key) == target_key(target)
    return target_key(values) == target_key(target)
