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
# # 01 · Post-training sparsity, the bridge function and the controllable objective
#
# This notebook builds the ideas behind **FCPTS** (*Fast and Controllable Post-Training Sparsity*, Gong et
# al., AAAI 2024; [paper](https://arxiv.org/abs/2405.05808), [authors' code](https://github.com/ModelTC/FCPTS))
# one at a time, each on real numbers. Four questions:
#
# 1. What does post-training sparsity ask for, and why does the **per-layer allocation** decide the accuracy?
# 2. How can a layer's sparsity have a gradient? (the **bridge function**)
# 3. How does the **controllable objective** pull the global sparsity to the target, and how fast?
# 4. How does the kit guarantee the target exactly? (the **projection**)
#
# Notebook 02 then runs the whole method on ResNet-50. How to run it: Run All in JupyterLab (`make lab`), about a
# minute on a laptop CPU once the dense model is cached; the README has the rest.

# %% tags=["parameters"]
mode: str = "quick"  # quick: CPU, minutes | ci: smallest, for tests | fashion: quick on Fashion-MNIST | full: the paper's ImageNet recipe (params/<mode>.yaml)
data_root: str = ""  # full mode: the folder holding train/ and val/; empty: $IMAGENET_ROOT, else data/imagenet
target: float = 0.8  # target global sparsity S* over all Conv2d/Linear weights
seed: int = 0  # one seed: calibration sample, augmentations, initialisation
bridge_layer: str = "layer3.0.conv2"  # the layer whose weights illustrate the bridge function
objective_model: str = "resnet18"  # small torchvision model (random init) for the objective dynamics
objective_start: float = 0.6  # uniform sparsity the thresholds start from in the objective demo

# %%
from fcpts import notebook as nb
config, data, run = nb.setup(globals())
model, model_info = nb.load_model(config, data.num_classes)

# %%
import copy
import pandas as pd
import torch
import fcpts
from fcpts.baselines import prune_baseline
from fcpts.evaluate import evaluate
from fcpts.masking import start_threshold
from fcpts.sparsify import start_allocation
from fcpts.models import build_model

# %% [markdown]
# ## 1 · The problem: post-training sparsity
#
# We start from a **trained dense network** and a small **calibration set** of unlabelled training images
# (the paper's code draws 1,024 ImageNet training images). We must return a network in which a chosen
# fraction $S^*$ of the prunable weights is exactly zero, within minutes and without the original training
# run. The prunable weights are the `weight` of every `Conv2d` and `Linear` layer (first convolution,
# downsampling convolutions and classifier included); biases and BatchNorm are never pruned. The global
# sparsity counts weights, not layers:
#
# $$S \;=\; \frac{\sum_l n_l\, S_l}{\sum_l n_l} \;=\; \frac{1}{N}\sum_l n_l\, S_l ,$$
#
# where layer $l$ holds $n_l$ weights and a fraction $S_l$ of them is zero. One target $S^*$ leaves a
# free choice of the $S_l$: the **allocation**. Here is the dense model we prune (in the quick mode, the
# kit's own ResNet-50 trained on the bundled 8×8 digits upsampled to 32 px; trained and cached the first
# time it is needed, about 2.5 minutes on 2 CPU cores).

# %%
dense = evaluate(model, data.test, batch_size=config.eval_batch_size, progress=False)
sizes = pd.Series({name: layer.weight.numel() for name, layer in fcpts.prunable_layers(model).items()})
print(model_info["source"])
print(f"dense test top-1: {dense['top1']:.2%} on {dense['n']} images")
print(f"{len(sizes)} prunable layers, N = {sizes.sum():,} weights; the 5 largest layers hold "
      f"{sizes.nlargest(5).sum() / sizes.sum():.0%} of them, the 5 smallest {sizes.nsmallest(5).sum():,}")

# %% [markdown]
# ## 2 · Why the allocation matters
#
# Three classic allocations, all at exactly the same global sparsity $S^*$:
#
# * **uniform** — every layer at $S_l = S^*$;
# * **global magnitude** — one threshold on $|w|$ over all layers at once (layers whose weights are small in
#   scale lose the most);
# * **ERK** (Erdős–Rényi-Kernel, from RigL): a conv layer with $n_\text{out}$ output channels, $n_\text{in}$
#   input channels and a $k_h \times k_w$ kernel keeps a fraction
#   $\varepsilon\,(n_\text{out}+n_\text{in}+k_h+k_w)/(n_\text{out}\,n_\text{in}\,k_h\,k_w)$ of its weights
#   (a Linear layer has no $k$ terms), with one scale $\varepsilon$ chosen to fill the budget. Small layers stay
#   denser. FCPTS starts its thresholds here.
#
# Each prunes the smallest-magnitude weights of each layer to its share, then re-estimates the BatchNorm
# statistics on the calibration images (tier **b** of notebook 03; no training, seconds).

# %% tags=["nbval-check-output"]
labels = {"uniform": "Uniform", "global": "Global magnitude", "erk": "ERK"}
rows, allocations = [dict(method="dense", label="dense", target=0.0, achieved_sparsity=0.0,
                          top1=dense["top1"], seconds=0.0)], {}
for method, text in labels.items():
    pruned, info = prune_baseline(model, nb.fresh_calibration(data), config.target, method, "b", config)
    top1 = evaluate(pruned, data.test, batch_size=config.eval_batch_size, progress=False)["top1"]
    rows.append(dict(method=method, label=f"{text} + BN", target=config.target,
                     achieved_sparsity=info["achieved_sparsity"], top1=top1, seconds=info["wall_time"]))
    allocations[text] = info["allocation"]
allocation_matters = pd.DataFrame(rows)
layer_table = pd.DataFrame({"layer": list(sizes.index), "numel": sizes.values, "target": config.target,
                            **{k: [v[n] for n in sizes.index] for k, v in allocations.items()}})
nb.save_table(allocation_matters, run.results, f"allocation_matters_{run.tag}.csv")
nb.save_table(layer_table, run.results, f"allocations_{run.tag}.csv")
for r in allocation_matters.itertuples():
    print(f"{r.label:<24} sparsity {r.achieved_sparsity:.4f}  top-1 {100 * r.top1:5.1f} %")

# %%
nb.draw("allocation_matters", run.tag, run.results, run.figures);

# %% [markdown]
# The same number of zeros gives three very different accuracies: at 80 % ERK + BN loses about 6 points, uniform
# loses most of the accuracy, and global magnitude falls to chance. Where the zeros go is what
# differs, layer by layer:

# %%
nb.draw("allocations", run.tag, run.results, run.figures)
ends = layer_table.set_index("layer").loc[[sizes.index[0], sizes.index[-1]], list(allocations)]
print("sparsity of the first and the last layer under each allocation:")
ends.round(3)

# %% [markdown]
# Read the figure from left (input) to right (classifier):
#
# - **Uniform** removes the same share of the tiny first convolution and the classifier as of the huge 3×3
#   convolutions of the last stage, and the accuracy collapses.
# - **Global magnitude** takes the most from the layers whose weights happen to be small in scale. Here that is
#   the classifier `fc`: the table shows it pruned to 100 %. With no classifier weights every image gets the
#   same answer, and top-1 is chance, 10 %.
# - **ERK** keeps small layers dense and prunes the big ones hardest, and stays far ahead of the other two.
#
# So at a fixed global sparsity the allocation decides the accuracy. Finding a good one by hand or by search is
# expensive. FCPTS *learns* it by gradient descent, which needs two things: a threshold per layer that gradients
# can move, and a global sparsity that is a differentiable function of those thresholds.
#
# ## 3 · The bridge: sparsity as a differentiable function of the threshold
#
# Give each prunable layer one threshold $t_l$; a weight survives when $|w| > t_l$. The sparsity of the
# layer is then the probability mass of its weights inside $[-t_l, t_l]$:
#
# $$S_l(t) \;=\; P(|w| \le t) \;=\; \int_{-t}^{t} p_l(w)\,dw, \qquad
#   \frac{dS_l}{dt} \;=\; p_l(t) + p_l(-t),$$
#
# with $p_l$ the density of the layer's (signed) weights. Counting gives the exact value of $S_l(t)$, but
# a count is a step function: its derivative is zero almost everywhere. FCPTS therefore uses the **exact
# count forward** and a **density estimate backward**. Two estimates of $p_l$:
#
# * the released code's **100-bin histogram** over $[\min w, \max w]$, rebuilt every step (a box kernel);
# * a **Gaussian kernel density estimate** (KDE, Silverman's bandwidth) on a fixed, seeded subsample of at
#   most 65,536 weights, so the cost stays bounded for layers with millions of weights.
#
# `fcpts.Bridge` stitches value and gradient with the surrogate
# `exact + (t - t.detach()) * density`: its value is the count, its derivative the density estimate.
# Below: one real layer of the dense model; the dotted line is the threshold ERK starts this layer at.

# %%
w = dict(model.named_modules())[bridge_layer].weight.detach().flatten()
erk = start_allocation(model, config.target, config)  # ERK, with config's rounding (the released one by default)
t_erk = start_threshold(w, erk[bridge_layer], config.init_rounding)
hist = fcpts.Bridge(w.numel(), "histogram", bins=config.histogram_bins)
kde = fcpts.Bridge(w.numel(), "kde", max_samples=config.kde_max_samples, bandwidth=config.kde_bandwidth,
                   seed=config.seed)
sample = w[kde.subsample] if kde.subsample is not None else w

# panel 1: the density of the signed weights
edge = float(w.abs().max())
grid = torch.linspace(-edge, edge, 401)
density = {"histogram": fcpts.histogram_density(w, grid, config.histogram_bins),
           "kde": fcpts.kde_density(sample, grid, config.kde_bandwidth)}
# panels 2 and 3: S(t) and dS/dt on thresholds up to the 99.5 % quantile of |w|
t = torch.linspace(0.0, float(w.abs().quantile(0.995)), 161)
exact = torch.stack([fcpts.exact_sparsity(w, x) for x in t])
slope = {name: torch.stack([b.density_at(w, x) for x in t]) for name, b in (("histogram", hist), ("kde", kde))}
h = 0.02 * float(w.std())  # finite-difference step
fd = torch.stack([(fcpts.exact_sparsity(w, x + h) - fcpts.exact_sparsity(w, (x - h).clamp_min(0))) /
                  (x + h - (x - h).clamp_min(0)) for x in t])

def integral(y, x):  # S_est(t) = integral of the estimated dS/dt from 0 to t (trapezoids)
    return torch.cat([torch.zeros(1), torch.cumsum((y[1:] + y[:-1]) / 2 * (x[1:] - x[:-1]), 0)])

curves = pd.concat([
    pd.DataFrame(dict(panel="density", estimator=k, x=grid.numpy(), y=v.numpy())) for k, v in density.items()
] + [pd.DataFrame(dict(panel="sparsity", estimator="exact", x=t.numpy(), y=exact.numpy()))]
  + [pd.DataFrame(dict(panel="sparsity", estimator=k, x=t.numpy(), y=integral(v, t).numpy()))
     for k, v in slope.items()]
  + [pd.DataFrame(dict(panel="gradient", estimator=k, x=t.numpy(), y=v.numpy())) for k, v in slope.items()]
  + [pd.DataFrame(dict(panel="gradient", estimator="finite differences", x=t.numpy()[::4], y=fd.numpy()[::4]))],
  ignore_index=True)
nb.save_table(curves, run.results, f"bridge_{run.tag}.csv")
nb.save_json(dict(layer=bridge_layer, threshold=t_erk, numel=w.numel(), fd_step=h), run.results, f"bridge_{run.tag}.json")
nb.draw("bridge", run.tag, run.results, run.figures);

# %% [markdown]
# Both estimates follow the finite differences of the exact count; the histogram is a staircase (its
# gradient jumps where $\pm t$ crosses a bin edge and vanishes outside $[\min w,\max w]$), the KDE is smooth.
# Now the surrogate itself: at the ERK threshold, autograd through `Bridge` returns the exact count as the
# value and the density estimate as the gradient, and central finite differences of the count agree with it.

# %% tags=["nbval-check-output"]
checks = []
for name, bridge in (("histogram", hist), ("kde", kde)):
    threshold = torch.tensor(t_erk, requires_grad=True)
    value = bridge(w, threshold)
    (grad,) = torch.autograd.grad(value, threshold)
    checks.append(dict(estimator=name, value=value.item(), exact=float(fcpts.exact_sparsity(w, t_erk)),
                       autograd=float(grad), density=float(bridge.density_at(w, threshold))))
for step in (0.5 * h, h, 4 * h):  # central differences of the exact count
    d = (fcpts.exact_sparsity(w, t_erk + step) - fcpts.exact_sparsity(w, t_erk - step)) / (2 * step)
    checks.append(dict(estimator=f"finite difference, step {step:.2g}", autograd=float(d)))
bridge_check = pd.DataFrame(checks)
print(f"layer {bridge_layer}: {w.numel():,} weights, ERK start S = {erk[bridge_layer]:.4f}")
for r in bridge_check.itertuples():
    print(f"{r.estimator:<34} dS/dt = {r.autograd:.3g}")

# %% [markdown]
# ## 4 · The controllable objective
#
# FCPTS trains the pruned network, the **student**, to imitate the dense one, the **teacher**. Both see the same
# unlabelled calibration images, and the **reconstruction loss** $L_\text{rec}$ measures how far apart their
# outputs are: the Kullback–Leibler divergence between their output distributions, both softened by a
# temperature $T = 4$ (knowledge distillation). $L_\text{rec}$ alone would happily keep every weight. So FCPTS
# adds a term that pulls the global sparsity $S(t)=\frac1N\sum_l n_l S_l(t_l)$, computed through the bridge, to
# the target:
#
# $$L \;=\; L_\text{rec} + \lambda\,L_c, \qquad L_c = |S - S^*| \;\;(\texttt{abs}, \text{released}) \quad\text{or}\quad (S - S^*)^2 \;\;(\texttt{pow2}).$$
#
# The gradient reaching threshold $t_l$ is $\partial L_c/\partial S \cdot (n_l/N)\,(p_l(t_l)+p_l(-t_l))$: a layer
# moves in proportion to its size and to the weight density at its threshold. The two forms differ in
# $\partial L_c/\partial S$. For `abs` it is $\pm 1$, the same push at any distance. For `pow2` it is
# $2(S - S^*)$: 0.4 when the sparsity is 0.2 short, and less as it gets closer.
#
# In the released code the mask is computed without gradient, so $L_\text{rec}$ sends **no** gradient to the
# thresholds: they move only through $L_c$. So we can watch $L_c$ alone. We take a small model (a randomly
# initialised ResNet-18; the objective only sees weight distributions), start every layer at a uniform
# sparsity of `objective_start`, and run the released optimiser (SGD, momentum 0.9, the configuration's learning
# rate) for as many steps as FCPTS takes.

# %%
torch.manual_seed(config.seed)
small = build_model(objective_model, weights=None, num_classes=data.num_classes)
start = fcpts.uniform_allocation(small, objective_start)
runs, histories = {}, []
for kind in ("abs", "pow2"):
    sparsifier = fcpts.ThresholdSparsifier(copy.deepcopy(small), start, bins=config.histogram_bins)
    optimizer = torch.optim.SGD(sparsifier.threshold_parameters(), lr=config.lr, momentum=config.momentum)
    rows = []
    for step in range(config.steps):
        s = sparsifier.global_sparsity()
        loss_c = fcpts.controllable_loss(s, config.target, kind)
        optimizer.zero_grad()
        loss_c.backward()
        optimizer.step()
        rows.append(dict(step=step, sparsity=s.item(), loss_c=loss_c.item()))
    runs[kind] = sparsifier
    histories.append(pd.DataFrame(rows).assign(run=kind, target=config.target, model=objective_model))
objective = pd.concat(histories, ignore_index=True)
nb.save_table(objective, run.results, f"objective_{run.tag}.csv")
nb.draw("objective", run.tag, run.results, run.figures)
final = objective.groupby("run").tail(1).set_index("run")
print(f"{objective_model}: start S = {objective_start:.2f}, target {config.target:.2f}, lr {config.lr:g}, "
      f"{config.steps} steps")
for kind, r in final.iterrows():
    print(f"{kind:>5}: final S = {r.sparsity:.4f}, {r.sparsity - config.target:+.4f} from the target")

# %% [markdown]
# What to see, on the quick default (150 steps): `abs` climbs from 0.60, reaches the target after about 100
# steps and stays there. `pow2` is still rising when the steps run out: it ends near 0.73, about seven points
# short. Its push started at 0.4 of `abs`'s and shrank as it closed in, so at this learning rate it needs far
# more steps. The released code would stop right there, at whatever sparsity the thresholds give at the last
# step. That is why it uses `abs`.
#
# ## 5 · The exact final projection
#
# This kit guarantees the target. After the optimisation, one shared factor $\tau$ scales every threshold,
# $t_l \to \tau\,t_l$. Equivalently, one global cut on the scale-free score $|w|/t_l$, chosen so that exactly
# $\operatorname{round}(S^* N)$ weights fall below it (ties broken by position). The *shape* of the learned
# allocation is kept; only its level moves. `fcpts.project_masks` does it, and `fcpts.sparsify` calls it at the
# end of every run. Here it is on both runs of section 4:

# %% tags=["nbval-check-output"]
zeros = round(config.target * runs["abs"].n_total)
projections = []
for kind, sparsifier in runs.items():
    weights = {n: m.parametrizations.weight.original.detach() for n, m in sparsifier.layers.items()}
    masks, tau = fcpts.project_masks(weights, sparsifier.thresholds(), zeros)
    achieved = sum(int((m == 0).sum()) for m in masks.values())
    projections.append(dict(run=kind, before=sparsifier.global_sparsity().item(), after=achieved / sparsifier.n_total,
                            tau=tau, exact=achieved == zeros))
for p in projections:
    print(f"{p['run']:>5}: S before {p['before']:.4f}, after {p['after']:.6f}, tau = {p['tau']:.3f}, exact: {p['exact']}")

# %% [markdown]
# Both runs now hold exactly the target's zeros, the one that converged and the one that was seven points
# short. The projection closed the gap without a word: after it, a run that never converged looks like one
# that did. Two numbers give it away. The sparsity *before* the projection, and $\tau$: near 1 when the
# thresholds were already at the target, far from 1 when the projection had to move them. That is why
# `fcpts.sparsify` reports `sparsity_before_projection`, `sparsity_after_projection` and `projection_shift`
# ($\tau$), and why the kit's tables keep the sparsity before the projection beside the accuracy.
#
# %% [markdown]
# ## Summary
#
# 1. **The allocation decides the accuracy.** At the same global sparsity (80 %), ERK + BN loses about 6 points,
#    uniform loses most of the accuracy, and global magnitude prunes the classifier away (chance).
# 2. **The bridge** makes a layer's sparsity differentiable in its threshold: the exact count forward, a
#    density estimate backward. The released histogram and the KDE both agree with finite differences.
# 3. **$L_c$ pulls the sparsity to the target**, and its form sets the pace: `abs` arrives within the steps,
#    `pow2` does not (0.73 of 0.80 after 150 steps).
# 4. **The projection** makes the target exact, whether or not the run converged. So read the sparsity before
#    the projection and $\tau$ before trusting a run.
#
# ## Exercises
#
# 1. Set `target = 0.9` in the parameters cell and run all. Expect ERK + BN to lose far more than at 80 % (to
#    about 25 %), while uniform and global magnitude stay at or near chance.
# 2. In section 3, set `bridge_layer = "fc"` (20,480 weights, the classifier). Expect both estimates to still
#    follow the finite differences of the exact count, to within a few percent, on this small layer.
# 3. In section 4, use `optimizer = torch.optim.SGD(..., lr=10 * config.lr, ...)`. Expect `pow2` to reach the
#    target within the steps, and `abs` to overshoot and oscillate around it more.
# 4. In section 5, print `tau` for a run you stop after 20 steps (change `range(config.steps)` in section 4).
#    Expect $\tau$ far from 1 for both forms, with the same exact count after the projection.
#
# Next: **02** runs FCPTS end to end on ResNet-50 and learns its allocation.
