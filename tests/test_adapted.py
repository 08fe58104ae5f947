"""The learners' fair post-training adaptations (issue #25): each mechanism on small tensors, the label-free choice
on a small model, and the faithful rows' keys untouched by the new options."""
from types import SimpleNamespace

import pytest
import torch

from conftest import make_model
from fcpts import Config, count_zeros, runner
from fcpts.calibration import split_holdout
from fcpts.dsa import BernoulliKeep, DsaConfig, DsaLearner
from fcpts.learners import ProbMaskConfig, ProbMaskLearner, StrConfig, StrLearner, rank_scores
from fcpts.models import resolve_dense_model
from fcpts.registry import METHODS, RunContext, RunSpec, hashed_options, names
from fcpts.sparsify import _set_lr, learn_allocation
from fcpts.table import read_table, row_key


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8, 0.95])
def test_rank_scores_order_the_weights_by_magnitude_around_the_layers_cut(sparsity):
    w = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    s = rank_scores(w, sparsity)
    order = w.abs().flatten().argsort()
    assert torch.all(s.flatten()[order].diff() >= 0)  # larger |w|, larger keep probability
    k = round(sparsity * w.numel())
    below, above = s.flatten()[order[k - 1]], s.flatten()[order[k]]
    assert float(below) < 0.5 < float(above) + 1e-3  # 0.5 sits at the layer's cut
    assert float(s.mean()) == pytest.approx(1 - sparsity, abs=0.02)  # keeps about the layer's share


def test_probmask_from_erk_ranks_starts_near_the_erk_masks():
    model = make_model("cnn")
    images = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    config = Config.quick_cpu(steps=1, batch_size=8, progress=False)
    learner = ProbMaskLearner(ProbMaskConfig(score_start="erk_ranks"))
    result = learn_allocation(model, images, 0.8, config, learner)
    assert learner.start == result.init_allocation  # the drift is measured from the ERK start
    assert result.history[0]["sparsity"] == pytest.approx(0.8, abs=0.05)  # the first sampled mask, not dense
    with pytest.raises(ValueError, match="score_start"):
        ProbMaskConfig(score_start="ranks")


def test_dsa_topk_masks_keep_the_largest_weights_and_pass_the_gradient_to_the_keep_ratio():
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(2))
    keep = BernoulliKeep(w, 0.3, DsaConfig(train_masks="topk"), torch.Generator().manual_seed(0))
    out = keep(w)
    kept = out != 0
    assert int(kept.sum()) == round(float(keep.alpha().detach()) * w.numel()) == w.numel() - keep.pruned
    assert float(w.abs()[kept].min()) > float(w.abs()[~kept].max())
    assert torch.equal(keep(w), out)  # deterministic: no draw
    g = torch.randn(20, 10, generator=torch.Generator().manual_seed(3))
    (out * g).sum().backward()
    assert keep.raw.grad is not None and float(keep.raw.grad) != 0.0
    with pytest.raises(ValueError, match="train_masks"):
        DsaConfig(train_masks="sample")


def test_str_threshold_lr_scale_multiplies_only_the_thresholds_learning_rate():
    def with_one_threshold(learner):
        learner.mods = lambda: {"a": SimpleNamespace(score=torch.nn.Parameter(torch.zeros(())))}
        return learner

    config = Config.quick_cpu()
    groups = with_one_threshold(StrLearner(StrConfig(threshold_lr_scale=3.0))).parameter_groups(config)
    weights = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([dict(params=[weights])] + groups, lr=1.0)
    run = SimpleNamespace(config=config, optimizer=optimizer, extra_optimizer=None, base_lr=config.lr, warmup=0)
    lr = _set_lr(run, 5)
    assert [g["lr"] for g in optimizer.param_groups] == [lr, 3.0 * lr]
    assert "lr_scale" not in with_one_threshold(StrLearner()).parameter_groups(config)[0]  # the faithful group is as before


def test_an_adapted_learner_keeps_the_candidate_with_the_lowest_held_out_kd():
    model = make_model("cnn").eval()
    images = torch.randn(160, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    data = SimpleNamespace(calib=images, test=None, num_classes=10, name="noise")
    config = Config.quick_cpu(steps=3, batch_size=16, progress=False)
    ctx = RunContext(config=config, model=model, bundle=lambda seed: data, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("str-adapted", "probmask-adapted", "dsa-adapted"):
        method = METHODS[name]
        pruned, info = method.run(ctx, RunSpec(name, "c", "-", 0.75, 0))
        scores = info["holdout_kd"]
        grid = method.label_free
        assert len(scores) == grid.candidates() and len(set(scores.values())) > 1
        assert info["selected"] == min(scores, key=scores.get)
        zeros, total = count_zeros(pruned)
        assert zeros == round(0.75 * total)
        assert method.variant_of in names(family="learner", default=True)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the dense model is untouched
    # the row is a plain run of the chosen setting on the calibration images minus the held-out ones
    chosen = {k: float(v) for k, v in (pair.split("=") for pair in info["selected"].split())}
    train, _ = split_holdout(images, 64, 0)
    alone = learn_allocation(model, train, 0.75, config, DsaLearner(METHODS["dsa-adapted"].options().replace(**chosen)))
    assert all(torch.equal(a, b) for a, b in zip(alone.model.state_dict().values(), pruned.state_dict().values()))


def test_the_new_options_leave_the_faithful_learners_committed_keys():
    """Options added for the adaptations are hashed only away from their faithful value: every committed learner
    row of the digits table is still planned under the same key (it is not recomputed)."""
    config = Config.quick_cpu()
    model, _ = resolve_dense_model(config, 10, False)  # trained and cached on first use, as test_paths does
    ctx = RunContext(config=config, model=model.eval(), bundle=None, device=torch.device("cpu"))
    table = read_table("data/learners_digits.csv")
    # every key holds the dense model's fingerprint, and that model is retrained bit for bit only on the CPU type
    # that made the table (docs/results.md, "Dense fingerprint"): elsewhere no committed key can be planned
    if not runner.has_dense_row("data/learners_digits.csv", runner.dense_row_hash(config, model)):
        pytest.skip("the dense model trained on this machine is not the one of data/learners_digits.csv "
                    "(another CPU type); its committed keys can only be checked where that model is retrained")
    learners = ["str", "probmask", "dsa"]
    jobs = runner.plan(ctx, learners, [0.5, 0.7, 0.8, 0.9, 0.95], [0, 1, 2], ["c"], [], ["dense"])
    committed = table[table.method.isin(learners)]
    assert len(committed) >= 27  # the first learners sweep's rows, and the seeds the adapted part adds at 95 %
    assert {row_key(r) for r in committed.to_dict("records")} <= {j.key() for j in jobs}


def test_added_options_are_hashed_in_full_once_any_of_them_moves():
    faithful = hashed_options(ProbMaskConfig())
    assert "score_start" not in faithful and "score_start_slope" not in faithful
    adapted = hashed_options(ProbMaskConfig(score_start="erk_ranks"))
    assert adapted["score_start"] == "erk_ranks" and adapted["score_start_slope"] == 6.0
    assert hashed_options(ProbMaskConfig(score_start="erk_ranks", score_start_slope=3.0)) != adapted
    assert "threshold_lr_scale" in hashed_options(StrConfig(threshold_lr_scale=3.0))
