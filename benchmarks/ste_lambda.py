"""The straight-through gradient against λ: does a heavier L_c rescue ``gradient="ste"``?

At the released λ = 1 the straight-through mode lets L_rec pull every threshold down (keeping weights helps
the reconstruction), and the global sparsity stalls well below the target until the final projection forces
it (``quality.py``). This script reruns FCPTS with ``gradient="ste"`` on the embedded default for several
λ (``Config.lam``), one CSV per λ (``benchmarks/results/ste_lambda_<λ>.csv``; the runner keys rows by config
hash, so separate files keep the λ apart), and records the top-1 and the sparsity *before* the projection.

    python -m benchmarks.ste_lambda                                  # λ = 1 10 100 at 80 %, seed 0
    python -m benchmarks.ste_lambda --lams 10 --targets 0.9 --bridge kde

Rows already present are skipped; λ = 1 rows are copied from ``quality_ste-<bridge>.csv`` when they match.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks._common import RESULTS, load_dense_model, set_threads
from benchmarks.quality import config_hashes, csv_path, import_reference, variant_config
from fcpts import runner

LAMS = (1.0, 10.0, 100.0)


def lambda_csv(lam: float, bridge: str = "histogram", out_dir: Path = RESULTS) -> Path:
    return Path(out_dir) / f"ste_lambda_{bridge}_{lam:g}.csv"


def run_ste_lambda(lams=LAMS, targets=(0.8,), seeds=(0,), bridge: str = "histogram", out_dir: Path = RESULTS,
                   model=None, data=None, base=None, steps: int | None = None, allow_train: bool = False,
                   progress: bool = True) -> pd.DataFrame:
    """FCPTS (STE) for every λ × target × seed not yet computed; returns all rows with a ``lam`` column."""
    given = model
    model = model if model is not None else load_dense_model(allow_train)
    tables = []
    for lam in lams:
        if lam < 0:
            raise ValueError(f"λ must be >= 0, got {lam}")
        config = variant_config(f"ste-{bridge}", base, steps).replace(lam=float(lam))
        path = lambda_csv(lam, bridge, out_dir)
        quality_file = csv_path(f"ste-{bridge}", out_dir)
        if quality_file.exists():  # the λ = 1 rows of the quality benchmark, same config hash
            import_reference(path, quality_file, {config_hashes(config, model)["loop"]}, {"fcpts"})
        table = runner.run_comparison(config, methods=[], targets=targets, seeds=seeds, out_csv=path, tiers=[],
                                      fcpts=True, dense=False, schedules=(), model=given, data=data,
                                      json_path=True, progress=progress)
        tables.append(table.assign(lam=float(lam)))
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lams", type=float, nargs="+", default=list(LAMS))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--bridge", choices=["histogram", "kde"], default="histogram")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--allow-train", action="store_true", help="train the dense model if it is not cached")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    table = run_ste_lambda(args.lams, args.targets, args.seeds, args.bridge, allow_train=args.allow_train,
                           progress=not args.quiet)
    print(table[["lam", "target", "seed", "top1", "sparsity_before_projection", "achieved_sparsity"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
