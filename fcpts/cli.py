"""The ``fcpts`` command: ``demo`` (the embedded default), ``run`` (any model, full mode), ``sweep`` (a comparison
table, ``fcpts.runner``), ``reproduce`` (the paper's grid on ImageNet, ``fcpts.reproduce``), ``train-dense``, ``export``
(a run's pruned model as a smaller sparse file).

    fcpts demo                                   # digits + the kit's ResNet-50, FCPTS vs uniform/global
    fcpts run --config params/full.yaml          # the released recipe on ImageNet
    fcpts run --config params/full.yaml --recipe kit   # ... with the kit's options (held-out selection)
    fcpts run --model resnet50 --weights IMAGENET1K_V1 --data /path/to/imagenet --target 0.8 --calib 1024
    fcpts sweep --methods uniform erk --targets 0.8 0.9 --out results/sweep.csv   # resumable comparison table
    fcpts reproduce --data /path/to/imagenet     # the paper's grid: plan, estimate, every GPU, report
    fcpts train-dense                            # (re)build the embedded dense checkpoint
    fcpts export RUN_DIR --fp16                  # RUN_DIR/sparse_model.pt: bitmask + non-zeros (fcpts.load_sparse)

Every option maps onto one field of ``fcpts.Config``; ``--set field=value`` reaches any other field.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
import yaml

from . import distributed
from .config import KIT_RECIPE, RECIPES, Config
from .data import DATASETS, load_data
from .evaluate import evaluate, resolve_device
from .guards import DivergedError
from .masking import count_zeros, weight_sparsity_table
from .models import EMBEDDED_DATASETS, embedded_recipe, load_embedded_model, resolve_dense_model
from .paths import results_dir, user_path
from .registry import METHODS, RunContext, RunSpec, get_method, names, variants
from .sparsify import SparsifyResult

RECIPE_HELP = (f"released: the authors' recipe (the default); kit: the kit's options on top "
               f"({', '.join(f'{k}={v}' for k, v in KIT_RECIPE.items())}; benchmarks/results/recipe_ablation.md)")
DEMO_TARGETS = (0.8, 0.9)
DEMO_BASELINES = ("uniform", "global")  # allocations the demo compares FCPTS with (tier b)
DEFAULT_METHOD = names(role="proposed", default=True)[0]  # FCPTS with the Config's recipe
DEBUG_ENV = "FCPTS_DEBUG"  # set to 1: errors keep their traceback


def _out_dir(path: str | Path, overwrite: bool) -> Path:
    """Make an output folder and refuse to clobber results. A relative path is relative to the current folder, as
    for any command-line tool; only defaults (no --out) live in ``fcpts.paths.results_dir()``."""
    out = user_path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"error: {out} already holds results; pass --overwrite to replace them or choose --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def weights_field(text: str) -> str:
    """``--weights``: a torchvision weights name, or "none" (any case) for a random init (Config.weights = "")."""
    return "" if text.strip().lower() == "none" else text


def _parse_value(text: str):
    return yaml.safe_load(text)


def parse_sets(sets: list[str] | None) -> dict:
    """``--set field=value`` items as {field: YAML-parsed value}."""
    overrides = {}
    for item in sets or []:
        if "=" not in item:
            raise SystemExit(f"error: --set expects field=value, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _parse_value(value)
    return overrides


def _apply_sets(config: Config, sets: list[str]) -> Config:
    try:
        return config.replace(**parse_sets(sets))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"error: {exc}") from None


def save_result(result: SparsifyResult | None, out: Path, metrics: dict, manifest: dict | None,
                model: torch.nn.Module | None = None, config: Config | None = None) -> None:
    """The squashed sparse state_dict, the allocation, the history (learners) and the metrics, side by side."""
    import pandas as pd

    model = result.model if result is not None else model
    config = result.config if result is not None else config
    torch.save(model.state_dict(), out / "sparse_state_dict.pt")
    if result is not None:
        (out / "allocation.json").write_text(json.dumps(result.allocation, indent=1))
        result.layer_table().to_csv(out / "layers.csv", index=False)
        pd.DataFrame(result.history).to_csv(out / "history.csv", index=False)
        pd.DataFrame(result.layer_history).to_csv(out / "layer_history.csv", index=False)
    else:
        layers = pd.DataFrame(weight_sparsity_table(model))
        (out / "allocation.json").write_text(json.dumps(dict(zip(layers.layer, layers.sparsity)), indent=1))
        layers.to_csv(out / "layers.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    config.to_yaml(out / "config.yaml")
    if manifest is not None:
        (out / "calibration.json").write_text(json.dumps(manifest))


def check_method(method: str, tier: str | None):
    """The registered post-training method and its tier (default: c for learners, b for allocations)."""
    spec_method = get_method(method)
    if spec_method.family not in ("learner", "allocation"):
        raise ValueError(f"'fcpts run' runs one post-training method (an allocation or a learner); {method!r} is of "
                         f"the {spec_method.family} family: sweep it with 'fcpts sweep --methods {method}'")
    tier = tier or ("c" if spec_method.family == "learner" else "b")
    allowed = [t for t, _, _ in variants(spec_method)]
    if tier not in allowed:
        raise ValueError(f"--tier {tier!r} does not apply to {method}; use one of {', '.join(allowed)}")
    return spec_method, tier


def run(config: Config, out: Path, progress: bool = True, method: str = DEFAULT_METHOD, tier: str | None = None) -> dict:
    """Full mode: load data and model, run one registered post-training method, evaluate, save. Returns the metrics."""
    spec_method, tier = check_method(method, tier)
    start = time.perf_counter()
    data = load_data(config)
    with distributed.main_first():  # under torchrun rank 0 trains or downloads first; the others find the cache
        model, model_info = resolve_dense_model(config, data.num_classes, progress and distributed.is_main())
    distributed.broadcast_(list(model.state_dict().values()))  # rank 0's model everywhere (random init differs)
    dense = evaluate(model, data.test, config.eval_batch_size, config.device, progress, config.num_workers)
    ctx = RunContext(config, model, lambda seed: data, resolve_device(config.device), progress=progress)
    pruned, info = spec_method.run(ctx, RunSpec(method, tier, "-", config.target, config.seed))
    sparse = evaluate(pruned, data.test, config.eval_batch_size, config.device, progress, config.num_workers)
    zeros, total = count_zeros(pruned)
    result = info.get("result")
    metrics = dict(method=method, tier=tier, model=config.model, weights=config.weights, dataset=config.dataset,
                   target=config.target, achieved_sparsity=zeros / total,
                   sparsity_before_projection=info.get("sparsity_before_projection"),
                   zeros=zeros, total=total, dense_top1=dense["top1"], dense_top5=dense.get("top5"),
                   top1=sparse["top1"], top5=sparse.get("top5"), sparsify_seconds=info.get("wall_time"),
                   total_seconds=time.perf_counter() - start, calib_size=len(data.calib), seed=config.seed,
                   device=str(next(pruned.parameters()).device), torch=torch.__version__)
    metrics["world_size"] = distributed.world()[1]
    if result is not None and result.selection is not None:  # the kit recipe: which candidate, and why
        metrics["selection"] = result.selection
    if distributed.is_main():
        save_result(result, out, metrics, data.manifest, model=pruned, config=config)
    return metrics


def demo(config: Config, out: Path, targets=DEMO_TARGETS, progress: bool = True) -> list[dict]:
    """The main job: FCPTS against uniform and global magnitude pruning (both + BN re-estimation)."""
    from .plotting import plot_allocation, save_figure

    data = load_data(config)
    model, info = resolve_dense_model(config, data.num_classes, progress)
    dense = evaluate(model, data.test, config.eval_batch_size, config.device, progress=False)
    rows = [dict(method=METHODS[names(role="reference")[0]].display, target=0.0, achieved_sparsity=0.0,
                 top1=dense["top1"], seconds=0.0)]
    allocations = {}
    ctx = RunContext(config, model, lambda seed: data, resolve_device(config.device), progress=progress)
    fcpts = METHODS[DEFAULT_METHOD]
    for target in targets:
        _, finfo = fcpts.run(ctx, RunSpec(fcpts.name, "c", "-", target, config.seed))
        result = finfo["result"]
        acc = evaluate(result.model, data.test, config.eval_batch_size, config.device, progress=False)
        chosen = "" if result.selection is None else f" ({result.selection['chosen']})"
        rows.append(dict(method=fcpts.display + chosen, target=target, achieved_sparsity=result.sparsity_after_projection,
                         top1=acc["top1"], seconds=result.wall_time))
        allocations[target] = {fcpts.display: result.allocation, "ERK (start)": result.init_allocation}
        for name in DEMO_BASELINES:
            pruned, binfo = METHODS[name].run(ctx, RunSpec(name, "b", "-", target, config.seed))
            acc = evaluate(pruned, data.test, config.eval_batch_size, config.device, progress=False)
            rows.append(dict(method=f"{name}+BN", target=target, achieved_sparsity=binfo["achieved_sparsity"],
                             top1=acc["top1"], seconds=binfo["wall_time"]))
            allocations[target][name.capitalize()] = binfo["allocation"]
    summary = dict(config=config.to_dict(), dense_checkpoint=info.get("path"), rows=rows, torch=torch.__version__)
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    for target, allocs in allocations.items():
        fig = plot_allocation(allocs, title=f"Per-layer sparsity at {target:.0%} (embedded ResNet-50, digits)")
        save_figure(fig, f"demo_allocation_{int(round(target * 100))}", folder=out)
    return rows


def format_table(rows: list[dict]) -> str:
    w = max([12] + [len(r["method"]) for r in rows])
    lines = [f"{'method':<{w}} {'target':>7} {'achieved':>9} {'top-1':>7} {'time':>8}"]
    for r in rows:
        target = f"{r['target']:.0%}" if r["target"] else "-"
        lines.append(f"{r['method']:<{w}} {target:>7} {r['achieved_sparsity']:>9.4%} {r['top1']:>7.2%} {r['seconds']:>7.1f}s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcpts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the embedded default: digits + the kit's ResNet-50 on a CPU")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--targets", type=float, nargs="+", default=list(DEMO_TARGETS))
    d.add_argument("--out", help="output folder, relative to the current folder (default: results/demo in the "
                   "checkout; installed: ./results/demo)")
    d.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any Config field")
    d.add_argument("--recipe", choices=RECIPES, default="released", help=RECIPE_HELP)
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="sparsify any torchvision model (full mode: ImageNet + pretrained weights)")
    r.add_argument("--config", help="YAML file of Config fields (e.g. params/full.yaml)")
    r.add_argument("--method", default=DEFAULT_METHOD, help=f"a post-training method of fcpts.registry (default {DEFAULT_METHOD}): "
                   + ", ".join(n for n, m in METHODS.items() if m.family in ("learner", "allocation")))
    r.add_argument("--tier", help="allocations: a (masks), b (+BN re-estimation, default) or c (+reconstruction)")
    r.add_argument("--model")
    r.add_argument("--weights", help="torchvision weights enum member, e.g. IMAGENET1K_V1; 'none' for random")
    r.add_argument("--dataset", choices=list(DATASETS))
    r.add_argument("--data", dest="data_root", help="dataset root (ImageNet: folder with train/ and val/)")
    r.add_argument("--target", type=float)
    r.add_argument("--calib", dest="calib_size", type=int, help="number of calibration images")
    r.add_argument("--steps", type=int)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--image-size", type=int)
    r.add_argument("--gradient", choices=["released", "ste"])
    r.add_argument("--bridge", choices=["histogram", "kde"])
    r.add_argument("--seed", type=int)
    r.add_argument("--device")
    r.add_argument("--out", help="output folder, relative to the current folder (default: "
                   "results/<model>-<dataset>-s<target>-seed<seed> in the checkout; installed: ./results/...)")
    r.add_argument("--overwrite", action="store_true", help="replace the results in an existing --out folder")
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any Config field")
    r.add_argument("--recipe", choices=RECIPES, default=None, help=RECIPE_HELP + " (default: the --config file's)")
    r.add_argument("--quiet", action="store_true")

    sub.add_parser("sweep", help="a resumable comparison table: methods x targets x seeds (fcpts sweep --help)",
                   add_help=False)
    sub.add_parser("reproduce", help="the paper's grid on ImageNet and every GPU: plan, estimate, run, report "
                   "(fcpts reproduce --help)", add_help=False)
    t = sub.add_parser("train-dense", help="train (or verify) the kit's own dense model on digits or Fashion-MNIST")
    t.add_argument("--retrain", action="store_true", help="train again even if a valid checkpoint exists")
    t.add_argument("--model", default="resnet50", help="torchvision architecture to train (default resnet50)")
    t.add_argument("--dataset", choices=list(EMBEDDED_DATASETS), default="digits",
                   help="digits (the embedded default) or fashion-mnist (Debian's dataset-fashion-mnist)")
    t.add_argument("--image-size", type=int, default=32, help="input side in pixels (default 32)")
    e = sub.add_parser("export", help="write a run's pruned model as a smaller sparse file (load: fcpts.load_sparse)")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a folder 'fcpts run --out' wrote (holds sparse_state_dict.pt)")
    e.add_argument("--out", help="output file (default RUN_DIR/sparse_model.pt; relative to the current directory)")
    e.add_argument("--fp16", action="store_true", help="store the non-zero values in fp16 (half their bytes, rounded)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    for p in (d, r, t, e):
        p.add_argument("--debug", action="store_true",
                       help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    return parser


def expected_failure(exc: BaseException) -> str | None:
    """What to print for a failure the user can act on, or None for a bug (whose traceback is kept).

    Expected: bad input (ValueError: a target outside (0, 1), an unavailable device, a corrupt image ...), a
    missing file or a full disk (OSError), a run that diverged (FloatingPointError, DivergedError), running out
    of memory, and the errors CUDA itself reports (a driver too old, a kernel that failed)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, DivergedError):
        return f"{exc} (nothing was saved)"
    if isinstance(exc, FloatingPointError):
        return f"the run diverged: {exc} (nothing was saved)"
    if isinstance(exc, (ValueError, OSError)):
        return str(exc)
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return (f"out of memory ({first}); lower --batch-size or --set eval_batch_size=..., or use a smaller "
                "--image-size or model")
    if isinstance(exc, RuntimeError) and re.search(r"\bCUDA\b|\bcuDNN\b|\bNCCL\b|\bCUBLAS\b|NVIDIA", first):
        return f"{first} (CUDA failed; --set device=cpu runs without it; {DEBUG_ENV}=1 shows the traceback)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command; an expected failure ends with one ``error: ...`` line on stderr and exit code 2 (an
    interrupt: 130), anything else keeps its traceback. ``--debug`` or FCPTS_DEBUG=1: every traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sweep"]:  # the comparison runner has its own command line
        from .runner import main as sweep

        return sweep(argv[1:], prog="fcpts sweep")
    own_parser = argv[:1] == ["reproduce"]  # so has the paper-scale grid (fcpts.reproduce)
    args = None if own_parser else build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        if own_parser:
            from .reproduce import main as reproduce

            return reproduce([a for a in argv[1:] if a != "--debug"])
        return _main(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = None if debug else expected_failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.command == "export":
        from .export import RUN_STATE_DICT, export_run

        path = export_run(args.run_dir, args.out, fp16=args.fp16, overwrite=args.overwrite)
        dense, sparse = (user_path(args.run_dir) / RUN_STATE_DICT).stat().st_size, path.stat().st_size
        print(f"dense {dense / 1e6:.2f} MB ({RUN_STATE_DICT}) -> sparse {sparse / 1e6:.2f} MB ({path}): "
              f"{sparse / dense:.1%} of the dense file ({dense / sparse:.2f}x smaller)")
        return 0
    if args.command == "train-dense":
        recipe = embedded_recipe(args.model, args.dataset, args.image_size)
        model, info = load_embedded_model(recipe, retrain=args.retrain)
        print(f"dense {args.model} on {args.dataset}: test top-1 {info['test_top1']:.2%} ({info['path']})")
        return 0
    progress = not args.quiet
    if args.command == "demo":
        config = _apply_sets(Config.quick_cpu(seed=args.seed, progress=progress).with_recipe(args.recipe), args.set)
        resolve_device(config.device)  # an unavailable device fails here, before anything is loaded or written
        out = _out_dir(args.out or results_dir() / "demo", overwrite=True)  # the demo's folder: refreshed every run
        start = time.perf_counter()
        rows = demo(config, out, tuple(args.targets), progress)
        print(format_table(rows))
        print(f"total {time.perf_counter() - start:.0f} s; results in {out}")
        return 0
    config = Config.from_yaml(args.config) if args.config else Config()
    fields = {k: v for k, v in vars(args).items() if k in {f for f in config.to_dict()} and v is not None}
    check_method(args.method, args.tier)  # a wrong method or tier fails here, before any folder is made
    if "weights" in fields:
        fields["weights"] = weights_field(fields["weights"])
    if fields.get("data_root"):  # saved in config.yaml as an absolute path, so the run can be redone from anywhere
        fields["data_root"] = str(user_path(fields["data_root"]))
    config = config.replace(**fields, progress=progress)
    config = _apply_sets(config.with_recipe(args.recipe) if args.recipe else config, args.set)
    suffix = "" if args.method == DEFAULT_METHOD else f"-{args.method}"
    resolve_device(config.device)  # an unavailable device fails here, before any folder is made
    device = distributed.init_from_env(config.device)  # under torchrun: join the group, this rank's GPU
    main = distributed.is_main()
    if device is not None:
        config = config.replace(device=str(device), progress=progress and main)
    path = args.out or results_dir() / f"{config.model}-{config.dataset}-s{config.target:g}-seed{config.seed}{suffix}"
    out = user_path(path)
    made = not out.exists()
    if main:  # only rank 0 writes
        out = _out_dir(path, args.overwrite)
    try:
        metrics = run(config, out, progress and main, args.method, args.tier)
    except BaseException:
        if made and main and out.is_dir() and not any(out.iterdir()):  # leave nothing behind
            out.rmdir()
        raise
    finally:
        distributed.shutdown()
    if main:
        print(json.dumps({k: metrics[k] for k in ("method", "target", "sparsity_before_projection",
                                                  "achieved_sparsity", "dense_top1", "top1", "sparsify_seconds",
                                                  "world_size")}))
        print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
