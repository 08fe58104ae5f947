"""Fashion-MNIST, the second real dataset: found as Debian ships it (gzipped IDX files), read through torchvision's
class, calibrated like the others. The unit tests fabricate tiny IDX files; one test reads the real package."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fcpts import Config
from fcpts import data as fdata
from fcpts.data import FASHION_MNIST_FILES, FASHION_MNIST_SYSTEM, fashion_mnist_datasets, fashion_mnist_root, load_data
from fcpts.models import DenseRecipe, embedded_recipe


def write_idx(folder: Path, train: int = 20, test: int = 10) -> None:
    """The four files in the original format: big-endian magic and sizes, then uint8 pixels or labels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_debian_files_are_unpacked_once_and_read_by_torchvision(tmp_path):
    write_idx(tmp_path)
    train, test = fashion_mnist_datasets(root=tmp_path, image_size=32)
    assert len(train) == 20 and len(test) == 10
    x, y = train[3]
    assert tuple(x.shape) == (3, 32, 32) and y == 3 and bool((x[0] == x[1]).all())
    assert all((tmp_path / "FashionMNIST" / "raw" / name).is_file() for name in FASHION_MNIST_FILES)
    assert fashion_mnist_root(tmp_path) == tmp_path  # found unpacked the second time


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fdata, "FASHION_MNIST_SYSTEM", tmp_path / "not-installed")
    with pytest.raises(FileNotFoundError, match="apt install dataset-fashion-mnist"):
        fashion_mnist_root(tmp_path / "empty")


def test_load_data_calibrates_on_the_train_split(tmp_path):
    write_idx(tmp_path)
    bundle = load_data(Config.quick_cpu(dataset="fashion-mnist", data_root=str(tmp_path), calib_size=8, seed=1))
    assert bundle.name == "fashion-mnist" and bundle.num_classes == 10 and len(bundle.calib) == 8
    assert len(bundle.test) == 10 and tuple(bundle.calib[0][0].shape) == (3, 32, 32)
    again = load_data(Config.quick_cpu(dataset="fashion-mnist", data_root=str(tmp_path), calib_size=8, seed=1))
    assert bundle.manifest["indices"] == again.manifest["indices"]


def test_the_digits_checkpoint_keeps_its_name_and_fashion_gets_its_own():
    assert embedded_recipe().checkpoint_name() == DenseRecipe().checkpoint_name()
    assert DenseRecipe().checkpoint_name() == "dense-resnet50-digits-19316d30c468.pt"  # the committed rows' model
    fashion = embedded_recipe("resnet50", "fashion-mnist")
    assert fashion.checkpoint_name().startswith("dense-resnet50-fashion-mnist-") and fashion.epochs == 8
    with pytest.raises(ValueError, match="digits and fashion-mnist"):
        embedded_recipe("resnet50", "cifar10")


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM.is_dir(), reason="Debian's dataset-fashion-mnist is not installed "
                    "(.ci/run installs it)")
def test_the_real_package(tmp_path):
    train, test = fashion_mnist_datasets(root=tmp_path, image_size=32)
    assert len(train) == 60_000 and len(test) == 10_000
    assert sorted({int(test.targets[i]) for i in range(0, 10_000, 7)}) == list(range(10))
