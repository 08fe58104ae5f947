"""Summaries and verdicts: top-1 over seeds with 95 % intervals, and paired "A beats B" verdicts
(``fcpts.stats``) on the same test images."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data import DataBundle
from ..evaluate import evaluate
from .. import registry
from ..config import at_target, target_key
from ..schedules import SCHEDULE_LABELS
from ..table import outcome_matrix, paired_over_seeds, read_table
from ..stats import bootstrap_interval, paired_difference, verdict
from .session import repo_path

QUALITY_TABLES = {"released": "benchmarks/results/quality_released-histogram.csv",  # benchmarks/quality.py
                  "kit": "benchmarks/results/quality_kit.csv"}
RECIPE_DIR = "benchmarks/results/recipe"  # benchmarks/recipe.py: one runner table per recipe variant
RECIPE_START = ("erk", "b")  # FCPTS's own start, ERK + BN re-estimation, in the "released" table
# the differences behind the digits conclusions (docs/results.md), checked again on another dataset (row labels)
CONCLUSION_PAIRS = (("FCPTS (released)", "ERK, tier b"), ("FCPTS (kit)", "ERK, tier b"),
                    ("FCPTS (kit)", "FCPTS (released)"), ("FCPTS (released)", "STR (faithful)"),
                    ("FCPTS (released)", "DST-EE"), ("FCPTS (released)", "prune + train, one-cycle"),
                    ("DST-EE", "RigL"), ("prune + train, one-cycle", "DST-EE"))


def _fcpts() -> str:
    """The proposed method's name (FCPTS with the Config's recipe), from the registry."""
    return registry.names(role="proposed", default=True)[0]


def _label(name: str) -> str:
    return SCHEDULE_LABELS.get(name) or registry.label(name, short=True)


def _at_targets(values: pd.Series, targets: Iterable[float]) -> pd.Series:
    return values.map(target_key).isin({target_key(t) for t in targets})


def training_summary(table: pd.DataFrame, coverage: pd.DataFrame | None = None,
                     targets: Iterable[float] | None = None, outcomes_from: str | os.PathLike | None = None
                     ) -> pd.DataFrame:
    """Top-1 per method, start and target over seeds (mean, std, n); one-cycle rows are named by their schedule;
    with ``coverage``, the mean final coverage of the dynamic-sparse-training rows; with ``outcomes_from`` (the
    runner's table path), a 95 % interval over seeds and test images (``low``, ``high``; NaN where a row was
    computed before per-image outcomes were kept)."""
    rows = table[~registry.is_role(table["method"], "reference")].copy()
    rows["key_method"] = rows["method"]
    scheduled = registry.is_scheduled(rows["method"])
    rows.loc[scheduled, "method"] = rows.loc[scheduled, "schedule"]
    if targets is not None:
        rows = rows[_at_targets(rows["target"], targets)]
    grouped = rows.groupby(["method", "tier", "target"], sort=False)
    out = grouped["top1"].agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    if outcomes_from is not None:
        bounds = []
        for _, group in grouped:
            try:
                interval = bootstrap_interval(outcome_matrix(outcomes_from, group.assign(method=group["key_method"])))
                bounds.append((interval.low, interval.high))
            except KeyError:
                bounds.append((float("nan"), float("nan")))
        out["low"], out["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    registered = list(registry.METHODS)

    def order(name: str) -> int:  # FCPTS, then the schedules, then dynamic sparse training; registry order within
        rank = 0 if registry.is_role(name, "proposed") else 1 if name in SCHEDULE_LABELS else \
            2 if registry.is_family(name, "training") else 9
        within = registered.index(name) if name in registered else \
            list(SCHEDULE_LABELS).index(name) if name in SCHEDULE_LABELS else 0
        return 1000 * rank + within

    out = out.sort_values(["target", "method", "tier"], key=lambda c: c.map(order) if c.name == "method" else c,
                          kind="stable").reset_index(drop=True)
    if coverage is not None and len(coverage):
        last = coverage.sort_values("update").groupby(["method", "tier", "target", "seed"]).coverage.last()
        out = out.merge(last.groupby(["method", "tier", "target"]).mean().rename("coverage").reset_index(),
                        on=["method", "tier", "target"], how="left")
    return out


def paired_verdicts(table: pd.DataFrame, path: str | os.PathLike, pairs: Iterable[tuple[tuple[str, str],
                    tuple[str, str]]], targets: Iterable[float]) -> list[str]:
    """For each target and each pair ((method, tier), (method, tier)) -- one-cycle named by its schedule -- the
    paired verdict over the seeds both have and the same test images (``fcpts.stats``): "A beats B by x points
    [low, high]" only when the interval excludes 0, else "within noise". Pairs without outcomes are skipped."""
    starts = {"finetune": " (from dense)", "scratch": " (scratch)"}  # allocations: their tier
    rows = table.assign(name=table["method"].where(~registry.is_scheduled(table["method"]), table["schedule"]))
    out = []
    for target in targets:
        at = rows[at_target(rows["target"], target)]
        for a, b in pairs:
            ra, rb = (at[(at["name"] == m) & (at["tier"] == t)] for m, t in (a, b))
            found = paired_over_seeds(path, ra, path, rb)
            if found is None:
                continue
            label_a, label_b = (_label(m) + starts.get(t, "" if registry.is_role(m, "proposed") else f" ({t})")
                                for m, t in (a, b))
            out.append(f"{target:.0%}, {len(found[1])} seed(s): " + verdict(label_a, label_b, found[0]))
    return out


def _recipe_rows(path: Path, method: str, tier: str, target: float) -> pd.DataFrame:
    table = read_table(path)
    if table.empty:
        return table
    return table[(table.method == method) & (table.tier == tier) & at_target(table.target, target)].sort_values("seed")


def recipe_table(folder: str | os.PathLike = RECIPE_DIR, variants: Iterable[str] = ("released", "kit"),
                 targets: Iterable[float] = (0.5, 0.7, 0.8, 0.9, 0.95)) -> pd.DataFrame:
    """Per recipe variant (``<folder>/<variant>.csv``, FCPTS rows) and target: top-1 (%) with its 95 % interval over
    seeds and test images, and the paired difference in points (``vs_start``, ``vs_released``: estimate, low,
    high, seeds, verdict + better / − worse / ≈ within noise) to FCPTS's start (ERK + BN re-estimation) and to
    the released recipe, over the seeds both ran. The start itself is the variant "start"."""
    folder = repo_path(folder)
    base = folder / "released.csv"
    records = []
    for variant in ["start", *variants]:
        path = base if variant == "start" else folder / f"{variant}.csv"
        if not path.exists():
            continue
        for target in targets:
            rows = _recipe_rows(path, *(RECIPE_START if variant == "start" else (_fcpts(), "c")), target)
            rows = rows.drop_duplicates("seed", keep="last")  # a row recomputed later replaces the older one
            if rows.empty:
                continue
            top1 = bootstrap_interval(outcome_matrix(path, rows))
            selected = rows["selected"].fillna("-") if "selected" in rows else pd.Series(["-"] * len(rows))
            record = dict(variant=variant, target=target, seeds=len(rows), top1=100 * top1.estimate,
                          top1_low=100 * top1.low, top1_high=100 * top1.high, wall_time=rows.wall_time.mean(),
                          start_chosen=int((selected == "start").sum()))
            others = {"start": _recipe_rows(base, *RECIPE_START, target), "released": _recipe_rows(base, _fcpts(), "c", target)}
            for name, other in others.items():
                found = None if variant in ("start", name) else paired_over_seeds(path, rows, base, other)
                if found is None:
                    continue
                d, seeds = found
                record.update({f"vs_{name}": 100 * d.estimate, f"vs_{name}_low": 100 * d.low,
                               f"vs_{name}_high": 100 * d.high, f"vs_{name}_seeds": len(seeds),
                               f"vs_{name}_verdict": "+" if d.low > 0 else ("−" if d.high < 0 else "≈")})
            records.append(record)
    return pd.DataFrame(records)


def scored(model: torch.nn.Module, data: DataBundle, config: Config) -> dict[str, Any]:
    """Test top-1 of ``model`` with its 95 % bootstrap interval over the test images (one run: the images are
    the only thing resampled), and the per-image outcomes (``correct``) for paired comparisons."""
    metrics = evaluate(model, data.test, batch_size=config.eval_batch_size, progress=False, per_image=True)
    interval = bootstrap_interval(np.asarray(metrics["correct"])[None])
    return dict(top1=metrics["top1"], low=interval.low, high=interval.high, correct=np.asarray(metrics["correct"]))


def verdict_line(a: str, b: str, scores: dict[str, dict]) -> str:
    """The paired verdict of run ``a`` against run ``b`` on the same test images (``scored`` results)."""
    return verdict(a, b, paired_difference(scores[a]["correct"][None], scores[b]["correct"][None]))


def learner_summary(table: pd.DataFrame, targets: Iterable[float] | None = None,
                    outcomes_from: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per learner and target, over seeds: sparsity before the projection and top-1 after it (mean, std, n),
    in percent. "Reaches the target" and "accurate at the target" are separate columns. With ``outcomes_from``
    (the runner's table path), the top-1's 95 % interval over seeds and test images (NaN where the rows were
    computed before per-image outcomes were kept)."""
    rows = table[registry.is_family(table["method"], "learner")]
    if targets is not None:
        rows = rows[_at_targets(rows["target"], targets)]
    rows = rows.assign(gap=(rows["sparsity_before_projection"] - rows["target"]).abs())
    grouped = rows.groupby(["method", "target"], sort=False)
    out = pd.DataFrame({
        "seeds": grouped["seed"].nunique(),
        "S before projection (%)": 100 * grouped["sparsity_before_projection"].mean(),
        "± (before)": 100 * grouped["sparsity_before_projection"].std(ddof=1),
        "gap to S* before (points)": 100 * grouped["gap"].mean(),
        "top-1 after projection (%)": 100 * grouped["top1"].mean(),
        "± (top-1)": 100 * grouped["top1"].std(ddof=1),
    })
    if outcomes_from is not None:
        bounds = {}
        for key, group in grouped:
            try:
                interval = bootstrap_interval(outcome_matrix(outcomes_from, group))
                bounds[key] = (100 * interval.low, 100 * interval.high)
            except KeyError:
                bounds[key] = (np.nan, np.nan)
        out["top-1 low (%)"] = [bounds[k][0] for k in out.index]
        out["top-1 high (%)"] = [bounds[k][1] for k in out.index]
    return out.reset_index()


def fcpts_table(tables: dict[str, str] = QUALITY_TABLES, loop: str = "released/released") -> pd.DataFrame:
    """FCPTS on the embedded default, per recipe and target, from the committed quality tables: seed 0's top-1
    and the mean over the seeds with its 95 % interval over seeds and test images (``fcpts.stats``), the same
    numbers ``benchmarks/results/SUMMARY.md``, the README and ``docs/results.md`` quote. Only rows of the
    reconstruction loop ``loop`` count."""
    rows = []
    for recipe, name in tables.items():
        path = repo_path(name)
        table = read_table(path)
        table = table[(table["method"] == _fcpts()) & (table["loop"] == loop)]
        for target, part in table.groupby("target"):
            part = part.drop_duplicates("seed", keep="last").sort_values("seed")
            interval = bootstrap_interval(outcome_matrix(path, part))
            seed0 = part[part["seed"] == 0]["top1"]
            rows.append({"recipe": recipe, "target": f"{target:.0%}",
                         "seed 0": f"{100 * seed0.iloc[0]:.1f}" if len(seed0) else "–",
                         "mean over seeds [95 % interval]": interval.points(), "seeds": part["seed"].nunique()})
    return pd.DataFrame(rows).set_index(["recipe", "target"])


def schedule_verdicts(current: pd.DataFrame, path: str | os.PathLike) -> list[str]:
    """FCPTS against every training-aware schedule at every target, paired on the same test images."""
    schedules = sorted(current.loc[registry.is_scheduled(current["method"]), "schedule"].unique())
    targets = sorted(current.loc[current["method"] == _fcpts(), "target"].unique())
    return paired_verdicts(current, path, [((_fcpts(), "c"), (s, "finetune")) for s in schedules], targets)


# ----- one table, every method: rows named by what they are, pooled over seeds ---------------------------------
def row_label(row: Any) -> str:
    """How a pooled table names a runner row: FCPTS by recipe (the kit recipe's rows name their held-out choice
    in ``selected``), allocations by tier, learners faithful or adapted, training by schedule."""
    method = registry.get_method(row.method)
    if row.method == _fcpts():
        return "FCPTS (kit)" if isinstance(row.selected, str) and row.selected not in ("-", "") else "FCPTS (released)"
    if method.family == "allocation":
        return f"{registry.label(row.method)}, tier {row.tier}"
    if method.family == "learner":
        name = registry.label(row.method, short=True)
        return name if method.variant_of else f"{name} (faithful)"
    if method.family == "training" and method.scheduled:
        return f"prune + train, {row.schedule.replace('_', '-')}"
    return registry.label(row.method, short=True)


def labelled_rows(path: str | os.PathLike) -> pd.DataFrame:
    """The runner's table at ``path`` (rows of the current loop) with a ``label`` per row (``row_label``) and
    its ``path``; an error when two settings would share one cell (same label, target, steps and seed)."""
    path = repo_path(path)
    table = read_table(path)
    table = table[~table["loop"].astype(str).str.startswith("legacy")]
    table = table.assign(label=[row_label(r) for r in table.itertuples()], path=str(path))
    # the dense model scored under several sweeps' settings is one row per seed (a different score is a clash)
    dense = registry.is_role(table["method"], "reference")
    table = pd.concat([table[~dense], table[dense].drop_duplicates(["label", "target", "seed", "top1"], keep="last")]
                      ).sort_index(kind="stable")
    clash = table.groupby(["label", "target", "steps", "seed"]).config_hash.nunique()
    if (clash > 1).any():
        raise ValueError(f"{path}: rows of different settings share a cell: {clash[clash > 1].index.tolist()[:3]}; "
                         "keep one setting per table")
    return table


def pooled_cell(rows: pd.DataFrame) -> str:
    """Top-1 (%) of ``rows`` (one label and target, from one table): the mean over the seeds with its 95 %
    interval over seeds and test images, and n = seeds; "–" when there are none."""
    if rows.empty:
        return "–"
    rows = rows.drop_duplicates("seed", keep="last").sort_values("seed", kind="stable")
    return f"{bootstrap_interval(outcome_matrix(rows['path'].iloc[0], rows)).points()} (n={len(rows)})"


def _paired(a: pd.DataFrame, b: pd.DataFrame):
    """(a − b as an ``Interval``, the seeds it used) on the same test images, or None."""
    if a.empty or b.empty:
        return None
    return paired_over_seeds(a["path"].iloc[0], a.sort_values("seed", kind="stable"), b["path"].iloc[0],
                             b.sort_values("seed", kind="stable"))


def pooled_difference(a: pd.DataFrame, b: pd.DataFrame):
    """a − b in top-1 on the same test images and the seeds both have (an ``Interval``), or None."""
    found = _paired(a, b)
    return None if found is None else found[0]


def pooled_table(table: pd.DataFrame, targets: Iterable[float]) -> pd.DataFrame:
    """``labelled_rows`` as label × target cells (``pooled_cell``), FCPTS first; the dense model left out."""
    pruned = table[~registry.is_role(table["method"], "reference")]
    labels = sorted(pruned["label"].unique(), key=lambda s: (not s.startswith("FCPTS"), s))
    return pd.DataFrame([[pooled_cell(pruned[(pruned["label"] == lab) & at_target(pruned["target"], t)])
                          for t in targets] for lab in labels],
                        index=pd.Index(labels, name="method"), columns=[f"{t:.0%}" for t in targets])


def verdict_counts(table: pd.DataFrame, mine: str, targets: Iterable[float],
                   skip: Callable[[str, float], bool] = lambda label, target: False) -> pd.DataFrame:
    """Row label ``mine`` against every label that is not FCPTS at every target, paired on the same images and
    seeds: how many it beats, is within noise of and is beaten by (a verdict only when the 95 % interval of the
    difference excludes 0), with the differences named, and how many are not run yet; ``skip(label, target)``
    leaves out pairs that are not planned."""
    pruned = table[~registry.is_role(table["method"], "reference")]
    rows = []
    for t in targets:
        at = pruned[at_target(pruned["target"], t)]
        found: dict[str, list[str]] = {"beats": [], "within noise": [], "beaten by": [], "not yet run": []}
        for label in sorted(pruned["label"].unique()):
            if label.startswith("FCPTS") or skip(label, t):
                continue
            d = pooled_difference(at[at["label"] == mine], at[at["label"] == label])
            kind = ("not yet run" if d is None else "beaten by" if d.high < 0 else "beats" if d.low > 0
                    else "within noise")
            found[kind].append(label if d is None else f"{label} {d.signed()}")
        rows.append({"target": f"{t:.0%}", **{k: len(v) for k, v in found.items()},
                     "within noise of": "; ".join(found["within noise"]), "beaten by whom": "; ".join(found["beaten by"])})
    return pd.DataFrame(rows).set_index("target")


def paired_table(table: pd.DataFrame, pairs: Iterable[tuple[str, str]], targets: Iterable[float]) -> pd.DataFrame:
    """For each (a, b) pair of row labels, a − b in points at every target, paired on the same test images and the
    seeds both ran (``pooled_difference``), with n = those seeds; "–" where either is missing."""
    targets = list(targets)
    cells = []
    for a, b in pairs:
        row = []
        for t in targets:
            at = table[at_target(table["target"], t)]
            row.append(_paired_cell(at[at["label"] == a], at[at["label"] == b]))
        cells.append(row)
    return pd.DataFrame(cells, index=pd.Index([f"{a} − {b}" for a, b in pairs], name="difference"),
                        columns=[f"{t:.0%}" for t in targets])


def faithful_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without the rows of registered variants (``registry.is_variant``: the adapted learners)."""
    return table[~registry.is_variant(table["method"])]


def _paired_cell(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """a − b in points on the same images and seeds, with n = those seeds; "–" when either is missing."""
    found = _paired(a, b)
    return "–" if found is None else f"{found[0].signed()} (n={len(found[1])})"


def adapted_table(table: pd.DataFrame, learners: Iterable[str], targets: Iterable[float]) -> pd.DataFrame:
    """Each faithful learner beside its adapted variant (``registry.variant_names``; rows of ``labelled_rows``) at
    every target both ran, on the seeds both ran: the sparsity of its own masks before the projection (%, mean
    over seeds), top-1 after it (``pooled_cell``), adapted − faithful and FCPTS (released recipe) − adapted paired
    on the same images and seeds, and the settings the adapted runs chose without labels (``selected``)."""
    columns = ["learner", "target", "faithful S before (%)", "faithful top-1", "adapted S before (%)",
               "adapted top-1", "adapted − faithful", "FCPTS (released) − adapted", "chosen without labels"]
    rows = []
    for faithful in learners:
        for adapted in registry.variant_names(faithful):
            for t in targets:
                at = table[at_target(table["target"], t)]
                pair = [at[at["method"] == m] for m in (faithful, adapted)]
                seeds = sorted(set(pair[0]["seed"]) & set(pair[1]["seed"]))
                if not seeds:
                    continue
                pair = [p[p["seed"].isin(seeds)] for p in pair]
                rows.append([registry.label(faithful, short=True), f"{t:.0%}",
                             round(100 * pair[0]["sparsity_before_projection"].mean(), 1), pooled_cell(pair[0]),
                             round(100 * pair[1]["sparsity_before_projection"].mean(), 1), pooled_cell(pair[1]),
                             _paired_cell(pair[1], pair[0]),
                             _paired_cell(at[at["label"] == "FCPTS (released)"], pair[1]),
                             "; ".join(sorted(set(pair[1]["selected"].astype(str))))])
    return pd.DataFrame(rows, columns=columns).set_index(["learner", "target"])


LONG95_LABELS = ("FCPTS (released)", "FCPTS (kit)", "STR (faithful)")  # the 95 % question (issue #25)


def long95_tables(results_dir: str | os.PathLike, dataset: str) -> list[pd.DataFrame]:
    """``labelled_rows`` of the 95 % schedule-length table ``long95_<dataset>.csv`` (``readable_path``: the
    committed one unless this run wrote one), then of ``comparison_<dataset>.csv`` beside it (where Fashion-MNIST's
    150-step rows are); [] without the first. Both from one folder: a notebook's own comparison run is not this sweep."""
    from .session import readable_path
    path = readable_path(results_dir, f"long95_{dataset}.csv")
    if not path.exists():
        return []
    beside = path.with_name(f"comparison_{dataset}.csv")
    return [labelled_rows(path)] + ([labelled_rows(beside)] if beside.exists() else [])


def schedule_rows(tables: Iterable[pd.DataFrame], labels: Iterable[str], target: float) -> pd.DataFrame:
    """The rows of ``labels`` at ``target``, each (steps, label) from the first of ``tables`` that has it (so a
    cell never mixes two tables' runs)."""
    labels = list(labels)
    frames = [t[at_target(t["target"], target) & t["label"].isin(labels)] for t in tables]
    if not frames:
        return pd.DataFrame(columns=["label", "steps", "seed", "top1", "path"])
    table = pd.concat(frames, ignore_index=True)
    return table[table["path"] == table.groupby(["steps", "label"])["path"].transform("first")]


def steps_table(tables: Iterable[pd.DataFrame], labels: Iterable[str] = LONG95_LABELS,
                versus: str = "STR (faithful)", target: float = 0.95) -> pd.DataFrame:
    """Row labels ``labels`` at ``target`` by reconstruction length (steps × label cells, ``pooled_cell``; rows
    from ``schedule_rows``), and each other label − ``versus`` paired on the same images and seeds (``_paired_cell``)."""
    labels = list(labels)
    table = schedule_rows(tables, labels, target)
    rows = []
    for steps in sorted(table["steps"].unique()):
        at = table[table["steps"] == steps]
        cells = {lab: at[at["label"] == lab] for lab in labels}
        row = {"steps": int(steps), **{lab: pooled_cell(rows_) for lab, rows_ in cells.items()}}
        row.update({f"{lab} − {versus}": _paired_cell(cells[lab], cells[versus]) for lab in labels if lab != versus})
        rows.append(row)
    columns = ["steps", *labels, *(f"{lab} − {versus}" for lab in labels if lab != versus)]
    return pd.DataFrame(rows, columns=columns).set_index("steps")
