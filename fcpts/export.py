"""A model file that is actually smaller: the non-zeros of a pruned state_dict and a bitmask of where they are.

``fcpts run`` saves ``sparse_state_dict.pt``, a dense state_dict whose pruned weights are real zeros: as large as
the dense model. ``save_sparse`` writes each floating tensor with enough zeros as a packed bitmask (one bit per
element) plus its non-zero values in order, optionally in fp16; ``load_sparse`` rebuilds the dense tensors with
exact zeros and loads them into a plain model.

    summary = save_sparse(model, "model.pt")                      # or a state_dict; values_dtype=torch.float16
    model = load_sparse("model.pt", torchvision.models.resnet50())
    export_run("results/resnet50-imagenet-s0.8-seed0")            # -> RUN_DIR/sparse_model.pt

The file is ``torch.save`` of plain containers (readable with ``torch.load(weights_only=True)``)::

    {"format": "fcpts-sparse", "version": 1, "bit_order": "little", "values_dtype": "float32",
     "tensors": {name: {"encoding": "dense", "tensor": t}
                       | {"encoding": "bitmask", "shape": [...], "dtype": "float32", "numel": n,
                          "mask": uint8[ceil(n / 8)], "values": values_dtype[nnz]}}}

Bit ``i % 8`` (least significant first, ``numpy.packbits(bitorder="little")``) of byte ``i // 8`` says whether
flattened element ``i`` (row-major) is non-zero. A floating tensor is encoded when that form is smaller at its own
dtype, i.e. more than 1 / (8 * bytes per element) of it is zero (3.1 % for fp32): pruned weights, never BN
statistics, biases or integer buffers, which stay as they are. Only encoded tensors take ``values_dtype``. A
restored zero is +0.0 (a stored -0.0 loses its sign; NaN and inf are values and survive). ``values_dtype``
float32 (the default) keeps every value exactly at its tensor's dtype; float16 stores the values of wider
tensors (fp32, fp64) as fp16, to within fp16 rounding (a value beyond fp16's range is an error; one below
6e-8 rounds to zero).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .files import write_atomic
from .paths import user_path

FORMAT = "fcpts-sparse"
VERSION = 1
BIT_ORDER = "little"
RUN_STATE_DICT = "sparse_state_dict.pt"  # what ``fcpts run`` leaves in RUN_DIR (cli.save_result)
RUN_EXPORT = "sparse_model.pt"  # export_run's default output name in RUN_DIR
VALUE_DTYPES = (torch.float32, torch.float16)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str, where: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{where}: unknown dtype {name!r} in the file; it may be corrupt, export it again")
    return dtype


def worth_encoding(tensor: torch.Tensor, zeros: int) -> bool:
    """Whether bitmask + non-zero values (at the tensor's own dtype) is smaller than the tensor itself."""
    if not tensor.is_floating_point() or tensor.numel() == 0 or zeros == 0:
        return False
    packed = (tensor.numel() + 7) // 8 + (tensor.numel() - zeros) * tensor.element_size()
    return packed < tensor.numel() * tensor.element_size()


def _state_dict_of(model_or_state_dict: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        if any(parametrize.is_parametrized(m) for m in model_or_state_dict.modules()):
            raise ValueError("the model still has parametrizations (threshold masks); squash it first, e.g. "
                             "ThresholdSparsifier.squash_mask() or use SparsifyResult.model")
        return model_or_state_dict.state_dict()
    state = dict(model_or_state_dict)
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor; save_sparse "
                             "writes tensors only")
    return state


def encode_tensor(tensor: torch.Tensor, values_dtype: torch.dtype = torch.float32) -> dict:
    """One state_dict entry in the file's form: ``bitmask`` when worth it, else ``dense`` (a compact copy)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    nonzero = flat != 0
    zeros = int(flat.numel() - int(nonzero.sum()))
    if not worth_encoding(flat, zeros):
        return dict(encoding="dense", tensor=tensor.detach().cpu().clone())  # clone: never a shared storage
    values = flat[nonzero]
    narrower = values_dtype != torch.float32 and torch.empty(0, dtype=values_dtype).element_size() < flat.element_size()
    cast = values.to(values_dtype) if narrower else values  # float32: every value exactly, at its own dtype
    if not bool(torch.isfinite(cast).eq(torch.isfinite(values)).all()):
        raise ValueError(f"a value outside the {_dtype_name(values_dtype)} range (|w| up to "
                         f"{float(values.abs().max()):.3g}); export with float32 values (no --fp16)")
    mask = np.packbits(nonzero.numpy(), bitorder=BIT_ORDER)
    return dict(encoding="bitmask", shape=list(tensor.shape), dtype=_dtype_name(tensor.dtype), numel=flat.numel(),
                mask=torch.from_numpy(mask), values=cast)


def decode_tensor(entry: dict, name: str = "?") -> torch.Tensor:
    """The dense tensor of one file entry: exact zeros, values cast back to the original dtype."""
    try:
        if entry["encoding"] == "dense":
            return entry["tensor"]
        if entry["encoding"] != "bitmask":
            raise ValueError(f"tensor {name!r}: unknown encoding {entry['encoding']!r}; export it again")
        dtype, numel = _dtype_from_name(entry["dtype"], f"tensor {name!r}"), int(entry["numel"])
        bits = np.unpackbits(entry["mask"].numpy(), count=numel, bitorder=BIT_ORDER).astype(bool)
        nonzero = torch.from_numpy(bits)
        values = entry["values"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"tensor {name!r} is malformed in the file ({exc!r}); it may be corrupt, export it "
                         "again") from None
    if int(nonzero.sum()) != values.numel():
        raise ValueError(f"tensor {name!r}: the mask marks {int(nonzero.sum())} non-zeros but the file holds "
                         f"{values.numel()} values; the file is corrupt, export it again")
    dense = torch.zeros(numel, dtype=dtype)
    dense[nonzero] = values.to(dtype)
    return dense.reshape(entry["shape"])


def save_sparse(model_or_state_dict: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike,
                values_dtype: torch.dtype = torch.float32) -> dict:
    """Write the compressed sparse form of a model (or state_dict) to ``path`` (atomically) and summarise it.

    Returns ``dict(path, bytes, tensors, encoded, encoded_elements, nonzeros, values_dtype)``: the file size,
    how many tensors in all and how many were bitmask-encoded, and the elements / non-zeros among those.
    """
    if values_dtype not in VALUE_DTYPES:
        raise ValueError(f"values_dtype must be one of {', '.join(map(_dtype_name, VALUE_DTYPES))}, "
                         f"got {values_dtype}")
    state = _state_dict_of(model_or_state_dict)
    tensors = {name: encode_tensor(t, values_dtype) for name, t in state.items()}
    encoded = [e for e in tensors.values() if e["encoding"] == "bitmask"]
    doc = dict(format=FORMAT, version=VERSION, bit_order=BIT_ORDER, values_dtype=_dtype_name(values_dtype),
               tensors=tensors)
    path = write_atomic(path, lambda handle: torch.save(doc, handle))
    return dict(path=str(path), bytes=path.stat().st_size, tensors=len(tensors), encoded=len(encoded),
                encoded_elements=sum(e["numel"] for e in encoded), nonzeros=sum(e["values"].numel() for e in encoded),
                values_dtype=_dtype_name(values_dtype))


def load_sparse_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The dense state_dict stored in a ``save_sparse`` file (on the CPU), with no model needed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    hint = "write one with fcpts.save_sparse or 'fcpts export RUN_DIR'"
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one with objects weights_only refuses
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is not a {FORMAT} file ({first[:200]}); {hint}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        what = "a plain state_dict (load it with model.load_state_dict(torch.load(...)))" if isinstance(doc, dict) \
            and doc and all(isinstance(v, torch.Tensor) for v in doc.values()) else "something else"
        raise ValueError(f"{path} is not a {FORMAT} file but {what}; {hint}")
    if doc.get("version") != VERSION or doc.get("bit_order") != BIT_ORDER:
        raise ValueError(f"{path} is {FORMAT} version {doc.get('version')!r} (bit order {doc.get('bit_order')!r}); "
                         f"this fcpts reads version {VERSION} ({BIT_ORDER}): export the run again with this version")
    if not isinstance(doc.get("tensors"), dict):
        raise ValueError(f"{path} has no tensor table; it may be corrupt, export it again")
    return {name: decode_tensor(entry, name) for name, entry in doc["tensors"].items()}


def load_sparse(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load a ``save_sparse`` file into ``model`` (a plain model of the same architecture), strictly; returns it."""
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("load_sparse needs a plain model (no parametrizations): build a fresh one, e.g. "
                         "torchvision.models.get_model(name, num_classes=...)")
    state = load_sparse_state_dict(path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{n} {tuple(state[n].shape)} vs model {tuple(expected[n].shape)}" for n in expected
             if n in state and state[n].shape != expected[n].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                 f"{len(wrong)} with other shapes (e.g. {'; '.join(wrong[:3])})" if wrong else ""]
        raise ValueError(f"{path} does not fit this {type(model).__name__}: tensors " + ", ".join(p for p in parts if p)
                         + "; build the architecture and num_classes the run used (RUN_DIR/config.yaml: model, "
                         "dataset)")
    model.load_state_dict(state, strict=True)
    return model


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, fp16: bool = False,
               overwrite: bool = False) -> Path:
    """Write RUN_DIR/sparse_state_dict.pt in the sparse form to ``out`` (default RUN_DIR/sparse_model.pt).

    A relative ``out`` is relative to the current directory. An existing output is replaced only with
    ``overwrite=True``."""
    run_dir = user_path(run_dir)
    source = run_dir / RUN_STATE_DICT
    if not source.is_file():
        raise FileNotFoundError(f"no {RUN_STATE_DICT} in {run_dir}; pass a folder that 'fcpts run --out' wrote")
    target = run_dir / RUN_EXPORT if out is None else user_path(out)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it or choose --out")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read {source} as a state_dict ({exc!s:.200}); run 'fcpts run' again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds a {type(state).__name__}, not a state_dict; run 'fcpts run' again")
    save_sparse(state, target, torch.float16 if fp16 else torch.float32)
    return target
