"""Result files: small tidy CSV/JSON files that notebook 05 redraws every figure from, and the runner's tables.

Notebooks 03 and 04 resume the runner's CSV, computing at most ``max_new_runs`` rows per call; reading
falls back to the committed ``data/`` for any result file the run has not written (``readable_path``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .. import registry
from ..baselines import TIERS
from ..config import Config
from ..registry import METHODS
from ..runner import SCHEDULE_NAMES, has_dense_row, run_comparison
from ..table import SIDE_KEY, SIDE_KINDS, read_side, read_table, side_path
from ..stats import bootstrap_interval, unpack_outcomes
from .session import Session, Timer, readable_path, result_path

SWEEP_TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)  # the targets of every committed sweep


def save_table(table: pd.DataFrame, results_dir: str | os.PathLike[str], name: str) -> Path:
    """Write ``table`` as ``<results_dir>/<name>`` (CSV), creating the folder; returns the path."""
    path = result_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g")
    return path


def save_json(obj: Any, results_dir: str | os.PathLike[str], name: str) -> Path:
    path = result_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    return path


def history_frame(result: Any, label: str) -> pd.DataFrame:
    """A SparsifyResult's per-step history as a DataFrame with a ``run`` column."""
    frame = pd.DataFrame(result.history)
    frame.insert(0, "run", label)
    return frame


def read_result(results_dir: str | os.PathLike[str], name: str) -> pd.DataFrame | None:
    """The result file ``name`` (``readable_path``) as a DataFrame, or None when there is none."""
    path = readable_path(results_dir, name)
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else None


def current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, tier, schedule, target, seed): the last one written. The runner appends, so a
    row recomputed under new settings (another config_hash) replaces the older one in the figures."""
    if table.empty:
        return table
    key = ["method", "tier", "schedule", "target", "seed"]
    return table.drop_duplicates(key, keep="last").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# the comparison tables of notebooks 03 and 04: resume the runner's CSV, computing at most `max_new_runs` rows
# ----------------------------------------------------------------------------------------------------------
def working_table(results_dir: str | os.PathLike[str], dataset: str, reference_dir: str = "data",
                  kind: str = "comparison", dense_hash: Callable[[], str | None] | None = None) -> Path:
    """``<results_dir>/<kind>_<dataset>.csv``; when it does not exist yet but the committed reference
    ``data/<kind>_<dataset>.csv`` does, the reference (and its side tables) is copied there first so its rows
    count as done. ``kind``: "comparison" (allocations, FCPTS, schedules) or "learners" (FCPTS and the learners).
    ``dense_hash``: called only before a copy, this machine's dense row hash (``runner.dense_row_hash``) or None;
    a reference without that row was computed from another dense model (another CPU type) and is not copied, so
    that no table holds rows of two dense models."""
    path = result_path(results_dir, f"{kind}_{dataset}.csv")
    reference = result_path(reference_dir, f"{kind}_{dataset}.csv")
    if not path.exists() and reference.exists() and reference.resolve() != path.resolve():
        expected = dense_hash() if dense_hash is not None else None
        if expected is not None and not has_dense_row(reference, expected):
            print(f"{reference.name} was computed from another dense model than this machine's (it is retrained "
                  f"bit for bit only on the same CPU type): this run starts its own table at {path}")
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        for source, dest in [(reference, path)] + [(side_path(reference, k), side_path(path, k)) for k in SIDE_KINDS]:
            if source.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
    return path


def _dense_hash(config: Config) -> str | None:
    """``runner.dense_row_hash`` of the kit's own dense model for ``config`` (trained and cached on first use, as
    the runner would), under the settings the committed tables were computed with (``Config.quick_cpu``: the
    hash holds the settings too); None where the model is not the kit's (no committed table to check)."""
    from ..models import EMBEDDED_DATASETS, resolve_dense_model
    from ..runner import dense_row_hash

    if config.dataset not in EMBEDDED_DATASETS or config.weights:
        return None
    model, _ = resolve_dense_model(config, 10, config.progress)
    return dense_row_hash(Config.quick_cpu(dataset=config.dataset), model)


def comparison_grid(targets: Iterable[float], methods: Iterable[str], tiers: Iterable[str],
                    schedules: Iterable[str], fcpts: bool = True, dense: bool = True) -> list[dict]:
    """The runner's rows one by one, cheapest first: dense, then per target the masks-only and BN tiers,
    FCPTS, the frozen-threshold tier c, the training-aware schedules and dynamic sparse training."""
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
    targets = [float(t) for t in targets]
    methods = runner_kwargs.pop("methods", registry.names(family="allocation"))
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


# ----------------------------------------------------------------------------------------------------------
# reading the runner's tables back (current rows only), with per-row 95 % intervals
# ----------------------------------------------------------------------------------------------------------
def read_learners(results_dir: str | os.PathLike[str], dataset: str
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """The learners' table (current rows), their per-step trajectories and final allocations, or None."""
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


def read_dst(results_dir: str | os.PathLike[str], dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, Path] | None:
    """The dynamic-sparse-training table ``dst_<dataset>.csv`` (current rows: DST-EE, RigL, one-cycle, FCPTS),
    its coverage side table and its path (for the per-image outcomes), or None."""
    path = readable_path(results_dir, f"dst_{dataset}.csv")
    if not path.exists():
        return None
    return current_rows(read_table(path)), read_side(path, "coverage"), path


def read_comparison(results_dir: str | os.PathLike[str], dataset: str) -> pd.DataFrame | None:
    path = readable_path(results_dir, f"comparison_{dataset}.csv")
    return with_intervals(current_rows(read_table(path)), path) if path.exists() else None


def with_intervals(table: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """``table`` (rows of the runner's table at ``path``) with ``low`` and ``high``: each row's 95 % bootstrap
    interval over the test images, from its per-image outcomes (NaN for rows computed before they were kept)."""
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
    (``with_intervals``), "98.1" where it was computed before per-image outcomes were kept. The dense model's
    rows are left out (they have no target)."""
    table = table[~registry.is_role(table["method"], "reference")]
    low = table["low"] if "low" in table else pd.Series(np.nan, index=table.index)
    high = table["high"] if "high" in table else pd.Series(np.nan, index=table.index)
    cells = [f"{100 * t:.1f}" + ("" if pd.isna(lo) else f" [{100 * lo:.1f}, {100 * hi:.1f}]")
             for t, lo, hi in zip(table["top1"], low, high)]
    return table.assign(cell=cells).pivot_table(index=list(index), columns="target", values="cell", aggfunc="last")


def comparison(config: Config, run: Session, targets: Iterable[float] = SWEEP_TARGETS, kind: str = "comparison",
               **runner_kwargs: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A notebook's runner table ``<kind>_<dataset>.csv``: resumed (at most ``run.max_new_runs`` new rows, see
    ``resume_comparison``), then ``(the whole table, its current rows with their 95 % intervals)``."""
    path = working_table(run.results, config.dataset, kind=kind, dense_hash=lambda: _dense_hash(config))
    with Timer() as timer:
        table, computed = resume_comparison(config, path, targets, run.max_new_runs, **runner_kwargs)
    print(f"{path.name}: {len(table)} rows; {computed} computed now in {timer.seconds:.0f} s "
          f"(max_new_runs = {run.max_new_runs})")
    return table, with_intervals(current_rows(table), path)


def describe_table(current: pd.DataFrame) -> None:
    """What a notebook's check cell prints about a runner table: the dense model, the methods, exact targets."""
    reference = registry.is_role(current["method"], "reference")
    dense = current[reference]
    if len(dense):
        print(f"dense top-1 {100 * dense['top1'].iloc[-1]:.1f} %")
    pruned = current[~reference]
    print(f"methods: {', '.join(sorted(pruned['method'].unique()))}")
    exact = ((pruned["achieved_sparsity"] - pruned["target"]).abs() < 1e-4).all()
    print(f"every pruned row meets its target: {bool(exact)}")
