"""Why the quick recipe can end below its own start, and which recipe does not (issue #14).

FCPTS starts from the ERK allocation. With nothing but BN re-estimation, that start (``erk``, tier b) is
already close to the dense model at 50-70 %, so 150 steps of reconstruction have little to win there. This ablation
changes one thing of ``Config.quick_cpu()`` at a time (learning rate, steps, calibration size and
augmentation, BN handling, weight decay; the held-out selection is the kit recipe) and compares every variant, image by image
and seed by seed, with that start and with the faithful recipe (``fcpts.stats.paired_difference``).

One runner CSV per variant, ``benchmarks/results/recipe/<variant>.csv`` (resumable, per-image outcomes kept
beside it); the ``released`` file also holds the dense model and the start. ``--summarize`` writes
``benchmarks/results/recipe_ablation.csv`` and ``recipe_ablation.md``.

    python -m benchmarks.recipe --estimate
    python -m benchmarks.recipe --threads 1 --variants released lr-0.01 --targets 0.7 --seeds 0
    python -m benchmarks.recipe --summarize
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks._common import RESULTS, ROOT, load_dense_model, set_threads
from fcpts import Config, runner
from fcpts import table as runner_table
from fcpts.registry import names

DENSE, FCPTS = names(role="reference")[0], names(role="proposed", default=True)[0]

OUT_DIR = RESULTS / "recipe"
TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)
SEEDS = (0, 1, 2)
BASE = "released"  # its file also holds the dense model and the start (ERK + BN re-estimation)
START = ("erk", "b")
# One change of Config.quick_cpu() per variant; "kit" is the kit recipe (Config.kit_cpu()).
VARIANTS: dict[str, dict] = {
    "released": {},
    "lr-0.01": dict(base_lr=0.01),  # a quarter of the released learning rate
    "steps-50": dict(steps=50),
    "steps-300": dict(steps=300),
    "no-augment": dict(calib_augment=False),
    "calib-1024": dict(calib_size=1024),
    "no-decay": dict(weight_decay=0.0),
    "bn-eval": dict(bn_mode="eval"),  # frozen BN statistics while training, re-estimated at the end
    "bn-recalibrate": dict(bn_recalibrate=True),  # train-mode BN, re-estimated at the end
}
# "kit" is Config.kit_cpu(): today KIT_RECIPE = the held-out selection alone (64 of the 512 calibration images
# never train; at the end they choose between the reconstructed model and the start), so it is also the
# one-change variant of that option.
REFERENCE = ROOT / "data" / "dst_digits.csv"  # FCPTS rows of the released recipe already computed here


def variant_config(variant: str) -> Config:
    if variant == "kit":
        return Config.kit_cpu()
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join([*VARIANTS, 'kit'])}")
    return Config.quick_cpu(**VARIANTS[variant])


def all_variants() -> list[str]:
    return [*VARIANTS, "kit"]


def csv_path(variant: str, out_dir: Path = OUT_DIR) -> Path:
    return Path(out_dir) / f"{variant}.csv"


def run_recipe(variants, targets=TARGETS, seeds=SEEDS, out_dir: Path = OUT_DIR, reference: Path | None = REFERENCE,
               model=None, data=None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """FCPTS rows of every variant (and, in the base file, the dense model and the start) not yet computed."""
    model = model if model is not None else load_dense_model(allow_train=False)
    tables = {}
    for variant in variants:
        config = variant_config(variant)
        path = csv_path(variant, out_dir)
        if reference is not None and Path(reference).exists():
            digest = runner_table.row_hash(runner_table.config_digest(config, model), config, reconstructs=True)
            before = len(runner_table.read_table(path))
            merged = runner_table.merge_tables(path, [reference], where=lambda r: r["method"] == FCPTS
                                         and r["config_hash"] == digest and float(r["target"]) in targets
                                         and int(r["seed"]) in seeds)
            if progress and len(merged) > before:
                print(f"[recipe] {variant}: {len(merged) - before} row(s) copied from {reference}", file=sys.stderr)
        tic = time.perf_counter()
        base = variant == BASE
        try:
            tables[variant] = runner.run_comparison(
                config, methods=[START[0]] if base else [], tiers=[START[1]], targets=targets, seeds=seeds,
                out_csv=path, fcpts=True, dense=base, schedules=(), model=model, data=data, progress=progress)
        except FloatingPointError as exc:  # a variant that diverges is a result too: record it, go on
            record_failure(out_dir, variant, str(exc))
            print(f"[recipe] {variant}: diverged: {exc}", file=sys.stderr)
            tables[variant] = runner_table.read_table(path)
            continue
        if progress:
            print(f"[recipe] {variant}: {len(tables[variant])} rows ({time.perf_counter() - tic:.0f} s)", file=sys.stderr)
    return tables


def failures_path(out_dir: Path = OUT_DIR) -> Path:
    return Path(out_dir) / "failures.json"


def record_failure(out_dir: Path, variant: str, message: str) -> None:
    """Keep the first error of each variant that stopped with a non-finite loss (``failures.json``)."""
    import json

    path = failures_path(out_dir)
    known = json.loads(path.read_text()) if path.exists() else {}
    known.setdefault(variant, message)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=1) + "\n")


def summarize(out_dir: Path = OUT_DIR, targets=TARGETS) -> pd.DataFrame:
    """``fcpts.notebook.recipe_table`` over every variant's file (the notebooks draw the same table)."""
    from fcpts.notebook import recipe_table

    return recipe_table(out_dir, all_variants(), targets)


def markdown(summary: pd.DataFrame) -> str:
    """Variants × targets; each cell: top-1 [95 % interval], then the paired differences to the start and to
    the released recipe with a mark (+ better, − worse, ≈ within noise), and how often the kit kept the start."""
    if summary.empty:
        return "No recipe rows yet.\n"
    targets = sorted(summary.target.unique())
    lines = ["| variant | " + " | ".join(f"{t:.0%}" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for variant in [v for v in ["start", *all_variants()] if v in set(summary.variant)]:
        cells = []
        for t in targets:
            r = summary[(summary.variant == variant) & (summary.target == t)]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            cell = f"{r.top1:.1f} [{r.top1_low:.1f}, {r.top1_high:.1f}] (n={r.seeds})"
            for other in ("start", "released"):
                if not pd.isna(r.get(f"vs_{other}", float("nan"))):
                    cell += (f"<br>vs {other} {r[f'vs_{other}']:+.1f} [{r[f'vs_{other}_low']:+.1f}, "
                             f"{r[f'vs_{other}_high']:+.1f}] {r[f'vs_{other}_verdict']}")
            if r.get("start_chosen", 0) > 0:
                cell += f"<br>returned the start in {int(r.start_chosen)} of {r.seeds}"
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path = OUT_DIR, results: Path = RESULTS) -> pd.DataFrame:
    import json

    summary = summarize(out_dir)
    failed = json.loads(failures_path(out_dir).read_text()) if failures_path(out_dir).exists() else {}
    summary.to_csv(results / "recipe_ablation.csv", index=False, float_format="%.3f")
    text = ("# Recipe ablation (embedded default)\n\nGenerated by `python -m benchmarks.recipe --summarize` from "
            "`benchmarks/results/recipe/`. Top-1 (%) with a 95 % bootstrap interval over seeds and the 360 test "
            "images; below it, the paired differences to FCPTS's own start (ERK + BN re-estimation) and to the "
            "released recipe, in points, over the seeds both ran: + better, − worse, ≈ the interval contains 0. "
            "Embedded default (`Config.quick_cpu()`), one thread per process, two processes on a 2-core CPU.\n\n")
    notes = "".join(f"\n- **{v}** stopped with a non-finite loss: {m}\n" for v, m in failed.items())
    (results / "recipe_ablation.md").write_text(text + markdown(summary) + notes)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=all_variants(), help=f"any of {', '.join(all_variants())}")
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--out-dir", default=str(OUT_DIR))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--summarize", action="store_true", help="only write recipe_ablation.csv/.md")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for variant in args.variants:
        variant_config(variant)  # unknown names fail before anything runs
    if args.summarize:
        summary = write_summary(Path(args.out_dir))
        print(markdown(summary))
        return 0
    set_threads(args.threads)
    run_recipe(args.variants, args.targets, args.seeds, Path(args.out_dir), progress=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
