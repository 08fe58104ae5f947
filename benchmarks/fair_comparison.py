"""Do the digits conclusions survive a harder dataset, fair learners and a longer schedule? (issue #25)

Every part is a list of runner sweeps (``fcpts.runner.run_comparison``): resumable (a finished row is never
computed again), split into shards (one process per core, ``--shard I/N``, each appending to
``data/sweeps/<part>_<I>.csv``), joined into the part's table by ``--merge``. Rows are keyed by everything that
changes them, so the parts' tables can be merged in any order, and an interrupted part resumes where it stopped.

    python -m benchmarks.fair_comparison --part fashion --shard 0/2 &   # and --shard 1/2 beside it
    python -m benchmarks.fair_comparison --merge                        # every part's shards into its table
    python -m benchmarks.fair_comparison --report                       # -> benchmarks/results/fair_comparison.md

Parts (``PARTS``): ``fashion`` (the main comparison on Fashion-MNIST, seed 0 first, then 1 and 2),
``fashion-kit`` (FCPTS with the kit recipe there), ``adapted`` and ``adapted-fashion`` (the learners' fair
adaptations at 80/90/95 %), ``long95-digits`` (FCPTS and STR at 95 % with 150, 600 and 1,600 steps) and
``long95-fashion`` (600 steps; the 150-step rows are the main comparison's).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks._common import RESULTS, ROOT, set_threads
from fcpts import Config, runner
from fcpts import notebook as nb
from fcpts.table import merge_tables

SWEEPS = ROOT / "data" / "sweeps"
TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)
HIGH = (0.8, 0.9, 0.95)  # where the learners' adaptations are compared
SEEDS = (0, 1, 2)
FAITHFUL = ("str", "probmask", "dsa")
ADAPTED = tuple(f"{name}-adapted" for name in FAITHFUL)
MAIN_METHODS = ("uniform", "global", "erk", "lamp", "pot") + FAITHFUL + ("dst-ee", "rigl")


@dataclass(frozen=True)
class Sweep:
    """One ``run_comparison`` call: the embedded default on ``dataset`` with ``recipe`` and ``steps``."""

    dataset: str
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = SEEDS
    targets: tuple[float, ...] = TARGETS
    recipe: str = "released"
    steps: int = 150
    tiers: tuple[str, ...] = ()
    schedules: tuple[str, ...] = ()
    fcpts: bool = True
    dense: bool = True

    def config(self) -> Config:
        return Config.quick_cpu(dataset=self.dataset, steps=self.steps).with_recipe(self.recipe)


@dataclass(frozen=True)
class Part:
    table: str  # the table its shards merge into (under data/)
    sweeps: tuple[Sweep, ...] = field(default_factory=tuple)


def _main(seeds):
    return Sweep("fashion-mnist", MAIN_METHODS, seeds, tiers=("b", "c"), schedules=("one_cycle",))


def _adapted(dataset: str) -> tuple[Sweep, ...]:
    """Seed 0 first (a whole first pass), then the faithful learners' and FCPTS's seeds the pairing needs (on digits
    they had one seed at 95 %; rows already in the part's table are skipped), then the other seeds."""
    return (Sweep(dataset, ADAPTED, (0,), targets=HIGH, fcpts=False),
            Sweep(dataset, FAITHFUL, (1, 2), targets=HIGH),  # FCPTS too: its rows pair with the adapted ones
            Sweep(dataset, ADAPTED, (1, 2), targets=HIGH, fcpts=False))


def _long95(dataset: str, steps: tuple[int, ...]) -> tuple[Sweep, ...]:
    return tuple(s for n in steps for s in (Sweep(dataset, ("str",), targets=(0.95,), steps=n),
                                            Sweep(dataset, (), targets=(0.95,), steps=n, recipe="kit", dense=False)))


PARTS = {
    "fashion": Part("comparison_fashion-mnist.csv", (_main((0,)), _main((1, 2)))),
    "fashion-kit": Part("comparison_fashion-mnist.csv",
                        (Sweep("fashion-mnist", recipe="kit", dense=False, fcpts=True),)),
    "adapted": Part("learners_digits.csv", _adapted("digits")),
    "adapted-fashion": Part("comparison_fashion-mnist.csv", _adapted("fashion-mnist")),
    "long95-digits": Part("long95_digits.csv", _long95("digits", (150, 600, 1600))),
    # the 150-step rows at 95 % are the main comparison's (fashion, fashion-kit): the report reads them there
    "long95-fashion": Part("long95_fashion-mnist.csv", _long95("fashion-mnist", (600,))),
}
# the shard files of the first runs had these names; keep them so those runs resume
SHARD_STEM = {"fashion": "fashion_main", "fashion-kit": "fashion_kit"}


def shard_path(part: str, index: int) -> Path:
    return SWEEPS / f"{SHARD_STEM.get(part, part.replace('-', '_'))}_{index}.csv"


def shard_files(part: str) -> list[Path]:
    return sorted(SWEEPS.glob(f"{SHARD_STEM.get(part, part.replace('-', '_'))}_[0-9]*.csv"))


def run_part(part: str, shard: tuple[int, int], progress: bool = False, steps: tuple[int, ...] = ()) -> None:
    """This process's share of ``part``; rows in the part's other shard files or its merged table count as done
    (so a part may resume with another number of processes). ``steps``: only the sweeps of these lengths (to run
    the short schedules of a part in one sitting and the long ones in another)."""
    out = shard_path(part, shard[0])
    done = [p for p in shard_files(part) if p != out] + [ROOT / "data" / PARTS[part].table]
    sweeps = [s for s in PARTS[part].sweeps if not steps or s.steps in steps]
    if not sweeps:
        raise ValueError(f"part {part} has no sweep of {list(steps)} steps; it has "
                         f"{sorted({s.steps for s in PARTS[part].sweeps})}")
    for sweep in sweeps:
        runner.run_comparison(sweep.config(), sweep.methods, sweep.targets, sweep.seeds, out, tiers=sweep.tiers,
                              fcpts=sweep.fcpts, dense=sweep.dense, schedules=sweep.schedules, progress=progress,
                              shard=shard, train_dense=False, also_done=done)


def merge(parts=tuple(PARTS)) -> dict[str, int]:
    """Every part's shard files into its table; returns the rows per table."""
    rows = {}
    for table in dict.fromkeys(PARTS[p].table for p in parts):
        shards = sorted(path for p in parts if PARTS[p].table == table for path in shard_files(p))
        if shards:
            rows[table] = len(merge_tables(ROOT / "data" / table, shards))
    return rows


# ----- the report ----------------------------------------------------------------------------------------------
def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def markdown(frame: pd.DataFrame) -> list[str]:
    """A small DataFrame as a markdown table (its index as the first column)."""
    head = [frame.index.name or ""] + [str(c) for c in frame.columns]
    rows = [[str(i)] + [str(v) for v in row] for i, row in zip(frame.index, frame.itertuples(index=False))]
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def comparison_section(path: Path) -> list[str]:
    if not path.exists():
        return [f"## {path.name}", "", "Not run yet."]
    table = nb.labelled_rows(path)
    dense = table[table.method == "dense"]
    lines = [f"## Every method on {table.dataset.iloc[0]} (`{shown(path)}`)", "",
             f"Top-1 (%) on all {int(table.n_test.iloc[0]):,} test images: mean over the seeds with its 95 % "
             f"interval over seeds and images, n = seeds. Dense: {100 * dense.top1.mean():.2f} %.", ""]
    lines += markdown(nb.pooled_table(table, TARGETS))
    planned = lambda label, t: label.endswith("(adapted)") and t not in HIGH  # adapted rows: HIGH only
    for mine in ("FCPTS (released)", "FCPTS (kit)"):
        lines += ["", f"{mine} against every other method, paired on the same images and seeds (a verdict only "
                  "when the 95 % interval of the difference excludes 0):", ""]
        lines += markdown(nb.verdict_counts(table, mine, TARGETS, skip=planned))
    lines += ["", "The differences behind the digits conclusions (points, a − b on the same images and seeds, 95 % "
              "interval; n = seeds both ran):", ""]
    return lines + markdown(nb.paired_table(table, nb.CONCLUSION_PAIRS, TARGETS))


def adapted_section(path: Path) -> list[str]:
    if not path.exists():
        return []
    table = nb.adapted_table(nb.labelled_rows(path), FAITHFUL, HIGH)
    if table.empty:
        return []
    return ([f"### Faithful against adapted learners (`{shown(path)}`)", "",
             "S before = the sparsity of the learner's own masks before the exact projection (%, mean over seeds); "
             "top-1 after it, with its 95 % interval over seeds and images; the difference is adapted − faithful on "
             "the same images and seeds, as is FCPTS (released recipe) − adapted; n = the seeds both ran.", ""]
            + markdown(table.reset_index(level=1)))


def long95_section(paths: list[Path]) -> list[str]:
    """FCPTS and STR at 95 % by schedule length; each (steps, row label) from the first of ``paths`` that has it."""
    paths = [p for p in paths if p.exists()]
    if not paths:
        return []
    tables = [nb.labelled_rows(p) for p in paths]
    table = nb.steps_table(tables)
    if table.empty:
        return []
    dataset = next(t.dataset.iloc[0] for t in tables if len(t))  # steps_table found rows, so one has some
    return ([f"### 95 % over the schedule length on {dataset} "
             f"({', '.join(f'`{shown(p)}`' for p in paths)})", "",
             "Top-1 (%), mean over seeds with its 95 % interval over seeds and images; the differences are paired on "
             "the same images and seeds.", ""] + markdown(table))


def report() -> str:
    lines = ["# Fair comparison: a second dataset, fair learners, a longer schedule",
             "", "Written by `python -m benchmarks.fair_comparison --report` from the committed tables.", ""]
    fashion = ROOT / "data" / PARTS["fashion"].table
    lines += comparison_section(fashion) + [""]
    for path in (ROOT / "data" / PARTS["adapted"].table, fashion):
        lines += adapted_section(path) + [""]
    lines += long95_section([ROOT / "data" / PARTS["long95-digits"].table]) + [""]
    lines += long95_section([ROOT / "data" / PARTS["long95-fashion"].table, fashion]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fair_comparison", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=list(PARTS), help="run this part (resumable)")
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="this process's share of the part")
    parser.add_argument("--merge", action="store_true", help="join every part's shard files into its table")
    parser.add_argument("--report", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}/fair_comparison.md")
    parser.add_argument("--steps", type=int, nargs="+", default=(), metavar="N",
                        help="with --part: only its sweeps of these reconstruction lengths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if not (args.part or args.merge or args.report):
        parser.error("say what to do: --part NAME, --merge and/or --report")
    if args.part:
        set_threads(args.threads)
        run_part(args.part, runner.parse_shard(args.shard), args.progress, tuple(args.steps))
    if args.merge:
        for table, n in merge().items():
            print(f"{n} rows in data/{table}")
    if args.report:
        out = RESULTS / "fair_comparison.md"
        out.write_text(report())
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
