"""The comparison runner on a tiny model and data: the tidy table, and resumability."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

import fcpts.registry as registry
import fcpts.runner as runner
from fcpts import table as runner_table
from conftest import make_model
from fcpts import Config
from fcpts.data import DataBundle
from fcpts.pot import PotConfig
from fcpts.prune_train import PruneTrainConfig


def toy_bundle():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)
    return DataBundle(calib=TensorDataset(x[:24]), test=TensorDataset(x[24:], y[24:]), num_classes=10, name="toy")


def toy_train():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))


def run(tmp_path, **kw):
    args = dict(
        config=Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64),
        methods=("uniform", "global", "erk", "lamp", "pot"), targets=(0.5, 0.9), seeds=(0,),
        out_csv=tmp_path / "table.csv", model=make_model("cnn"), data=toy_bundle(), train_data=toy_train(),
        finetune=PruneTrainConfig(steps=3, batch_size=8, progress=False),
        pot_config=PotConfig(iterations_per_layer=2, samples=16, progress=False), progress=False)
    args.update(kw)
    return runner.run_comparison(**args)


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


@pytest.fixture
def counted(monkeypatch):
    counters = {name: Counter(getattr(registry, name)) for name in ("prune_baseline", "learn_allocation", "prune_train")}
    for name, counter in counters.items():
        monkeypatch.setattr(registry, name, counter)
    counters["sparsify"] = counters["learn_allocation"]  # FCPTS and every learner run through the one loop
    return counters


def test_tidy_table_and_resume(tmp_path, counted):
    table = run(tmp_path, targets=(0.5,))
    # dense + 1 target x (5 allocations x 3 tiers + fcpts + 4 schedules)
    assert len(table) == 1 + 15 + 1 + 4
    assert tuple(table.columns) == runner_table.COLUMNS
    assert {"method", "tier", "schedule", "target", "achieved_sparsity", "top1", "top5", "wall_time", "seed",
            "steps"} <= set(table.columns)
    # POT's tier b reuses its tier a model (only BN is re-estimated): 5 x 3 - 1 calls
    assert counted["prune_baseline"].calls == 14 and counted["sparsify"].calls == 1
    assert counted["prune_train"].calls == 4

    on_disk = runner_table.read_table(tmp_path / "table.csv")
    assert len(on_disk) == len(table)
    assert json.loads((tmp_path / "table.json").read_text())[0]["method"] == "dense"
    rows = on_disk.set_index(["method", "tier", "schedule", "target"])
    assert rows.loc[("dense", "-", "-", 0.0), "achieved_sparsity"] == 0.0
    pruned = on_disk[on_disk.method != "dense"]
    assert (pruned.achieved_sparsity - pruned.target).abs().max() < 1e-3  # exact up to one weight in ~10k
    assert set(pruned.schedule) == {"-", "one_shot", "iterative", "agp", "one_cycle"}
    assert set(on_disk.tier) == {"-", "a", "b", "c", "finetune"}
    assert on_disk.loc[on_disk.method == "fcpts", "steps"].eq(2).all()
    assert on_disk.loc[(on_disk.method == "erk") & (on_disk.tier != "c"), "steps"].eq(0).all()
    assert on_disk.loc[on_disk.tier == "finetune", "steps"].eq(3).all()
    assert on_disk.top1.between(0, 1).all() and (on_disk.wall_time >= 0).all()
    assert on_disk.config_hash.nunique() == 4  # base, loop (tier c, FCPTS), POT a/b, schedules

    # the same call again: nothing is recomputed, the table is unchanged
    again = run(tmp_path, targets=(0.5,))
    assert counted["prune_baseline"].calls == 14 and counted["sparsify"].calls == 1
    assert counted["prune_train"].calls == 4
    pd.testing.assert_frame_equal(runner_table.read_table(tmp_path / "table.csv"), on_disk)
    assert len(again) == len(table)


def test_resume_after_interruption_and_changed_settings(tmp_path, counted):
    run(tmp_path, methods=("erk",), tiers=("a", "b"), schedules=("agp",), targets=(0.5,))
    table = runner_table.read_table(tmp_path / "table.csv")
    assert len(table) == 1 + 2 + 1 + 1
    # drop one row, as if the sweep had stopped before it: only that row is recomputed
    table[table.tier != "b"].to_csv(tmp_path / "table.csv", index=False)
    calls = counted["prune_baseline"].calls
    run(tmp_path, methods=("erk",), tiers=("a", "b"), schedules=("agp",), targets=(0.5,))
    assert counted["prune_baseline"].calls == calls + 1
    # a changed schedule budget changes only the schedule rows' hash
    train_calls, base_calls = counted["prune_train"].calls, counted["prune_baseline"].calls
    run(tmp_path, methods=("erk",), tiers=("a", "b"), schedules=("agp",), targets=(0.5,),
        finetune=PruneTrainConfig(steps=4, batch_size=8, progress=False))
    assert counted["prune_train"].calls == train_calls + 1 and counted["prune_baseline"].calls == base_calls
    assert len(runner_table.read_table(tmp_path / "table.csv")) == 6


def test_cli_parses_and_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        run(tmp_path, schedules=("linear",))
    with pytest.raises(ValueError):
        run(tmp_path, targets=(1.2,))
    with pytest.raises(SystemExit):
        runner.main(["--help"])


def test_cli_dataset_and_recipe_choose_the_embedded_config_and_the_default_table(monkeypatch):
    """--dataset/--recipe build Config.quick_cpu(dataset=...).with_recipe(...); without --out the table is
    data/comparison_<dataset>.csv under the current folder."""
    calls = []
    monkeypatch.setattr(runner, "run_comparison", lambda config, *a, **kw: calls.append((config, a[3])) or pd.DataFrame())
    assert runner.main(["--dataset", "fashion-mnist", "--recipe", "kit", "--steps", "7"]) == 0
    assert calls[-1] == (Config.quick_cpu(dataset="fashion-mnist", steps=7).with_recipe("kit"),
                         "data/comparison_fashion-mnist.csv")
    assert calls[-1][0].select_holdout == 64
    assert runner.main(["--recipe", "released"]) == 0
    assert calls[-1] == (Config.quick_cpu(), "data/comparison_digits.csv")
    with pytest.raises(SystemExit):  # a dataset is either the embedded default's or the config file's
        runner.main(["--dataset", "fashion-mnist", "--config", "params/quick.yaml"])
    with pytest.raises(SystemExit):
        runner.main(["--dataset", "imagenet"])
    with pytest.raises(SystemExit):
        runner.main(["--merge", "a.csv"])


def test_pot_tier_b_from_the_memo_equals_a_fresh_run(tmp_path):
    from fcpts.baselines import prune_baseline

    table = run(tmp_path, methods=("pot",), tiers=("a", "b"), schedules=(), fcpts=False, dense=False, targets=(0.8,))
    cfg = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    fresh, info = prune_baseline(make_model("cnn"), toy_bundle().calib, 0.8, "pot", "b", cfg,
                                 PotConfig(iterations_per_layer=2, samples=16, progress=False))
    from fcpts.evaluate import evaluate

    top1 = evaluate(fresh, toy_bundle().test, progress=False)["top1"]
    assert table.loc[table.tier == "b", "top1"].item() == top1


def test_a_sweep_split_over_processes_merges_into_one_table(tmp_path, counted):
    """Two runner calls on disjoint parts, merged: the same rows as one call; existing rows are never replaced."""
    kw = dict(methods=("uniform",), tiers=("a", "b"), schedules=(), fcpts=False)
    run(tmp_path, out_csv=tmp_path / "part1.csv", targets=(0.5,), **kw)
    run(tmp_path, out_csv=tmp_path / "part2.csv", targets=(0.9,), dense=False, **kw)
    part1 = runner_table.read_table(tmp_path / "part1.csv")
    merged = runner_table.merge_tables(tmp_path / "part1.csv", [tmp_path / "part2.csv", tmp_path / "part2.csv"])
    assert len(merged) == 1 + 2 + 2 and sorted(merged.target.unique()) == [0.0, 0.5, 0.9]
    pd.testing.assert_frame_equal(merged.iloc[: len(part1)], part1)  # the rows that were there stay as they were
    # merged, nothing is missing: resuming the whole sweep computes nothing
    calls = counted["prune_baseline"].calls
    run(tmp_path, out_csv=tmp_path / "part1.csv", targets=(0.5, 0.9), **kw)
    assert counted["prune_baseline"].calls == calls
    with pytest.raises(SystemExit):
        runner.main(["--out", str(tmp_path / "part1.csv"), "--merge", str(tmp_path / "missing.csv")])


def test_a_filtered_merge_copies_only_the_rows_it_accepts_with_their_outcomes(tmp_path, counted):
    kw = dict(methods=("uniform",), tiers=("a", "b"), schedules=(), fcpts=False)
    run(tmp_path, out_csv=tmp_path / "source.csv", targets=(0.5, 0.9), **kw)
    merged = runner_table.merge_tables(tmp_path / "mine.csv", [tmp_path / "source.csv"],
                                 where=lambda r: r["tier"] == "b" and r["target"] == 0.9)
    assert len(merged) == 1 and merged.iloc[0].tier == "b" and merged.iloc[0].target == 0.9
    outcomes = runner_table.read_side(tmp_path / "mine.csv", "outcomes")
    assert len(outcomes) == 1 and outcomes.iloc[0].tier == "b"
    source = runner_table.read_table(tmp_path / "source.csv")
    row = source[(source.tier == "b") & (source.target == 0.9)]
    assert (runner_table.outcome_matrix(tmp_path / "mine.csv", merged) == runner_table.outcome_matrix(tmp_path / "source.csv", row)).all()


def test_registry_names_every_method_once_with_one_calling_convention():
    assert registry.names(family="learner", role="competitor", default=True) == ["str", "probmask", "dsa"]
    assert registry.names(family="learner", role="competitor")[3:] == ["str-adapted", "probmask-adapted", "dsa-adapted"]
    assert {"dense", "uniform", "global", "erk", "lamp", "pot", "fcpts", "prune_train-uniform"} <= set(registry.METHODS)
    for name, method in registry.METHODS.items():
        assert method.name == name and method.family in registry.FAMILY_PHASE and method.description
        assert callable(method.run)
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.METHODS["str"])
    with pytest.raises(ValueError, match="unknown method"):
        run(Path("/nonexistent"), methods=("magic",))


def test_learner_rows_with_trajectories_and_allocations_and_a_merge(tmp_path, counted):
    kw = dict(methods=("str", "probmask", "dsa"), schedules=(), fcpts=True, dense=False, targets=(0.8,))
    table = run(tmp_path, out_csv=tmp_path / "l1.csv", **kw)
    assert sorted(table.method) == ["dsa", "fcpts", "probmask", "str"] and set(table.tier) == {"c"}
    assert counted["learn_allocation"].calls == 4
    assert (table.zeros == (0.8 * table.total).round()).all()
    assert table.sparsity_before_projection.between(0, 1).all()
    assert table.config_hash.nunique() == 4  # each learner's options are part of its fingerprint
    traj = runner_table.read_side(tmp_path / "l1.csv", "trajectories")
    alloc = runner_table.read_side(tmp_path / "l1.csv", "allocations")
    assert set(traj.method) == set(table.method) and traj.groupby("method").size().eq(2).all()  # 2 steps each
    assert set(alloc.layer) == {"features.0", "features.3", "features.6", "fc"}
    # resume: nothing recomputed; changed learner options: only that learner's row is new
    run(tmp_path, out_csv=tmp_path / "l1.csv", **kw)
    assert counted["learn_allocation"].calls == 4
    from fcpts.learners import StrConfig

    run(tmp_path, out_csv=tmp_path / "l1.csv", learner_options={"str": StrConfig(export="masked")}, **kw)
    assert counted["learn_allocation"].calls == 5
    # a second part, merged: the side tables follow their rows
    run(tmp_path, out_csv=tmp_path / "l2.csv", **{**kw, "targets": (0.6,), "methods": ("str",), "fcpts": False})
    merged = runner_table.merge_tables(tmp_path / "l1.csv", [tmp_path / "l2.csv"])
    assert len(merged) == 6
    traj = runner_table.read_side(tmp_path / "l1.csv", "trajectories")
    assert sorted(traj.target.unique()) == [0.6, 0.8] and len(traj) == 2 * 6


def test_sharded_tables_merged_equal_the_unsharded_table(tmp_path):
    kw = dict(methods=("uniform", "erk", "str"), tiers=("a", "b"), schedules=("agp",), targets=(0.5, 0.8))
    whole = run(tmp_path, out_csv=tmp_path / "whole.csv", **kw)
    parts = [run(tmp_path, out_csv=tmp_path / f"part{i}.csv", shard=(i, 3), **kw) for i in range(3)]
    assert sum(len(p) for p in parts) == len(whole) and all(len(p) for p in parts)
    merged = runner_table.merge_tables(tmp_path / "part0.csv", [tmp_path / "part1.csv", tmp_path / "part2.csv"])
    value_columns = ["achieved_sparsity", "top1", "top5", "zeros", "total", "sparsity_before_projection"]
    key = list(runner_table.KEY)
    a = whole.set_index(key).sort_index()[value_columns]
    b = merged.set_index(key).sort_index()[value_columns]
    pd.testing.assert_frame_equal(a, b)
    traj = runner_table.read_side(tmp_path / "part0.csv", "trajectories")
    assert len(traj) == len(runner_table.read_side(tmp_path / "whole.csv", "trajectories"))
    with pytest.raises(ValueError, match="shard"):
        run(tmp_path, out_csv=tmp_path / "bad.csv", shard=(3, 3), **kw)
    with pytest.raises(SystemExit):
        runner.main(["--out", str(tmp_path / "x.csv"), "--shard", "2"])


def test_dynamic_sparse_training_rows_with_coverage(tmp_path):
    """DST-EE and RigL rows: no schedule, both starts, the schedule rows' training settings, coverage saved."""
    kw = dict(methods=("dst-ee", "rigl"), schedules=(), starts=("dense", "scratch"), fcpts=False, dense=False,
              targets=(0.7,), finetune=PruneTrainConfig(steps=12, batch_size=8, progress=False),
              scratch_model=lambda seed: make_model("cnn"))
    table = run(tmp_path, out_csv=tmp_path / "dst_toy.csv", **kw)
    assert sorted(zip(table.method, table.tier)) == [("dst-ee", "finetune"), ("dst-ee", "scratch"),
                                                      ("rigl", "finetune"), ("rigl", "scratch")]
    assert set(table.schedule) == {"-"} and (table.steps == 12).all()
    assert (table.zeros >= (0.7 * table.total).round()).all()  # grown weights with a zero gradient stay 0
    assert (table.achieved_sparsity < 0.71).all()
    assert table.config_hash.nunique() == 2  # c is part of the fingerprint; the start is a row key
    coverage = runner_table.read_side(tmp_path / "dst_toy.csv", "coverage")
    assert set(coverage.method) == {"dst-ee", "rigl"} and coverage["update"].max() >= 5
    final = coverage.sort_values("update").groupby(["method", "tier"]).coverage.last()
    assert (final > 0.3).all() and final["dst-ee", "finetune"] >= final["rigl", "finetune"]
    # the comparison notebooks' summary and the two figures, drawn from the table files alone
    from fcpts import notebook as nb

    found = nb.read_dst(str(tmp_path), "toy")
    summary = nb.training_summary(*found[:2], outcomes_from=found[2])
    assert list(summary.method) == ["dst-ee", "dst-ee", "rigl", "rigl"] and summary.coverage.notna().all()
    assert ((summary.low <= summary["mean"]) & (summary["mean"] <= summary.high)).all()
    verdicts = nb.paired_verdicts(found[0], found[2], [(("dst-ee", "finetune"), ("rigl", "finetune")),
                                                       (("dst-ee", "scratch"), ("one_cycle", "scratch"))], (0.7,))
    assert len(verdicts) == 1 and verdicts[0].startswith("70%, 1 seed(s): ") and "DST-EE (from dense)" in verdicts[0]
    for kind in ("dst_coverage", "dst_accuracy"):
        assert len(nb.draw(kind, "toy", str(tmp_path), str(tmp_path / "figures"), dataset="toy", target=0.7)) == 2
    with pytest.raises(ValueError, match="c = 0"):
        from fcpts.dst import DstConfig

        run(tmp_path, out_csv=tmp_path / "bad.csv", **{**kw, "methods": ("rigl",)},
            learner_options={"rigl": DstConfig(c=0.5)})


def test_every_row_keeps_its_per_image_outcomes(tmp_path):
    """The outcomes side table round-trips: each row's bits average to its top-1, in the test split's order,
    and they follow their rows through a merge."""
    from fcpts.evaluate import evaluate
    from fcpts.stats import paired_difference

    kw = dict(methods=("uniform", "erk"), tiers=("b",), schedules=(), fcpts=False, targets=(0.5,))
    table = run(tmp_path, out_csv=tmp_path / "o1.csv", **kw)
    matrix = runner_table.outcome_matrix(tmp_path / "o1.csv", table)
    assert matrix.shape == (3, 16) and matrix.dtype == bool
    assert np.allclose(matrix.mean(axis=1), table.top1)
    dense = evaluate(make_model("cnn"), toy_bundle().test, progress=False, per_image=True)["correct"]
    assert np.array_equal(matrix[list(table.method).index("dense")], dense.numpy())
    d = paired_difference(matrix[[1]], matrix[[2]])
    assert d.estimate == pytest.approx(table.top1.iloc[1] - table.top1.iloc[2])
    run(tmp_path, out_csv=tmp_path / "o2.csv", **{**kw, "targets": (0.9,), "dense": False})
    merged = runner_table.merge_tables(tmp_path / "o1.csv", [tmp_path / "o2.csv"])
    assert runner_table.outcome_matrix(tmp_path / "o1.csv", merged).shape == (5, 16)
    with pytest.raises(KeyError, match="no per-image outcomes"):
        runner_table.outcome_matrix(tmp_path / "o1.csv", merged.assign(config_hash="stale"))


def test_comparison_rows_get_intervals_and_the_figures_draw_them(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from fcpts import notebook as nb
    from fcpts.plotting import plot_accuracy_vs_sparsity

    kw = dict(methods=("uniform",), tiers=("b",), schedules=(), fcpts=False, targets=(0.5, 0.9))
    table = run(tmp_path, out_csv=tmp_path / "comparison_toy.csv", **kw)
    older = table.assign(config_hash="older")  # a row computed before outcomes were kept
    shown = nb.with_intervals(pd.concat([table, older.iloc[[1]]], ignore_index=True), tmp_path / "comparison_toy.csv")
    kept = shown.iloc[: len(table)]
    assert ((kept.low <= kept.top1) & (kept.top1 <= kept.high)).all() and shown.low.iloc[-1] != shown.low.iloc[-1]
    fig = plot_accuracy_vs_sparsity(kept, tiers=("b",))
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]  # the intervals, as error bars
    spans = sorted((float(seg[:, 1].min()), float(seg[:, 1].max())) for seg in bars.lines[2][0].get_segments())
    drawn = kept[kept.tier == "b"]
    expected = sorted((max(100 - 100 * hi, 0.1), max(100 - 100 * lo, 0.1)) for lo, hi in zip(drawn.low, drawn.high))
    # test error, 100 − top-1: the interval's high end is the low error
    assert [x for span in spans for x in span] == pytest.approx([x for span in expected for x in span])
    plt.close(fig)


def test_loop_fields_key_only_the_rows_that_run_the_loop(tmp_path):
    """The released schedule/start and the earlier ones give FCPTS and tier c rows different keys, and leave the
    key of every row that does not run the loop alone; the ``loop`` column says which loop a row ran."""
    kw = dict(methods=("uniform",), tiers=("a", "c"), targets=(0.5,), schedules=())
    new = run(tmp_path / "new", **kw)
    old = run(tmp_path / "old", config=Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64,
                                                         lr_schedule="ramp_then_cosine", init_rounding="exact"), **kw)
    by = lambda t: t.set_index(["method", "tier"])
    new, old = by(new), by(old)
    for key in [("dense", "-"), ("uniform", "a")]:
        assert new.loc[key, "config_hash"] == old.loc[key, "config_hash"] and new.loc[key, "loop"] == "-"
    for key in [("uniform", "c"), ("fcpts", "c")]:
        assert new.loc[key, "config_hash"] != old.loc[key, "config_hash"]
        assert new.loc[key, "loop"] == "released/released" and old.loc[key, "loop"] == "ramp_then_cosine/exact"


def test_label_loop_rows_marks_older_rows_and_changes_nothing_else(tmp_path):
    table = run(tmp_path, methods=("uniform",), tiers=("b", "c"), targets=(0.5,), schedules=("one_shot",))
    path = tmp_path / "table.csv"
    before = table.drop(columns=["loop"])
    runner_table.write_table(before, path, path.with_suffix(".json"))  # as a table written before the column existed
    assert runner_table.label_loop_rows(path) == len(table)
    after = runner_table.read_table(path)
    pd.testing.assert_frame_equal(after[before.columns].reset_index(drop=True), before.reset_index(drop=True),
                                  check_dtype=False)
    loops = dict(zip(zip(after.method, after.tier), after.loop))
    assert loops[("uniform", "c")] == loops[("fcpts", "c")] == runner_table.LEGACY_LOOP
    assert loops[("uniform", "b")] == loops[("dense", "-")] == loops[("prune_train-uniform", "finetune")] == "-"
    assert json.loads(path.with_suffix(".json").read_text())[0]["loop"] == "-"
    assert runner_table.label_loop_rows(path) == 0  # labelled rows keep their label


def test_a_notebook_copies_a_committed_table_only_when_it_was_computed_from_this_dense_model(tmp_path, capsys):
    """The dense row's hash fingerprints the dense weights (retrained bit for bit only on one CPU type): a
    notebook's working table starts from the committed one only when that table has this model's dense row."""
    from fcpts.notebook.tables import working_table

    config = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    model = make_model("cnn")
    reference = tmp_path / "data"
    table = run(reference, methods=("uniform",), targets=(0.5,), tiers=("a",), schedules=(), fcpts=False,
                config=config, model=model, out_csv=reference / "comparison_toy.csv")
    ours = runner.dense_row_hash(config, model)
    assert table.loc[table.method == "dense", "config_hash"].tolist() == [ours]

    same = working_table(tmp_path / "same", "toy", reference_dir=str(reference), dense_hash=lambda: ours)
    assert runner_table.read_table(same).equals(runner_table.read_table(reference / "comparison_toy.csv"))

    retrained = make_model("cnn")  # the same model trained on another CPU type: its weights differ in the last bits
    with torch.no_grad():
        next(retrained.parameters()).view(-1)[0] += 1e-6
    other = runner.dense_row_hash(config, retrained)
    assert other != ours
    fresh = working_table(tmp_path / "other", "toy", reference_dir=str(reference), dense_hash=lambda: other)
    assert not fresh.exists() and "another dense model" in capsys.readouterr().out
    assert working_table(tmp_path / "none", "toy", reference_dir=str(reference)).exists()  # no check asked: copied
