"""Top-1/top-5 accuracy of a classifier, and the device choice shared by the kit."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None): CUDA when available, else CPU. Otherwise the named device, checked to exist."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {name!r} requested but MPS is not available here; use 'auto' or 'cpu'")
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
    from tqdm.auto import tqdm

    from .distributed import all_reduce_sum, world

    rank, size = world()
    if size > 1 and not isinstance(data, DataLoader):  # under torchrun: every rank takes every size-th image
        from torch.utils.data import Subset

        data = Subset(data, range(rank, len(data), size))
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    home = _model_device(model)
    target = home if device is None else resolve_device(device)
    was_training = model.training
    model.to(target).eval()
    correct1 = correct5 = n = 0
    has_top5 = None
    outcomes = []
    try:
        for x, y in tqdm(loader, desc="evaluate", disable=not progress or rank > 0, leave=False):
            x, y = x.to(target), torch.as_tensor(y).to(target)
            logits = model(x)
            classes = logits.shape[1]
            if y.min() < 0 or y.max() >= classes:
                raise ValueError(
                    f"label {int(y.max())} is out of range for a model with {classes} outputs; the dataset "
                    "and the model's classifier do not match (num_classes / class folders)"
                )
            k = min(5, classes)
            has_top5 = classes >= 5
            top = logits.topk(k, dim=1).indices  # [B, k], best first
            hits = top == y[:, None]
            correct1 += int(hits[:, 0].sum())
            if per_image:
                outcomes.append(hits[:, 0].cpu())
            correct5 += int(hits.any(dim=1).sum())
            n += y.numel()
    finally:
        model.train(was_training)
        model.to(home)
    if size > 1 and isinstance(data, Dataset):  # the ranks' counts summed, their outcomes interleaved back
        correct1, correct5, n = (int(v) for v in all_reduce_sum([correct1, correct5, n], target))
        has_top5 = bool(all_reduce_sum([float(bool(has_top5))], target)[0])
        if per_image:
            import torch.distributed as dist

            parts = [None] * size
            dist.all_gather_object(parts, torch.cat(outcomes) if outcomes else torch.zeros(0, dtype=torch.bool))
            outcomes = [torch.zeros(n, dtype=torch.bool)]
            for r, part in enumerate(parts):
                outcomes[0][r::size] = part
    if n == 0:
        raise ValueError("evaluate() got an empty dataset")
    result = {"top1": correct1 / n, "top5": correct5 / n if has_top5 else None, "n": n}
    if per_image:
        result["correct"] = torch.cat(outcomes)
    return result
