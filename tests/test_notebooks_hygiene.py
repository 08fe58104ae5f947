"""The tutorial notebooks are stored clean and parameterised the same way.

* no outputs, execution counts or papermill metadata in a stored notebook (execute into build/, never in place);
* exactly one cell tagged `parameters`, the first code cell, made only of `name: type = value  # help` lines
  with a literal value of that type and no other `=` (papermill skips such lines and then warns about an
  unknown parameter), so `papermill --help-notebook` lists every parameter with its type and help;
* the shared block (fcpts.notebook.SHARED_PARAMETERS: mode, data_root, target, seed) is declared identically by
  every notebook; `mode` names a settings file params/<mode>.yaml, and every such file sets only settings that
  quick.yaml (the default) has, with values of the same type;
* params/full.yaml is the paper's recipe; every notebook has a summary cell that nbval checks.
"""
from __future__ import annotations

import ast
import re
from itertools import zip_longest
from pathlib import Path

import nbformat
import pytest
import yaml

from fcpts.notebook import SHARED_PARAMETERS, mode_settings
from fcpts.notebook.session import NOT_MODES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAM_FILES = sorted(p for p in (REPO / "params").glob("*.yaml") if p.stem not in NOT_MODES)  # the notebook modes
EXPECTED = ["01_theory_bridge_function", "02_resnet50_allocation", "03_allocations_and_schedules",
            "04_why_controllable", "05_paper_figures"]
LINE = re.compile(r"^(?P<name>[A-Za-z_]\w*): (?P<type>str|int|float|bool|list|dict) = (?P<value>[^#]+?)  # (?P<help>\S.*)$")
TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


def load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def parameter_cells(nb) -> list:
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def declared(path: Path) -> dict[str, tuple[str, object]]:
    """{name: (type name, default value)} of a notebook's parameters cell."""
    (cell,) = parameter_cells(load(path))
    out = {}
    for line in cell.source.splitlines():
        match = LINE.match(line)
        assert match, f"{path.name}: parameters line {line!r} is not `name: type = value  # help`"
        out[match["name"]] = (match["type"], ast.literal_eval(match["value"]))
    return out


def is_type(value: object, type_name: str) -> bool:
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, TYPES[type_name])


def test_the_five_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


# ---- jupytext pairs: NN_name.py (percent format, the file people edit) <-> NN_name.ipynb (stripped) ----
def pair_differences(text_nb, ipynb) -> list[str]:
    """What differs between a text source and its .ipynb: cell types, sources and tags, in order."""
    def cells(nb):
        return [(c.cell_type, c.source.strip(), sorted(c.get("metadata", {}).get("tags", []))) for c in nb.cells]

    def first_difference(x, y) -> str:
        if x[0] != y[0] or x[2] != y[2]:
            return f".py: {x[0]} cell, tags {x[2]}; .ipynb: {y[0]} cell, tags {y[2]}"
        lines = list(zip_longest(x[1].splitlines(), y[1].splitlines(), fillvalue="<no line>"))
        k, (p, q) = next((k, pq) for k, pq in enumerate(lines) if pq[0] != pq[1])
        return f"line {k + 1}: .py {p!r} / .ipynb {q!r}"

    a, b = cells(text_nb), cells(ipynb)
    out = [f"cell {i}, {first_difference(x, y)}" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(a) != len(b):
        out.append(f".py has {len(a)} cells, .ipynb has {len(b)}")
    return out


def test_every_notebook_has_its_text_source():
    texts = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in texts] == EXPECTED
    config = (REPO / "notebooks" / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in config


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync(path):
    import jupytext

    differences = pair_differences(jupytext.read(path.with_suffix(".py")), load(path))
    assert not differences, (f"{path.name} and {path.with_suffix('.py').name} differ (edit the .py, then run "
                             "`make sync`):\n" + "\n".join(differences[:5]))


def test_sync_check_catches_an_edited_ipynb():
    import jupytext

    path = NOTEBOOKS[0]
    edited = load(path)
    code = next(c for c in edited.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    code.source += "\nprint('edited in the .ipynb only')"
    assert pair_differences(jupytext.read(path.with_suffix(".py")), edited)


def nbstripout_extra_keys() -> str:
    """The metadata keys the git filter strips besides outputs: the Makefile's NBSTRIPOUT_EXTRA_KEYS."""
    return re.search(r"^NBSTRIPOUT_EXTRA_KEYS := (.+)$", (REPO / "Makefile").read_text(), re.M).group(1).strip()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_as_nbstripout_leaves_it(path):
    """The committed form is nbstripout's own, so the git filter `make setup` installs never shows a change."""
    import subprocess
    import sys

    check = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", "--extra-keys", nbstripout_extra_keys(),
                            str(path)], capture_output=True, text=True)
    assert check.returncode == 0, f"{path.name}: not in stripped form; run `make sync`\n{check.stdout}{check.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_or_papermill_metadata(path):
    nb = load(path)
    nbformat.validate(nb)
    assert "papermill" not in nb.metadata, f"{path.name}: papermill metadata; store the source, not an executed copy"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        where = f"{path.name} cell {i}"
        assert "papermill" not in cell.get("metadata", {}), f"{where}: papermill metadata"
        assert "execution" not in cell.get("metadata", {}), f"{where}: execution timing metadata"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where}: stored with outputs (clear them before committing)"
            assert cell.execution_count is None, f"{where}: stored with an execution count"
        tags = cell.get("metadata", {}).get("tags", [])
        assert "injected-parameters" not in tags, f"{where}: a papermill injected-parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_first_and_well_formed(path):
    nb = load(path)
    cells = parameter_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged `parameters`, need exactly one"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is cells[0], f"{path.name}: the parameters cell must be the first code cell"
    params = declared(path)  # asserts the line format
    for name, (type_name, value) in params.items():
        assert is_type(value, type_name), f"{path.name}: {name} = {value!r} is not a {type_name}"
    for line in cells[0].source.splitlines():
        assert line.count("=") == 1, f"{path.name}: papermill cannot parse a line with two '=': {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_lists_every_parameter_with_type_and_help(path):
    papermill = pytest.importorskip("papermill")
    inferred = papermill.inspect_notebook(str(path))
    assert set(inferred) == set(declared(path))
    for name, info in inferred.items():
        assert info["inferred_type_name"] in TYPES and info["help"], f"{path.name}: {name} lacks a type or help"


def test_shared_block_is_identical_everywhere():
    blocks = {p.stem: {k: v for k, v in declared(p).items() if k in SHARED_PARAMETERS} for p in NOTEBOOKS}
    for stem, block in blocks.items():
        assert list(block) == list(SHARED_PARAMETERS), f"{stem}: shared parameters missing or out of order"
    first = next(iter(blocks.values()))
    assert all(block == first for block in blocks.values()), "the shared parameters differ between notebooks"


@pytest.mark.parametrize("params_file", PARAM_FILES, ids=lambda p: p.name)
def test_every_mode_sets_only_settings_quick_has(params_file):
    quick = yaml.safe_load((REPO / "params" / "quick.yaml").read_text())
    values = yaml.safe_load(params_file.read_text())
    unknown = set(values) - set(quick) - {"extends"}
    assert not unknown, f"{params_file.name}: {sorted(unknown)} are not settings of params/quick.yaml"
    for name, value in mode_settings(params_file.stem).items():
        expected = type(quick[name]).__name__
        assert is_type(value, expected), f"{params_file.name}: {name} = {value!r} is not a {expected}"


def test_every_notebook_defaults_to_the_quick_mode():
    quick = mode_settings("quick")
    for path in NOTEBOOKS:
        params = declared(path)
        assert params["mode"][1] == "quick", f"{path.name}: the default mode must be quick"
        for name in ("data_root", "target", "seed"):
            assert params[name][1] == quick[name], f"{path.name}: {name} differs from params/quick.yaml"


# What params/refresh.yaml (`make notebooks`, the deliberate refresh) sets apart from the quick mode.
REFRESH_ONLY = dict(results_dir="data", figures_dir="figures", progress=False)


def test_refresh_is_quick_writing_the_committed_folders():
    assert {p.name for p in PARAM_FILES} >= {"ci.yaml", "quick.yaml", "full.yaml", "refresh.yaml"}
    assert mode_settings("refresh") == {**mode_settings("quick"), **REFRESH_ONLY}


def test_default_runs_write_only_to_an_ignored_folder():
    """A student's Run All (the quick mode) must not touch the committed data/ and figures/."""
    import subprocess

    quick = mode_settings("quick")
    assert quick["progress"] is True
    for key in ("results_dir", "figures_dir"):
        probe = Path(quick[key]) / "probe.csv"
        ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO).returncode == 0
        assert ignored or not (REPO / ".git").exists(), f"{key} = {quick[key]!r} is not ignored by git"
        assert not quick[key].startswith(("data", "figures")), f"{key} must not default to a committed folder"


def test_full_is_the_papers_recipe():
    full = yaml.safe_load((REPO / "params" / "full.yaml").read_text())
    assert {k: full[k] for k in ("dataset", "model", "weights", "calib_size", "steps", "batch_size", "image_size")} == \
        dict(dataset="imagenet", model="resnet50", weights="IMAGENET1K_V1", calib_size=1024, steps=1600,
             batch_size=64, image_size=224)


def test_ci_writes_outside_the_committed_results():
    ci = mode_settings("ci")
    assert ci["results_dir"].startswith("build/") and ci["figures_dir"].startswith("build/")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_has_a_summary_cell_for_nbval(path):
    tagged = [c for c in load(path).cells if "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    assert tagged, f"{path.name}: no cell tagged nbval-check-output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_set_up_cell_is_nb_setup(path):
    """Every notebook sets up through one call (so the full-mode check below, run on one notebook, holds for all);
    the figure notebook loads no data, so it also runs without ImageNet."""
    nb = load(path)
    setup = [c for c in nb.cells if c.cell_type == "code"][1]
    call = "nb.session(globals())" if path.name.startswith("05") else "nb.setup(globals())"
    assert call in setup.source and len(setup.source.strip().splitlines()) <= 3, setup.source


def test_full_mode_without_imagenet_stops_at_the_first_cell(tmp_path, monkeypatch):
    """Full mode with no ImageNet: papermill stops in the set-up cell with the data loader's message."""
    path = NOTEBOOKS[1]
    import os

    import papermill as pm

    missing = tmp_path / "no-imagenet"
    monkeypatch.setenv("IMAGENET_ROOT", str(missing))  # the kernel inherits it; data_root is "" in full.yaml
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    parameters = dict(mode="full", results_dir=str(tmp_path / "results"), figures_dir=str(tmp_path / "figures"))
    out = tmp_path / path.name
    with pytest.raises(pm.PapermillExecutionError) as failure:
        pm.execute_notebook(str(path), str(out), parameters=parameters, cwd=str(REPO / "notebooks"),
                            progress_bar=False, kernel_name="python3")
    assert failure.value.ename == "FileNotFoundError"
    assert f"dataset root {missing} does not exist" in failure.value.evalue and "IMAGENET_ROOT" in failure.value.evalue
    executed = nbformat.read(out, as_version=4)
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    failed = [i for i, c in enumerate(code_cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    tags = [c.metadata.get("tags", []) for c in code_cells[: failed[0]]]
    # Only the parameters cell and papermill's injected-parameters cell come before the failing cell.
    assert failed and all("parameters" in t or "injected-parameters" in t for t in tags), tags
    assert not (tmp_path / "results").exists() and not (tmp_path / "figures").exists()


def test_a_run_with_the_defaults_leaves_git_status_clean(tmp_path, monkeypatch):
    """Notebook 05 exactly as a student runs it (no parameters): it draws the committed results and writes its
    figures under the ignored results/notebooks/; `git status` is the same before and after."""
    import os
    import subprocess
    import time

    import papermill as pm

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    before, started = status(), time.time()
    pm.execute_notebook(str(REPO / "notebooks" / "05_paper_figures.ipynb"), str(tmp_path / "05.ipynb"),
                        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    figures = REPO / mode_settings("quick")["figures_dir"]
    fresh = [p for p in figures.glob("*.png") if p.stat().st_mtime >= started - 1]
    assert fresh, f"the run drew no figures into {figures}"
    assert status() == before, "running a notebook with its defaults changed the checkout"
