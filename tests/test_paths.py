"""Where the kit reads and writes (fcpts.paths): a path the user types is relative to the current folder; defaults
live in the checkout when run from one, else in $FCPTS_HOME (~/.cache/fcpts) and ./results, never in site-packages.

The last test builds a wheel, installs it into a fresh virtual environment and runs ``fcpts demo`` from there.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import fcpts.models as models
from fcpts import Config, paths
from fcpts.cli import main
from fcpts.data import resolve_imagenet_root

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "resnet18", "--weights", "none", "--image-size", "32", "--calib", "6", "--steps", "2",
        "--batch-size", "4", "--quiet", "--set", "eval_batch_size=8", "--set", "num_workers=0"]  # as test_cli.py


@pytest.fixture()
def no_home(monkeypatch):
    """No FCPTS_HOME / XDG_CACHE_HOME from the caller's environment."""
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


@pytest.fixture()
def installed(tmp_path, monkeypatch, no_home):
    """The package as if installed: its folder in a site-packages without pyproject.toml; HOME and the current
    folder in tmp. Returns (home, working folder)."""
    package = tmp_path / "site-packages" / "fcpts"
    package.mkdir(parents=True)
    monkeypatch.setattr(paths, "PACKAGE_DIR", package)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path / "user", work


def test_checkout_is_found_from_the_package_location_only():
    assert paths.checkout() == REPO
    assert paths.checkout(REPO / "fcpts") == REPO
    assert paths.checkout(Path(sysconfig.get_paths()["purelib"]) / "fcpts") is None


def test_in_the_checkout_everything_stays_where_it_was(no_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the current folder does not matter in a checkout
    assert paths.checkpoint_dir() == models.default_checkpoint_dir() == REPO / "data" / "checkpoints"
    assert paths.data_root() == REPO / "data" and resolve_imagenet_root() == REPO / "data" / "imagenet"
    assert paths.results_dir() == REPO / "results" and paths.figures_dir() == REPO / "figures"


def test_fcpts_home_holds_checkpoints_and_data_read_at_call_time(no_home, tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    assert paths.checkpoint_dir() == models.default_checkpoint_dir() == tmp_path / "home" / "checkpoints"
    assert paths.data_root() == tmp_path / "home" / "data"
    assert resolve_imagenet_root() == tmp_path / "home" / "data" / "imagenet"
    assert paths.results_dir() == REPO / "results"  # results are not kit state: still the checkout's
    # the resolver asks at call time: a missing checkpoint is looked for in the new home, and nothing is written
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "home" / "checkpoints")):
        models.resolve_dense_model(Config.quick_cpu(model="resnet18", progress=False), 10, train=False)
    assert not (tmp_path / "home").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.HOME_ENV, "rel")  # a relative FCPTS_HOME is taken from the current folder
    assert paths.checkpoint_dir() == tmp_path / "rel" / "checkpoints"


def test_installed_layout_uses_the_user_cache_and_the_current_folder(installed, monkeypatch, tmp_path):
    user, work = installed
    assert paths.checkout() is None
    assert paths.checkpoint_dir() == models.default_checkpoint_dir() == user / ".cache" / "fcpts" / "checkpoints"
    assert paths.data_root() == user / ".cache" / "fcpts" / "data"
    assert paths.results_dir() == work / "results" and paths.figures_dir() == work / "figures"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.checkpoint_dir() == tmp_path / "xdg" / "fcpts" / "checkpoints"
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    assert paths.checkpoint_dir() == tmp_path / "home" / "checkpoints"
    assert paths.data_root() == tmp_path / "home" / "data"


def _snapshot_checkout_outputs() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file where a run would write in the checkout: results/, data/checkpoints/."""
    found = {}
    for folder in (REPO / "results", REPO / "data" / "checkpoints"):
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file():
                found[str(path)] = (path.stat().st_mtime_ns, path.stat().st_size)
    return found


def _checkout_untouched(before: dict[str, tuple[int, int]]) -> None:
    assert _snapshot_checkout_outputs() == before, "a run wrote into the checkout"
    assert not (REPO / "out1").exists() and not (REPO / "img").exists()


def test_run_paths_are_relative_to_the_current_folder(imagefolder, monkeypatch, capsys):
    """`fcpts run --data img --out out1` in a working folder reads ./img and writes ./out1, not the checkout's."""
    work = imagefolder
    (work / "img").mkdir()
    for split in ("train", "val"):
        shutil.move(str(work / split), str(work / "img" / split))
    before = _snapshot_checkout_outputs()
    monkeypatch.chdir(work)
    assert main(["run", "--dataset", "imagenet", "--data", "img", "--target", "0.8", "--out", "out1", *TINY]) == 0
    assert json.loads((work / "out1" / "metrics.json").read_text())["calib_size"] == 6
    assert f"results in {work / 'out1'}" in capsys.readouterr().out
    _checkout_untouched(before)


def test_run_without_out_writes_under_the_default_results_folder(imagefolder, installed, capsys):
    _, work = installed
    assert main(["run", "--dataset", "imagenet", "--data", str(imagefolder), "--target", "0.8", *TINY]) == 0
    assert (work / "results" / "resnet18-imagenet-s0.8-seed0" / "metrics.json").is_file()


def _file_listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow  # about 25 s on 2 cores (a wheel, a venv, a short demo); 2.5 min more to train a missing checkpoint
def test_installed_wheel_writes_to_fcpts_home_and_the_current_folder(tmp_path):
    """`pip install .` (not editable): the demo reads the checkpoint from $FCPTS_HOME, writes ./results/demo, and
    writes nothing into the installation (the whole virtual environment) or the checkout."""
    pytest.importorskip("setuptools", reason="building the wheel offline (--no-build-isolation) needs setuptools here")
    name = models.DenseRecipe().checkpoint_name()
    _, info = models.load_embedded_model(models.DenseRecipe(), progress=False)  # trains it if missing: never skips
    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)
    shutil.copy2(info["path"], home / "checkpoints" / name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", paths.HOME_ENV, "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path), MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1")

    def call(*args: str | Path, cwd: Path = tmp_path, **extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(a) for a in args], cwd=cwd, env=dict(env, **extra), capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    # the wheel, built from a copy of the sources: an in-place build would write build/ and egg-info into the checkout
    source = tmp_path / "source"
    shutil.copytree(REPO / "fcpts", source / "fcpts", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", source / "pyproject.toml")
    call(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp_path / "wheels", source)
    (wheel,) = (tmp_path / "wheels").glob("fcpts_kit-*.whl")

    # a fresh environment; pip (this environment's, run under the new interpreter) installs the wheel into it
    # before it can see anything else, then a .pth lends it this environment's third-party packages (torch ...).
    # A directory line in a .pth does not run that directory's own .pth files: the checkout's editable hook stays out.
    venv = tmp_path / "venv"
    call(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    call(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    site = Path(call(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "fcpts_test_third_party.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    work = tmp_path / "work"
    work.mkdir()
    origin = call(python, "-c", "import importlib.util; print(importlib.util.find_spec('fcpts').origin)", cwd=work)
    assert Path(origin.stdout.strip()) == site / "fcpts" / "__init__.py", "the new venv imports another fcpts"
    assert importlib.util.find_spec("fcpts").origin == str(REPO / "fcpts" / "__init__.py")  # (this one: the checkout)

    venv_before, checkout_before = _file_listing(venv), _snapshot_checkout_outputs()
    checkpoint_before = _file_listing(home)
    done = call(venv / "bin" / "fcpts", "demo", "--targets", "0.8", "--set", "steps=2", "--set", "calib_size=64",
                "--quiet", cwd=work, FCPTS_HOME=str(home))
    summary = json.loads((work / "results" / "demo" / "demo.json").read_text())
    assert summary["dense_checkpoint"] == str(home / "checkpoints" / name)
    assert (work / "results" / "demo" / "demo_allocation_80.png").is_file()
    assert f"results in {work / 'results' / 'demo'}" in done.stdout
    assert _file_listing(home) == checkpoint_before  # read, not retrained or renamed
    assert _file_listing(venv) == venv_before, "the installed demo wrote into its installation"
    _checkout_untouched(checkout_before)
