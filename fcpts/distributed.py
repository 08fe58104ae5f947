"""Data-parallel runs under ``torchrun``: one process per GPU (NCCL) or CPU process (gloo).

    torchrun --nproc_per_node=8 -m fcpts run --method fcpts --target 0.8      # one node, 8 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m fcpts run ...

What is shared and what is split (``fcpts.sparsify.learn_allocation``):

* every rank walks the same seeded stream of *global* batches (``batch_size`` × world size images) and loads
  only its slice of each, so 2 ranks × batch b see exactly the images and augmentations of 1 process × 2b;
* the student is wrapped in ``DistributedDataParallel``: weight and threshold gradients are averaged like
  every other gradient, so every rank holds the same weights and thresholds, and the bridge and L_c (computed
  from them) agree; the learning rate follows the released rule on the global batch, 0.04 × global / 256;
* BatchNorm in train mode normalises with each rank's own slice (as DDP does without SyncBatchNorm), the one
  place where N ranks differ from one process with the global batch; ``bn_mode="eval"`` has no such gap;
* the exact projection runs on rank 0 and its masks are broadcast; evaluation is sharded and the counts are
  summed; a cheap checksum of weights and thresholds is compared across ranks every ``check_every`` steps;
* only rank 0 writes files and prints.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) none of this runs and nothing changes.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, RandomSampler, Sampler

CHECK_EVERY = 50  # steps between checksum comparisons across ranks


def _nccl() -> bool:
    return dist.get_backend() == "nccl"


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launched() -> bool:
    """True under ``torchrun`` (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> torch.device | None:
    """Join the process group ``torchrun`` describes in the environment (NCCL with CUDA, else gloo) and pick
    this rank's GPU; returns that device, or None when not launched by torchrun. Idempotent."""
    if not launched():
        return None
    cuda = torch.cuda.is_available() and device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedBatches(Sampler):
    """Index batches of one rank: the global batches a single process would draw (a seeded permutation per
    pass, ``global_batch`` at a time, the last partial one dropped like ``drop_last``), each cut into
    ``world`` equal slices, slice ``rank`` kept."""

    def __init__(self, n: int, global_batch: int, world: int, rank: int, generator: torch.Generator):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} does not split into {world} equal slices")
        self.n, self.global_batch, self.world, self.rank, self.generator = n, global_batch, world, rank, generator

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self) -> Iterator[list[int]]:
        # torch's own shuffling and batching, so the generator is consumed exactly as by the plain loader
        batches = BatchSampler(RandomSampler(range(self.n), generator=self.generator), self.global_batch, True)
        share = self.global_batch // self.world
        for batch in batches:
            yield batch[self.rank * share:(self.rank + 1) * share]


def checksum(tensors) -> torch.Tensor:
    """Two float64 numbers that change with any weight: the sum and the sum of squares of every tensor (on the
    tensors' device, as NCCL needs)."""
    tensors = [t.detach() for t in tensors]
    total = torch.zeros(2, dtype=torch.float64, device=tensors[0].device if tensors else None)
    for t in tensors:
        t = t.double()
        total += torch.stack([t.sum(), (t * t).sum()])
    return total


def check_agreement(tensors, step: int, what: str = "weights and thresholds") -> None:
    """Raise on the first sign that the ranks hold different ``tensors`` (they must be bit-identical)."""
    rank, size = world()
    if size == 1:
        return
    mine = checksum(tensors)
    if _nccl():
        mine = mine.cuda()
    everyone = [torch.zeros_like(mine) for _ in range(size)]
    dist.all_gather(everyone, mine)  # gloo all_gather works on CPU tensors; NCCL needs them on the GPU
    if any(not torch.equal(everyone[0], other) for other in everyone[1:]):
        values = ", ".join(f"rank {r}: {c[0].item():.17g}" for r, c in enumerate(everyone))
        raise RuntimeError(f"the ranks' {what} diverged at step {step} ({values}); a non-deterministic "
                           "kernel or a rank that skipped a step. Rerun with the same seed on one process to compare")


class main_first:
    """``with main_first(): ...``: rank 0 runs the block first (e.g. trains and caches the embedded model), the
    other ranks wait, then run it (and find the cache)."""

    def __enter__(self):
        if world()[1] > 1 and not is_main():
            dist.barrier()
        return self

    def __exit__(self, *exc) -> None:
        if world()[1] > 1 and is_main():
            dist.barrier()


def average_gradients_(parameters) -> None:
    """Average the gradients of parameters DDP does not hold (a learner's own optimiser) over the ranks."""
    size = world()[1]
    if size > 1:
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= size


def average_buffers_(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm statistics) over the ranks, in place."""
    size = world()[1]
    if size > 1:
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= size


def broadcast_(tensors, src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values (in place)."""
    if world()[1] > 1:
        nccl = _nccl()
        for t in tensors:
            if nccl and not t.is_cuda:  # NCCL moves GPU tensors only
                staged = t.cuda()
                dist.broadcast(staged, src)
                t.copy_(staged)
            else:
                dist.broadcast(t, src)


def all_reduce_sum(values: list[float | int], device: torch.device | None = None) -> list[float]:
    """Element-wise sum over the ranks (the same list back on one process)."""
    if world()[1] == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
