"""Quality on the embedded default: top-1 of FCPTS (5 variants) and every baseline tier at 0.5-0.95, 3 seeds.

A thin layer over ``fcpts.runner.run_comparison`` (the one comparison runner; nothing is re-implemented):

* FCPTS in its four released-code variants -- gradient ``released``/``ste`` × bridge ``histogram``/``kde`` --
  each on ``Config.quick_cpu()`` with those two fields changed, and the kit recipe (``Config.kit_cpu()``); one
  CSV per variant, ``benchmarks/results/quality_<gradient>-<bridge>.csv`` and ``quality_kit.csv`` (the runner
  keys rows by a config hash, not by variant name, so separate files keep the variants apart);
* the dense model and every allocation baseline (uniform, global, erk, lamp, pot) in tiers a/b/c, in the
  released-histogram file (the default config, whose FCPTS row they are compared with).

Resumable and runnable in parts (``--targets``, ``--seeds``, ``--methods``, ``--tiers``): the runner skips
rows already present. Rows of the reference sweep (``data/comparison_digits.csv``) computed with the same
config hash (same Config, same dense weights, same POT settings) are copied in instead of recomputed.

    python -m benchmarks.quality --estimate                           # what is left and what it would cost
    python -m benchmarks.quality --targets 0.9 --seeds 0              # one target, one seed, everything
    python -m benchmarks.quality --methods fcpts --targets 0.8 0.9    # the five FCPTS variants only
    python -m benchmarks.quality --methods fcpts-ste-kde uniform --tiers b c

It needs the cached embedded checkpoint (``python -m fcpts train-dense``); ``--allow-train`` lets the
runner train it instead.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks._common import RESULTS, ROOT, embedded_checkpoint_path, load_dense_model, set_threads
from fcpts import Config
from fcpts.config import KIT_RECIPE
from fcpts.baselines import TIERS
from fcpts.registry import METHODS as METHODS_BY_NAME
from fcpts.registry import names
from fcpts import runner
from fcpts import table as runner_table
from fcpts.pot import PotConfig

TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)
SEEDS = (0, 1, 2)
VARIANTS = {
    "released-histogram": dict(gradient="released", bridge="histogram"),
    "released-kde": dict(gradient="released", bridge="kde"),
    "ste-histogram": dict(gradient="ste", bridge="histogram"),
    "ste-kde": dict(gradient="ste", bridge="kde"),
    "kit": dict(KIT_RECIPE),  # the kit recipe (issue #14): its rows are copied from benchmarks/recipe.py's kit table
}
BASE = "released-histogram"
FCPTS_METHODS = tuple(f"fcpts-{v}" for v in VARIANTS)
ALLOCATION_METHODS = tuple(names(family="allocation"))
DENSE, FCPTS = names(role="reference")[0], names(role="proposed", default=True)[0]
METHODS = FCPTS_METHODS + ALLOCATION_METHODS + tuple(names(role="reference"))
REFERENCE = ROOT / "data" / "comparison_digits.csv"
KIT_TABLE = ROOT / "benchmarks" / "results" / "recipe" / "kit.csv"
# Fallback seconds per row (2-core CPU, 1 thread) when no finished row of that kind exists yet to time it by.
NOMINAL_SECONDS = {"fcpts": 300.0, "c": 300.0, "pot": 180.0, "a": 10.0, "b": 15.0, "dense": 5.0}
EVAL_SECONDS = 5.0  # evaluating one row on the digits test split


def expand_methods(names) -> list[str]:
    """``fcpts`` -> the five variants, ``baselines`` -> every allocation; others as given."""
    out: list[str] = []
    for name in names:
        group = {"fcpts": FCPTS_METHODS, "baselines": tuple(ALLOCATION_METHODS), "all": METHODS}.get(name, (name,))
        for item in group:
            if item not in METHODS:
                raise ValueError(f"unknown method {item!r}; choose from {', '.join(METHODS)}, fcpts, baselines, all")
            if item not in out:
                out.append(item)
    return out


def variant_config(variant: str, base: Config | None = None, steps: int | None = None) -> Config:
    config = (base or Config.quick_cpu()).replace(**VARIANTS[variant])
    return config.replace(steps=steps) if steps else config


def csv_path(variant: str, out_dir: str | Path = RESULTS) -> Path:
    return Path(out_dir) / f"quality_{variant}.csv"


def config_hashes(config: Config, model: torch.nn.Module, pot_config: PotConfig | None = None) -> dict[str, str]:
    """The runner's row hashes for ``config``: ``base`` (dense, tiers a/b), ``loop`` (FCPTS and tier c: the rows
    that run the reconstruction loop) and ``pot`` (POT tiers a/b), computed the runner's way."""
    base = runner_table.config_digest(config, model.eval())
    pot = PotConfig(device=config.device, progress=False) if pot_config is None else pot_config
    pot_dict = {k: v for k, v in pot.to_dict().items() if k not in ("seed", "device", "progress")}
    return dict(base=runner_table.row_hash(base, config, False), loop=runner_table.row_hash(base, config, True),
                pot=runner_table.row_hash(base, config, False, {"pot": pot_dict}))


def import_reference(path: Path, reference: Path, hashes: set[str], methods: set[str] | None = None) -> int:
    """Copy rows of ``reference`` with one of ``hashes`` (and a method in ``methods``), and their side rows
    (per-image outcomes, ...), into ``path``; rows already there stay as they are."""
    if not reference.exists():
        return 0
    before = len(runner_table.read_table(path))

    def wanted(row: dict) -> bool:
        return (row["config_hash"] in hashes and row["schedule"] == runner.NONE
                and (methods is None or row["method"] in methods))

    return len(runner_table.merge_tables(path, [reference], where=wanted)) - before


def plan(methods, targets, seeds, tiers) -> dict[str, dict]:
    """Per variant file: which runner call covers the requested methods."""
    jobs = {}
    baselines = [m for m in methods if m in ALLOCATION_METHODS]
    for variant in VARIANTS:
        fcpts = f"{FCPTS}-{variant}" in methods
        is_base = variant == BASE
        if fcpts or (is_base and (baselines or DENSE in methods)):
            jobs[variant] = dict(fcpts=fcpts, methods=baselines if is_base else [],
                                 dense=is_base and DENSE in methods, tiers=list(tiers) if is_base else [])
    return jobs


def remaining(methods, targets, seeds, tiers, out_dir: Path = RESULTS, hashes: dict[str, dict] | None = None) -> list[dict]:
    """Rows requested but not yet in the variant files (by method/tier/target/seed; config hash if given)."""
    rows = []
    for variant, job in plan(methods, targets, seeds, tiers).items():
        table = runner_table.read_table(csv_path(variant, out_dir))
        have = {(r["method"], r["tier"], f"{float(r['target']):.6f}", int(r["seed"]), r["config_hash"])
                for r in table.to_dict("records")} if len(table) else set()
        have_any = {k[:4] for k in have}
        wanted_hashes = (hashes or {}).get(variant)

        def missing(method, tier, target, seed, pot=False):
            key = (method, tier, f"{float(target):.6f}", int(seed))
            if wanted_hashes is None:
                return key not in have_any
            kind = "pot" if pot else "loop" if method == FCPTS or tier == "c" else "base"
            return key + (wanted_hashes[kind],) not in have

        for seed in seeds:
            if job["dense"] and missing(DENSE, runner.NONE, 0.0, seed):
                rows.append(dict(variant=variant, method=DENSE, tier=runner.NONE, target=0.0, seed=seed))
            for target in targets:
                if job["fcpts"] and missing(FCPTS, "c", target, seed):
                    rows.append(dict(variant=variant, method=FCPTS, tier="c", target=target, seed=seed))
                for method in job["methods"]:
                    for tier in job["tiers"]:
                        if missing(method, tier, target, seed, pot=METHODS_BY_NAME[method].tier_b_reuses_a and tier != "c"):
                            rows.append(dict(variant=variant, method=method, tier=tier, target=target, seed=seed))
    return rows


def estimate(rows: list[dict], out_dir: Path = RESULTS, reference: Path = REFERENCE) -> dict:
    """Seconds for the remaining rows, from the median wall time of finished rows of the same kind."""
    finished = [runner_table.read_table(p) for p in list(Path(out_dir).glob("quality_*.csv")) + [reference] if p.exists()]
    finished = [t for t in finished if len(t)]
    table = pd.concat(finished, ignore_index=True) if finished else pd.DataFrame(columns=list(runner_table.COLUMNS))

    def kind(method, tier):
        if method == DENSE:
            return "dense"
        if method == FCPTS or tier == "c":
            return "fcpts" if method == FCPTS else "c"
        return "pot" if METHODS_BY_NAME[method].tier_b_reuses_a else tier

    measured: dict[str, list[float]] = {}
    for r in table.to_dict("records"):
        if r.get("schedule", runner.NONE) == runner.NONE:
            measured.setdefault(kind(r["method"], r["tier"]), []).append(float(r["wall_time"]))
    per_kind = {k: statistics.median(v) for k, v in measured.items() if v}
    total, counts = 0.0, {}
    for r in rows:
        k = kind(r["method"], r["tier"])
        seconds = per_kind.get(k, NOMINAL_SECONDS[k]) + EVAL_SECONDS
        total += seconds
        counts[k] = counts.get(k, 0) + 1
    return dict(rows=len(rows), by_kind=counts, seconds=total, hours=total / 3600,
                seconds_per_row={k: per_kind.get(k, NOMINAL_SECONDS[k]) for k in counts},
                measured_kinds=sorted(per_kind))


def run_quality(methods=METHODS, targets=TARGETS, seeds=SEEDS, tiers=TIERS, out_dir: str | Path = RESULTS,
                reference: Path | None = REFERENCE, steps: int | None = None, base: Config | None = None,
                model: torch.nn.Module | None = None, data=None, pot_config: PotConfig | None = None,
                allow_train: bool = False, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Run every requested row not yet in the variant files; return {variant: table}."""
    out_dir = Path(out_dir)
    methods = expand_methods(methods)
    jobs = plan(methods, targets, seeds, tiers)
    given_model = model
    if model is None:
        model = load_dense_model(allow_train)
    tables = {}
    for variant, job in jobs.items():
        config = variant_config(variant, base, steps)
        path = csv_path(variant, out_dir)
        if reference is not None:
            hashes = config_hashes(config, model, pot_config)
            wanted = {"fcpts"} if variant != BASE else None
            copied = import_reference(path, Path(reference), {hashes["base"], hashes["loop"], hashes["pot"]}, wanted)
            if variant == "kit":  # the same config as benchmarks/recipe.py's kit rows: never compute them twice
                copied += import_reference(path, KIT_TABLE, {hashes["loop"]}, {"fcpts"})
            if copied and progress:
                print(f"[quality] {variant}: {copied} row(s) copied from {reference}", file=sys.stderr)
        tic = time.perf_counter()
        tables[variant] = runner.run_comparison(
            config, methods=job["methods"], targets=targets, seeds=seeds, out_csv=path, tiers=job["tiers"],
            fcpts=job["fcpts"], dense=job["dense"], schedules=(), model=given_model, data=data,
            pot_config=pot_config, json_path=True, progress=progress)
        if progress:
            print(f"[quality] {variant}: {len(tables[variant])} rows in {path} ({time.perf_counter() - tic:.0f} s)",
                  file=sys.stderr)
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["all"],
                        help=f"any of {', '.join(METHODS)}; shorthands: fcpts, baselines, all")
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--tiers", nargs="+", choices=TIERS, default=list(TIERS))
    parser.add_argument("--steps", type=int, default=None, help="override Config.steps (changes the config hash)")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--reference", default=str(REFERENCE), help="reuse matching rows of this runner CSV ('' = none)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--estimate", action="store_true", help="only list what is left and estimate its cost")
    parser.add_argument("--allow-train", action="store_true", help="let the runner train the dense model if missing")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    methods = expand_methods(args.methods)
    if args.estimate:
        hashes = None
        if embedded_checkpoint_path().exists():
            model = load_dense_model(False)
            hashes = {v: config_hashes(variant_config(v, steps=args.steps), model) for v in VARIANTS}
        rows = remaining(methods, args.targets, args.seeds, args.tiers, Path(args.out_dir), hashes)
        est = estimate(rows, Path(args.out_dir), Path(args.reference) if args.reference else REFERENCE)
        print(f"{est['rows']} rows left: {est['by_kind']}")
        print(f"estimated {est['seconds'] / 60:.0f} min ({est['hours']:.1f} h) at s/row {est['seconds_per_row']} "
              f"(+{EVAL_SECONDS:.0f} s evaluation each; measured kinds: {est['measured_kinds'] or 'none yet'})")
        return 0
    run_quality(methods, args.targets, args.seeds, args.tiers, args.out_dir,
                Path(args.reference) if args.reference else None, args.steps, allow_train=args.allow_train,
                progress=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
