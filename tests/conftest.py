"""Shared fixtures: small real models that run in well under a second on a CPU, and a fabricated
ImageNet-style folder (the full-mode code path is tested on it, never mocked)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

os.environ.pop("FCPTS_HOME", None)  # the tests expect a checkout's own folders (fcpts.paths), whatever the shell set

CLASSES = ("n01440764", "n01443537", "n01484850")


def fabricate_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def imagefolder(tmp_path: Path) -> Path:
    """tmp/train/<wnid>/*.{png,JPEG} (4 per class) and tmp/val/<wnid>/*.JPEG (2 per class)."""
    seed = 0
    for c in CLASSES:
        for i in range(4):
            ext = "png" if i % 2 else "JPEG"
            fabricate_image(tmp_path / "train" / c / f"{c}_{i}.{ext}", seed := seed + 1)
        for i in range(2):
            fabricate_image(tmp_path / "val" / c / f"ILSVRC2012_val_{c}_{i}.JPEG", seed := seed + 1)
    return tmp_path


class SmallCNN(nn.Module):
    """Conv + BN + residual-free CNN with a Linear head: the smallest model with every layer kind."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.features(x))


class MLP(nn.Module):
    """Linear-only model."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                 nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "cnn":
        return SmallCNN()
    if name == "mlp":
        return MLP()
    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=10)
    raise ValueError(name)


@pytest.fixture
def images():
    return torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def images32():
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
