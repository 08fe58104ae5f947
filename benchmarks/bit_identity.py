"""Digests of every method family on one small fixed problem: run before and after a refactor and compare.

    python -m benchmarks.bit_identity --out /tmp/after.json [--compare /tmp/before.json]

Each row runs one registered method (through ``fcpts.registry``, the API every caller uses) on a torchvision
ResNet-18 with random weights, 16 px fabricated images and a few steps, and records the SHA-256 of the returned
model's ``state_dict`` and of the run's history (trajectory, allocation). Equal digests mean bit-identical
behaviour on this machine; they are not portable across CPUs or torch versions, so the file is not committed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from types import SimpleNamespace

import torch
import torchvision

from fcpts.config import Config
from fcpts.prune_train import PruneTrainConfig
from fcpts.registry import METHODS, RunContext, RunSpec

# (label, method, tier, schedule, config recipe)
CASES = (
    ("fcpts released", "fcpts", "c", "-", "released"),
    ("fcpts kit", "fcpts", "c", "-", "kit"),
    ("str", "str", "c", "-", "released"),
    ("probmask", "probmask", "c", "-", "released"),
    ("dsa", "dsa", "c", "-", "released"),
    ("lamp tier b", "lamp", "b", "-", "released"),
    ("pot tier a", "pot", "a", "-", "released"),
    ("erk tier c", "erk", "c", "-", "released"),
    ("agp uniform", "prune_train-uniform", "finetune", "agp", "released"),
    ("iterative global", "prune_train-global", "finetune", "iterative", "released"),
    ("dst-ee", "dst-ee", "finetune", "-", "released"),
)


def digest_tensors(state: dict) -> str:
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def digest_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=float).encode()).hexdigest()[:16]


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(128, 3, 16, 16, generator=g)
    labels = torch.randint(0, 10, (128,), generator=g)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10).eval()
    bundle = SimpleNamespace(calib=images[:64], test=None, num_classes=10, name="fabricated")
    train = torch.utils.data.TensorDataset(images, labels)
    return model, bundle, train


def run_case(label: str, method: str, tier: str, schedule: str, recipe: str) -> dict:
    model, bundle, train = problem()
    config = Config.quick_cpu(steps=12, batch_size=16, calib_size=64, image_size=16, device="cpu",
                              progress=False, layer_log_every=4, bn_recalibration_batches=2).with_recipe(recipe)
    if recipe == "kit":
        config = config.replace(select_holdout=16)
    finetune = PruneTrainConfig(steps=12, batch_size=16, lr=1e-3, device="cpu", progress=False)
    ctx = RunContext(config=config, model=model, bundle=lambda seed: bundle, device=torch.device("cpu"),
                     train_split=train, finetune=finetune)
    pruned, info = METHODS[method].run(ctx, RunSpec(method, tier, schedule, 0.8, seed=0))
    history = {k: info.get(k) for k in ("trajectory", "allocation", "coverage", "steps", "sparsity_before_projection",
                                        "selected")}
    result = info.get("result")
    if result is not None:
        history["history"] = result.history
        history["layer_history"] = result.layer_history
    return dict(case=label, state_dict=digest_tensors(pruned.state_dict()), history=digest_json(history))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare", default="", help="a file an earlier run wrote: exit 1 on any difference")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for case in CASES:
        rows.append(run_case(*case))
        print(f"{rows[-1]['case']:<18} state_dict {rows[-1]['state_dict']}  history {rows[-1]['history']}")
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            before = {r["case"]: r for r in json.load(f)}
        differ = [r["case"] for r in rows if before.get(r["case"]) != r]
        print("bit-identical" if not differ else f"DIFFERENT: {', '.join(differ)}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
