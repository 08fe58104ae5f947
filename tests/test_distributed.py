"""Data-parallel FCPTS on the CPU: 2 gloo processes × batch b against 1 process × batch 2b (fcpts.distributed)."""
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from conftest import make_model
from fcpts import Config, sparsify
from fcpts.distributed import ShardedBatches, check_agreement
from fcpts.evaluate import evaluate

PER_RANK = 8
STEPS = 8


def data():
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(48, 3, 8, 8, generator=g)
    test = TensorDataset(torch.randn(30, 3, 8, 8, generator=g), torch.randint(0, 10, (30,), generator=g))
    return calib, test


def config(batch_size: int, bn_mode: str) -> Config:
    return Config.quick_cpu(steps=STEPS, batch_size=batch_size, bn_mode=bn_mode, progress=False, layer_log_every=1)


def summary(result, test) -> dict:
    metrics = evaluate(result.model, test, progress=False, per_image=True)
    return dict(zeros=result.zeros, allocation=result.allocation, top1=metrics["top1"],
                correct=metrics["correct"].tolist(), lr=[h["lr"] for h in result.history])


def _rank(rank: int, world: int, init_file: str, out: str, bn_mode: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        calib, test = data()
        result = sparsify(make_model("cnn"), calib, 0.7, config(PER_RANK, bn_mode))
        torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
        Path(out, f"rank{rank}.json").write_text(json.dumps(summary(result, test)))
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path: Path, bn_mode: str) -> tuple[list[dict], list[dict]]:
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path), bn_mode), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return states, [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_two_gloo_ranks_match_one_process_with_the_global_batch(tmp_path, bn_mode):
    states, outs = run_two_ranks(tmp_path, bn_mode)
    for key in states[0]:  # every rank ends with the same weights, bit for bit
        assert torch.equal(states[0][key], states[1][key]), key
    assert outs[0] == outs[1]  # and the same evaluation (sharded, counts summed)
    calib, test = data()
    torch.set_num_threads(1)
    result = sparsify(make_model("cnn"), calib, 0.7, config(2 * PER_RANK, bn_mode))
    single = summary(result, test)
    assert outs[0]["zeros"] == single["zeros"]  # the exact projection: round(S* N) zeros on both
    # the same released lr schedule: base lr × ranks on the global batch, the warm-up one pass of each rank's slice
    assert outs[0]["lr"] == pytest.approx(single["lr"], rel=1e-12) and single["lr"][:2] == [0.0, 0.0]
    gap = max(abs(outs[0]["allocation"][n] - s) for n, s in single["allocation"].items())
    if bn_mode == "eval":  # the same computation up to floating-point order: the same masks
        weights = [k for k, v in result.model.state_dict().items() if k.endswith("weight") and v.dim() > 1]
        assert all(torch.equal(states[0][k] == 0, result.model.state_dict()[k] == 0) for k in weights)
        assert gap < 1e-3, gap
        assert abs(outs[0]["top1"] - single["top1"]) <= 1 / len(test) + 1e-9
    else:  # train-mode BN normalises with each rank's half batch: close, not equal
        assert gap < 0.05, gap


def test_each_rank_streams_its_slice_of_the_single_process_batches():
    """2 ranks × batch 8 see, pass after pass, exactly the images of 1 process × batch 16, split in halves."""
    from fcpts.calibration import CalibrationStream

    images = torch.arange(50.0).reshape(50, 1)
    whole = CalibrationStream(images, 16, seed=3)
    halves = [CalibrationStream(images, 8, seed=3, shard=(r, 2)) for r in range(2)]
    assert whole.batches_per_pass == halves[0].batches_per_pass == 3
    streams = [iter(s) for s in (whole, *halves)]
    for _ in range(7):  # over two passes and a half: reshuffled alike
        (x, i), (x0, i0), (x1, i1) = (next(s) for s in streams)
        assert torch.equal(i, torch.cat([i0, i1])) and torch.equal(x, torch.cat([x0, x1]))
    with pytest.raises(ValueError, match="equal slices"):
        ShardedBatches(50, 15, 2, 0, torch.Generator())


def _diverging_rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        weights = [torch.ones(4) * (1.0 if rank == 0 else 1.0 + 1e-7)]
        try:
            check_agreement(weights, step=7)
            Path(out, f"rank{rank}.txt").write_text("no error")
        except RuntimeError as exc:
            Path(out, f"rank{rank}.txt").write_text(str(exc))
    finally:
        dist.destroy_process_group()


def test_checksums_catch_ranks_that_diverge(tmp_path):
    mp.spawn(_diverging_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        message = (tmp_path / f"rank{r}.txt").read_text()
        assert "diverged at step 7" in message and "rank 1" in message


def test_one_process_is_untouched_by_the_distributed_code():
    assert not dist.is_initialized() and os.environ.get("WORLD_SIZE", "1") == "1"
    check_agreement([torch.ones(3)], step=0)  # a no-op outside a process group


@pytest.mark.slow
def test_fcpts_run_under_torchrun_with_two_cpu_processes(imagefolder, tmp_path):
    """`torchrun --nproc_per_node=2 -m fcpts run ...` on the fabricated ImageFolder: one results folder written
    by rank 0, exact sparsity, the world size recorded, one line of output."""
    import subprocess
    import sys

    from test_cli import TINY

    out = tmp_path / "run"
    args = [a if a != "4" else "2" for a in TINY]  # per-rank batch 2: the global batch stays 4
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "fcpts", "run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.8",
                           "--out", str(out), "--set", "device=cpu", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["zeros"] == round(0.8 * metrics["total"])
    assert done.stdout.count("results in") == 1  # only rank 0 prints
