"""One set of numbers: every committed result table rests on one dense model and the current loop, keeps its
per-image outcomes, and gives FCPTS one value per target, seed and recipe wherever it appears."""
import re
from pathlib import Path

import pandas as pd
import pytest

from fcpts.table import outcome_matrix, read_table

REPO = Path(__file__).resolve().parents[1]
RUNNER_TABLES = [REPO / "data" / f"{kind}_digits.csv" for kind in ("comparison", "learners", "dst")]
QUALITY = REPO / "benchmarks" / "results" / "quality_released-histogram.csv"
KEY = ["target", "seed"]


@pytest.fixture(scope="module")
def tables():
    return {path.name: read_table(path) for path in RUNNER_TABLES}


def test_one_dense_model_across_the_committed_tables(tables):
    dense = pd.concat([t[t["method"] == "dense"] for t in tables.values()])
    assert dense["config_hash"].nunique() == 1 and dense["top1"].nunique() == 1, dense[["config_hash", "top1"]]


@pytest.mark.parametrize("path", RUNNER_TABLES, ids=lambda p: p.stem)
def test_every_row_ran_the_current_loop_and_kept_its_outcomes(path, tables):
    table = tables[path.name]
    assert not table["loop"].astype(str).str.startswith("legacy").any(), "rows of the earlier loop are left"
    assert outcome_matrix(path, table).shape == (len(table), int(table["n_test"].iloc[0]))


def test_fcpts_has_one_value_per_target_and_seed_everywhere(tables):
    quality = read_table(QUALITY)
    reference = quality[(quality["method"] == "fcpts") & (quality["loop"] == "released/released")]
    reference = reference.set_index(KEY)["top1"]
    for name, table in tables.items():
        rows = table[table["method"] == "fcpts"].set_index(KEY)["top1"]
        assert len(rows) and (rows == reference.loc[rows.index]).all(), name
    summary = pd.read_csv(REPO / "data" / "fcpts_summary_resnet50_digits.csv")
    released = summary[summary["run"] == "FCPTS-released"].iloc[0]
    assert round(released["top1"], 6) == round(reference.loc[(released["target"], 0)], 6)
    dense = tables["comparison_digits.csv"]
    assert round(summary[summary["run"] == "dense"]["top1"].iloc[0], 6) == \
        round(dense[dense["method"] == "dense"]["top1"].iloc[0], 6)


def test_the_fashion_mnist_table_rests_on_one_dense_model_and_keeps_every_outcome():
    path = REPO / "data" / "comparison_fashion-mnist.csv"
    table = read_table(path)
    dense = table[table["method"] == "dense"]
    assert dense["config_hash"].nunique() == 1 and dense["top1"].nunique() == 1
    assert outcome_matrix(path, table).shape == (len(table), 10_000)
    assert not table.duplicated(["method", "tier", "schedule", "target", "seed", "config_hash"]).any()


def test_the_long_schedule_runs_repeat_the_quality_sweep_at_150_steps():
    """The 95 % runs of the schedule-length part at 150 steps are the quality sweep's runs, value for value."""
    long95 = read_table(REPO / "data" / "long95_digits.csv")
    quality = read_table(QUALITY)
    reference = quality[(quality["method"] == "fcpts") & (quality["loop"] == "released/released")].set_index(KEY)
    released = ~long95["selected"].astype(str).isin(["start", "reconstructed"])  # the kit recipe names its choice
    rows = long95[(long95["method"] == "fcpts") & (long95["steps"] == 150) & released]
    rows = rows.set_index(KEY)["top1"]
    assert len(rows) and (rows == reference.loc[rows.index, "top1"]).all()


def _cells(cells: list[str]) -> list[str]:
    """Markdown or DataFrame cells as the docs print them: no bold, no "(n=…)", a real minus sign."""
    return [re.sub(r"\s*\(n=\d+\)", "", c).replace("**", "").replace("-", "−").strip() for c in cells]


def _section(heading: str) -> list[str]:
    """The lines of docs/results.md under ``heading``, up to the next heading."""
    docs = (REPO / "docs" / "results.md").read_text().splitlines()
    start = docs.index(heading) + 1
    end = next((i for i in range(start, len(docs)) if docs[i].startswith("#")), len(docs))
    return docs[start:end]


@pytest.mark.parametrize("dataset, heading, lengths", [
    ("digits", "### 95 % over the schedule length (`data/long95_digits.csv`)", {150, 600, 1600}),
    ("fashion-mnist", "### 95 % on Fashion-MNIST over the schedule length (`data/long95_fashion-mnist.csv`)",
     {150, 600}),  # the 150-step rows are the main comparison's (long95_tables reads both)
], ids=["digits", "fashion-mnist"])
def test_the_docs_quote_the_committed_95_percent_table_over_schedule_lengths(dataset, heading, lengths):
    from fcpts import notebook as nb

    table = nb.steps_table(nb.long95_tables(REPO / "data", dataset))
    assert lengths <= set(table.index)
    docs = _section(heading)
    for steps, row in table.iterrows():
        line = next((l for l in docs if l.startswith(f"| {steps} |")), None)
        assert line is not None, f"docs/results.md has no {steps}-step row"
        assert _cells(line.split("|")[2:-1]) == _cells(row.tolist()), (steps, line)


def test_the_docs_quote_the_committed_faithful_and_adapted_learner_rows():
    from fcpts import notebook as nb

    from fcpts.registry import names

    learners = names(family="learner", role="competitor", default=True)  # the faithful ones, as notebook 04
    table = nb.adapted_table(nb.labelled_rows(REPO / "data" / "learners_digits.csv"), learners, (0.8, 0.9, 0.95))
    assert len(table), "no adapted learner rows in data/learners_digits.csv"
    docs = _section("### Faithful against adapted learners (`data/learners_digits.csv`)")
    for (learner, target), row in table.iterrows():
        line = next((l for l in docs if l.startswith(f"| {learner} | {target} |")), None)
        assert line is not None, f"docs/results.md has no row for {learner} at {target}"
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        assert _cells(line.split("|")[3:-1]) == _cells(cells), (learner, target, line)
