"""The last check of every method: a final model whose eval-mode outputs are not finite is an error, not a result.

A run can diverge without a non-finite loss on the way: BatchNorm statistics re-estimated on poisoned
activations, a threshold that zeroes a whole layer before a normalisation, a weight that overflows only in
eval mode. ``check_final_outputs`` runs the returned model in eval mode on a fixed slice of the calibration
(or training) inputs and raises ``DivergedError`` naming the method, the target and the step, so that a caller
(``fcpts run``, the runner) stops before anything is saved.

The check is read-only: no random augmentation is drawn (the first images of the data, in order), the global
RNG and a DataLoader's generator are restored afterwards, and the model gets its previous train/eval mode back,
so every later result is bit-identical with or without it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

FINAL_IMAGES = 32  # calibration images the final check runs (one batch by default)
DEFAULT_HINT = "lower the learning rate, set grad_clip (e.g. 5.0), or check the calibration inputs"


class DivergedError(FloatingPointError):
    """A method's final model gives NaN/inf outputs (or it could not pick a finite one): the run stops, unsaved."""


def _inputs(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _map_style(data) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


def first_inputs(data, count: int = FINAL_IMAGES) -> torch.Tensor:
    """The first ``count`` inputs of ``data`` (a Tensor, a map-style Dataset of ``x`` or ``(x, y, ...)``, a
    DataLoader, or a ``CalibrationStream``), in order, without drawing from any random generator."""
    loader = getattr(data, "loader", None)  # a CalibrationStream: read its data, not its shuffled batches
    if isinstance(loader, DataLoader):
        data = loader
    if isinstance(data, torch.Tensor):
        return data[:count]
    collate = default_collate
    if isinstance(data, DataLoader):
        collate = data.collate_fn
        if not _map_style(data.dataset):  # an iterable dataset: one batch, its generator put back afterwards
            state = data.generator.get_state() if data.generator is not None else None
            try:
                with torch.random.fork_rng(devices=[]):
                    return _inputs(next(iter(data)))[:count]
            finally:
                if state is not None:
                    data.generator.set_state(state)
        data = data.dataset
    if not _map_style(data):
        raise TypeError("calibration data must be a Tensor, a map-style Dataset or a DataLoader, "
                        f"got {type(data).__name__}")
    n = min(count, len(data))
    if n == 0:
        raise ValueError("the calibration set is empty: the final model cannot be checked")
    with torch.random.fork_rng(devices=[]):  # a dataset that augments with the global RNG leaves it as it was
        return _inputs(collate([data[i] for i in range(n)]))


def _tensors(output):
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, dict):
        for value in output.values():
            yield from _tensors(value)
    elif isinstance(output, (tuple, list)):
        for value in output:
            yield from _tensors(value)


@torch.no_grad()
def check_final_outputs(model: nn.Module, calibration_data, method: str, target: float, step: int,
                        device: torch.device | str | None = None, images: int = FINAL_IMAGES,
                        batch_size: int = FINAL_IMAGES, hint: str = DEFAULT_HINT) -> None:
    """Raise ``DivergedError`` if ``model`` in eval mode gives any NaN/inf output on the first ``images`` inputs
    of ``calibration_data`` (run ``batch_size`` at a time on ``device``, default: where the model is).

    ``method``, ``target`` and ``step`` (the steps the run took) go into the message, with ``hint``: what to try."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = first_inputs(calibration_data, images)
    was_training = model.training
    model.eval()
    bad = total = 0
    try:
        for chunk in x.split(max(1, batch_size)):
            for out in _tensors(model(chunk.to(device))):
                if out.is_floating_point() or out.is_complex():
                    bad += int((~torch.isfinite(out)).sum())
                    total += out.numel()
    finally:
        model.train(was_training)
    if bad:
        raise DivergedError(f"{method} diverged at target {target:g}: its final model (after step {step}) gives "
                            f"{bad} NaN/inf of {total} outputs in eval mode on {len(x)} calibration image(s); "
                            f"{hint}")
