"""Diverged runs stop clearly (issue #23 item 9): every method family checks its final model's eval-mode outputs
on calibration images and raises DivergedError (method, target, step) instead of returning it; the command
line turns that, an unavailable device and every other expected failure into one line, and saves nothing."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import make_model
from fcpts import Config, DsaLearner, FcptsLearner, ProbMaskLearner, StrLearner, learn_allocation
from fcpts.baselines import prune_baseline
from fcpts.dst import dst_train
from fcpts.guards import DivergedError, check_final_outputs, first_inputs
from fcpts.prune_train import PruneTrainConfig, prune_train


def poisoned_statistics(name: str = "cnn") -> nn.Module:
    """Finite weights, finite train-mode outputs (BatchNorm normalises with the batch), NaN eval-mode outputs:
    the first BatchNorm's running variance is NaN, and running averages keep it NaN."""
    model = make_model(name)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bn.running_var.fill_(float("nan"))
    return model


def overflowing_head() -> nn.Module:
    """Finite weights whose logits overflow to inf in float32, whatever the BatchNorm statistics."""
    model = make_model("cnn")
    with torch.no_grad():
        model.fc.weight.fill_(3e38)
    return model


def labelled(images):
    return TensorDataset(images, torch.arange(len(images)) % 10)


def tiny(steps=2, **kw):
    return Config.quick_cpu(steps=steps, batch_size=8, progress=False, device="cpu", **kw)


# ----- the guard itself ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", ["tensor", "dataset", "loader"])
def test_the_guard_reads_a_fixed_slice_and_leaves_every_generator_as_it_was(images, wrap):
    data = {"tensor": images, "dataset": labelled(images),
            "loader": DataLoader(labelled(images), batch_size=8, shuffle=True,
                                 generator=torch.Generator().manual_seed(3))}[wrap]
    assert torch.equal(first_inputs(data, 5), images[:5])
    model = make_model("cnn")
    state = torch.random.get_rng_state()
    loader_state = data.generator.get_state() if wrap == "loader" else None
    model.train()
    check_final_outputs(model, data, "test", 0.5, 0)  # finite: no error
    assert model.training  # its mode given back
    assert torch.equal(torch.random.get_rng_state(), state)
    if loader_state is not None:
        assert torch.equal(data.generator.get_state(), loader_state)
    with pytest.raises(DivergedError, match=r"mine diverged at target 0\.5: .*after step 7.*lower the lr"):
        check_final_outputs(poisoned_statistics(), data, "mine", 0.5, 7, hint="lower the lr")


# ----- one test per method family ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["prune_train", "dst"])
def test_training_family_stops_when_its_final_model_diverges(images, family, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = PruneTrainConfig(steps=3, batch_size=8, progress=False, device="cpu")
    run = {"prune_train": lambda: prune_train(poisoned_statistics(), labelled(images), 0.6, train),
           "dst": lambda: dst_train(poisoned_statistics(), labelled(images), 0.6, train)}[family]
    name = {"prune_train": "prune_train-uniform (one_cycle)", "dst": "DST-EE"}[family]
    with pytest.raises(DivergedError) as failure:
        run()
    message = str(failure.value)
    assert name in message and "target 0.6" in message and "after step 3" in message and "PruneTrainConfig.lr" in message
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("tier", ["a", "b"])
def test_allocation_baselines_stop_when_their_final_model_diverges(images, tier, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DivergedError, match=rf"erk tier {tier} diverged at target 0\.7: .*NaN/inf"):
        prune_baseline(overflowing_head(), images, 0.7, "erk", tier, tiny())
    if tier == "a":  # a NaN statistic of the dense model survives masks alone (tier b re-estimates it)
        with pytest.raises(DivergedError, match=r"uniform tier a diverged at target 0\.7"):
            prune_baseline(poisoned_statistics(), images, 0.7, "uniform", "a", tiny())
    assert not any(tmp_path.iterdir())


def test_probmask_names_the_run_when_every_final_draw_scores_nan(images):
    with pytest.raises(DivergedError) as failure:  # was: TypeError: 'NoneType' object is not subscriptable
        learn_allocation(poisoned_statistics(), images, 0.6, tiny(steps=3), ProbMaskLearner())
    message = str(failure.value)
    assert "ProbMask" in message and "target 0.6" in message and "after step 3" in message
    assert "final mask draws" in message


@pytest.mark.parametrize("learner", ["fcpts", "str", "dsa"])
def test_learners_stop_when_their_final_model_diverges(images, learner, tmp_path, monkeypatch):
    """Passes once ``learn_allocation`` ends with ``check_final_outputs`` (the shared reconstruction loop)."""
    monkeypatch.chdir(tmp_path)
    make = {"fcpts": FcptsLearner, "str": StrLearner, "dsa": DsaLearner}[learner]
    with pytest.raises(DivergedError) as failure:
        learn_allocation(poisoned_statistics(), images, 0.6, tiny(steps=3), make())
    message = str(failure.value)
    assert ("FCPTS" if learner == "fcpts" else learner) in message
    assert "target 0.6" in message and "after step 3" in message
    assert not any(tmp_path.iterdir())


# ----- the command line: one line, nothing saved ---------------------------------------------------------------
TINY = ["--model", "resnet18", "--weights", "none", "--image-size", "32", "--calib", "6", "--steps", "2",
        "--batch-size", "4", "--quiet", "--set", "eval_batch_size=8", "--set", "num_workers=0"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("how", [["--set", "device=cuda"], ["--device", "cuda:0"]])
def test_run_on_cuda_without_cuda_is_one_line_and_saves_nothing(tmp_path, capsys, how):
    from fcpts.cli import main

    out = tmp_path / "o"
    code = main(["run", "--out", str(out), "--quiet", *how])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "CUDA is not available" in err and "device=cpu" in err
    assert not out.exists()


def test_a_diverged_cli_run_is_one_line_and_saves_nothing(imagefolder, tmp_path, capsys, monkeypatch):
    import fcpts.cli as cli

    loader = next(n for n in ("resolve_dense_model", "load_model_for") if hasattr(cli, n))  # the dense model
    load = getattr(cli, loader)

    def poisoned(*args, **kwargs):
        model, info = load(*args, **kwargs)
        model.bn1.running_var.fill_(float("nan"))
        return model, info

    monkeypatch.setattr(cli, loader, poisoned)
    out = tmp_path / "o"
    code = cli.main(["run", "--method", "erk", "--tier", "a", "--dataset", "imagenet", "--data", str(imagefolder),
                     "--target", "0.7", "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "erk tier a diverged at target 0.7" in err and "nothing was saved" in err
    assert not out.exists()


def test_cli_interrupt_exits_130_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import fcpts.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_main", interrupted)
    assert cli.main(["train-dense"]) == 130 and capsys.readouterr().err.strip() == "interrupted"

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_main", bug)
    with pytest.raises(KeyError):
        cli.main(["train-dense"])

    def bad_value(args):
        raise ValueError("bad value")

    monkeypatch.setattr(cli, "_main", bad_value)
    assert cli.main(["train-dense"]) == 2
    with pytest.raises(ValueError):  # --debug: the traceback
        cli.main(["train-dense", "--debug"])
