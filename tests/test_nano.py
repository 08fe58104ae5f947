"""fcpts/nano.py, the one-file copy of the released recipe, against the real loop (fcpts.sparsify).

Same model, same calibration images, same Config: the per-step history (global sparsity, L_rec, L_c, lr) and
the final weights must agree, so the copy a student reads cannot drift from the code the kit runs.
"""
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from conftest import make_model
from fcpts import Config, count_zeros, nano, sparsify

HISTORY_KEYS = ("sparsity", "loss_rec", "loss_c", "loss", "lr")


class NoisyImages(Dataset):
    """A calibration set with seeded per-pass augmentation (``set_epoch``), as the kit's digits set has."""

    def __init__(self, images: torch.Tensor):
        self.images, self.epoch = images, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        noise = torch.randn(self.images[i].shape, generator=torch.Generator().manual_seed(1000 * self.epoch + i))
        return self.images[i] + 0.1 * noise, i % 10


def both(name, target, data, **overrides):
    config = Config.quick_cpu(steps=6, batch_size=8, progress=False, device="cpu", target=target, **overrides)
    reference = sparsify(make_model(name), data, config=config)
    model, history = nano.sparsify(make_model(name), data, config)
    return reference, model, history


def assert_same(reference, model, history):
    assert len(history) == len(reference.history)
    for ours, theirs in zip(history, reference.history):
        for key in HISTORY_KEYS:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), (ours["step"], key)
    expected = reference.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value == 0, expected[key] == 0), key  # the same masks
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-7)
    assert list(model.state_dict()) == list(expected)  # the squash keeps the keys and their order


@pytest.mark.parametrize("name,target", [("cnn", 0.5), ("cnn", 0.9), ("mlp", 0.8), ("resnet18", 0.8)])
def test_nano_matches_fcpts_sparsify(name, target):
    size = 32 if name == "resnet18" else 8
    data = torch.randn(16 if name == "resnet18" else 24, 3, size, size, generator=torch.Generator().manual_seed(3))
    reference, model, history = both(name, target, data)
    assert_same(reference, model, history)
    zeros, total = count_zeros(model)
    assert zeros == round(target * total)
    assert history[0]["lr"] == 0.0 and max(h["lr"] for h in history) > 0  # the warm-up starts at 0


def test_nano_matches_with_a_dense_erk_layer_and_augmentations():
    # At 50 % ERK keeps the small first conv of the CNN dense (k = 0 there); the set re-draws its noise every pass.
    model = make_model("cnn")
    start = nano.erk_sparsities(model, 0.3)
    assert min(start.values()) == 0.0
    data = NoisyImages(torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(4)))
    assert_same(*both("cnn", 0.3, data))


def test_nano_erk_start_is_the_kits():
    from fcpts.allocation import erk_released_allocation

    model = make_model("resnet18")
    for target in (0.5, 0.8, 0.95):
        assert nano.erk_sparsities(model, target) == erk_released_allocation(model, target)


def test_nano_refuses_a_setting_it_does_not_run():
    with pytest.raises(ValueError, match="gradient"):
        nano.sparsify(make_model("mlp"), torch.randn(8, 3, 8, 8), Config.quick_cpu(gradient="ste", steps=1))


def test_nano_stays_one_short_file():
    lines = Path(nano.__file__).read_text().splitlines()
    assert len(lines) <= 250
    assert not any(line.startswith(("from .", "import fcpts", "from fcpts")) for line in lines)  # reads standalone
