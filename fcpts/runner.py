"""One comparison runner: methods × targets × seeds on one dataset/model pair, one tidy table.

    from fcpts import Config
    from fcpts.runner import run_comparison
    table = run_comparison(Config.quick_cpu(), out_csv="data/comparison_digits.csv")

    fcpts sweep --out data/comparison_digits.csv --targets 0.5 0.7 0.8 0.9 0.95 --seeds 0
    fcpts sweep --dataset fashion-mnist --recipe kit --methods --schedules     # -> data/comparison_fashion-mnist.csv
    (python -m fcpts.runner ... is the same command)

Three steps: ``plan`` (every requested row as a keyed ``Job``, a pure function of the request), ``execute``
(run the jobs not yet in the table, cheap ones first) and the table itself (``fcpts.table``: keys,
fingerprints, append-only storage). Which rows a method has comes from ``fcpts.registry``:

* the dense model (tier "-", target 0);
* every allocation in tiers ``a`` (masks only; POT: its correction and calibration), ``b`` (+ BN
  re-estimation) and ``c`` (+ FCPTS's reconstruction with frozen thresholds);
* the learners (FCPTS with ``config``, STR, ProbMask, DSA-style): tier "c", the same reconstruction budget;
* training-aware pruning with labels, one row per schedule (``one_shot iterative agp one_cycle``), tier
  ``finetune`` (from the dense model) or ``scratch``; dynamic sparse training (DST-EE, RigL) without one.

``allocation_drift`` (tier c and learners): the largest per-layer change between the starting allocation and
the returned model's (FCPTS: how far the learned allocation moved from its ERK start; tier c: how far frozen
thresholds let the masks move while the weights trained).

Resumable: a row whose key (method, tier, schedule, target, seed, config_hash) is already in ``out_csv`` is
not recomputed; each finished row is appended to the CSV (its side tables first), and the JSON copy is
written when the sweep ends or stops, so an interrupted sweep continues where it stopped. ``config_hash``
fingerprints everything else that changes a row: the Config (minus target, seed and display/hardware fields),
the dense model's weights, and the POT or training-aware settings for those rows.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .baselines import TIERS
from .config import RECIPES, Config, check_target
from .masking import count_zeros
from .models import EMBEDDED_DATASETS
from .pot import PotConfig
from .prune_train import PruneTrainConfig
from .registry import (METHODS, NONE, RunContext, RunSpec, get_method, is_role, names, phase, training_method,
                       variants)
from .schedules import SCHEDULES
from .stats import pack_outcomes
from .table import (SIDE_INFO, append_row, config_digest, label_loop_rows, loop_recipe, merge_tables,
                    read_table, row_hash, row_key, write_json_copy, write_side_rows)

DEFAULT_TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)
SCHEDULE_NAMES = tuple(SCHEDULES)


def default_finetune(steps: int = 150) -> PruneTrainConfig:
    """The runner's training-aware setting: uniform per-layer magnitude, AdamW with fastai's one-cycle lr
    (peak 1e-3, weight decay 0.01, as fastai's defaults the One-Cycle Pruning paper used), batch 64."""
    return PruneTrainConfig(steps=steps, batch_size=64, lr=1e-3, weight_decay=0.01, lr_schedule="onecycle",
                            allocation="uniform", progress=False)


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
    chosen = list(dict.fromkeys((names(role="reference") if dense else []) + list(methods)
                                + (names(role="proposed", default=True) if fcpts else [])
                                + ([training_method(finetune.allocation).name] if schedules else [])))
    for name in chosen:
        get_method(name)
    return chosen


def _context(config: Config, model, model_name, data, train_data, schedules: list[str], finetune, pot_config,
             scratch_model, learner_options, progress: bool, methods: Iterable[str] = (),
             train_dense: bool = True, min_dense_accuracy: float | None = None) -> tuple[RunContext, str, list[str]]:
    """The sweep's shared state: the dense model (default: ``fcpts.models.resolve_dense_model``, as ``fcpts run``
    and the notebooks), the data per seed (loaded once), the labelled train split of the schedule rows (skipped
    when there is none)."""
    from .evaluate import resolve_device

    bundles: dict[int, Any] = {}

    def bundle(seed: int):
        if seed not in bundles:
            if data is None:
                from .data import load_data

                bundles[seed] = load_data(config.replace(seed=seed))
            else:
                bundles[seed] = data(seed) if callable(data) else data
        return bundles[seed]

    if model is None:
        from .models import EMBEDDED_DATASETS, resolve_dense_model

        embedded = config.dataset in EMBEDDED_DATASETS and not config.weights  # 10 classes; no data needed for it
        num_classes = 10 if embedded else bundle(config.seed).num_classes
        model, _ = resolve_dense_model(config, num_classes, progress, train=train_dense,
                                       min_accuracy=min_dense_accuracy)
        model_name = model_name or config.model
    else:
        model_name = model_name or type(model).__name__
    train_split = train_data
    labelled = bool(schedules) or any(get_method(m).family == "training" and not get_method(m).scheduled
                                      for m in methods)
    if train_split is None and labelled and data is None and not config.weights:
        from .models import EMBEDDED_DATASETS, embedded_datasets, embedded_recipe

        if config.dataset in EMBEDDED_DATASETS:  # the labelled images the kit's dense model was trained on
            train_split = embedded_datasets(embedded_recipe(config.model, config.dataset, config.image_size))[0]
    if labelled and train_split is None:
        print("[fcpts.runner] no labelled train split given: skipping the schedule rows", file=sys.stderr)
        schedules = []
    ctx = RunContext(config=config, model=model.eval(), bundle=bundle, device=resolve_device(config.device),
                     train_split=train_split, finetune=finetune,
                     pot=pot_config or PotConfig(device=config.device, progress=False),
                     scratch_model=scratch_model, learner_options=dict(learner_options or {}))
    return ctx, model_name, schedules


def run_comparison(config: Config | None = None, methods: Iterable[str] | None = None,
                   targets: Iterable[float] = DEFAULT_TARGETS, seeds: Iterable[int] = (0,),
                   out_csv: str | os.PathLike = "data/comparison_digits.csv", *,
                   tiers: Iterable[str] = TIERS, fcpts: bool = True, dense: bool = True,
                   schedules: Iterable[str] = SCHEDULE_NAMES, starts: Iterable[str] = ("dense",),
                   finetune: PruneTrainConfig | None = None, pot_config: PotConfig | None = None,
                   learner_options: dict[str, Any] | None = None,
                   model: nn.Module | None = None, data: Any = None, train_data: Any = None,
                   scratch_model: Callable[[int], nn.Module] | None = None, model_name: str | None = None,
                   json_path: str | os.PathLike | None | bool = True, progress: bool = True,
                   shard: tuple[int, int] | None = None, train_dense: bool = True,
                   min_dense_accuracy: float | None = None, also_done: Iterable[str | os.PathLike] = ()) -> pd.DataFrame:
    """Run every requested (method, tier/schedule, target, seed) not yet in ``out_csv``; return the table.

    ``methods``: any names of ``fcpts.registry.METHODS`` (default: every fixed allocation); ``fcpts``,
    ``dense`` and a non-empty ``schedules`` add the FCPTS, dense and training-aware rows (the last with
    ``finetune.allocation``). ``tiers`` selects the allocation tiers. ``learner_options``: {method name:
    its options dataclass} (defaults: ``StrConfig()``, ``ProbMaskConfig()``, ``DsaConfig()``).
    ``config`` (default ``Config.quick_cpu()``) drives FCPTS, the learners, tier c, calibration, BN
    re-estimation and data. ``model``: the dense model (default: ``fcpts.models.resolve_dense_model``;
    ``train_dense=False`` fails instead of training a missing embedded model). ``data``: a ``DataBundle``
    (calib, test, num_classes, name) or a callable ``seed -> DataBundle`` (default: ``load_data(config.replace(
    seed=seed))``). ``train_data``: the labelled train split for the schedules (default: the digits train
    split; for other datasets the schedule rows are skipped unless given). ``starts``: "dense" (fine-tune the
    dense model) and/or "scratch" (``scratch_model(seed)``, default ``build_model(config.model, weights=None)``).
    ``finetune``: the training-aware setting (default ``default_finetune(config.steps)``; its schedule
    field is overridden per row). ``json_path``: True -> next to the CSV with a .json suffix.
    ``shard=(i, n)``: only the i-th of n deterministic parts of the requested rows (the k-th row in key order
    goes to part k mod n, whatever is done already), so n processes or machines can share a sweep, each with
    its own ``out_csv``, joined afterwards by ``merge_tables`` (``--merge``). ``also_done``: other runner tables
    whose rows count as done too (the merged table of an earlier sharding, so a resumed sweep may use another n).

    Rows of learners (FCPTS included) also write their per-step global sparsity to
    ``<out>_details/trajectories.csv`` and their final per-layer sparsities to ``<out>_details/allocations.csv``.
    """
    config = config or Config.quick_cpu()
    targets = [check_target(t) for t in targets]
    schedules, starts = list(schedules), list(starts)
    for name in schedules:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    for start in starts:
        if start not in ("dense", "scratch"):
            raise ValueError(f"unknown start {start!r}; use 'dense' and/or 'scratch'")
    finetune = finetune or default_finetune(config.steps)
    methods = list(names(family="allocation") if methods is None else methods)
    ctx, model_name, schedules = _context(config, model, model_name, data, train_data, schedules, finetune,
                                          pot_config, scratch_model, learner_options, progress, methods,
                                          train_dense, min_dense_accuracy)
    jobs = plan(ctx, _selected(methods, fcpts, dense, schedules, finetune), targets, [int(s) for s in seeds],
                list(tiers), schedules, starts, shard)
    csv_path = Path(out_csv)
    json_file = csv_path.with_suffix(".json") if json_path is True else (Path(json_path) if json_path else None)
    return execute(ctx, jobs, csv_path, json_file, model_name, progress, also_done)


def dense_row_hash(config: Config, model: nn.Module) -> str:
    """The ``config_hash`` of the dense model's row under ``config``. It fingerprints the dense weights, which are
    retrained bit for bit only on the same CPU type: a table without it was computed from another dense model."""
    ctx = RunContext(config=config, model=model, bundle=None, device=torch.device("cpu"))
    return plan(ctx, ["dense"], [0.5], [config.seed], [], [], ["dense"])[0].config_hash


def has_dense_row(table_path: str | os.PathLike, dense_hash: str) -> bool:
    """Whether the runner's table has a dense row of ``dense_hash`` (``dense_row_hash``), or no dense row at all
    (nothing to tell): whether its rows can be computed from the dense model that hash fingerprints."""
    table = read_table(table_path)
    dense = table[is_role(table["method"], "reference")]
    return dense.empty or dense_hash in set(dense["config_hash"].astype(str))


def plan(ctx: RunContext, methods: list[str], targets: list[float], seeds: list[int], tiers: list[str],
         schedules: list[str], starts: list[str], shard: tuple[int, int] | None = None) -> list[Job]:
    """Every requested row as a ``Job`` with its key: each method's variants (``registry.variants``) at every
    target and seed. ``shard=(i, n)``: the k-th job in key order goes to part k mod n."""
    base = config_digest(ctx.config, ctx.model)
    jobs: list[Job] = []
    for name in methods:
        method = get_method(name)
        for seed in seeds:
            for target in ([0.0] if method.family == "dense" else targets):
                for tier, schedule, start in variants(method, tiers, schedules, starts):
                    spec = RunSpec(name, tier, schedule, target, seed, start)
                    job_hash = row_hash(base, ctx.config, method.reconstructs(tier), method.settings(ctx, spec))
                    jobs.append(Job(spec, job_hash, phase(method, tier)))
    if shard is None:
        return jobs
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    return [j for k, j in enumerate(sorted(jobs, key=lambda j: tuple(map(str, j.key())))) if k % count == index]


def execute(ctx: RunContext, jobs: list[Job], csv_path: Path, json_file: Path | None = None, model_name: str = "",
            progress: bool = True, also_done: Iterable[str | os.PathLike] = ()) -> pd.DataFrame:
    """Run the jobs whose key is neither in ``csv_path`` nor in ``also_done``'s tables yet (cheap phases first),
    appending each finished row (side tables first); the JSON copy is written at the end, also after an error.
    Returns the table."""
    done = {row_key(r) for path in (csv_path, *also_done) for r in read_table(path).to_dict("records")}
    todo = sorted((j for j in jobs if j.key() not in done),
                  key=lambda j: (j.phase, j.spec.seed, j.spec.target, j.spec.tier))
    if progress:
        print(f"[fcpts.runner] {len(jobs)} rows requested, {len(jobs) - len(todo)} already in {csv_path}, "
              f"{len(todo)} to compute", file=sys.stderr)
    bar = tqdm(todo, desc="comparison", disable=not progress)
    try:
        for job in bar:
            bar.set_postfix_str(job.label())
            row, info = _run_row(ctx, job, model_name)
            if any(k in info for k in SIDE_INFO):  # side tables first: a row in the main table always has them
                write_side_rows(csv_path, row, info)
            append_row(csv_path, row)
            if progress:
                tqdm.write(f"  {job.label():<40} top1 {row['top1']:.2%}  S {row['achieved_sparsity']:.4f}  "
                           f"{row['wall_time']:.1f} s")
    except BaseException:
        _write_json_copy(csv_path, json_file, quiet=True)  # the rows so far; the run's own error goes on
        raise
    return _write_json_copy(csv_path, json_file)


def _write_json_copy(csv_path: Path, json_file: Path | None, quiet: bool = False) -> pd.DataFrame | None:
    """The table as it is on disk, and its JSON copy; ``quiet``: a failure here must not hide the run's own."""
    try:
        table = read_table(csv_path)
        if json_file is not None and len(table):
            write_json_copy(table, json_file)
        return table
    except Exception:
        if not quiet:
            raise
        return None


def _run_row(ctx: RunContext, job: Job, model_name: str) -> tuple[dict, dict]:
    """One job: run its method, evaluate on the seed's test split; (the table row, the run's info)."""
    from .evaluate import evaluate

    spec, config = job.spec, ctx.config
    method = get_method(spec.method)
    tic = time.perf_counter()
    try:
        pruned, info = method.run(ctx, spec)
    except FloatingPointError as exc:  # name the row that diverged; the rows before it are saved
        raise type(exc)(f"{job.label()}: {exc}") from exc
    wall = info.get("wall_time") or (time.perf_counter() - tic)
    b = ctx.bundle(spec.seed)
    metrics = evaluate(pruned, b.test, batch_size=config.eval_batch_size, device=ctx.device, progress=False,
                       num_workers=config.num_workers, per_image=True)
    info = {**info, "outcomes": pack_outcomes(metrics["correct"])}
    zeros, total = count_zeros(pruned)
    row = dict(method=spec.method, tier=spec.tier, schedule=spec.schedule, target=spec.target, seed=spec.seed,
               achieved_sparsity=zeros / total, top1=metrics["top1"], top5=metrics["top5"], wall_time=wall,
               steps=int(info.get("steps", 0)), zeros=zeros, total=total, n_test=metrics["n"], start=spec.start,
               sparsity_before_projection=info.get("sparsity_before_projection", math.nan),
               allocation_drift=info.get("allocation_drift", math.nan),
               dataset=getattr(b, "name", config.dataset), model=model_name, config_hash=job.config_hash,
               finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"), selected=info.get("selected", NONE),
               loop=loop_recipe(config) if method.reconstructs(spec.tier) else NONE)
    return row, info


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N), with 0 <= I < N; a ValueError that says what is expected otherwise."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N, e.g. 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def _parse_shard(parser: argparse.ArgumentParser, text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as exc:
        parser.error(str(exc))


def build_parser(prog: str = "fcpts sweep") -> argparse.ArgumentParser:
    """The sweep's command line (``fcpts sweep``; ``python -m fcpts.runner`` is the same)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="CSV to write (and resume from); default data/comparison_<dataset>.csv")
    parser.add_argument("--json", default=None, help="JSON copy (default: the CSV path with .json)")
    parser.add_argument("--config", default=None, help="YAML Config (default: Config.quick_cpu())")
    parser.add_argument("--dataset", default=None, choices=EMBEDDED_DATASETS,
                        help="the embedded default on another bundled dataset: Config.quick_cpu(dataset=...)")
    parser.add_argument("--recipe", default=None, choices=RECIPES,
                        help="the loop's recipe (Config.with_recipe): released (the default) or kit; kit's held-out "
                        "selection then applies to every reconstruction row (FCPTS, learners, tier c)")
    parser.add_argument("--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="*", default=list(names(family="allocation")),
                        help=f"registered methods (fcpts.registry): {', '.join(METHODS)}")
    parser.add_argument("--tiers", nargs="*", default=list(TIERS))
    parser.add_argument("--schedules", nargs="*", default=list(SCHEDULE_NAMES))
    parser.add_argument("--starts", nargs="*", default=["dense"], help="dense and/or scratch")
    parser.add_argument("--no-fcpts", action="store_true")
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--model", default=None, help="Config.model: a torchvision model (on digits without weights: "
                        "the kit's embedded one of that architecture, trained once and cached)")
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
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m fcpts.runner") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.label_loop:
        for path in args.label_loop:
            print(f"{path}: {label_loop_rows(path)} row(s) labelled")
        return 0
    if args.merge:
        if args.out is None:
            parser.error("--merge needs --out: the table the rows go to")
        try:
            table = merge_tables(args.out, args.merge)
        except FileNotFoundError as exc:
            parser.error(str(exc))
        print(f"{len(table)} rows in {args.out}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config and args.dataset:
        parser.error("--dataset sets up the embedded default; put dataset: in the --config file instead")
    config = Config.from_yaml(args.config) if args.config else Config.quick_cpu(dataset=args.dataset or "digits")
    if args.recipe is not None:
        config = config.with_recipe(args.recipe)
    args.out = args.out or f"data/comparison_{config.dataset}.csv"
    if args.steps is not None:
        config = config.replace(steps=args.steps)
    if args.model is not None:
        config = config.replace(model=args.model)
    finetune = default_finetune(args.finetune_steps or config.steps)
    if args.finetune_lr is not None:
        finetune = finetune.replace(lr=args.finetune_lr)
    pot = PotConfig(device=config.device, progress=False)
    if args.pot_iterations is not None:
        pot = pot.replace(iterations_per_layer=args.pot_iterations)
    if args.pot_lr is not None:
        pot = pot.replace(lr=args.pot_lr)
    dense = {} if args.min_dense_accuracy is None else dict(min_dense_accuracy=args.min_dense_accuracy)
    try:
        table = run_comparison(config, args.methods, args.targets, args.seeds, args.out, tiers=args.tiers,
                               fcpts=not args.no_fcpts, dense=not args.no_dense, schedules=args.schedules,
                               starts=args.starts, finetune=finetune, pot_config=pot,
                               json_path=args.json if args.json else True, progress=not args.quiet,
                               shard=_parse_shard(parser, args.shard), train_dense=not args.no_train, **dense)
    except FileNotFoundError as exc:  # --no-train and no usable dense checkpoint
        parser.error(str(exc))
    print(f"{len(table)} rows in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
