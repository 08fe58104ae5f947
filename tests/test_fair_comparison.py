"""benchmarks/fair_comparison.py (issue #25): its parts are valid sweeps, and its report reads a real runner table."""
import pytest
import torch

from benchmarks import fair_comparison as fc
from conftest import make_model
from fcpts import Config, runner
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


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """A runner table with every kind of row the report names: dense, FCPTS in both recipes, an allocation tier,
    a faithful and an adapted learner, at 80 and 95 %, two seeds, on a small model and random images."""
    path = tmp_path_factory.mktemp("fair") / "table.csv"
    images = torch.randn(160, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    test = torch.utils.data.TensorDataset(torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
                                          torch.arange(40) % 10)
    data = DataBundle(images, test, 10, "noise")
    config = Config.quick_cpu(steps=2, batch_size=16, progress=False, eval_batch_size=40)
    kw = dict(targets=(0.8, 0.95), seeds=(0, 1), model=make_model("cnn"), data=data, schedules=(), progress=False)
    runner.run_comparison(config, ["uniform", "str", "str-adapted"], out_csv=path, tiers=("b",), **kw)
    runner.run_comparison(config.with_recipe("kit"), [], out_csv=path, dense=False, **kw)
    return path


def test_report_sections_read_a_runner_table(small_table):
    table = fc.labelled(small_table)
    assert set(table.label) == {"dense", "FCPTS (released)", "FCPTS (kit)", "uniform, tier b", "STR (faithful)",
                                "STR (adapted)"}
    lines = fc.comparison_section(small_table)
    text = "\n".join(lines)
    assert "| FCPTS (released) | – | – | " in text and "(n=2)" in text
    verdicts = [line for line in lines if line.startswith("| 80% |") or line.startswith("| 95% |")]
    assert len(verdicts) == 4  # the released and the kit recipe, two targets each
    for line in verdicts:  # three other methods at each target, each paired over both seeds
        beats, noise, beaten, missing = (int(cell.split(" (")[0]) for cell in line.strip("|").split("|")[1:])
        assert beats + noise + beaten == 3 and missing == 0
    adapted = "\n".join(fc.adapted_section(small_table))
    assert "| STR | 80% |" in adapted and "threshold_lr_scale=" in adapted
    long95 = fc.long95_section([small_table])
    assert any(line.startswith("| 2 |") for line in long95)  # one row per schedule length (2 steps here)


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
