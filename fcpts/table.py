"""The runner's tables: row keys and fingerprints, append-only storage of rows and their side tables.

A row is keyed by (method, tier, schedule, target, seed, config_hash); ``config_hash`` fingerprints everything
else that changes its numbers (``row_hash``). Rows are appended to ``<out>.csv`` one line at a time, never
rewritten, so an interrupted sweep loses at most the row it was computing; the side tables under
``<out>_details/`` (per-step trajectories, per-layer allocations, coverage, per-image outcomes) are appended
before their row, so a row in the main table always has them. ``merge_tables`` joins tables written by
several processes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from torch import nn

from .config import Config, target_key
from .files import state_dict_sha256, write_atomic
from .registry import METHODS, NONE
from .stats import unpack_outcomes

KEY = ("method", "tier", "schedule", "target", "seed", "config_hash")
COLUMNS = ("method", "tier", "schedule", "target", "seed", "achieved_sparsity", "top1", "top5", "wall_time",
           "steps", "zeros", "total", "n_test", "start", "sparsity_before_projection", "allocation_drift", "dataset",
           "model",
           "config_hash", "finished_at", "selected", "loop")
# Config fields that change no number of a row (display, hardware) or that are row keys already.
_NOT_HASHED = ("target", "seed", "progress", "device", "num_workers", "out_dir", "layer_log_every",
               "eval_batch_size")
# Config fields added after rows were first committed, with the value every older row was computed with: hashed
# only when they differ from it, so every older row keeps its key (and is not recomputed) while a row computed
# any other way gets a new one.
_LEGACY_VALUES = {"bn_recalibrate": False, "select_holdout": 0, "precision": "fp32"}
# Fields of the reconstruction loop only, added when the released lr schedule and start became the default:
# always hashed for the rows that run the loop (learners, tier c), never for the others, so a tier a/b or
# training row keeps its key whatever the loop does, and no loop row computed since can take the key of one
# computed before (those ran the earlier schedule and start, with the start's 1e-6 threshold clamp).
LOOP_FIELDS = ("lr_schedule", "init_rounding")
LEGACY_LOOP = "legacy: ramp_then_cosine/exact"  # the ``loop`` label of the rows computed before these fields



def fingerprint(obj: Any) -> str:
    """The first 12 hex of the sha256 of ``obj`` as sorted JSON: a row's ``config_hash``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex) of every tensor of the state_dict: the dense model a row was computed from."""
    return state_dict_sha256(model.state_dict())[:16]


def config_digest(config: Config, model: nn.Module) -> dict[str, Any]:
    """What a row's ``config_hash`` fingerprints besides the method's own settings: the Config (minus
    ``_NOT_HASHED``, the loop's own fields and fields at their ``_LEGACY_VALUES``) and the dense model's weights."""
    values = {k: v for k, v in config.to_dict().items()
              if k not in _NOT_HASHED and k not in LOOP_FIELDS
              and not (k in _LEGACY_VALUES and v == _LEGACY_VALUES[k])}
    values["model_id"] = model_fingerprint(model)
    return values


def loop_digest(config: Config) -> dict[str, Any]:
    """The reconstruction loop's own fields, hashed for the rows that run it."""
    return {k: getattr(config, k) for k in LOOP_FIELDS}


def row_hash(base: dict[str, Any], config: Config, reconstructs: bool, settings: dict | None = None) -> str:
    """A row's ``config_hash``: ``base`` (``config_digest``), the loop's fields for a row that runs the loop,
    and the method's own ``settings``."""
    return fingerprint({**base, **(loop_digest(config) if reconstructs else {}), **(settings or {})})


def loop_recipe(config: Config) -> str:
    """How a loop row was run, for the table's ``loop`` column: "<lr_schedule>/<init_rounding>"."""
    return f"{config.lr_schedule}/{config.init_rounding}"


def row_key(row: dict) -> tuple:
    return (str(row["method"]), str(row["tier"]), str(row["schedule"]), target_key(row["target"]),
            int(row["seed"]), str(row["config_hash"]))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """The CSV as written by the runner (key columns as strings, so 'a'/'-' survive a round trip)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(path, dtype={"method": str, "tier": str, "schedule": str, "config_hash": str,
                                    "start": str, "selected": str, "loop": str}, keep_default_na=False,
                       na_values=[""])


def write_table(table: pd.DataFrame, csv_path: Path, json_path: Path | None) -> None:
    """Rewrite a whole table (merges, migrations) atomically, and its JSON copy."""
    write_atomic(csv_path, table.to_csv(index=False))
    if json_path is not None:
        write_json_copy(table, json_path)


def write_json_copy(table: pd.DataFrame, json_path: Path) -> None:
    write_atomic(json_path, table.to_json(orient="records", indent=1))


def _append_csv(path: Path, frame: pd.DataFrame) -> None:
    """Append ``frame``'s rows to the CSV at ``path`` (with a header when the file is new), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        handle.write(frame.to_csv(index=False, header=new))
        handle.flush()
        os.fsync(handle.fileno())


def _header(path: Path) -> list[str]:
    with open(path) as handle:
        return handle.readline().rstrip("\r\n").split(",")


def append_row(csv_path: Path, row: dict) -> None:
    """Append one finished row to the runner's CSV. A table written with other columns (an older layout) is
    rewritten once in ``COLUMNS`` order first; after that every row is one appended line."""
    if csv_path.exists() and csv_path.stat().st_size > 0 and _header(csv_path) != list(COLUMNS):
        table = read_table(csv_path)
        extra = [c for c in table.columns if c not in COLUMNS]
        if extra:
            raise ValueError(f"{csv_path} has columns the runner does not write ({', '.join(extra)}); "
                             "write to a new --out")
        write_atomic(csv_path, table.reindex(columns=list(COLUMNS)).to_csv(index=False))
    _append_csv(csv_path, pd.DataFrame([row], columns=list(COLUMNS)))


def label_loop_rows(csv_path: str | os.PathLike) -> int:
    """Fill the ``loop`` column of a table written before it existed: ``LEGACY_LOOP`` for the rows that ran the
    reconstruction loop (they all used the earlier schedule and exact start with its 1e-6 clamp), "-" for the others. Rows that have a value
    keep it; keys are unchanged; the JSON copy is rewritten where there is one. Returns how many rows were labelled."""
    csv_path = Path(csv_path)
    table = read_table(csv_path)
    if "loop" not in table.columns:
        table["loop"] = pd.NA
    empty = table["loop"].isna()
    if not empty.any():
        return 0
    table["loop"] = table["loop"].astype(object)
    for i in table.index[empty]:
        method = METHODS.get(str(table.at[i, "method"]))
        reconstructs = method is not None and method.reconstructs(str(table.at[i, "tier"]))
        table.at[i, "loop"] = LEGACY_LOOP if reconstructs else NONE
    columns = [c for c in COLUMNS if c in table.columns] + [c for c in table.columns if c not in COLUMNS]
    json_copy = csv_path.with_suffix(".json")
    write_table(table[columns], csv_path, json_copy if json_copy.exists() else None)
    return int(empty.sum())


def merge_tables(out: str | os.PathLike, sources: Iterable[str | os.PathLike], json_path: bool = True,
                 where: Callable[[dict], bool] | None = None) -> pd.DataFrame:
    """Add the rows of other runner CSVs (e.g. a sweep split over processes) to ``out``, with their side rows;
    rows whose key is already there are kept as they are, never overwritten. ``where(row)``: add only the rows
    it accepts. Never run it while a runner is writing ``out``."""
    out = Path(out)
    table = read_table(out)
    done = {row_key(r) for r in table.to_dict("records")} if len(table) else set()
    added: set[tuple] = set()
    for source in sources:
        if not Path(source).exists():
            raise FileNotFoundError(f"no runner table at {source}")
        rows = [r for r in read_table(source).to_dict("records")
                if row_key(r) not in done and (where is None or where(r))]
        added |= {tuple(str(r[k]) for k in SIDE_KEY) for r in rows}
        done |= {row_key(r) for r in rows}
        if rows:
            new = pd.DataFrame(rows, columns=list(COLUMNS))
            table = pd.concat([table, new], ignore_index=True) if len(table) else new
    for kind in SIDE_KINDS:  # side rows of rows that were added; never replace side rows already in out
        have = _read_side_file(side_path(out, kind))
        have_keys = set(have[list(SIDE_KEY)].astype(str).apply(tuple, axis=1)) if len(have) else set()
        for source in sources:
            extra = read_side(source, kind)
            if len(extra):
                keys = extra[list(SIDE_KEY)].astype(str).apply(tuple, axis=1)
                extra = extra[~keys.isin(have_keys) & keys.isin(added)]
                if len(extra):
                    _append_side(side_path(out, kind), extra)
                    have_keys |= set(extra[list(SIDE_KEY)].astype(str).apply(tuple, axis=1))
    write_table(table, out, out.with_suffix(".json") if json_path else None)
    return table


# ----- side tables: per-step global sparsity and final per-layer allocation of every learner row -------------
SIDE_KEY = ("method", "tier", "schedule", "target", "seed", "config_hash")
SIDE_KINDS = ("trajectories", "allocations", "coverage", "outcomes")
SIDE_INFO = ("trajectory", "allocation", "coverage", "outcomes")  # the keys of a run's info that fill them


def side_path(csv_path: str | os.PathLike, kind: str) -> Path:
    """``<out>_details/<kind>.csv`` beside the runner's table: trajectories (learners' global sparsity per step),
    allocations (their final per-layer sparsities), coverage (dynamic sparse training: the fraction of weights
    ever active after every mask update), outcomes (every row: which test images it got right, packed by
    ``fcpts.stats.pack_outcomes``). In a folder, so that globs over result tables never pick them up."""
    csv_path = Path(csv_path)
    return csv_path.parent / f"{csv_path.stem}_details" / f"{kind}.csv"


def read_side(csv_path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """A side table of the runner's table at ``csv_path`` (empty when there is none)."""
    return _read_side_file(side_path(csv_path, kind))


def _read_side_file(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path, dtype={"method": str, "tier": str, "schedule": str, "config_hash": str,
                                    "layer": str, "correct": str}, keep_default_na=False, na_values=[""])


def _append_side(path: Path, new: pd.DataFrame) -> None:
    """Append side rows; rows of the same key written before (a row recomputed after a crash between its side
    rows and its main row) are dropped first, the only case that rewrites the file."""
    old_keys = _read_side_keys(path)
    keys = set(new[list(SIDE_KEY)].astype(str).apply(tuple, axis=1))
    if old_keys & keys:
        old = _read_side_file(path)
        stale = old[list(SIDE_KEY)].astype(str).apply(tuple, axis=1).isin(keys)
        write_atomic(path, old[~stale].to_csv(index=False))
    if path.exists() and path.stat().st_size > 0 and _header(path) != list(new.columns):
        old = _read_side_file(path)
        write_atomic(path, pd.concat([old, new], ignore_index=True).to_csv(index=False))
        return
    _append_csv(path, new)


def _read_side_keys(path: Path) -> set[tuple]:
    if not path.exists() or path.stat().st_size == 0:
        return set()
    keys = pd.read_csv(path, usecols=list(SIDE_KEY), dtype=str, keep_default_na=False)
    return set(keys.apply(tuple, axis=1)) if len(keys) else set()


def write_side_rows(csv_path: Path, row: dict, info: dict) -> None:
    key = {k: row[k] for k in SIDE_KEY}
    if info.get("trajectory"):
        trajectory = pd.DataFrame([{**key, "step": i, "sparsity": s} for i, s in enumerate(info["trajectory"])])
        _append_side(side_path(csv_path, "trajectories"), trajectory)
    if info.get("allocation"):
        allocation = pd.DataFrame([{**key, "layer": n, "sparsity": s} for n, s in info["allocation"].items()])
        _append_side(side_path(csv_path, "allocations"), allocation)
    if info.get("coverage"):
        _append_side(side_path(csv_path, "coverage"), pd.DataFrame([{**key, **c} for c in info["coverage"]]))
    if info.get("outcomes"):
        _append_side(side_path(csv_path, "outcomes"),
                     pd.DataFrame([{**key, "n": row["n_test"], "correct": info["outcomes"]}]))


def outcome_matrix(csv_path: str | os.PathLike, rows: pd.DataFrame) -> np.ndarray:
    """The per-image top-1 outcomes of ``rows`` (of the runner's table at ``csv_path``) as a bool matrix
    ``[rows, test images]``, for ``fcpts.stats``; a clear error for rows computed before outcomes were kept."""
    side = read_side(csv_path, "outcomes")
    keys = [tuple(str(r[k]) for k in SIDE_KEY) for r in rows.to_dict("records")]
    found = {tuple(str(r[k]) for k in SIDE_KEY): r for r in side.to_dict("records")} if len(side) else {}
    missing = [k for k in keys if k not in found]
    if missing:
        raise KeyError(f"{len(missing)} of {len(keys)} rows have no per-image outcomes in "
                       f"{side_path(csv_path, 'outcomes')} (e.g. {missing[0]}); recompute them with the runner")
    return np.stack([unpack_outcomes(found[k]["correct"], int(found[k]["n"])) for k in keys])


def paired_over_seeds(path_a: str | os.PathLike, rows_a: pd.DataFrame, path_b: str | os.PathLike,
                      rows_b: pd.DataFrame):
    """``(fcpts.stats.paired_difference of rows_a minus rows_b, the seeds used)`` over the seeds both ran whose
    rows kept their per-image outcomes (the last row written per seed), or None when there is no such seed."""
    from .stats import paired_difference

    rows_a, rows_b = (r.drop_duplicates("seed", keep="last") for r in (rows_a, rows_b))
    kept = []
    for seed in sorted(set(rows_a["seed"]) & set(rows_b["seed"])):
        try:
            kept.append((seed, outcome_matrix(path_a, rows_a[rows_a["seed"] == seed]),
                         outcome_matrix(path_b, rows_b[rows_b["seed"] == seed])))
        except KeyError:  # computed before outcomes were kept
            continue
    if not kept:
        return None
    a, b = (np.concatenate([k[i] for k in kept]) for i in (1, 2))
    return paired_difference(a, b), [k[0] for k in kept]


