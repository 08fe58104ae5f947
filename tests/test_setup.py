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

# Packages that only the conda side names: the interpreter, pip itself and the notebook front end.
CONDA_ONLY = {"python", "pip", "jupyterlab"}
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
    assert data["tool"]["setuptools"]["packages"] == ["fcpts"]
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
