"""Calibration data: a seeded, endless stream of input batches, and BatchNorm re-estimation.

FCPTS needs no labels: it only ever looks at the inputs. The calibration set may be a tensor of images,
a map-style ``Dataset`` whose items are ``x`` or ``(x, y, ...)``, or a ``DataLoader``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


def _inputs(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class _Indexed(Dataset):
    """Wraps a dataset so each item also carries its index (to cache teacher outputs per image)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return _inputs(self.dataset[i]), i


class CalibrationStream:
    """Endless seeded batches of calibration inputs; reshuffled every pass.

    Iterating yields ``(x, indices)``; ``indices`` is None when the data came as a ``DataLoader``, whose
    order the stream does not control.
    """

    def __init__(self, data, batch_size: int = 64, seed: int = 0, num_workers: int = 0, shuffle: bool = True,
                 shard: tuple[int, int] = (0, 1)):
        """``shard=(rank, world)``: this rank's slice of global batches of ``batch_size * world`` (see
        ``fcpts.distributed.ShardedBatches``); (0, 1), one process, is the plain shuffled DataLoader."""
        if isinstance(data, torch.Tensor):
            data = TensorDataset(data)
        if isinstance(data, DataLoader):
            self.loader, self.indexed = data, False
        else:
            if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
                raise TypeError("calibration data must be a Tensor, a map-style Dataset or a DataLoader, "
                                f"got {type(data).__name__}")
            if len(data) == 0:
                raise ValueError("the calibration set is empty: pass at least one image (the released recipe uses 1,024)")
            generator = torch.Generator().manual_seed(seed)
            rank, world = shard
            if world > 1:
                from .distributed import ShardedBatches

                sampler = ShardedBatches(len(data), batch_size * world, world, rank, generator)
                # the loader draws its base seed from the same generator first, as the plain loader does
                self.loader = DataLoader(_Indexed(data), batch_sampler=sampler, generator=generator,
                                         num_workers=num_workers)
            else:
                self.loader = DataLoader(_Indexed(data), batch_size=batch_size, shuffle=shuffle, generator=generator,
                                         drop_last=len(data) >= batch_size, num_workers=num_workers)
            self.indexed = True
        self.passes = 0
        if len(self.loader) == 0:
            raise ValueError("the calibration set is empty: pass at least one image (the released recipe uses 1,024)")

    @property
    def batches_per_pass(self) -> int:
        return len(self.loader)

    def one_pass(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        dataset = self.loader.dataset.dataset if self.indexed else self.loader.dataset
        if hasattr(dataset, "set_epoch"):  # fresh, reproducible augmentations every pass (also with workers)
            dataset.set_epoch(self.passes)
        self.passes += 1
        for batch in self.loader:
            if self.indexed:
                yield batch[0], batch[1]
            else:
                yield _inputs(batch), None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        while True:
            yield from self.one_pass()


class _Part(Subset):
    """Part of a calibration set; passes ``set_epoch`` on, so augmentations stay seeded per pass."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def check_holdout(count: int, n: int) -> None:
    """A held-out selection needs 1 to n // 2 of the n calibration images (the rest train)."""
    if not 0 < count <= n // 2:
        raise ValueError(f"Config.select_holdout = {count} with {n} calibration images: hold out between 1 and "
                         f"{n // 2} (the kit recipe holds out 64 of 512), or set it to 0")


def split_holdout(data, count: int, seed: int) -> tuple[Dataset, torch.Tensor]:
    """Keep ``count`` seeded calibration items out of training: ``(the rest, as a Dataset; the held-out
    inputs, read once, as one tensor)``. The held-out inputs judge candidates without labels."""
    if isinstance(data, torch.Tensor):
        data = TensorDataset(data)
    if isinstance(data, DataLoader) or not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ValueError("Config.select_holdout needs the calibration data as a Tensor or a map-style Dataset "
                         "(not a DataLoader): it sets images aside by index")
    if hasattr(data, "set_epoch"):  # augmentations of pass 0, whatever earlier runs read from this set
        data.set_epoch(0)
    n = len(data)
    check_holdout(count, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = torch.stack([_inputs(data[i]) for i in sorted(order[:count])])
    return _Part(data, sorted(order[count:])), held


def as_stream(data, batch_size: int = 64, seed: int = 0, num_workers: int = 0) -> CalibrationStream:
    return data if isinstance(data, CalibrationStream) else CalibrationStream(data, batch_size, seed, num_workers)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data, batches: int | None = None, batch_size: int = 64, seed: int = 0,
                   device: torch.device | str | None = None) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/var on calibration inputs (a cumulative average).

    Pruning shifts every activation's statistics; the dense running statistics no longer fit, and
    re-estimating them is the cheapest repair. ``batches`` defaults to one pass over the data.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    stream = as_stream(data, batch_size, seed)
    batches = batches or stream.batches_per_pass
    device = device or next(model.parameters()).device
    saved_momentum = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average: every batch weighs the same
    model.train()
    for i, (x, _) in zip(range(batches), stream):
        model(x.to(device))
    for m, momentum in zip(norms, saved_momentum):
        m.momentum = momentum
    model.train(was_training)
    return model
