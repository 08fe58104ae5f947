"""`fcpts reproduce`: the paper's grid as a plan, and the whole path (plan, probe, one process per device, shards,
merge, resume, report) end to end on a fabricated 224-px ImageFolder with random-init torchvision models."""
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import fabricate_image
from fcpts.cli import main
from fcpts.reproduce import Grid, format_plan, row_kinds
from fcpts.table import read_table

REPO = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "mobilenet_v2")


def test_the_paper_grid_as_a_plan():
    grid = Grid.from_yaml(REPO / "params" / "paper.yaml")
    counts = {g.name: row_kinds(grid, g) for g in grid.groups()}
    # per model: dense 1; 5 allocations x tiers b, c x 5 sparsities = 50; STR 5; FCPTS 5 (released) + 5 (kit)
    assert {name: sum(c.values()) for name, c in counts.items()} == {
        f"{m}/{r}": (61 if r == "released" else 5) for m in grid.models for r in ("released", "kit")}
    assert counts["resnet50/released"] == {"steps": 35, "bn": 25, "eval": 1}
    text = format_plan(grid, counts, None, "cpu")
    assert "4 models x 5 sparsities" in text and "= 264 runs" in text


@pytest.mark.parametrize("change,message", [({"models": ["resnet51"]}, "unknown model 'resnet51'"),
                                            ({"learners": ["uniform"]}, "is a allocation"),
                                            ({"tiers": ["d"]}, "unknown tier"),
                                            ({"recipes": ["faster"]}, "unknown recipe")])
def test_a_wrong_grid_fails_before_anything_runs(change, message):
    with pytest.raises(ValueError, match=message):
        Grid.from_yaml(REPO / "params" / "paper.yaml", **change)


@pytest.fixture()
def imagenet224(tmp_path: Path) -> Path:
    """train/<wnid>/ (4 images per class) and val/<wnid>/ (3 per class), larger than the 224-px crop."""
    seed = 100
    for wnid in ("n01440764", "n01443537"):
        for i in range(4):
            fabricate_image(tmp_path / "img" / "train" / wnid / f"{wnid}_{i}.JPEG", seed := seed + 1, size=(250, 236))
        for i in range(3):
            fabricate_image(tmp_path / "img" / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", seed := seed + 1,
                            size=(236, 250))
    return tmp_path


def test_reproduce_end_to_end_on_a_fabricated_imagenet(imagenet224, monkeypatch, capsys):
    monkeypatch.chdir(imagenet224)  # --data and --out relative to the current folder
    args = ["reproduce", "--data", "img", "--out", "repro", "--models", *MODELS, "--targets", "0.5", "0.8",
            "--allocations", "uniform", "--tiers", "b", "--learners", "--recipes", "released", "--weights", "none",
            "--set", "steps=2", "--set", "calib_size=4", "--set", "batch_size=2", "--set", "eval_batch_size=6",
            "--set", "num_workers=0", "--set", "device=cpu"]
    # two processes (the command's per-GPU launcher, here on the CPU), each a deterministic part of every table
    assert main([*args, "--gpus", "2", "--probe-steps", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 models x 2 sparsities" in printed and "= 10 runs" in printed and "estimate on CPU" in printed
    out = imagenet224 / "repro"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["estimate"]["total_s"] > 0 and set(plan["estimate"]["per_model_s"]) == set(MODELS)
    tables = {m: read_table(out / m / "released.csv") for m in MODELS}
    for model, table in tables.items():
        assert len(table) == 5 and set(table["method"]) == {"dense", "uniform", "fcpts"}
        assert (table["n_test"] == 6).all() and set(table["model"]) == {model}
        parts = sorted((out / "shards" / model).glob("released.*of2.csv"))
        assert [p.name for p in parts] == ["released.0of2.csv", "released.1of2.csv"]
        assert sum(len(read_table(p)) for p in parts) == 5  # each row computed once, by one of the two
        sparse = table[table["method"] != "dense"]
        assert ((sparse["achieved_sparsity"] - sparse["target"]).abs() < 1e-6).all()
    # the report: a summary with intervals, the figure, the markdown page with the published numbers named
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["label"]) == {"dense", "uniform + BN", "FCPTS (released recipe)"}
    assert ((summary["low"] <= summary["top1"]) & (summary["top1"] <= summary["high"])).all()
    assert (out / "report.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "## resnet18" in report and "## mobilenet_v2" in report and "msbench" in report
    # resumed, with one process this time: nothing is computed again
    finished = {m: list(t["finished_at"]) for m, t in tables.items()}
    assert main([*args, "--gpus", "1", "--no-probe", "--quiet"]) == 0
    assert {m: list(read_table(out / m / "released.csv")["finished_at"]) for m in MODELS} == finished
    assert not (imagenet224.parent / "repro").exists()  # nothing outside the current folder


def test_report_only_without_results_says_what_to_do(tmp_path, capsys):
    code = main(["reproduce", "--out", str(tmp_path / "empty"), "--report-only", "--models", "resnet18"])
    assert code == 2 and "no results" in capsys.readouterr().err


def test_the_report_keeps_only_the_rows_of_the_current_grid_and_its_latest_settings():
    from fcpts.reproduce import current_rows

    grid = Grid.from_yaml(REPO / "params" / "paper.yaml", models=["resnet18"], targets=[0.8], tiers=["b"])
    group = grid.groups()[0]
    rows = [("dense", "-", 0.0, 0, "h0", "1"), ("fcpts", "c", 0.8, 0, "old", "2"), ("fcpts", "c", 0.8, 0, "new", "3"),
            ("uniform", "b", 0.8, 0, "h1", "1"), ("uniform", "c", 0.8, 0, "h2", "1"),  # tier c: not in the grid
            ("uniform", "b", 0.9, 0, "h1", "1"), ("uniform", "b", 0.8, 1, "h1", "1")]  # target, seed: not either
    table = pd.DataFrame(rows, columns=["method", "tier", "target", "seed", "config_hash", "finished_at"])
    kept = current_rows(grid, group, table)
    assert sorted(zip(kept["method"], kept["config_hash"])) == [("dense", "h0"), ("fcpts", "new"), ("uniform", "h1")]


def test_settings_that_belong_to_the_grid_are_refused_in_config():
    assert main(["reproduce", "--plan-only", "--no-probe", "--set", "model=resnet34"]) == 2
