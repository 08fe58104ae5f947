"""Top-1/top-5 accuracy of a classifier, and the device choice shared by the kit."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class DeviceUnavailableError(ValueError, RuntimeError):
    """A device this machine does not have (or cannot name): a bad setting, so a ValueError (and a RuntimeError,
    as before)."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None): CUDA when available, else CPU. Otherwise the named device, checked to exist
    (``DeviceUnavailableError`` otherwise, with what to set instead)."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceUnavailableError(f"unknown device {name!r}; set device=auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {name!r} requested but CUDA is not available here; "
                                     "set device=auto or device=cpu (or run on a machine with a CUDA GPU)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} "
                                     "CUDA device(s); set device=cuda (the first), auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {name!r} requested but MPS is not available here; "
                                     "set device=auto or device=cpu")
    return device


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 256,
             device: str | torch.device | None = None, progress: bool = True,
             num_workers: int = 0, per_image: bool = False) -> dict[str, Any]:
    """Accuracy of `model` on `data` (a Dataset of `(image, label)` or a DataLoader).

    Returns `{"top1": float, "top5": float | None, "n": int}`, accuracies as fractions in [0, 1]; top-5 is
    None for models with fewer than 5 outputs. `per_image=True` adds `"correct"`: a bool tensor, one top-1
    outcome per image in the data's order (for paired comparisons, `fcpts.stats`). Under torchrun each rank
    evaluates every world-th image and the counts are summed. `device=None` evaluates where the model
    already is; a named device moves it there for the call. The model runs in eval mode (BatchNorm uses its running
    statistics, dropout is off) and gets its previous mode and device back afterwards.
    """
    from .distributed import world

    rank, size = world()
    if size > 1 and not isinstance(data, DataLoader):  # under torchrun: every rank takes every size-th image
        from torch.utils.data import Subset

        data = Subset(data, range(rank, len(data), size))
    home = _model_device(model)
    target = home if device is None else resolve_device(device)
    # Workers decode images while the device computes; pinned pages let the copy overlap (CUDA only).
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=target.type == "cuda")
    was_training = model.training
    model.to(target).eval()
    try:
        correct1, correct5, n, has_top5, outcomes = _count_hits(model, loader, target, progress and rank == 0,
                                                                per_image)
    finally:
        model.train(was_training)
        model.to(home)
    if size > 1 and isinstance(data, Dataset):  # the ranks' counts summed, their outcomes interleaved back
        correct1, correct5, n, has_top5, outcomes = _gather(correct1, correct5, n, has_top5, outcomes, size, target,
                                                            per_image)
    if n == 0:
        raise ValueError("evaluate() got an empty dataset")
    result = {"top1": correct1 / n, "top5": correct5 / n if has_top5 else None, "n": n}
    if per_image:
        result["correct"] = torch.cat(outcomes)
    return result


def _count_hits(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool, per_image: bool):
    """(top-1 hits, top-5 hits, images, whether top-5 applies, per-image top-1 outcomes) over ``loader``."""
    from tqdm.auto import tqdm

    correct1 = correct5 = n = 0
    has_top5 = None
    outcomes = []
    for x, y in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        logits = model(x)
        classes = logits.shape[1]
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(
                f"label {int(y.max())} is out of range for a model with {classes} outputs; the dataset "
                "and the model's classifier do not match (num_classes / class folders)"
            )
        has_top5 = classes >= 5
        hits = logits.topk(min(5, classes), dim=1).indices == y[:, None]  # [B, k], best first
        correct1 += int(hits[:, 0].sum())
        if per_image:
            outcomes.append(hits[:, 0].cpu())
        correct5 += int(hits.any(dim=1).sum())
        n += y.numel()
    return correct1, correct5, n, has_top5, outcomes


def _gather(correct1: int, correct5: int, n: int, has_top5, outcomes: list, size: int, device, per_image: bool):
    """Under torchrun: the ranks' counts summed and their per-image outcomes interleaved back into data order."""
    from .distributed import all_reduce_sum

    correct1, correct5, n = (int(v) for v in all_reduce_sum([correct1, correct5, n], device))
    has_top5 = bool(all_reduce_sum([float(bool(has_top5))], device)[0])
    if per_image:
        import torch.distributed as dist

        parts = [None] * size
        dist.all_gather_object(parts, torch.cat(outcomes) if outcomes else torch.zeros(0, dtype=torch.bool))
        outcomes = [torch.zeros(n, dtype=torch.bool)]
        for r, part in enumerate(parts):
            outcomes[0][r::size] = part
    return correct1, correct5, n, has_top5, outcomes
