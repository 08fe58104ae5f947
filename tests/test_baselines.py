"""Allocation baselines against torch and their formulas, POT-style pruning, the three tiers, and
training-aware pruning. Small models only: every test runs in a fraction of a second to a few seconds."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from conftest import make_model
from fcpts import Config, count_zeros
from fcpts.allocation import (ALLOCATIONS, allocate, apply_masks, erk_allocation, global_magnitude_allocation,
                              lamp_allocation, lamp_scores, magnitude_masks, uniform_allocation)
from fcpts.baselines import ALLOCATION_METHODS, prune_baseline
from fcpts.baselines import ALLOCATIONS as BASELINE_ALLOCATIONS
from fcpts.masking import all_weight_layers, prunable_layers
from fcpts.pot import PotConfig, correct_weights, pot_allocation, pot_prune, pot_scores
from fcpts.prune_train import PruneTrainConfig, prune_train


class CNNLinear(nn.Module):
    """A small CNN + Linear model: regular, strided, depthwise and 1x1 convs and two Linear layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 12, 1, bias=False)
        self.fc1 = nn.Linear(12 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.pw(self.dw(torch.relu(self.conv2(x)))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def cnn_linear(seed=0):
    torch.manual_seed(seed)
    model = CNNLinear()
    with torch.no_grad():  # random weights of different scales per layer
        for i, m in enumerate(all_weight_layers(model).values()):
            m.weight.normal_(0, 0.05 * (i + 1))
    return model


def mask_of(module):
    return module.weight_mask.detach().clone()


# ------------------------------------------------------------------------------------------ uniform / global
@pytest.mark.parametrize("target", [0.3, 0.5, 0.75, 0.9, 0.97])
def test_uniform_masks_equal_torch_l1_unstructured(target):
    model = cnn_linear()
    allocation = uniform_allocation(model, target)
    ours = magnitude_masks(model, allocation)
    reference = cnn_linear()
    for name, module in all_weight_layers(reference).items():
        n = module.weight.numel()
        k = round(allocation[name] * n)
        assert k in (math.floor(target * n), math.ceil(target * n))  # largest remainder: the nearest integers
        prune.l1_unstructured(module, "weight", amount=k)
        assert torch.equal(ours[name], mask_of(module)), name


@pytest.mark.parametrize("target", [0.5, 0.75])
def test_uniform_equals_torch_with_a_float_amount_when_counts_are_integral(target):
    model = cnn_linear()
    assert all((m.weight.numel() * target).is_integer() for m in all_weight_layers(model).values())
    ours = magnitude_masks(model, uniform_allocation(model, target))
    reference = cnn_linear()
    for name, module in all_weight_layers(reference).items():
        prune.l1_unstructured(module, "weight", amount=target)
        assert torch.equal(ours[name], mask_of(module))


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8, 0.95])
def test_global_masks_equal_torch_global_unstructured(target):
    model = cnn_linear()
    ours = magnitude_masks(model, global_magnitude_allocation(model, target))
    reference = cnn_linear()
    layers = all_weight_layers(reference)
    prune.global_unstructured([(m, "weight") for m in layers.values()], pruning_method=prune.L1Unstructured,
                              amount=target)
    for name, module in layers.items():
        assert torch.equal(ours[name], mask_of(module)), name


# ------------------------------------------------------------------------------------------ ERK / LAMP
def two_linear():
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))  # weights 20x10 and 5x20, N = 300


def test_erk_formula_by_hand():
    # raw_l = (n_out + n_in)/(n_out n_in): 30/200 = 0.15 and 25/100 = 0.25. At S* = 0.5 keep 150 weights:
    # eps = 150 / (200*0.15 + 100*0.25) = 150/55; zeros 200(1 - 0.15 eps) = 118.18, 100(1 - 0.25 eps) = 31.82;
    # largest remainder rounds them to 118 and 32 (sum 150).
    alloc = erk_allocation(two_linear(), 0.5)
    assert alloc == {"0": 118 / 200, "2": 32 / 100}
    # At S* = 0.2 keep 240: eps = 240/55 makes layer "2" denser than 1 -> dense; then eps = 140/30 for
    # layer "0": density 0.7, i.e. 60 zeros = round(0.2 * 300).
    alloc = erk_allocation(two_linear(), 0.2)
    assert alloc == {"0": 60 / 200, "2": 0.0}


def test_lamp_scores_by_hand():
    w = torch.tensor([[1.0, -2.0, 3.0, 4.0]])
    # sorted |w|: 1, 2, 3, 4; squares 1, 4, 9, 16; tail sums 30, 29, 25, 16
    expected = torch.tensor([[1 / 30, 4 / 29, 9 / 25, 16 / 16]])
    torch.testing.assert_close(lamp_scores(w), expected)
    torch.testing.assert_close(lamp_scores(w[:, [3, 0, 2, 1]]), expected[:, [3, 0, 2, 1]])  # order-free


def test_lamp_allocation_by_hand_differs_from_global():
    model = nn.Sequential(nn.Linear(4, 1, bias=False), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 4.0]]))  # LAMP 1/30, 4/29, 9/25, 1
        model[1].weight.copy_(torch.tensor([[0.5], [-0.6]]))  # LAMP 0.25/0.61 = 0.41, 1
    target = 2 / 6  # two zeros
    assert lamp_allocation(model, target) == {"0": 0.5, "1": 0.0}  # 1/30 and 4/29 are the lowest scores
    assert global_magnitude_allocation(model, target) == {"0": 0.0, "1": 1.0}  # |0.5| and |0.6|


# ------------------------------------------------------------------------------------------ exact targets
@pytest.mark.parametrize("method", ALLOCATION_METHODS)
@pytest.mark.parametrize("target", [0.1, 0.5, 0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("exclude", [(), ("conv1",)])
def test_every_allocation_meets_its_target_exactly(method, target, exclude):
    model = cnn_linear()
    if exclude and target > 0.95:
        pytest.skip("conv1 holds 2.6 % of the weights: 99 % is out of reach with it dense")
    alloc = BASELINE_ALLOCATIONS[method](model, target, ("*",), exclude)
    assert set(alloc) == set(prunable_layers(model, ("*",), exclude))
    apply_masks(model, magnitude_masks(model, alloc))
    zeros, total = count_zeros(model)
    assert zeros == round(target * total)
    if exclude:
        assert int((model.conv1.weight == 0).sum()) == 0  # excluded layers stay dense


def test_pot_is_registered_and_scale_free():
    import fcpts.baselines

    assert fcpts.baselines.ALLOCATIONS["pot"] is pot_allocation and "pot" not in ALLOCATIONS  # no import side effect
    model = cnn_linear()
    scaled = cnn_linear()
    with torch.no_grad():
        scaled.fc1.weight.mul_(1000.0)  # POT's score |w|/||W|| does not see a layer's scale...
    assert pot_allocation(model, 0.8) == pot_allocation(scaled, 0.8)
    assert global_magnitude_allocation(model, 0.8) != global_magnitude_allocation(scaled, 0.8)  # ...magnitude does
    w = torch.tensor([3.0, -4.0])
    torch.testing.assert_close(pot_scores(w), torch.tensor([0.6, 0.8]))


# ------------------------------------------------------------------------------------------ POT correction
def test_exact_correction_matches_dense_channel_moments():
    torch.manual_seed(0)
    dense = torch.randn(6, 4, 3, 3) * 0.1 + 0.02
    mask = (torch.rand_like(dense) > 0.5).float()
    out = correct_weights(dense, mask, "exact")
    assert bool((out[mask == 0] == 0).all())
    flat_o, flat_d = out.reshape(6, -1).double(), dense.reshape(6, -1).double()
    torch.testing.assert_close(flat_o.mean(1), flat_d.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat_o.std(1, unbiased=False), flat_d.std(1, unbiased=False), atol=1e-6, rtol=1e-5)


def trained_like(seed=0):
    """``cnn_linear`` with what trained layers have and random ones lack: a per-output-channel offset (channel
    means far from 0) and heavy tails."""
    model = cnn_linear(seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in all_weight_layers(model).values():
            w = m.weight
            w.mul_(torch.randn(w.shape, generator=g).abs().add_(0.5))  # heavier tails than a Gaussian
            w.add_(0.5 * w.std() * torch.randn((w.shape[0],) + (1,) * (w.dim() - 1), generator=g))
    return model


def channel_moments(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel mean and population std (zeros included), in double."""
    flat = w.detach().double().flatten(1)
    return flat.mean(1), flat.std(1, unbiased=False)


def pot_promise_broken(dense: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> str:
    """What ``correct_weights(dense, mask, "pot")`` promises (``fcpts.pot``), checked from the outside; '' when
    kept. Per output channel, with S = mask ⊙ W: the survivors are an increasing affine map a·w + b of the dense
    survivors, the pruned weights are 0, and the same map applied to S (zeros included) has W's mean and std."""
    w, m, o = (t.detach().double().flatten(1) for t in (dense, mask, out))
    if bool((o[m == 0] != 0).any()):
        return "pruned weights are not zero"
    mean_d, std_d = channel_moments(dense)
    for c in range(w.shape[0]):
        kept = m[c] > 0
        x, y = w[c, kept], o[c, kept]
        a = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        b = y.mean() - a * x.mean()
        if not a > 0 or (a * x + b - y).abs().max() > 1e-6 * y.abs().max():
            return f"channel {c}: the survivors are not an increasing affine map of the dense ones"
        mapped = a * w[c] * m[c] + b  # the map applied to S, whose pruned entries are 0
        if (mapped.mean() - mean_d[c]).abs() > 1e-6 * std_d[c] or \
                (mapped.std(unbiased=False) / std_d[c] - 1).abs() > 1e-6:
            return (f"channel {c}: mapped S has mean {mapped.mean():.5f} / std {mapped.std(unbiased=False):.5f}, "
                    f"dense {mean_d[c]:.5f} / {std_d[c]:.5f}")
    return ""


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_pot_correction_restores_the_dense_channel_moments(target):
    """The corrections on every layer of a small model (regular, strided, depthwise and 1x1 convs, two Linear
    layers; trained-like weights) pruned by ``pot_prune`` (POT's allocation and masks, no calibration), checked
    against their promises, not their formulas:

    * "pot" (OpenVINO's formula): see ``pot_promise_broken``. The final channel, whose pruned weights go back
      to 0 after the map, keeps the dense moments only approximately: that is what "exact" is for;
    * "exact": the final channel (zeros included) has the dense mean, and the dense std wherever a non-negative
      variance of the survivors allows it; elsewhere the smallest std the mean allows, |mean|·sqrt(1/p − 1) with
      p the kept share (the survivors all equal);
    * "none" is the plain masked layer, and it breaks both promises: the checks can fail.
    """
    model = trained_like().eval()
    masks = magnitude_masks(model, pot_allocation(model, target))
    dense = all_weight_layers(model)
    cfg = dict(calibrate=False, progress=False)
    pot, exact, none = (all_weight_layers(pot_prune(model, None, target, PotConfig(correction=mode, **cfg))[0])
                        for mode in ("pot", "exact", "none"))
    clamped = 0
    for name, mask in masks.items():
        w = dense[name].weight
        assert pot_promise_broken(w, mask, pot[name].weight) == "", name
        assert torch.equal(none[name].weight, w * mask) and torch.equal(correct_weights(w, mask, "none"), w * mask)
        assert pot_promise_broken(w, mask, none[name].weight) != "", f"{name}: the uncorrected layer passes"
        # "exact": the final channel's moments
        out = exact[name].weight
        assert bool((out[mask == 0] == 0).all())
        mean_d, std_d = channel_moments(w)
        mean_o, std_o = channel_moments(out)
        p = mask.double().flatten(1).mean(1)
        possible = p * (std_d ** 2 + mean_d ** 2) >= mean_d ** 2  # the survivors' variance would be >= 0
        torch.testing.assert_close(mean_o, mean_d, atol=1e-6 * float(std_d.max()), rtol=0)
        torch.testing.assert_close(std_o[possible], std_d[possible], atol=0, rtol=1e-5)
        torch.testing.assert_close(std_o[~possible], mean_d[~possible].abs() * (1 / p[~possible] - 1).sqrt(),
                                   atol=0, rtol=1e-5)
        clamped += int((~possible).sum())
        # ...which the plain masked layer does not have
        assert not torch.allclose(channel_moments(w * mask)[1], std_d, rtol=1e-3, atol=0), name
    assert (clamped > 0) == (target == 0.8)  # both cases met: at 80 % half of fc1's channels keep too few weights


def calib_images(n=64, size=8, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_pot_prune_is_exact_and_calibration_lowers_layer_error(target):
    model = cnn_linear().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PotConfig(iterations_per_layer=30, lr=1e-3, batch_size=16, samples=48, progress=False, cache_bytes=20_000)
    pruned, info = pot_prune(model, calib_images(), target, cfg)
    zeros, total = count_zeros(pruned)
    assert zeros == round(target * total) == info["zeros"]
    assert info["allocation"] == pot_allocation(model, target)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert set(info["calibration"]) == set(all_weight_layers(model))
    improved = [r["mse_after"] < r["mse_before"] for r in info["calibration"].values()]
    assert sum(improved) >= len(improved) - 1
    assert info["steps"] == 30 * len(info["calibration"])


# ------------------------------------------------------------------------------------------ three tiers
def tiny_config(**kw):
    return Config.quick_cpu(steps=3, batch_size=16, progress=False, **kw)


@pytest.mark.parametrize("method", ALLOCATION_METHODS)
@pytest.mark.parametrize("tier", ["a", "b", "c"])
def test_prune_baseline_every_method_and_tier(method, tier):
    model = cnn_linear().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pot = PotConfig(iterations_per_layer=3, samples=32, progress=False)
    pruned, info = prune_baseline(model, calib_images(), 0.8, method, tier, tiny_config(), pot)
    zeros, total = count_zeros(pruned)
    assert zeros == round(0.8 * total) == info["zeros"] and info["achieved_sparsity"] == zeros / total
    assert not pruned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    bn_changed = not torch.equal(pruned.bn1.running_mean, model.bn1.running_mean)
    assert bn_changed == (tier != "a")  # tier a never touches BN; b re-estimates it, c trains in train mode
    assert info["steps"] == {"a": 0 if method != "pot" else 3 * 6, "b": 0 if method != "pot" else 3 * 6, "c": 3}[tier]
    if tier in ("a", "b") and method != "pot":
        assert info["allocation"] == allocate(method, model, 0.8)


def test_tier_b_only_changes_bn_statistics():
    model = cnn_linear().eval()
    a, _ = prune_baseline(model, calib_images(), 0.7, "erk", "a", tiny_config())
    b, _ = prune_baseline(model, calib_images(), 0.7, "erk", "b", tiny_config())
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(ta, tb), name


def test_unknown_tier_and_method():
    with pytest.raises(ValueError, match="tier"):
        prune_baseline(cnn_linear(), calib_images(), 0.5, "erk", "d", tiny_config())
    with pytest.raises(ValueError, match="allocation"):
        prune_baseline(cnn_linear(), calib_images(), 0.5, "random", "a", tiny_config())


# ------------------------------------------------------------------------------------------ prune_train
def labelled(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("schedule", ["one_shot", "iterative", "agp", "one_cycle"])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_prune_train_ends_exactly_at_target_and_follows_schedule(schedule, allocation):
    cfg = PruneTrainConfig(schedule=schedule, allocation=allocation, steps=12, batch_size=16, progress=False,
                           log_every=1)
    result = prune_train(cnn_linear(), labelled(), 0.85, cfg)
    zeros, total = count_zeros(result.model)
    assert zeros == round(0.85 * total) == result.zeros and result.steps == 12
    assert result.history[-1]["sparsity"] == 0.85
    zs = [h["zeros"] for h in result.history]
    assert zs == sorted(zs)  # never un-prunes
    for h in result.history:
        assert h["zeros"] == (round(h["sparsity"] * total) if h["sparsity"] > 0 else 0)
    if allocation == "uniform":
        for name, s in result.allocation.items():
            n = dict(result.model.named_modules())[name].weight.numel()
            assert abs(s * n - 0.85 * n) < 1.0


def test_prune_train_is_deterministic_and_keeps_pruned_weights_at_zero():
    cfg = PruneTrainConfig(schedule="agp", steps=8, batch_size=16, progress=False, log_every=1)
    r1 = prune_train(cnn_linear(), labelled(), 0.7, cfg)
    r2 = prune_train(cnn_linear(), labelled(), 0.7, cfg)
    for (k, v1), v2 in zip(r1.model.state_dict().items(), r2.model.state_dict().values()):
        assert torch.equal(v1, v2), k
    r3 = prune_train(cnn_linear(), labelled(), 0.7, cfg.replace(seed=1))
    assert not torch.equal(r1.model.fc1.weight, r3.model.fc1.weight)


def test_prune_train_from_scratch_and_epochs():
    torch.manual_seed(3)
    scratch = make_model("cnn")
    cfg = PruneTrainConfig(schedule="one_cycle", epochs=2, batch_size=32, optimizer="sgd", lr=0.05,
                           lr_schedule="cosine", progress=False)
    result = prune_train(scratch, labelled(), 0.9, cfg)
    assert result.steps == 2 * (96 // 32)
    zeros, total = count_zeros(result.model)
    assert zeros == round(0.9 * total)
    with pytest.raises(ValueError):
        PruneTrainConfig(schedule="cosine")


@pytest.mark.parametrize("allocation", ["uniform", "global"])
@pytest.mark.parametrize("target", [0.3, 0.8, 0.95])
def test_prune_train_masks_equal_the_kit_magnitude_masks(allocation, target):
    from fcpts.prune_train import masks_at

    model = cnn_linear()
    alloc = uniform_allocation(model, target) if allocation == "uniform" else global_magnitude_allocation(model, target)
    reference = magnitude_masks(model, alloc)
    ours = masks_at(model, target, allocation)
    for name in reference:
        assert torch.equal(ours[name], reference[name]), name
    # ties at the cut (already-zero weights) still give exact counts
    with torch.no_grad():
        model.fc1.weight[:, :50] = 0.0
    masks = masks_at(model, target, allocation)
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(target * count_zeros(model)[1])
