"""Every figure of the notebooks, drawn from result files alone: notebooks 01-04 call ``draw`` right after saving
their results, notebook 05 calls it for every kind; both go through the same code.

``fcpts.plotting`` (matplotlib, seaborn) is imported on the first drawing only (``_plotting``), so importing
``fcpts.notebook`` stays light: the JupyterLab server imports it for its save hook (``fcpts.notebook.lab``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from .. import registry
from ..config import target_key
from .session import readable_path, repo_path
from .tables import read_comparison, read_dst, read_learners, read_result
from .verdicts import LONG95_LABELS, RECIPE_DIR, faithful_rows, long95_tables, recipe_table, schedule_rows, training_summary

LEARNER_TARGETS = (0.8, 0.9)  # the targets the learner figures show
DST_TARGETS = (0.8, 0.9, 0.95)  # the coverage panels
RECIPE_LABELS = {"start": "ERK + BN re-estimation (FCPTS's start)", "released": "FCPTS, released recipe",
                 "kit": "FCPTS, kit recipe"}


def _plotting() -> ModuleType:
    """``fcpts.plotting``, imported when a figure is first drawn."""
    from .. import plotting

    return plotting


def _dense_top1(table: pd.DataFrame) -> float | None:
    dense = table[registry.is_role(table["method"], "reference")]
    return float(dense["top1"].iloc[-1]) if len(dense) else None


# ---- notebook 01 ----
def _draw_allocation_matters(results_dir, tag, dataset, target):
    table = read_result(results_dir, f"allocation_matters_{tag}.csv")
    if table is None:
        return None
    s = float(table.loc[~registry.is_role(table["method"], "reference"), "target"].iloc[0])
    return _plotting().plot_accuracy_bars(table, title=f"Same global sparsity ({s:.0%}), different allocations: top-1")


def _draw_allocations(results_dir, tag, dataset, target):
    table = read_result(results_dir, f"allocations_{tag}.csv")
    if table is None:
        return None
    methods = [c for c in table.columns if c not in ("layer", "numel", "target")]
    allocations = {m: dict(zip(table["layer"], table[m])) for m in methods}
    return _plotting().plot_allocation(allocations, title=f"Per-layer sparsity of three allocations at "
                                                          f"{float(table['target'].iloc[0]):.0%} global sparsity",
                                       numel=dict(zip(table["layer"], table["numel"])))


def _draw_bridge(results_dir, tag, dataset, target):
    table = read_result(results_dir, f"bridge_{tag}.csv")
    meta = readable_path(results_dir, f"bridge_{tag}.json")
    if table is None or not meta.exists():
        return None
    info = json.loads(meta.read_text())
    return _plotting().plot_bridge(table, layer=info["layer"], threshold=info["threshold"])


def _draw_objective(results_dir, tag, dataset, target):
    table = read_result(results_dir, f"objective_{tag}.csv")
    if table is None:
        return None
    model = table["model"].iloc[0]
    return _plotting().plot_convergence(table, float(table["target"].iloc[0]),
                                        title=f"L_c alone moves the thresholds ({model}, no reconstruction)")


# ---- notebook 02 ----
def _fcpts_runs(results_dir, tag):
    history = read_result(results_dir, f"fcpts_history_{tag}.csv")
    summary = read_result(results_dir, f"fcpts_summary_{tag}.csv")
    return history, summary


def _fcpts_target(summary: pd.DataFrame | None, default: float) -> float:
    if summary is None:
        return default
    runs = summary[summary["run"].str.startswith("FCPTS")]
    return float(runs["target"].iloc[0]) if len(runs) else default


def _draw_fcpts_allocation(results_dir, tag, dataset, target):
    table = read_result(results_dir, f"fcpts_allocation_{tag}.csv")
    if table is None:
        return None
    methods = [c for c in table.columns if c not in ("layer", "numel")]  # FCPTS runs, ERK, uniform
    allocations = {m: dict(zip(table["layer"], table[m])) for m in methods}
    _, summary = _fcpts_runs(results_dir, tag)
    s = _fcpts_target(summary, target)
    return _plotting().plot_allocation(allocations,
                                       title=f"Learned per-layer sparsity at {s:.0%} ({tag.replace('_', ' on ')})",
                                       numel=dict(zip(table["layer"], table["numel"])))


def _draw_fcpts_convergence(results_dir, tag, dataset, target):
    history, summary = _fcpts_runs(results_dir, tag)
    if history is None or summary is None:
        return None
    return _plotting().plot_convergence(history, _fcpts_target(summary, target),
                                        title="FCPTS: global sparsity over the steps")


def _draw_fcpts_losses(results_dir, tag, dataset, target):
    history, _ = _fcpts_runs(results_dir, tag)
    if history is None:
        return None
    return _plotting().plot_losses(history, title=f"FCPTS losses ({tag.replace('_', ' on ')})")


def _draw_recipe(results_dir, tag, dataset, target):
    plotting = _plotting()
    if dataset != "digits":  # the recipe ablation ran on the embedded default only
        return None
    table = recipe_table(RECIPE_DIR, ("released", "kit"))
    if table.empty:
        return None
    summary = pd.DataFrame(dict(method=table.variant.map(RECIPE_LABELS), tier="-", target=table.target,
                                mean=table.top1 / 100, std=np.nan, n=table.seeds, low=table.top1_low / 100,
                                high=table.top1_high / 100))
    return plotting.plot_training_aware(summary, title="The released and the kit recipe against FCPTS's own start "
                                                       "(95 % intervals)")


# ---- notebook 03 ----
def _draw_accuracy_vs_sparsity(results_dir, tag, dataset, target):
    table = read_comparison(results_dir, dataset)
    if table is None or table.empty:
        return None
    tiers = [t for t in ("a", "b", "c") if (table["tier"] == t).any()]
    if not tiers:
        return None
    return _plotting().plot_accuracy_vs_sparsity(table, tiers, _dense_top1(table))


def _draw_schedules(results_dir, tag, dataset, target):
    table = read_comparison(results_dir, dataset)
    if table is None or not registry.is_scheduled(table["method"]).any():
        return None
    return _plotting().plot_schedules(table, _dense_top1(table))


def _draw_schedule_shapes(results_dir, tag, dataset, target):
    from ..schedules import SCHEDULES

    progress = [i / 200 for i in range(201)]
    return _plotting().plot_schedule_shapes({name: (progress, [schedule(t, 0.0, 1.0) for t in progress])
                                             for name, schedule in SCHEDULES.items()})


def _draw_accuracy_vs_time(results_dir, tag, dataset, target):
    table = read_comparison(results_dir, dataset)
    if table is None or table.empty:
        return None
    pruned = table[~registry.is_role(table["method"], "reference")]
    present = sorted(set(pruned["target"].map(target_key)))
    targets = [float(t) for t in present if t in (target_key(target), target_key(0.9))] or \
        [float(t) for t in present[-1:]]
    if not targets:
        return None
    return _plotting().plot_accuracy_vs_time(pruned, targets)


def _learner_side(results_dir, dataset, index: int):
    """(side table, the targets to draw) of the learners' table: index 1 trajectories, 2 allocations."""
    found = read_learners(results_dir, dataset)
    if found is None or found[index].empty:
        return None, []
    side = found[index]
    side = faithful_rows(side)  # notebook 04 §6 has the adapted learners' table
    if side.empty:
        return None, []
    present = sorted(set(side["target"].map(target_key)))
    return side, [t for t in LEARNER_TARGETS if target_key(t) in present] or [float(t) for t in present[-2:]]


def _draw_learner_trajectories(results_dir, tag, dataset, target):
    plotting = _plotting()
    side, targets = _learner_side(results_dir, dataset, 1)
    return None if side is None else plotting.plot_learner_trajectories(side, targets)


def _draw_learner_allocations(results_dir, tag, dataset, target):
    plotting = _plotting()
    side, targets = _learner_side(results_dir, dataset, 2)
    return None if side is None else plotting.plot_learner_allocations(side, targets, seed=int(side["seed"].min()))


def _draw_dst_coverage(results_dir, tag, dataset, target):
    plotting = _plotting()
    found = read_dst(results_dir, dataset)
    if found is None or found[1].empty:
        return None
    present = set(found[1]["target"].map(target_key))
    return plotting.plot_coverage(found[1], [t for t in DST_TARGETS if target_key(t) in present]
                                  or [float(t) for t in sorted(present)[-3:]])


def _draw_dst_accuracy(results_dir, tag, dataset, target):
    plotting = _plotting()
    found = read_dst(results_dir, dataset)
    if found is None or found[0].empty:
        return None
    return plotting.plot_training_aware(training_summary(found[0], outcomes_from=found[2]),
                                        dense_top1=_dense_top1(found[0]))


def _draw_schedule_length(results_dir, tag, dataset, target):
    tables = long95_tables(results_dir, dataset)
    rows = schedule_rows(tables, LONG95_LABELS, 0.95)
    if rows.empty or rows["steps"].nunique() < 2:  # one length says nothing about the length
        return None
    return _plotting().plot_schedule_length(rows, 0.95, dense_top1=_dense_top1(tables[0]))


# ---- notebook 05 ----
def kit_rows_for_published(table: pd.DataFrame) -> pd.DataFrame:
    """This kit's counterparts of the published curves: uniform masks only (tier a, like msbench without
    reconstruction), uniform with FCPTS's reconstruction (tier c) and FCPTS."""
    picks = [("uniform", "a", "uniform, masks only (tier a)"),
             ("uniform", "c", "uniform + reconstruction (tier c)")]
    fcpts = registry.names(role="proposed", default=True)[0]
    picks.append((fcpts, "c", registry.label(fcpts)))
    rows = []
    for method, tier, text in picks:
        part = table[(table["method"] == method) & (table["tier"] == tier)]
        rows += [dict(method=method, label=text, sparsity=r["achieved_sparsity"], top1=r["top1"],
                      dataset=r["dataset"]) for _, r in part.iterrows()]
    return pd.DataFrame(rows, columns=["method", "label", "sparsity", "top1", "dataset"])


def _draw_published(results_dir, tag, dataset, target):
    published = _plotting().read_published()
    table = read_comparison(results_dir, dataset)
    ours = kit_rows_for_published(table) if table is not None else None
    return _plotting().plot_published(published, ours, dense_top1=_dense_top1(table) if table is not None else None)


FIGURES = {
    "allocation_matters": _draw_allocation_matters,  # notebook 01
    "allocations": _draw_allocations,
    "bridge": _draw_bridge,
    "objective": _draw_objective,
    "fcpts_allocation": _draw_fcpts_allocation,  # notebook 02
    "fcpts_convergence": _draw_fcpts_convergence,
    "fcpts_losses": _draw_fcpts_losses,
    "recipe": _draw_recipe,
    "schedule_shapes": _draw_schedule_shapes,  # notebook 03
    "accuracy_vs_sparsity": _draw_accuracy_vs_sparsity,
    "schedules": _draw_schedules,
    "accuracy_vs_time": _draw_accuracy_vs_time,
    "learner_trajectories": _draw_learner_trajectories,  # notebook 04
    "learner_allocations": _draw_learner_allocations,
    "dst_coverage": _draw_dst_coverage,
    "dst_accuracy": _draw_dst_accuracy,
    "schedule_length": _draw_schedule_length,
    "published_vs_kit": _draw_published,  # notebook 05
}


def figure_name(kind: str, tag: str) -> str:
    return f"{kind}_{tag}"


def draw(kind: str, tag: str, results_dir: str | os.PathLike[str], figures_dir: str | os.PathLike[str],
         dataset: str = "digits", target: float = 0.8) -> list[Path]:
    """Draw figure ``kind`` from the result files in ``results_dir`` and save it as
    ``<figures_dir>/<kind>_<tag>.png|pdf``. Returns the paths ([] when its result files are missing)."""
    plotting = _plotting()
    if kind not in FIGURES:
        raise ValueError(f"unknown figure {kind!r}; choose one of {', '.join(FIGURES)}")
    fig = FIGURES[kind](results_dir, tag, dataset, target)
    if fig is None:
        return []
    return plotting.save_figure(fig, figure_name(kind, tag), folder=repo_path(figures_dir))
