"""DST-EE and RigL (fcpts.dst): constant non-zeros, zero-initialised grown weights with reset optimiser state,
the exploration bonus, and c = 0 against a RigL update written out here independently."""
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import make_model
from fcpts.allocation import erk_allocation
from fcpts.dst import DstConfig, acquisition, drop_fraction, dst_train, is_update_step, rewire, update_interval
from fcpts.prune_train import PruneTrainConfig


@pytest.fixture(scope="module")
def labelled():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g))


def train_config(**kw) -> PruneTrainConfig:
    return PruneTrainConfig(**{**dict(steps=24, batch_size=16, lr=1e-2, progress=False, log_every=1), **kw})


def test_acquisition_prefers_the_unexplored_weight_only_when_c_is_positive():
    grad = torch.tensor([1e-3, 1e-3, 5e-2])  # two equal small gradients, one large
    counts = torch.tensor([0, 3, 3])  # weight 0 never active, weight 1 active three times
    for bonus in ("sqrt", "linear"):
        explore = acquisition(grad, counts, update=4, config=DstConfig(c=0.1, bonus=bonus))
        assert explore[0] > explore[1]
    rigl = acquisition(grad, counts, update=4, config=DstConfig(c=0.0))
    assert rigl[0] == rigl[1] and torch.equal(rigl, grad)
    # with a large enough c, exploration outranks a larger gradient
    assert acquisition(grad, counts, 4, DstConfig(c=5.0))[0] > acquisition(grad, counts, 4, DstConfig(c=5.0))[2]


def rigl_update_written_out(weight, grad, mask, n):
    """RigL (Evci et al. 2020), spelled out with a stable sort: drop the n active weights of smallest |w|,
    grow the n weights with the largest |grad| among those inactive after the drop."""
    w, g, m = weight.flatten().tolist(), grad.flatten().tolist(), mask.flatten().bool().tolist()
    active = sorted((i for i in range(len(w)) if m[i]), key=lambda i: abs(w[i]))
    dropped = set(active[:n])
    after = [m[i] and i not in dropped for i in range(len(w))]
    candidates = sorted((i for i in range(len(w)) if not after[i]), key=lambda i: -abs(g[i]))
    grown = set(candidates[:n])
    return torch.tensor([after[i] or i in grown for i in range(len(w))]).reshape(mask.shape)


@pytest.mark.parametrize("seed", range(5))
def test_c_zero_is_rigl_exactly(seed):
    g = torch.Generator().manual_seed(seed)
    weight, grad = torch.randn(16, 8, 3, 3, generator=g), torch.randn(16, 8, 3, 3, generator=g)
    mask = (torch.rand(weight.shape, generator=g) < 0.3).float()
    weight = weight * mask
    counts = torch.randint(0, 5, weight.shape, generator=g, dtype=torch.int32) * mask.int()
    n = int(0.3 * mask.sum())
    new, grown = rewire(weight, grad, mask, counts, n, update=3, config=DstConfig(c=0.0))
    assert torch.equal(new.bool(), rigl_update_written_out(weight, grad, mask, n))
    assert int(new.sum()) == int(mask.sum())  # constant non-zero count
    # c > 0 changes which weights grow on the same data (exploration), never the count
    explore, _ = rewire(weight, grad, mask, counts, n, update=3, config=DstConfig(c=1.0))
    assert int(explore.sum()) == int(mask.sum()) and not torch.equal(explore, new)


def test_schedule_of_updates_and_drop_fraction():
    cfg = DstConfig()
    assert update_interval(150, cfg) == 8  # 0.75 * 150 / 15 = 7.5
    updates = [s for s in range(150) if is_update_step(s, 150, cfg)]
    assert 10 <= len(updates) <= 20 and updates[0] == 8 and updates[-1] < 0.75 * 150
    assert drop_fraction(0, 150, cfg) == pytest.approx(0.3) and drop_fraction(112, 150, cfg) > 0
    assert drop_fraction(113, 150, cfg) == 0.0


@pytest.mark.parametrize("start", ["dense", "scratch"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_every_layer_keeps_its_non_zero_count_and_grown_weights_start_at_zero(labelled, start, optimizer):
    model = make_model("cnn")
    target = 0.7
    expected = {name: int(round((1 - s) * dict(model.named_modules())[name].weight.numel()))
                for name, s in erk_allocation(model, target).items()}
    seen = {"updates": 0}

    def check(step, student, policy, optimizer):
        modules = dict(student.named_modules())
        for name, mask in policy.masks.items():
            assert int(mask.sum()) == expected[name], f"step {step}: {name} has {int(mask.sum())} active weights"
            assert not modules[name].weight[~mask.bool()].any(), f"step {step}: {name} has weights outside its mask"
        if policy.last_grown and step == policy.coverage_history[-1]["step"]:  # this step was an update
            seen["updates"] += 1
            for name, grown in policy.last_grown.items():
                weight = modules[name].weight
                assert torch.all(weight[grown] == 0), "a grown weight did not start at 0"
                buffers = [v for v in optimizer.state.get(weight, {}).values()
                           if torch.is_tensor(v) and v.shape == weight.shape]
                assert buffers or step == policy.coverage_history[1]["step"] and optimizer.state == {}
                for buffer in buffers:
                    assert torch.all(buffer[grown] == 0), "a grown weight kept its optimiser state"

    result, coverage = dst_train(model, labelled, target, train_config(optimizer=optimizer), DstConfig(c=0.1),
                                 start=start, on_step=check)
    assert seen["updates"] == len(coverage) - 1 >= 2
    assert result.zeros == round(target * result.total)
    assert coverage[0]["coverage"] == pytest.approx(1 - target, abs=0.01)
    assert all(b["coverage"] >= a["coverage"] for a, b in zip(coverage, coverage[1:]))
    assert coverage[-1]["coverage"] > coverage[0]["coverage"]


def test_exploration_covers_more_than_rigl(labelled):
    model = make_model("cnn")
    _, rigl = dst_train(model, labelled, 0.8, train_config(), DstConfig(c=0.0))
    _, explore = dst_train(model, labelled, 0.8, train_config(), DstConfig(c=1.0))
    assert explore[-1]["coverage"] > rigl[-1]["coverage"]


def test_deterministic_for_a_seed(labelled):
    model = make_model("cnn")
    a, ca = dst_train(model, labelled, 0.8, train_config(), DstConfig(), start="scratch")
    b, cb = dst_train(model, labelled, 0.8, train_config(), DstConfig(), start="scratch")
    assert ca == cb and all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(),
                                                              b.model.state_dict().values()))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="bonus"):
        DstConfig(bonus="log")
    with pytest.raises(ValueError, match="c must be"):
        DstConfig(c=-1.0)
    with pytest.raises(ValueError, match="start"):
        dst_train(make_model("mlp"), None, 0.5, start="warm")
    assert math.isfinite(drop_fraction(0, 1, DstConfig()))


def test_the_tie_option_keeps_committed_keys_and_changes_them_when_set():
    """``DstConfig.ties`` was added after the DST rows were committed: at its default ("topk", what they ran)
    it is not hashed, so they keep their keys; the kit's one rule ("index") gives a row a key of its own."""
    from types import SimpleNamespace

    from fcpts.registry import METHODS, RunSpec
    from fcpts.runner import default_finetune

    method = METHODS["dst-ee"]
    spec = RunSpec("dst-ee", "finetune", "-", 0.8, 0)

    def settings(options):
        ctx = SimpleNamespace(finetune=default_finetune(150), options=lambda m: options)
        return method.settings(ctx, spec)

    assert "ties" not in settings(DstConfig())["dst"]
    assert settings(DstConfig(ties="index"))["dst"]["ties"] == "index"
    with pytest.raises(ValueError, match="ties"):
        DstConfig(ties="random")
