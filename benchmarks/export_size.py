"""Export size: bytes of a magnitude-pruned ResNet-50 as a dense file, compressed, and in fcpts' sparse form.

torchvision ResNet-50 (weights=None, 1000 classes, ``torch.manual_seed(0)`` init), pruned by ``uniform`` magnitude
allocation (every Conv2d/Linear layer at the target; ``fcpts.allocation``) at each target. Per target:

* ``dense``      -- ``torch.save(state_dict)`` with real zeros: the file ``fcpts run`` leaves (sparse_state_dict.pt);
* ``gzip``       -- those bytes through gzip level 6 (``gzip.compress``);
* ``xz``         -- those bytes through lzma/xz at ``--xz-preset`` (default 1: seconds; 6 takes ~80 s a target);
* ``sparse32``   -- ``fcpts.save_sparse`` (bitmask + fp32 non-zeros; restores exactly);
* ``sparse16``   -- ``fcpts.save_sparse(values_dtype=torch.float16)`` (values to fp16 rounding).

The sparse forms' sizes depend only on the count of non-zeros (a 1-bit mask per element plus 4 or 2 bytes per
non-zero), so the allocation (uniform vs global) and the weights' values do not change them; gzip and xz may do a
little better on trained weights than on this random init (their gain comes mostly from the runs of zeros).

    python -m benchmarks.export_size              # -> benchmarks/results/export_size.json and export_size.md
    python -m benchmarks.export_size --targets 0.8 --xz-preset 6
"""
from __future__ import annotations

import argparse
import gzip
import io
import lzma
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS, envelope, set_threads, write_json
from fcpts.allocation import masked_copy, uniform_allocation
from fcpts.export import load_sparse_state_dict, save_sparse
from fcpts.files import write_atomic
from fcpts.masking import count_zeros
from fcpts.models import build_model

OUT = RESULTS / "export_size.json"
TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)
FORMS = ("dense", "gzip", "xz", "sparse32", "sparse16")


def _timed(fn):
    tic = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - tic


def measure_target(model: torch.nn.Module, target: float, xz_preset: int = 1) -> dict:
    """Bytes (and seconds) of every form of ``model`` pruned to ``target``; checks the fp32 form restores exactly."""
    pruned = masked_copy(model, uniform_allocation(model, target))
    state = pruned.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    raw = buffer.getvalue()
    zeros, weights = count_zeros(pruned)
    row: dict = dict(target=target, weights=weights, weight_zeros=zeros, achieved_sparsity=zeros / weights)
    row["dense_bytes"] = len(raw)
    packed, row["gzip_seconds"] = _timed(lambda: gzip.compress(raw, compresslevel=6, mtime=0))
    row["gzip_bytes"] = len(packed)
    if xz_preset is not None:
        packed, row["xz_seconds"] = _timed(lambda: lzma.compress(raw, preset=xz_preset))
        row["xz_bytes"] = len(packed)
    with tempfile.TemporaryDirectory() as folder:
        for form, dtype in (("sparse32", torch.float32), ("sparse16", torch.float16)):
            path = Path(folder) / f"{form}.pt"
            summary, row[f"{form}_seconds"] = _timed(lambda: save_sparse(state, path, values_dtype=dtype))
            row[f"{form}_bytes"] = summary["bytes"]
            restored, row[f"{form}_load_seconds"] = _timed(lambda: load_sparse_state_dict(path))
            if dtype == torch.float32 and not all(torch.equal(restored[k], v) for k, v in state.items()):
                raise RuntimeError(f"the fp32 sparse form did not restore the model exactly at {target}")
    for form in FORMS:
        if f"{form}_bytes" in row:
            row[f"{form}_ratio"] = row[f"{form}_bytes"] / row["dense_bytes"]
    return row


def markdown(rows: list[dict], xz_preset: int | None) -> str:
    """One line per target: MB (ratio to the dense file) of each form."""
    forms = [f for f in FORMS if f"{f}_bytes" in rows[0]]
    names = dict(dense="dense fp32 (zeros)", gzip="gzip -6", xz=f"xz -{xz_preset}", sparse32="sparse fp32",
                 sparse16="sparse fp16")
    lines = ["| sparsity | " + " | ".join(names[f] for f in forms) + " |", "|---:|" + "---:|" * len(forms)]
    for r in rows:
        cells = [f"{r[f'{f}_bytes'] / 1e6:.1f} MB ({r[f'{f}_ratio']:.3f})" for f in forms]
        lines.append(f"| {r['target']:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_export_size(targets=TARGETS, model_name: str = "resnet50", num_classes: int = 1000, xz_preset: int | None = 1,
                    threads: int | None = 1, out: str | Path | None = OUT, progress: bool = True) -> dict:
    set_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name, weights=None, num_classes=num_classes).eval()
    rows = []
    for target in targets:
        row = measure_target(model, target, xz_preset)
        rows.append(row)
        if progress:
            print(f"{target:.0%}: " + ", ".join(f"{f} {row[f + '_bytes'] / 1e6:.1f} MB" for f in FORMS
                                                if f + "_bytes" in row), flush=True)
    settings = dict(model=model_name, num_classes=num_classes, weights=None, init_seed=0, allocation="uniform",
                    gzip_level=6, xz_preset=xz_preset, threads=threads)
    doc = envelope("export_size", settings, rows)
    if out is not None:
        out = Path(out)
        write_json(doc, out)
        text = (f"# Export size: {model_name} ({num_classes} classes, random init), uniform magnitude pruning\n\n"
                "MB (10^6 bytes) and ratio to the dense file. `python -m benchmarks.export_size`; "
                "details in `export_size.json`.\n\n" + markdown(rows, xz_preset))
        write_atomic(out.with_suffix(".md"), text)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument("--model", default="resnet50", help="torchvision architecture (weights=None)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--xz-preset", type=int, default=1, help="lzma preset 0-9 (6 is xz's default: slow)")
    parser.add_argument("--no-xz", action="store_true", help="skip xz")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT), help="JSON file; the markdown table goes beside it (.md)")
    args = parser.parse_args(argv)
    doc = run_export_size(args.targets, args.model, args.num_classes, None if args.no_xz else args.xz_preset,
                          args.threads, args.out)
    print(markdown(doc["results"], doc["settings"]["xz_preset"]))
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
