"""GPU throughput of the released recipe: ResNet-50 at 224 px, 1,600 FCPTS steps at batch 64, vs plain steps.

Self-contained (torch + fcpts only); run it on a machine with a CUDA device:

    python -m benchmarks.gpu --out benchmarks/results/gpu.json
    python -m benchmarks.gpu --precision fp32 bf16 --out benchmarks/results/gpu_bf16.json   # both, one process
    python -m benchmarks.gpu --device cpu --steps 2 --image-size 32 --batch-size 4 --out /tmp/gpu_smoke.json
    python -m benchmarks.gpu --nproc 8 --variants fcpts --out benchmarks/results/gpu_ddp8.json   # 1 vs 8 GPUs
    python -m benchmarks.gpu --device cpu --nproc 2 --variants fcpts --steps 20 --image-size 32 \
        --out benchmarks/results/gpu_ddp_cpu.json                     # the 2-process gloo overhead on a CPU

What it measures, in one process, on synthetic data (a seeded 1,024-image calibration tensor, random
``weights=None`` ResNet-50; throughput does not depend on the weights' values):

* ``fcpts`` -- the real ``fcpts.sparsify`` with the released recipe (``Config()`` defaults: SGD, batch 64,
  histogram bridge, ``abs`` objective, no reconstruction gradient to the thresholds) for ``--steps`` steps:
  wall time of the whole call (setup, loop, projection, squash) and, from a second short call, the loop's
  per-step time, hence images per second;
* ``masked_kd`` -- a plain masked-KD loop (teacher + student with the same ERK masks as FCPTS's start,
  weights hold zeros, gradients masked; no thresholds/bridge/L_c) over the same data stream;
* ``dense_train`` -- a dense cross-entropy training loop (random labels) on the same stream.

No loop waits for the device every step: ``sparsify`` reads its history back every ``Config.layer_log_every``
steps, and the plain loops keep their losses on the device and read them (and check them) once at the end. All
run as ``sparsify`` does on CUDA: channels_last memory format (``fcpts.sparsify.channels_last_on``) and cuDNN
autotuning. ``--precision fp32 bf16`` runs every variant under each precision in one process (``Config.precision``:
the teacher and student forward passes under bfloat16 autocast, the losses in float32); the bf16 rows get a
``_bf16`` suffix.
* ``fcpts_ddp`` (``--nproc N``) -- the same ``fcpts.sparsify`` run data-parallel on N processes (NCCL, one GPU
  each; gloo on a CPU), the global batch kept at ``--batch-size`` (each rank takes batch/N): the loop's
  per-step time on N processes against one, as a speed-up on GPUs and, on a CPU, as the gloo overhead ratio
  (N processes sharing the same cores against one). Under torch.distributed the loop keeps the contiguous
  layout, so both sides of this ratio do; the first ``--precision`` only.

The machine (GPU name, torch/CUDA/cuDNN versions) goes into the result file. Peak GPU memory per variant
comes from ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import ROOT

VARIANTS = ("fcpts", "masked_kd", "dense_train")
PRECISIONS = ("fp32", "bf16")


def machine(device: torch.device) -> dict:
    info = dict(torch=torch.__version__, python=platform.python_version(), platform=platform.platform(),
                device=str(device), cpu_count=os.cpu_count())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=props.total_memory / 2**30,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


def check_device(name: str) -> torch.device:
    """The requested device; a clear refusal when CUDA is asked for and absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: benchmarks/gpu.py needs a CUDA device, and torch.cuda.is_available() is False here "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a GPU machine, or "
                         "pass --device cpu --steps 2 --image-size 32 --batch-size 4 for a smoke test.")
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def fcpts_run(model, calib, target, config, device) -> dict:
    from fcpts import sparsify

    _reset_peak(device)
    _sync(device)
    tic = time.perf_counter()
    result = sparsify(model, calib, target, config)
    _sync(device)
    wall = time.perf_counter() - tic
    return dict(wall_s=wall, sparsify_wall_time_s=result.wall_time, steps=config.steps,
                achieved_sparsity=result.sparsity_after_projection,
                sparsity_before_projection=result.sparsity_before_projection,
                exact=result.zeros == int(round(target * result.total)), peak_gpu_gib=_peak_gib(device),
                final_loss=result.history[-1]["loss"] if result.history else None)


def plain_loop(kind: str, model, calib, target, config, device, steps: int) -> dict:
    """``masked_kd`` or ``dense_train`` over the same calibration stream as sparsify, ``steps`` steps."""
    from fcpts import erk_allocation, kd_loss, magnitude_masks
    from fcpts.calibration import CalibrationStream
    from fcpts.sparsify import build_optimizer, channels_last_on, forward_precision, lr_at

    _reset_peak(device)
    layout = torch.channels_last if channels_last_on(device, model) else torch.contiguous_format  # as sparsify
    student = copy.deepcopy(model).to(device).to(memory_format=layout)
    teacher = None
    masked = []
    if kind == "masked_kd":
        teacher = copy.deepcopy(model).to(device).to(memory_format=layout).requires_grad_(False).train()
        masks = magnitude_masks(student, erk_allocation(student, target, config.include, config.exclude))
        modules = dict(student.named_modules())
        with torch.no_grad():
            for name, mask in masks.items():
                modules[name].weight.mul_(mask)
                masked.append((modules[name], mask))
    student.train()
    optimizer = build_optimizer(student, [], config)
    stream = CalibrationStream(calib, config.batch_size, config.seed, config.num_workers)
    warmup = stream.batches_per_pass
    generator = torch.Generator().manual_seed(0)
    batches = iter(stream)
    losses = []  # kept on the device, read once at the end (as sparsify reads its history in batches)
    _sync(device)
    tic = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, config.lr, warmup, config.lr_schedule)
        x, _ = next(batches)
        x = x.to(device, non_blocking=True)  # as sparsify: channels_last comes from the weights' format
        with forward_precision(config, device):
            logits = student(x)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
        if teacher is not None:
            loss = kd_loss(logits.float(), teacher_logits.float(), config.temperature)
        else:
            y = torch.randint(0, logits.shape[1], (x.shape[0],), generator=generator).to(device, non_blocking=True)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for module, mask in masked:
            module.weight.grad.mul_(mask)
        optimizer.step()
        losses.append(loss.detach())
    _sync(device)
    wall = time.perf_counter() - tic
    values = torch.stack(losses).tolist()
    bad = [step for step, value in enumerate(values) if not math.isfinite(value)]
    if bad:
        raise FloatingPointError(f"{kind}: non-finite loss at step {bad[0]}")
    return dict(wall_s=wall, steps=steps, per_step_s=wall / steps, images_per_s=steps * config.batch_size / wall,
                peak_gpu_gib=_peak_gib(device), final_loss=values[-1], precision=config.precision)


def _ddp_rank(rank: int, nproc: int, init_file: str, settings: dict, out_file: str) -> None:
    """One rank of the ``fcpts_ddp`` variant: the loop's per-step time by the difference of two calls."""
    import torch.distributed as dist

    from fcpts import Config
    from fcpts.models import build_model

    cuda = settings["device"] != "cpu"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=nproc)
    try:
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        torch.manual_seed(0)
        model = build_model(settings["model"], weights=None)
        size = settings["image_size"]
        calib = torch.randn(settings["calib_size"], 3, size, size, generator=torch.Generator().manual_seed(0))
        config = Config(device=str(device), steps=settings["steps"], batch_size=settings["batch_size"] // nproc,
                        image_size=size, calib_size=settings["calib_size"], progress=False, num_workers=0,
                        target=settings["target"], precision=settings["precision"])
        short = settings["short"]
        if cuda:
            fcpts_run(model, calib, settings["target"], config.replace(steps=short), device)
        full = fcpts_run(model, calib, settings["target"], config, device)
        reference = fcpts_run(model, calib, settings["target"], config.replace(steps=short), device)
        steps = settings["steps"]
        per_step = (full["wall_s"] - reference["wall_s"]) / (steps - short) if steps > short else 0.0
        if per_step <= 0:
            per_step = full["wall_s"] / steps
        if rank == 0:
            Path(out_file).write_text(json.dumps(dict(nproc=nproc, per_rank_batch=config.batch_size,
                                                      global_batch=config.batch_size * nproc, wall_s=full["wall_s"],
                                                      per_step_s=per_step, exact=full["exact"],
                                                      images_per_s=config.batch_size * nproc / per_step,
                                                      peak_gpu_gib=full["peak_gpu_gib"])))
    finally:
        dist.destroy_process_group()


def ddp_scaling(nproc: int, settings: dict) -> dict:
    """``fcpts_ddp``: the same run on 1 and on ``nproc`` processes (spawned here, no torchrun needed)."""
    import tempfile

    import torch.multiprocessing as mp

    if settings["device"] != "cpu" and torch.cuda.device_count() < nproc:
        raise SystemExit(f"error: --nproc {nproc} needs {nproc} GPUs, this machine has {torch.cuda.device_count()}")
    if settings["batch_size"] % nproc:
        raise SystemExit(f"error: --batch-size {settings['batch_size']} does not split over {nproc} processes")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, nproc):
            out = Path(tmp) / f"ddp{n}.json"
            mp.spawn(_ddp_rank, args=(n, str(Path(tmp) / f"init{n}"), settings, str(out)), nprocs=n, join=True)
            runs[n] = json.loads(out.read_text())
    one, many = runs[1], runs[nproc]
    ratio = many["per_step_s"] / one["per_step_s"]
    return dict(one=one, many=many, nproc=nproc, step_time_ratio=ratio,
                meaning=("speed-up = 1 / step_time_ratio (one GPU per process)" if settings["device"] != "cpu" else
                         "gloo overhead ratio: N processes sharing the cores against one process with all of them"))


def run_gpu(steps: int = 1600, batch_size: int = 64, image_size: int = 224, calib_size: int = 1024,
            target: float = 0.8, device: str = "cuda", precisions=("fp32",), model_name: str = "resnet50",
            variants=VARIANTS, short_steps: int | None = None, out: str | Path | None = None,
            progress: bool = True, nproc: int = 1) -> dict:
    from fcpts import Config
    from fcpts.models import build_model
    from fcpts.sparsify import channels_last_on

    dev = check_device(device)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise SystemExit(f"error: --precision takes {' and/or '.join(PRECISIONS)}, got {list(precisions)}")
    torch.backends.cudnn.benchmark = True
    say = print if progress else (lambda *a, **k: None)
    torch.manual_seed(0)
    model = build_model(model_name, weights=None)  # 1,000 classes, random init
    calib = torch.randn(calib_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    base = Config(device=str(dev), steps=steps, batch_size=batch_size, image_size=image_size, calib_size=calib_size,
                  progress=False, num_workers=0, target=target)
    short = short_steps if short_steps is not None else max(1, min(100, steps // 8))
    short = min(short, steps)
    results: dict = {}
    ratios: dict = {}
    say(f"{model_name} {image_size}px batch {batch_size}, {steps} steps on {machine(dev).get('gpu', dev)}", flush=True)
    for precision in precisions:
        config = base.replace(precision=precision)
        suffix = "" if precision == "fp32" else f"_{precision}"
        if "fcpts" in variants:
            # a short call first warms cuDNN's autotuning up (discarded); a second short call after the full one
            # gives the loop's per-step time by difference, free of the setup, projection and squash
            if dev.type == "cuda":
                fcpts_run(model, calib, target, config.replace(steps=short), dev)
            full = fcpts_run(model, calib, target, config, dev)
            reference = fcpts_run(model, calib, target, config.replace(steps=short), dev)
            per_step = (full["wall_s"] - reference["wall_s"]) / (steps - short) if steps > short else 0.0
            estimate = "difference of two calls"
            if per_step <= 0:  # too few steps to resolve (smoke runs): the whole call's average
                per_step, estimate = full["wall_s"] / steps, "whole call / steps"
            full.update(short_steps=short, short_wall_s=reference["wall_s"], per_step_s=per_step,
                        per_step_estimate=estimate, images_per_s=batch_size / per_step,
                        images_per_s_whole_call=steps * batch_size / full["wall_s"],
                        setup_and_projection_s=full["wall_s"] - steps * per_step, precision=precision)
            results["fcpts" + suffix] = full
            say(f"{'fcpts' + suffix:<16} {full['wall_s']:8.1f} s whole call, {per_step * 1e3:7.1f} ms/step, "
                f"{full['images_per_s']:8.1f} img/s", flush=True)
        for kind in ("masked_kd", "dense_train"):
            if kind in variants:
                if dev.type == "cuda":
                    plain_loop(kind, model, calib, target, config, dev, min(short, steps))  # warm-up
                results[kind + suffix] = r = plain_loop(kind, model, calib, target, config, dev, steps)
                say(f"{kind + suffix:<16} {r['wall_s']:8.1f} s, {r['per_step_s'] * 1e3:7.1f} ms/step, "
                    f"{r['images_per_s']:8.1f} img/s", flush=True)
        if "fcpts" + suffix in results:
            for kind in ("masked_kd", "dense_train"):
                if kind + suffix in results:
                    ratios[f"fcpts{suffix}/{kind}{suffix}"] = (results["fcpts" + suffix]["per_step_s"]
                                                               / results[kind + suffix]["per_step_s"])
    for kind in VARIANTS:  # what bf16 buys, per variant
        if kind in results and f"{kind}_bf16" in results:
            ratios[f"{kind}_bf16/{kind}"] = results[f"{kind}_bf16"]["per_step_s"] / results[kind]["per_step_s"]
    if nproc > 1:
        settings = dict(device=dev.type, model=model_name, image_size=image_size, calib_size=calib_size, steps=steps,
                        batch_size=batch_size, target=target, short=short, precision=precisions[0])
        results["fcpts_ddp"] = ddp_scaling(nproc, settings)
        r = results["fcpts_ddp"]
        say(f"fcpts_ddp   1 process {1e3 * r['one']['per_step_s']:.1f} ms/step, {nproc} processes "
            f"{1e3 * r['many']['per_step_s']:.1f} ms/step (ratio {r['step_time_ratio']:.2f})", flush=True)
        ratios[f"fcpts_ddp{nproc}/fcpts_ddp1"] = r["step_time_ratio"]
    doc = dict(benchmark="gpu", created=time.strftime("%Y-%m-%dT%H:%M:%S"), machine=machine(dev),
               settings=dict(model=model_name, weights=None, steps=steps, batch_size=batch_size, image_size=image_size,
                             calib_size=calib_size, target=target, precisions=list(precisions),
                             channels_last=channels_last_on(dev), cudnn_benchmark=True,
                             config="Config() defaults (released recipe)", synthetic_data=True, nproc=nproc,
                             reads_per_step="none (history read every layer_log_every steps; plain losses at the end)"),
               results=results, ratios=ratios)
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--short-steps", type=int, default=None, help="steps of the warm-up/difference run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calib-size", type=int, default=1024)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                        help="Config.precision of every variant; several run one after the other (e.g. fp32 bf16)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--nproc", type=int, default=1,
                        help="also run fcpts data-parallel on this many processes (GPUs; gloo on --device cpu)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    doc = run_gpu(args.steps, args.batch_size, args.image_size, args.calib_size, args.target, args.device,
                  precisions=tuple(args.precision), model_name=args.model, variants=args.variants,
                  short_steps=args.short_steps, out=out, nproc=args.nproc)
    print(json.dumps(doc["ratios"]))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
