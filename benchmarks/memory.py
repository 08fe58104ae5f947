"""Memory: peak resident set size (RSS) of an FCPTS step against plain training steps, each in a fresh process.

Each kind runs in its own subprocess (``--child KIND``), which builds the embedded ResNet-50 and one batch
(32 px, batch 64), runs a few steps and reports its own peak RSS (``ru_maxrss``) and its RSS before the
first step. Kinds:

* ``idle``       -- imports, the model and the batch only (the floor every other kind starts from);
* ``fcpts``      -- FCPTS steps (teacher + student with thresholds; the input model released), as in speed.py;
* ``sparsify``   -- the real ``fcpts.sparsify`` with a few steps (caller's model kept, teacher, student,
  the final projection and squash);
* ``masked_kd``  -- plain masked KD with the same masks (teacher + student, no thresholds);
* ``dense_train`` -- a dense cross-entropy training step on the model itself (one copy).

    python -m benchmarks.memory                    # all kinds -> benchmarks/results/memory.json
    python -m benchmarks.memory --kinds fcpts dense_train --steps 3

``fcpts demo``'s peak RSS comes from ``benchmarks/demo_time.py`` (same ``ru_maxrss`` source); the summary puts
it next to these numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import RESULTS, ROOT, envelope, write_json

OUT = RESULTS / "memory.json"
KINDS = ("idle", "fcpts", "sparsify", "masked_kd", "dense_train")


def _rss_mib() -> float:
    """Current RSS of this process in MiB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_mib()


def _peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS in MiB: ``ru_maxrss`` (Linux: KiB; macOS: bytes), or /proc's VmHWM when that is higher (the
    kernel updates the high-water mark lazily, so the current RSS can briefly exceed ``ru_maxrss``)."""
    peak = resource.getrusage(who).ru_maxrss
    peak = peak / 1024 if sys.platform != "darwin" else peak / 2**20
    if who == resource.RUSAGE_SELF:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(("VmHWM:", "VmRSS:")):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def child(kind: str, steps: int = 2, image_size: int = 32, batch_size: int = 64, model_source: str = "auto",
          tiny: bool = False) -> dict:
    """Run ``steps`` steps of ``kind`` in *this* process; return its RSS before the steps and its peak."""
    import torch

    from fcpts import Config, sparsify

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    config = Config.quick_cpu(progress=False, batch_size=batch_size, image_size=image_size, device="cpu")
    if tiny:  # for tests: a small CNN, random inputs
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
        source = "tiny test model"
    else:
        from benchmarks._common import dense_resnet50

        model, source = dense_resnet50(model_source)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (batch_size,), generator=torch.Generator().manual_seed(1))
    before = _rss_mib()
    tic = time.perf_counter()
    if kind == "sparsify":
        sparsify(model, torch.cat([x, x]), 0.8, config.replace(steps=steps))
    elif kind != "idle":
        from benchmarks.speed import DenseStep, FcptsStep, MaskedKDStep, _teacher

        if kind == "dense_train":
            step = DenseStep(model, None, x, y, config, kd=False, copy_model=False)  # the model itself: one copy
        else:
            teacher = _teacher(model, config)
            fcpts = FcptsStep(model, teacher, x, config, 0.8)
            step = fcpts
            if kind == "masked_kd":
                step = MaskedKDStep(model, teacher, x, fcpts.masks(), config)
                del fcpts
            del model  # the input model is released: two copies live, teacher and student
        for _ in range(steps):
            step()
    seconds = time.perf_counter() - tic
    return dict(kind=kind, steps=steps, rss_before_steps_mib=before, peak_rss_mib=_peak_mib(),
                seconds=seconds, model_source=source, threads=torch.get_num_threads())


def measure(kind: str, steps: int = 2, image_size: int = 32, batch_size: int = 64, model_source: str = "auto",
            threads: int | None = 1, tiny: bool = False, timeout: float = 1800) -> dict:
    """Run ``kind`` in a fresh subprocess and return what it reported."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", kind, "--steps", str(steps),
           "--image-size", str(image_size), "--batch-size", str(batch_size), "--model-source", model_source]
    if tiny:
        cmd.append("--tiny")
    env = dict(os.environ)
    if threads:
        cmd += ["--threads", str(threads)]
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"memory child {kind!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def run_memory(kinds=KINDS, steps: int = 2, image_size: int = 32, batch_size: int = 64, model_source: str = "auto",
               threads: int | None = 1, out: str | Path | None = OUT, tiny: bool = False,
               progress: bool = True) -> dict:
    rows = []
    for kind in kinds:
        row = measure(kind, steps, image_size, batch_size, model_source, threads, tiny)
        rows.append(row)
        if progress:
            print(f"{kind:<12} peak RSS {row['peak_rss_mib']:8.1f} MiB (before steps {row['rss_before_steps_mib']:8.1f})",
                  flush=True)
    by_kind = {r["kind"]: r for r in rows}
    ratios = {}
    for kind in ("fcpts", "sparsify", "masked_kd"):
        for ref in ("dense_train", "masked_kd"):
            if kind in by_kind and ref in by_kind and kind != ref:
                ratios[f"{kind}/{ref}"] = by_kind[kind]["peak_rss_mib"] / by_kind[ref]["peak_rss_mib"]
    settings = dict(steps=steps, image_size=image_size, batch_size=batch_size, model_source=model_source,
                    threads=threads, tiny=tiny)
    doc = envelope("memory", settings, rows, ratios=ratios)
    if out is not None:
        write_json(doc, out)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-source", choices=["auto", "embedded", "random"], default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, args.steps, args.image_size, args.batch_size, args.model_source,
                               args.tiny)))
        return 0
    run_memory(args.kinds, args.steps, args.image_size, args.batch_size, args.model_source, args.threads, args.out)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
