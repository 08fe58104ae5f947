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
# # 04 · Why a controllable objective: allocation learners and sparse training
#
# FCPTS does not only claim that a learned allocation beats a fixed one. Its argument is about *how* to learn
# it: the methods that already learn per-layer sparsity were built for long training runs, and "fail to
# converge stably under the PTS setting with limited data and much less training cost". A differentiable
# bridge plus a controllable objective are its fix. This notebook tests that argument, and then looks at the
# other end of training-aware pruning, networks that are sparse from the first step. Four questions:
#
# 1. Given exactly FCPTS's post-training budget, does each learner reach the target by itself?
# 2. Is it accurate at the target once the target is enforced?
# 3. What allocation did each one learn?
# 4. Does exploring more weights help sparse training, and how does it compare with FCPTS?
#
# How to run it: Run All in JupyterLab (`make lab`); it draws the committed tables in seconds. The README has
# the rest.

# %% tags=["parameters"]
mode: str = "quick"  # quick: CPU, minutes | ci: smallest, for tests | full: the paper's ImageNet recipe (params/<mode>.yaml)
data_root: str = ""  # full mode: the folder holding train/ and val/; empty: $IMAGENET_ROOT, else data/imagenet
target: float = 0.8  # target global sparsity S* the figures mark
seed: int = 0  # one seed: calibration sample, augmentations, initialisation

# %%
from fcpts import notebook as nb
config, data, run = nb.setup(globals())
from fcpts.registry import LEARNERS

# %% [markdown]
# ## The learners
#
# Three methods that learn a per-layer allocation, each run through the same loop as FCPTS
# (`fcpts.learn_allocation`) with exactly its budget: the same calibration images and augmentations, batch,
# 150 steps, KD loss against the frozen dense teacher, SGD on the weights, BN mode and dense model. Only how
# the allocation is learned differs:
#
# - **STR** (soft threshold reparameterization, Kusupati et al. 2020): one learnable threshold per layer, and
#   the weight the network uses is $\mathrm{sign}(w)\max(|w| - t, 0)$, so the reconstruction loss itself moves
#   the thresholds. There is no budget term.
# - **ProbMask** (Zhou et al. 2021): a keep probability per weight. Each step samples a *binary-concrete*
#   mask: a relaxed Bernoulli draw whose temperature falls over training, so the mask becomes nearly 0/1 while
#   staying differentiable. After every step one global shift of all probabilities holds a rising budget in
#   expectation.
# - **DSA-style** (after DSA, Ning et al. 2020; here unstructured, with a parameter budget): one keep ratio per
#   layer, from which per-weight keep probabilities are solved; Bernoulli masks; an ADMM-style penalty (a
#   penalty plus a dual variable updated each step, as in the alternating direction method of multipliers)
#   holds the ratios to the budget. $\beta_2$ sets how sharp the keep probabilities are: at 1 they are soft.
#
# Every method, FCPTS included, ends with the kit's exact projection to round($S^* N$) zeros. So two questions
# get two answers: does the learner reach the target *by itself* (its own masks before the projection), and is
# it *accurate* at the target (top-1 after). `docs/method.md` §7 says what is verified of each and which
# details are options.

# %%
table, current = nb.comparison(config, run, kind="learners", methods=LEARNERS, tiers=("c",), schedules=())
found = nb.read_learners(run.results, config.dataset)

# %% tags=["nbval-check-output"]
nb.describe_table(current)

# %% [markdown]
# ## 1 · Does each learner reach the target by itself?

# %%
nb.draw("learner_trajectories", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# The global sparsity of each method's own masks at every step, at 80 % and 90 % (mean over seeds; the band
# spans them). FCPTS's curve is the bridge's exact count; STR's, the weights under their thresholds;
# ProbMask's, its concrete masks read at 0.5; DSA-style's, its Bernoulli draws. Where a curve ends is what the
# projection then has to close in one cut.
#
# ANSWER_REACH
#
# ## 2 · Is it accurate at the target?

# %%
summary = nb.learner_summary(found[0], nb.LEARNER_TARGETS, outcomes_from=nb.readable_path(
    run.results, f"learners_{config.dataset}.csv")) if found else None
summary.round(2) if summary is not None else None

# %% [markdown]
# ANSWER_ACCURACY
#
# ## 3 · What did they learn?

# %%
nb.draw("learner_allocations", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# ANSWER_ALLOCATION
#
# ## 4 · Sparse from the first step: DST-EE and RigL
#
# The training-aware schedules of notebook 03 start dense and prune along the way. **Dynamic sparse training**
# is the other end: the network is sparse from the first step, at fixed per-layer densities (ERK), and only
# *which* weights are active changes. Every $\Delta T = 8$ steps, in every layer, it drops the active weights
# of smallest magnitude and grows as many inactive ones, until 75 % of the run.
#
# - **RigL** (Evci et al. 2020) grows the inactive weights with the largest gradient.
# - **DST-EE** (Huang et al. 2023) adds an exploration bonus $c\sqrt{\ln(u+1)/(N+\varepsilon)}$ for a weight that
#   has been active in few of the $u$ updates so far ($N$ of them). It is an upper confidence bound (UCB), as
#   in bandit problems: rarely tried weights get a chance. RigL is DST-EE with $c = 0$.
#
# Both run with the one-cycle rows' budget and optimiser (150 AdamW steps at batch 64, with labels), from the
# dense model (magnitude-pruned to ERK at step 0) and from scratch (random masks). **Coverage**, the fraction
# of weights ever active, measures the exploration. DST-EE's details are options (`fcpts.dst.DstConfig`).

# %%
dst_table, dst_current = nb.comparison(config, run, kind="dst", methods=("dst-ee", "rigl"), tiers=(),
                                       schedules=("one_cycle",), starts=("dense", "scratch"))
found_dst = nb.read_dst(run.results, config.dataset)

# %%
nb.draw("dst_coverage", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# ANSWER_COVERAGE

# %%
nb.draw("dst_accuracy", run.tag, run.results, run.figures, dataset=config.dataset, target=target);

# %% [markdown]
# Top-1 of every method and start, with 95 % intervals where there are several seeds or outcomes. The paired
# verdicts below compare two methods on the same test images (and seeds): "beats" only when the interval of
# the difference excludes 0.

# %%
DST_PAIRS = [(("dst-ee", "finetune"), ("rigl", "finetune")), (("dst-ee", "scratch"), ("rigl", "scratch")),
             (("dst-ee", "finetune"), ("one_cycle", "finetune")), (("dst-ee", "scratch"), ("one_cycle", "scratch")),
             (("fcpts", "c"), ("dst-ee", "finetune")), (("fcpts", "c"), ("one_cycle", "finetune"))]
for line in (nb.paired_verdicts(found_dst[0], found_dst[2], DST_PAIRS, nb.DST_TARGETS) if found_dst else []):
    print(line)

# %% [markdown]
# ANSWER_DST
#
# ## Summary
#
# SUMMARY_04
#
# ## Exercises
#
# EXERCISES_04
