"""``fcpts reproduce``: the paper's grid (models × sparsities × methods) on the user's ImageNet and GPUs.

    fcpts reproduce --data /data/imagenet                  # plan + estimate, one process per GPU, merge, report
    fcpts reproduce --data /data/imagenet --plan-only      # the plan and the time estimate only
    fcpts reproduce --data /data/imagenet --shard 3/8      # one part only (e.g. a SLURM array task); no report
    fcpts reproduce --out results/reproduce --report-only  # merge the parts written so far and write the report

The grid is a YAML file (default ``params/paper.yaml``): torchvision models with released weights, global
sparsities, seeds, the fixed allocations in the tiers asked for, the allocation learners, and the FCPTS recipes.
Every run is a row of a sweep-runner table (``fcpts.runner``), so the whole thing resumes: run the same command
again and only the missing rows are computed, whatever number of processes wrote the earlier ones. Layout of
``--out``:

    plan.json                               the grid, the row counts, the probe's timings and the estimate
    <model>/<recipe>.csv (+ _details/)      one runner table per model and FCPTS recipe; the first recipe's
                                            table also holds the dense model, the allocations and the learners
    shards/<model>/<recipe>.<i>of<n>.csv    what process i of n wrote; merged into the table above
    logs/shard-<i>of<n>.log                 each process's output
    summary.csv, report.md, report.png      top-1 with 95 % intervals, beside the published numbers

Relative paths are relative to the folder the command runs in.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from .calibration import check_holdout
from .config import RECIPES, Config, check_target, target_key
from .paths import checkout, results_dir, user_path
from .registry import get_method, label, names, variants
from .runner import parse_shard

PAPER_GRID = "params/paper.yaml"  # in the kit's checkout
VAL_IMAGES = 50_000  # the ImageNet validation split, when the data folder cannot be counted
PUBLISHED_MODELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2",
                    "regnet_x_400mf": "RegNetX-400MF"}  # torchvision name -> the name in data/published_numbers.csv
TIER_TEXT = {"a": "masks only", "b": "+ BN", "c": "+ reconstruction"}


@dataclass(frozen=True)
class Group:
    """One runner table: a model and an FCPTS recipe, with the other methods it carries."""

    model: str
    recipe: str
    methods: tuple[str, ...]  # allocations and learners (the first recipe's table only)
    dense: bool

    @property
    def name(self) -> str:
        return f"{self.model}/{self.recipe}"


@dataclass(frozen=True)
class Grid:
    """What ``fcpts reproduce`` runs (``params/paper.yaml``)."""

    models: tuple[str, ...]
    weights: str = "IMAGENET1K_V1"
    targets: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    seeds: tuple[int, ...] = (0,)
    allocations: tuple[str, ...] = ("uniform", "global", "erk", "lamp", "pot")
    tiers: tuple[str, ...] = ("b", "c")
    learners: tuple[str, ...] = ("str",)
    recipes: tuple[str, ...] = ("released", "kit")
    config: dict[str, Any] = field(default_factory=dict)  # fcpts.Config fields of every run

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> "Grid":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no grid file at {path}; give --grid a YAML file like params/paper.yaml")
        raw = yaml.safe_load(path.read_text()) or {}
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(cls.__dataclass_fields__)}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        grid = cls(**{k: (dict(v) if k == "config" else tuple(v) if isinstance(v, list) else v) for k, v in raw.items()})
        grid.check()
        return grid

    def check(self) -> None:
        """Every name and number is valid before anything runs (a typo fails here, not hours later)."""
        from .models import classification_models

        known = classification_models()
        for model in self.models:
            if model not in known:
                raise ValueError(f"unknown model {model!r} in the grid; torchvision classification models: "
                                 f"{', '.join(known)}")
        for target in self.targets:
            check_target(target)
        for name, family in [(a, "allocation") for a in self.allocations] + [(n, "learner") for n in self.learners]:
            if get_method(name).family != family:
                raise ValueError(f"{name!r} is a {get_method(name).family}, listed under the grid's "
                                 f"{family}s; see fcpts.registry")
        for tier in self.tiers:
            if tier not in TIER_TEXT:
                raise ValueError(f"unknown tier {tier!r}; use a, b and/or c")
        for recipe in self.recipes:
            if recipe not in RECIPES:
                raise ValueError(f"unknown recipe {recipe!r}; use {' and/or '.join(RECIPES)}")
        named = {"model": "the grid's models (--models)", "weights": "the grid's weights (--weights)"}
        for key in set(self.config) & set(named):
            raise ValueError(f"Config.{key} is set per run from {named[key]}, not in config or --set")
        try:
            Config(**self.config)
        except TypeError as exc:  # an unknown field
            raise ValueError(f"the grid's config: {exc}; the fields are fcpts.Config's (docs/options.md)") from None
        for recipe in self.recipes:  # invalid values fail with Config's own message
            config = self.run_config(self.models[0], recipe)
            if config.select_holdout:  # the kit recipe's hold-out must fit the calibration set (before any run)
                check_holdout(config.select_holdout, config.calib_size)

    def run_config(self, model: str, recipe: str) -> Config:
        """The recipe's options first, then the grid's own fields (so a --set reaches every run, recipe or not)."""
        return Config().with_recipe(recipe).replace(**self.config, model=model, weights=self.weights)

    def groups(self) -> list[Group]:
        """One table per model and recipe; the first recipe's also runs the dense model and the other methods."""
        return [Group(model, recipe, (self.allocations + self.learners) if i == 0 else (), i == 0)
                for model in self.models for i, recipe in enumerate(self.recipes)]


# ---------------------------------------------------------------------------------------------------------
# the plan: what runs, and what it costs
# ---------------------------------------------------------------------------------------------------------
def row_kinds(grid: Grid, group: Group) -> dict[str, int]:
    """How many rows of ``group`` cost what: ``steps`` (a reconstruction loop), ``bn`` (BN re-estimation) or
    ``eval`` (the evaluation only)."""
    counts = {"steps": 0, "bn": 0, "eval": 0}
    fcpts = names(role="proposed", default=True)
    for name in (names(role="reference") if group.dense else []) + list(group.methods) + fcpts:
        method = get_method(name)
        per_seed = 1 if method.family == "dense" else len(grid.targets)
        for tier, _, _ in variants(method, grid.tiers):
            kind = "steps" if method.reconstructs(tier) else ("bn" if tier == "b" else "eval")
            counts[kind] += per_seed * len(grid.seeds)
    return counts


def count_val_images(config: Config) -> int:
    """Images in <data_root>/val (one directory listing per class), or 50,000 when there is no folder to count."""
    from .data import _is_image, resolve_imagenet_root

    try:
        val = resolve_imagenet_root(config.data_root or None) / "val"
    except (ValueError, OSError):
        return VAL_IMAGES
    if not val.is_dir():
        return VAL_IMAGES
    return sum(1 for d in os.scandir(val) if d.is_dir() for f in os.scandir(d.path) if _is_image(f.name)) or VAL_IMAGES


def probe(grid: Grid, device: torch.device, steps: int = 3, progress: bool = True) -> dict[str, dict[str, float]]:
    """Per model, on ``device`` with synthetic images of the grid's size: seconds per FCPTS step (the difference
    of two short ``fcpts.sparsify`` runs, so the set-up is not counted) and seconds per evaluated image."""
    from .models import build_model
    from .sparsify import sparsify

    timings = {}
    for model_name in grid.models:
        config = grid.run_config(model_name, grid.recipes[0])
        size, batch = config.image_size, config.batch_size
        calib = torch.randn(2 * batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        config = config.replace(device=str(device), progress=False, num_workers=0, calib_size=len(calib))
        torch.manual_seed(0)
        model = build_model(model_name, weights=None).to(device)

        def timed(n: int) -> float:
            _sync(device)
            tic = time.perf_counter()
            sparsify(model, calib, 0.8, config.replace(steps=n))
            _sync(device)
            return time.perf_counter() - tic

        timed(1)  # warm-up: allocator, cuDNN's algorithm search
        step = max((timed(1 + steps) - timed(1)) / steps, 0.0)
        images = calib[: min(config.eval_batch_size, len(calib))].to(device)
        with torch.inference_mode():
            model.eval()(images)
            _sync(device)
            tic = time.perf_counter()
            for _ in range(2):
                model(images)
            _sync(device)
        per_image = (time.perf_counter() - tic) / (2 * len(images))
        timings[model_name] = dict(step_s=step, eval_image_s=per_image)
        if progress:
            print(f"[reproduce] probe {model_name}: {1000 * step:.0f} ms per FCPTS step (batch {batch}, {size} px), "
                  f"{1 / per_image:.0f} images/s evaluated", file=sys.stderr)
    return timings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate(grid: Grid, timings: dict[str, dict[str, float]], val_images: int, processes: int) -> dict[str, float]:
    """Seconds of device time per model and in all, and the wall time over ``processes`` (an even split)."""
    seconds = {}
    for group in grid.groups():
        t = timings[group.model]
        config = grid.run_config(group.model, group.recipe)
        evaluation = val_images * t["eval_image_s"]
        kinds = row_kinds(grid, group)
        cost = (kinds["steps"] * (config.steps * t["step_s"] + evaluation)
                + kinds["bn"] * (config.calib_size * t["eval_image_s"] + evaluation) + kinds["eval"] * evaluation)
        seconds[group.model] = seconds.get(group.model, 0.0) + cost
    total = sum(seconds.values())
    return dict(per_model_s=seconds, total_s=total, wall_s=total / max(processes, 1), processes=processes)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 3 * 86400 else f"{seconds / 86400:.1f} days"


def format_plan(grid: Grid, counts: dict[str, dict[str, int]], est: dict | None, device: str) -> str:
    total = sum(sum(c.values()) for c in counts.values())
    lines = [f"fcpts reproduce: {len(grid.models)} models x {len(grid.targets)} sparsities "
             f"({', '.join(f'{t:.0%}' for t in grid.targets)}) x seeds {list(grid.seeds)} = {total} runs",
             f"  methods: FCPTS ({' and '.join(grid.recipes)} recipe); "
             f"{', '.join(label(a, short=True) for a in grid.allocations)} in tier(s) {', '.join(grid.tiers)}; "
             f"{', '.join(label(n, short=True) for n in grid.learners)}"]
    for group in grid.groups():
        c = counts[group.name]
        lines.append(f"  {group.name:<28} {sum(c.values()):>4} runs ({c['steps']} with a reconstruction loop, "
                     f"{c['bn']} with BN re-estimation, {c['eval']} evaluation only)")
    if est is not None:
        per_model = ", ".join(f"{m} {_duration(s)}" for m, s in est["per_model_s"].items())
        lines.append(f"  estimate on {device}: {_duration(est['total_s'])} of device time ({per_model}); "
                     f"{_duration(est['wall_s'])} on {est['processes']} process(es)")
        lines.append("  (from a short probe on synthetic images: the learners are timed as an FCPTS step, POT-style's "
                     "per-layer correction as BN re-estimation, and image decoding is assumed to keep up)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# running: one process per GPU, each a deterministic part of every table; then merge
# ---------------------------------------------------------------------------------------------------------
def table_path(out: Path, group: Group) -> Path:
    return out / group.model / f"{group.recipe}.csv"


def shard_path(out: Path, group: Group, shard: tuple[int, int]) -> Path:
    return out / "shards" / group.model / f"{group.recipe}.{shard[0]}of{shard[1]}.csv"


def run_part(grid: Grid, out: Path, shard: tuple[int, int] | None, progress: bool = True,
             model_overrides: dict[str, Any] | None = None) -> None:
    """Compute this process's rows of every table (``shard=None``: all of them, straight into the tables)."""
    from .runner import run_comparison

    for group in grid.groups():
        config = grid.run_config(group.model, group.recipe).replace(**(model_overrides or {}))
        main = table_path(out, group)
        part = main if shard is None else shard_path(out, group, shard)
        part.parent.mkdir(parents=True, exist_ok=True)
        done = [p for p in [main, *_parts(out, group)] if p != part]  # whatever another part or N finished counts
        if progress:
            print(f"[reproduce] {group.name}" + ("" if shard is None else f" (part {shard[0]} of {shard[1]})"),
                  file=sys.stderr)
        run_comparison(config, list(group.methods), grid.targets, grid.seeds, part, tiers=grid.tiers,
                       fcpts=True, dense=group.dense, schedules=[], model_name=group.model, progress=progress,
                       shard=shard, also_done=done)


def _parts(out: Path, group: Group) -> list[Path]:
    return sorted((out / "shards" / group.model).glob(f"{group.recipe}.*of*.csv"))


def merge_parts(grid: Grid, out: Path) -> int:
    """Add every part's rows to its table (rows already there are kept); returns the rows in all tables."""
    from .table import merge_tables, read_table

    total = 0
    for group in grid.groups():
        main = table_path(out, group)
        parts = _parts(out, group)
        if parts:
            merge_tables(main, parts)
        total += len(read_table(main))
    return total


def launch(argv: list[str], processes: int, out: Path, devices: list[str] | None, total: int,
           progress: bool = True) -> None:
    """``processes`` copies of this command, each with ``--shard i/n`` (and one GPU: CUDA_VISIBLE_DEVICES);
    a progress bar over the rows they write; a clear error naming the log of a process that failed."""
    from tqdm.auto import tqdm

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(processes):
        env = dict(os.environ)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i]
        else:  # CPU processes share the cores
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
        log = logs / f"shard-{i}of{processes}.log"
        with log.open("w") as handle:
            procs.append((subprocess.Popen([sys.executable, "-m", "fcpts", "reproduce", *argv, "--shard",
                                            f"{i}/{processes}", "--quiet"], stdout=handle,
                                           stderr=subprocess.STDOUT, env=env), log))
    start = _rows_written(out)
    bar = tqdm(total=total, desc="reproduce", unit="run", disable=not progress)
    failed = []
    try:
        while any(p.poll() is None for p, _ in procs) and not failed:
            time.sleep(5)
            bar.n = min(_rows_written(out) - start, total)
            bar.refresh()
            failed = [(p.returncode, log) for p, log in procs if p.returncode not in (None, 0)]
    finally:
        bar.close()
        for p, _ in procs:  # an interrupt or a failed part stops the others (their finished rows are kept)
            if p.poll() is None:
                p.terminate()
        for p, _ in procs:
            p.wait()
    failed = failed or [(p.returncode, log) for p, log in procs if p.returncode != 0]
    if failed:
        code, log = failed[0]
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"a process failed (exit {code}) and the others were stopped; the rows finished so far are "
                           f"kept and the same command resumes. Log {log}:\n{tail}")


def _rows_written(out: Path) -> int:
    return sum(max(0, sum(1 for _ in p.open()) - 1) for p in (out / "shards").rglob("*of*.csv"))


# ---------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------
def row_label(method: str, tier: str, recipe: str) -> str:
    if get_method(method).role == "proposed":
        return f"{label(method)} ({recipe} recipe)"
    if get_method(method).family == "allocation":
        return f"{label(method, short=True)} {TIER_TEXT[tier]}"
    return label(method, short=True)


def current_rows(grid: Grid, group: Group, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``group``'s table that the grid asks for now (its methods, tiers, targets and seeds) and, per
    method, tier and target, only those of the configuration that ran last: a run resumed with other settings
    (``--set steps=...``) leaves the older rows in the table, and they must not be pooled with the new ones."""
    if not len(table):
        return table
    methods = set((names(role="reference") if group.dense else []) + list(group.methods)
                  + names(role="proposed", default=True))
    targets = {target_key(t) for t in grid.targets} | {target_key(0.0)}
    keep = (table["method"].isin(methods) & table["seed"].isin(grid.seeds)
            & table["target"].map(target_key).isin(targets)
            & pd.Series([get_method(m).family != "allocation" or t in grid.tiers
                         for m, t in zip(table["method"], table["tier"])], index=table.index))
    table = table[keep]
    latest = table.sort_values("finished_at").groupby(["method", "tier", "target"])["config_hash"].transform("last")
    return table[table["config_hash"] == latest.reindex(table.index)]


def summarize(grid: Grid, out: Path) -> pd.DataFrame:
    """One row per model, method, tier, recipe and target: mean top-1 over seeds with its 95 % bootstrap
    interval (seeds and images resampled, ``fcpts.stats``), the achieved sparsity and the dense model's top-1."""
    from .stats import bootstrap_interval
    from .table import outcome_matrix, read_table

    rows = []
    for group in grid.groups():
        path = table_path(out, group)
        table = current_rows(grid, group, read_table(path))
        if not len(table):
            continue
        for (method, tier, target), part in table.groupby(["method", "tier", "target"], sort=False):
            reference = get_method(method).role == "reference"
            try:
                interval = bootstrap_interval(outcome_matrix(path, part))
                top1, low, high = interval.estimate, interval.low, interval.high
            except KeyError:
                top1, low, high = float(part["top1"].mean()), math.nan, math.nan
            rows.append(dict(model=group.model, recipe=group.recipe, method=method, tier=tier,
                             label="dense" if reference else row_label(method, tier, group.recipe),
                             target=float(target), sparsity=float(part["achieved_sparsity"].mean()),
                             seeds=int(part["seed"].nunique()), top1=top1, low=low, high=high,
                             n_test=int(part["n_test"].iloc[0])))
    summary = pd.DataFrame(rows)
    if len(summary):
        dense = summary[summary["label"] == "dense"].set_index("model")["top1"]
        summary["dense_top1"] = summary["model"].map(dense)
    return summary


def write_report(grid: Grid, out: Path, published: pd.DataFrame) -> Path:
    """summary.csv, report.png (accuracy lost against sparsity per model, beside the published numbers) and
    report.md (the tables with intervals, the published numbers used, the machine)."""
    from .plotting import plot_reproduction, save_figure

    summary = summarize(grid, out)
    if not len(summary):
        raise ValueError(f"no results under {out} yet; run `fcpts reproduce` (without --report-only) first")
    summary.to_csv(out / "summary.csv", index=False)
    fig = plot_reproduction(summary, published, PUBLISHED_MODELS)
    save_figure(fig, "report", folder=out)
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    lines = ["# fcpts reproduce: report", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} from `{out}`; grid: {len(grid.models)} models, "
             f"sparsities {', '.join(f'{t:.0%}' for t in grid.targets)}, seeds {list(grid.seeds)}, "
             f"weights {grid.weights or '(random init)'}. Machine of the plan: {plan.get('machine', 'unknown')}.", "",
             "Top-1 (%) on the whole validation split with its 95 % bootstrap interval (images and, with several "
             "seeds, seeds resampled). Published numbers come from other dense models: compare the points lost "
             "from each study's own dense model, as the figure does.", "",
             "![accuracy lost against sparsity, beside the published numbers](report.png)", ""]
    for model, part in summary.groupby("model", sort=False):
        dense = part["dense_top1"].iloc[0]
        lines += [f"## {model} (dense {100 * dense:.2f} %, {int(part['n_test'].iloc[0])} test images)", ""]
        cells = part[part["label"] != "dense"]
        targets = sorted(cells["target"].unique())
        lines.append("| method | " + " | ".join(f"{t:.0%}" for t in targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for text, rows in cells.groupby("label", sort=False):
            by_target = {r["target"]: r for _, r in rows.iterrows()}
            lines.append(f"| {text} | " + " | ".join(_cell(by_target.get(t)) for t in targets) + " |")
        shown = published[published["model"] == PUBLISHED_MODELS.get(model, "")]
        if len(shown):
            sources = sorted(set(s.split(",")[0] for s in shown["source"]))
            lines += ["", f"Published for {PUBLISHED_MODELS[model]} ({len(shown)} numbers from: {'; '.join(sources)}; "
                      "`data/published_numbers.csv` lists each with its source and dense model)."]
        else:
            lines += ["", "No published numbers for this model in `data/published_numbers.csv`."]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _cell(row) -> str:
    if row is None:
        return "–"
    if math.isnan(row["low"]):
        return f"{100 * row['top1']:.2f}"
    return f"{100 * row['top1']:.2f} [{100 * row['low']:.2f}, {100 * row['high']:.2f}]"


# ---------------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------------
def build_parser(prog: str = "fcpts reproduce") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog="Layout, resuming and SLURM: docs/scaling.md.")
    parser.add_argument("--grid", help=f"YAML grid (default: {PAPER_GRID} of the kit's checkout)")
    parser.add_argument("--data", help="ImageNet root with train/ and val/ (Config.data_root; or $IMAGENET_ROOT)")
    parser.add_argument("--out", help="output folder, relative to the current folder (default: reproduce/ in the "
                        "kit's results folder); rerun the same command to resume")
    parser.add_argument("--models", nargs="+", help="override the grid's models")
    parser.add_argument("--targets", type=float, nargs="+", help="override the grid's sparsities")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the grid's seeds (default 1 seed: 0)")
    parser.add_argument("--allocations", nargs="*", help="override the grid's fixed allocations")
    parser.add_argument("--learners", nargs="*", help="override the grid's learners")
    parser.add_argument("--tiers", nargs="*", help="override the grid's tiers")
    parser.add_argument("--recipes", nargs="+", help="override the grid's FCPTS recipes")
    parser.add_argument("--weights", help="override the grid's weights ('none': random init, for a smoke test)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a Config field of every run")
    parser.add_argument("--gpus", type=int, default=None, help="processes, one per GPU (default: every GPU visible; "
                        "1 without CUDA)")
    parser.add_argument("--shard", metavar="I/N", help="compute only part I of N (0-based) and stop: for a cluster "
                        "array job; run with --report-only afterwards")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and the estimate, then stop")
    parser.add_argument("--no-probe", action="store_true", help="plan without the timing probe (no estimate)")
    parser.add_argument("--probe-steps", type=int, default=3, help="FCPTS steps the probe times per model")
    parser.add_argument("--report-only", action="store_true", help="merge the parts written so far and report")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _grid_from_args(args: argparse.Namespace) -> Grid:
    from .cli import parse_sets, weights_field

    overrides = {k: getattr(args, k) for k in ("models", "targets", "seeds", "allocations", "learners", "tiers",
                                               "recipes", "weights")}
    if overrides["weights"] is not None:
        overrides["weights"] = weights_field(overrides["weights"])
    if args.grid is None and checkout() is None:
        raise FileNotFoundError(f"the paper's grid ships with the kit's checkout ({PAPER_GRID}); clone the kit, or "
                                "pass --grid with a YAML file of the same keys")
    raw = Grid.from_yaml(args.grid or checkout() / PAPER_GRID, **overrides)
    config = {**raw.config, **parse_sets(args.set)}  # every field the file or --set names, even at its default
    if args.data:
        config["data_root"] = str(user_path(args.data))
    grid = Grid(**{**asdict(raw), "config": config})
    grid.check()
    return grid


def main(argv: list[str] | None = None, prog: str = "fcpts reproduce") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    progress = not args.quiet
    grid = _grid_from_args(args)
    out = user_path(args.out) if args.out else results_dir() / "reproduce"
    if args.shard:  # one part: no plan, no merge, no report (the command that launched it, or --report-only, does those)
        run_part(grid, out, parse_shard(args.shard), progress)
        return 0
    if not args.report_only:
        from .evaluate import resolve_device

        device = resolve_device(grid.config.get("device", "auto"))
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        processes = args.gpus or max(gpus, 1)
        if device.type == "cuda" and processes > gpus:
            raise ValueError(f"--gpus {processes}, but {gpus} CUDA device(s) are visible")
        if not args.plan_only and grid.config.get("dataset", Config().dataset) in ("imagenet", "folder"):
            from .data import check_imagefolder_layout, resolve_imagenet_root

            check_imagefolder_layout(resolve_imagenet_root(grid.config.get("data_root") or None))  # before the probe
        counts = {g.name: row_kinds(grid, g) for g in grid.groups()}
        est = None
        if not args.no_probe:
            timings = probe(grid, device, args.probe_steps, progress)
            est = estimate(grid, timings, count_val_images(grid.run_config(grid.models[0], grid.recipes[0])),
                           processes)
        machine = (torch.cuda.get_device_name(device) + f" x{gpus}" if device.type == "cuda"
                   else f"CPU ({os.cpu_count()} cores, {platform.machine()})")
        print(format_plan(grid, counts, est, machine))
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_text(json.dumps(dict(grid=asdict(grid), runs=counts, estimate=est, machine=machine,
                                                       written=time.strftime("%Y-%m-%dT%H:%M:%S")), indent=1))
        if args.plan_only:
            return 0
        done = merge_parts(grid, out)  # rows an earlier run finished count as done, whatever its number of processes
        _fetch_weights(grid, progress)
        if processes == 1:
            run_part(grid, out, None, progress)
        else:
            passed = list(argv)
            devices = None
            if gpus:  # each process sees one GPU, as cuda:0
                if grid.config.get("device", "auto") not in ("auto", "cuda"):
                    raise ValueError(f"device={grid.config['device']} names one GPU; with --gpus {processes} every "
                                     "process gets its own: leave device unset (or cuda)")
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(" ", "")
                devices = (visible.split(",") if visible else [str(i) for i in range(gpus)])[:processes]
                passed += ["--set", "device=cuda"]  # never a silent fall-back to the CPU
            total = sum(sum(c.values()) for c in counts.values())
            launch(passed, processes, out, devices, max(total - done, 0), progress)
    rows = merge_parts(grid, out)
    from .plotting import read_published

    report = write_report(grid, out, read_published())
    print(f"{rows} runs in {out}; report: {report}")
    return 0


def _fetch_weights(grid: Grid, progress: bool) -> None:
    """Download each model's weights once, before several processes would race for the same cache file."""
    if not grid.weights:
        return
    from .models import build_model

    for model in grid.models:
        if progress:
            print(f"[reproduce] weights of {model}: {grid.weights}", file=sys.stderr)
        build_model(model, grid.weights)


if __name__ == "__main__":
    raise SystemExit(main())
