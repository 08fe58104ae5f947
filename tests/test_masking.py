"""Learnable thresholds: masks, gradient modes, squash, report, ERK start, exact projection."""
import math

import pytest
import torch
from torch.nn.utils import parametrize

from conftest import make_model
from fcpts.allocation import erk_allocation, erk_densities, exact_counts
from fcpts.masking import ThresholdSparsifier, prunable_layers
from fcpts.objective import kd_loss
from fcpts.projection import project_masks


def prepare(name="cnn", gradient="released", parameterization="sigmoid", target=0.5, **kw):
    model = make_model(name)
    alloc = erk_allocation(model, target)
    return model, ThresholdSparsifier(model, alloc, gradient=gradient, parameterization=parameterization, **kw)


@pytest.mark.parametrize("parameterization", ["sigmoid", "scaled"])
def test_masks_are_exactly_binary_and_match_thresholds(parameterization):
    model, sp = prepare(parameterization=parameterization)
    for name, mask_module in sp.masks().items():
        w = sp.layers[name].parametrizations.weight.original
        mask = mask_module.mask(w)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(mask.bool(), w.abs() > mask_module.threshold())
        assert torch.equal(sp.layers[name].weight, w * mask)


def test_threshold_starts_at_the_kth_smallest_magnitude():
    model = make_model("cnn")
    dense = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}
    alloc = erk_allocation(model, 0.7)
    sp = ThresholdSparsifier(model, alloc)
    for name, t in sp.thresholds().items():
        k = round(alloc[name] * dense[name].numel())
        if k > 0:
            assert t == pytest.approx(dense[name].abs().flatten().kthvalue(k).values.item(), rel=1e-5)


def test_released_mode_reconstruction_sends_no_gradient_to_thresholds(images):
    model, sp = prepare("cnn", gradient="released")
    teacher = make_model("cnn")
    kd_loss(model(images), teacher(images).detach()).backward()
    for p in sp.threshold_parameters():
        assert p.grad is None or p.grad.abs().sum() == 0
    # ...while the weights still learn, through masked gradients
    layer = next(iter(sp.layers.values()))
    original = layer.parametrizations.weight.original
    mask = sp.masks()[next(iter(sp.layers))].mask(original)
    assert original.grad.abs().sum() > 0
    assert (original.grad[mask == 0] == 0).all()


def test_ste_mode_reconstruction_reaches_thresholds(images):
    model, sp = prepare("cnn", gradient="ste")
    teacher = make_model("cnn")
    kd_loss(model(images), teacher(images).detach() + torch.randn(48, 10)).backward()
    grads = [p.grad for p in sp.threshold_parameters()]
    assert all(g is not None for g in grads)
    assert sum(int(g.abs() > 0) for g in grads) >= len(grads) - 1


def test_controllable_objective_moves_thresholds_through_the_bridge():
    model, sp = prepare("cnn", target=0.5)
    (sp.global_sparsity() - 0.9).abs().backward()  # asks for more sparsity: thresholds must want to rise
    grads = [p.grad.item() for p in sp.threshold_parameters()]
    assert all(g <= 0 for g in grads) and any(g < 0 for g in grads)


def test_global_sparsity_counts_excluded_layers_as_dense():
    model = make_model("cnn")
    alloc = erk_allocation(model, 0.3, exclude=("fc",))
    sp = ThresholdSparsifier(model, alloc, exclude=("fc",))
    zeros = sum(r["sparsity"] * r["numel"] for r in sp.report())
    assert sp.global_sparsity().item() == pytest.approx(zeros / sp.n_total, abs=1e-6)
    assert "fc" not in sp.layers and sp.max_sparsity() < 1


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_squash_leaves_real_zeros_original_keys_and_same_outputs(name, images32):
    model = make_model(name).eval()
    keys = list(model.state_dict())
    sp = ThresholdSparsifier(model, erk_allocation(model, 0.8))
    with torch.no_grad():
        masked_out = model(images32)
    report = {r["layer"]: r for r in sp.report()}
    squashed = sp.squash()
    assert list(squashed.state_dict()) == keys
    assert not any(parametrize.is_parametrized(m) for m in squashed.modules())
    with torch.no_grad():
        assert torch.allclose(squashed(images32), masked_out, atol=1e-6)
    for name_, module in prunable_layers(squashed).items():
        zeros = int((module.weight == 0).sum())
        assert zeros == round(report[name_]["sparsity"] * module.weight.numel())


def test_report_lists_every_layer():
    model, sp = prepare("cnn")
    rows = sp.report()
    assert [r["layer"] for r in rows] == list(prunable_layers(model))
    assert all({"layer", "shape", "numel", "sparsity", "threshold"} <= set(r) for r in rows)


def test_erk_matches_formula_and_target():
    model = make_model("cnn")
    target = 0.8
    alloc = erk_allocation(model, target)
    layers = prunable_layers(model)
    numels = {n: m.weight.numel() for n, m in layers.items()}
    total = sum(numels.values())
    zeros = sum(round(alloc[n] * numels[n]) for n in layers)
    assert zeros == round(target * total)
    # formula: density_l = eps * (sum dims / prod dims) for layers not forced dense, same eps for all
    ratios = {n: (1 - alloc[n]) / (sum(m.weight.shape) / math.prod(m.weight.shape)) for n, m in layers.items() if alloc[n] > 0}
    eps = list(ratios.values())
    assert max(eps) == pytest.approx(min(eps), rel=0.02)  # equal up to integer rounding of counts


def test_erk_forces_overfull_layers_dense_and_resolves_budget():
    shapes = {"small": (2, 2), "big": (100, 100)}
    d = erk_densities(shapes, budget=0.5 * (4 + 10_000))
    assert d["small"] == 1.0
    assert d["big"] == pytest.approx((0.5 * 10_004 - 4) / 10_000)
    # hand-computable: no layer forced dense
    d = erk_densities({"a": (10, 10), "b": (10, 40)}, budget=50)
    eps = 50 / (100 * 0.2 + 400 * (50 / 400))
    assert d["a"] == pytest.approx(eps * 0.2) and d["b"] == pytest.approx(eps * 50 / 400)


def test_exact_counts_sum_exactly():
    numels = {"a": 7, "b": 13, "c": 101}
    counts = exact_counts({"a": 0.33, "b": 0.51, "c": 0.777}, numels, 50)
    assert sum(counts.values()) == 50 and all(0 <= counts[n] <= numels[n] for n in numels)


def test_projection_is_exact_and_keeps_the_allocation_shape():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(100, generator=g), "b": torch.randn(1000, generator=g) * 0.1}
    thresholds = {"a": 0.5, "b": 0.05}
    for zeros in (0, 1, 550, 1099, 1100):
        masks, tau = project_masks(weights, thresholds, zeros)
        assert sum(int((m == 0).sum()) for m in masks.values()) == zeros
    # with ties the count is still exact
    tied = {"a": torch.ones(10), "b": torch.ones(10)}
    masks, _ = project_masks(tied, {"a": 1.0, "b": 1.0}, 7)
    assert sum(int((m == 0).sum()) for m in masks.values()) == 7


def test_projection_refuses_more_existing_zeros_than_target():
    with pytest.raises(ValueError, match="exact zero"):
        project_masks({"a": torch.zeros(10)}, {"a": 0.1}, 5)


def test_bridge_reuses_the_forward_count_only_while_it_is_valid():
    from fcpts.bridge import exact_sparsity

    model, sp = prepare(target=0.6)
    x = torch.randn(4, 3, 16, 16)
    model(x).sum().backward()  # the forward records each mask's count
    for name, m in sp.masks().items():
        w = sp.layers[name].parametrizations.weight.original
        cached = m._cached_sparsity(w)
        assert cached is not None and cached.item() == pytest.approx(exact_sparsity(w, m.threshold()).item())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    optimizer.step()  # weights and thresholds move in place: every cached count is stale now
    for name, m in sp.masks().items():
        assert m._cached_sparsity(sp.layers[name].parametrizations.weight.original) is None
    exact = sum(exact_sparsity(sp.layers[n].parametrizations.weight.original, m.threshold()) * sp.info[n].numel
                for n, m in sp.masks().items()) / sp.n_total
    assert sp.global_sparsity().item() == pytest.approx(exact.item())


def test_released_forward_equals_weight_times_mask_in_value_and_gradient():
    model, sp = prepare(target=0.5)
    name, m = next(iter(sp.masks().items()))
    w = sp.layers[name].parametrizations.weight.original.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    out = m(w)
    ref = w2 * m.mask(w2)
    assert torch.equal(out, ref)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    assert torch.equal(w.grad, w2.grad)


def test_forward_count_is_exact_beyond_float32_integers():
    """The mask's count is a float sum: a layer of more than 2**24 weights must still count exactly."""
    from fcpts.bridge import exact_sparsity
    from fcpts.masking import ThresholdMask, kth_smallest_abs

    # 17,647,537 weights kept: odd and above 2**24, so a float32 sum would be off by one (checked).
    w = torch.randn(2 ** 24 + 2 ** 20 + 3, generator=torch.Generator().manual_seed(0))
    mask = ThresholdMask(w, kth_smallest_abs(w, 0.01))
    masked = mask(w)
    kept = int(masked.count_nonzero())
    assert kept > 2 ** 24 and kept % 2 == 1
    pruned = w.numel() - kept
    assert pruned == int(round(float(exact_sparsity(w, mask.threshold())) * w.numel()))
    assert mask._cached_sparsity(w).item() * w.numel() == pytest.approx(pruned, abs=1e-3)
    assert float(mask._pruned[1]) == pruned
