"""Data for the kit: the embedded digits default, ImageNet (or any ImageFolder), CIFAR-10/100.

Post-training sparsity needs two things from a dataset (method.md §1):

* a small *calibration* set drawn from the **train** split (the released code uses 1,024 ImageNet train
  images, labels unused), optionally augmented, and
* a held-out *test* set to measure top-1 before and after pruning.

`load_data(config)` is the one entry point for the CLI and the notebooks; the functions it dispatches to are
public so a notebook can show each step. Every random choice is seeded: the same seed gives the same split,
the same calibration images and the same augmentations.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from fcpts import paths
from fcpts.paths import REPO_ROOT  # noqa: F401  importable from here as before; default folders: fcpts.paths

if TYPE_CHECKING:  # only for annotations: keeps `import fcpts.data` free of import cycles
    from fcpts.config import Config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# The embedded dense model (fcpts.models.DenseRecipe) is trained on the digits split made with this seed.
# `load_data` keeps it fixed, whatever Config.seed is, so the test images were never training images.
DIGITS_SPLIT_SEED = 0
DATASETS = ("digits", "fashion-mnist", "imagenet", "folder", "cifar10", "cifar100")
# Fashion-MNIST: Debian's dataset-fashion-mnist package puts the original gzipped IDX files here.
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))  # mean and std of the 60,000 training images' pixels


# --------------------------------------------------------------------------------------------------------
# digits: the embedded default (no download, seconds on a CPU)
# --------------------------------------------------------------------------------------------------------
class DigitsSplit(TensorDataset):
    """A TensorDataset of `(image, label)` plus where the images came from and how they were normalised.

    `source_indices[i]` is the row of `sklearn.datasets.load_digits()` that item i was made from; `mean`
    and `std` are the per-channel statistics of the *train* split that both splits were normalised with.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, source_indices: np.ndarray,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__(images, labels)
        self.source_indices = source_indices
        self.mean = mean
        self.std = std
        self.num_classes = 10


def digits_datasets(image_size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> tuple[DigitsSplit, DigitsSplit]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as 3-channel `image_size` tensors.

    Steps: scale the 0..16 pixel values to [0, 1]; a stratified train/test split (`test_fraction` of each
    class held out, `random_state=seed`); bilinear upsampling to `image_size` (torchvision's ImageNet
    models expect 3-channel inputs of a few dozen pixels at least); the grey channel repeated three times;
    normalisation by the per-channel mean/std of the *train* split only, so no test statistic leaks in.
    Returns `(train, test)`, each yielding `(float32 [3, S, S], int64 label)`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {image_size}")
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)  # [N, 8, 8] in [0, 1]
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    # align_corners=False is the usual image-resize convention (pixel centres, not corners).
    big = F.interpolate(images[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    big = big.repeat(1, 3, 1, 1)
    train_x = big[torch.from_numpy(train_idx)]
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3))

    def make(idx: np.ndarray) -> DigitsSplit:
        x = (big[torch.from_numpy(idx)] - mean[:, None, None]) / std[:, None, None]
        return DigitsSplit(x.contiguous(), labels[torch.from_numpy(idx)], idx, mean, std)

    return make(train_idx), make(test_idx)


class RandomShift:
    """Shift a `[C, H, W]` tensor by up to `max_shift` pixels in each direction (pad, then crop).

    The padding replicates the border, so a normalised background stays background (zero-padding in
    normalised units would draw a dark frame). Uses the global torch RNG, which `CalibrationSubset`
    seeds per item and draw, so the shifts are reproducible.
    """

    def __init__(self, max_shift: int = 2) -> None:
        self.max_shift = int(max_shift)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.max_shift
        if m <= 0:
            return x
        padded = F.pad(x[None], (m, m, m, m), mode="replicate")[0]
        dy, dx = (int(v) for v in torch.randint(0, 2 * m + 1, (2,)))
        return padded[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"


# --------------------------------------------------------------------------------------------------------
# calibration subsets (any dataset)
# --------------------------------------------------------------------------------------------------------
class CalibrationSubset(Dataset):
    """`size` items of a train dataset chosen with a seeded `torch.Generator`, with an optional transform.

    `indices` are positions in `base`. When `augment` is true the transform runs under a torch RNG seeded
    from `(seed, epoch, index, draw)`, where `draw` counts how often this item has been read: repeated
    passes see fresh augmentations, yet two runs with the same seed see the same ones. The draw counters
    live in this process; with DataLoader workers (each holding a copy) call `set_epoch(e)` every pass.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], seed: int,
                 transform: Callable[[Any], Any] | None = None, augment: bool = False) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.seed = int(seed)
        self.transform = transform
        self.augment = bool(augment)
        self.epoch = 0
        self._draws = [0] * len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Start pass ``epoch``: its augmentations depend on (seed, epoch, index) only, never on what was
        read before, so a run's numbers do not depend on the runs that came before it in the process."""
        self.epoch = int(epoch)
        self._draws = [0] * len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.base[self.indices[i]]
        if self.transform is None:
            return x, y
        if not self.augment:  # deterministic transform: no RNG bookkeeping needed
            return self.transform(x), y
        draw = self._draws[i]
        self._draws[i] += 1
        state = np.random.SeedSequence([self.seed, self.epoch, self.indices[i], draw]).generate_state(2)
        # fork_rng restores the global RNG afterwards: augmenting must not disturb the caller's stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(state[0]) << 32 | int(state[1]))
            x = self.transform(x)
        return x, y


def calibration_subset(train_dataset: Dataset, size: int, seed: int, augment: bool = False,
                       transform: Callable[[Any], Any] | None = None) -> CalibrationSubset:
    """Draw `size` distinct items of `train_dataset` (seeded) as the calibration set.

    `transform` is applied to each image as it is read; if it is None and `augment` is true, tensor
    datasets (digits) get `RandomShift(2)`. Image datasets must pass their own transform (see
    `imagenet_datasets`). Only ever pass a *train* split: calibrating on test images would flatter the
    test accuracy of the pruned model.
    """
    n = len(train_dataset)  # type: ignore[arg-type]
    size = int(size)
    if size < 1:
        raise ValueError(f"calibration size must be at least 1, got {size}")
    if size > n:
        raise ValueError(
            f"calibration size {size} is larger than the train split ({n} items); lower calib_size to at most {n}"
        )
    if transform is None and augment:
        if not isinstance(train_dataset, TensorDataset):
            raise ValueError("augment=True on a non-tensor dataset needs an explicit transform")
        transform = RandomShift(2)
    generator = torch.Generator().manual_seed(int(seed))
    indices = torch.randperm(n, generator=generator)[:size].tolist()
    return CalibrationSubset(train_dataset, indices, seed, transform=transform, augment=augment)


def calibration_manifest(subset: CalibrationSubset) -> dict[str, Any]:
    """What was drawn, as plain JSON-able data: indices into the train split and, for image folders,
    the files relative to the dataset root (`train/n01440764/xxx.JPEG`), so a run can be audited."""
    manifest: dict[str, Any] = {"seed": subset.seed, "size": len(subset), "augment": subset.augment,
                                "indices": list(subset.indices)}
    base = subset.base
    if hasattr(base, "samples") and hasattr(base, "root"):  # torchvision ImageFolder
        top = Path(base.root).parent
        manifest["files"] = [Path(base.samples[i][0]).relative_to(top).as_posix() for i in subset.indices]
    if isinstance(base, DigitsSplit):
        manifest["source_indices"] = [int(base.source_indices[i]) for i in subset.indices]
    return manifest


def save_calibration_manifest(subset: CalibrationSubset, path: str | os.PathLike[str]) -> Path:
    """Write `calibration_manifest(subset)` as JSON to `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration_manifest(subset), indent=1))
    return path


# --------------------------------------------------------------------------------------------------------
# ImageNet, or any ImageFolder tree with train/ and val/
# --------------------------------------------------------------------------------------------------------
_LAYOUT_HELP = (
    "Expected layout:\n"
    "  <root>/train/n01440764/n01440764_10026.JPEG\n"
    "  <root>/val/n01440764/ILSVRC2012_val_00000293.JPEG\n"
    "(one folder per class, the same class folders in train/ and val/)."
)


class UnreadableImageError(ValueError):
    """An image file of an ImageFolder that PIL cannot read: one line that names the file and what to do."""

    def __init__(self, message: str):
        # Re-raised from a DataLoader worker, the message carries the worker's traceback: keep our line only.
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def read_image(path: str) -> Any:
    """ImageFolder's loader: the file as an RGB PIL image, or an ``UnreadableImageError`` naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError, truncated files, bad headers
        raise UnreadableImageError(
            f"{path} is not a readable image ({type(exc).__name__}: {exc}); delete or replace the file "
            "(a partial download or extraction leaves such files), then run again") from None


def resolve_imagenet_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The ImageNet root: the argument, else $IMAGENET_ROOT, else ``imagenet/`` under ``paths.data_root()``
    (a checkout's data/imagenet)."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("IMAGENET_ROOT", "")
    return Path(env).expanduser() if env else paths.data_root() / "imagenet"


def _is_image(name: str) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return name.lower().endswith(IMG_EXTENSIONS)


def _check_split(split_dir: Path) -> list[str]:
    """Class folder names of one split, after checking each holds at least one image."""
    entries = list(os.scandir(split_dir))
    classes = sorted(e.name for e in entries if e.is_dir())
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    if loose and split_dir.name == "val":
        raise ValueError(
            f"{split_dir} holds {len(loose)} image files directly (e.g. {loose[0]}) instead of one folder per "
            "class. This is how the ILSVRC2012 validation archive unpacks. Reorganise it: run the standard "
            "`valprep.sh` script inside val/ (it ships with the PyTorch ImageNet example), or move each image "
            "into a folder named by its wnid, e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG.\n" + _LAYOUT_HELP
        )
    if loose:
        raise ValueError(f"{split_dir} holds image files directly (e.g. {loose[0]}); put them in class folders.\n"
                         + _LAYOUT_HELP)
    if not classes:
        raise ValueError(f"{split_dir} has no class folders.\n" + _LAYOUT_HELP)
    for name in classes:
        # Stop at the first image: on ImageNet a full listing of every folder would take minutes.
        with os.scandir(split_dir / name) as it:
            if not any(e.is_file() and _is_image(e.name) for e in it):
                raise ValueError(
                    f"class folder {split_dir / name} contains no image files; remove it or restore its images "
                    "(an incomplete copy or extraction?)"
                )
    return classes


def check_imagefolder_layout(root: str | os.PathLike[str]) -> list[str]:
    """Check that `root` has `train/` and `val/`, each with the same class folders holding images.

    Returns the sorted class names. Raises FileNotFoundError (wrong path, missing split) or ValueError
    (flat val/ folder, class folder without images, different class sets) with what to do about it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset root {root} does not exist. Pass the folder that contains train/ and val/ "
            "(argument / Config.data_root), set IMAGENET_ROOT, or place the data at "
            f"{paths.data_root() / 'imagenet'}.\n" + _LAYOUT_HELP
        )
    splits = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root} has no {split}/ folder.\n" + _LAYOUT_HELP)
        splits[split] = _check_split(root / split)
    if splits["train"] != splits["val"]:
        only_train = sorted(set(splits["train"]) - set(splits["val"]))
        only_val = sorted(set(splits["val"]) - set(splits["train"]))
        raise ValueError(
            f"train/ and val/ under {root} have different class folders (labels would not line up): "
            f"{len(only_train)} only in train (e.g. {only_train[:3]}), {len(only_val)} only in val "
            f"(e.g. {only_val[:3]})"
        )
    return splits["train"]


def _resolve_weights(model: str, weights: str | None) -> Any:
    if not weights:
        return None
    from torchvision.models import get_model_weights

    enum = get_model_weights(model)
    name = weights.split(".")[-1]  # accept "ResNet50_Weights.IMAGENET1K_V1" too
    try:
        return enum[name]
    except KeyError:
        valid = ", ".join(w.name for w in enum)
        raise ValueError(f"{model} has no weights {weights!r}; valid: {valid}, DEFAULT") from None


def eval_transform(weights: str | None = "IMAGENET1K_V1", model: str = "resnet50", image_size: int = 224) -> Callable:
    """The evaluation transform: the weights' own `transforms()` (their resize, crop and normalisation), or
    without weights Resize(image_size * 256/224) + CenterCrop(image_size) + ImageNet normalisation."""
    from torchvision import transforms as T

    w = _resolve_weights(model, weights)
    if w is not None:
        tf = w.transforms()
        crop = list(getattr(tf, "crop_size", [image_size]))[0]
        if crop != image_size:
            raise ValueError(
                f"{model} {w.name} is evaluated at {crop} px but image_size={image_size}; set image_size={crop} "
                "(or use no weights)"
            )
        return tf
    return T.Compose([
        T.Resize(int(image_size * 256 / 224)),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def imagenet_datasets(root: str | os.PathLike[str] | None = None, weights: str | None = "IMAGENET1K_V1",
                      model: str = "resnet50", image_size: int = 224, calib_size: int = 1024, seed: int = 0,
                      augment: bool = True) -> tuple[CalibrationSubset, Dataset]:
    """Calibration set (`calib_size` seeded train images) and the val set of an ImageNet-style folder.

    Calibration augmentation follows the released code: RandomResizedCrop(image_size) + horizontal flip,
    normalised like the weights expect; `augment=False` uses the evaluation transform instead.
    """
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    root = resolve_imagenet_root(root)
    classes = check_imagefolder_layout(root)
    w = _resolve_weights(model, weights)
    if w is not None and len(w.meta["categories"]) != len(classes):
        raise ValueError(
            f"{model} {w.name} predicts {len(w.meta['categories'])} classes but {root} has {len(classes)} class "
            "folders; the labels would not line up. Use the full class set or weights=None."
        )
    evaluation = eval_transform(weights, model, image_size)
    mean = getattr(evaluation, "mean", IMAGENET_MEAN)
    std = getattr(evaluation, "std", IMAGENET_STD)
    if augment:
        calib_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                              T.Normalize(mean, std)])
    else:
        calib_tf = evaluation
    train = ImageFolder(str(root / "train"), loader=read_image)  # transform applied by the subset, seeded
    val = ImageFolder(str(root / "val"), transform=evaluation, loader=read_image)
    calib = calibration_subset(train, calib_size, seed, augment=augment, transform=calib_tf)
    return calib, val


# --------------------------------------------------------------------------------------------------------
# CIFAR-10/100 through torchvision
# --------------------------------------------------------------------------------------------------------
def cifar_datasets(name: str = "cifar10", root: str | os.PathLike[str] | None = None, image_size: int = 32,
                   calib_size: int = 1024, seed: int = 0, augment: bool = True,
                   download: bool = False) -> tuple[CalibrationSubset, Dataset]:
    """Calibration set from the CIFAR train split (RandomCrop(pad 4) + flip when `augment`) and the test
    split. `root` defaults to `paths.data_root()` (a checkout's data/); nothing is downloaded unless `download=True`."""
    from torchvision import datasets
    from torchvision import transforms as T

    if name not in CIFAR_STATS:
        raise ValueError(f"unknown CIFAR variant {name!r}; use cifar10 or cifar100")
    root = Path(root).expanduser() if root else paths.data_root()
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    mean, std = CIFAR_STATS[name]
    resize = [T.Resize(image_size)] if image_size != 32 else []
    evaluation = T.Compose(resize + [T.ToTensor(), T.Normalize(mean, std)])
    calib_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + resize
                         + [T.ToTensor(), T.Normalize(mean, std)]) if augment else evaluation
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download, transform=evaluation)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{name} not found under {root} ({err}). Pass download=True (CLI: --download) to fetch it, "
            "or point the data root at a folder that holds it."
        ) from None
    return calibration_subset(train, calib_size, seed, augment=augment, transform=calib_tf), test


# --------------------------------------------------------------------------------------------------------
# Fashion-MNIST: a second, harder real dataset (60,000 train / 10,000 test images, 10 classes)
# --------------------------------------------------------------------------------------------------------
def fashion_mnist_root(root: str | os.PathLike[str] | None = None, download: bool = False) -> Path:
    """A folder torchvision's ``FashionMNIST`` reads: ``<root>/FashionMNIST/raw/`` with the four IDX files.

    Looks in ``root`` (default ``paths.data_root()``); failing that, unpacks the gzipped files of Debian's
    ``dataset-fashion-mnist`` package (``FASHION_MNIST_SYSTEM``, or ``root`` itself if it holds the ``.gz`` files)
    into it once; failing that, downloads them when ``download``; else a FileNotFoundError that says how to get them."""
    import gzip
    import shutil

    base = Path(root).expanduser() if root else paths.data_root()
    raw = base / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in FASHION_MNIST_FILES):
        return base
    for source in (base, FASHION_MNIST_SYSTEM):
        if all((source / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES):
            raw.mkdir(parents=True, exist_ok=True)
            for name in FASHION_MNIST_FILES:
                partial = raw / f"{name}.partial"  # a reader never sees half a file
                with gzip.open(source / f"{name}.gz", "rb") as packed, open(partial, "wb") as plain:
                    shutil.copyfileobj(packed, plain)
                os.replace(partial, raw / name)
            return base
    if download:
        from torchvision import datasets

        datasets.FashionMNIST(str(base), train=True, download=True)
        return base
    raise FileNotFoundError(
        f"Fashion-MNIST not found: neither {raw} nor {FASHION_MNIST_SYSTEM} holds its four IDX files. On Debian or "
        "Ubuntu: `sudo apt install dataset-fashion-mnist`; elsewhere pass download=True (it fetches them with "
        "torchvision), or point --data / Config.data_root at a folder with the .gz files.")


def fashion_mnist_datasets(root: str | os.PathLike[str] | None = None, image_size: int = 32,
                           download: bool = False) -> tuple[Dataset, Dataset]:
    """The Fashion-MNIST train and test splits through torchvision's class: 28 px grey images resized to
    ``image_size``, normalised, repeated to 3 channels (the torchvision models expect RGB)."""
    from torchvision import datasets
    from torchvision import transforms as T

    base = fashion_mnist_root(root, download)
    mean, std = FASHION_MNIST_STATS
    resize = [T.Resize(image_size, antialias=True)] if image_size != 28 else []
    transform = T.Compose(resize + [T.ToTensor(), T.Normalize(mean, std), T.Lambda(_three_channels)])
    return (datasets.FashionMNIST(str(base), train=True, transform=transform),
            datasets.FashionMNIST(str(base), train=False, transform=transform))


def _three_channels(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1)


# --------------------------------------------------------------------------------------------------------
# one entry point
# --------------------------------------------------------------------------------------------------------
@dataclass
class DataBundle:
    """What a sparsification run needs: calibration images, a test set, and what they are."""

    calib: Dataset
    test: Dataset
    num_classes: int
    name: str
    manifest: dict[str, Any] | None = None


def load_data(config: "Config", download: bool = False) -> DataBundle:
    """Build the calibration and test sets that `config` asks for.

    Uses config.dataset, seed (calibration sample and augmentations), calib_size, image_size,
    calib_augment and data_root (ImageNet/folder root, or where CIFAR lives). For digits the train/test
    split is always made with DIGITS_SPLIT_SEED, the split the embedded dense model was trained on.
    """
    name = config.dataset
    if name == "digits":
        train, test = digits_datasets(config.image_size, seed=DIGITS_SPLIT_SEED)
        calib = calibration_subset(train, config.calib_size, config.seed, augment=config.calib_augment)
        return DataBundle(calib, test, 10, "digits", calibration_manifest(calib))
    if name == "fashion-mnist":
        train, test = fashion_mnist_datasets(config.data_root or None, config.image_size, download)
        calib = calibration_subset(train, config.calib_size, config.seed, augment=config.calib_augment,
                                   transform=RandomShift(2) if config.calib_augment else None)
        return DataBundle(calib, test, 10, name, calibration_manifest(calib))
    if name in ("imagenet", "folder"):
        if name == "folder" and not config.data_root:
            raise ValueError("dataset 'folder' needs Config.data_root: a folder with train/ and val/ class folders")
        calib, val = imagenet_datasets(
            root=config.data_root or None, weights=config.weights or None, model=config.model,
            image_size=config.image_size, calib_size=config.calib_size, seed=config.seed,
            augment=config.calib_augment,
        )
        return DataBundle(calib, val, len(val.classes), name, calibration_manifest(calib))  # type: ignore[attr-defined]
    if name in CIFAR_STATS:
        calib, test = cifar_datasets(name, root=config.data_root or None, image_size=config.image_size,
                                     calib_size=config.calib_size, seed=config.seed,
                                     augment=config.calib_augment, download=download)
        return DataBundle(calib, test, len(test.classes), name, calibration_manifest(calib))  # type: ignore[attr-defined]
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
