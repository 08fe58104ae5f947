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
# # 04 · Every figure, rebuilt from the result files
#
# This notebook trains nothing. It reads the result files that notebooks 01–03 wrote to `results_dir`
# (by default `results/notebooks/`, falling back to the committed `data/` for every file your runs have not
# written) and redraws every figure into `figures_dir` (by default `results/notebooks/figures/`), as PNG and PDF,
# through the same drawing code the other notebooks use. Then it draws the numbers that published sources
# print next to this kit's own.
#
# | figure | drawn from |
# |---|---|
# | `allocation_matters_<tag>`, `allocations_<tag>` | `allocation_matters_<tag>.csv`, `allocations_<tag>.csv` (01) |
# | `bridge_<tag>` | `bridge_<tag>.csv`, `bridge_<tag>.json` (01) |
# | `objective_<tag>` | `objective_<tag>.csv` (01) |
# | `fcpts_allocation_<tag>`, `fcpts_convergence_<tag>`, `fcpts_losses_<tag>` | `fcpts_allocation_<tag>.csv`, `fcpts_history_<tag>.csv`, `fcpts_summary_<tag>.csv` (02) |
# | `accuracy_vs_sparsity_<tag>`, `schedules_<tag>`, `accuracy_vs_time_<tag>` | `comparison_<dataset>.csv` (03, the runner) |
# | `learner_trajectories_<tag>`, `learner_allocations_<tag>` | `learners_<dataset>.csv` and its `learners_<dataset>_details/` (trajectories, allocations; 03, the runner) |
# | `dst_coverage_<tag>`, `dst_accuracy_<tag>` | `dst_<dataset>.csv` and its `dst_<dataset>_details/coverage.csv` (03, the runner) |
# | `published_vs_kit_<tag>` | `data/published_numbers.csv` and `comparison_<dataset>.csv` |
#
# `<tag>` is `<model>_<dataset>`, e.g. `resnet50_digits`. With `params/full.yaml` it draws the ImageNet
# results, where they exist; it needs no dataset, so it runs without ImageNet.
#
# **Running it.** `make lab` opens JupyterLab on `notebooks/`; run all cells (the defaults in the `parameters`
# cell are the quick CPU mode). Your runs write their results and figures to `results/notebooks/`, which git
# ignores, and read the committed `data/` for anything they have not written; only `make notebooks` refreshes
# the committed `data/` and `figures/`. Or run it with papermill from the repository root:
#
# ```bash
# papermill notebooks/04_paper_figures.ipynb build/notebooks/04_paper_figures.ipynb -f params/quick.yaml   # quick, CPU; writes data/, figures/
# papermill notebooks/04_paper_figures.ipynb build/notebooks/04_paper_figures.ipynb -f params/full.yaml    # ImageNet recipe
# papermill --help-notebook notebooks/04_paper_figures.ipynb                                    # every parameter
# ```
#
# `params/ci.yaml` is the smallest setting, used by `make test`; its numbers only check that everything
# runs. All paths are relative to the repository root, wherever the notebook runs from.

# %% tags=["parameters"]
dataset: str = "digits"  # digits (embedded, no download) | imagenet | folder | cifar10 | cifar100
data_root: str = ""  # folder holding train/ and val/; empty: $IMAGENET_ROOT, else data/imagenet
model: str = "resnet50"  # torchvision model name
weights: str = ""  # torchvision weights, e.g. IMAGENET1K_V1; empty: the kit's ResNet-50 trained on digits
image_size: int = 32  # input size in pixels (the paper: 224)
calib_size: int = 512  # calibration images from the train split, labels unused (the paper: 1024)
steps: int = 150  # FCPTS optimisation steps (the paper: 1600)
batch_size: int = 64  # calibration batch size; the lr is 0.04 * batch_size / 256 (the paper: 64)
target: float = 0.8  # target global sparsity S* over all Conv2d/Linear weights
seed: int = 0  # seed of the calibration sample, augmentations and initialisation
max_new_runs: int = 0  # notebook 03: most missing comparison rows to compute now (0 none, -1 all)
results_dir: str = "results/notebooks"  # results are written here (git-ignored); `make notebooks` uses data
figures_dir: str = "results/notebooks/figures"  # figures (PNG, PDF) go here; `make notebooks` uses figures
progress: bool = True  # progress bars on long cells; the params/ files for papermill set False

# %%
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # without ipywidgets tqdm falls back to text

import pandas as pd
from fcpts import notebook as nb

tag = f"{model}_{dataset}"  # nothing here loads data or a model: this notebook runs without ImageNet
print(f"results from {nb.repo_path(results_dir)}, figures to {nb.repo_path(figures_dir)}, tag {tag}")

# %% [markdown]
# ## 1 · Redraw every figure

# %%
written, missing = [], []
for kind in nb.FIGURES:
    paths = nb.draw(kind, tag, results_dir, figures_dir, dataset=dataset, target=target)
    (written if paths else missing).append(nb.figure_name(kind, tag))
print(f"{len(written)} figures written (PNG and PDF)")
if missing:
    print("not drawn, their result files are missing (run notebooks 01-03 with the same parameters):",
          ", ".join(missing))

# %% tags=["nbval-check-output"]
print(sorted(written))

# %% [markdown]
# ## 2 · Published numbers beside ours
#
# `data/published_numbers.csv` holds only numbers printed in a cited source, one per row, with a `source`
# column: the abstracts of FCPTS, UniPTS and POT, the uniform-magnitude benchmark of ModelTC/msbench (the
# code base FCPTS builds on), and torchvision's dense references. None of them is a result of this kit.
#
# **The FCPTS paper's own tables and figures could not be read when this kit was written**, so its
# per-table numbers are not in the file. If you have the paper, add its rows to
# `data/published_numbers.csv` (same columns: `model, weights, method, reconstruction, dataset, sparsity,
# metric, value, qualifier, source`; `metric` = `top1` for a top-1 in %, `source` = table or figure and
# page) and rerun this notebook: rows with `metric = top1` are drawn automatically.

# %%
published = pd.read_csv(nb.repo_path(nb.PUBLISHED_NUMBERS), keep_default_na=False)
from fcpts.plotting import CLAIM_PHRASES

for r in published[published["metric"] != "top1"].itertuples():
    print(f"{r.model}, {r.method} {r.reconstruction}, {r.sparsity:.0%}: top-1 {r.qualifier} {r.value:g} points "
          f"{CLAIM_PHRASES.get(r.metric, r.metric)}  [{r.source}]")
top1 = published[published["metric"] == "top1"]
top1.pivot_table(index=["model", "weights", "method", "reconstruction"], columns="sparsity", values="value",
                 aggfunc="first")

# %% [markdown]
# The figure `published_vs_kit_<tag>` draws the ImageNet numbers on the left and this kit's counterparts
# on the right: uniform magnitude masks without reconstruction (tier a), uniform with reconstruction
# (tier c) and FCPTS. In quick mode ours are on digits, a different task, so they get their own axes —
# what carries over is the *shape*: uniform pruning without reconstruction collapses as sparsity grows,
# reconstruction holds accuracy far longer, and a learned allocation holds it longest. Results of this kit
# on ImageNet (run 03 with `params/full.yaml`) are drawn on the left panel, next to the published curves.

# %%
comparison = nb.read_comparison(results_dir, dataset)
if comparison is not None:
    display(nb.kit_rows_for_published(comparison).round(4))
else:
    print(f"no comparison_{dataset}.csv in {results_dir}: only the published numbers are drawn")
