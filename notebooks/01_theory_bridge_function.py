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
# al., AAAI 2024) one at a time, each on real numbers:
#
# 1. what post-training sparsity asks for, and why the **per-layer allocation** decides the accuracy;
# 2. the **bridge function**: a layer's sparsity as a differentiable function of its threshold, with the
#    exact count, a Gaussian kernel density estimate and the released code's 100-bin histogram, checked
#    against finite differences on a real layer of ResNet-50;
# 3. the **controllable objective** $L_c$ and how its two forms, `abs` and `pow2`, drive the global
#    sparsity to the target;
# 4. the **exact final projection** that this kit adds, so the target is met to the weight.
#
# Notebook 02 then runs the whole method on ResNet-50; 03 compares it with other allocations and with
# training-aware pruning; 04 redraws every figure from the saved results.
#
# **Running it.** `make lab` opens JupyterLab on `notebooks/`; run all cells (the defaults in the `parameters`
# cell are the quick CPU mode). Your runs write their results and figures to `results/notebooks/`, which git
# ignores, and read the committed `data/` for anything they have not written; only `make notebooks` refreshes
# the committed `data/` and `figures/`. Or run it with papermill from the repository root:
#
# ```bash
# papermill notebooks/01_theory_bridge_function.ipynb build/notebooks/01_theory_bridge_function.ipynb -f params/quick.yaml   # quick, CPU; writes data/, figures/
# papermill notebooks/01_theory_bridge_function.ipynb build/notebooks/01_theory_bridge_function.ipynb -f params/full.yaml    # ImageNet recipe
# papermill --help-notebook notebooks/01_theory_bridge_function.ipynb                                    # every parameter
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
bridge_layer: str = "layer3.0.conv2"  # the layer whose weights illustrate the bridge function
objective_model: str = "resnet18"  # small torchvision model (random init) for the objective dynamics
objective_start: float = 0.6  # uniform sparsity the thresholds start from in the objective demo

# %%
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # without ipywidgets tqdm falls back to text

from fcpts import notebook as nb
from fcpts.data import load_data

config = nb.make_config(dataset, data_root, model, weights, image_size, calib_size, steps, batch_size,
                        target, seed, progress=progress)
data = load_data(config)  # checks the dataset first: a missing or malformed ImageNet stops here
tag = nb.run_tag(config)
print(nb.describe(config, data))
print("environment:", nb.environment())

import copy
import numpy as np
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
model, model_info = nb.load_model(config, data.num_classes)
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
# * **ERK** (Erdős–Rényi-Kernel, from RigL) — density $\propto (n_\text{out}+n_\text{in}+k_h+k_w)/
#   (n_\text{out}\,n_\text{in}\,k_h\,k_w)$: small layers stay denser. FCPTS starts its thresholds here.
#
# Each prunes the smallest-magnitude weights of each layer to its share, then re-estimates the BatchNorm
# statistics on the calibration images (tier **b** of notebook 03; no training, seconds).

# %%
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
nb.save_table(allocation_matters, results_dir, f"allocation_matters_{tag}.csv")
nb.save_table(layer_table, results_dir, f"allocations_{tag}.csv")
allocation_matters.round(4)

# %% tags=["nbval-check-output"]
for r in allocation_matters.itertuples():
    print(f"{r.label:<24} sparsity {r.achieved_sparsity:.4f}  top-1 {100 * r.top1:5.1f} %")

# %%
nb.draw("allocation_matters", tag, results_dir, figures_dir)
nb.draw("allocations", tag, results_dir, figures_dir)
ends = layer_table.set_index("layer").loc[[sizes.index[0], sizes.index[-1]], list(allocations)]
print("sparsity of the first and the last layer under each allocation:")
ends.round(3)

# %% [markdown]
# Same number of zeros, very different networks. Uniform removes the same share of the tiny first
# convolution and classifier as of the huge 3×3 convolutions of the last stage; global magnitude takes
# the most from the layers whose weights happen to be small in scale — look at the first and last
# layers in the table above; ERK keeps small layers dense and prunes the big ones hardest. Finding a good allocation is the whole game — and doing it
# by hand or by search is expensive. FCPTS *learns* it by gradient descent, which needs two things: a
# threshold per layer that gradients can move, and a global sparsity that is a differentiable function of
# those thresholds.
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
nb.save_table(curves, results_dir, f"bridge_{tag}.csv")
nb.save_json(dict(layer=bridge_layer, threshold=t_erk, numel=w.numel(), fd_step=h), results_dir, f"bridge_{tag}.json")
nb.draw("bridge", tag, results_dir, figures_dir);

# %% [markdown]
# Both estimates follow the finite differences of the exact count; the histogram is a staircase (its
# gradient jumps where $\pm t$ crosses a bin edge and vanishes outside $[\min w,\max w]$), the KDE is smooth.
# Now the surrogate itself: at the ERK threshold, autograd through `Bridge` returns the exact count as the
# value and the density estimate as the gradient.

# %%
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
bridge_check

# %% tags=["nbval-check-output"]
print(f"layer {bridge_layer}: {w.numel():,} weights, ERK start S = {erk[bridge_layer]:.4f}")
for r in bridge_check.itertuples():
    print(f"{r.estimator:<34} dS/dt = {r.autograd:.3g}")

# %% [markdown]
# ## 4 · The controllable objective
#
# With thresholds that gradients can move, FCPTS adds to the reconstruction loss a term that pulls the
# global sparsity $S(t)=\frac1N\sum_l n_l S_l(t_l)$ (computed through the bridge) to the target:
#
# $$L \;=\; L_\text{rec} + \lambda\,L_c, \qquad L_c = |S - S^*| \;\;(\texttt{abs}, \text{released}) \quad\text{or}\quad (S - S^*)^2 \;\;(\texttt{pow2}).$$
#
# The gradient reaching threshold $t_l$ is $\partial L_c/\partial S \cdot (n_l/N)\,(p_l(t_l)+p_l(-t_l))$:
# a layer moves in proportion to its size and to the weight density at its threshold. `abs` pushes with a
# constant force whatever the distance, so it reaches the target quickly and then oscillates around it;
# `pow2` pushes in proportion to the distance, so it slows down as it gets close.
#
# In the released code the mask is computed without gradient, so the reconstruction loss sends **no**
# gradient to the thresholds: they move only through $L_c$. We can therefore study $L_c$ alone, on a small
# model (a randomly initialised ResNet-18; the objective only sees the weight distributions), starting all
# layers at a uniform sparsity away from the target, with the released optimiser (SGD, momentum 0.9, the
# learning rate of the configuration) for as many steps as FCPTS takes.

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
nb.save_table(objective, results_dir, f"objective_{tag}.csv")
nb.draw("objective", tag, results_dir, figures_dir)
final = objective.groupby("run").tail(1).set_index("run")
n_small = runs["abs"].n_total
print(f"{objective_model}: N = {n_small:,} weights, start S = {objective_start:.2f}, target {config.target:.2f}, "
      f"lr {config.lr:g}, {config.steps} steps")
for kind, r in final.iterrows():
    print(f"{kind:>5}: final S = {r.sparsity:.5f}, |S - S*| = {abs(r.sparsity - config.target):.2e} "
          f"= {abs(r.sparsity - config.target) * n_small:,.0f} weights off")

# %% [markdown]
# Neither form lands *exactly* on the target: the thresholds are continuous, the count is not, and the
# optimiser keeps moving. The released code stops there — its final sparsity is whatever the thresholds
# give at the last step.
#
# ## 5 · The exact final projection
#
# This kit guarantees the target. After optimisation, one shared factor $\tau$ scales every threshold,
# $t_l \to \tau\,t_l$ — equivalently, one global cut on the scale-free score $|w|/t_l$ — chosen so that
# exactly $\operatorname{round}(S^* N)$ weights fall below it (ties broken by position). The *shape* of the
# learned allocation is kept; only its level moves. `fcpts.project_masks` does it; `fcpts.sparsify` calls
# it at the end of every run and reports the sparsity before and after.

# %%
sparsifier = runs["pow2"]
weights = {n: m.parametrizations.weight.original.detach() for n, m in sparsifier.layers.items()}
zeros = round(config.target * sparsifier.n_total)
masks, tau = fcpts.project_masks(weights, sparsifier.thresholds(), zeros)
before = {n: float(s) for n, s in sparsifier.layer_sparsities().items()}
after = {n: 1.0 - float(m.mean()) for n, m in masks.items()}
achieved_zeros = sum(int((m == 0).sum()) for m in masks.values())
projection = pd.DataFrame({"before": before, "after": after})
print(f"before the projection: S = {sparsifier.global_sparsity().item():.6f}")
print(f"after:  {achieved_zeros:,} zeros of {sparsifier.n_total:,} = {achieved_zeros / sparsifier.n_total:.6f} "
      f"(asked: round(S* N) = {zeros:,}); shared scale tau = {tau:.4f}")
print(f"per-layer sparsity before: {projection['before'].min():.3f} to {projection['before'].max():.3f}; "
      f"after: {projection['after'].min():.3f} to {projection['after'].max():.3f}")
projection.sort_values("after").iloc[[0, len(projection) // 2, -1]].round(4)

# %% tags=["nbval-check-output"]
print(f"exact: {achieved_zeros == zeros}; {len(masks)} layers; achieved sparsity {achieved_zeros / sparsifier.n_total:.6f}")

# %% [markdown]
# ## Summary
#
# * The allocation decides the accuracy at a fixed global sparsity (section 2).
# * The bridge turns "how sparse is this layer" into a differentiable function of its threshold: exact
#   count forward, density estimate backward (section 3). The released histogram and the Gaussian KDE
#   agree with finite differences; the KDE is smooth.
# * $L_c$ moves the thresholds until the global sparsity reaches the target; `abs` gets there faster and
#   oscillates, `pow2` approaches slowly (section 4).
# * A final projection makes the target exact to the weight (section 5).
#
# Next: **02** runs FCPTS end to end on ResNet-50 and learns its allocation.
