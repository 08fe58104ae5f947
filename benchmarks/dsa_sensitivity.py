"""DSA-style's unverified knobs: how much do ρ (the ADMM weight) and the keep-ratio learning rate matter?

method.md §7.3 leaves ρ, the α optimiser's learning rate and the α/weight step ratio unverified; the kit
chose ρ = 1, Adam at 0.01 and one α step per weight step (``fcpts.dsa.DsaConfig``). This script reruns
DSA-style on the embedded default with one setting changed at a time, one runner table per setting
(``benchmarks/results/dsa_sensitivity_<field>_<value>.csv``; the runner keys rows by a fingerprint that
includes the options, so separate files keep the settings apart), and prints the sparsity before the
projection and the top-1 after it beside the default's row from ``data/learners_digits.csv``.

    python -m benchmarks.dsa_sensitivity --threads 1                  # ρ 0.1 and 10, bn_mode=eval at 80 %
    python -m benchmarks.dsa_sensitivity --settings alpha_lr=0.1 --targets 0.9
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from benchmarks._common import RESULTS, set_threads
from fcpts import Config, runner
from fcpts.dsa import DsaConfig

SETTINGS = ("rho=0.1", "rho=10", "bn_mode=eval")


def parse(setting: str) -> tuple[str, float | str]:
    """FIELD=VALUE of ``DsaConfig`` (a number) or of ``Config`` (e.g. bn_mode=eval: BN frozen while learning,
    re-estimated on the calibration set after the projection)."""
    field, _, value = setting.partition("=")
    if not value or (field not in DsaConfig.__dataclass_fields__ and field not in Config.__dataclass_fields__):
        raise ValueError(f"setting {setting!r}: use FIELD=VALUE with a DsaConfig or Config field, e.g. rho=10")
    if field in DsaConfig.__dataclass_fields__:
        return field, float(value)
    return field, yaml.safe_load(value)


def sensitivity_csv(field: str, value, out_dir: Path = RESULTS) -> Path:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return Path(out_dir) / f"dsa_sensitivity_{field}_{text}.csv"


def run_sensitivity(settings=SETTINGS, targets=(0.8,), seeds=(0,), out_dir: Path = RESULTS, config=None,
                    model=None, data=None, progress: bool = True) -> pd.DataFrame:
    """DSA-style with each ``FIELD=VALUE`` setting (one at a time); returns every row with field/value columns."""
    config = config or Config.quick_cpu(progress=False)
    tables = []
    for setting in settings:
        field, value = parse(setting)
        in_dsa = field in DsaConfig.__dataclass_fields__
        options = DsaConfig().replace(**{field: value}) if in_dsa else DsaConfig()
        table = runner.run_comparison(config if in_dsa else config.replace(**{field: value}), methods=["dsa"], targets=targets, seeds=seeds,
                                      out_csv=sensitivity_csv(field, value, out_dir), tiers=[], fcpts=False,
                                      dense=False, schedules=(), learner_options={"dsa": options}, model=model,
                                      data=data, progress=progress)
        tables.append(table.assign(field=field, value=value))
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="FIELD=VALUE of DsaConfig, one run each")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8])
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
