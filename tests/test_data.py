"""fcpts.data: the digits default, calibration subsets, ImageNet-style folders (fabricated here), CIFAR errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fcpts import data as D
from fcpts.config import Config
from conftest import CLASSES, fabricate_image


@pytest.fixture(scope="module")
def digits() -> tuple[D.DigitsSplit, D.DigitsSplit]:
    return D.digits_datasets(image_size=32, seed=0)


# ----- digits ---------------------------------------------------------------------------------------------
def test_digits_shapes_and_labels(digits) -> None:
    train, test = digits
    assert len(train) + len(test) == 1797
    assert len(test) == 360  # ceil(0.2 * 1797)
    x, y = train.tensors
    assert x.shape == (1437, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey repeated
    small, _ = D.digits_datasets(image_size=16, seed=0)
    assert small.tensors[0].shape == (1437, 3, 16, 16)


def test_digits_normalised_with_train_statistics(digits) -> None:
    train, test = digits
    x = train.tensors[0]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    # The test split uses the train statistics, so it is close to, but not exactly, standardised.
    assert torch.equal(test.mean, train.mean) and torch.equal(test.std, train.std)
    assert test.tensors[0].mean().abs() < 0.1


def test_digits_split_is_stratified_and_disjoint(digits) -> None:
    train, test = digits
    assert not set(train.source_indices) & set(test.source_indices)
    assert sorted(np.concatenate([train.source_indices, test.source_indices])) == list(range(1797))
    train_counts = np.bincount(train.tensors[1].numpy(), minlength=10)
    test_counts = np.bincount(test.tensors[1].numpy(), minlength=10)
    fraction = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(fraction - 0.2) < 0.01)


def test_digits_split_is_deterministic_per_seed(digits) -> None:
    train, test = digits
    again, _ = D.digits_datasets(image_size=32, seed=0)
    other, _ = D.digits_datasets(image_size=32, seed=1)
    assert np.array_equal(train.source_indices, again.source_indices)
    assert torch.equal(train.tensors[0], again.tensors[0])
    assert not np.array_equal(train.source_indices, other.source_indices)


def test_digits_image_size_too_small() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        D.digits_datasets(image_size=4)


# ----- calibration subsets --------------------------------------------------------------------------------
def test_calibration_drawn_from_train_and_seeded(digits) -> None:
    train, _ = digits
    calib = D.calibration_subset(train, 100, seed=0)
    assert len(calib) == 100 and len(set(calib.indices)) == 100
    assert all(0 <= i < len(train) for i in calib.indices)
    x, y = calib[3]
    assert torch.equal(x, train[calib.indices[3]][0]) and int(y) == int(train[calib.indices[3]][1])
    assert D.calibration_subset(train, 100, seed=0).indices == calib.indices
    assert D.calibration_subset(train, 100, seed=1).indices != calib.indices
    manifest = D.calibration_manifest(calib)
    assert manifest["indices"] == calib.indices
    assert set(manifest["source_indices"]) <= set(train.source_indices.tolist())


def test_calibration_size_errors(digits) -> None:
    train, _ = digits
    with pytest.raises(ValueError, match="larger than the train split"):
        D.calibration_subset(train, len(train) + 1, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        D.calibration_subset(train, 0, seed=0)
    assert len(D.calibration_subset(train, len(train), seed=0)) == len(train)


def test_calibration_augmentation_is_reproducible(digits) -> None:
    train, _ = digits
    a = D.calibration_subset(train, 32, seed=0, augment=True)
    b = D.calibration_subset(train, 32, seed=0, augment=True)
    torch.manual_seed(123)
    before = torch.rand(1)
    first_a = torch.stack([a[i][0] for i in range(32)])
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # augmenting did not consume the global RNG
    first_b = torch.stack([b[i][0] for i in range(32)])
    assert torch.equal(first_a, first_b)  # same seed, same shifts
    second_a = torch.stack([a[i][0] for i in range(32)])
    assert not torch.equal(first_a, second_a)  # a second pass sees fresh shifts
    plain = torch.stack([train[i][0] for i in a.indices])
    assert first_a.shape == plain.shape
    assert not torch.equal(first_a, plain)
    # Shifts move pixels, they do not invent values: every output value exists in the source image.
    assert set(first_a[0, 0].flatten().tolist()) <= set(plain[0, 0].flatten().tolist())


# ----- ImageNet-style folders, fabricated (fixture `imagefolder` and `fabricate_image` in conftest) ------


def test_imagenet_full_path_on_fabricated_folder(imagefolder: Path, tmp_path: Path) -> None:
    calib, val = D.imagenet_datasets(root=imagefolder, weights=None, model="resnet18", image_size=32,
                                     calib_size=6, seed=0)
    assert len(calib) == 6 and len(val) == 6
    x, y = calib[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 3
    vx, vy = val[5]
    assert vx.shape == (3, 32, 32) and vy == 2
    assert val.classes == list(CLASSES)

    again, _ = D.imagenet_datasets(root=imagefolder, weights=None, model="resnet18", image_size=32,
                                   calib_size=6, seed=0)
    assert again.indices == calib.indices
    assert torch.equal(again[0][0], x)  # same seed, same first crop and flip
    assert not torch.equal(again[0][0], x)  # ...and the second draw of an item is a fresh one
    other, _ = D.imagenet_datasets(root=imagefolder, weights=None, model="resnet18", image_size=32,
                                   calib_size=6, seed=1)
    assert other.indices != calib.indices

    plain, _ = D.imagenet_datasets(root=imagefolder, weights=None, model="resnet18", image_size=32,
                                   calib_size=6, seed=0, augment=False)
    assert torch.equal(plain[0][0], plain[0][0])  # evaluation transform: deterministic

    path = D.save_calibration_manifest(calib, tmp_path / "out" / "manifest.json")
    manifest = json.loads(path.read_text())
    assert manifest["indices"] == calib.indices and len(manifest["files"]) == 6
    for rel in manifest["files"]:
        assert rel.startswith("train/") and (imagefolder / rel).is_file()


def test_load_data_imagenet_from_config(imagefolder: Path) -> None:
    cfg = Config(dataset="imagenet", data_root=str(imagefolder), weights="", model="resnet18", image_size=32,
                 calib_size=6, calib_augment=False)
    bundle = D.load_data(cfg)
    assert bundle.name == "imagenet" and bundle.num_classes == 3
    assert len(bundle.calib) == 6 and len(bundle.test) == 6
    assert bundle.manifest is not None and len(bundle.manifest["files"]) == 6


def test_imagenet_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # the default must not depend on the working directory
    assert D.resolve_imagenet_root() == Path(D.__file__).resolve().parent.parent / "data" / "imagenet"
    monkeypatch.setenv("IMAGENET_ROOT", str(tmp_path / "env"))
    assert D.resolve_imagenet_root() == tmp_path / "env"
    assert D.resolve_imagenet_root(tmp_path / "arg") == tmp_path / "arg"


def test_imagenet_weights_transforms_and_class_count(imagefolder: Path) -> None:
    tf = D.eval_transform("IMAGENET1K_V1", "resnet18", 224)  # no download: only the enum's transform
    assert list(tf.crop_size) == [224]
    with pytest.raises(ValueError, match="image_size=224"):
        D.eval_transform("IMAGENET1K_V1", "resnet18", 32)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        D.eval_transform("NOPE", "resnet18", 224)
    with pytest.raises(ValueError, match="1000 classes"):
        D.imagenet_datasets(root=imagefolder, weights="IMAGENET1K_V1", model="resnet18", image_size=224,
                            calib_size=6)


def test_imagenet_wrong_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.imagenet_datasets(root=tmp_path / "nowhere", weights=None, model="resnet18", calib_size=6)


def test_imagenet_missing_split(imagefolder: Path) -> None:
    import shutil

    shutil.rmtree(imagefolder / "val")
    with pytest.raises(FileNotFoundError, match="no val/"):
        D.check_imagefolder_layout(imagefolder)


def test_imagenet_flat_val_folder(imagefolder: Path) -> None:
    import shutil

    shutil.rmtree(imagefolder / "val")
    for i in range(3):
        fabricate_image(imagefolder / "val" / f"ILSVRC2012_val_0000000{i}.JPEG", 100 + i)
    with pytest.raises(ValueError, match="valprep") as info:
        D.imagenet_datasets(root=imagefolder, weights=None, model="resnet18", image_size=32, calib_size=6)
    assert "val/n01440764/" in str(info.value)


def test_imagenet_empty_class_folder(imagefolder: Path) -> None:
    (imagefolder / "train" / "n09999999").mkdir()
    (imagefolder / "val" / "n09999999").mkdir()
    (imagefolder / "val" / "n09999999" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="contains no image files"):
        D.check_imagefolder_layout(imagefolder)


def test_imagenet_mismatched_classes(imagefolder: Path) -> None:
    fabricate_image(imagefolder / "val" / "n09999999" / "x.JPEG", 7)
    with pytest.raises(ValueError, match="different class folders"):
        D.check_imagefolder_layout(imagefolder)


def test_imagenet_calib_larger_than_train(imagefolder: Path) -> None:
    with pytest.raises(ValueError, match="larger than the train split"):
        D.imagenet_datasets(root=imagefolder, weights=None, model="resnet18", image_size=32, calib_size=13)


# ----- CIFAR and the entry point ---------------------------------------------------------------------------
def test_cifar_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=True"):
        D.cifar_datasets("cifar10", root=tmp_path, calib_size=8)
    cfg = Config(dataset="cifar100", data_root=str(tmp_path), weights="", image_size=32, calib_size=8)
    with pytest.raises(FileNotFoundError, match="download=True"):
        D.load_data(cfg)


def test_load_data_digits_quick_cpu() -> None:
    cfg = Config.quick_cpu()
    bundle = D.load_data(cfg)
    assert bundle.name == "digits" and bundle.num_classes == 10
    assert len(bundle.calib) == cfg.calib_size and len(bundle.test) == 360
    x, _ = bundle.calib[0]
    assert x.shape == (3, cfg.image_size, cfg.image_size)
    # Config.seed changes the calibration sample, never the split the embedded model was trained on.
    other = D.load_data(cfg.replace(seed=1))
    assert torch.equal(other.test.tensors[0], bundle.test.tensors[0])
    assert other.calib.indices != bundle.calib.indices


def test_load_data_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_data(Config.quick_cpu(dataset="mnist"))
    with pytest.raises(ValueError, match="data_root"):
        D.load_data(Config(dataset="folder", weights=""))
