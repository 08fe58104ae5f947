"""The kit's options beyond the released recipe: the held-out selection (Config.select_holdout) and BN
re-estimation after train-mode reconstruction (Config.bn_recalibrate). Small real models, no mocks."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from conftest import make_model
from fcpts import Config, count_zeros, sparsify
from fcpts.guards import FINAL_IMAGES
from fcpts import table as runner_table
from fcpts.calibration import CalibrationStream, split_holdout
from fcpts.selection import start_candidate, teacher_agreement
from fcpts.sparsify import exact_start_allocation


def fast(**kw):
    return Config.quick_cpu(steps=3, batch_size=8, progress=False, layer_log_every=1, **kw)


class CountingImages(Dataset):
    """48 fixed images that count how often each one is read."""

    def __init__(self):
        self.x = torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        self.reads = [0] * len(self.x)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads[i] += 1
        return self.x[i]


def test_held_out_images_are_read_once_and_never_train():
    data = CountingImages()
    result = sparsify(make_model("cnn"), data, 0.6, fast(select_holdout=8))
    held = [i for i, n in enumerate(data.reads) if n == 1]
    _, inputs = split_holdout(CountingImages(), 8, seed=0)
    assert result.selection["holdout"] == 8 and len(inputs) == 8
    assert set(held) >= set(sorted(torch.randperm(48, generator=torch.Generator().manual_seed(0))[:8].tolist()))
    # 3 steps of 8 images, one pass of BN re-estimation for the start candidate, and the final-output check on
    # the first FINAL_IMAGES training images: all from the other 40
    assert sum(data.reads) == 8 + 3 * 8 + 40 + min(FINAL_IMAGES, 40)


def test_the_returned_candidate_agrees_most_with_the_dense_model_and_has_exact_zeros():
    model, data = make_model("cnn"), CountingImages().x
    for target in (0.3, 0.9):
        result = sparsify(model, data, target, fast(select_holdout=8))
        scores = result.selection["scores"]
        best = max(s["agreement"] for s in scores.values())
        expected = "start" if scores["start"]["agreement"] == best else "reconstructed"  # a tie goes to the start
        assert result.selection["chosen"] == expected
        _, held = split_holdout(data, 8, seed=0)
        again = teacher_agreement(result.model, model.eval(), held.split(8), 4.0)
        assert again["kd"] == pytest.approx(scores[result.selection["chosen"]]["kd"], rel=1e-5)
        assert again["agreement"] == scores[result.selection["chosen"]]["agreement"]
        zeros, total = count_zeros(result.model)
        assert zeros == round(target * total)


def test_a_wrecked_reconstruction_falls_back_to_the_start():
    model, data = make_model("cnn"), CountingImages().x
    config = fast(select_holdout=8, base_lr=100.0, weight_decay=3.0)  # weight decay wrecks the weights
    result = sparsify(model, data, 0.3, config)
    assert result.selection["chosen"] == "start"
    # the start: the ERK allocation on the dense weights, BN re-estimated on the training part
    rest, _ = split_holdout(data, 8, seed=0)
    stream = CalibrationStream(rest, 8, 0)
    for _ in zip(range(config.steps), stream):  # the training steps drew these batches first
        pass
    expected = start_candidate(model, exact_start_allocation(model, 0.3, config), stream, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(result.model.state_dict().values(), expected.state_dict().values()))
    assert result.allocation == pytest.approx(exact_start_allocation(model, 0.3, config), abs=1e-6)


def test_select_holdout_refuses_bad_sizes_and_loaders():
    data = CountingImages().x
    with pytest.raises(ValueError, match="hold out between 1 and 24"):
        sparsify(make_model("cnn"), data, 0.5, fast(select_holdout=30))
    with pytest.raises(ValueError, match="not a DataLoader"):
        sparsify(make_model("cnn"), DataLoader(TensorDataset(data), batch_size=8), 0.5, fast(select_holdout=8))


def test_bn_recalibrate_changes_only_the_bn_statistics():
    model, data = make_model("cnn"), CountingImages().x
    plain = sparsify(model, data, 0.6, fast()).model.state_dict()
    recal = sparsify(model, data, 0.6, fast(bn_recalibrate=True)).model.state_dict()
    stats = [k for k in plain if k.endswith(("running_mean", "running_var"))]
    assert stats and any(not torch.equal(plain[k], recal[k]) for k in stats)
    assert all(torch.equal(plain[k], recal[k]) for k in plain if k not in stats and not k.endswith("num_batches_tracked"))


def test_new_options_at_their_defaults_keep_every_older_row_key():
    model = make_model("cnn")
    digest = runner_table.config_digest(Config.quick_cpu(), model)
    assert "select_holdout" not in digest and "bn_recalibrate" not in digest
    assert runner_table.config_digest(Config.quick_cpu(select_holdout=64), model)["select_holdout"] == 64
    assert runner_table.config_digest(Config.quick_cpu(bn_recalibrate=True), model)["bn_recalibrate"] is True


def test_a_start_that_misses_the_exact_count_is_never_returned():
    from fcpts.allocation import masked_copy
    from fcpts.masking import prunable_layers

    model, data = make_model("cnn"), CountingImages().x
    loose = {name: 0.333 for name in prunable_layers(model)}  # per-layer rounding misses round(0.5·N) zeros
    assert count_zeros(masked_copy(model, loose))[0] != round(0.5 * count_zeros(model)[1])
    result = sparsify(model, data, 0.5, fast(select_holdout=8), allocation=loose)
    assert set(result.selection["scores"]) == {"reconstructed"} and result.selection["chosen"] == "reconstructed"
    assert result.zeros == round(0.5 * result.total)
