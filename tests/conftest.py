"""Shared fixtures: small real models that run in well under a second on a CPU."""
import pytest
import torch
import torchvision
from torch import nn


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
