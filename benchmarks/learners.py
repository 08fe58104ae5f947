"""Step cost of each allocation learner as a ratio to FCPTS's step, measured in one process.

Every learner runs through the same loop (``fcpts.sparsify.learn_allocation``), so the step cost includes
exactly what the learner adds: STR's soft threshold, ProbMask's concrete noise + Adam on one score per weight
+ the budget projection, DSA-style's β₁ solve + Bernoulli draw + implicit gradient + ADMM. A step is timed as
(wall of a run of ``long`` steps − wall of a run of ``short`` steps) / (long − short), so the set-up (copies,
ERK start) and the final projection cancel out; the methods are interleaved, and the median of ``repeats`` is
kept, so load from other processes spreads over all of them alike.

    python -m benchmarks.learners --threads 1            # -> benchmarks/results/learners_speed.json
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks._common import RESULTS, dense_resnet50, envelope, set_threads, write_json
from fcpts import Config
from fcpts.registry import METHODS, RunContext, RunSpec, names

METHOD_NAMES = tuple(names(role="proposed", default=True) + names(family="learner", role="competitor", default=True))


def step_costs(model: torch.nn.Module, data, config: Config, methods=METHOD_NAMES, short: int = 2,
               long: int = 12, repeats: int = 3, target: float = 0.8) -> dict[str, dict]:
    """Seconds per optimiser step of each method (median over ``repeats``), and its ratio to FCPTS's.
    ``data``: a ``DataBundle`` (only its calibration set is used)."""
    if long <= short:
        raise ValueError("long must exceed short")
    ctx = RunContext(config, model, lambda seed: data, torch.device("cpu"))
    samples: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for name in methods:
            walls = []
            for steps in (short, long):
                ctx.config = config.replace(steps=steps)
                tic = time.perf_counter()
                METHODS[name].run(ctx, RunSpec(name, "c", "-", target, config.seed))
                walls.append(time.perf_counter() - tic)
            samples[name].append((walls[1] - walls[0]) / (long - short))
    fcpts = METHOD_NAMES[0]
    base = statistics.median(samples[fcpts]) if fcpts in samples else None
    return {name: dict(seconds_per_step=statistics.median(values), samples=values,
                       ratio_to_fcpts=statistics.median(values) / base if base else None)
            for name, values in samples.items()}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| method | s / step | × FCPTS step |", "|---|---|---|"]
    for name, r in results.items():
        ratio = f"{r['ratio_to_fcpts']:.2f}" if r["ratio_to_fcpts"] is not None else "–"
        lines.append(f"| {name} | {r['seconds_per_step']:.3f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=12)
    parser.add_argument("--model", default="auto", help="auto | embedded | random (the step cost does not depend on weights)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "learners_speed.json"))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if "fcpts" not in args.methods:
        args.methods = ["fcpts"] + args.methods  # the ratio needs FCPTS measured in the same process
    from fcpts.data import load_data

    config = Config.quick_cpu(progress=False)
    model, source = dense_resnet50(args.model)
    results = step_costs(model, load_data(config), config, tuple(args.methods), args.short, args.long, args.repeats)
    settings = dict(model=f"resnet50, {source}", image_size=config.image_size, batch_size=config.batch_size,
                    short=args.short, long=args.long, repeats=args.repeats, threads=torch.get_num_threads())
    write_json(envelope("learners_speed", settings, results), args.out)
    print(markdown(results))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
