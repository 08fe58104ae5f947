"""Models for the kit: any torchvision classifier by name, and the embedded dense ResNet-50 on digits.

Post-training sparsity starts from a *trained* dense network. On ImageNet that is torchvision's released
weights. For the embedded default (no download, a 2-core CPU) the kit trains its own: an unmodified
torchvision ResNet-50 with 10 outputs on the digits (method.md §6), cached in ``default_checkpoint_dir()``
(a checkout's data/checkpoints/; installed: $FCPTS_HOME/checkpoints or ~/.cache/fcpts/checkpoints) with
enough metadata to notice a stale, corrupt or tampered file and retrain instead of trusting it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fcpts import paths
from fcpts.data import DIGITS_SPLIT_SEED, digits_datasets
from fcpts.evaluate import evaluate, resolve_device
from fcpts.files import state_dict_sha256, write_atomic
from fcpts.options import Options

# None: the checkpoint folder is fcpts.paths.checkpoint_dir(), asked at each call (it follows $FCPTS_HOME).
# A folder set here (a test's monkeypatch) replaces it.
DEFAULT_CHECKPOINT_DIR: Path | None = None
CHECKPOINT_FORMAT = 1


def default_checkpoint_dir() -> Path:
    """Where embedded dense checkpoints live unless a caller names a folder: ``DEFAULT_CHECKPOINT_DIR`` if set,
    else ``fcpts.paths.checkpoint_dir()``."""
    return Path(DEFAULT_CHECKPOINT_DIR) if DEFAULT_CHECKPOINT_DIR is not None else paths.checkpoint_dir()


# --------------------------------------------------------------------------------------------------------
# any torchvision classifier
# --------------------------------------------------------------------------------------------------------
def classification_models() -> list[str]:
    """Names of torchvision's image classification models (not detection, segmentation, video...)."""
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def build_model(name: str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    """A torchvision classification model by name, randomly initialised or with released weights.

    `weights` is a member of the model's weights enum ("IMAGENET1K_V1", "DEFAULT", ...; "" or None for
    none). Loading weights downloads them into the torch hub cache unless the file is already at
    `$TORCH_HOME/hub/checkpoints/<file>`. `num_classes` defaults to the weights' classes (1000 without
    weights); a different count with weights is an error, since the classifier would not match.
    """
    import torchvision.models

    valid = classification_models()
    if name not in valid:
        raise ValueError(f"unknown model {name!r}; torchvision classification models: {', '.join(valid)}")
    if not weights:
        return torchvision.models.get_model(name, weights=None, num_classes=int(num_classes or 1000))
    enum = torchvision.models.get_model_weights(name)
    member = weights.split(".")[-1]  # accept "ResNet50_Weights.IMAGENET1K_V1" too
    try:
        w = enum[member]
    except KeyError:
        listed = ", ".join(x.name for x in enum)
        raise ValueError(f"{name} has no weights {weights!r}; valid: {listed}, DEFAULT (or none)") from None
    n_weights = len(w.meta["categories"])
    if num_classes is not None and int(num_classes) != n_weights:
        raise ValueError(
            f"{name} {w.name} has {n_weights} classes, not num_classes={num_classes}; use weights=None to build "
            f"a {num_classes}-class model (or fine-tune one yourself)"
        )
    try:
        return torchvision.models.get_model(name, weights=w)
    except OSError as err:  # URLError and socket errors are OSErrors: no internet, proxy, full disk...
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        raise RuntimeError(
            f"could not load {name} {w.name} ({err}). Without internet, download {w.url} elsewhere and "
            f"place it at {cached}"
        ) from err


# --------------------------------------------------------------------------------------------------------
# the embedded dense model
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenseRecipe(Options):
    """How the embedded dense model is trained. Every field feeds `key()`, hence the checkpoint name.

    The default (method.md §6) is AdamW with a one-cycle schedule (SGD at lr 0.1 once ended at 30 % on this
    small problem) plus random shifts of up to 2 px. Measured here: without the shifts the network fits the
    1,437 training images exactly (final loss ~1e-3) and scores 96.1 % test top-1, under the kit's 97 % floor;
    with them, 98.9 % (2 threads) and 99.4 % (1 thread; thread count changes the float summation order).
    """

    model: str = "resnet50"  # a torchvision classification model, randomly initialised, 10 classes
    dataset: str = "digits"  # "digits" (the embedded default) or "fashion-mnist" (EMBEDDED_DATASETS)
    image_size: int = 32  # input side in pixels (the 8x8 digits upsampled)
    epochs: int = 20  # passes over the training images (embedded_recipe: 8 on Fashion-MNIST)
    batch_size: int = 64  # training images per step (an incomplete last batch is dropped)
    optimizer: str = "adamw"  # the only one implemented
    lr: float = 2e-3  # peak of the one-cycle schedule
    weight_decay: float = 0.05  # AdamW weight decay
    schedule: str = "onecycle"  # torch's OneCycleLR over all steps, the only one implemented
    label_smoothing: float = 0.0  # of the cross-entropy loss
    shift: int = 2  # random shifts of up to this many pixels per training image (0: no augmentation)
    seed: int = 0  # weights init and batch order; the digits split is data.DIGITS_SPLIT_SEED

    def key(self) -> str:
        """A short, stable fingerprint of the recipe: the first 12 hex digits of sha256 of its fields."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def checkpoint_name(self) -> str:
        return f"dense-{self.model}-{self.dataset}-{self.key()}.pt"


EMBEDDED_DATASETS = ("digits", "fashion-mnist")  # the datasets the kit trains its own dense model on
MIN_DENSE_ACCURACY = {"digits": 0.97, "fashion-mnist": 0.80}  # a cached dense model below this is not used
FASHION_TRAIN_IMAGES = 10_000  # the dense model's training subset of the 60,000 (seeded); the test split is whole


def dense_floor(dataset: str, min_accuracy: float | None = None) -> float:
    """The test top-1 a dense model of ``dataset`` must reach: ``min_accuracy`` when given, else the dataset's."""
    return MIN_DENSE_ACCURACY.get(dataset, 0.0) if min_accuracy is None else min_accuracy


def embedded_datasets(recipe: "DenseRecipe") -> tuple[Any, Any]:
    """(train, test) of an embedded dense model: the digits split, or a seeded ``FASHION_TRAIN_IMAGES`` subset of
    Fashion-MNIST's train split and its whole test split."""
    if recipe.dataset == "digits":
        return digits_datasets(recipe.image_size, seed=DIGITS_SPLIT_SEED)
    from torch.utils.data import Subset

    from fcpts.data import fashion_mnist_datasets

    _check_embedded(recipe.dataset)
    train, test = fashion_mnist_datasets(image_size=recipe.image_size)
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    return Subset(train, chosen[:FASHION_TRAIN_IMAGES].tolist()), test


def _check_embedded(dataset: str) -> None:
    if dataset not in EMBEDDED_DATASETS:
        raise ValueError(f"the kit trains dense models on {' and '.join(EMBEDDED_DATASETS)} only, not {dataset!r}")


def embedded_recipe(model: str = "resnet50", dataset: str = "digits", image_size: int = 32) -> "DenseRecipe":
    """The kit's recipe for its own dense ``model`` on ``dataset``: the digits default; on Fashion-MNIST (more
    images per epoch) 8 epochs of its ``FASHION_TRAIN_IMAGES`` subset."""
    _check_embedded(dataset)
    extra = {"epochs": 8} if dataset == "fashion-mnist" else {}
    return DenseRecipe(model=model, dataset=dataset, image_size=image_size, **extra)


def _shift_batch(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of a [B, C, H, W] batch by its own random offset of up to `max_shift` pixels,
    replicating the border (the normalised background), so the digit moves but no frame appears."""
    if max_shift <= 0:
        return x
    m = max_shift
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    offsets = torch.randint(0, 2 * m + 1, (x.shape[0], 2), generator=generator).tolist()
    h, w = x.shape[2], x.shape[3]
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def train_dense(recipe: DenseRecipe = DenseRecipe(), progress: bool = True, min_accuracy: float | None = None,
                device: str | torch.device | None = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Train `recipe` on its dataset's training images (``embedded_datasets``) and check its test top-1 before
    anyone relies on it.

    Deterministic given the recipe on a given machine and thread count: `torch.manual_seed(seed)` fixes the
    initial weights, seeded generators fix the batch order and the shifts, and num_workers=0 keeps all
    randomness in this process.
    Raises FloatingPointError on a non-finite loss and RuntimeError if test top-1 < `min_accuracy` (the
    default floor suits the default recipe; a tiny test recipe passes a lower one).
    """
    from tqdm.auto import tqdm

    if recipe.optimizer != "adamw" or recipe.schedule != "onecycle":
        raise ValueError("DenseRecipe supports optimizer='adamw' with schedule='onecycle'")
    device = resolve_device(device)
    min_accuracy = dense_floor(recipe.dataset, min_accuracy)
    train, test = embedded_datasets(recipe)
    if len(train) < recipe.batch_size:
        raise ValueError(f"batch_size {recipe.batch_size} exceeds the {len(train)} training images")

    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, weights=None, num_classes=10).to(device)
    # drop_last: a last batch of one image would make BatchNorm's batch statistics undefined.
    loader = DataLoader(train, batch_size=recipe.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(recipe.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    total = recipe.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    augment_rng = torch.Generator().manual_seed(recipe.seed + 1)  # its own stream: shifts never move the batch order

    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=total, desc=f"dense {recipe.model}", disable=not progress, leave=False)
    model.train()
    try:
        for epoch in range(recipe.epochs):
            losses.append(_train_epoch(model, loader, optimizer, scheduler, criterion, recipe, augment_rng, device,
                                       epoch, bar))
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    model.eval()
    result = evaluate(model, test, batch_size=256, progress=False)
    metrics = {"test_top1": result["top1"], "test_top5": result["top5"], "test_n": result["n"],
               "epoch_losses": losses, "train_seconds": seconds, "steps": total, "device": str(device),
               "torch": str(torch.__version__)}
    if result["top1"] < min_accuracy:
        raise RuntimeError(
            f"dense {recipe.model} reached only {result['top1']:.2%} test top-1 (floor {min_accuracy:.0%}) after "
            f"{recipe.epochs} epochs; not caching it. Check the recipe (lr, epochs) or the environment."
        )
    return model.cpu(), metrics


def _train_epoch(model, loader, optimizer, scheduler, criterion, recipe: DenseRecipe, augment_rng, device, epoch: int,
                 bar) -> float:
    """One pass over the digits train split; returns the mean training loss."""
    epoch_loss = 0.0
    for step, (x, y) in enumerate(loader):
        x = _shift_batch(x, recipe.shift, augment_rng)
        loss = criterion(model(x.to(device)), y.to(device))
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"dense training loss became {value} at epoch {epoch + 1}, step {step + 1}; lower "
                f"DenseRecipe.lr (now {recipe.lr}) or change the seed. No checkpoint was written."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        epoch_loss += value
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
    return epoch_loss / len(loader)


def _say(message: str) -> None:
    print(f"[fcpts] {message}", file=sys.stderr, flush=True)


def _verify(path: Path, recipe: DenseRecipe, model: nn.Module,
            min_accuracy: float) -> tuple[dict[str, Any] | None, str]:
    """Load and check a checkpoint into `model`; returns (checkpoint, "") or (None, what was wrong)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # weights_only: no code execution
    except Exception as err:  # truncated, not a zip/pickle, garbage...
        return None, f"it could not be read ({type(err).__name__}: {err})"
    if not isinstance(ckpt, dict) or not {"recipe", "state_dict", "sha256"} <= set(ckpt):
        return None, "it is not a dense checkpoint of this kit (missing recipe/state_dict/sha256)"
    if ckpt["recipe"] != recipe.to_dict():
        diff = {k: (ckpt["recipe"].get(k), v) for k, v in recipe.to_dict().items() if ckpt["recipe"].get(k) != v}
        return None, f"its recipe differs from the requested one (file vs requested: {diff})"
    if state_dict_sha256(ckpt["state_dict"]) != ckpt["sha256"]:
        return None, "its weights do not match the stored sha256 checksum (modified or damaged)"
    if float(ckpt.get("test_top1", 0.0)) < min_accuracy:  # e.g. cached by a caller with a lower floor
        return None, f"its recorded test top-1 {float(ckpt.get('test_top1', 0.0)):.2%} is below {min_accuracy:.0%}"
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        return None, f"its weights do not fit {recipe.model} ({err})"
    return ckpt, ""


def load_embedded_model(recipe: DenseRecipe = DenseRecipe(), retrain: bool = False, progress: bool = True,
                        checkpoint_dir: str | os.PathLike[str] | None = None,
                        min_accuracy: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained dense model of `recipe`, from its checkpoint if valid, else trained now and cached.

    The checkpoint `<checkpoint_dir>/dense-<model>-digits-<key>.pt` (default dir: ``default_checkpoint_dir()``)
    stores the recipe, the state_dict, its sha256 and the test accuracy. A file that cannot be read, was
    made by another recipe, fails its checksum or records an accuracy below `min_accuracy` is renamed
    `*.bad` (kept for inspection) and the model is retrained. Returns `(model in eval mode, info)` with info keys path, recipe, key, test_top1, sha256,
    trained (True if trained in this call), metrics.
    """
    min_accuracy = dense_floor(recipe.dataset, min_accuracy)
    directory = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
    path = directory / recipe.checkpoint_name()
    model = build_model(recipe.model, weights=None, num_classes=10)
    if path.exists() and not retrain:
        ckpt, problem = _verify(path, recipe, model, min_accuracy)
        if ckpt is not None:
            info = {"path": str(path), "recipe": recipe.to_dict(), "key": recipe.key(),
                    "test_top1": ckpt.get("test_top1"), "sha256": ckpt["sha256"], "trained": False,
                    "metrics": ckpt.get("metrics", {})}
            return model.eval(), info
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        _say(f"checkpoint {path} was not used: {problem}. Kept it as {bad.name}; retraining.")
    elif not path.exists():
        _say(f"no dense checkpoint at {path}; training {recipe.model} on {recipe.dataset} ({recipe.epochs} epochs).")

    model, metrics = train_dense(recipe, progress=progress, min_accuracy=min_accuracy)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    sha = state_dict_sha256(state)
    checkpoint = {"format": CHECKPOINT_FORMAT, "recipe": recipe.to_dict(), "state_dict": state, "sha256": sha,
                  "test_top1": metrics["test_top1"], "metrics": metrics}
    write_atomic(path, lambda handle: torch.save(checkpoint, handle))
    _say(f"dense {recipe.model}: test top-1 {metrics['test_top1']:.2%} in {metrics['train_seconds']:.0f} s; "
         f"saved {path}")
    info = {"path": str(path), "recipe": recipe.to_dict(), "key": recipe.key(), "test_top1": metrics["test_top1"],
            "sha256": sha, "trained": True, "metrics": metrics}
    return model.eval(), info


def resolve_dense_model(config: Any, num_classes: int, progress: bool = False, train: bool = True,
                        min_accuracy: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The dense model a run of ``config`` sparsifies, the one rule every caller (``fcpts run``, the sweep runner,
    the notebooks) uses: for digits without weights, the kit's embedded ``config.model`` trained on digits at
    ``config.image_size`` (trained and cached on first use); else torchvision's ``config.model`` with
    ``config.weights`` (random init when empty) and ``num_classes`` outputs.

    ``train=False`` never trains: a missing or unusable checkpoint raises ``FileNotFoundError`` instead (and
    nothing is renamed). Returns (model in eval mode, info with a readable ``source``)."""
    if config.dataset in EMBEDDED_DATASETS and not config.weights:
        recipe = embedded_recipe(config.model, config.dataset, config.image_size)
        min_accuracy = dense_floor(recipe.dataset, min_accuracy)
        if not train:
            path = default_checkpoint_dir() / recipe.checkpoint_name()
            problem = "it does not exist"
            if path.exists():  # checked without side effects: load_embedded_model renames an unusable checkpoint
                ckpt, problem = _verify(path, recipe, build_model(recipe.model, None, 10), min_accuracy)
                problem = "" if ckpt is not None else problem
            if problem:
                raise FileNotFoundError(f"no usable dense checkpoint at {path} ({problem}); train it without --no-train, or "
                                        f"with `fcpts train-dense --model {config.model} --image-size {config.image_size}`")
        model, info = load_embedded_model(recipe, progress=progress, min_accuracy=min_accuracy)
        return model, dict(info, source=f"embedded {config.model} trained on {config.dataset} ({info['path']})")
    with torch.random.fork_rng(devices=[]):  # a random init is a function of the run's seed (and every process agrees)
        torch.manual_seed(config.seed)
        model = build_model(config.model, weights=config.weights or None, num_classes=num_classes)
    return model.eval(), {"source": f"torchvision {config.model} {config.weights or '(random init)'}",
                          "weights": config.weights or None}
