# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Every figure, rebuilt from the result files
#
# This notebook trains nothing. It reads the result files that notebooks 01–04 wrote (your runs' in
# `results/notebooks/`, the committed `data/` for every file your runs have not written) and redraws every
# figure, as PNG and PDF, with the same drawing code the other notebooks use. Then it sets the numbers that
# published sources print beside the kit's own. Two questions:
#
# 1. Can every figure of the course be rebuilt from saved results alone?
# 2. How do the kit's numbers relate to the published ones?
#
# How to run it: Run All in JupyterLab (`make lab`), seconds; the README has the rest.

# %% tags=["parameters"]
mode: str = "quick"  # quick: CPU, minutes | ci: smallest, for tests | fashion: quick on Fashion-MNIST | full: the paper's ImageNet recipe (params/<mode>.yaml)
data_root: str = ""  # full mode: the folder holding train/ and val/; empty: $IMAGENET_ROOT, else data/imagenet
target: float = 0.8  # target global sparsity S* the figures mark
seed: int = 0  # one seed: calibration sample, augmentations, initialisation

# %%
from fcpts import notebook as nb
run = nb.session(globals())  # no data and no model: this notebook also runs without ImageNet
print(f"results from {run.results} (falling back to data/), figures to {run.figures}, tag {run.tag}")

# %% [markdown]
# ## 1 · Every figure, from the result files
#
# | figure | drawn from (written by) |
# |---|---|
# | `allocation_matters`, `allocations`, `bridge`, `objective` | their CSV and JSON files (01) |
# | `fcpts_allocation`, `fcpts_convergence`, `fcpts_losses` | `fcpts_allocation`, `fcpts_history`, `fcpts_summary` (02) |
# | `schedule_shapes`, `accuracy_vs_sparsity`, `schedules`, `accuracy_vs_time` | `comparison_<dataset>.csv` (03, the runner) |
# | `learner_trajectories`, `learner_allocations` | `learners_<dataset>.csv` and its `_details/` folder (04, the runner) |
# | `dst_coverage`, `dst_accuracy` | `dst_<dataset>.csv` and its `_details/` folder (04, the runner) |
# | `schedule_length` | `long95_<dataset>.csv` (04; `python -m benchmarks.fair_comparison`) |
# | `recipe` | `benchmarks/results/recipe/` (the recipe ablation) |
# | `published_vs_kit` | `data/published_numbers.csv` and `comparison_<dataset>.csv` |
#
# Every file name ends in `_<tag>`, here `<model>_<dataset>`.

# %%
import matplotlib.pyplot as plt

dataset = nb.settings(globals())["dataset"]
written, missing = [], []
for kind in nb.FIGURES:
    paths = nb.draw(kind, run.tag, run.results, run.figures, dataset=dataset, target=target)
    (written if paths else missing).append(nb.figure_name(kind, run.tag))
    plt.close("all")  # saved, not shown: each figure is explained in the notebook that makes it
print(f"{len(written)} figures written (PNG and PDF)")
if missing:
    print("not drawn, their result files are missing (run notebooks 01-04 in the same mode):", ", ".join(missing))

# %% tags=["nbval-check-output"]
print(sorted(written))

# %% [markdown]
# In quick mode every figure is drawn: the committed result files hold everything the course shows. In full
# mode only those whose ImageNet results you have computed are.
#
# ## 2 · Published numbers beside the kit's
#
# `data/published_numbers.csv` holds only numbers printed in a cited source, one per row, with its `source`:
# the abstracts of FCPTS, UniPTS and POT, the uniform-magnitude benchmark of ModelTC/msbench (the code base
# FCPTS builds on) with its training-aware upper reference (SAT: pruning during full training, not post-training),
# and torchvision's dense references. None of them is a result of this kit. The FCPTS paper's
# own tables could not be read when the kit was written, so they are not in the file. If you have the paper,
# add its rows (same columns; `metric` = `top1` for a top-1 in %, `source` = table and page) and rerun: rows with
# `metric = top1` are drawn automatically.

# %%
import pandas as pd

published = pd.read_csv(nb.repo_path(nb.PUBLISHED_NUMBERS), keep_default_na=False)
top1 = published[published["metric"] == "top1"]
top1.pivot_table(index=["model", "weights", "method", "reconstruction"], columns="sparsity", values="value",
                 aggfunc="first")

# %% [markdown]
# A dense model's top-1 differs between sources: msbench used its own checkpoints (ResNet-50 76.62 %), and
# torchvision's `IMAGENET1K_V1` scores 76.13 %. So the figure compares what each study *loses* from its own
# dense model, never absolute top-1 across sources.

# %%
nb.draw("published_vs_kit", run.tag, run.results, run.figures, dataset=dataset, target=target);

# %% [markdown]
# Points lost from the dense model, higher on the page is better. On the left, ImageNet as published: uniform
# magnitude pruning without reconstruction (msbench) loses 43 points at 60 %, a layer-wise reconstruction
# keeps the loss near 2, and training-aware pruning (SAT, dotted) loses 1.2 at 80 %: the ceiling a post-training
# method aims at. UniPTS's abstract pair at 90 % (POT-style 3.9 %, UniPTS 68.6 %) is drawn from torchvision's
# `IMAGENET1K_V1` model (76.13 %), the file UniPTS's released script starts from. On the right, the kit's counterparts on digits: uniform masks alone collapse to chance
# from 70 %, uniform with FCPTS's reconstruction holds until 80 %, and FCPTS holds longest. The datasets differ,
# so only the shape carries over. The kit's own ImageNet runs go beside the published curves with
# `fcpts reproduce` (one panel per model, `docs/scaling.md`). The text under the left panel lists what cannot be
# drawn as a drop: POT's data-free claim, and FCPTS's own claim of more than 30 points at 80 %.
#
# ## Summary
#
# 1. Every figure of the course is rebuilt from the result files alone; none needs a model or a dataset.
# 2. The published ImageNet numbers and the kit's digits numbers tell the same story in shape: without
#    reconstruction uniform pruning collapses, reconstruction delays the collapse, a learned allocation delays it
#    most. Compare drops from each study's own dense model, never absolute top-1 across sources.
#
# ## Exercises
#
# 1. Delete `results/notebooks/figures/` and run this notebook. Expect every figure back, identical to the
#    committed ones in `figures/` (same data, same code).
# 2. Add a row to `data/published_numbers.csv` for a method at 70 % with `metric = top1` and the weights of a
#    dense row already there (e.g. `msbench checkpoint`). Expect a new point on the left panel, drawn as a drop
#    from that dense model. (Then remove it: it is not a published number.)
