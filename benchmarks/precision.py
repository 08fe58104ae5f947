"""bf16 forward passes against fp32: what ``Config.precision="bf16"`` costs in accuracy on the embedded default.

FCPTS with the released recipe (``Config.quick_cpu()``) and ``precision="bf16"`` (autocast for the teacher and
student forwards; thresholds, bridge and objective in fp32) into ``benchmarks/results/precision_bf16.csv``; the fp32
rows are the default's, from ``quality_released-histogram.csv`` (same dense model, seeds and test images). Each
target's difference is paired image by image over the seeds both ran (``fcpts.stats``), with its 95 % interval.

    python -m benchmarks.precision                       # 80 and 90 %, seeds 0 1 2 (resumable)
    python -m benchmarks.precision --targets 0.5 0.7     # more targets

Writes ``precision.json`` and ``precision.md`` beside the table, with the loop's seconds per step in each precision
on this machine: the real ``fcpts.sparsify``, runs of two lengths alternated (fp32, bf16, fp32, bf16, ...) in one
process, the per-step time from their difference. Whether bf16 pays depends on the processor (bf16 matrix
instructions or not); on GPUs ``benchmarks/gpu.py --precision fp32 bf16`` measures it.
"""
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._common import RESULTS, load_dense_model, machine, set_threads, write_json
from benchmarks.quality import config_hashes, csv_path, variant_config
from fcpts import runner
from fcpts.config import at_target
from fcpts.table import paired_over_seeds, read_table

BF16_CSV = RESULTS / "precision_bf16.csv"


def fcpts_rows(path, target: float):
    table = read_table(path)
    return table[(table["method"] == "fcpts") & at_target(table["target"], target)]


def step_seconds(model, config, short: int = 10, long: int = 30, repeats: int = 2) -> dict[str, float]:
    """Median seconds per loop step of ``fcpts.sparsify`` in fp32 and bf16, precisions alternated."""
    from fcpts import sparsify
    from fcpts.data import load_data

    calib = load_data(config).calib
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision in seconds:
            walls = []
            for steps in (short, long):
                tic = time.perf_counter()
                sparsify(model, calib, 0.8, config.replace(precision=precision, steps=steps, progress=False))
                walls.append(time.perf_counter() - tic)
            seconds[precision].append((walls[1] - walls[0]) / (long - short))
    return {precision: statistics.median(values) for precision, values in seconds.items()}


def run(targets=(0.8, 0.9), seeds=(0, 1, 2), progress: bool = True) -> dict:
    model = load_dense_model()
    fp32_config = variant_config("released-histogram")
    config = fp32_config.replace(precision="bf16")
    runner.run_comparison(config, methods=[], targets=targets, seeds=seeds, out_csv=BF16_CSV, tiers=[], fcpts=True,
                          dense=False, schedules=(), model=model, progress=progress)
    fp32_csv = csv_path("released-histogram")
    rows = []
    for target in targets:
        bf16, fp32 = fcpts_rows(BF16_CSV, target), fcpts_rows(fp32_csv, target)
        fp32 = fp32[fp32["config_hash"] == config_hashes(fp32_config, model)["loop"]]  # the default's own rows
        paired = paired_over_seeds(BF16_CSV, bf16, fp32_csv, fp32)
        if paired is None:
            continue
        difference, used = paired
        rows.append(dict(target=target, seeds=used, bf16_top1=float(bf16[bf16.seed.isin(used)].top1.mean()),
                         fp32_top1=float(fp32[fp32.seed.isin(used)].drop_duplicates("seed", keep="last").top1.mean()),
                         difference=difference.estimate, low=difference.low, high=difference.high))
    steps = step_seconds(model, fp32_config)
    result = dict(machine=machine(), rows=rows, step_seconds=steps)
    write_json(result, RESULTS / "precision.json")
    lines = ["# bf16 forward passes against fp32 (embedded default, released recipe)", "",
             "Top-1 (%) means over the seeds; the difference bf16 − fp32 in points, paired by image, 95 % interval. "
             "`python -m benchmarks.precision`.", "",
             "| target | seeds | fp32 | bf16 | bf16 − fp32 |", "|---|---|---|---|---|"]
    lines += [f"| {r['target']:.0%} | {', '.join(map(str, r['seeds']))} | {100 * r['fp32_top1']:.2f} | "
              f"{100 * r['bf16_top1']:.2f} | {100 * r['difference']:+.2f} [{100 * r['low']:+.2f}, "
              f"{100 * r['high']:+.2f}] |" for r in rows]
    lines += ["", f"One loop step on this machine ({result['machine']['processor']}, {result['machine']['torch_threads']} "
              f"thread(s)): fp32 {steps['fp32']:.3f} s, bf16 {steps['bf16']:.3f} s (bf16 / fp32 = "
              f"{steps['bf16'] / steps['fp32']:.2f}; medians of alternated runs, the embedded ResNet-50 at 32 px, batch 64)."]
    (RESULTS / "precision.md").write_text("\n".join(lines) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    run(tuple(args.targets), tuple(args.seeds), not args.quiet)
    print((RESULTS / "precision.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
