"""One comparison runner: methods × targets × seeds on one dataset/model pair, one tidy table.

    from fcpts import Config
    from fcpts.runner import run_comparison
    table = run_comparison(Config.quick_cpu(), out_csv="data/comparison_digits.csv")

    python -m fcpts.runner --out data/comparison_digits.csv --targets 0.5 0.7 0.8 0.9 0.95 --seeds 0

Rows (one per run; columns in ``COLUMNS``):

* ``dense`` -- the unpruned model (tier "-", target 0);
* every allocation (``uniform global erk lamp pot``) in tiers ``a`` (masks only; POT: its correction and
  calibration), ``b`` (+ BN re-estimation) and ``c`` (+ FCPTS's reconstruction with frozen thresholds);
* ``fcpts`` -- FCPTS with ``config`` (tier "c": it gets the same reconstruction budget as tier c);
* ``prune_train-<uniform|global>`` -- training-aware pruning with labels, one row per schedule
  (``one_shot iterative agp one_cycle``), tier ``finetune`` (from the dense model) or ``scratch``.

``allocation_drift`` (tier c and fcpts): the largest per-layer change between the starting allocation and
the returned model's (FCPTS: how far the learned allocation moved from its ERK start; tier c: how far frozen
thresholds let the masks move while the weights trained).

Resumable: a row whose key (method, tier, schedule, target, seed, config_hash) is already in ``out_csv`` is
not recomputed; the CSV (and a JSON copy) is rewritten atomically after every finished row, so an
interrupted sweep continues where it stopped. ``config_hash`` fingerprints everything else that changes a
row: the Config (minus target, seed and display/hardware fields), the dense model's weights, and the POT
or training-aware settings for those rows.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .baselines import ALLOCATION_METHODS, TIERS
from .config import Config, check_target
from .masking import count_zeros
from .pot import PotConfig
from .stats import pack_outcomes, unpack_outcomes
from .prune_train import PruneTrainConfig
from .registry import METHODS, NONE, RunContext, RunSpec, get_method, phase, variants
from .schedules import SCHEDULES

DEFAULT_TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)
SCHEDULE_NAMES = tuple(SCHEDULES)
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
_LEGACY_VALUES = {"bn_recalibrate": False, "select_holdout": 0}
# Fields of the reconstruction loop only, added when the released lr schedule and start became the default:
# always hashed for the rows that run the loop (learners, tier c), never for the others, so a tier a/b or
# training row keeps its key whatever the loop does, and no loop row computed since can take the key of one
# computed before (those ran the earlier schedule and start, with the start's 1e-6 threshold clamp).
LOOP_FIELDS = ("lr_schedule", "init_rounding")
LEGACY_LOOP = "legacy: ramp_then_cosine/exact"  # the ``loop`` label of the rows computed before these fields


def default_finetune(steps: int = 150) -> PruneTrainConfig:
    """The runner's training-aware setting: uniform per-layer magnitude, AdamW with fastai's one-cycle lr
    (peak 1e-3, weight decay 0.01, as fastai's defaults the One-Cycle Pruning paper used), batch 64."""
    return PruneTrainConfig(steps=steps, batch_size=64, lr=1e-3, weight_decay=0.01, lr_schedule="onecycle",
                            allocation="uniform", progress=False)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex) of every tensor of the state_dict: the dense model a row was computed from."""
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


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
    return _fingerprint({**base, **(loop_digest(config) if reconstructs else {}), **(settings or {})})


def loop_recipe(config: Config) -> str:
    """How a loop row was run, for the table's ``loop`` column: "<lr_schedule>/<init_rounding>"."""
    return f"{config.lr_schedule}/{config.init_rounding}"


def _target_key(value: Any) -> str:
    return f"{float(value):.6f}"


def row_key(row: dict) -> tuple:
    return (str(row["method"]), str(row["tier"]), str(row["schedule"]), _target_key(row["target"]),
            int(row["seed"]), str(row["config_hash"]))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """The CSV as written by the runner (key columns as strings, so 'a'/'-' survive a round trip)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(path, dtype={"method": str, "tier": str, "schedule": str, "config_hash": str,
                                    "start": str, "selected": str, "loop": str}, keep_default_na=False,
                       na_values=[""])


def _write_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the table ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_table(table: pd.DataFrame, csv_path: Path, json_path: Path | None) -> None:
    _write_atomic(table.to_csv(index=False), csv_path)
    if json_path is not None:
        _write_atomic(table.to_json(orient="records", indent=1), json_path)


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


@dataclass
class Job:
    spec: RunSpec
    config_hash: str
    phase: int

    def key(self) -> tuple:
        s = self.spec
        return row_key(dict(method=s.method, tier=s.tier, schedule=s.schedule, target=s.target, seed=s.seed,
                            config_hash=self.config_hash))

    def label(self) -> str:
        s = self.spec
        parts = [s.method, s.tier] + ([s.schedule] if s.schedule != NONE else [])
        return f"{'/'.join(parts)} {s.target:.0%} s{s.seed}"


def _selected(methods: Iterable[str], fcpts: bool, dense: bool, schedules: list[str], finetune: PruneTrainConfig) -> list[str]:
    names = (["dense"] if dense else []) + list(methods) + (["fcpts"] if fcpts else []) \
        + ([f"prune_train-{finetune.allocation}"] if schedules else [])
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        get_method(name)
    return chosen


def _context(config: Config, model, model_name, data, train_data, schedules: list[str], finetune, pot_config,
             scratch_model, learner_options, progress: bool, methods: Iterable[str] = ()) -> tuple[RunContext, str, list[str]]:
    """The sweep's shared state: the dense model (default: the embedded one, or ``build_model``), the data per
    seed (loaded once), the labelled train split of the schedule rows (skipped when there is none)."""
    from .evaluate import resolve_device

    if model is None:
        model_name = model_name or config.model
        if config.dataset == "digits" and config.model == "resnet50" and not config.weights:
            from .models import load_embedded_model

            model, _ = load_embedded_model(progress=progress)
        else:
            from .models import build_model

            model = build_model(config.model, config.weights or None)
    else:
        model_name = model_name or type(model).__name__
    bundles: dict[int, Any] = {}

    def bundle(seed: int):
        if seed not in bundles:
            if data is None:
                from .data import load_data

                bundles[seed] = load_data(config.replace(seed=seed))
            else:
                bundles[seed] = data(seed) if callable(data) else data
        return bundles[seed]

    train_split = train_data
    labelled = bool(schedules) or any(get_method(m).family == "training" and not get_method(m).scheduled
                                      for m in methods)
    if train_split is None and labelled and config.dataset == "digits" and data is None:
        from .data import DIGITS_SPLIT_SEED, digits_datasets

        train_split = digits_datasets(config.image_size, seed=DIGITS_SPLIT_SEED)[0]
    if labelled and train_split is None:
        print("[fcpts.runner] no labelled train split given: skipping the schedule rows", file=sys.stderr)
        schedules = []
    ctx = RunContext(config=config, model=model.eval(), bundle=bundle, device=resolve_device(config.device),
                     train_split=train_split, finetune=finetune,
                     pot=pot_config or PotConfig(device=config.device, progress=False),
                     scratch_model=scratch_model, learner_options=dict(learner_options or {}))
    return ctx, model_name, schedules


def run_comparison(config: Config | None = None, methods: Iterable[str] = ALLOCATION_METHODS,
                   targets: Iterable[float] = DEFAULT_TARGETS, seeds: Iterable[int] = (0,),
                   out_csv: str | os.PathLike = "data/comparison_digits.csv", *,
                   tiers: Iterable[str] = TIERS, fcpts: bool = True, dense: bool = True,
                   schedules: Iterable[str] = SCHEDULE_NAMES, starts: Iterable[str] = ("dense",),
                   finetune: PruneTrainConfig | None = None, pot_config: PotConfig | None = None,
                   learner_options: dict[str, Any] | None = None,
                   model: nn.Module | None = None, data: Any = None, train_data: Any = None,
                   scratch_model: Callable[[int], nn.Module] | None = None, model_name: str | None = None,
                   json_path: str | os.PathLike | None | bool = True, progress: bool = True,
                   shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Run every requested (method, tier/schedule, target, seed) not yet in ``out_csv``; return the table.

    ``methods``: any names of ``fcpts.registry.METHODS`` (default: the five fixed allocations); ``fcpts``,
    ``dense`` and a non-empty ``schedules`` add the FCPTS, dense and training-aware rows (the last with
    ``finetune.allocation``). ``tiers`` selects the allocation tiers. ``learner_options``: {method name:
    its options dataclass} (defaults: ``StrConfig()``, ``ProbMaskConfig()``, ``DsaConfig()``).
    ``config`` (default ``Config.quick_cpu()``) drives FCPTS, the learners, tier c, calibration, BN
    re-estimation and data. ``model``: the dense model (default: the embedded ResNet-50 for digits via
    ``load_embedded_model``, else ``build_model(config.model, config.weights)``). ``data``: a ``DataBundle``
    (calib, test, num_classes, name) or a callable ``seed -> DataBundle`` (default: ``load_data(config.replace(
    seed=seed))``). ``train_data``: the labelled train split for the schedules (default: the digits train
    split; for other datasets the schedule rows are skipped unless given). ``starts``: "dense" (fine-tune the
    dense model) and/or "scratch" (``scratch_model(seed)``, default ``build_model(config.model, weights=None)``).
    ``finetune``: the training-aware setting (default ``default_finetune(config.steps)``; its schedule
    field is overridden per row). ``json_path``: True -> next to the CSV with a .json suffix.
    ``shard=(i, n)``: only the i-th of n deterministic parts of the requested rows (the k-th row in key order
    goes to part k mod n, whatever is done already), so n processes or machines can share a sweep, each with
    its own ``out_csv``, joined afterwards by ``merge_tables`` (``--merge``).

    Rows of learners (FCPTS included) also write their per-step global sparsity to
    ``<out>_details/trajectories.csv`` and their final per-layer sparsities to ``<out>_details/allocations.csv``.
    """
    from .evaluate import evaluate

    config = config or Config.quick_cpu()
    targets = [check_target(t) for t in targets]
    seeds, tiers = [int(s) for s in seeds], list(tiers)
    schedules, starts = list(schedules), list(starts)
    for name in schedules:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    for start in starts:
        if start not in ("dense", "scratch"):
            raise ValueError(f"unknown start {start!r}; use 'dense' and/or 'scratch'")
    finetune = finetune or default_finetune(config.steps)
    csv_path = Path(out_csv)
    json_file = csv_path.with_suffix(".json") if json_path is True else (Path(json_path) if json_path else None)
    methods = list(methods)
    ctx, model_name, schedules = _context(config, model, model_name, data, train_data, schedules, finetune,
                                          pot_config, scratch_model, learner_options, progress, methods)
    model, bundle, device = ctx.model, ctx.bundle, ctx.device
    base = config_digest(config, model)

    jobs: list[Job] = []
    for name in _selected(methods, fcpts, dense, schedules, finetune):
        method = get_method(name)
        for seed in seeds:
            for target in ([0.0] if method.family == "dense" else targets):
                for tier, schedule, start in variants(method, tiers, schedules, starts):
                    spec = RunSpec(name, tier, schedule, target, seed, start)
                    job_hash = row_hash(base, config, method.reconstructs(tier), method.settings(ctx, spec))
                    jobs.append(Job(spec, job_hash, phase(method, tier)))

    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
        jobs = [j for k, j in enumerate(sorted(jobs, key=lambda j: tuple(map(str, j.key())))) if k % count == index]
    table = read_table(csv_path)
    done = {row_key(r) for r in table.to_dict("records")} if len(table) else set()
    todo = sorted((j for j in jobs if j.key() not in done),
                  key=lambda j: (j.phase, j.spec.seed, j.spec.target, j.spec.tier))
    if progress:
        print(f"[fcpts.runner] {len(jobs)} rows requested, {len(jobs) - len(todo)} already in {csv_path}, "
              f"{len(todo)} to compute", file=sys.stderr)
    bar = tqdm(todo, desc="comparison", disable=not progress)
    for job in bar:
        spec = job.spec
        bar.set_postfix_str(job.label())
        tic = time.perf_counter()
        try:
            pruned, info = METHODS[spec.method].run(ctx, spec)
        except FloatingPointError as exc:  # name the row that diverged; the rows before it are saved
            raise FloatingPointError(f"{job.label()}: {exc}") from exc
        wall = info.get("wall_time") or (time.perf_counter() - tic)
        b = bundle(spec.seed)
        metrics = evaluate(pruned, b.test, batch_size=config.eval_batch_size, device=device, progress=False,
                           per_image=True)
        info = {**info, "outcomes": pack_outcomes(metrics["correct"])}
        zeros, total = count_zeros(pruned)
        row = dict(method=spec.method, tier=spec.tier, schedule=spec.schedule, target=spec.target, seed=spec.seed,
                   achieved_sparsity=zeros / total, top1=metrics["top1"], top5=metrics["top5"], wall_time=wall,
                   steps=int(info.get("steps", 0)), zeros=zeros, total=total, n_test=metrics["n"], start=spec.start,
                   sparsity_before_projection=info.get("sparsity_before_projection", math.nan),
                   allocation_drift=info.get("allocation_drift", math.nan),
                   dataset=getattr(b, "name", config.dataset), model=model_name, config_hash=job.config_hash,
                   finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"), selected=info.get("selected", NONE),
                   loop=loop_recipe(config) if METHODS[spec.method].reconstructs(spec.tier) else NONE)
        if any(k in info for k in SIDE_INFO):  # side tables first: a row in the main table always has them
            write_side_rows(csv_path, row, info)
        table = pd.concat([table, pd.DataFrame([row], columns=list(COLUMNS))], ignore_index=True) if len(table) \
            else pd.DataFrame([row], columns=list(COLUMNS))
        write_table(table, csv_path, json_file)
        if progress:
            tqdm.write(f"  {job.label():<40} top1 {metrics['top1']:.2%}  S {zeros / total:.4f}  {wall:.1f} s")
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
    old = _read_side_file(path)
    if len(old):
        keys = {tuple(r) for r in new[list(SIDE_KEY)].astype(str).itertuples(index=False)}
        stale = old[list(SIDE_KEY)].astype(str).apply(tuple, axis=1).isin(keys)
        new = pd.concat([old[~stale], new], ignore_index=True)
    _write_atomic(new.to_csv(index=False), path)


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


def _parse_shard(parser: argparse.ArgumentParser, text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        parser.error(f"--shard expects I/N, e.g. 0/4, got {text!r}")
    if not 0 <= index < count:
        parser.error(f"--shard {text}: need 0 <= I < N")
    return index, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcpts.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/comparison_digits.csv", help="CSV to write (and resume from)")
    parser.add_argument("--json", default=None, help="JSON copy (default: the CSV path with .json)")
    parser.add_argument("--config", default=None, help="YAML Config (default: Config.quick_cpu())")
    parser.add_argument("--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="*", default=list(ALLOCATION_METHODS),
                        help=f"registered methods (fcpts.registry): {', '.join(METHODS)}")
    parser.add_argument("--tiers", nargs="*", default=list(TIERS))
    parser.add_argument("--schedules", nargs="*", default=list(SCHEDULE_NAMES))
    parser.add_argument("--starts", nargs="*", default=["dense"], help="dense and/or scratch")
    parser.add_argument("--no-fcpts", action="store_true")
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="FCPTS / tier c steps (Config.steps)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="schedule steps (default: Config.steps)")
    parser.add_argument("--finetune-lr", type=float, default=None)
    parser.add_argument("--pot-iterations", type=int, default=None, help="POT Adam steps per layer")
    parser.add_argument("--pot-lr", type=float, default=None)
    parser.add_argument("--min-dense-accuracy", type=float, default=None,
                        help="accept an embedded dense checkpoint with at least this test top-1 (default: models' floor)")
    parser.add_argument("--no-train", action="store_true",
                        help="fail instead of training the embedded dense model when its checkpoint is missing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads; 1 avoids OpenMP oversubscription on a shared 2-core machine")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="compute only part I of N (0-based) of the requested rows; join the parts with --merge")
    parser.add_argument("--merge", nargs="+", default=None, metavar="CSV",
                        help="only add these runner tables' rows to --out (a sweep split over processes), then stop")
    parser.add_argument("--label-loop", nargs="+", default=None, metavar="CSV",
                        help="only fill the 'loop' column of tables written before it existed (label_loop_rows), then stop")
    args = parser.parse_args(argv)
    if args.label_loop:
        for path in args.label_loop:
            print(f"{path}: {label_loop_rows(path)} row(s) labelled")
        return 0
    if args.merge:
        try:
            table = merge_tables(args.out, args.merge)
        except FileNotFoundError as exc:
            parser.error(str(exc))
        print(f"{len(table)} rows in {args.out}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    config = Config.from_yaml(args.config) if args.config else Config.quick_cpu()
    if args.steps is not None:
        config = config.replace(steps=args.steps)
    finetune = default_finetune(args.finetune_steps or config.steps)
    if args.finetune_lr is not None:
        finetune = finetune.replace(lr=args.finetune_lr)
    pot = PotConfig(device=config.device, progress=False)
    if args.pot_iterations is not None:
        pot.iterations_per_layer = args.pot_iterations
    if args.pot_lr is not None:
        pot.lr = args.pot_lr
    model, model_name = None, None
    if config.dataset == "digits" and config.model == "resnet50" and not config.weights:
        from .models import DEFAULT_CHECKPOINT_DIR, DenseRecipe, build_model, load_embedded_model

        recipe = DenseRecipe()
        kwargs = {} if args.min_dense_accuracy is None else dict(min_accuracy=args.min_dense_accuracy)
        path = DEFAULT_CHECKPOINT_DIR / recipe.checkpoint_name()
        if args.no_train:
            # Check without side effects: load_embedded_model renames an unusable checkpoint and retrains.
            if not path.exists():
                parser.error(f"--no-train: no dense checkpoint at {path}")
            from .models import _verify

            floor = kwargs.get("min_accuracy", 0.97)
            ckpt, problem = _verify(path, recipe, build_model(recipe.model, None, 10), floor)
            if ckpt is None:
                parser.error(f"--no-train: the checkpoint {path} would be retrained: {problem}")
        model, _ = load_embedded_model(recipe, progress=not args.quiet, **kwargs)
        model_name = config.model
    table = run_comparison(config, args.methods, args.targets, args.seeds, args.out, tiers=args.tiers,
                           model=model, model_name=model_name,
                           fcpts=not args.no_fcpts, dense=not args.no_dense, schedules=args.schedules,
                           starts=args.starts, finetune=finetune, pot_config=pot,
                           json_path=args.json if args.json else True, progress=not args.quiet,
                           shard=_parse_shard(parser, args.shard))
    print(f"{len(table)} rows in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
