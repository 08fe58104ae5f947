"""The set-up contract: environment.yml and pyproject.toml agree, and the pinned torch/torchvision pair works.

If these fail, `make setup` (or `conda env create -f environment.yml`) would give different people different
environments, or a torchvision whose compiled operators do not load (`torchvision::nms`).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]

# Packages that only the conda side names: the interpreter and pip itself (JupyterLab is in the dev extra).
CONDA_ONLY = {"python", "pip"}
PINNED = ("torch", "torchvision")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation: `Jupyter_Client` and `jupyter-client` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(text: str) -> tuple[str, str]:
    """'torch==2.14.1' -> ('torch', '==2.14.1'); conda's 'python=3.11' -> ('python', '=3.11')."""
    match = _NAME.match(text)
    assert match, f"cannot parse requirement {text!r}"
    return normalise(match.group(1)), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return dict(split_requirement(r) for r in reqs)


def environment_requirements() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(conda packages, pip packages, pip editable/local entries) from environment.yml."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda, pip, local = {}, {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for entry in dep["pip"]:
                if entry.startswith("-e") or entry.startswith("."):
                    local.append(entry)
                else:
                    name, spec = split_requirement(entry)
                    pip[name] = spec
        else:
            name, spec = split_requirement(dep)
            conda[name] = spec
    return conda, pip, local


def test_environment_and_pyproject_name_the_same_packages() -> None:
    project = pyproject_requirements()
    conda, pip, local = environment_requirements()
    assert set(pip) == set(project), (
        f"only in environment.yml: {sorted(set(pip) - set(project))}; "
        f"only in pyproject.toml: {sorted(set(project) - set(pip))}"
    )
    assert set(conda) <= CONDA_ONLY, f"conda-side packages not allowed there: {sorted(set(conda) - CONDA_ONLY)}"
    assert not CONDA_ONLY & set(project), "conda-only packages must not be runtime/dev requirements"
    assert conda.get("python", "").startswith("=3.11")
    assert any(entry.replace(" ", "") == "-e.[dev]" for entry in local), "environment.yml must install -e .[dev]"


def test_torch_pins_agree_and_match_the_installed_pair() -> None:
    project = pyproject_requirements()
    _, pip, _ = environment_requirements()
    import torch
    import torchvision

    installed = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for name in PINNED:
        assert project[name].startswith("=="), f"{name} must be pinned exactly in pyproject.toml"
        assert project[name] == pip[name], f"{name}: pyproject {project[name]} vs environment.yml {pip[name]}"
        # Local version labels (+cu130, +cpu) are build variants of the same release.
        assert installed[name].split("+")[0] == project[name][2:], f"installed {name} {installed[name]}"


def test_pyproject_contract() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["project"]["name"] == "fcpts-kit"
    assert data["project"]["scripts"]["fcpts"] == "fcpts.cli:main"
    assert data["tool"]["setuptools"]["packages"] == ["fcpts", "fcpts.notebook"]
    pytest_cfg = data["tool"]["pytest"]["ini_options"]
    assert pytest_cfg["testpaths"] == ["tests"]
    assert any(m.startswith("slow:") for m in pytest_cfg["markers"])


def test_torchvision_operators_and_models_run() -> None:
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    scores = torch.tensor([0.9, 0.8])
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)  # IoU 81/119 = 0.68 -> second box dropped
    assert keep.tolist() == [0]

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_setup_installs_the_notebook_output_filter(tmp_path) -> None:
    """`make setup`'s git-filter step: a notebook run and saved with outputs shows no change in `git status`,
    while the file on disk keeps its outputs."""
    import os
    import shutil
    import subprocess
    import sys

    import nbformat
    from nbformat.v4 import new_output

    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy2(REPO / "Makefile", repo / "Makefile")
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy2(path, repo / "notebooks" / path.name)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                              check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "notebooks as committed")
    env = {k: v for k, v in os.environ.items() if k != "CONDA_PREFIX"}
    env["VIRTUAL_ENV"] = sys.prefix  # the Makefile uses this environment's python (installs nothing: fcpts imports)
    subprocess.run(["make", "-s", "git-filter"], cwd=repo, env=env, check=True)

    path = repo / "notebooks" / "01_theory_bridge_function.ipynb"
    nb = nbformat.read(path, as_version=4)
    for k, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = k + 1
        cell.outputs = [new_output("stream", name="stdout", text=f"ran cell {k}\n")]
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "file_extension": ".py"}
    nbformat.write(nb, path)
    assert "ran cell 0" in path.read_text()
    assert git("diff") == "", "the filter lets outputs through"
    # git takes the new file size for a change without running the filter: JupyterLab's save hook
    # (`make lab`) refreshes the entry, after which the executed notebook is clean for status and pull
    from fcpts.notebook import refresh_git_after_save

    refresh_git_after_save(os_path=str(path))
    assert git("status", "--porcelain") == "", "an executed, saved notebook shows as a change"
    assert git("diff", "--cached") == "" and "ran cell 0" in path.read_text()
    # a real edit stays a change
    nb.cells[0].source += "\n\nA student's note."
    nbformat.write(nb, path)
    refresh_git_after_save(os_path=str(path))
    assert git("status", "--porcelain").split() == ["M", "notebooks/01_theory_bridge_function.ipynb"]
    assert git("diff", "--cached") == "", "the hook staged a real edit"


def test_make_lab_sets_the_save_hook() -> None:
    import subprocess

    dry = subprocess.run(["make", "-n", "lab"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--FileContentsManager.post_save_hook=fcpts.notebook.refresh_git_after_save" in dry
    assert "jupyterlab" in dry and "ipykernel install --user --name fcpts-kit" in dry
