"""Exact control across architectures: does the final zero count equal round(S*·N), and how fast does L_c steer?

For each torchvision architecture (``weights=None``, small random inputs) and each target S*:

* **dynamics** -- thresholds start *off target* (a uniform allocation at S* - offset, default 0.1) and only the
  controllable objective L_c = |S - S*| is optimised (no reconstruction, no data: SGD with momentum 0.9 at the
  released recipe's lr, 0.01, no warm-up). We count the steps until |S - S*| < tol (0.5 %), then apply the
  library's final projection and count the exact zeros;
* **end to end** -- ``fcpts.sparsify`` itself (ERK start, KD reconstruction on a tiny random batch, a few
  steps), whose returned model must hold exactly round(S*·N) zero weights.

N counts every Conv2d/Linear weight (method.md §1; ViT attention's packed ``in_proj_weight`` is not a Linear
and is neither pruned nor counted). The zero target is recomputed here from the model, independently of
the library's ``zero_budget``.

    python -m benchmarks.exact_control                                   # all archs, all targets
    python -m benchmarks.exact_control --archs resnet18 vit_tiny32 --targets 0.5 0.9

Resumable: rows already in the output (same arch, target and settings) are kept and not recomputed.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmarks._common import RESULTS, envelope, set_threads, write_json
from fcpts import Config, ThresholdSparsifier, controllable_loss, project_masks, sparsify, uniform_allocation
from fcpts.masking import all_weight_layers, count_zeros, unparametrize

DEFAULT_ARCHS = ("resnet18", "resnet50", "mobilenet_v2", "regnet_x_400mf", "vgg11_bn", "vit_tiny32")
DEFAULT_TARGETS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
OUT = RESULTS / "exact_control.json"


def vit_tiny32(num_classes: int = 10) -> nn.Module:
    """A small ViT for 32 px inputs (DeiT-Tiny widths, 6 blocks, 4 px patches): Linear-heavy, cheap."""
    import torchvision

    return torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=3,
                                                hidden_dim=192, mlp_dim=768, num_classes=num_classes)


def architecture(name: str) -> tuple[Callable[[], nn.Module], int]:
    """(constructor, input size) of a named architecture: torchvision models at 32 px, ViT-B/16 at 224."""
    import torchvision

    if name == "vit_tiny32":
        return vit_tiny32, 32
    size = 224 if name.startswith(("vit_", "swin_", "maxvit")) else 32
    return (lambda: torchvision.models.get_model(name, weights=None, num_classes=10)), size


def n_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def lc_dynamics(model: nn.Module, target: float, start: float, lr: float = 0.01, momentum: float = 0.9,
                tol: float = 0.005, max_steps: int = 300, bridge: str = "histogram",
                parameterization: str = "sigmoid") -> dict:
    """Optimise L_c alone from a uniform allocation at ``start``; steps until |S - S*| < tol; then project.

    ``model`` is modified (thresholds attached, then squashed with the projected masks).
    """
    total = n_weights(model)
    zeros_target = int(round(target * total))
    sparsifier = ThresholdSparsifier(model, uniform_allocation(model, start), bridge=bridge,
                                     parameterization=parameterization)
    params = sparsifier.threshold_parameters()
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    trajectory, reached = [], None
    tic = time.perf_counter()
    for step in range(max_steps + 1):
        sparsity = sparsifier.global_sparsity()
        trajectory.append(float(sparsity.detach()))
        if abs(trajectory[-1] - target) < tol:
            reached = step
            break
        if step == max_steps:
            break
        loss = controllable_loss(sparsity, target, "abs")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - tic
    before = trajectory[-1]
    # the library's final projection, exactly as sparsify applies it
    layers = sparsifier.layers
    dense = {n: m.parametrizations.weight.original.detach() for n, m in layers.items()}
    masks, tau = project_masks(dense, sparsifier.thresholds(), zeros_target, 0)
    for module in layers.values():
        unparametrize(module, leave_parametrized=False)
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.mul_(masks[name])
    zeros, counted = count_zeros(model)
    return dict(start_sparsity=trajectory[0], steps_to_tol=reached, steps_run=len(trajectory) - 1,
                lc_sparsity_before_projection=before, lc_zeros=zeros, lc_total=counted,
                lc_exact=bool(zeros == zeros_target and counted == total), projection_shift=tau,
                lc_seconds_per_step=seconds / len(trajectory),
                trajectory=[round(v, 6) for v in trajectory[:: max(1, len(trajectory) // 50)]])


def end_to_end(model: nn.Module, target: float, image_size: int, steps: int = 2, batch_size: int = 4,
               bridge: str = "histogram", seed: int = 0) -> dict:
    """``fcpts.sparsify`` on a tiny random calibration batch; exact zero count of the returned model."""
    total = n_weights(model)
    zeros_target = int(round(target * total))
    calib = torch.randn(2 * batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    config = Config.quick_cpu(steps=steps, batch_size=batch_size, progress=False, device="cpu", bridge=bridge,
                              seed=seed, layer_log_every=max(1, steps))
    result = sparsify(model, calib, target, config)
    zeros, counted = count_zeros(result.model)
    return dict(e2e_steps=steps, e2e_sparsity_before_projection=result.sparsity_before_projection,
                e2e_zeros=zeros, e2e_total=counted, e2e_exact=bool(zeros == zeros_target and counted == total),
                e2e_seconds=result.wall_time)


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def run_exact_control(archs=DEFAULT_ARCHS, targets=DEFAULT_TARGETS, offset: float = 0.1, lr: float = 0.01,
                      tol: float = 0.005, max_steps: int = 300, e2e_steps: int = 2, batch_size: int = 4,
                      bridge: str = "histogram", out: str | Path | None = OUT, seed: int = 0,
                      models: dict[str, tuple[Callable[[], nn.Module], int]] | None = None,
                      dynamics: bool = True, progress: bool = True) -> dict:
    """Every (arch, target) row not yet in ``out``; returns the whole result document (also written to ``out``).

    ``models`` maps extra names to (constructor, input size), e.g. tiny models for tests. ``dynamics=False``
    skips the L_c-only run (its cost grows with N times the steps; VGG-11's 129 M weights make it slow) and
    keeps the end-to-end exactness check; such rows have ``steps_to_tol = None`` and ``dynamics = False``.
    """
    settings = dict(offset=offset, lr=lr, momentum=0.9, tol=tol, max_steps=max_steps, e2e_steps=e2e_steps,
                    batch_size=batch_size, bridge=bridge, seed=seed, objective="abs", parameterization="sigmoid")
    key = settings_key(settings)
    rows: list[dict] = []
    if out is not None and Path(out).exists():
        rows = json.loads(Path(out).read_text()).get("results", [])
    done = {(r["arch"], f"{r['target']:.6f}", r["settings_key"]) for r in rows}
    for arch in archs:
        make, size = (models or {}).get(arch) or architecture(arch)
        for target in targets:
            have = {k for k in (key, key + "-e2e") if (arch, f"{target:.6f}", k) in done}
            if key in have or (not dynamics and have):
                continue
            start = target - offset if target - offset > 0 else target + offset
            torch.manual_seed(seed)
            model = make().eval()
            total = n_weights(model)
            row = dict(arch=arch, target=target, n_weights=total, zeros_target=int(round(target * total)),
                       input_size=size, settings_key=key if dynamics else key + "-e2e",
                       n_layers=len(all_weight_layers(model)), dynamics=dynamics)
            if dynamics:
                row.update(lc_dynamics(copy.deepcopy(model), target, start, lr, 0.9, tol, max_steps, bridge))
            else:
                row.update(start_sparsity=None, steps_to_tol=None, steps_run=0, lc_sparsity_before_projection=None,
                           lc_zeros=None, lc_total=None, lc_exact=None, projection_shift=None,
                           lc_seconds_per_step=None, trajectory=[])
            row.update(end_to_end(model, target, size, e2e_steps, batch_size, bridge, seed))
            row["exact"] = row["e2e_exact"] and row["lc_exact"] is not False
            rows.append(row)
            if progress:
                lc_before = row["lc_sparsity_before_projection"]
                print(f"{arch:<16} S*={target:.2f} N={total:>11,} steps->{tol:.1%}: {row['steps_to_tol']!s:>4} "
                      f"before {'-' if lc_before is None else f'{lc_before:.4f}'} / {row['e2e_sparsity_before_projection']:.4f}"
                      f"  zeros {row['e2e_zeros']:,} == {row['zeros_target']:,}: {row['exact']}", flush=True)
            doc = envelope("exact_control", settings, rows, settings_key=key)
            if out is not None:
                write_json(doc, out)
            del model
    return envelope("exact_control", settings, rows, settings_key=key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--targets", nargs="+", type=float, default=list(DEFAULT_TARGETS))
    parser.add_argument("--offset", type=float, default=0.1, help="start at a uniform allocation at S* - offset")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD lr of the L_c-only run (released: 0.01)")
    parser.add_argument("--tol", type=float, default=0.005)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--e2e-steps", type=int, default=2, help="fcpts.sparsify steps in the end-to-end check")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--bridge", choices=["histogram", "kde"], default="histogram")
    parser.add_argument("--no-dynamics", action="store_true",
                        help="skip the L_c-only convergence run (slow for very large models); exactness only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    doc = run_exact_control(args.archs, args.targets, args.offset, args.lr, args.tol, args.max_steps,
                            args.e2e_steps, args.batch_size, args.bridge, args.out, dynamics=not args.no_dynamics)
    bad = [r for r in doc["results"] if not r["exact"]]
    print(f"{len(doc['results'])} rows in {args.out}; exact zero count everywhere: {not bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
