"""``fcpts.notebook.setup``: a notebook's set-up cell in one call, and the package's public surface."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fcpts import notebook as nb
from fcpts.data import REPO_ROOT

REPO = Path(__file__).resolve().parents[1]


def test_setup_takes_the_mode_and_the_namespace_overrides_it(capsys):
    namespace = dict(mode="ci", calib_size=64, steps=5, target=0.7, results_dir="build/test_notebook_setup",
                     model=object(), unrelated=object())  # a model object (a notebook's later cell) is no setting
    config, data, run = nb.setup(namespace)
    ci = nb.mode_settings("ci")
    assert (config.dataset, config.calib_size, config.steps, config.target) == ("digits", 64, 5, 0.7)
    # every other setting comes from params/ci.yaml, which extends params/quick.yaml
    assert (config.model, config.batch_size, config.progress, config.image_size) == \
        (ci["model"], ci["batch_size"], ci["progress"], ci["image_size"]) == ("resnet50", 32, False, 32)
    assert len(data.calib) == 64
    assert isinstance(run, nb.Session) and run.mode == "ci" and run.tag == "resnet50_digits" == nb.run_tag(config)
    assert run.max_new_runs == ci["max_new_runs"] == 1
    assert run.results == REPO_ROOT / "build/test_notebook_setup" and run.figures == REPO_ROOT / ci["figures_dir"]
    assert REPO_ROOT == REPO and all(p.is_relative_to(REPO) for p in (run.results, run.figures))
    assert not run.results.exists(), "setup only computes where results go"
    with pytest.raises(AttributeError):
        run.tag = "other"  # frozen
    printed = capsys.readouterr().out
    assert nb.describe(config, data) in printed and "environment:" in printed


def test_the_default_mode_is_quick_and_an_unknown_mode_says_which_exist():
    run = nb.session({})
    assert run.mode == "quick" and run.results == REPO_ROOT / "results/notebooks" and run.max_new_runs == 0
    with pytest.raises(ValueError, match="no params/fast.yaml; choose one of ci, fashion, full, quick, refresh"):
        nb.session(dict(mode="fast"))


def test_setup_stops_on_a_missing_imagenet(tmp_path):
    missing = tmp_path / "no-imagenet"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nb.setup(dict(mode="full", data_root=str(missing)))


def test_the_save_hook_is_importable_as_make_lab_names_it():
    from fcpts.notebook import refresh_git_after_save

    module, name = "fcpts.notebook.refresh_git_after_save".rsplit(".", 1)  # as Jupyter resolves the hook
    assert getattr(importlib.import_module(module), name) is refresh_git_after_save
    assert refresh_git_after_save(os_path="not-a-notebook.py") is None


def test_every_name_the_notebooks_use_is_exported():
    import re

    used = set()
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        used |= set(re.findall(r"\bnb\.([A-Za-z_]\w*)", path.read_text()))
    assert used and not sorted(u for u in used if not hasattr(nb, u))
    assert all(hasattr(nb, name) for name in nb.__all__)
