"""Glue for the tutorial notebooks only: parameters -> Config, paths from the repository root, result files.

The notebooks under ``notebooks/`` share one block of parameters (``params/ci.yaml``, ``quick.yaml`` and
``full.yaml`` set only these, so one file serves every notebook without papermill warnings)::

    dataset, data_root, model, weights, image_size, calib_size, steps, batch_size, target, seed,
    max_new_runs, results_dir, figures_dir, progress

Their defaults are the quick CPU mode, and a student's run writes only to the git-ignored ``results/notebooks/``;
``make notebooks`` (params/quick.yaml) is the deliberate refresh of the committed ``data/`` and ``figures/``.
Reading falls back to the committed ``data/`` for any result file the run has not written (``readable_path``).

Relative paths are resolved from the repository root (found from the location of the ``fcpts`` package,
never the working directory), so a notebook behaves the same from JupyterLab, papermill and nbval.
Nothing here is part of the method; the method lives in the rest of the package.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from .config import Config
from .data import REPO_ROOT, CalibrationSubset, DataBundle, load_data

SHARED_PARAMETERS = ("dataset", "data_root", "model", "weights", "image_size", "calib_size", "steps",
                     "batch_size", "target", "seed", "max_new_runs", "results_dir", "figures_dir", "progress")
REFERENCE_DIR = "data"  # the committed result files


def repo_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, else relative to the repository root (not the current directory)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def make_config(dataset: str = "digits", data_root: str = "", model: str = "resnet50", weights: str = "",
                image_size: int = 32, calib_size: int = 512, steps: int = 150, batch_size: int = 64,
                target: float = 0.8, seed: int = 0, progress: bool = False, **overrides: Any) -> Config:
    """The one Config of a notebook run: the embedded preset for digits, the released recipe otherwise,
    with the notebook's parameters on top. ``progress``: bars on the long steps (dense training, FCPTS,
    comparison rows); off under papermill, which would store every update."""
    values = dict(dataset=dataset, data_root=data_root, model=model, weights=weights, image_size=int(image_size),
                  calib_size=int(calib_size), steps=int(steps), batch_size=int(batch_size), target=float(target),
                  seed=int(seed), progress=bool(progress))
    values.update(overrides)
    return Config.quick_cpu(**values) if dataset == "digits" else Config.released(**values)


def run_tag(config: Config) -> str:
    """Names result files and figures: ``resnet50_digits``, ``resnet50_imagenet``, ..."""
    return f"{config.model}_{config.dataset}"


def load_model(config: Config, num_classes: int, progress: bool | None = None) -> tuple[torch.nn.Module, dict]:
    """The dense model to sparsify (see ``fcpts.models.load_model_for``); a bar while the embedded model
    trains, once, when ``config.progress``."""
    from .models import load_model_for

    return load_model_for(config, num_classes, config.progress if progress is None else progress)


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


# ----------------------------------------------------------------------------------------------------------
# result files: small tidy CSV/JSON files that notebook 04 redraws every figure from
# ----------------------------------------------------------------------------------------------------------
def result_path(results_dir: str, name: str) -> Path:
    return repo_path(results_dir) / name


def readable_path(results_dir: str, name: str) -> Path:
    """``<results_dir>/<name>`` when this run wrote it, else the committed ``data/<name>`` when that exists,
    so that a student's run (writing to results/notebooks/) still draws what the kit ships."""
    path = result_path(results_dir, name)
    reference = result_path(REFERENCE_DIR, name)
    return reference if not path.exists() and reference.exists() else path


def save_table(table: pd.DataFrame, results_dir: str, name: str) -> Path:
    """Write ``table`` as ``<results_dir>/<name>`` (CSV), creating the folder; returns the path."""
    path = result_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g")
    return path


def save_json(obj: Any, results_dir: str, name: str) -> Path:
    path = result_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    return path


def history_frame(result: Any, label: str) -> pd.DataFrame:
    """A SparsifyResult's per-step history as a DataFrame with a ``run`` column."""
    frame = pd.DataFrame(result.history)
    frame.insert(0, "run", label)
    return frame


def layer_history_frame(result: Any, label: str) -> pd.DataFrame:
    """Per-layer sparsities logged every ``layer_log_every`` steps, long format (run, step, layer, sparsity)."""
    frame = pd.DataFrame(result.layer_history).melt(id_vars="step", var_name="layer", value_name="sparsity")
    frame.insert(0, "run", label)
    return frame


# ----------------------------------------------------------------------------------------------------------
# the comparison table of notebook 03: resume the runner's CSV, computing at most `max_new_runs` rows
# ----------------------------------------------------------------------------------------------------------
def working_table(results_dir: str, dataset: str, reference_dir: str = "data", kind: str = "comparison") -> Path:
    """``<results_dir>/<kind>_<dataset>.csv``; when it does not exist yet but the committed reference
    ``data/<kind>_<dataset>.csv`` does, the reference (and its side tables) is copied there first so its rows
    count as done. ``kind``: "comparison" (allocations, FCPTS, schedules) or "learners" (FCPTS and the learners)."""
    from .runner import SIDE_KINDS, side_path

    path = result_path(results_dir, f"{kind}_{dataset}.csv")
    reference = result_path(reference_dir, f"{kind}_{dataset}.csv")
    if not path.exists() and reference.exists() and reference.resolve() != path.resolve():
        path.parent.mkdir(parents=True, exist_ok=True)
        for source, dest in [(reference, path)] + [(side_path(reference, k), side_path(path, k)) for k in SIDE_KINDS]:
            if source.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
    return path


def comparison_grid(targets: Iterable[float], methods: Iterable[str], tiers: Iterable[str],
                    schedules: Iterable[str], fcpts: bool = True, dense: bool = True) -> list[dict]:
    """The runner's rows one by one, cheapest first: dense, then per target the masks-only and BN tiers,
    FCPTS, the frozen-threshold tier c, the training-aware schedules and dynamic sparse training."""
    from .registry import METHODS

    methods = list(methods)
    sparse_training = [m for m in methods if METHODS[m].family == "training" and not METHODS[m].scheduled]
    methods = [m for m in methods if m not in sparse_training]
    jobs: list[dict] = []
    none = dict(methods=[], tiers=[], schedules=[], fcpts=False, dense=False)
    if dense:
        jobs.append(dict(none, targets=[min(targets)], dense=True))
    for target in targets:
        for tier in [t for t in tiers if t != "c"]:
            jobs += [dict(none, targets=[target], methods=[m], tiers=[tier]) for m in methods]
        if fcpts:
            jobs.append(dict(none, targets=[target], fcpts=True))
        if "c" in tiers:
            jobs += [dict(none, targets=[target], methods=[m], tiers=["c"]) for m in methods]
        jobs += [dict(none, targets=[target], schedules=[s]) for s in schedules]
        jobs += [dict(none, targets=[target], methods=[m]) for m in sparse_training]
    return jobs


def resume_comparison(config: Config, csv_path: Path, targets: Iterable[float], max_new_runs: int = -1,
                      **runner_kwargs: Any) -> tuple[pd.DataFrame, int]:
    """Complete the runner's table at ``csv_path`` for ``targets``; returns ``(table, rows computed)``.

    ``max_new_runs < 0``: one call of the runner, which computes every missing row. Otherwise the grid is
    walked one row at a time, cheapest first, and the walk stops after ``max_new_runs`` new rows (rows
    already in the table cost only a look-up).
    """
    from .baselines import ALLOCATION_METHODS, TIERS
    from .runner import SCHEDULE_NAMES, read_table, run_comparison

    targets = [float(t) for t in targets]
    methods = runner_kwargs.pop("methods", ALLOCATION_METHODS)
    tiers = runner_kwargs.pop("tiers", TIERS)
    schedules = runner_kwargs.pop("schedules", SCHEDULE_NAMES)
    before = len(read_table(csv_path))
    if max_new_runs < 0:
        table = run_comparison(config, methods, targets, (config.seed,), csv_path, tiers=tiers,
                               schedules=schedules, progress=config.progress, **runner_kwargs)
        return table, len(table) - before
    computed = 0
    for job in comparison_grid(targets, methods, tiers, schedules):
        if computed >= max_new_runs:
            break
        n = len(read_table(csv_path))
        run_comparison(config, job["methods"], job["targets"], (config.seed,), csv_path, tiers=job["tiers"],
                       schedules=job["schedules"], fcpts=job["fcpts"], dense=job["dense"], progress=config.progress,
                       **runner_kwargs)
        computed += len(read_table(csv_path)) - n
    return read_table(csv_path), computed


def read_learners(results_dir: str, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """The learners' table (current rows), their per-step trajectories and final allocations, or None."""
    from .runner import read_side, read_table

    path = readable_path(results_dir, f"learners_{dataset}.csv")
    if not path.exists():
        return None
    table = current_rows(read_table(path))
    keys = ["method", "target", "seed", "config_hash"]
    current = table[keys].astype(str).apply(tuple, axis=1)

    def side(kind: str) -> pd.DataFrame:
        rows = read_side(path, kind)
        return rows[rows[keys].astype(str).apply(tuple, axis=1).isin(set(current))] if len(rows) else rows

    return table, side("trajectories"), side("allocations")


def read_dst(results_dir: str, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, Path] | None:
    """The dynamic-sparse-training table ``dst_<dataset>.csv`` (current rows: DST-EE, RigL, one-cycle, FCPTS),
    its coverage side table and its path (for the per-image outcomes), or None."""
    from .runner import read_side, read_table

    path = readable_path(results_dir, f"dst_{dataset}.csv")
    if not path.exists():
        return None
    return current_rows(read_table(path)), read_side(path, "coverage"), path


def training_summary(table: pd.DataFrame, coverage: pd.DataFrame | None = None,
                     targets: Iterable[float] | None = None, outcomes_from: str | os.PathLike | None = None
                     ) -> pd.DataFrame:
    """Top-1 per method, start and target over seeds (mean, std, n); one-cycle rows are named by their schedule;
    with ``coverage``, the mean final coverage of the dynamic-sparse-training rows; with ``outcomes_from`` (the
    runner's table path), a 95 % interval over seeds and test images (``low``, ``high``; NaN where a row was
    computed before per-image outcomes were kept)."""
    from .runner import outcome_matrix
    from .stats import bootstrap_interval

    rows = table[table["method"] != "dense"].copy()
    rows["key_method"] = rows["method"]
    scheduled = rows["method"].str.startswith("prune_train")
    rows.loc[scheduled, "method"] = rows.loc[scheduled, "schedule"]
    if targets is not None:
        rows = rows[rows["target"].round(6).isin([round(float(t), 6) for t in targets])]
    grouped = rows.groupby(["method", "tier", "target"], sort=False)
    out = grouped["top1"].agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    if outcomes_from is not None:
        bounds = []
        for _, group in grouped:
            try:
                interval = bootstrap_interval(outcome_matrix(outcomes_from, group.assign(method=group["key_method"])))
                bounds.append((interval.low, interval.high))
            except KeyError:
                bounds.append((float("nan"), float("nan")))
        out["low"], out["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    order = {m: k for k, m in enumerate(("fcpts", "one_cycle", "dst-ee", "rigl"))}
    out = out.sort_values(["target", "method", "tier"], key=lambda c: c.map(order).fillna(9) if c.name == "method"
                          else c, kind="stable").reset_index(drop=True)
    if coverage is not None and len(coverage):
        last = coverage.sort_values("update").groupby(["method", "tier", "target", "seed"]).coverage.last()
        out = out.merge(last.groupby(["method", "tier", "target"]).mean().rename("coverage").reset_index(),
                        on=["method", "tier", "target"], how="left")
    return out


def paired_verdicts(table: pd.DataFrame, path: str | os.PathLike, pairs: Iterable[tuple[tuple[str, str],
                    tuple[str, str]]], targets: Iterable[float]) -> list[str]:
    """For each target and each pair ((method, tier), (method, tier)) -- one-cycle named by its schedule -- the
    paired verdict over the seeds both have and the same test images (``fcpts.stats``): "A beats B by x points
    [low, high]" only when the interval excludes 0, else "within noise". Pairs without outcomes are skipped."""
    from .runner import paired_over_seeds
    from .stats import verdict

    names = {"fcpts": "FCPTS", "one_cycle": "one-cycle", "dst-ee": "DST-EE", "rigl": "RigL"}
    starts = {"c": "", "finetune": " (from dense)", "scratch": " (scratch)"}
    rows = table.assign(name=table["method"].where(~table["method"].str.startswith("prune_train"), table["schedule"]))
    out = []
    for target in targets:
        at = rows[(rows["target"] - target).abs() < 1e-9]
        for a, b in pairs:
            ra, rb = (at[(at["name"] == m) & (at["tier"] == t)] for m, t in (a, b))
            found = paired_over_seeds(path, ra, path, rb)
            if found is None:
                continue
            label_a, label_b = names.get(a[0], a[0]) + starts[a[1]], names.get(b[0], b[0]) + starts[b[1]]
            out.append(f"{target:.0%}, {len(found[1])} seed(s): " + verdict(label_a, label_b, found[0]))
    return out


RECIPE_DIR = "benchmarks/results/recipe"  # benchmarks/recipe.py: one runner table per recipe variant
RECIPE_START = ("erk", "b")  # FCPTS's own start, ERK + BN re-estimation, in the "released" table


def _recipe_rows(path: Path, method: str, tier: str, target: float) -> pd.DataFrame:
    from .runner import read_table

    table = read_table(path)
    if table.empty:
        return table
    return table[(table.method == method) & (table.tier == tier) & ((table.target - target).abs() < 1e-9)].sort_values("seed")


def recipe_table(folder: str | os.PathLike = RECIPE_DIR, variants: Iterable[str] = ("released", "kit"),
                 targets: Iterable[float] = (0.5, 0.7, 0.8, 0.9, 0.95)) -> pd.DataFrame:
    """Per recipe variant (``<folder>/<variant>.csv``, FCPTS rows) and target: top-1 (%) with its 95 % interval over
    seeds and test images, and the paired difference in points (``vs_start``, ``vs_released``: estimate, low,
    high, seeds, verdict + better / − worse / ≈ within noise) to FCPTS's start (ERK + BN re-estimation) and to
    the released recipe, over the seeds both ran. The start itself is the variant "start"."""
    from .runner import outcome_matrix, paired_over_seeds
    from .stats import bootstrap_interval

    folder = repo_path(folder)
    base = folder / "released.csv"
    records = []
    for variant in ["start", *variants]:
        path = base if variant == "start" else folder / f"{variant}.csv"
        if not path.exists():
            continue
        for target in targets:
            rows = _recipe_rows(path, *(RECIPE_START if variant == "start" else ("fcpts", "c")), target)
            rows = rows.drop_duplicates("seed", keep="last")  # a row recomputed later replaces the older one
            if rows.empty:
                continue
            top1 = bootstrap_interval(outcome_matrix(path, rows))
            selected = rows["selected"].fillna("-") if "selected" in rows else pd.Series(["-"] * len(rows))
            record = dict(variant=variant, target=target, seeds=len(rows), top1=100 * top1.estimate,
                          top1_low=100 * top1.low, top1_high=100 * top1.high, wall_time=rows.wall_time.mean(),
                          start_chosen=int((selected == "start").sum()))
            others = {"start": _recipe_rows(base, *RECIPE_START, target), "released": _recipe_rows(base, "fcpts", "c", target)}
            for name, other in others.items():
                found = None if variant in ("start", name) else paired_over_seeds(path, rows, base, other)
                if found is None:
                    continue
                d, seeds = found
                record.update({f"vs_{name}": 100 * d.estimate, f"vs_{name}_low": 100 * d.low,
                               f"vs_{name}_high": 100 * d.high, f"vs_{name}_seeds": len(seeds),
                               f"vs_{name}_verdict": "+" if d.low > 0 else ("−" if d.high < 0 else "≈")})
            records.append(record)
    return pd.DataFrame(records)


def scored(model: torch.nn.Module, data: DataBundle, config: Config) -> dict[str, Any]:
    """Test top-1 of ``model`` with its 95 % bootstrap interval over the test images (one run: the images are
    the only thing resampled), and the per-image outcomes (``correct``) for paired comparisons."""
    from .evaluate import evaluate
    from .stats import bootstrap_interval

    metrics = evaluate(model, data.test, batch_size=config.eval_batch_size, progress=False, per_image=True)
    interval = bootstrap_interval(np.asarray(metrics["correct"])[None])
    return dict(top1=metrics["top1"], low=interval.low, high=interval.high, correct=np.asarray(metrics["correct"]))


def verdict_line(a: str, b: str, scores: dict[str, dict]) -> str:
    """The paired verdict of run ``a`` against run ``b`` on the same test images (``scored`` results)."""
    from .stats import paired_difference, verdict

    return verdict(a, b, paired_difference(scores[a]["correct"][None], scores[b]["correct"][None]))


def learner_summary(table: pd.DataFrame, targets: Iterable[float] | None = None,
                    outcomes_from: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per learner and target, over seeds: sparsity before the projection and top-1 after it (mean, std, n),
    in percent. "Reaches the target" and "accurate at the target" are separate columns. With ``outcomes_from``
    (the runner's table path), the top-1's 95 % interval over seeds and test images (NaN where the rows were
    computed before per-image outcomes were kept)."""
    from .registry import METHODS
    from .runner import outcome_matrix
    from .stats import bootstrap_interval

    rows = table[table["method"].map(lambda m: m in METHODS and METHODS[m].family == "learner")]
    if targets is not None:
        rows = rows[rows["target"].round(6).isin([round(float(t), 6) for t in targets])]
    rows = rows.assign(gap=(rows["sparsity_before_projection"] - rows["target"]).abs())
    grouped = rows.groupby(["method", "target"], sort=False)
    out = pd.DataFrame({
        "seeds": grouped["seed"].nunique(),
        "S before projection (%)": 100 * grouped["sparsity_before_projection"].mean(),
        "± (before)": 100 * grouped["sparsity_before_projection"].std(ddof=1),
        "gap to S* before (points)": 100 * grouped["gap"].mean(),
        "top-1 after projection (%)": 100 * grouped["top1"].mean(),
        "± (top-1)": 100 * grouped["top1"].std(ddof=1),
    })
    if outcomes_from is not None:
        bounds = {}
        for key, group in grouped:
            try:
                interval = bootstrap_interval(outcome_matrix(outcomes_from, group))
                bounds[key] = (100 * interval.low, 100 * interval.high)
            except KeyError:
                bounds[key] = (np.nan, np.nan)
        out["top-1 low (%)"] = [bounds[k][0] for k in out.index]
        out["top-1 high (%)"] = [bounds[k][1] for k in out.index]
    return out.reset_index()


def current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, tier, schedule, target, seed): the last one written. The runner appends, so a
    row recomputed under new settings (another config_hash) replaces the older one in the figures."""
    if table.empty:
        return table
    key = ["method", "tier", "schedule", "target", "seed"]
    return table.drop_duplicates(key, keep="last").reset_index(drop=True)


class Timer:
    """``with Timer() as t: ...; t.seconds`` -- wall-clock time of a block."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def time_fcpts_step(model: torch.nn.Module, data: DataBundle, config: Config,
                    probe: tuple[int, int] = (2, 5)) -> tuple[float, float]:
    """(seconds per FCPTS step, seconds of set-up + projection per run) on this machine, from two short
    ``sparsify`` runs of ``probe`` steps after an untimed one-step warm-up: their difference leaves the fixed
    costs out."""
    from .sparsify import sparsify

    sparsify(model, fresh_calibration(data), config.target, config.replace(steps=1, progress=False))
    times = []
    for steps in probe:
        with Timer() as timer:
            sparsify(model, fresh_calibration(data), config.target, config.replace(steps=steps, progress=False))
        times.append(timer.seconds)
    per_step = max((times[1] - times[0]) / (probe[1] - probe[0]), times[1] / probe[1] / 4)
    return per_step, max(times[1] - probe[1] * per_step, 0.0)


def duration(seconds: float) -> str:
    """'45 s', '3.2 min' or '1.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def refresh_git_after_save(model: Any = None, os_path: str | None = None, contents_manager: Any = None,
                           **kwargs: Any) -> None:
    """JupyterLab post-save hook (``make lab`` sets it): keep ``git status`` honest for saved notebooks.

    Through the nbstripout filter (``make setup``) a tracked notebook saved with new outputs only is unchanged,
    yet git's index still holds the old file size, and git takes a size change for a modification without
    running the filter: ``git status`` says modified (and ``git pull`` refuses) while ``git diff`` is empty.
    When the filtered file equals the index, re-adding it stages nothing and refreshes that entry."""
    import subprocess

    if not os_path or not os_path.endswith(".ipynb"):
        return
    folder = os.path.dirname(os_path) or "."

    def git(*args: str) -> int:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True).returncode

    try:  # never fail a save: no git, or not a checkout, leaves the index alone
        if git("ls-files", "--error-unmatch", "--", os_path) == 0 and git("diff", "--quiet", "--", os_path) == 0:
            git("add", "--", os_path)
    except OSError:
        return


def environment() -> dict[str, str]:
    """What ran the notebook: Python, torch, threads, device."""
    return dict(python=sys.version.split()[0], torch=torch.__version__, threads=str(torch.get_num_threads()),
                cuda=str(torch.cuda.is_available()))


# ----------------------------------------------------------------------------------------------------------
# every figure of the notebooks, drawn from result files alone (notebooks 01-03 call `draw` right after
# saving their results, notebook 04 calls it for every kind: both go through the same code)
# ----------------------------------------------------------------------------------------------------------
PUBLISHED_NUMBERS = "data/published_numbers.csv"


def _read(results_dir: str, name: str) -> pd.DataFrame | None:
    path = readable_path(results_dir, name)
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else None


def read_comparison(results_dir: str, dataset: str) -> pd.DataFrame | None:
    from .runner import read_table

    path = readable_path(results_dir, f"comparison_{dataset}.csv")
    return with_intervals(current_rows(read_table(path)), path) if path.exists() else None


def with_intervals(table: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """``table`` (rows of the runner's table at ``path``) with ``low`` and ``high``: each row's 95 % bootstrap
    interval over the test images, from its per-image outcomes (NaN for rows computed before they were kept)."""
    from .runner import SIDE_KEY, read_side
    from .stats import bootstrap_interval, unpack_outcomes

    side = read_side(path, "outcomes")
    found = {tuple(str(r[k]) for k in SIDE_KEY): r for r in side.to_dict("records")} if len(side) else {}
    bounds = []
    for row in table.to_dict("records"):
        hit = found.get(tuple(str(row[k]) for k in SIDE_KEY))
        if hit is None:
            bounds.append((np.nan, np.nan))
            continue
        interval = bootstrap_interval(unpack_outcomes(hit["correct"], int(hit["n"]))[None])
        bounds.append((interval.low, interval.high))
    return table.assign(low=[b[0] for b in bounds], high=[b[1] for b in bounds])


def interval_pivot(table: pd.DataFrame, index: Iterable[str] = ("method", "tier")) -> pd.DataFrame:
    """Top-1 (%) per ``index`` × target as text: "98.1 [96.4, 99.4]" where the row has its 95 % interval
    (``with_intervals``), "98.1" where it was computed before per-image outcomes were kept."""
    low = table["low"] if "low" in table else pd.Series(np.nan, index=table.index)
    high = table["high"] if "high" in table else pd.Series(np.nan, index=table.index)
    cells = [f"{100 * t:.1f}" + ("" if pd.isna(lo) else f" [{100 * lo:.1f}, {100 * hi:.1f}]")
             for t, lo, hi in zip(table["top1"], low, high)]
    return table.assign(cell=cells).pivot_table(index=list(index), columns="target", values="cell", aggfunc="last")


def _dense_top1(table: pd.DataFrame) -> float | None:
    dense = table[table["method"] == "dense"]
    return float(dense["top1"].iloc[-1]) if len(dense) else None


def _draw_allocation_matters(results_dir, tag, dataset, target):
    table = _read(results_dir, f"allocation_matters_{tag}.csv")
    if table is None:
        return None
    from .plotting import plot_accuracy_bars

    s = float(table.loc[table["method"] != "dense", "target"].iloc[0])
    return plot_accuracy_bars(table, title=f"Same global sparsity ({s:.0%}), different allocations: top-1")


def _draw_allocations(results_dir, tag, dataset, target):
    table = _read(results_dir, f"allocations_{tag}.csv")
    if table is None:
        return None
    from .plotting import plot_allocation

    methods = [c for c in table.columns if c not in ("layer", "numel", "target")]
    allocations = {m: dict(zip(table["layer"], table[m])) for m in methods}
    return plot_allocation(allocations, title=f"Per-layer sparsity of three allocations at "
                                              f"{float(table['target'].iloc[0]):.0%} global sparsity",
                           numel=dict(zip(table["layer"], table["numel"])))


def _draw_bridge(results_dir, tag, dataset, target):
    table = _read(results_dir, f"bridge_{tag}.csv")
    meta = readable_path(results_dir, f"bridge_{tag}.json")
    if table is None or not meta.exists():
        return None
    from .plotting import plot_bridge

    info = json.loads(meta.read_text())
    return plot_bridge(table, layer=info["layer"], threshold=info["threshold"])


def _draw_objective(results_dir, tag, dataset, target):
    table = _read(results_dir, f"objective_{tag}.csv")
    if table is None:
        return None
    from .plotting import plot_convergence

    model = table["model"].iloc[0]
    return plot_convergence(table, float(table["target"].iloc[0]),
                            title=f"L_c alone moves the thresholds ({model}, no reconstruction)")


def _fcpts_runs(results_dir, tag):
    history = _read(results_dir, f"fcpts_history_{tag}.csv")
    summary = _read(results_dir, f"fcpts_summary_{tag}.csv")
    return history, summary


def _draw_fcpts_allocation(results_dir, tag, dataset, target):
    table = _read(results_dir, f"fcpts_allocation_{tag}.csv")
    if table is None:
        return None
    from .plotting import plot_allocation

    methods = [c for c in table.columns if c not in ("layer", "numel")]  # FCPTS runs, ERK, uniform
    allocations = {m: dict(zip(table["layer"], table[m])) for m in methods}
    _, summary = _fcpts_runs(results_dir, tag)
    s = _fcpts_target(summary, target)
    return plot_allocation(allocations, title=f"Learned per-layer sparsity at {s:.0%} ({tag.replace('_', ' on ')})",
                           numel=dict(zip(table["layer"], table["numel"])))


def _fcpts_target(summary: pd.DataFrame | None, default: float) -> float:
    if summary is None:
        return default
    runs = summary[summary["run"].str.startswith("FCPTS")]
    return float(runs["target"].iloc[0]) if len(runs) else default


def _draw_fcpts_convergence(results_dir, tag, dataset, target):
    history, summary = _fcpts_runs(results_dir, tag)
    if history is None or summary is None:
        return None
    from .plotting import plot_convergence

    return plot_convergence(history, _fcpts_target(summary, target), title="FCPTS: global sparsity over the steps")


def _draw_fcpts_losses(results_dir, tag, dataset, target):
    history, _ = _fcpts_runs(results_dir, tag)
    if history is None:
        return None
    from .plotting import plot_losses

    return plot_losses(history, title=f"FCPTS losses ({tag.replace('_', ' on ')})")


def _draw_accuracy_vs_sparsity(results_dir, tag, dataset, target):
    table = read_comparison(results_dir, dataset)
    if table is None or table.empty:
        return None
    from .plotting import plot_accuracy_vs_sparsity

    tiers = [t for t in ("a", "b", "c") if (table["tier"] == t).any()]
    if not tiers:
        return None
    return plot_accuracy_vs_sparsity(table, tiers, _dense_top1(table),
                                     title=f"Allocations in three tiers against FCPTS ({dataset})")


def _draw_schedules(results_dir, tag, dataset, target):
    table = read_comparison(results_dir, dataset)
    if table is None or not table["method"].str.startswith("prune_train").any():
        return None
    from .plotting import plot_schedules

    return plot_schedules(table, _dense_top1(table))


def _draw_accuracy_vs_time(results_dir, tag, dataset, target):
    table = read_comparison(results_dir, dataset)
    if table is None or table.empty:
        return None
    from .plotting import plot_accuracy_vs_time

    present = sorted(set(table.loc[table["method"] != "dense", "target"].round(6)))
    targets = [t for t in present if abs(t - target) < 1e-9 or abs(t - 0.9) < 1e-9] or present[-1:]
    if not targets:
        return None
    return plot_accuracy_vs_time(table[table["method"] != "dense"], targets)


LEARNER_TARGETS = (0.8, 0.9)  # the targets the learner figures show


def _learner_side(results_dir, dataset, index: int):
    """(side table, the targets to draw) of the learners' table: index 1 trajectories, 2 allocations."""
    found = read_learners(results_dir, dataset)
    if found is None or found[index].empty:
        return None, []
    side = found[index]
    present = sorted(set(side["target"].round(6)))
    return side, [t for t in LEARNER_TARGETS if t in present] or present[-2:]


def _draw_learner_trajectories(results_dir, tag, dataset, target):
    from .plotting import plot_learner_trajectories

    side, targets = _learner_side(results_dir, dataset, 1)
    return None if side is None else plot_learner_trajectories(side, targets)


def _draw_learner_allocations(results_dir, tag, dataset, target):
    from .plotting import plot_learner_allocations

    side, targets = _learner_side(results_dir, dataset, 2)
    return None if side is None else plot_learner_allocations(side, targets, seed=int(side["seed"].min()))


DST_TARGETS = (0.8, 0.9, 0.95)  # the coverage panels


def _draw_dst_coverage(results_dir, tag, dataset, target):
    from .plotting import plot_coverage

    found = read_dst(results_dir, dataset)
    if found is None or found[1].empty:
        return None
    present = set(found[1]["target"].round(6))
    return plot_coverage(found[1], [t for t in DST_TARGETS if t in present] or sorted(present)[-3:])


def _draw_dst_accuracy(results_dir, tag, dataset, target):
    from .plotting import plot_training_aware

    found = read_dst(results_dir, dataset)
    if found is None or found[0].empty:
        return None
    return plot_training_aware(training_summary(found[0], outcomes_from=found[2]), dense_top1=_dense_top1(found[0]))


RECIPE_LABELS = {"start": "ERK + BN re-estimation (FCPTS's start)", "released": "FCPTS, released recipe",
                 "kit": "FCPTS, kit recipe"}


def _draw_recipe(results_dir, tag, dataset, target):
    from .plotting import plot_training_aware

    if dataset != "digits":  # the recipe ablation ran on the embedded default only
        return None
    table = recipe_table(RECIPE_DIR, ("released", "kit"))
    if table.empty:
        return None
    summary = pd.DataFrame(dict(method=table.variant.map(RECIPE_LABELS), tier="-", target=table.target,
                                mean=table.top1 / 100, std=np.nan, n=table.seeds, low=table.top1_low / 100,
                                high=table.top1_high / 100))
    return plot_training_aware(summary, title="The released and the kit recipe against FCPTS's own start "
                                              "(95 % intervals)")


def kit_rows_for_published(table: pd.DataFrame) -> pd.DataFrame:
    """This kit's counterparts of the published curves: uniform masks only (tier a, like msbench without
    reconstruction), uniform with FCPTS's reconstruction (tier c) and FCPTS."""
    picks = [("uniform", "a", "uniform, masks only (tier a)"),
             ("uniform", "c", "uniform + reconstruction (tier c)"), ("fcpts", "c", "FCPTS")]
    rows = []
    for method, tier, text in picks:
        part = table[(table["method"] == method) & (table["tier"] == tier)]
        rows += [dict(method=method, label=text, sparsity=r["achieved_sparsity"], top1=r["top1"],
                      dataset=r["dataset"]) for _, r in part.iterrows()]
    return pd.DataFrame(rows, columns=["method", "label", "sparsity", "top1", "dataset"])


def _draw_published(results_dir, tag, dataset, target):
    published = pd.read_csv(repo_path(PUBLISHED_NUMBERS), keep_default_na=False)
    table = read_comparison(results_dir, dataset)
    ours = kit_rows_for_published(table) if table is not None else None
    from .plotting import plot_published

    return plot_published(published, ours)


FIGURES = {
    "allocation_matters": _draw_allocation_matters,  # notebook 01
    "allocations": _draw_allocations,
    "bridge": _draw_bridge,
    "objective": _draw_objective,
    "fcpts_allocation": _draw_fcpts_allocation,  # notebook 02
    "fcpts_convergence": _draw_fcpts_convergence,
    "fcpts_losses": _draw_fcpts_losses,
    "recipe": _draw_recipe,
    "accuracy_vs_sparsity": _draw_accuracy_vs_sparsity,  # notebook 03
    "schedules": _draw_schedules,
    "accuracy_vs_time": _draw_accuracy_vs_time,
    "learner_trajectories": _draw_learner_trajectories,
    "learner_allocations": _draw_learner_allocations,
    "dst_coverage": _draw_dst_coverage,
    "dst_accuracy": _draw_dst_accuracy,
    "published_vs_kit": _draw_published,  # notebook 04
}


def figure_name(kind: str, tag: str) -> str:
    return f"{kind}_{tag}"


def draw(kind: str, tag: str, results_dir: str, figures_dir: str, dataset: str = "digits",
         target: float = 0.8) -> list[Path]:
    """Draw figure ``kind`` from the result files in ``results_dir`` and save it as
    ``<figures_dir>/<kind>_<tag>.png|pdf``. Returns the paths ([] when its result files are missing)."""
    from .plotting import save_figure

    if kind not in FIGURES:
        raise ValueError(f"unknown figure {kind!r}; choose one of {', '.join(FIGURES)}")
    fig = FIGURES[kind](results_dir, tag, dataset, target)
    if fig is None:
        return []
    return save_figure(fig, figure_name(kind, tag), folder=repo_path(figures_dir))
