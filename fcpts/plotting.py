"""The one plotting helper of the kit: one style, figures saved by name (PNG and PDF).

Every figure of the CLI, the notebooks and the benchmarks goes through here, so they look alike and land
in one place: ``<name>.png`` and ``<name>.pdf`` in ``fcpts.paths.figures_dir()`` by default (a checkout's figures/; installed:
./figures, ``fcpts.paths.figures_dir()``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from . import registry
from .config import at_target, target_key
from .paths import PUBLISHED_NUMBERS, checkout, figures_dir
from .schedules import SCHEDULE_LABELS

# One colour per method, stable across every figure of the kit.
# Colours and labels of the series that are not registered methods (methods carry their own: fcpts.registry):
# schedules, published series, objectives.
SERIES_COLORS = {
    "fcpts-released": "#d62728", "one_shot": "#7f7f7f", "iterative": "#bcbd22", "agp": "#17becf",
    "one_cycle": "#aec7e8", "paper": "#000000", "unipts": "#7f3c8d",
    "dsa-style": "#e377c2",  # plot_allocation colours a curve by the first word of its label
    # row labels of the pooled tables (fcpts.notebook.row_label) that share a method: FCPTS by recipe
    "FCPTS (released)": "#d62728", "FCPTS (kit)": "#ff9896",
}


def use_style() -> None:
    """The kit's look: seaborn whitegrid, readable sizes, tight layout."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titleweight": "bold", "legend.frameon": False})


def color(name: str) -> str:
    """A registered method's colour, else a series' (``SERIES_COLORS``), else a palette colour stable across runs."""
    return registry.color(name) or SERIES_COLORS.get(name) or sns.color_palette()[sum(map(ord, name)) % 10]


def save_figure(fig: plt.Figure, name: str, folder: str | Path | None = None,
                formats: Iterable[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<folder>/<name>.<fmt>`` for each format; returns the paths."""
    folder = Path(folder) if folder else figures_dir()  # read now: an installed kit writes under the current folder
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        # fixed metadata keeps PDFs byte-stable between runs (no creation date)
        fig.savefig(path, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    return paths


def short_layer_name(name: str) -> str:
    return name.replace("layer", "L").replace("downsample.0", "ds").replace(".conv", ".c")


def plot_allocation(allocations: Mapping[str, Mapping[str, float]], title: str = "Per-layer sparsity",
                    ax: plt.Axes | None = None, numel: Mapping[str, int] | None = None) -> plt.Figure:
    """Per-layer sparsity of several allocations (e.g. FCPTS, ERK, uniform), layers in model order.

    ``numel`` (optional, {layer: weight count}) adds a narrow panel below with each layer's size, which is
    what most allocations respond to. The legend sits under the axes, never on the curves.
    """
    use_style()
    first = next(iter(allocations.values()))
    layers = list(first)
    width = max(8, 0.16 * len(layers))
    if ax is None and numel is not None:
        fig, (ax, size_ax) = plt.subplots(2, 1, figsize=(width, 5.6), sharex=True, layout="constrained",
                                          gridspec_kw=dict(height_ratios=(3.2, 1)))
    elif ax is None:
        fig, ax = plt.subplots(figsize=(width, 4.4), layout="constrained")
        size_ax = None
    else:
        fig, size_ax = ax.figure, None
    own_figure = size_ax is not None or fig.axes == [ax]
    for label_, alloc in allocations.items():
        ax.plot(range(len(layers)), [alloc.get(n, 0.0) for n in layers], marker="o", markersize=3,
                linewidth=1.2, label=label_, color=color(label_.split(" ")[0].lower()))
    step = max(1, len(layers) // 40)
    bottom = size_ax if size_ax is not None else ax
    bottom.set_xticks(range(0, len(layers), step))
    bottom.set_xticklabels([short_layer_name(layers[i]) for i in range(0, len(layers), step)], rotation=90,
                           fontsize=7)
    bottom.set_xlabel("layer (model order)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("sparsity")
    ax.set_title(title)
    if size_ax is not None:
        size_ax.bar(range(len(layers)), [numel.get(n, 0) for n in layers], color="#999999", width=0.7)
        size_ax.set_yscale("log")
        size_ax.set_ylabel("weights")
        size_ax.grid(axis="x", visible=False)
    if not own_figure:  # drawn into someone else's figure: keep to this axes
        ax.legend(loc="lower right", ncol=min(4, len(allocations)), fontsize=8)
        return fig
    handles, labels_ = ax.get_legend_handles_labels()
    fig.legend(handles, labels_, loc="outside lower center", ncol=len(allocations), frameon=False, fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------------------------
# the notebooks' figures (notebook 05 redraws every one of them from the result files alone)
# ----------------------------------------------------------------------------------------------------------
SERIES_LABELS = {**SCHEDULE_LABELS, "fcpts-released": "FCPTS (released)", "paper": "paper", "unipts": "UniPTS",
                 "abs": "abs: |S − S*|", "pow2": "pow2: (S − S*)²"}
CLAIM_PHRASES = {"top1_gain_vs_previous_pts_sota": "above the previous post-training-sparsity state of the art",
                 "top1_drop_vs_dense": "below the dense model"}
TIER_LABELS = {"a": "tier a: masks only", "b": "tier b: masks + BN re-estimation",
               "c": "tier c: masks + FCPTS reconstruction"}
ESTIMATOR_STYLES = {  # the bridge figure: one look per estimator
    "exact": dict(color="#333333", linewidth=1.6),
    "histogram": dict(color="#1f77b4", linewidth=1.4),
    "kde": dict(color="#d62728", linewidth=1.4, linestyle="--"),
    "finite differences": dict(color="#2ca02c", linewidth=0, marker="o", markersize=3.5),
}


def _dense_color() -> str:
    return color(registry.names(role="reference")[0])


def label(name: str) -> str:
    """A registered method's label, else a series' (``SERIES_LABELS``), else the name."""
    return registry.label(name) if name in registry.METHODS else SERIES_LABELS.get(name, name)


def _legend_below(fig: plt.Figure, axes, ncol: int = 4) -> None:
    """One legend for the whole figure, under the axes (never on top of the curves)."""
    handles, labels = {}, {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles[l], labels[l] = h, l
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(ncol, len(handles)),
                   bbox_to_anchor=(0.5, -0.02), frameon=False)
        fig.tight_layout(rect=(0, 0.1 if len(handles) <= ncol else 0.16, 1, 1))


def plot_bridge(curves, layer: str = "", threshold: float | None = None) -> plt.Figure:
    """Three panels from a tidy table (columns panel, estimator, x, y):

    ``density`` -- the density of the layer's signed weights (100-bin histogram vs Gaussian KDE);
    ``sparsity`` -- S(t): the exact count and the integral of each density estimate over [-t, t];
    ``gradient`` -- dS/dt = p(t) + p(-t) of each estimator against finite differences of the exact count.
    ``threshold`` marks a threshold on the S(t) and gradient panels (e.g. the layer's ERK start).
    """
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    titles = {"density": "density of the signed weights", "sparsity": "sparsity S(t) = P(|w| ≤ t)",
              "gradient": "dS/dt = p(t) + p(−t)"}
    xlabels = {"density": "weight w", "sparsity": "threshold t", "gradient": "threshold t"}
    ylabels = {"density": "density p(w)", "sparsity": "sparsity S(t)", "gradient": "dS/dt"}
    names = {"exact": "exact count", "histogram": "100-bin histogram (released)", "kde": "Gaussian KDE",
             "finite differences": "finite differences of the exact count"}
    for ax, panel in zip(axes, ("density", "sparsity", "gradient")):
        part = curves[curves["panel"] == panel]
        for estimator, rows in part.groupby("estimator", sort=False):
            style = ESTIMATOR_STYLES.get(estimator, {})
            draw = ax.step if (panel == "density" and estimator == "histogram") else ax.plot
            kwargs = dict(where="mid") if draw is ax.step else {}
            draw(rows["x"], rows["y"], label=names.get(estimator, estimator), **kwargs, **style)
        if threshold is not None and panel != "density":
            ax.axvline(threshold, color="#7f7f7f", linestyle=":", linewidth=1.2, label="ERK start threshold")
        ax.set_title(titles[panel])
        ax.set_xlabel(xlabels[panel])
        ax.set_ylabel(ylabels[panel])
    if layer:
        fig.suptitle(f"The bridge from threshold to sparsity, on the weights of {layer}", fontweight="bold", y=1.0)
    _legend_below(fig, axes, ncol=5)
    return fig


def _histories(histories) -> dict:
    import pandas as pd

    if isinstance(histories, pd.DataFrame):
        return {run: rows for run, rows in histories.groupby("run", sort=False)}
    return {k: (v if isinstance(v, pd.DataFrame) else pd.DataFrame(v)) for k, v in histories.items()}


def plot_convergence(histories, target: float, title: str = "Global sparsity over the steps") -> plt.Figure:
    """Left: the global sparsity S (through the bridge) per step for each run, with the target S*.
    Right: the gap |S − S*| on a log scale (where abs and pow2 differ most)."""
    use_style()
    runs = _histories(histories)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for run, rows in runs.items():
        c = color(run.split(" ")[0].lower())
        left.plot(rows["step"], rows["sparsity"], label=label(run), color=c, linewidth=1.4)
        gap = (rows["sparsity"] - target).abs().clip(lower=1e-7)
        right.plot(rows["step"], gap, label=label(run), color=c, linewidth=1.2)
    left.axhline(target, color="#333333", linestyle="--", linewidth=1, label=f"target S* = {target:.0%}")
    left.set_xlabel("step")
    left.set_ylabel("global sparsity S")
    left.set_title(title)
    right.set_yscale("log")
    right.set_xlabel("step")
    right.set_ylabel("|S − S*|")
    right.set_title("distance to the target")
    _legend_below(fig, (left, right), ncol=4)
    return fig


def plot_losses(histories, title: str = "Losses during FCPTS") -> plt.Figure:
    """The reconstruction loss L_rec (KD) and the controllable loss L_c per step, log scale."""
    use_style()
    runs = _histories(histories)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for run, rows in runs.items():
        c = color(run.split(" ")[0].lower())
        axes[0].plot(rows["step"], rows["loss_rec"].clip(lower=1e-8), label=run, color=c, linewidth=1.2)
        axes[1].plot(rows["step"], rows["loss_c"].clip(lower=1e-8), label=run, color=c, linewidth=1.2)
    for ax, name in zip(axes, ("reconstruction loss L_rec (KD, T = 4)", "controllable loss L_c")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(name)
    fig.suptitle(title, fontweight="bold", y=1.0)
    _legend_below(fig, axes, ncol=4)
    return fig


def plot_accuracy_bars(table, title: str = "Top-1 after pruning") -> plt.Figure:
    """Horizontal bars of top-1 (%) per row of ``table`` (columns label, top1 in [0, 1], method)."""
    use_style()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(table) + 1.2))
    y = range(len(table))
    ax.barh(list(y), [100 * v for v in table["top1"]],
            color=[color(m) for m in table["method"]], height=0.6)
    for i, v in zip(y, table["top1"]):
        ax.text(100 * v + 1, i, f"{100 * v:.1f} %", va="center", fontsize=9)
    ax.set_yticks(list(y))
    ax.set_yticklabels(list(table["label"]))
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("test top-1 (%)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _band(ax, part, c) -> None:
    """The rows' 95 % intervals (``low``, ``high``, fractions) as a shaded band, where the table has them."""
    if "low" in part and part["low"].notna().any():
        ok = part["low"].notna()
        ax.fill_between(part["achieved_sparsity"][ok] * 100, part["low"][ok] * 100, part["high"][ok] * 100,
                        color=c, alpha=0.15, linewidth=0)


ERROR_FLOOR = 0.1  # % test error drawn for a perfect score: the log axis has no 0


def _error(top1):
    """Test error in % (100 − top-1), floored for the log axis."""
    return (100 - 100 * top1).clip(lower=ERROR_FLOOR)


def _error_axis(ax, dense_top1: float | None, chance: float | None = 90.0) -> None:
    """A log test-error axis, lower is better, with the dense model's error and chance drawn as references."""
    ax.set_yscale("log")
    ax.set_ylim(ERROR_FLOOR * 2.5, 100)
    ax.set_yticks([0.5, 1, 2, 5, 10, 20, 50, 100])
    ax.set_yticklabels(["0.5", "1", "2", "5", "10", "20", "50", "100"])
    if dense_top1 is not None:
        ax.axhline(max(100 - 100 * dense_top1, ERROR_FLOOR), color=_dense_color(), linestyle="--", linewidth=1,
                   label="dense model")
    if chance is not None:
        ax.axhline(chance, color="#999999", linestyle=":", linewidth=1, label="chance (10 classes)")


def _error_line(ax, part, x, c, text, bold: bool = False) -> None:
    """One method's test error at each target, with its 95 % interval as error bars where the rows have one."""
    y = _error(part["top1"]).to_numpy()
    style = dict(color=c, marker="s" if bold else "o", markersize=6 if bold else 4, linewidth=2.2 if bold else 1.3,
                 label=text, zorder=4 if bold else 3)
    if "low" in part and part["low"].notna().all():
        low, high = _error(part["high"]).to_numpy(), _error(part["low"]).to_numpy()
        ax.errorbar(x, y, yerr=[(y - low).clip(min=0), (high - y).clip(min=0)], capsize=2.5, **style)
    else:
        ax.plot(x, y, **style)


def plot_accuracy_vs_sparsity(table, tiers=("a", "b", "c"), dense_top1: float | None = None,
                              title: str = "Test error of each allocation against FCPTS, tier by tier") -> plt.Figure:
    """One panel per tier: test error (%, log scale, lower is better) at each target, one line per allocation,
    FCPTS (which always reconstructs) in every panel. The log scale separates 1 % from 2 % error as clearly as
    20 % from 40 %; error bars are the rows' 95 % intervals where the table has ``low``/``high``."""
    use_style()
    pruned = table[~registry.is_role(table["method"], "reference")]
    targets = sorted(set(pruned["target"].map(target_key)))
    position = {t: i for i, t in enumerate(targets)}
    fig, axes = plt.subplots(1, len(tiers), figsize=(4.6 * len(tiers), 4.2), sharey=True, squeeze=False)
    axes = axes[0]
    proposed = registry.is_role(table["method"], "proposed")
    fcpts = table[proposed].sort_values("target")
    for ax, tier in zip(axes, tiers):
        rows = table[(table["tier"] == tier) & ~proposed]
        for method, part in rows.groupby("method", sort=False):
            part = part.sort_values("target")
            _error_line(ax, part, [position[target_key(t)] for t in part["target"]], color(method), label(method))
        for method, part in fcpts.groupby("method", sort=False):
            _error_line(ax, part, [position[target_key(t)] for t in part["target"]], color(method), label(method),
                        bold=True)
        _error_axis(ax, dense_top1)
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels([f"{float(t):.0%}" for t in targets])
        ax.set_title(TIER_LABELS.get(tier, tier), fontsize=10)
        ax.set_xlabel("target global sparsity")
    axes[0].set_ylabel("test error (%, log scale; lower is better)")
    fig.suptitle(title, fontweight="bold", y=1.0)
    _legend_below(fig, axes, ncol=8)
    return fig


def plot_schedules(table, dense_top1: float | None = None,
                   title: str = "FCPTS against training-aware pruning schedules") -> plt.Figure:
    """Top-1 (%) against sparsity: FCPTS (post-training, no labels) and prune-while-training with the
    one-shot, iterative, AGP and one-cycle schedules (labels, same number of steps)."""
    use_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sched = table[registry.is_scheduled(table["method"])]
    for name, part in sched.groupby("schedule", sort=False):
        part = part.sort_values("target")
        ax.plot(part["achieved_sparsity"] * 100, part["top1"] * 100, marker="o", markersize=4, linewidth=1.3,
                color=color(name), label=f"{label(name)} (prune + train)")
        _band(ax, part, color(name))
    for method, fcpts in table[registry.is_role(table["method"], "proposed")].groupby("method", sort=False):
        fcpts = fcpts.sort_values("target")
        ax.plot(fcpts["achieved_sparsity"] * 100, fcpts["top1"] * 100, marker="s", markersize=5, linewidth=2.0,
                color=color(method), label=f"{label(method)} (post-training)")
        _band(ax, fcpts, color(method))
    if dense_top1 is not None:
        dense = registry.names(role="reference")[0]
        ax.axhline(100 * dense_top1, color=color(dense), linestyle="--", linewidth=1, label=label(dense))
    ax.set_xlabel("global sparsity (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    _legend_below(fig, [ax], ncol=3)
    return fig


RUN_KINDS = {  # what a run costs and needs, one colour each (accuracy_vs_time)
    "a": ("masks only (tier a)", "#9ecae1"),
    "b": ("+ BN re-estimation (tier b)", "#4292c6"),
    "c": ("+ reconstruction, allocation fixed (tier c)", "#08519c"),
    "train": ("prune while training, with labels", "#31a354"),
    "learned": ("FCPTS: learned allocation, no labels", "#d62728"),
}


def _run_kind(row) -> str:
    if registry.is_role(str(row["method"]), "proposed"):
        return "learned"
    if registry.is_family(str(row["method"]), "training"):
        return "train"
    return str(row["tier"])


def plot_schedule_shapes(curves: Mapping[str, tuple[list[float], list[float]]],
                         title: str = "How fast each schedule prunes") -> plt.Figure:
    """The sparsity schedules of training-aware pruning: the fraction of the final sparsity reached (%) against
    training progress (``curves``: {schedule name: (progress, fraction)})."""
    use_style()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for name, (t, y) in curves.items():
        ax.plot(t, [100 * v for v in y], color=color(name), linewidth=2, label=label(name))
    ax.set_xlabel("training progress")
    ax.set_ylabel("share of the final sparsity (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_time(table, targets, title: str = "What each kind of method costs and buys") -> plt.Figure:
    """One panel per target: test error (%, log scale) against wall-clock seconds (log scale) of every run,
    coloured by the kind of run (tier a, b, c, training-aware, FCPTS). The best run of each kind is labelled."""
    use_style()
    targets = list(targets)
    fig, axes = plt.subplots(1, len(targets), figsize=(5.6 * len(targets), 4.4), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, target in zip(axes, targets):
        rows = table[at_target(table["target"], target) & ~registry.is_role(table["method"], "reference")].copy()
        rows["kind"] = rows.apply(_run_kind, axis=1)
        for kind, (text, c) in RUN_KINDS.items():
            part = rows[rows["kind"] == kind]
            if part.empty:
                continue
            seconds = part["wall_time"].astype(float).clip(lower=1e-2)
            ax.scatter(seconds, _error(part["top1"]), color=c, marker="s" if kind == "learned" else "o",
                       s=80 if kind == "learned" else 40, edgecolor="white", linewidth=0.6, label=text,
                       zorder=4 if kind == "learned" else 3)
            best = part.loc[part["top1"].idxmax()]
            name = label(best["schedule"] if kind == "train" else best["method"])
            ax.annotate(name, (max(float(best["wall_time"]), 1e-2), float(_error(best[["top1"]]).iloc[0])),
                        xytext=(5, -3), textcoords="offset points", fontsize=8, color=c)
        _error_axis(ax, None)
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock time of the run (s, log scale)")
        ax.set_title(f"global sparsity {target:.0%}")
    axes[0].set_ylabel("test error (%, log scale; lower is better)")
    fig.suptitle(title, fontweight="bold", y=1.0)
    _legend_below(fig, axes, ncol=3)
    return fig


PUBLISHED_COLUMNS = ("model", "weights", "method", "reconstruction", "dataset", "sparsity", "metric", "value",
                     "qualifier", "source")


def read_published():
    """The published numbers of the kit's checkout (``data/published_numbers.csv``); an empty table when the kit is
    installed without its checkout."""
    import pandas as pd

    root = checkout()
    path = root / PUBLISHED_NUMBERS if root else None
    if path is None or not path.is_file():
        return pd.DataFrame(columns=list(PUBLISHED_COLUMNS))
    return pd.read_csv(path, keep_default_na=False)


PUBLISHED_STYLES = {"none": dict(linestyle="--", marker="v"), "layer-wise": dict(linestyle="-", marker="^"),
                    "training-aware": dict(linestyle=":", marker="D")}


def published_curves(published, model: str) -> tuple[list[dict], list[str]]:
    """The published numbers for ``model`` (columns model, weights, method, reconstruction, sparsity, metric, value,
    qualifier, source) as curves of top-1 points lost from each source's own dense model: dicts with text, method,
    reconstruction, sparsity (fractions) and drop (points). Values whose dense model the source does not give, and
    claims that are not a top-1 value, come back as notes to print instead of points."""
    rows = published[published["model"] == model].fillna({"reconstruction": "", "weights": "", "qualifier": ""})
    top1 = rows[rows["metric"] == "top1"]
    reference = registry.is_role(top1["method"], "reference")
    dense = {r["weights"]: float(r["value"]) for _, r in top1[reference].iterrows()}
    curves, notes = [], []
    for (method, recon, weights), part in top1[~reference].groupby(["method", "reconstruction", "weights"], sort=False):
        part = part.sort_values("sparsity")
        source = "msbench" if "msbench" in part["source"].iloc[0] else part["source"].iloc[0].split(",")[0]
        if weights not in dense:  # no dense model given: a drop cannot be computed, so it is not drawn
            notes += [f"{label(method)} at {r['sparsity']:.0%}: top-1 {r['value']:g} % ({source}; its dense model "
                      "is not stated)" for _, r in part.iterrows()]
            continue
        text = {"none": f"{label(method)}, no reconstruction", "layer-wise": f"{label(method)} + layer-wise "
                "reconstruction"}.get(recon, label(method))
        curves.append(dict(text=f"{text} ({source}; dense {dense[weights]:g})", method=method, reconstruction=recon,
                           sparsity=part["sparsity"].astype(float).to_numpy(),
                           drop=dense[weights] - part["value"].astype(float).to_numpy()))
    claims = rows[rows["metric"] != "top1"]
    notes += [f"{label(r['method'])}{' (' + r['reconstruction'] + ')' if r['reconstruction'] else ''} at "
              f"{r['sparsity']:.0%}: top-1 {r['qualifier']} {r['value']:g} points "
              f"{CLAIM_PHRASES.get(r['metric'], r['metric'])} ({r['source'].split(',')[0]})"
              for _, r in claims.iterrows()]
    return curves, notes


def _notes_under(ax, notes: list[str], y: float = -0.2) -> None:
    if notes:
        ax.text(0.0, y, "\n".join(notes), transform=ax.transAxes, fontsize=7.5, va="top", ha="left", color="#333333")


def _draw_published(ax, curves: list[dict], faint: bool = False) -> None:
    for c in curves:
        ax.plot(c["sparsity"] * 100, c["drop"], color=color(c["method"]), linewidth=1.0 if faint else 1.4,
                markersize=4 if faint else 5, alpha=0.6 if faint else 1.0, label=c["text"],
                **PUBLISHED_STYLES.get(c["reconstruction"], dict(marker="o")))


def plot_published(published, ours=None, model: str = "ResNet-50", dense_top1: float | None = None,
                   title: str = "Top-1 lost to pruning, from each study's own dense model") -> plt.Figure:
    """Points of top-1 lost against sparsity, each curve measured from its own dense model, so studies with
    different dense checkpoints can share an axis. Left: the numbers printed in the sources for ``model`` on
    ImageNet (``published``: columns model, weights, method, reconstruction, sparsity, metric, value, qualifier,
    source); values whose dense model the source does not give, and claims that are not a top-1 value, are
    listed under the panel instead of drawn. Right: this kit's counterparts (``ours``: method, label, sparsity,
    top1, dataset; ``dense_top1`` its dense model), on their own dataset."""
    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 4.8), sharey=True)
    curves, notes = published_curves(published, model)
    _draw_published(left, curves)
    _notes_under(left, notes)
    left.set_title(f"{model} on ImageNet, as published", fontsize=11)
    if ours is not None and len(ours) and dense_top1 is not None:
        tier_styles = {"tier a": dict(linestyle="--", marker="v"), "tier c": dict(linestyle="-", marker="^")}
        for text, part in ours.groupby("label", sort=False):
            part = part.sort_values("sparsity")
            style = next((v for k, v in tier_styles.items() if k in text), dict(linestyle="-", marker="s"))
            right.plot(part["sparsity"] * 100, 100 * (dense_top1 - part["top1"]), color=color(part["method"].iloc[0]),
                       markersize=5, linewidth=2 if registry.is_role(part["method"].iloc[0], "proposed") else 1.4,
                       label=f"{text} (dense {100 * dense_top1:.2f})", **style)
        datasets = ", ".join(sorted(set(ours["dataset"])))
        right.set_title(f"this kit, the same comparison ({datasets})", fontsize=11)
    else:
        right.text(0.5, 0.5, "no results of this kit yet", ha="center", va="center", transform=right.transAxes)
    for ax, where in ((left, "lower left"), (right, "center left")):
        ax.set_xlabel("global sparsity (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(100, -3)  # lost points grow downwards: higher on the page is better
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc=where, fontsize=7.5)
    left.set_ylabel("top-1 lost from the dense model (points)")
    fig.suptitle(title, fontweight="bold", y=1.0)
    fig.tight_layout()
    return fig


REPRODUCTION_STYLES = {  # (kind of series) -> line style and marker; the colour is the method's
    "proposed": dict(linestyle="-", marker="o", linewidth=2.2), "kit": dict(linestyle="-.", marker="D", linewidth=2.2),
    "a": dict(linestyle=":", marker="x", linewidth=1.1), "b": dict(linestyle="--", marker="v", linewidth=1.3),
    "c": dict(linestyle="-", marker="^", linewidth=1.3),
    "learner": dict(linestyle=":", marker="s", linewidth=1.6)}
_SPARE_COLORS = ("#ff7f0e", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939")


def _method_colors(methods) -> dict[str, str]:
    """Each method's own colour, unless another method in the same figure has it already (the learners share
    colours with the allocations): then a spare one, in order."""
    colors: dict[str, str] = {}
    spare = iter(c for c in _SPARE_COLORS)
    for method in dict.fromkeys(methods):
        c = color(method)
        colors[method] = next(spare) if c in colors.values() else c
    return colors


def plot_reproduction(summary, published, published_names: Mapping[str, str] | None = None,
                      title: str = "Top-1 lost to pruning on ImageNet: this kit's runs beside the published numbers"):
    """One panel per model: the kit's runs (``summary`` of ``fcpts.reproduce``: model, recipe, label, method, tier,
    target, top1, low, high, dense_top1; with 95 % intervals) and the published numbers for the same architecture
    (``published_curves``; faint, each from its own dense model), as points lost against sparsity. Claims that are
    not points, such as FCPTS's "over 30 points" at 80 %, are printed under the figure."""
    use_style()
    models = list(dict.fromkeys(summary["model"]))
    cols = min(len(models), 2)
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.2 * cols, 5.4 * rows), squeeze=False)
    colors = _method_colors(summary.loc[summary["label"] != "dense", "method"])
    notes = []
    for ax, model in zip(axes.flat, models):
        part = summary[(summary["model"] == model) & (summary["label"] != "dense")]
        dense = float(summary.loc[summary["model"] == model, "dense_top1"].iloc[0])
        for text, series in part.groupby("label", sort=False):
            series = series.sort_values("target")
            first = series.iloc[0]
            family = registry.get_method(first["method"]).family
            kind = (("proposed" if first["recipe"] == "released" else "kit")
                    if registry.is_role(first["method"], "proposed") else first["tier"] if family == "allocation"
                    else "learner")
            yerr = [100 * (series["high"] - series["top1"]).fillna(0), 100 * (series["top1"] - series["low"]).fillna(0)]
            ax.errorbar(series["target"] * 100, 100 * (dense - series["top1"]), yerr=yerr, color=colors[first["method"]],
                        capsize=2, markersize=5, label=text, **REPRODUCTION_STYLES[kind])
        name = (published_names or {}).get(model, model)
        curves, model_notes = published_curves(published, name)
        _draw_published(ax, curves, faint=True)
        notes += [f"{name}: {note}" for note in model_notes]
        ax.set_title(f"{model} (this kit's dense model: {100 * dense:.2f} %)", fontsize=11)
        ax.set_xlabel("global sparsity (%)")
        ax.set_ylabel("top-1 lost from the dense model (points)")
        ax.set_xlim(0, 100)
        low, high = ax.get_ylim()
        ax.set_ylim(max(high, 1.0), min(low, -1.0))  # lost points grow downwards: higher on the page is better
        ax.legend(loc="lower left", fontsize=7)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    fig.suptitle(title, fontweight="bold", y=1.0)
    fig.tight_layout()
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), fontsize=8, va="top", ha="left", color="#333333")
    return fig


def plot_learner_trajectories(trajectories, targets, title: str = "Global sparsity of each learner's masks, step by step"):
    """One panel per target: the global sparsity of every learner's masks per step (line: mean over seeds,
    band: min–max), the target dashed. Where a curve ends is where the learner left the sparsity before the
    kit's exact projection moved it to the target."""
    use_style()
    targets = list(targets)
    fig, axes = plt.subplots(1, len(targets), figsize=(5.6 * len(targets), 4.0), squeeze=False)
    for ax, target in zip(axes[0], targets):
        part = trajectories[at_target(trajectories["target"], target)]
        for method, rows in part.groupby("method", sort=False):
            stats = rows.groupby("step")["sparsity"].agg(["mean", "min", "max"])
            c = color(method)
            seeds = rows["seed"].nunique()
            ax.plot(stats.index, stats["mean"], color=c, linewidth=1.5, label=label(method))
            if seeds > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=c, alpha=0.18, linewidth=0)
        ax.axhline(target, color="#333333", linestyle="--", linewidth=1, label="target S*")
        ax.set_xlabel("step")
        ax.set_ylabel("global sparsity of the masks")
        ax.set_title(f"target {target:.0%}")
        lowest = part.groupby(["method", "step"])["sparsity"].mean().min() if len(part) else target
        ax.set_ylim(max(0.0, min(target - 0.1, lowest - 0.03)), min(1.0, target + 0.1))
    fig.suptitle(title, fontweight="bold")
    _legend_below(fig, axes[0], ncol=5)
    return fig


def plot_learner_allocations(allocations, targets, seed: int = 0, title: str = "Learned per-layer sparsity"):
    """One panel per target: each learner's final per-layer sparsity (after the projection) beside FCPTS's."""
    use_style()
    targets = list(targets)
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 3.6 * len(targets)), squeeze=False, layout="constrained")
    for ax, target in zip(axes[:, 0], targets):
        part = allocations[at_target(allocations["target"], target) & (allocations["seed"] == seed)]
        curves = {label(m): dict(zip(rows["layer"], rows["sparsity"])) for m, rows in part.groupby("method", sort=False)}
        if curves:
            plot_allocation(curves, title=f"{title} at {target:.0%} (seed {seed})", ax=ax)
    return fig


def plot_schedule_length(rows, target: float = 0.95, dense_top1: float | None = None,
                         title: str = "Top-1 at {target:.0%} sparsity against the reconstruction length"):
    """One panel: each method's top-1 (%) per seed (dots) and its mean (line) against the number of
    reconstruction steps (log scale), from rows with columns label, method, steps, seed, top1 (``schedule_rows``).
    The spread of the dots is the seed-to-seed swing; whether it closes as the schedule grows is the point."""
    use_style()
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    labels = list(dict.fromkeys(rows["label"]))
    offsets = dict(zip(labels, np.linspace(-0.04, 0.04, len(labels)) if len(labels) > 1 else [0.0]))
    for lab in labels:
        part = rows[rows["label"] == lab].sort_values("steps")
        c = SERIES_COLORS.get(lab) or color(part["method"].iloc[0])
        x = part["steps"] * 10 ** offsets[lab]  # side by side on the log axis, not on top of each other
        ax.scatter(x, 100 * part["top1"], color=c, s=22, alpha=0.75, zorder=3)
        means = part.groupby("steps")["top1"].mean()
        ax.plot(means.index * 10 ** offsets[lab], 100 * means.values, color=c, marker="o", linewidth=1.6,
                markersize=7, markerfacecolor="white", label=f"{lab}: mean, dots = seeds", zorder=2)
    if dense_top1 is not None:
        ax.axhline(100 * dense_top1, color=_dense_color(), linestyle=":", linewidth=1, label="dense model")
    steps = sorted(rows["steps"].unique())
    ax.set_xscale("log")
    ax.set_xticks(steps, [f"{int(n):,}" for n in steps])
    ax.minorticks_off()
    ax.set_xlabel("reconstruction steps (log scale)")
    ax.set_ylabel("top-1 after the projection (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title.format(target=target))
    _legend_below(fig, [ax], ncol=2)
    return fig


def plot_coverage(coverage, targets, tier: str = "finetune",
                  title: str = "Coverage: the fraction of weights ever active, update by update"):
    """One panel per target: DST-EE's and RigL's coverage after every mask update (line: mean over seeds, band:
    min–max); the dotted line is the density 1 − S*, where every method starts."""
    use_style()
    targets = list(targets)
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 3.8), squeeze=False)
    for ax, target in zip(axes[0], targets):
        part = coverage[at_target(coverage["target"], target) & (coverage["tier"] == tier)]
        for method, rows in part.groupby("method", sort=False):
            stats = rows.groupby("step")["coverage"].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], color=color(method), marker="o", markersize=3, label=label(method))
            if rows["seed"].nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color(method), alpha=0.18, linewidth=0)
        ax.axhline(1 - target, color="#333333", linestyle=":", linewidth=1, label="density 1 − S*")
        ax.set_xlabel("training step")
        ax.set_ylabel("weights ever active")
        ax.set_title(f"target {target:.0%} ({tier})")
    fig.suptitle(title, fontweight="bold")
    _legend_below(fig, axes[0], ncol=3)
    return fig


def plot_training_aware(summary, dense_top1: float | None = None,
                        title: str = "Dynamic sparse training against one-cycle pruning and FCPTS"):
    """Top-1 against the target for each method and start: the mean over seeds with its 95 % interval over seeds
    and test images where the summary has one (``low``, ``high``), else ± one std over seeds. ``summary``: rows
    of method, tier, target, mean, std, n[, low, high] (``notebook.training_summary``)."""
    use_style()
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    styles = {"finetune": "-", "scratch": "--", "c": "-", "-": "-"}
    for (method, tier), rows in summary.sort_values(["tier"], kind="stable").groupby(["method", "tier"], sort=False):
        rows = rows.sort_values("target")
        name = label(method) + ("" if tier in ("c", "-") else f", {'from dense' if tier == 'finetune' else 'scratch'}")
        spread = rows["std"].fillna(0)
        below, above = spread, spread
        if "low" in rows:  # the bootstrap interval where the rows kept per-image outcomes
            below = (rows["mean"] - rows["low"]).where(rows["low"].notna(), spread)
            above = (rows["high"] - rows["mean"]).where(rows["high"].notna(), spread)
        ax.errorbar(100 * rows["target"], 100 * rows["mean"], yerr=[100 * below, 100 * above], capsize=3,
                    color=color(method), linestyle=styles.get(tier, "-"), marker="o", markersize=4, label=name)
    if dense_top1 is not None:
        ax.axhline(100 * dense_top1, color=_dense_color(), linestyle=":", linewidth=1, label=registry.label(registry.names(role="reference")[0]))
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig
