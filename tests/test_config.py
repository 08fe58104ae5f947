"""The one config object: released defaults, the quick preset, validation, YAML round trip."""
import pytest

from fcpts import Config


def test_defaults_are_the_released_recipe():
    c = Config()
    assert (c.steps, c.batch_size, c.calib_size, c.temperature, c.lam) == (1600, 64, 1024, 4.0, 1.0)
    assert (c.bridge, c.histogram_bins, c.objective, c.gradient, c.parameterization) == ("histogram", 100, "abs", "released", "sigmoid")
    assert c.lr == pytest.approx(0.01) and c.momentum == 0.9 and c.weight_decay == 3e-4
    assert c.bn_mode == "train" and c.init == "erk" and c.erk_gamma == 1.0
    assert Config.released() == c


def test_quick_preset_is_the_embedded_default():
    q = Config.quick_cpu()
    assert q.dataset == "digits" and q.image_size == 32 and q.steps < 1600


def test_yaml_round_trip(tmp_path):
    c = Config.quick_cpu(target=0.9, exclude=("fc",))
    c.to_yaml(tmp_path / "c.yaml")
    assert Config.from_yaml(tmp_path / "c.yaml") == c


@pytest.mark.parametrize("field,value", [("bridge", "box"), ("gradient", "sometimes"), ("objective", "l1"),
                                         ("target", 1.2), ("steps", 0)])
def test_invalid_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field if field != "target" else "between 0 and 1"):
        Config(**{field: value})


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="unknown Config field"):
        Config().replace(stepz=3)


def test_the_notebook_params_files_load_as_configs():
    """`fcpts run --config params/full.yaml` (the README's command) reads the paper's recipe."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    full = Config.from_yaml(root / "params" / "full.yaml")
    assert (full.steps, full.batch_size, full.calib_size, full.image_size, full.weights) == (1600, 64, 1024, 224,
                                                                                            "IMAGENET1K_V1")
    assert Config.from_yaml(root / "params" / "quick.yaml").steps == 150


def test_block_loss_with_a_cached_teacher_is_refused():
    with pytest.raises(ValueError, match="cache_teacher=False"):
        Config(block_mse_weight=1.0, cache_teacher=True)
