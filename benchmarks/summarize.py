"""Assemble benchmarks/results/SUMMARY.md from the result files (never from memory): the README includes it.

    python -m benchmarks.summarize            # reads benchmarks/results/*, writes benchmarks/results/SUMMARY.md

Each section is written only when its result file exists; a missing one is listed as "not run".
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from benchmarks._common import RESULTS, ROOT
from fcpts.config import at_target
from fcpts.registry import names

DENSE, FCPTS = names(role="reference")[0], names(role="proposed", default=True)[0]

# The targets the README reports against.
TARGET_STEP_RATIO = 1.10  # FCPTS step / plain masked-KD step (issue #24)
TARGET_BRIDGE_SHARE = 0.05  # bridge + objective share of a step
TARGET_DENSE_GAP = 0.02  # FCPTS within 2 points of dense at 0.9
QUALITY_FROM = 0.7  # FCPTS >= every baseline tier at every target from here up
EXPECTED_TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)

# Rows that ran the reconstruction loop before the released lr schedule and start became the default (their
# ``loop`` column says "legacy: ..."): labelled apart, never pooled with rows of the current loop.
LEGACY_MARK = " ‡"
LEGACY_NOTE = ("‡ = computed with the kit's earlier loop: the lr ramp base·(i+1)/W then a cosine over the remaining "
               "steps, and the exact-count ERK start with its 1e-6 threshold clamp (the `loop` column says "
               "\"legacy: ramp_then_cosine/exact\"); unmarked FCPTS and tier c rows use the released schedule and start.")
VARIANT_LABELS = {"released-histogram": "FCPTS (released, histogram) [default]",
                  "released-kde": "FCPTS (released, KDE)", "ste-histogram": "FCPTS (STE, histogram)",
                  "ste-kde": "FCPTS (STE, KDE)", "kit": "FCPTS (kit recipe: released + held-out selection)"}


def _load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, digits=2, pct=False):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.{digits}f}" if pct else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**meets**" if ok else "**misses**")


# --------------------------------------------------------------------------------------------------------
def quality_table(results: Path = RESULTS) -> pd.DataFrame:
    """All quality rows, one label per (variant, method, tier); ``path`` and ``has_outcomes`` (whether the row
    kept its per-image outcomes) say where to find them for the paired tests."""
    from fcpts.table import SIDE_KEY, read_side, read_table

    frames = []
    for path in sorted(results.glob("quality_*.csv")):
        variant = path.stem.removeprefix("quality_")
        table = read_table(path)
        if len(table):
            side = read_side(path, "outcomes")
            kept = set(side[list(SIDE_KEY)].astype(str).apply(tuple, axis=1)) if len(side) else set()
            table = table.assign(variant=variant, path=str(path),
                                 has_outcomes=table[list(SIDE_KEY)].astype(str).apply(tuple, axis=1).isin(kept))
            frames.append(table)
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)

    def label(r):
        mark = LEGACY_MARK if is_legacy(r) else ""
        if r["method"] == FCPTS:
            return VARIANT_LABELS.get(r["variant"], f"FCPTS ({r['variant']})") + mark
        if r["method"] == DENSE:
            return "dense"
        return f"{r['method']} ({r['tier']})" + mark

    table["label"] = table.apply(label, axis=1)
    return table


def is_legacy(row) -> bool:
    """Whether a runner row ran the earlier reconstruction loop (its ``loop`` column starts with "legacy")."""
    loop = row.get("loop")  # a dict or a pandas row; NaN in tables written before the column
    return isinstance(loop, str) and loop.startswith("legacy")


def current_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Where a (label, target) has rows with per-image outcomes (recomputed on the current dense model), only
    those; elsewhere the older rows, which show a mean and a spread over seeds but take no part in verdicts."""
    keep = table.groupby(["label", "target"]).has_outcomes.transform("any")
    return table[table.has_outcomes | ~keep]


def cell_interval(rows: pd.DataFrame):
    """Mean top-1 with its 95 % interval over seeds and test images (``fcpts.stats``), or None without outcomes;
    the last row written per seed."""
    from fcpts.table import outcome_matrix
    from fcpts.stats import bootstrap_interval

    if not rows.has_outcomes.all():
        return None
    rows = rows.drop_duplicates("seed", keep="last").sort_values("seed")
    return bootstrap_interval(outcome_matrix(rows.path.iloc[0], rows))


def paired_verdict(mine: pd.DataFrame, other: pd.DataFrame):
    """(difference interval mine − other, seeds) over the seeds both ran with outcomes; None if they share none.
    Each label's rows live in one result file."""
    from fcpts.table import paired_over_seeds

    if mine.empty or other.empty:
        return None
    found = paired_over_seeds(mine.path.iloc[0], mine.sort_values("seed"), other.path.iloc[0], other.sort_values("seed"))
    return None if found is None else (found[0], len(found[1]))


VERDICT_LISTS = ("beaten", "beats", "noise", "by_means")


def _verdicts_at(pruned: pd.DataFrame, lab: str, baselines: list[str], t: float) -> dict:
    """FCPTS label ``lab`` against every baseline label at target ``t``: paired verdict texts by kind, the
    comparisons by means (same dense model only), and the counts of unpaired and missing cells."""
    out = {k: [] for k in VERDICT_LISTS} | {"unpaired": 0, "missing": 0, "compared": 0, "other_loop": 0}
    at = at_target(pruned.target, t)
    mine = pruned[(pruned.label == lab) & at]
    legacy = lab.endswith(LEGACY_MARK)
    for name in baselines:
        # a tier c baseline of the same loop as ``lab`` where there is one at this target, else the other loop's
        same, other_loop = (name + LEGACY_MARK, name) if legacy else (name, name + LEGACY_MARK)
        base_label = same if ((pruned.label == same) & at).any() else other_loop
        other = pruned[(pruned.label == base_label) & at]
        # a tier c row of the other loop (tiers a/b run no loop: their one label serves both)
        out["other_loop"] += int(base_label != same and not other.empty and name.endswith("(c)"))
        if mine.empty or other.empty:
            out["missing"] += 1
            continue
        same_model = mine.has_outcomes.all() == other.has_outcomes.all()  # never across dense models
        out["compared"] += same_model
        if same_model and other.top1.mean() > mine.top1.mean() + 1e-12:
            out["by_means"].append(f"{base_label} at {t:.0%}")
        found = paired_verdict(mine, other)
        if found is None:
            out["unpaired"] += 1
            continue
        d, n = found
        text = f"{base_label} at {t:.0%} ({d.signed()}, n={n})"
        out["beaten" if d.high < 0 else "beats" if d.low > 0 else "noise"].append(text)
    return out


def _pooled(found_at: dict, targets: list[float]) -> dict:
    """The verdicts of ``_verdicts_at`` at several targets, joined: lists concatenated, counts summed."""
    return {k: sum((found_at[t][k] for t in targets), [] if k in VERDICT_LISTS else 0) for k in found_at[targets[0]]}


def _paired(v: dict) -> int:
    return len(v["beaten"]) + len(v["beats"]) + len(v["noise"])


def _verdict_lines(head: str, v: dict, bullet: str) -> list[str]:
    paired = _paired(v)
    complete = not v["missing"] and not v["unpaired"]
    lines = [f"{bullet}{head}: paired {paired} of {paired + v['unpaired'] + v['missing']}: beaten by "
             f"{len(v['beaten'])}, beats {len(v['beats'])}, within noise {len(v['noise'])}"
             + ("" if complete else f"; not yet paired {v['unpaired']} (no per-image outcomes), missing {v['missing']}")
             + (f"; {v['other_loop']} of them against tier c rows of the other loop" if v["other_loop"] else "")
             + f". By means (same dense model only): beaten by {len(v['by_means'])} of {v['compared']}."]
    sub = "  " + bullet
    if v["beaten"]:
        lines.append(f"{sub}beaten by: {'; '.join(v['beaten'])}")
    if v["noise"]:
        lines.append(f"{sub}within noise: {'; '.join(v['noise'])}")
    return lines


def quality_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    table = quality_table(results)
    if table.empty:
        return ["## Quality (embedded default)", "", "Not run yet (`python -m benchmarks.quality`)."], {}
    table = table[table.config_hash.notna()]
    # the dense top-1 of each generation: rows with per-image outcomes (current dense model) and † rows (earlier)
    dense_of = {kept: float(part.top1.mean()) for kept, part in table[table.method == DENSE].groupby("has_outcomes")}
    table = current_cells(table)
    dense = table[table.method == DENSE].top1
    dense_mean = float(dense.mean()) if len(dense) else float("nan")
    pruned = table[table.method != DENSE]
    stats = pruned.groupby(["label", "target"]).top1.agg(["mean", "std", "count"]).reset_index()
    targets = sorted(stats.target.unique())
    labels = sorted(stats.label.unique(), key=lambda s: (not s.startswith("FCPTS"), s))
    lines = ["## Quality (embedded default)", "",
             f"Top-1 (%) on the digits test split (360 images; one image = 0.28 points), embedded ResNet-50 "
             f"(`Config.quick_cpu()`: 150 steps, batch 64). Cells: mean over the seeds with its 95 % bootstrap "
             f"interval over seeds and test images (`fcpts.stats`), n = seeds. A cell marked † was computed before "
             f"the runner kept per-image outcomes (and on an earlier dense model): mean ± std over seeds, no "
             f"interval, no verdict. Dense: {_fmt(dense_mean, 2, True)} (n = {len(dense)})"
             + (f"; the earlier dense model of the † cells: {_fmt(dense_of[False], 2, True)}"
                if True in dense_of and False in dense_of else "") + ".", ""]
    rows = []
    for lab in labels:
        cells = [lab]
        for t in targets:
            part = pruned[(pruned.label == lab) & (at_target(pruned.target, t))]
            if part.empty:
                cells.append("–")
                continue
            interval = cell_interval(part)
            if interval is not None:
                cells.append(f"{interval.points()} (n={part.seed.nunique()})")
            else:
                spread = f" ± {_fmt(part.top1.std(), 1, True)}" if len(part) > 1 else ""
                cells.append(f"{_fmt(part.top1.mean(), 1, True)}{spread} (n={len(part)})†")
        rows.append(cells)
    lines += _table(["method (tier)"] + [f"{t:.0%}" for t in targets], rows)
    if pruned.label.str.endswith(LEGACY_MARK).any():
        lines += ["", LEGACY_NOTE]
    # --- the targets: paired verdicts against every baseline tier ---
    checks: dict = {}
    default = VARIANT_LABELS["released-histogram"]
    fcpts_labels = [lab for lab in labels if lab.startswith("FCPTS")]
    lines += ["", "Tiers: a = masks only (POT: its correction + calibration), b = + BN re-estimation, "
              "c = + FCPTS's reconstruction with the allocation's thresholds frozen.", "",
              f"Against every baseline tier at every target (the target: not beaten from {QUALITY_FROM:.0%}). "
              "*Paired*: the difference in points on the same test images and seeds, with its 95 % bootstrap "
              "interval; \"beats\" or \"beaten\" only when the interval excludes 0. *Means* (the earlier rule, "
              "for comparison): beaten whenever a baseline's mean is higher, counted only between cells of the "
              "same dense model.", ""]
    from fcpts.baselines import TIERS
    from fcpts.registry import names

    expected_baselines = [f"{m} ({t})" for m in names(family="allocation") for t in TIERS]
    for lab in [default] + [x for x in fcpts_labels if x != default]:
        found_at = {t: _verdicts_at(pruned, lab, expected_baselines, t) for t in EXPECTED_TARGETS}
        high = [t for t in EXPECTED_TARGETS if t >= QUALITY_FROM - 1e-9]
        low = [t for t in EXPECTED_TARGETS if t not in high]
        pooled = _pooled(found_at, high)
        checks[f"{lab}: not beaten (paired) by any baseline tier from {QUALITY_FROM:.0%}"] = \
            (not pooled["beaten"] if _paired(pooled) else None, pooled["missing"] + pooled["unpaired"])
        lines += _verdict_lines(f"**{lab}** from {QUALITY_FROM:.0%}", pooled, "- ")
        if low:  # outside the target, but every target gets its verdicts
            lines += _verdict_lines("at " + ", ".join(f"{t:.0%}" for t in low), _pooled(found_at, low), "  - ")
        at90 = stats[(stats.label == lab) & (at_target(stats.target, 0.9))]
        rows90 = pruned[(pruned.label == lab) & (at_target(pruned.target, 0.9))]
        dense90 = dense_of.get(bool(rows90.has_outcomes.all()), float("nan")) if len(rows90) else float("nan")
        if len(at90) and not math.isnan(dense90):
            gap = dense90 - float(at90.iloc[0]["mean"])
            ok90 = gap <= TARGET_DENSE_GAP
            checks[f"{lab}: within 2 points of dense at 90%"] = (ok90, 0)
            lines.append(f"  - within {100 * TARGET_DENSE_GAP:.0f} points of dense at 90 %: gap "
                         f"{_fmt(gap, 1, True)} points (n = {int(at90.iloc[0]['count'])} seed(s)): {_verdict(ok90)}")
    seeds = sorted(table.seed.unique())
    lines += ["", f"Seeds run: {', '.join(str(int(s)) for s in seeds)}; rows shown: {len(table)}."]
    return lines, checks


LOOP_VARIANTS = ("released-histogram", "kit")  # the FCPTS variants recomputed with the released schedule and start


def loop_effect(results: Path = RESULTS) -> pd.DataFrame:
    """Per FCPTS variant and target: the released schedule and start (current rows) against the kit's earlier loop
    (‡ rows) on the same seeds and test images: both cells' top-1 with intervals and the paired difference."""
    from fcpts.table import outcome_matrix, paired_over_seeds
    from fcpts.stats import bootstrap_interval

    table = quality_table(results)
    if table.empty:
        return pd.DataFrame()
    rows = []
    for variant in LOOP_VARIANTS:
        fc = table[(table.method == FCPTS) & (table.variant == variant) & table.has_outcomes]
        for t in EXPECTED_TARGETS:
            cell = fc[at_target(fc.target, t)]
            legacy = cell.apply(is_legacy, axis=1) if len(cell) else pd.Series(dtype=bool)
            new, old = cell[~legacy], cell[legacy]
            found = None if new.empty or old.empty else paired_over_seeds(
                new.path.iloc[0], new.sort_values("seed"), old.path.iloc[0], old.sort_values("seed"))
            if found is None:
                continue
            d, seeds = found
            pick = lambda part: part[part.seed.isin(seeds)].drop_duplicates("seed", keep="last").sort_values("seed")
            now, before = (bootstrap_interval(outcome_matrix(p.path.iloc[0], pick(p))) for p in (new, old))
            rows.append(dict(variant=variant, target=t, seeds=len(seeds), released=now, earlier=before, difference=d,
                             verdict="better" if d.low > 0 else "worse" if d.high < 0 else "within noise"))
    return pd.DataFrame(rows)


def loop_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    effect = loop_effect(results)
    if effect.empty:
        return [], {}
    lines = ["## The released lr schedule and start against the kit's earlier loop", "",
             "FCPTS with `lr_schedule=\"released\"` and `init_rounding=\"released\"` (the defaults now) against the same "
             "recipe with the earlier loop (‡: ramp then cosine, exact-count start with a 1e-6 clamp), on the same "
             "seeds and test images. Top-1 (%) with 95 % intervals; the difference in points (released − earlier) "
             "with its paired interval.", ""]
    rows = [[VARIANT_LABELS[r.variant], f"{r.target:.0%}", r.seeds, r.released.points(), r.earlier.points(),
             r.difference.signed(), r.verdict] for r in effect.itertuples()]
    lines += _table(["FCPTS", "target", "n", "released loop", "earlier loop ‡", "difference", "verdict"], rows)
    counts = effect.verdict.value_counts()
    lines += ["", f"Of {len(effect)} cells: better {counts.get('better', 0)}, worse {counts.get('worse', 0)}, "
              f"within noise {counts.get('within noise', 0)}."]
    return lines, {}


# --------------------------------------------------------------------------------------------------------
def exact_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    doc = _load_json(results / "exact_control.json")
    if not doc:
        return ["## Exact control", "", "Not run yet (`python -m benchmarks.exact_control`)."], {}
    rows = pd.DataFrame(doc["results"])
    s = doc["settings"]
    lines = ["## Exact control", "",
             f"Random-init torchvision models (`weights=None`, 32 px; ViT: 6 blocks, 192 wide, 4 px patches). "
             f"Steps: L_c alone (SGD lr {s['lr']}, momentum 0.9) from a uniform allocation at S* − {s['offset']} until "
             f"|S − S*| < {s['tol']:.1%} (>{s['max_steps']}: not within {s['max_steps']} steps; n/r: not run, the "
             f"exactness check only). 'before' is the global sparsity "
             f"before the final projection (L_c run / `fcpts.sparsify`, {s['e2e_steps']} steps); 'exact' checks that "
             "the zero count after it equals round(S*·N) in both.", ""]
    archs = list(dict.fromkeys(rows.arch))
    targets = sorted(rows.target.unique())
    table = []
    for arch in archs:
        sub = rows[rows.arch == arch]
        cells = [arch, f"{int(sub.n_weights.iloc[0]):,}"]
        for t in targets:
            r = sub[at_target(sub.target, t)]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            if not r.get("dynamics", True) or r.get("dynamics") is False:
                steps = "n/r"
            elif r["steps_to_tol"] is None or (isinstance(r["steps_to_tol"], float) and math.isnan(r["steps_to_tol"])):
                steps = f">{s['max_steps']}"
            else:
                steps = int(r["steps_to_tol"])
            mark = "✓" if r["exact"] else "✗"
            cells.append(f"{steps} / {_fmt(r['e2e_sparsity_before_projection'], 2, True)} {mark}")
        table.append(cells)
    lines += _table(["arch", "N"] + [f"{t:.0%}" for t in targets], table)
    all_exact = bool(rows.exact.all())
    lines += ["", "Cells: steps to within 0.5 % / sparsity (%) before the projection in `fcpts.sparsify` / exact zero count.",
              "", f"- exact zero count == round(S*·N) for every architecture and target ({len(rows)} runs): "
              f"{_verdict(all_exact)}"]
    return lines, {"exact zero count everywhere": all_exact}


# --------------------------------------------------------------------------------------------------------
def speed_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    doc = _load_json(results / "speed.json")
    demo = _load_json(results / "demo_time.json")
    gpu = _load_json(results / "gpu.json")
    lines, checks = ["## Speed", ""], {}
    if doc:
        r = doc["results"]
        m = doc["machine"]
        lines += [f"CPU, {m.get('cpu_count')} cores, torch {m.get('torch')}, {m.get('torch_threads')} thread(s), load "
                  f"average {m.get('loadavg')} when written. Ratios are medians of interleaved repeats within one "
                  "process; absolute seconds depend on the machine's load at the time and are only comparable within "
                  "one table.", ""]
        if "steps" in r:
            st = r["steps"]
            sec = st["seconds"]
            lines += [f"One step, {st.get('model_source', 'ResNet-50')}, batch {st['batch'][0]} at {st['batch'][-1]} px:", ""]
            names = {"fcpts": "FCPTS (released, histogram)", "fcpts_ste": "FCPTS (STE)", "fcpts_kde": "FCPTS (KDE)",
                     "fcpts_sampled_hist": "FCPTS (histogram on ≤65,536 strided weights per layer)",
                     "masked_kd": "plain masked KD (zeros + masked grads)", "masked_kd_prune_hook": "masked KD via torch prune hook",
                     "dense_kd": "dense KD", "dense_train": "dense training (CE)"}
            lines += _table(["step", "median s", "× masked KD", "× dense training"],
                            [[names.get(k, k), _fmt(v["median"], 3), _fmt(v["median"] / sec["masked_kd"]["median"], 2),
                              _fmt(v["median"] / sec["dense_train"]["median"], 2)] for k, v in sec.items()])
            ratio = st["ratios"]["fcpts/masked_kd"]
            checks[f"FCPTS step <= {TARGET_STEP_RATIO:.2f}x masked KD"] = ratio <= TARGET_STEP_RATIO
            lines += ["", f"- FCPTS step / plain masked-KD step = {ratio:.2f} (target ≤ {TARGET_STEP_RATIO}): "
                          f"{_verdict(ratio <= TARGET_STEP_RATIO)}"]
            fast = st["ratios"].get("fcpts_sampled_hist/masked_kd")
            if fast is not None:
                checks[f"FCPTS step <= {TARGET_STEP_RATIO:.2f}x masked KD (histogram_max_samples=65536)"] = fast <= TARGET_STEP_RATIO
                lines += [f"- the same with `histogram_max_samples=65536` (a kit option; the released code histograms "
                          f"every weight): {fast:.2f}: {_verdict(fast <= TARGET_STEP_RATIO)}"]
        if "before_after" in r:  # issue #24: the step before and after, interleaved in one run
            ba = r["before_after"]
            rule = ba["histogram_rule"]
            lines += [f"- before / after issue #24, interleaved in one run: FCPTS step "
                      f"{ba['ratios']['fcpts_before/masked_kd']:.2f}× → {ba['ratios']['fcpts_now/masked_kd']:.2f}× "
                      f"masked KD; bridge + objective {ba['bridge_objective_share']['before']:.1%} → "
                      f"{ba['bridge_objective_share']['now']:.1%}; same training: {'yes' if ba['same_training'] else 'no'}; "
                      f"two-bin histogram against torch.histc: max deviation {rule['max_abs_deviation']:.1g} over "
                      f"{rule['points']} points"]
        if "components" in r:
            c = r["components"]
            share = c["bridge_objective_share"]
            checks["bridge + objective <= 5% of a step"] = share <= TARGET_BRIDGE_SHARE
            lines += [f"- bridge + objective (`global_sparsity()` + `controllable_loss`, timed inside the step) = "
                      f"{share:.1%} of an FCPTS step (target ≤ {TARGET_BRIDGE_SHARE:.0%}): "
                      f"{_verdict(share <= TARGET_BRIDGE_SHARE)}"]
            fast_share = c.get("bridge_objective_share_sampled_hist")
            if fast_share is not None:
                checks["bridge + objective <= 5% of a step (histogram_max_samples=65536)"] = fast_share <= TARGET_BRIDGE_SHARE
                lines += [f"- the same with `histogram_max_samples={c.get('sampled_histogram_max_samples', 65536)}`: "
                          f"{fast_share:.1%}: {_verdict(fast_share <= TARGET_BRIDGE_SHARE)}"]
            lines += [
                      f"- threshold parametrization (masks recomputed in every forward, masked in backward): "
                      f"+{c['parametrization_overhead_s']:.3f} s per student forward+backward"]
            lines += ["", "Share of one FCPTS step:", ""]
            lines += _table(["piece", "median s", "share"],
                            [[k, _fmt(c["seconds"][k]["median"], 3), f"{v:.1%}"] for k, v in c["share_of_fcpts_step"].items()])
        if "masks" in r:
            mk = r["masks"]
            sec = mk["seconds"]
            names = {"kit": "`ThresholdMask` (abs, in-place compare to a 0/1 float mask, float sum, multiply)",
                     "bool_count_cast": "bool mask, `count_nonzero`, cast to float, multiply (the kit before)",
                     "where": "bool mask, `count_nonzero`, `torch.where`",
                     "hardshrink": "`F.hardshrink`, then `count_nonzero` of its output"}
            lines += ["", f"Applying the masks: w ⊙ 1{{|w| > t}} and the pruned count over all {mk['numel']:,} weights "
                          f"({mk['layers']} layers, {mk['target']:.0%}), per pass:", ""]
            lines += _table(["form", "forward ms", "forward + backward ms", "same masked weights"],
                            [[names.get(k, k), _fmt(1e3 * sec[f"{k}_fwd"], 1), _fmt(1e3 * sec[f"{k}_fwd_bwd"], 1),
                              "yes" if ok else "**no**"] for k, ok in mk["identical"].items()])
        if "bridge" in r:
            lines += ["", "Bridge forward+backward against layer size (one layer):", ""]
            lines += _table(["weights", "histogram ms", "histogram ≤65,536 samples ms", "KDE ms", "exact count alone ms",
                             "KDE / histogram"],
                            [[f"{b['numel']:.0e}", _fmt(1e3 * b["histogram_s"], 2),
                              _fmt(1e3 * b["histogram_sampled_s"], 2) if "histogram_sampled_s" in b else "–",
                              _fmt(1e3 * b["kde_s"], 2), _fmt(1e3 * b["exact_count_s"], 2),
                              _fmt(b["kde_over_histogram"], 2)] for b in r["bridge"]])
        if "cache" in r:
            ca = r["cache"]
            lines += ["", f"- teacher logits cached (`cache_teacher=True`, calibration not augmented): step × "
                          f"{ca['cached_over_recomputed']:.2f} of recomputing them; building the cache takes "
                          f"{ca['cache_build_s']:.1f} s ({ca['calib_size']} images), repaid after "
                          f"{_fmt(ca['break_even_steps'], 1)} steps"]
        if "crosscheck" in r:
            cc = r["crosscheck"]
            extra = (f", {cc['real_over_mirrored']:.2f}× the mirrored step timed above ({cc['mirrored_step_s']:.3f} s, "
                     "measured around it)") if "real_over_mirrored" in cc else ""
            lines += [f"- cross-check: the real `fcpts.sparsify` loop costs {cc['per_step_s']:.3f} s per step "
                      f"(median over {cc.get('steps', '?')} steps){extra}"]
    else:
        lines += ["Not run yet (`python -m benchmarks.speed`)."]
    lines += [""]
    if demo:
        d = demo["results"]
        lines += [f"- `fcpts demo` end to end: {d['wall_s']:.0f} s wall, {d['user_s'] + d['sys_s']:.0f} s CPU, "
                  f"peak RSS {d['peak_rss_mib']:.0f} MiB (checkpoint cached before: "
                  f"{demo['settings']['checkpoint_cached_before']}; load average {demo['settings'].get('loadavg_before')})"]
    else:
        lines += ["- `fcpts demo` end to end: not run yet (`python -m benchmarks.demo_time`, on a quiet machine)"]
    if gpu:
        g, mach = gpu["results"], gpu["machine"]
        s = gpu["settings"]
        lines += ["", f"GPU ({mach.get('gpu', mach.get('device'))}, torch {mach.get('torch')}): {s['model']} at "
                      f"{s['image_size']} px, batch {s['batch_size']}, {s['steps']} steps, synthetic data"
                      f"{', channels_last' if s.get('channels_last') else ''}:", ""]
        rows = []
        for k in ("fcpts", "masked_kd", "dense_train"):
            if k in g:
                rows.append([k, _fmt(g[k]["wall_s"], 1), _fmt(1e3 * g[k]["per_step_s"], 1), _fmt(g[k]["images_per_s"], 0),
                             _fmt(g[k].get("peak_gpu_gib"), 1)])
        lines += _table(["loop", f"wall s ({s['steps']} steps)", "ms/step", "images/s", "peak GiB"], rows)
        if (results / "gpu_h200_log.md").exists():
            lines += ["", "Longer runs cut by the lease's time limit (the released 1,600 steps among them): "
                          "`gpu_h200_log.md`."]
    else:
        lines += ["- GPU: not run yet (`python -m benchmarks.gpu`, on a CUDA machine)"]
    for name in sorted(p.name for p in results.glob("gpu_ddp*.json")):
        ddp_doc = _load_json(results / name)
        r, mach = ddp_doc["results"]["fcpts_ddp"], ddp_doc["machine"]
        where = mach.get("gpu") or f"CPU, {mach.get('cpu_count')} cores"
        lines += ["", f"Data-parallel FCPTS (`{name}`, {where}, {ddp_doc['settings']['model']} at "
                      f"{ddp_doc['settings']['image_size']} px, global batch {r['one']['global_batch']}): 1 process "
                      f"{1e3 * r['one']['per_step_s']:.0f} ms/step, {r['nproc']} processes "
                      f"{1e3 * r['many']['per_step_s']:.0f} ms/step; step-time ratio {r['step_time_ratio']:.2f} "
                      f"({r['meaning']})"]
    return lines, checks


def memory_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    doc = _load_json(results / "memory.json")
    demo = _load_json(results / "demo_time.json")
    lines = ["## Memory", ""]
    if doc:
        s = doc["settings"]
        names = {"idle": "model + batch loaded (floor)", "fcpts": "FCPTS step (teacher + student)",
                 "sparsify": "`fcpts.sparsify` (caller's model + teacher + student, projection)",
                 "masked_kd": "plain masked-KD step (teacher + student)", "dense_train": "dense training step (one model)"}
        lines += [f"Peak RSS of a fresh process running {s['steps']} step(s), batch {s['batch_size']} at "
                  f"{s['image_size']} px ({doc['results'][0].get('model_source', '')}):", ""]
        lines += _table(["process", "peak RSS MiB"],
                        [[names.get(r["kind"], r["kind"]), _fmt(r["peak_rss_mib"], 0)] for r in doc["results"]]
                        + ([["`fcpts demo` (end to end)", _fmt(demo["results"]["peak_rss_mib"], 0)]] if demo else []))
        if doc.get("ratios"):
            lines += ["", "Ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in doc["ratios"].items())]
    else:
        lines += ["Not run yet (`python -m benchmarks.memory`)."]
    return lines, {}


def ste_lambda_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    """FCPTS with the straight-through gradient against λ (``benchmarks/ste_lambda.py``); empty if not run."""
    from fcpts.table import read_table

    frames = []
    for path in sorted(results.glob("ste_lambda_*_*.csv")):
        bridge, lam = path.stem.removeprefix("ste_lambda_").rsplit("_", 1)
        table = read_table(path)
        if len(table):
            frames.append(table.assign(bridge=bridge, lam=float(lam)))
    if not frames:
        return [], {}
    stats = (pd.concat(frames, ignore_index=True).groupby(["bridge", "lam", "target"])
             .agg(top1=("top1", "mean"), before=("sparsity_before_projection", "mean"), n=("seed", "count"))
             .reset_index())
    targets = sorted(stats.target.unique())
    lines = ["## The straight-through gradient against λ", "",
             "FCPTS with `gradient=\"ste\"` on the embedded default and `Config.lam` = λ (the released recipe: 1). "
             "Cells: top-1 (%) / global sparsity before the final projection (%), mean over n seeds "
             "(`python -m benchmarks.ste_lambda`).", ""]
    rows = []
    for (bridge, lam), group in stats.groupby(["bridge", "lam"]):
        cells = [bridge, f"{lam:g}"]
        for t in targets:
            g = group[at_target(group.target, t)]
            cells.append("–" if g.empty else f"{_fmt(g.iloc[0]['top1'], 1, True)} / "
                         f"{_fmt(g.iloc[0]['before'], 1, True)} (n={int(g.iloc[0]['n'])})")
        rows.append(cells)
    lines += _table(["bridge", "λ"] + [f"{t:.0%}" for t in targets], rows)
    return lines, {}


LEARNER_TABLE = ROOT / "data" / "learners_digits.csv"


def learners_section(results: Path = RESULTS, table_path: Path = LEARNER_TABLE) -> tuple[list[str], dict]:
    """FCPTS against the allocation learners (``data/learners_digits.csv``) and their step cost
    (``learners_speed.json``); empty when neither exists."""
    from fcpts.notebook import learner_summary
    from fcpts.registry import label
    from fcpts.table import read_table

    lines: list[str] = []
    if table_path.exists():
        table = read_table(table_path)
        summary = learner_summary(table, outcomes_from=table_path)
        if len(summary):
            dense = table[table.method == DENSE]
            lines += ["## Allocation learners under FCPTS's post-training budget", "",
                      f"`{table_path.relative_to(ROOT) if table_path.is_relative_to(ROOT) else table_path}` "
                      "(the runner, embedded default"
                      + (f", dense top-1 {100 * dense.top1.iloc[-1]:.2f} %" if len(dense) else "") + "). "
                      + ("Every learner row ran the kit's earlier loop (‡: ramp then cosine, exact-count start). "
                         if table[table.method != DENSE].apply(is_legacy, axis=1).all() else "")
                      + "Cells: mean ± std over the seeds (n), and top-1's 95 % interval over seeds and test images "
                      "where the rows kept per-image outcomes; S before = the sparsity of the method's own masks "
                      "before the kit's exact projection; top-1 after it.", ""]
            rows = []
            for r in summary.rename(columns={"top-1 low (%)": "low", "top-1 high (%)": "high"}).itertuples(index=False):
                std = lambda v: "" if pd.isna(v) else f" ± {v:.1f}"
                low, high = getattr(r, "low", float("nan")), getattr(r, "high", float("nan"))
                interval = "" if pd.isna(low) else f" [{low:.1f}, {high:.1f}]"
                rows.append([label(r.method), f"{r.target:.0%}", r.seeds,
                             f"{r[3]:.1f}{std(r[4])}", f"{r[5]:.1f}", f"{r[6]:.1f}{std(r[7])}{interval}"])
            lines += _table(["method", "target", "n", "S before (%)", "gap to S* (points)", "top-1 after (%)"], rows)
    frames = []
    for path in sorted(results.glob("dsa_sensitivity_*_*.csv")):
        field, value = path.stem.removeprefix("dsa_sensitivity_").rsplit("_", 1)
        rows = read_table(path)
        if len(rows):
            frames.append(rows.assign(field=field, value=value))
    if frames:
        sens = pd.concat(frames, ignore_index=True)
        lines += ["", "DSA-style with one setting changed (defaults: ρ = 1, α lr 0.01, BN in train mode; "
                  "`benchmarks/dsa_sensitivity.py`):", ""]
        lines += _table(["setting", "target", "seed", "S before (%)", "top-1 after (%)"],
                        [[f"{r.field} = {r.value}", f"{r.target:.0%}", r.seed, _fmt(r.sparsity_before_projection, 1, True),
                          _fmt(r.top1, 1, True)] for r in sens.itertuples()])
    speed = _load_json(results / "learners_speed.json")
    if speed:
        m = speed["machine"]
        lines += ["", "Step cost against FCPTS's step, measured in one process (`benchmarks/learners.py`; "
                  f"{speed['settings']['model']}, {speed['settings']['threads']} thread(s), load {m.get('loadavg')}):", ""]
        lines += _table(["method", "s / step", "× FCPTS step"],
                        [[label(k), f"{v['seconds_per_step']:.3f}", f"{v['ratio_to_fcpts']:.2f}"]
                         for k, v in speed["results"].items()])
    return lines, {}


def recipe_section(results: Path = RESULTS) -> tuple[list[str], dict]:
    """The recipe ablation (``benchmarks/recipe.py``): every variant against FCPTS's start and the released
    recipe, and whether the kit recipe is ever significantly below its start or below the released recipe."""
    from benchmarks.recipe import all_variants, markdown
    from fcpts.notebook import recipe_table
    from fcpts.table import read_table

    folder = results / "recipe"
    if not folder.is_dir():
        return [], {}
    summary = recipe_table(folder, all_variants())
    if summary.empty:
        return [], {}
    legacy = all(is_legacy(r) for path in folder.glob("*.csv") for r in read_table(path).to_dict("records")
                 if r.get("method") == FCPTS)
    lines = ["## The quick recipe against its own start (`benchmarks/recipe.py`)", ""] + \
        (["Every FCPTS row of this ablation ran the kit's earlier loop (‡: ramp then cosine, exact-count start); the "
          "released schedule and start are compared with it in the section above.", ""] if legacy else []) + [
             "Top-1 (%) with a 95 % interval over seeds and test images; below it the paired differences, in points, "
             "to FCPTS's start (ERK + BN re-estimation) and to the released recipe: + better, − worse, ≈ within "
             "noise. Full table and failures: `recipe_ablation.md`.", "", markdown(summary).rstrip()]
    kit = summary[summary.variant == "kit"]
    checks = {}
    if len(kit):
        below_start = kit[kit.get("vs_start_verdict", pd.Series(dtype=str)) == "−"]
        below_released = kit[kit.get("vs_released_verdict", pd.Series(dtype=str)) == "−"]
        checks["kit recipe: never significantly below its start"] = not len(below_start)
        checks["kit recipe: never significantly below the released recipe"] = not len(below_released)
        lines += ["", f"- Kit recipe, {len(kit)} target(s) run: significantly below its start at "
                  f"{len(below_start)}, below the released recipe at {len(below_released)}."]
    return lines, checks


def build_summary(results: Path = RESULTS) -> str:
    sections, checks = [], {}
    for fn in (quality_section, loop_section, recipe_section, learners_section, ste_lambda_section, exact_section,
               speed_section, memory_section):
        lines, ok = fn(results)
        if lines:
            sections.append("\n".join(lines))
        checks.update(ok)
    head = ["# Benchmarks: measured results", "",
            "Generated by `python -m benchmarks.summarize` from the files in `benchmarks/results/`; do not edit by hand.", ""]
    if checks:
        def status(value):
            ok, missing = value if isinstance(value, tuple) else (value, 0)
            return _verdict(ok) + (f" so far ({missing} comparisons still missing)" if missing and ok else "")

        head += _table(["target", "status"], [[k, status(v)] for k, v in checks.items()]) + [""]
    return "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--out", default=None, help="default: <results>/SUMMARY.md")
    args = parser.parse_args(argv)
    results = Path(args.results)
    text = build_summary(results)
    out = Path(args.out) if args.out else results / "SUMMARY.md"
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
