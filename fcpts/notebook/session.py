"""A notebook's set-up: parameters -> Config, data, paths from the repository root; timing and environment.

Relative paths are resolved from the repository root (found from the location of the ``fcpts`` package,
never the working directory), so a notebook behaves the same from JupyterLab, papermill and nbval.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ..config import Config
from ..data import REPO_ROOT, CalibrationSubset, DataBundle, load_data
from ..models import EMBEDDED_DATASETS, resolve_dense_model

SHARED_PARAMETERS = ("mode", "data_root", "target", "seed")  # every notebook's parameters cell starts with these
REFERENCE_DIR = "data"  # the committed result files
PARAMS_DIR = REPO_ROOT / "params"
NOT_MODES = ("jupyterlab", "paper")  # params/ files that are not notebook modes: JupyterLab's settings, fcpts reproduce's grid
CONFIG_PARAMETERS = ("dataset", "data_root", "model", "weights", "image_size", "calib_size", "steps", "batch_size",
                     "target", "seed", "progress")  # the settings of a mode that `make_config` takes


def repo_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, else relative to the repository root (not the current directory)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def make_config(dataset: str = "digits", data_root: str = "", model: str = "resnet50", weights: str = "",
                image_size: int = 32, calib_size: int = 512, steps: int = 150, batch_size: int = 64,
                target: float = 0.8, seed: int = 0, progress: bool = False, **overrides: Any) -> Config:
    """The one Config of a notebook run: the embedded preset for the bundled datasets (digits, Fashion-MNIST),
    the released recipe otherwise, with the notebook's parameters on top. ``progress``: bars on the long steps (dense training, FCPTS,
    comparison rows); off under papermill, which would store every update."""
    values = dict(dataset=dataset, data_root=data_root, model=model, weights=weights, image_size=int(image_size),
                  calib_size=int(calib_size), steps=int(steps), batch_size=int(batch_size), target=float(target),
                  seed=int(seed), progress=bool(progress))
    values.update(overrides)
    return Config.quick_cpu(**values) if dataset in EMBEDDED_DATASETS else Config.released(**values)


def run_tag(config: Config) -> str:
    """Names result files and figures: ``resnet50_digits``, ``resnet50_imagenet``, ..."""
    return f"{config.model}_{config.dataset}"


def mode_settings(mode: str) -> dict[str, Any]:
    """The settings of a notebook mode: ``params/<mode>.yaml`` (``extends: <other mode>`` takes that file's
    settings first)."""
    path = PARAMS_DIR / f"{mode}.yaml"
    if not path.exists() or mode in NOT_MODES:
        known = ", ".join(sorted(p.stem for p in PARAMS_DIR.glob("*.yaml") if p.stem not in NOT_MODES))
        raise ValueError(f"unknown mode {mode!r}: there is no params/{mode}.yaml; choose one of {known}")
    values = yaml.safe_load(path.read_text()) or {}
    base = values.pop("extends", None)
    return {**mode_settings(base), **values} if base else values


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


@dataclass(frozen=True)
class Session:
    """What a notebook run writes and may compute: its ``mode``, where ``results`` and ``figures`` go
    (absolute), the ``tag`` naming its files, and ``max_new_runs``, the runner rows it may compute now."""

    mode: str
    results: Path
    figures: Path
    tag: str
    max_new_runs: int


def settings(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook's settings: those of ``params/<namespace["mode"]>.yaml`` (default quick), each overridden by a
    value of the same kind in ``namespace`` (the notebook's ``parameters`` cell, papermill's ``-p``)."""
    values = mode_settings(namespace.get("mode", "quick"))
    values.update({k: namespace[k] for k in values if k in namespace and _same_kind(namespace[k], values[k])})
    return values


def session(namespace: Mapping[str, Any], values: dict[str, Any] | None = None) -> Session:
    """Where a notebook run writes, without loading data (the figure notebook); ``values``: its ``settings`` when
    the caller has them already."""
    values = settings(namespace) if values is None else values
    return Session(mode=namespace.get("mode", "quick"),
                   results=repo_path(values.get("results_dir", "results/notebooks")),
                   figures=repo_path(values.get("figures_dir", "results/notebooks/figures")),
                   tag=f"{values['model']}_{values['dataset']}", max_new_runs=int(values.get("max_new_runs", 0)))


def setup(namespace: Mapping[str, Any]) -> tuple[Config, DataBundle, Session]:
    """A notebook's set-up cell in one call: the Config, the data, and the session::

        from fcpts import notebook as nb
        config, data, run = nb.setup(globals())

    ``namespace["mode"]`` (default ``"quick"``) names the settings file ``params/<mode>.yaml``: quick (CPU,
    minutes, results to the git-ignored results/notebooks/), ci (the smallest, for tests), full (the paper's
    ImageNet recipe), refresh (quick, writing the committed data/ and figures/: ``make notebooks``). Any
    setting of that file that the namespace also holds with a value of the same kind (the notebook's
    ``parameters`` cell, papermill's ``-p``) overrides it (``settings``). Silences tqdm's "IProgress not found"
    warning, builds the Config (``make_config``), loads the data (``fcpts.data.load_data``: a missing or
    malformed ImageNet stops here with the loader's message), and prints ``describe`` and ``environment``.
    """
    warnings.filterwarnings("ignore", message="IProgress not found")  # without ipywidgets tqdm falls back to text
    values = settings(namespace)
    config = make_config(**{name: values[name] for name in CONFIG_PARAMETERS if name in values})
    data = load_data(config)  # checks the dataset first: a missing or malformed ImageNet stops here
    print(describe(config, data))
    print("environment:", environment())
    return config, data, session(namespace, values)


def load_model(config: Config, num_classes: int, progress: bool | None = None) -> tuple[torch.nn.Module, dict]:
    """The dense model to sparsify (``fcpts.models.resolve_dense_model``, as ``fcpts run`` and the sweep runner);
    a bar while the embedded model trains, once, when ``config.progress``."""
    return resolve_dense_model(config, num_classes, config.progress if progress is None else progress)


def fresh_calibration(data: DataBundle) -> Any:
    """The calibration set with its augmentation counters reset: every run that gets a fresh copy sees
    exactly the same images *and* the same augmentations, whatever ran before it in the session."""
    calib = data.calib
    if isinstance(calib, CalibrationSubset):
        return CalibrationSubset(calib.base, calib.indices, calib.seed, transform=calib.transform,
                                 augment=calib.augment)
    return calib


def describe(config: Config, data: DataBundle) -> str:
    return (f"{config.model} on {data.name}: {len(data.calib)} calibration images, {len(data.test)} test "
            f"images, {data.num_classes} classes, {config.image_size} px; target S* = {config.target:.0%}, "
            f"{config.steps} steps at batch {config.batch_size} (lr {config.lr:g})")


def environment() -> dict[str, str]:
    """What ran the notebook: Python, torch, threads, device."""
    return dict(python=sys.version.split()[0], torch=torch.__version__, threads=str(torch.get_num_threads()),
                cuda=str(torch.cuda.is_available()))


def result_path(results_dir: str | os.PathLike[str], name: str) -> Path:
    return repo_path(results_dir) / name


def readable_path(results_dir: str | os.PathLike[str], name: str) -> Path:
    """``<results_dir>/<name>`` when this run wrote it, else the committed ``data/<name>`` when that exists,
    so that a student's run (writing to results/notebooks/) still draws what the kit ships."""
    path = result_path(results_dir, name)
    reference = result_path(REFERENCE_DIR, name)
    return reference if not path.exists() and reference.exists() else path


class Timer:
    """``with Timer() as t: ...; t.seconds`` -- wall-clock time of a block."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def duration(seconds: float) -> str:
    """'45 s', '3.2 min' or '1.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"

