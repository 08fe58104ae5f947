"""Each benchmark's core function in a tiny configuration: well-formed results, not timings (no timed asserts)."""
import json
import math
import re

import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import make_model
from fcpts import Config
from fcpts.data import DataBundle
from fcpts.pot import PotConfig

from benchmarks import (demo_time, dsa_sensitivity, exact_control, gpu, learners, memory, quality, recipe, speed,
                        ste_lambda, summarize)


def toy_bundle():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)
    return DataBundle(calib=TensorDataset(x[:24]), test=TensorDataset(x[24:], y[24:]), num_classes=10, name="toy")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a busy 2-core machine with 2 OpenMP threads per process
    slows them down tenfold (spinning workers): run this module single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_results")


def test_exact_control_rows(results):
    out = results / "exact_control.json"
    doc = exact_control.run_exact_control(
        archs=("cnn",), targets=(0.5, 0.9), max_steps=40, e2e_steps=1, batch_size=2, out=out,
        models={"cnn": (lambda: make_model("cnn"), 8)}, progress=False)
    rows = doc["results"]
    assert len(rows) == 2 and json.loads(out.read_text())["results"] == json.loads(json.dumps(rows))
    for r in rows:
        assert r["zeros_target"] == round(r["target"] * r["n_weights"])
        assert r["lc_zeros"] == r["e2e_zeros"] == r["zeros_target"] and r["exact"] is True
        assert r["steps_to_tol"] is None or 0 <= r["steps_to_tol"] <= 40
        assert abs(r["start_sparsity"] - (r["target"] - 0.1)) < 0.01
    # resumable: the same call computes nothing new
    again = exact_control.run_exact_control(archs=("cnn",), targets=(0.5, 0.9), max_steps=40, e2e_steps=1,
                                            batch_size=2, out=out, models={"cnn": (lambda: make_model("cnn"), 8)},
                                            progress=False)
    assert len(again["results"]) == 2


def test_speed_parts(results):
    model = make_model("cnn").eval()
    calib = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    doc = speed.run_speed(model=model, calib=calib, image_size=8, batch_size=8, repeats=1, warmup=0,
                          bridge_sizes=(1000, 5000), out=results / "speed.json", progress=False)
    r = doc["results"]
    assert set(r) == set(speed.PARTS)
    steps = r["steps"]
    assert {"fcpts", "masked_kd", "masked_kd_prune_hook", "dense_kd", "dense_train", "fcpts_ste", "fcpts_kde",
            "fcpts_sampled_hist"} == set(steps["seconds"])
    assert all(v["median"] > 0 for v in steps["seconds"].values())
    assert steps["ratios"]["fcpts/masked_kd"] > 0
    assert 0 < r["components"]["bridge_objective_share"] and r["components"]["profile_top_ops"]
    assert 0 < r["components"]["bridge_objective_share_sampled_hist"]
    assert all(r["masks"]["identical"].values()) and r["masks"]["seconds"]["kit_fwd_bwd"] > 0
    assert [b["numel"] for b in r["bridge"]] == [1000, 5000] and all(b["kde_s"] > 0 for b in r["bridge"])
    assert r["cache"]["calib_size"] == 16 and r["cache"]["cached_over_recomputed"] > 0
    assert r["crosscheck"]["per_step_s"] > 0 and r["crosscheck"]["real_over_mirrored"] > 0


def test_masked_kd_keeps_the_masks_exact():
    model = make_model("cnn").eval()
    x = torch.randn(8, 3, 8, 8)
    config = Config.quick_cpu(progress=False)
    teacher = speed._teacher(model, config)
    fcpts = speed.FcptsStep(model, teacher, x, config, 0.8)
    masks = fcpts.masks()
    plain = speed.MaskedKDStep(model, teacher, x, masks, config)
    for _ in range(2):
        plain()
    modules = dict(plain.student.named_modules())
    for name, mask in masks.items():
        assert torch.all(modules[name].weight[mask == 0] == 0)


def test_memory_child_and_subprocess(results):
    for kind in ("fcpts", "masked_kd", "dense_train", "sparsify"):
        row = memory.child(kind, steps=1, image_size=8, batch_size=4, tiny=True)
        assert row["peak_rss_mib"] >= row["rss_before_steps_mib"] > 0 and row["kind"] == kind
    # one fresh subprocess (the plumbing): the cheapest kind
    doc = memory.run_memory(kinds=("idle",), steps=1, image_size=8, batch_size=4, out=results / "memory.json",
                            tiny=True, progress=False)
    assert doc["results"][0]["kind"] == "idle" and doc["results"][0]["peak_rss_mib"] > 0


def test_demo_time_plumbing(tmp_path):
    # `python -m platform` stands in for `python -m fcpts demo`: the timing plumbing, in a fraction of a second
    doc = demo_time.run_demo_time(out=tmp_path / "demo_time.json", module="platform", subcommand=[])
    r = doc["results"]
    assert r["returncode"] == 0 and r["wall_s"] > 0 and r["peak_rss_mib"] > 0 and r["stdout"].strip()
    assert (tmp_path / "demo_time.json").exists()


def test_gpu_script_smoke_on_cpu(tmp_path):
    doc = gpu.run_gpu(steps=2, batch_size=2, image_size=32, calib_size=4, device="cpu",
                      model_name="mobilenet_v3_small", short_steps=1, out=tmp_path / "gpu.json", progress=False)
    assert set(doc["results"]) == {"fcpts", "masked_kd", "dense_train"}
    assert doc["results"]["fcpts"]["exact"] and doc["results"]["fcpts"]["per_step_s"] > 0
    assert doc["machine"]["torch"] == torch.__version__ and set(doc["ratios"]) == {"fcpts/masked_kd", "fcpts/dense_train"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_script_refuses_without_cuda():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        gpu.check_device("cuda")


def test_quality_runs_in_parts_and_reuses_reference(results, tmp_path):
    base = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    model, bundle = make_model("cnn").eval(), toy_bundle()
    pot = PotConfig(iterations_per_layer=1, samples=8, progress=False)
    # a "reference sweep" with the base config: its rows must be copied, not recomputed
    ref = tmp_path / "reference.csv"
    from fcpts.runner import run_comparison

    run_comparison(base, methods=("uniform",), targets=(0.5,), seeds=(0,), out_csv=ref, tiers=("b",),
                   schedules=(), model=model, data=bundle, pot_config=pot, progress=False)
    tables = quality.run_quality(methods=["fcpts-released-histogram", "fcpts-ste-kde", "uniform", "dense"],
                                 targets=(0.5,), seeds=(0,), tiers=("b",), out_dir=results, reference=ref,
                                 base=base, model=model, data=bundle, pot_config=pot, progress=False)
    assert set(tables) == {"released-histogram", "ste-kde"}
    main = tables["released-histogram"]
    assert set(zip(main.method, main.tier)) == {("dense", "-"), ("uniform", "b"), ("fcpts", "c")}
    reference = pd.read_csv(ref)
    copied = main[main.method == "uniform"].iloc[0]
    assert copied.finished_at == reference[reference.method == "uniform"].iloc[0].finished_at  # reused, not rerun
    assert list(tables["ste-kde"].method) == ["fcpts"]
    assert (quality.csv_path("ste-kde", results)).exists()
    left = quality.remaining(quality.expand_methods(["fcpts", "uniform"]), (0.5, 0.9), (0,), ("b",), results)
    assert {(r["variant"], r["method"], r["target"]) for r in left} >= {("released-kde", "fcpts", 0.5),
                                                                        ("released-histogram", "uniform", 0.9)}
    assert ("ste-kde", "fcpts", 0.5) not in {(r["variant"], r["method"], r["target"]) for r in left}
    est = quality.estimate(left, results, ref)
    assert est["rows"] == len(left) and est["seconds"] > 0


def test_ste_lambda_copies_lambda_one_and_runs_the_rest(results):
    # after the quality test: quality_ste-kde.csv holds the λ = 1 row of the same base config
    base = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    model, bundle = make_model("cnn").eval(), toy_bundle()
    table = ste_lambda.run_ste_lambda((1.0, 10.0), (0.5,), (0,), "kde", results, model=model, data=bundle,
                                      base=base, progress=False)
    assert sorted(table.lam) == [1.0, 10.0] and set(table.method) == {"fcpts"}
    quality_row = pd.read_csv(quality.csv_path("ste-kde", results)).iloc[0]
    one, ten = table[table.lam == 1.0].iloc[0], table[table.lam == 10.0].iloc[0]
    assert one.finished_at == quality_row.finished_at  # copied, not recomputed
    assert ten.config_hash != one.config_hash and ten.achieved_sparsity == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="λ"):
        ste_lambda.run_ste_lambda((-1.0,), (0.5,), (0,), "kde", results, model=model, data=bundle, base=base,
                                  progress=False)
    assert "straight-through gradient against λ" in summarize.build_summary(results)


# --- reading the summary back: markdown sections, tables and the numbers in their cells
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def numbers(cell: str) -> list[float]:
    """Every number in a cell, in order: '-6.2 [-18.8, +0.0] (n=1)' → [-6.2, -18.8, 0.0, 1.0]; '5,648' → [5648]."""
    return [float(x.replace(",", "")) for x in NUMBER.findall(cell)]


def shown(printed: float, value: float, digits: int) -> bool:
    """Whether ``printed`` is ``value`` rounded to ``digits`` decimals."""
    return abs(printed - value) <= 0.5 * 10 ** -digits + 1e-9


def summary_section(text: str, heading: str | None) -> list[str]:
    """The lines of the one section whose heading starts with ``heading`` (None: the head above the sections)."""
    head, *sections = text.split("\n## ")
    if heading is None:
        return head.splitlines()
    found = [block for block in sections if block.startswith(heading)]
    assert len(found) == 1, f"{len(found)} sections start with {heading!r}"
    return found[0].splitlines()


def markdown_tables(lines: list[str]) -> list[list[dict[str, str]]]:
    """Each markdown table in ``lines``: its rows as {header: cell}."""
    tables, rows, header = [], None, []
    for line in lines + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if rows is None:
                header, rows = cells, []
            elif not set("".join(cells)) <= set("-"):
                rows.append(dict(zip(header, cells, strict=True)))
        elif rows is not None:
            tables.append(rows)
            rows = None
    return tables


def quality_cells(results) -> dict:
    """From the quality files alone: (label, target) → (its rows, last per seed, and their outcome matrix)."""
    from fcpts.table import outcome_matrix, read_table

    cells = {}
    for path in sorted(results.glob("quality_*.csv")):
        variant = path.stem.removeprefix("quality_")
        for (method, tier, target), rows in read_table(path).groupby(["method", "tier", "target"]):
            label = ("dense" if method == summarize.DENSE else summarize.VARIANT_LABELS[variant]
                     if method == summarize.FCPTS else f"{method} ({tier})")
            rows = rows.drop_duplicates("seed", keep="last").sort_values("seed")
            cells[label, round(target, 4)] = (rows, outcome_matrix(path, rows))
    return cells


def test_summary_from_result_files(results):
    """The summary's numbers against the same numbers recomputed here from the result files the tests above wrote
    (this test runs after them, in module order)."""
    from fcpts.baselines import TIERS
    from fcpts.registry import names
    from fcpts.stats import bootstrap_interval, paired_difference

    text = summarize.build_summary(results)
    status = {row["target"]: row["status"] for row in markdown_tables(summary_section(text, None))[0]}

    # --- quality: the cells, dense, and the verdict counts
    quality = summary_section(text, "Quality")
    cells = quality_cells(results)
    dense_rows, _ = cells.pop(("dense", 0.0))
    dense = re.search(r"Dense: ([\d.]+) \(n = (\d+)\)", "\n".join(quality))
    assert shown(float(dense[1]), 100 * dense_rows.top1.mean(), 2) and int(dense[2]) == len(dense_rows)
    (table,) = markdown_tables(quality)
    shown_cells = {(row["method (tier)"], round(float(column.rstrip("%")) / 100, 4)): cell
                   for row in table for column, cell in row.items() if column.endswith("%") and cell != "–"}
    assert set(shown_cells) == set(cells)
    for key, (rows, matrix) in cells.items():
        estimate, low, high, n = numbers(shown_cells[key])
        interval = bootstrap_interval(matrix)
        assert shown(estimate, 100 * rows.top1.mean(), 1)  # the kept outcomes agree with the recorded top-1
        assert shown(low, 100 * interval.low, 1) and shown(high, 100 * interval.high, 1) and n == len(rows), key
        assert low <= estimate <= high
    baselines = [f"{m} ({t})" for m in names(family="allocation") for t in TIERS]
    fcpts_labels = sorted({label for label, _ in cells if label.startswith("FCPTS")})
    assert len(fcpts_labels) == 2  # released-histogram and ste-kde
    for lab in fcpts_labels:
        block = "\n".join(quality).split(f"**{lab}**", 1)[1].split("\n- **", 1)[0]
        for band, targets in (("from 70%", [0.7, 0.8, 0.9, 0.95]), ("at 50%", [0.5])):
            count = dict(beaten=0, beats=0, noise=0, missing=0, by_means=0, compared=0)
            noise_texts = []
            for t in targets:
                for name in baselines:
                    if (lab, t) not in cells or (name, t) not in cells:
                        count["missing"] += 1
                        continue
                    (mine, a), (other, b) = cells[lab, t], cells[name, t]
                    assert list(mine.seed) == list(other.seed)  # the fixture's rows share their seeds
                    d = paired_difference(a, b)
                    kind = "beaten" if d.high < 0 else "beats" if d.low > 0 else "noise"
                    count[kind] += 1
                    count["compared"] += 1
                    count["by_means"] += int(other.top1.mean() > mine.top1.mean())
                    if kind == "noise":
                        noise_texts.append(f"{name} at {t:.0%} ({d.signed()}, n={len(mine)})")
            line = next(x for x in block.splitlines() if f"{band}: paired" in x)
            found = re.search(r"paired (\d+) of (\d+): beaten by (\d+), beats (\d+), within noise (\d+)", line)
            paired = count["beaten"] + count["beats"] + count["noise"]
            assert [int(x) for x in found.groups()] == [paired, paired + count["missing"], count["beaten"],
                                                         count["beats"], count["noise"]], (lab, band, line)
            assert f"missing {count['missing']}" in line if count["missing"] else "missing" not in line
            means = re.search(r"By means \(same dense model only\): beaten by (\d+) of (\d+)", line)
            assert [int(x) for x in means.groups()] == [count["by_means"], count["compared"]], line
            for noise in noise_texts:
                assert noise in block, noise
            if band == "from 70%":  # the target's verdict: n/a until a comparison is paired
                goal = status[f"{lab}: not beaten (paired) by any baseline tier from 70%"]
                assert goal.startswith("**misses**" if count["beaten"] else "**meets**" if paired else "n/a"), goal
    # the fixture: one target (50 %), one baseline there (uniform (b)), so nothing is paired from 70 %
    assert all(f"**{lab}** from 70%: paired 0 of 60" in text for lab in fcpts_labels)

    # --- exact control
    doc = json.loads((results / "exact_control.json").read_text())
    exact = summary_section(text, "Exact control")
    (table,) = markdown_tables(exact)
    assert [row["arch"] for row in table] == list(dict.fromkeys(r["arch"] for r in doc["results"]))
    for row in table:
        for r in (r for r in doc["results"] if r["arch"] == row["arch"]):
            assert numbers(row["N"]) == [r["n_weights"]]
            cell = row[f"{r['target']:.0%}"]
            steps, before = cell.split(" / ")
            not_within = f">{doc['settings']['max_steps']}"
            assert steps == (not_within if r["steps_to_tol"] is None else str(r["steps_to_tol"]))
            assert shown(numbers(before)[0], 100 * r["e2e_sparsity_before_projection"], 2)
            assert cell.endswith("✓" if r["exact"] else "✗")
    all_exact = all(r["exact"] for r in doc["results"])
    assert f"({len(doc['results'])} runs): {'**meets**' if all_exact else '**misses**'}" in "\n".join(exact)
    assert status["exact zero count everywhere"] == ("**meets**" if all_exact else "**misses**")

    # --- speed: the step table's ratios and the targets' verdicts
    r = json.loads((results / "speed.json").read_text())["results"]
    speed_lines = summary_section(text, "Speed")
    seconds = r["steps"]["seconds"]
    steps_table = next(t for t in markdown_tables(speed_lines) if "× masked KD" in t[0])
    assert len(steps_table) == len(seconds)
    for row, (name, s) in zip(steps_table, seconds.items()):  # in the file's order
        assert shown(numbers(row["median s"])[0], s["median"], 3), name
        assert shown(numbers(row["× masked KD"])[0], s["median"] / seconds["masked_kd"]["median"], 2), name
        assert shown(numbers(row["× dense training"])[0], s["median"] / seconds["dense_train"]["median"], 2), name
    ratio = r["steps"]["ratios"]["fcpts/masked_kd"]
    printed = re.search(r"FCPTS step / plain masked-KD step = ([\d.]+)", "\n".join(speed_lines))
    assert shown(float(printed[1]), ratio, 2)
    assert status[f"FCPTS step <= {summarize.TARGET_STEP_RATIO:.2f}x masked KD"] == \
        ("**meets**" if ratio <= summarize.TARGET_STEP_RATIO else "**misses**")
    share = r["components"]["bridge_objective_share"]
    printed = re.search(r"timed inside the step\) = ([\d.]+)%", "\n".join(speed_lines))
    assert shown(float(printed[1]), 100 * share, 1)
    assert status["bridge + objective <= 5% of a step"] == \
        ("**meets**" if share <= summarize.TARGET_BRIDGE_SHARE else "**misses**")

    # --- memory
    doc = json.loads((results / "memory.json").read_text())
    (table,) = markdown_tables(summary_section(text, "Memory"))
    assert len(table) == len(doc["results"])
    assert all(shown(numbers(row["peak RSS MiB"])[0], x["peak_rss_mib"], 0) for row, x in zip(table, doc["results"]))

    # --- the straight-through gradient against λ: top-1 / sparsity before the projection, mean over the seeds
    from fcpts.table import read_table

    (table,) = markdown_tables(summary_section(text, "The straight-through gradient"))
    files = {(bridge, float(lam)): path for path in results.glob("ste_lambda_*_*.csv")
             for bridge, lam in [path.stem.removeprefix("ste_lambda_").rsplit("_", 1)]}
    assert {(row["bridge"], float(row["λ"])) for row in table} == set(files)
    for row in table:
        rows = read_table(files[row["bridge"], float(row["λ"])])
        for column, cell in row.items():
            if column.endswith("%"):
                at = rows[(rows.target - float(column.rstrip("%")) / 100).abs() < 1e-9]
                top1, before, n = numbers(cell)
                assert shown(top1, 100 * at.top1.mean(), 1) and n == len(at)
                assert shown(before, 100 * at.sparsity_before_projection.mean(), 1)


def test_learner_step_costs_are_ratios_to_fcpts_measured_in_one_process():
    config = Config.quick_cpu(batch_size=8, progress=False)
    res = learners.step_costs(make_model("cnn"), toy_bundle(), config, short=1, long=2, repeats=1)
    assert set(res) == {"fcpts", "str", "probmask", "dsa"}
    assert res["fcpts"]["ratio_to_fcpts"] == pytest.approx(1.0)
    for r in res.values():
        assert len(r["samples"]) == 1 and math.isfinite(r["seconds_per_step"]) and r["ratio_to_fcpts"] is not None
    assert "| probmask |" in learners.markdown(res)
    with pytest.raises(ValueError):
        learners.step_costs(make_model("cnn"), toy_bundle(), config, short=2, long=2)


def test_learner_section_of_the_summary(results, tmp_path):
    from fcpts.runner import run_comparison

    config = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    table_path = tmp_path / "learners_toy.csv"
    run_comparison(config, methods=("str",), targets=(0.8,), seeds=(0, 1), out_csv=table_path, tiers=(),
                   schedules=(), model=make_model("cnn").eval(), data=toy_bundle(), progress=False)
    res = learners.step_costs(make_model("cnn"), toy_bundle(), config, methods=("fcpts", "str"), short=1, long=2,
                              repeats=1)
    from benchmarks._common import envelope, write_json

    write_json(envelope("learners_speed", dict(model="cnn", threads=1), res), results / "learners_speed.json")
    lines, _ = summarize.learners_section(results, table_path)
    text = "\n".join(lines)
    assert "## Allocation learners" in text and "| STR | 80% | 2 |" in text and "| FCPTS | 80% | 2 |" in text
    assert "× FCPTS step" in text


def test_dsa_sensitivity_one_table_per_setting(results):
    config = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    table = dsa_sensitivity.run_sensitivity(("rho=10", "alpha_lr=0.1", "bn_mode=eval"), (0.8,), (0,), results,
                                            config=config, model=make_model("cnn").eval(), data=toy_bundle(),
                                            progress=False)
    assert list(table.field) == ["rho", "alpha_lr", "bn_mode"] and table.config_hash.nunique() == 3
    assert dsa_sensitivity.sensitivity_csv("bn_mode", "eval", results).exists()
    assert (table.zeros == (0.8 * table.total).round()).all()
    assert dsa_sensitivity.sensitivity_csv("rho", 10.0, results).exists()
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        dsa_sensitivity.parse("gamma=3")
    lines, _ = summarize.learners_section(results, results / "absent.csv")
    assert any("rho = 10" in line for line in lines)


def test_gpu_script_measures_two_gloo_processes_on_cpu(tmp_path):
    doc = gpu.run_gpu(steps=3, batch_size=4, image_size=32, calib_size=8, device="cpu", model_name="mobilenet_v3_small",
                      variants=("fcpts",), short_steps=1, out=tmp_path / "ddp.json", progress=False, nproc=2)
    ddp = doc["results"]["fcpts_ddp"]
    assert ddp["one"]["global_batch"] == ddp["many"]["global_batch"] == 4 and ddp["many"]["per_rank_batch"] == 2
    assert ddp["one"]["exact"] and ddp["many"]["exact"] and ddp["step_time_ratio"] > 0
    assert "fcpts_ddp2/fcpts_ddp1" in doc["ratios"] and doc["settings"]["nproc"] == 2


def test_recipe_ablation_pairs_every_variant_with_the_start(results):
    out = results / "recipe"
    model = make_model("cnn").eval()
    tables = recipe.run_recipe(["released", "lr-0.01"], targets=(0.5,), seeds=(0, 1), out_dir=out, reference=None,
                               model=model, data=toy_bundle(), progress=False)
    assert set(tables["released"].method) == {"dense", "erk", "fcpts"} and set(tables["lr-0.01"].method) == {"fcpts"}
    summary = recipe.summarize(out, targets=(0.5,))
    assert list(summary.variant) == ["start", "released", "lr-0.01"] and (summary.seeds == 2).all()
    start, released, lower = (summary[summary.variant == v].iloc[0] for v in ("start", "released", "lr-0.01"))
    assert released.vs_start == pytest.approx(released.top1 - start.top1, abs=1e-9)
    assert lower.vs_released == pytest.approx(lower.top1 - released.top1, abs=1e-9)
    assert lower.vs_start_low <= lower.vs_start <= lower.vs_start_high and lower.vs_start_seeds == 2
    assert released.top1_low <= released.top1 <= released.top1_high
    text = recipe.write_summary(out, results).pipe(recipe.markdown)
    assert "| lr-0.01 |" in text and "vs start" in text
    assert (results / "recipe_ablation.md").is_file() and (results / "recipe_ablation.csv").is_file()
    lines, checks = summarize.recipe_section(results)
    assert "| lr-0.01 |" in "\n".join(lines) and checks == {}  # no kit rows in this tiny run: no kit check
    # resumable: nothing new is computed
    again = recipe.run_recipe(["lr-0.01"], targets=(0.5,), seeds=(0, 1), out_dir=out, reference=None, model=model,
                              data=toy_bundle(), progress=False)
    assert again["lr-0.01"].finished_at.tolist() == tables["lr-0.01"].finished_at.tolist()


def test_loop_section_pairs_the_released_loop_with_the_earlier_one(tmp_path):
    """FCPTS rows of the earlier loop (labelled legacy, as the committed tables are) and of the released schedule and
    start in one quality file: the summary keeps them apart (‡) and pairs them on the same seeds and images."""
    from fcpts import table as runner_table

    base = Config.quick_cpu(steps=2, batch_size=8, progress=False, eval_batch_size=64)
    model, bundle = make_model("cnn").eval(), toy_bundle()
    kw = dict(methods=["fcpts-released-histogram"], targets=(0.5,), out_dir=tmp_path, reference=None, model=model,
              data=bundle, progress=False)
    quality.run_quality(seeds=(0, 1), base=base.replace(lr_schedule="ramp_then_cosine", init_rounding="exact"), **kw)
    path = quality.csv_path("released-histogram", tmp_path)
    earlier = runner_table.read_table(path).assign(loop=runner_table.LEGACY_LOOP)
    runner_table.write_table(earlier, path, None)  # as the tables written before the loop fields existed
    table = quality.run_quality(seeds=(0, 1, 2), base=base, **kw)["released-histogram"]
    assert len(table) == 5 and (table.loop == "released/released").sum() == 3
    effect = summarize.loop_effect(tmp_path)
    assert len(effect) == 1
    row = effect.iloc[0]
    assert row.seeds == 2 and row.target == 0.5  # seed 2 has no earlier row to pair with
    assert row.difference.estimate == pytest.approx(row.released.estimate - row.earlier.estimate)
    assert row.verdict in ("better", "worse", "within noise")
    text = summarize.build_summary(tmp_path)
    assert "## The released lr schedule and start against the kit's earlier loop" in text
    assert "FCPTS (released, histogram) [default] ‡" in text and summarize.LEGACY_NOTE in text


def test_precision_step_seconds_times_both_precisions_in_one_process():
    from benchmarks import precision

    config = Config.quick_cpu(progress=False, calib_size=8, batch_size=4, image_size=16)
    seconds = precision.step_seconds(make_model("cnn"), config, short=1, long=2, repeats=1)
    assert set(seconds) == {"fp32", "bf16"} and all(math.isfinite(v) for v in seconds.values())
