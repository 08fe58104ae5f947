"""benchmarks/fair_comparison.py (issue #25): its parts are valid sweeps, and its report reads a real runner table."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks import fair_comparison as fc
from conftest import make_model
from fcpts import Config, runner
from fcpts import notebook as nb
from fcpts.stats import bootstrap_interval
from fcpts.data import DataBundle
from fcpts.registry import METHODS
from fcpts.table import merge_tables, outcome_matrix, read_table


def test_every_part_names_registered_methods_and_its_own_shard_files():
    for name, part in fc.PARTS.items():
        assert part.sweeps and part.table.endswith(".csv")
        for sweep in part.sweeps:
            assert all(m in METHODS for m in sweep.methods)
            assert sweep.config().steps == sweep.steps and sweep.config().dataset == sweep.dataset
        assert fc.shard_path(name, 1).parent == fc.SWEEPS
    assert len({fc.shard_path(name, 0) for name in fc.PARTS}) == len(fc.PARTS)
    kit = fc.PARTS["fashion-kit"].sweeps[0].config()
    assert kit.select_holdout == 64 and fc.PARTS["fashion"].sweeps[0].config().select_holdout == 0


def test_steps_picks_the_sweeps_of_a_part_and_an_absent_length_says_which_exist(monkeypatch):
    ran = []
    monkeypatch.setattr(fc.runner, "run_comparison", lambda config, *a, **kw: ran.append(config.steps))
    fc.run_part("long95-digits", (0, 1), steps=(600,))
    assert ran == [600, 600]  # STR's sweep and the kit recipe's, nothing of 150 or 1,600 steps
    with pytest.raises(ValueError, match=r"no sweep of \[300\] steps; it has \[150, 600, 1600\]"):
        fc.run_part("long95-digits", (0, 1), steps=(300,))


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """A runner table with every kind of row the report names: dense, FCPTS in both recipes, an allocation tier,
    a faithful and an adapted learner, at 80 and 95 %, two seeds, on a small model and random images."""
    path = tmp_path_factory.mktemp("fair") / "table.csv"
    _tiny_sweep(path, ["uniform", "str", "str-adapted"], tiers=("b",))
    _tiny_sweep(path, [], recipe="kit", dense=False)
    return path


def _tiny_sweep(path, methods, steps: int = 2, recipe: str = "released", targets=(0.8, 0.95), seeds=(0, 1), **kw):
    """``run_comparison`` on a small model and random 8 × 8 images (dataset "noise")."""
    images = torch.randn(160, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    test = torch.utils.data.TensorDataset(torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
                                          torch.arange(40) % 10)
    config = Config.quick_cpu(steps=steps, batch_size=16, progress=False, eval_batch_size=40).with_recipe(recipe)
    runner.run_comparison(config, methods, out_csv=path, targets=targets, seeds=seeds, model=make_model("cnn"),
                          data=DataBundle(images, test, 10, "noise"), schedules=(), progress=False, **kw)


def test_the_95_percent_question_by_schedule_length_as_a_table_and_a_figure(tmp_path):
    for steps in (2, 4):
        _tiny_sweep(tmp_path / "long95_noise.csv", ["str"], steps=steps, targets=(0.95,))
    _tiny_sweep(tmp_path / "comparison_noise.csv", ["str"], steps=2, targets=(0.95,), seeds=(2,))  # a third seed
    tables = nb.long95_tables(tmp_path, "noise")
    assert [Path(t["path"].iloc[0]).name for t in tables] == ["long95_noise.csv", "comparison_noise.csv"]
    rows = nb.schedule_rows(tables, nb.LONG95_LABELS, 0.95)
    assert set(rows["path"].map(lambda p: Path(p).name)) == {"long95_noise.csv"}  # a cell never mixes two tables
    assert set(rows["seed"]) == {0, 1}
    tables[0] = tables[0][tables[0]["steps"] == 4]  # without its 2-step rows, those come from the second table
    rows = nb.schedule_rows(tables, nb.LONG95_LABELS, 0.95)
    assert set(rows[rows["steps"] == 2]["seed"]) == {2} and set(rows[rows["steps"] == 4]["seed"]) == {0, 1}
    table = nb.steps_table(nb.long95_tables(tmp_path, "noise"))
    assert list(table.index) == [2, 4] and table["FCPTS (kit)"].eq("–").all()
    assert table["STR (faithful)"].str.endswith("(n=2)").all() and table["FCPTS (released)"].str.endswith("(n=2)").all()
    assert table["FCPTS (released) − STR (faithful)"].str.match(r"^[+-]\d").all()
    paths = nb.draw("schedule_length", "toy", tmp_path, tmp_path / "figures", dataset="noise")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert nb.draw("schedule_length", "toy", tmp_path, tmp_path / "figures", dataset="absent") == []


def test_pooled_tables_and_verdict_counts_of_a_runner_table(small_table):
    table = nb.labelled_rows(small_table)
    assert set(table.label) == {"dense", "FCPTS (released)", "FCPTS (kit)", "uniform, tier b", "STR (faithful)",
                                "STR (adapted)"}
    pooled = nb.pooled_table(table, fc.TARGETS)
    assert list(pooled.index[:2]) == ["FCPTS (kit)", "FCPTS (released)"] and "dense" not in pooled.index
    assert pooled.loc["STR (faithful)", "50%"] == "–" and pooled.loc["STR (faithful)", "80%"].endswith("(n=2)")
    rows = table[(table.label == "STR (adapted)") & (table.target == 0.8)]
    expected = bootstrap_interval(outcome_matrix(small_table, rows.sort_values("seed"))).points()
    assert pooled.loc["STR (adapted)", "80%"] == f"{expected} (n=2)"
    counts = nb.verdict_counts(table, "FCPTS (released)", (0.5, 0.8, 0.95))
    assert (counts.loc["50%", "not yet run"] == 3) and counts.loc["50%", ["beats", "within noise", "beaten by"]].sum() == 0
    for t in ("80%", "95%"):  # three other methods, each paired over both seeds
        assert counts.loc[t, ["beats", "within noise", "beaten by"]].sum() == 3 and counts.loc[t, "not yet run"] == 0
    skipped = nb.verdict_counts(table, "FCPTS (kit)", (0.8,), skip=lambda label, t: label.endswith("(adapted)"))
    assert skipped.loc["80%", ["beats", "within noise", "beaten by", "not yet run"]].sum() == 2


def test_report_sections_render_the_tables(small_table):
    text = "\n".join(fc.comparison_section(small_table))
    assert "| FCPTS (released) | – | – | " in text
    assert text.count("\n| 80% |") == 2  # a verdict row for each recipe (the pooled table has 80% as a column)
    adapted = "\n".join(fc.adapted_section(small_table))
    assert "| STR | 80% |" in adapted and "threshold_lr_scale=" in adapted
    long95 = fc.long95_section([small_table])
    body = [line.split("|")[1:-1] for line in long95 if line.startswith("| ") and "steps" not in line]
    assert [cells[0].strip() for cells in body] == ["2"]  # one row per schedule length of FCPTS and STR
    assert "(n=2)" in body[0][1] and "(n=2)" in body[0][3]  # FCPTS (released), STR (faithful): both seeds


def test_merge_joins_the_shards_of_a_table_with_their_outcomes(tmp_path, monkeypatch, small_table):
    monkeypatch.setattr(fc, "SWEEPS", tmp_path / "sweeps")
    monkeypatch.setattr(fc, "ROOT", tmp_path)
    (tmp_path / "data").mkdir()
    table = read_table(small_table)
    for i in range(2):  # two shards, each with its side tables, as the runner writes them
        merge_tables(fc.shard_path("adapted", i), [small_table], where=lambda r, i=i: int(r["seed"]) == i)
    assert fc.merge(("adapted",)) == {"learners_digits.csv": len(table)}
    merged = read_table(tmp_path / "data" / "learners_digits.csv")
    assert (outcome_matrix(tmp_path / "data" / "learners_digits.csv", merged)
            == outcome_matrix(small_table, merged)).all()


def test_paired_table_gives_each_difference_on_the_shared_seeds(small_table):
    table = nb.labelled_rows(small_table)
    pairs = [("FCPTS (kit)", "FCPTS (released)"), ("STR (adapted)", "STR (faithful)")]
    out = nb.paired_table(table, pairs, (0.5, 0.8))
    assert list(out.index) == ["FCPTS (kit) − FCPTS (released)", "STR (adapted) − STR (faithful)"]
    assert (out["50%"] == "–").all()  # nothing ran at 50 %
    at = table[table.target == 0.8]
    d = nb.pooled_difference(at[at.label == "STR (adapted)"], at[at.label == "STR (faithful)"])
    assert out.loc["STR (adapted) − STR (faithful)", "80%"] == f"{d.signed()} (n=2)"
    back = nb.paired_table(table, [pairs[1][::-1]], (0.8,)).iloc[0, 0]
    assert float(back.split()[0]) == -float(out.iloc[1, 1].split()[0])  # b − a is −(a − b)


def test_the_dense_model_scored_under_two_settings_is_one_row(small_table, tmp_path):
    table = pd.read_csv(small_table)
    dense = table[table.method == "dense"]
    again = dense.assign(config_hash="0123456789ab", steps=600)  # the same dense model, logged by a longer sweep
    pd.concat([table, again]).to_csv(tmp_path / "t.csv", index=False)
    rows = nb.labelled_rows(tmp_path / "t.csv")
    assert (rows.label == "dense").sum() == len(dense)
    clash = dense.assign(config_hash="0123456789ab", top1=dense.top1 - 0.1)  # another dense model: an error
    pd.concat([table, clash]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="share a cell"):
        nb.labelled_rows(tmp_path / "t.csv")
