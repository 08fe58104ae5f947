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
# # 03 · FCPTS against fixed allocations and training-aware pruning
#
# Notebook 01 showed that the allocation decides the accuracy, and 02 that FCPTS learns one in minutes. Is a
# learned allocation better than the fixed rules people use, and is post-training sparsity competitive with
# pruning while training with labels? Three questions, each answered from the kit's committed results:
#
# 1. Which allocation keeps the most accuracy: with masks alone, with BatchNorm re-estimation, and with the
#    same reconstruction FCPTS gets?
# 2. Does pruning while training, with labels, beat FCPTS, which has none?
# 3. What does each kind of method cost?
#
# How to run it: Run All in JupyterLab (`make lab`); it draws the committed tables in seconds. The README has
# the rest.

# %% tags=["parameters"]
mode: str = "quick"  # quick: CPU, minutes | ci: smallest, for tests | full: the paper's ImageNet recipe (params/<mode>.yaml)
data_root: str = ""  # full mode: the folder holding train/ and val/; empty: $IMAGENET_ROOT, else data/imagenet
target: float = 0.8  # target global sparsity S* the time figure shows beside 90 %
seed: int = 0  # one seed: calibration sample, augmentations, initialisation

# %%
from fcpts import notebook as nb
config, data, run = nb.setup(globals())
targets = nb.SWEEP_TARGETS

# %% [markdown]
# ## The methods
#
# **Fixed allocations** decide each layer's sparsity by a rule, from the weights alone:
#
# - **uniform**: every layer at $S^*$.
# - **global magnitude**: one threshold on $|w|$ across all layers at once.
# - **ERK**: small layers denser, by the formula of notebook 01 (FCPTS's start).
# - **LAMP** (Lee et al., 2021): each weight is scored by $w^2$ divided by the sum of the squares of the
#   weights of its layer that are at least as large, and the globally lowest scores are pruned. A weight that
#   is large *for its layer* survives, whatever the layer's scale.
# - **POT-style**: after magnitude pruning, each layer's remaining weights are corrected (a few steps of Adam
#   per layer) so that its output on calibration images matches the dense layer's; our implementation follows
#   the POT paper's idea, with the details as named options (`fcpts.pot.PotConfig`, `docs/method.md` §4.5).
#
# Each fixed allocation is tried in three **tiers**, so that it is compared with FCPTS fairly. **a**: the
# masks only. **b**: the masks, then BatchNorm re-estimation on the calibration images. **c**: the masks, then
# FCPTS's own reconstruction (the same 150 KD steps on the same images) with the thresholds frozen at the
# allocation. Tier c isolates what *learning* the allocation adds.
#
# **Training-aware pruning** fine-tunes the dense model with labels (150 steps of AdamW at batch 64, the same
# number of steps FCPTS takes without labels), masking the smallest weights of each layer as it goes. The
# **schedule** says how fast the sparsity rises, as a function of training progress from 0 to 1:
#
# - **one-shot**: all at once, halfway through, then training continues;
# - **iterative**: three equal stairs;
# - **AGP** (automated gradual pruning, Zhu and Gupta 2017): a cubic rise, fast at first, slow near the end;
# - **one-cycle** (Hubens et al. 2022): a sigmoid-like rise with parameters $\alpha = 14$ and $\beta = 5$, slow,
#   then fast, then slow again.

# %%
nb.draw("schedule_shapes", run.tag, run.results, run.figures);

# %% [markdown]
# The four schedules, as the fraction of the final sparsity reached at each point of training: one-shot jumps,
# iterative climbs in stairs, AGP front-loads the pruning, one-cycle leaves the start and the end quiet.
#
# ## 1 · The table behind this notebook
#
# Every number here is a row of `data/comparison_<dataset>.csv`, written by the kit's runner
# (`python -m fcpts.runner`): one row per method, tier or schedule, target and seed, with the test images it
# got right. A row is keyed by a fingerprint of everything that changes its result (the configuration, the
# dense model's weights, the method's settings), so a rerun computes only what is missing. This notebook
# computes nothing by default (add `max_new_runs = -1` to the parameters cell to fill the table).

# %%
table, current = nb.comparison(config, run, targets)

# %% tags=["nbval-check-output"]
nb.describe_table(current)

# %% [markdown]
# ## 2 · Which allocation keeps the most accuracy?

# %%
nb.draw("accuracy_vs_sparsity", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# Test error, on a log scale so that 1 % against 2 % is as visible as 20 % against 40 %; lower is better, and
# each bar is a 95 % interval over the 360 test images. Read the panels from left to right: what the masks
# alone keep (a), what BN re-estimation repairs (b), and what a reconstruction adds (c). FCPTS (red) is the
# same line in every panel.

# %%
nb.interval_pivot(current[current["method"] != "dense"])

# %% [markdown]
# ANSWER_ALLOCATIONS
#
# ## 3 · Does training with labels beat FCPTS?

# %%
nb.draw("schedules", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# Top-1 against sparsity for the four schedules (150 labelled fine-tuning steps each) and FCPTS (150 unlabelled
# steps), with their 95 % intervals. The question is where the curves separate.

# %%
print("\n".join(nb.schedule_verdicts(current, nb.working_table(run.results, config.dataset))))

# %% [markdown]
# ANSWER_SCHEDULES
#
# ## 4 · What does each kind of method cost?

# %%
nb.draw("accuracy_vs_time", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# Each dot is one run, placed by its wall-clock time and its test error; the colour says what kind of run it
# is, and the best run of each kind is named. Look for the kinds that reach the lower right (slow, accurate)
# and the lower left (fast, accurate): the second corner is empty.
#
# ANSWER_TIME
#
# ## Summary
#
# SUMMARY_03
#
# ## Exercises
#
# EXERCISES_03
