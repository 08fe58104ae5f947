"""The allocation learners (STR, ProbMask, DSA-style): each mechanism on small tensors, and the shared final step."""
import math

import pytest
import torch

from conftest import make_model
from fcpts import Config, count_zeros
from fcpts.dsa import DsaConfig, DsaLearner, keep_probability, project_budget, solve_log_beta1
from fcpts.learners import (ProbMaskConfig, ProbMaskLearner, SoftThreshold, StrConfig, StrLearner,
                            inverse_temperature, pruned_fraction, solve_shift)
from fcpts.learner import FcptsLearner
from fcpts.sparsify import learn_allocation

LEARNERS = {"fcpts": lambda: FcptsLearner(), "str": lambda: StrLearner(), "probmask": lambda: ProbMaskLearner(),
            "dsa": lambda: DsaLearner()}


def tiny(steps=4, **kw):
    return Config.quick_cpu(steps=steps, batch_size=8, progress=False, **kw)


# ----- STR ---------------------------------------------------------------------------------------------------
def test_str_forward_is_the_soft_threshold_formula_and_its_gradient_reaches_s():
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    st = SoftThreshold(w, threshold=0.4)
    t = torch.sigmoid(st.score)
    assert float(t.detach()) == pytest.approx(0.4, rel=1e-5)
    out = st(w)
    expected = torch.sign(w) * torch.clamp(w.abs() - t, min=0)
    assert torch.equal(out, expected)
    assert st.pruned == int((w.abs() <= t).sum())
    # d/ds Σ g·ŵ = −σ'(s) Σ_{|w|>t} g·sign(w)
    g = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    (out * g).sum().backward()
    kept = w.abs() > t
    t = t.detach()
    analytic = -(t * (1 - t)) * (g * torch.sign(w))[kept].sum()
    assert float(st.score.grad) == pytest.approx(float(analytic), rel=1e-5)


def test_str_exports_its_shrunk_weights_with_exact_zeros():
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    result = learn_allocation(model, images, 0.7, tiny(), StrLearner())
    zeros, total = count_zeros(result.model)
    assert zeros == round(0.7 * total)
    # every surviving weight is the dense weight shrunk towards 0 (|ŵ| < |w|), never grown
    masked = learn_allocation(model, images, 0.7, tiny(), StrLearner(StrConfig(export="masked")))
    for (name, a), (_, b) in zip(result.model.state_dict().items(), masked.model.state_dict().items()):
        if name.endswith("weight") and a.dim() > 1:
            assert torch.equal(a == 0, b == 0)
            assert (a.abs() <= b.abs() + 1e-7).all() and (a.abs() < b.abs())[b != 0].any()


# ----- ProbMask ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget_fraction", [0.9, 0.55, 0.3, 0.1, 0.01])
def test_probmask_projection_meets_the_budget_to_a_thousandth_of_a_weight(budget_fraction):
    g = torch.Generator().manual_seed(4)
    scores = [torch.rand(300, generator=g) * 1.4 - 0.2, torch.rand(7, 9, generator=g), torch.ones(50)]
    n = sum(s.numel() for s in scores)
    budget = budget_fraction * n
    v = solve_shift(scores, budget)
    projected = [(s - v).clamp(0, 1) for s in scores]
    total = sum(float(p.double().sum()) for p in projected)
    assert v >= 0
    if sum(float(s.clamp(0, 1).double().sum()) for s in scores) > budget:
        assert abs(total - budget) < 1e-3  # the constraint is active: met to a thousandth of a weight
    else:
        assert v == 0.0 and total <= budget  # ProbMask's set is Σ s <= budget: nothing to shift


def test_probmask_projection_does_nothing_below_the_budget():
    scores = [torch.full((10,), 0.2)]
    assert solve_shift(scores, 5.0) == 0.0


def test_probmask_inverse_temperature_and_ramp_follow_their_schedules():
    steps = 100
    taus = [inverse_temperature(k, steps) for k in range(steps + 1)]
    assert taus[0] == pytest.approx(1.0) and taus[-1] == pytest.approx(1 / 0.03)
    assert all(b > a for a, b in zip(taus, taus[1:]))
    assert taus[50] == pytest.approx(1 / (0.97 * 0.5 + 0.03))
    assert pruned_fraction(0, steps, 0.8) == 0.0 and pruned_fraction(16, steps, 0.8) == 0.0
    assert pruned_fraction(60, steps, 0.8) == pytest.approx(0.8) and pruned_fraction(99, steps, 0.8) == pytest.approx(0.8)
    mid = (38 - 16) / 44
    assert pruned_fraction(38, steps, 0.8) == pytest.approx(0.8 * (1 - (1 - mid) ** 3))


def test_probmask_learner_holds_the_ramped_budget_every_step_and_uses_the_temperature():
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    learner = ProbMaskLearner(ProbMaskConfig(final_samples=3, selection_batches=1))
    seen = []
    original_after = learner.after_step

    def after(step, steps):
        original_after(step, steps)
        total = sum(float(s.detach().double().sum()) for s in learner.scores())
        seen.append((step, total, learner.keep_budget(step + 1, steps),
                     next(iter(learner.mods().values())).inv_temp))
        assert all(float(s.detach().min()) >= 0 and float(s.detach().max()) <= 1 for s in learner.scores())

    learner.after_step = after
    steps = 10
    result = learn_allocation(model, images, 0.8, tiny(steps), learner)
    for step, total, budget, tau in seen:
        assert total <= budget + 1e-3
        if step >= 1:  # once the ramp has started, the projection is active and meets the budget
            assert abs(total - budget) < 1e-2 or total < budget
        assert tau == pytest.approx(inverse_temperature(step, steps))
    assert result.zeros == round(0.8 * result.total)
    assert math.isfinite(learner.selection_loss)


# ----- DSA-style ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.03, 0.2, 0.5, 0.9, 0.995])
@pytest.mark.parametrize("beta2", [1.0, 4.0])
def test_dsa_solved_beta1_gives_mean_keep_probability_alpha(alpha, beta2):
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(6)) * 0.05
    p, log_beta1 = keep_probability(w, torch.tensor(alpha), beta2, 0.01)
    assert abs(float(p.mean()) - alpha) < 1e-4
    assert float(p.min()) >= 0.01 - 1e-7 and float(p.max()) <= 1.0
    # monotone in |w|: a larger weight is never less likely to be kept
    order = w.abs().flatten().argsort()
    assert (p.flatten()[order].diff() >= -1e-7).all()
    # warm start from a nearby solution gives the same answer
    _, again = keep_probability(w, torch.tensor(alpha), beta2, 0.01, guess=log_beta1 + 0.3)
    assert again == pytest.approx(log_beta1, abs=1e-3)


def test_dsa_implicit_gradient_matches_a_finite_difference():
    w = torch.randn(25, 12, generator=torch.Generator().manual_seed(7)) * 0.1
    c = torch.randn(25, 12, generator=torch.Generator().manual_seed(8))
    alpha = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    wd = w.double()
    p, _ = keep_probability(wd, alpha, 1.0, 0.01, tol=1e-12)
    (c.double() * p).sum().backward()
    eps = 1e-5

    def weighted(a):
        q, _ = keep_probability(wd, torch.tensor(a, dtype=torch.float64), 1.0, 0.01, tol=1e-13)
        return float((c.double() * q).sum())

    fd = (weighted(0.35 + eps) - weighted(0.35 - eps)) / (2 * eps)
    assert float(alpha.grad) == pytest.approx(fd, rel=1e-3)
    # the expected kept fraction mean(p) = α: its implicit derivative is 1
    alpha.grad = None
    p, _ = keep_probability(wd, alpha, 1.0, 0.01, tol=1e-12)
    p.mean().backward()
    kept = lambda a: float(keep_probability(wd, torch.tensor(a, dtype=torch.float64), 1.0, 0.01, tol=1e-13)[0].mean())
    assert float(alpha.grad) == pytest.approx((kept(0.35 + eps) - kept(0.35 - eps)) / (2 * eps), rel=1e-4)


def test_dsa_beta1_solve_rejects_an_infeasible_ratio():
    with pytest.raises(ValueError, match="strictly between"):
        solve_log_beta1(torch.zeros(5), 0.005, floor=0.01)


def test_dsa_budget_projection_is_exact_and_boxed():
    sizes = torch.tensor([100.0, 2000.0, 50.0, 800.0])
    v = torch.tensor([0.9, 0.1, 1.3, -0.2])
    budget = 0.4 * float(sizes.sum())
    z = project_budget(v, sizes, budget, 0.02, 0.999)
    assert float((z * sizes.double()).sum()) == pytest.approx(budget, rel=1e-9)
    assert float(z.min()) >= 0.02 and float(z.max()) <= 0.999
    # it is the closest point: any feasible move along the constraint makes it farther from v
    d = torch.tensor([1 / 100.0, -1 / 2000.0, 0.0, 0.0], dtype=torch.float64) * 1e-3
    inside = lambda x: bool((x >= 0.02).all() and (x <= 0.999).all())
    if inside(z + d):
        assert float(((z + d) - v.double()).norm()) >= float((z - v.double()).norm()) - 1e-12


def test_dsa_learner_holds_the_parameter_budget_with_admm():
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    learner = DsaLearner(DsaConfig(rho=10.0))
    result = learn_allocation(model, images, 0.75, tiny(8), learner)
    expected = [h["expected_sparsity"] for h in result.history]
    assert all(abs(s - 0.75) < 0.05 for s in expected)
    assert result.zeros == round(0.75 * result.total)


# ----- all learners: one final step ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LEARNERS))
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_every_learner_ends_with_exactly_the_target_zero_count(name, target):
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    result = learn_allocation(model, images, target, tiny(), LEARNERS[name]())
    zeros, total = count_zeros(result.model)
    assert zeros == result.zeros == round(target * total)
    assert len(result.history) == 4 and all(0.0 <= h["sparsity"] <= 1.0 for h in result.history)
    assert 0.0 <= result.sparsity_before_projection <= 1.0
    assert not any("parametrizations" in k for k in result.model.state_dict())
    # the input model is never modified
    assert count_zeros(model)[0] == 0


@pytest.mark.parametrize("name", ["str", "probmask", "dsa"])
def test_excluded_layers_stay_dense_and_the_count_stays_exact(name):
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(11))
    result = learn_allocation(model, images, 0.6, tiny(exclude=("fc",)), LEARNERS[name]())
    assert int((result.model.fc.weight == 0).sum()) == 0
    assert result.zeros == round(0.6 * result.total)


@pytest.mark.parametrize("name", ["str", "probmask", "dsa"])
def test_learners_are_deterministic_for_a_seed(name):
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(12))
    a = learn_allocation(model, images, 0.8, tiny(), LEARNERS[name]())
    b = learn_allocation(model, images, 0.8, tiny(), LEARNERS[name]())
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    assert [h["sparsity"] for h in a.history] == [h["sparsity"] for h in b.history]


def test_learner_options_are_validated():
    with pytest.raises(ValueError):
        StrConfig(export="soft")
    with pytest.raises(ValueError):
        ProbMaskConfig(ramp_start=0.7, ramp_end=0.6)
    with pytest.raises(ValueError):
        DsaConfig(alpha_min=0.005)
    with pytest.raises(ValueError):
        DsaConfig(final="median")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the learners' state must follow the model)")
@pytest.mark.parametrize("name", list(LEARNERS))
def test_every_learner_runs_on_cuda(name):
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(13))
    result = learn_allocation(model, images, 0.8, tiny(device="cuda"), LEARNERS[name]())
    assert result.zeros == round(0.8 * result.total)


def test_dsa_layers_at_the_edge_of_the_box_still_get_the_task_gradient():
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(14))
    from fcpts.dsa import BernoulliKeep

    keep = BernoulliKeep(w, 1.0, DsaConfig(), torch.Generator().manual_seed(0))  # an ERK-dense layer: starts at alpha_max
    (keep(w) * torch.randn(20, 10, generator=torch.Generator().manual_seed(15))).sum().backward()
    assert keep.raw.grad is not None and float(keep.raw.grad) != 0.0


def test_str_export_keeps_its_trained_shrinkage_when_the_projection_revives_weights():
    learner = StrLearner()
    w = torch.tensor([[0.05, -0.2, 0.5, -0.9]])
    learner.shrink = {"l": (0.3, 0.15)}  # trained t = 0.3; the projection lowered it to τ·t = 0.15
    out = learner.export("l", w, torch.tensor([[0.0, 1.0, 1.0, 1.0]]), 0.5)
    assert torch.allclose(out, torch.tensor([[0.0, -0.05, 0.2, -0.6]]))  # revived: |w| − τt; kept: |w| − t


@pytest.mark.parametrize("name", ["fcpts", "str", "probmask", "dsa"])
def test_without_the_projection_each_learner_returns_its_own_masks(name):
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(16))
    result = learn_allocation(model, images, 0.7, tiny(project=False), LEARNERS[name]())
    assert result.projection_shift == 1.0
    assert result.sparsity_after_projection == pytest.approx(result.sparsity_before_projection, abs=0.02)


def test_dsa_alpha_every_k_steps_moves_the_keep_ratios_only_on_those_steps():
    model = make_model("cnn")
    images = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(17))
    learner = DsaLearner(DsaConfig(alpha_every=3))
    moved = []
    original = learner.after_step

    def after(step, steps):
        before = getattr(learner, "_last", None)
        now = learner.alphas().detach().clone()
        if before is not None:
            moved.append((step, not torch.equal(before, now)))
        learner._last = now
        original(step, steps)

    learner.after_step = after
    learn_allocation(model, images, 0.7, tiny(7), learner)
    assert [m for s, m in moved] == [s % 3 == 0 for s, _ in moved]


# ----- the mask-learner lifecycle: prepare -> step -> squash, state_dict / load_state_dict ----------------------
@pytest.mark.parametrize("name", list(LEARNERS))
def test_a_learners_state_restores_its_masks_on_a_fresh_model(name):
    """What a learner has learned (thresholds, scores, dual variables, its random stream) is its state_dict:
    loaded into the same learner prepared on a fresh copy of the model, it gives the same masks."""
    config = tiny(target=0.7)
    allocation = {n: 0.7 for n, m in make_model("cnn").named_modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                         torch.nn.Linear))}
    first, student = LEARNERS[name](), make_model("cnn")
    first.prepare(student, allocation, config)
    with torch.no_grad():  # move every learned value away from its start, as training would
        for module in first.mods().values():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    state = first.state_dict()
    second, fresh = LEARNERS[name](), make_model("cnn")
    second.prepare(fresh, allocation, config)
    assert second.layer_sparsities() != first.layer_sparsities()
    second.load_state_dict(state)
    assert second.layer_sparsities() == first.layer_sparsities()
    with pytest.raises(ValueError, match="prepare it on the same model"):
        LEARNERS[name]().load_state_dict({"layers": {"nope": {}}})


@pytest.mark.parametrize("name", list(LEARNERS))
def test_squash_leaves_plain_modules_with_the_original_keys_and_real_zeros(name):
    model = make_model("cnn")
    keys = list(model.state_dict())
    # STR's own export shrinks the weights by its final thresholds (set by final_masks): its masked export here
    learner = StrLearner(StrConfig(export="masked")) if name == "str" else LEARNERS[name]()
    allocation = {n: 0.5 for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    learner.prepare(model, allocation, tiny(target=0.5))
    masks = {n: (torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5).float()
             for n, w in learner.originals().items()}
    learner.squash(masks, 1.0)
    assert list(model.state_dict()) == keys
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    for name_, module in learner.layers.items():
        assert torch.equal(module.weight == 0, masks[name_] == 0)
