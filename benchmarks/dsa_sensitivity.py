"""DSA-style's unverified knobs: how much do ρ (the ADMM weight) and the keep-ratio learning rate matter?

method.md §7.3 leaves ρ, the α optimiser's learning rate and the α/weight step ratio unverified; the kit
chose ρ = 1, Adam at 0.01 and one α step per weight step (``fcpts.dsa.DsaConfig``). This script reruns
DSA-style on the embedded default with one setting changed at a time, one runner table per setting
(``benchmarks/results/dsa_sensitivity_<field>_<value>.csv``; the runner keys rows by a fingerprint that
includes the options, so separate files keep the settings apart), and prints the sparsity before the
projection and the top-1 after it beside the default's row from ``data/learners_digits.csv``.

    python benchmarks/dsa_sensitivity.py --threads 1                        # ρ 0.1 and 10, α lr 0.1 at 90 %
    python benchmarks/dsa_sensitivity.py --settings rho=0.01 --targets 0.8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from benchmarks._common import RESULTS, set_threads  # noqa: E402
from fcpts import Config, runner  # noqa: E402
from fcpts.dsa import DsaConfig  # noqa: E402

SETTINGS = ("rho=0.1", "rho=10", "alpha_lr=0.1")


def parse(setting: str) -> tuple[str, float]:
    field, _, value = setting.partition("=")
    if field not in DsaConfig.__dataclass_fields__ or not value:
        raise ValueError(f"setting {setting!r}: use FIELD=VALUE with a DsaConfig field, e.g. rho=10")
    return field, float(value)


def sensitivity_csv(field: str, value: float, out_dir: Path = RESULTS) -> Path:
    return Path(out_dir) / f"dsa_sensitivity_{field}_{value:g}.csv"


def run_sensitivity(settings=SETTINGS, targets=(0.9,), seeds=(0,), out_dir: Path = RESULTS, config=None,
                    model=None, data=None, progress: bool = True) -> pd.DataFrame:
    """DSA-style with each ``FIELD=VALUE`` setting (one at a time); returns every row with field/value columns."""
    config = config or Config.quick_cpu(progress=False)
    tables = []
    for setting in settings:
        field, value = parse(setting)
        options = DsaConfig().replace(**{field: value})
        table = runner.run_comparison(config, methods=["dsa"], targets=targets, seeds=seeds,
                                      out_csv=sensitivity_csv(field, value, out_dir), tiers=[], fcpts=False,
                                      dense=False, schedules=(), learner_options={"dsa": options}, model=model,
                                      data=data, progress=progress)
        tables.append(table.assign(field=field, value=value))
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="FIELD=VALUE of DsaConfig, one run each")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    table = run_sensitivity(args.settings, args.targets, args.seeds, progress=not args.quiet)
    print(table[["field", "value", "target", "seed", "sparsity_before_projection", "top1"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
