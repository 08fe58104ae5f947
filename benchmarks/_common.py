"""Helpers shared by the benchmark scripts: result files, machine description, robust timing."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch

from fcpts.files import write_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), cuda=torch.cuda.is_available())
    info["loadavg"] = loadavg()  # a shared machine inflates wall times: record how busy it was
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def loadavg() -> list[str] | None:
    """The 1/5/15-minute load averages (Linux), or None."""
    try:
        with open("/proc/loadavg") as handle:
            return handle.read().split()[:3]
    except OSError:
        return None


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically (a crash never leaves half a result file)."""
    return write_atomic(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (torch.Tensor,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def envelope(benchmark: str, settings: dict[str, Any], results: Any, **extra: Any) -> dict[str, Any]:
    """The common frame of every result file."""
    return dict(benchmark=benchmark, created=time.strftime("%Y-%m-%dT%H:%M:%S"), machine=machine(),
                settings=settings, results=results, **extra)


def median_times(fns: dict[str, Callable[[], Any]], repeats: int = 10, warmup: int = 2,
                 sync: Callable[[], None] | None = None) -> dict[str, dict[str, float]]:
    """Median wall time of each callable, measured *interleaved* (a, b, c, a, b, c, ...).

    Interleaving spreads any load from other processes over every variant alike, so the ratios between
    variants stay meaningful on a shared machine even when the absolute times are inflated.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            tic = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - tic)
    return {name: summarize_samples(values) for name, values in samples.items()}


def summarize_samples(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    return dict(median=statistics.median(ordered), min=ordered[0], max=ordered[-1],
                q25=ordered[max(0, (n - 1) // 4)], q75=ordered[min(n - 1, (3 * (n - 1) + 3) // 4)], n=n)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def embedded_checkpoint_path() -> Path:
    from fcpts.models import DenseRecipe, default_checkpoint_dir

    return default_checkpoint_dir() / DenseRecipe().checkpoint_name()


def load_dense_model(allow_train: bool = False) -> torch.nn.Module:
    """The cached embedded dense ResNet-50; trains it only when ``allow_train``."""
    from fcpts.models import load_embedded_model

    if not embedded_checkpoint_path().exists() and not allow_train:
        raise SystemExit(f"error: the embedded dense checkpoint {embedded_checkpoint_path()} is not cached; build it "
                         "first (`python -m fcpts train-dense`) or pass --allow-train")
    model, _ = load_embedded_model(progress=False)
    return model


def dense_resnet50(source: str = "auto") -> tuple[torch.nn.Module, str]:
    """The embedded dense ResNet-50 (10 classes) and where it came from.

    ``source``: "embedded" (the cached checkpoint; trains it if missing, minutes), "random" (weights=None; the
    same architecture and hence the same step cost), "auto" (the checkpoint when a valid one is cached, else
    random; never trains, never renames a checkpoint). Timings do not depend on the weights' values.
    """
    from fcpts.models import DenseRecipe, _verify, build_model, load_embedded_model

    if source == "embedded":
        model, info = load_embedded_model(progress=False)
        return model.eval(), f"embedded checkpoint {Path(info['path']).name}"
    if source not in ("auto", "random"):
        raise ValueError(f"unknown model source {source!r}; use auto, embedded or random")
    model = build_model("resnet50", weights=None, num_classes=10)
    path = embedded_checkpoint_path()
    if source == "auto" and path.exists():
        ckpt, problem = _verify(path, DenseRecipe(), model, min_accuracy=0.0)  # read-only check
        if ckpt is not None:
            return model.eval(), f"embedded checkpoint {path.name}"
    torch.manual_seed(0)
    return build_model("resnet50", weights=None, num_classes=10).eval(), "random init (weights=None)"
