"""Where the kit keeps things, in one place: the checkout, the dense checkpoints, datasets, results, figures.

The kit runs two ways. From a source checkout (``pip install -e .``, ``make``, the notebooks, CI) it keeps
everything inside the checkout, as before: ``data/checkpoints/``, ``data/``, ``results/``, ``figures/``.
Installed as a package (``pip install .``) the package folder is site-packages, which must never receive
checkpoints or results, so it uses a per-user cache and the current folder instead:

=====================  ===============================  ==========================================
what                   in a checkout                    installed
=====================  ===============================  ==========================================
dense checkpoints      ``<checkout>/data/checkpoints``  ``<home>/checkpoints``
datasets (data root)   ``<checkout>/data``              ``<home>/data``
default results        ``<checkout>/results``           ``./results``
default figures        ``<checkout>/figures``           ``./figures``
=====================  ===============================  ==========================================

``<home>`` is ``$FCPTS_HOME``, else ``$XDG_CACHE_HOME/fcpts``, else ``~/.cache/fcpts`` (torch's TORCH_HOME rule).
``FCPTS_HOME``, when set, also moves the checkpoints and datasets of a checkout. Every function reads the
environment when called, so a test or a notebook can set it at any time. A path a user types on the command line
(``--out``, ``--data``) is relative to the current folder, as for any command-line tool; only defaults live here.
"""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "FCPTS_HOME"
PUBLISHED_NUMBERS = "data/published_numbers.csv"  # in a checkout: numbers printed in cited sources (fcpts.plotting)
PACKAGE_DIR = Path(__file__).resolve().parent  # the fcpts package folder (a test may point it elsewhere)
REPO_ROOT = PACKAGE_DIR.parent  # the checkout when run from one; installed: site-packages (prefer checkout())


def checkout(package_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The source checkout the package runs from (the folder holding ``pyproject.toml`` and ``fcpts/``), or
    None when it is installed (site-packages has no ``pyproject.toml`` next to the package)."""
    package = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    root = package.parent
    return root if (root / "pyproject.toml").is_file() and (root / "fcpts").is_dir() else None


def home() -> Path:
    """The kit's own folder outside a checkout: ``$FCPTS_HOME``, else ``$XDG_CACHE_HOME/fcpts``, else
    ``~/.cache/fcpts``."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache).expanduser() if cache else Path.home() / ".cache").absolute() / "fcpts"


def _kit_folder(in_checkout: str, in_home: str) -> Path:
    """``<checkout>/<in_checkout>`` in a checkout without FCPTS_HOME, else ``home()/<in_home>``."""
    root = checkout()
    if root is None or os.environ.get(HOME_ENV, "").strip():
        return home() / in_home
    return root / in_checkout


def checkpoint_dir() -> Path:
    """Where the embedded dense checkpoints are read and cached (``fcpts.models.load_embedded_model``)."""
    return _kit_folder("data/checkpoints", "checkpoints")


def data_root() -> Path:
    """The default dataset root (CIFAR downloads; ImageNet under ``imagenet/`` unless $IMAGENET_ROOT is set)."""
    return _kit_folder("data", "data")


def results_dir() -> Path:
    """The default results folder of ``fcpts run`` and ``fcpts demo`` (when no ``--out`` is given)."""
    root = checkout()
    return root / "results" if root else Path.cwd() / "results"


def figures_dir() -> Path:
    """The default figures folder of ``fcpts.plotting.save_figure``."""
    root = checkout()
    return root / "figures" if root else Path.cwd() / "figures"


def user_path(path: str | os.PathLike[str]) -> Path:
    """A path the user typed, as every command-line tool reads it: ``~`` expanded, relative to the current
    folder (made absolute so that messages and saved configs name the real place)."""
    return Path(path).expanduser().absolute()
