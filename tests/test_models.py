"""fcpts.models (model zoo, the embedded dense model and its checkpoint) and fcpts.evaluate.

The full embedded recipe takes minutes, so these tests train a tiny one (ResNet-18, 16 px, 2 epochs) once
and exercise the checkpoint logic on it in a temporary folder.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from fcpts import models as M
from fcpts.evaluate import evaluate, resolve_device

TINY = M.DenseRecipe(model="resnet18", image_size=16, epochs=2)
TINY_FLOOR = 0.5  # the tiny recipe reaches ~89 %; the floor only catches a broken loop


# ----- build_model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "regnet_x_400mf",
                                  "vgg11_bn", "vit_b_16"])
def test_build_model_without_weights(name: str) -> None:
    model = M.build_model(name, weights=None, num_classes=10)
    size = 224 if name == "vit_b_16" else 32  # ViT needs its patch grid; the CNNs pool any size
    if name in ("resnet18", "mobilenet_v2", "regnet_x_400mf"):
        with torch.inference_mode():
            assert model.eval()(torch.randn(2, 3, size, size)).shape == (2, 10)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 10
    assert M.build_model(name, weights="").__class__ is model.__class__


def test_build_model_errors() -> None:
    with pytest.raises(ValueError, match="resnet50"):  # the message lists the valid names
        M.build_model("resnet51")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        M.build_model("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(ValueError, match="1000 classes"):  # checked before any download is attempted
        M.build_model("resnet18", weights="IMAGENET1K_V1", num_classes=10)


def test_build_model_with_weights_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real weights path, offline: a state_dict placed where torch.hub looks first is loaded."""
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = M.build_model("resnet18", num_classes=1000)
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = M.build_model("resnet18", weights="IMAGENET1K_V1")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    model = M.build_model("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1", num_classes=1000)
    assert torch.equal(model.fc.weight, reference.fc.weight)


# ----- DenseRecipe and training ---------------------------------------------------------------------------------
def test_recipe_key() -> None:
    default = M.DenseRecipe()
    assert default.model == "resnet50" and default.image_size == 32 and default.epochs == 20
    assert len(default.key()) == 12 and default.key() == M.DenseRecipe().key()
    assert M.DenseRecipe(epochs=21).key() != default.key()
    assert default.checkpoint_name() == f"dense-resnet50-digits-{default.key()}.pt"
    with pytest.raises(Exception):
        default.epochs = 3  # type: ignore[misc]  # frozen


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Train the tiny recipe once through load_embedded_model; tests copy the folder and break it."""
    directory = tmp_path_factory.mktemp("ckpt")
    model, info = M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory, min_accuracy=TINY_FLOOR)
    return directory, info


def _copy(tiny_checkpoint, tmp_path: Path) -> tuple[Path, Path]:
    directory, info = tiny_checkpoint
    target = tmp_path / "ckpt"
    shutil.copytree(directory, target)
    return target, target / Path(info["path"]).name


def test_train_and_cache_then_load(tiny_checkpoint) -> None:
    directory, info = tiny_checkpoint
    assert info["trained"] and info["test_top1"] >= TINY_FLOOR
    assert Path(info["path"]).name == TINY.checkpoint_name()
    assert sorted(p.name for p in directory.iterdir()) == [TINY.checkpoint_name()]  # no temp files left
    model, again = M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory, min_accuracy=TINY_FLOOR)
    assert not again["trained"] and again["sha256"] == info["sha256"]
    assert not model.training
    assert M.state_dict_sha256(model.state_dict()) == info["sha256"]
    # The stored accuracy is the model's accuracy.
    from fcpts.data import digits_datasets

    _, test = digits_datasets(TINY.image_size)
    assert evaluate(model, test, progress=False)["top1"] == pytest.approx(info["test_top1"])


def _stub_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def fake(recipe, progress=True, min_accuracy=0.97):
        calls.append(1)
        return M.build_model(recipe.model, num_classes=10), {"test_top1": 0.5, "train_seconds": 0.0}

    monkeypatch.setattr(M, "train_dense", fake)
    return calls


def test_corrupt_checkpoint_is_kept_and_retrained(tiny_checkpoint, tmp_path, monkeypatch, capsys) -> None:
    directory, path = _copy(tiny_checkpoint, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])  # a truncated file, as after a crash without os.replace
    calls = _stub_training(monkeypatch)
    _, info = M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory)
    assert calls and info["trained"]
    assert "could not be read" in capsys.readouterr().err
    assert (directory / (path.name + ".bad")).stat().st_size == 1000
    # The replacement was written whole and verifies on the next load.
    _, again = M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory, min_accuracy=0.5)
    assert not again["trained"] and again["sha256"] == info["sha256"]


def test_mismatched_recipe_is_retrained(tiny_checkpoint, tmp_path, monkeypatch, capsys) -> None:
    directory, path = _copy(tiny_checkpoint, tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["recipe"]["lr"] = 0.1
    torch.save(ckpt, path)
    calls = _stub_training(monkeypatch)
    _, info = M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory)
    assert calls and info["trained"]
    assert "recipe differs" in capsys.readouterr().err
    assert (directory / (path.name + ".bad")).exists()


def test_checkpoint_below_the_floor_is_retrained(tiny_checkpoint, tmp_path, monkeypatch, capsys) -> None:
    directory, path = _copy(tiny_checkpoint, tmp_path)
    calls = _stub_training(monkeypatch)
    M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory, min_accuracy=0.999)
    assert calls and "below" in capsys.readouterr().err


def test_checksum_mismatch_is_retrained(tiny_checkpoint, tmp_path, monkeypatch, capsys) -> None:
    directory, path = _copy(tiny_checkpoint, tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["fc.bias"][0] += 1.0
    torch.save(ckpt, path)
    calls = _stub_training(monkeypatch)
    _, info = M.load_embedded_model(TINY, progress=False, checkpoint_dir=directory)
    assert calls and info["trained"]
    assert "checksum" in capsys.readouterr().err
    assert (directory / (path.name + ".bad")).exists()


BARELY = M.DenseRecipe(model="resnet18", image_size=8, epochs=1, batch_size=512)  # 2 steps: fast, inaccurate


def test_training_is_deterministic() -> None:
    a, metrics_a = M.train_dense(BARELY, progress=False, min_accuracy=0.0)
    b, metrics_b = M.train_dense(BARELY, progress=False, min_accuracy=0.0)
    assert M.state_dict_sha256(a.state_dict()) == M.state_dict_sha256(b.state_dict())
    assert metrics_a["epoch_losses"] == metrics_b["epoch_losses"]
    c, _ = M.train_dense(dataclasses.replace(BARELY, seed=1),
                         progress=False, min_accuracy=0.0)
    assert M.state_dict_sha256(c.state_dict()) != M.state_dict_sha256(a.state_dict())


def test_accuracy_floor_refuses_a_bad_model(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="test top-1"):
        M.load_embedded_model(BARELY, progress=False, checkpoint_dir=tmp_path, min_accuracy=0.99)
    assert list(tmp_path.iterdir()) == []  # nothing cached


def test_shift_batch_moves_each_image() -> None:
    x = torch.zeros(8, 3, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0  # a square in the middle: shifting moves it, never crops it
    g = torch.Generator().manual_seed(0)
    shifted = M._shift_batch(x, 2, g)
    assert shifted.shape == x.shape
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert not torch.equal(shifted, x)
    assert torch.equal(M._shift_batch(x, 0, g), x)


def test_non_finite_loss_stops_training(monkeypatch) -> None:
    class NanNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=(2, 3))) * float("nan")

    monkeypatch.setattr(M, "build_model", lambda *args, **kwargs: NanNet())
    with pytest.raises(FloatingPointError, match="nan"):
        M.train_dense(M.DenseRecipe(model="resnet18", image_size=8, epochs=1), progress=False)


# ----- evaluate ---------------------------------------------------------------------------------------------------
class Ranked(nn.Module):
    """Scores class (label + shift) % C highest; input x holds the label in x[:, 0]."""

    def __init__(self, classes: int, rank_of_truth: int) -> None:
        super().__init__()
        self.classes, self.rank = classes, rank_of_truth
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0].long()
        scores = torch.zeros(len(x), self.classes)
        for r in range(self.classes):  # rank 0 gets the highest score
            scores[torch.arange(len(x)), (labels + r - self.rank) % self.classes] = float(self.classes - r)
        return scores


def test_evaluate_top1_top5_and_mode() -> None:
    labels = torch.arange(20) % 10
    data = TensorDataset(labels.float()[:, None], labels)
    perfect = Ranked(10, 0).train()
    assert evaluate(perfect, data, batch_size=7, progress=False) == {"top1": 1.0, "top5": 1.0, "n": 20}
    assert perfect.training  # mode restored
    third = Ranked(10, 2)
    result = evaluate(third, DataLoader(data, batch_size=5), progress=False)
    assert result == {"top1": 0.0, "top5": 1.0, "n": 20}
    sixth = Ranked(10, 5)
    assert evaluate(sixth, data, progress=False)["top5"] == 0.0


def test_evaluate_few_classes_and_errors() -> None:
    labels = torch.tensor([0, 1, 2, 0])
    data = TensorDataset(labels.float()[:, None], labels)
    assert evaluate(Ranked(3, 0), data, progress=False) == {"top1": 1.0, "top5": None, "n": 4}
    bad = TensorDataset(torch.tensor([[0.0]]), torch.tensor([7]))
    with pytest.raises(ValueError, match="out of range"):
        evaluate(Ranked(3, 0), bad, progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate(Ranked(3, 0), TensorDataset(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)), progress=False)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
