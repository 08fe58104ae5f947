"""One dense-model resolver: ``fcpts run``, the sweep runner and the notebooks sparsify the same dense model.

The embedded checkpoints are written here the way ``load_embedded_model`` writes them (a real torchvision model,
its recipe, checksum and recorded accuracy) into a temporary checkpoint folder, so no test trains a network.
"""
import importlib

import pytest
import torch

import fcpts.cli
import fcpts.models as models
from fcpts import Config, runner
from fcpts.files import state_dict_sha256
from fcpts.table import model_fingerprint

session = importlib.import_module("fcpts.notebook.session")  # the package exports a function of that name


def fabricate_checkpoint(folder, model_name: str, image_size: int) -> str:
    """A valid embedded checkpoint of ``model_name`` (random 10-class weights); returns its fingerprint."""
    recipe = models.DenseRecipe(model=model_name, image_size=image_size)
    torch.manual_seed(1)
    model = models.build_model(model_name, weights=None, num_classes=10)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": models.CHECKPOINT_FORMAT, "recipe": recipe.to_dict(), "state_dict": state,
                "sha256": state_dict_sha256(state), "test_top1": 0.99, "metrics": {}},
               folder / recipe.checkpoint_name())
    return model_fingerprint(model)


def resolved_by_each_caller(config: Config) -> dict[str, str]:
    """The dense model's fingerprint as the CLI, the runner and the notebooks resolve it for ``config``."""
    cli_model, _ = fcpts.cli.resolve_dense_model(config, 10)
    ctx, _, _ = runner._context(config, None, None, lambda seed: type("B", (), {"num_classes": 10})(), None, [],
                                runner.default_finetune(2), None, None, None, progress=False)
    notebook_model, _ = session.load_model(config, 10, progress=False)
    return {name: model_fingerprint(m) for name, m in
            (("cli", cli_model), ("runner", ctx.model), ("notebook", notebook_model))}


@pytest.mark.parametrize("model_name", ["resnet50", "resnet18"])
def test_cli_runner_and_notebooks_resolve_the_same_embedded_model(tmp_path, monkeypatch, model_name):
    monkeypatch.setattr(models, "DEFAULT_CHECKPOINT_DIR", tmp_path)
    expected = fabricate_checkpoint(tmp_path, model_name, image_size=32)
    config = Config.quick_cpu(model=model_name, progress=False)
    found = resolved_by_each_caller(config)
    assert set(found.values()) == {expected}, found  # the embedded digits model, not a random 1000-class one
    model, info = models.resolve_dense_model(config, 10)
    assert model.fc.out_features == 10 and "embedded" in info["source"]


@pytest.mark.parametrize("model_name", ["resnet50", "resnet18"])
def test_with_weights_every_caller_takes_torchvision_weights(tmp_path, monkeypatch, model_name):
    """With weights, the resolver asks torchvision for them, for every caller alike: the same model where the
    weights are cached (a user's machine), the same error where they cannot be downloaded (this sandbox)."""
    monkeypatch.setattr(models, "DEFAULT_CHECKPOINT_DIR", tmp_path)
    config = Config.quick_cpu(model=model_name, weights="IMAGENET1K_V1", progress=False)
    try:
        reference, _ = models.resolve_dense_model(config, 1000)
    except Exception as exc:  # offline: every caller fails the same way, and none trains a digits model instead
        callers = (lambda: fcpts.cli.resolve_dense_model(config, 1000),
                   lambda: runner._context(config, None, None, lambda seed: type("B", (), {"num_classes": 1000})(),
                                           None, [], runner.default_finetune(2), None, None, None, progress=False),
                   lambda: session.load_model(config, 1000, progress=False))
        for call in callers:
            with pytest.raises(type(exc)):
                call()
        assert not list(tmp_path.iterdir())
        return
    found = resolved_by_each_caller(config)
    assert set(found.values()) == {model_fingerprint(reference)}


def test_no_train_refuses_a_missing_checkpoint_without_side_effects(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "DEFAULT_CHECKPOINT_DIR", tmp_path)
    config = Config.quick_cpu(model="resnet18", progress=False)
    with pytest.raises(FileNotFoundError, match="no usable dense checkpoint"):
        models.resolve_dense_model(config, 10, train=False)
    bad = tmp_path / models.DenseRecipe(model="resnet18").checkpoint_name()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FileNotFoundError, match="could not be read"):
        models.resolve_dense_model(config, 10, train=False)
    assert bad.read_bytes() == b"not a checkpoint"  # kept as it was: nothing renamed, nothing retrained
