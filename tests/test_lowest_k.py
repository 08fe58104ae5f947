"""The one "drop the k lowest" primitive (fcpts.masking.lowest_k): exact counts, the documented tie rule (by
position, lowest index first), agreement with torch.topk where there are no ties, and the same selection from
every method that drops weights (allocation, prune_train.masks_at, dst.rewire, projection) on a tied tensor."""
import math

import pytest
import torch
from torch import nn

from fcpts.allocation import global_magnitude_allocation, lamp_scores, magnitude_masks, uniform_allocation
from fcpts.dst import DstConfig, rewire
from fcpts.masking import kth_smallest, lowest_k, lowest_k_mask
from fcpts.projection import project_scores
from fcpts.prune_train import masks_at


def stable_first_k(values: torch.Tensor, k: int, largest: bool = False) -> torch.Tensor:
    """The documented rule, written out: the first k entries of a stable sort (descending with ``largest``)."""
    flat = values.flatten()
    order = torch.sort(flat, descending=largest, stable=True).indices
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order[:k]] = True
    return chosen.reshape(values.shape)


def tied(shape, seed=0, levels=4) -> torch.Tensor:
    """Non-zero values on a few levels: every cut falls on a tie."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return sign * (torch.randint(1, levels + 1, shape, generator=g).float() / 10)


# ------------------------------------------------------------------------------------------ the primitive
@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("make", [lambda: torch.randn(7, 9), lambda: tied((7, 9)), lambda: torch.zeros(7, 9)])
def test_exact_count_for_every_k_including_0_and_n(make, largest):
    x = make()
    for k in range(x.numel() + 1):
        mask = lowest_k_mask(x, k, largest)
        assert mask.dtype == torch.bool and mask.shape == x.shape
        assert int(mask.sum()) == k
    assert not lowest_k_mask(x, 0, largest).any() and lowest_k_mask(x, x.numel(), largest).all()
    assert lowest_k(x, 0, largest)[1] is None
    with pytest.raises(ValueError):
        lowest_k_mask(x, x.numel() + 1, largest)
    with pytest.raises(ValueError):
        lowest_k_mask(x, -1, largest)


def test_tie_rule_is_position_lowest_index_first():
    all_tied = torch.full((10,), 0.5)
    for k in range(11):
        assert lowest_k_mask(all_tied, k).tolist() == [True] * k + [False] * (10 - k)
        assert lowest_k_mask(all_tied, k, largest=True).tolist() == [True] * k + [False] * (10 - k)
    x = torch.tensor([3.0, 1.0, 1.0, 2.0, 1.0, 0.0, 0.0])
    assert lowest_k_mask(x, 3).tolist() == [False, True, False, False, False, True, True]  # both 0s, then the first 1
    assert lowest_k_mask(x, 3, largest=True).tolist() == [True, True, False, True, False, False, False]
    mask, cut = lowest_k(x, 3)
    assert float(cut) == 1.0
    # 2-D: positions are row-major
    assert lowest_k_mask(torch.zeros(2, 3), 4).tolist() == [[True, True, True], [True, False, False]]
    # the rule is a stable sort's first k, on many random tied tensors and in both directions
    for seed in range(20):
        t = tied((5, 13), seed, levels=3)
        for k in (1, 7, 30, 64):
            for largest in (False, True):
                assert torch.equal(lowest_k_mask(t, k, largest), stable_first_k(t, k, largest)), (seed, k, largest)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_topk_without_ties(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1000, generator=g)
    assert torch.unique(x).numel() == x.numel()
    for k in (1, 17, 1500, 2999, 3000):
        for largest in (False, True):
            ref = torch.zeros(x.numel(), dtype=torch.bool)
            ref[torch.topk(x.flatten(), k, largest=largest).indices] = True
            mask, cut = lowest_k(x, k, largest)
            assert torch.equal(mask.flatten(), ref)
            assert float(cut) == float(torch.topk(x.flatten(), k, largest=largest).values[-1])
    assert float(kth_smallest(x, 5)) == float(torch.sort(x.flatten()).values[4])


def test_infinite_scores_and_nan_refused():
    x = torch.tensor([math.inf, 1.0, -math.inf, math.inf, 2.0])
    assert lowest_k_mask(x, 2).tolist() == [False, True, True, False, False]
    assert lowest_k_mask(x, 4, largest=True).tolist() == [True, True, False, True, True]
    with pytest.raises(ValueError, match="NaN"):
        lowest_k_mask(torch.tensor([float("nan"), 1.0]), 2)


# ------------------------------------------------------------------------------------------ every method, one rule
class TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc1 = nn.Linear(40, 30)
        self.fc2 = nn.Linear(30, 10)
        with torch.no_grad():
            for i, m in enumerate((self.conv, self.fc1, self.fc2)):
                m.weight.copy_(tied(m.weight.shape, seed=i))


@pytest.mark.parametrize("target", [0.3, 0.55, 0.8])
def test_allocation_prune_train_projection_and_dst_drop_the_same_tied_weights(target):
    model = TiedNet()
    weights = {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    # per layer: allocation.magnitude_masks == prune_train.masks_at == a stable sort of |w|
    uniform = magnitude_masks(model, uniform_allocation(model, target))
    assert uniform.keys() == weights.keys()
    for name, keep in masks_at(model, target, "uniform").items():
        assert torch.equal(keep, uniform[name]), name
        k = int((uniform[name] == 0).sum())
        assert torch.equal(uniform[name] == 0, stable_first_k(weights[name].abs(), k)), name
        # dst.rewire drops the same k weights of a fully active layer
        w = weights[name]
        new, grown = rewire(w, torch.zeros_like(w), torch.ones_like(w), torch.ones_like(w, dtype=torch.int32), k,
                            update=1, config=DstConfig(c=0.0, ties="index"))
        assert torch.equal(~(new.bool() & ~grown), uniform[name] == 0), name
        # the projection on one layer, with |w| as its score
        projected, cut = project_scores({name: w.abs()}, k)
        assert torch.equal(projected[name], uniform[name]), name
    # over all layers: the global allocation's masks == masks_at("global") == the projection on |w|
    global_ = magnitude_masks(model, global_magnitude_allocation(model, target))
    zeros = sum(int((m == 0).sum()) for m in global_.values())
    projected, cut = project_scores({n: w.abs() for n, w in weights.items()}, zeros)
    for name, keep in masks_at(model, target, "global").items():
        assert torch.equal(keep, global_[name]), name
        assert torch.equal(projected[name], global_[name]), name
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    assert torch.equal(torch.cat([(m == 0).flatten() for m in global_.values()]), stable_first_k(flat, zeros))


@pytest.mark.parametrize("seed", range(3))
def test_rewire_on_tied_weights_and_gradients_is_a_stable_sort_rigl(seed):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(6, 20, generator=g) < 0.5).float()
    weight, grad = tied((6, 20), seed) * mask, tied((6, 20), seed + 100, levels=2)
    n = int(0.4 * mask.sum())
    new, grown = rewire(weight, grad, mask, mask.int(), n, update=1, config=DstConfig(c=0.0, ties="index"))
    magnitude = weight.abs().masked_fill(mask == 0, math.inf)
    kept = mask.bool() & ~stable_first_k(magnitude, n)
    expect_grown = stable_first_k(grad.abs().masked_fill(kept, -math.inf), n, largest=True)
    assert torch.equal(grown, expect_grown) and torch.equal(new.bool(), kept | expect_grown)


def test_lamp_scores_break_ties_by_position():
    w = torch.tensor([0.2, -0.1, 0.1, 0.3, -0.1])
    scores = lamp_scores(w)
    assert scores[1] < scores[2] < scores[4]  # equal |w|: the earlier weight scores lower and goes first
