"""Speed: what one FCPTS step costs next to the plain alternatives, and where the time goes.

Everything is a *ratio measured in one process*, with warm-up iterations, medians over repeats and the
variants interleaved (a, b, c, a, b, c, ...), so that load from other processes hits all variants alike:

* **steps** (the embedded ResNet-50, 32 px, batch 64, CPU): one FCPTS step (``Config.quick_cpu()``: teacher
  forward, masked student forward/backward, bridge, L_c, SGD) against one plain masked-KD step with the
  *same* masks (weights hold zeros, gradients masked; no thresholds, bridge or L_c), the same masks applied by
  ``torch.nn.utils.prune`` (a forward pre-hook, like a parametrization), a dense KD step and a dense
  cross-entropy training step; the FCPTS variants ``gradient=ste`` and ``bridge=kde`` too;
* **before_after** (issue #24): the FCPTS step as the loop ran it before (each layer's slope from a full
  ``torch.histc`` histogram whose range is read back with ``.item()``, and the history read one ``.item()`` at a
  time; ``PreviousFcptsStep``, reimplemented here) against the step now (two bins counted directly, the slopes
  batched over the layers, one read of the history) and masked KD, interleaved; both steps' bridge + objective
  share, whether they train identically, and the new histogram rule's largest deviation from the histc one;
* **layout**: the FCPTS and masked-KD steps with the model in channels_last memory format against the default
  (``fcpts.sparsify`` uses channels_last on CUDA only);
* **components**: teacher forward, student forward+backward with/without the threshold parametrization, the
  bridge and objective (``global_sparsity()`` + ``controllable_loss`` + their backward), the optimiser step;
  the bridge's share of a step;
* **mask forms**: w ⊙ 1{|w| > t} plus the pruned count over all ResNet-50 weights, forward and backward, as
  ``ThresholdMask`` computes it against a bool mask counted and cast, ``torch.where`` and ``F.hardshrink``;
* **bridge vs layer size**: ``Bridge(n, est)(w, t)`` forward+backward for n = 1e3..1e7, histogram vs KDE;
* **teacher cache**: ``Config.cache_teacher=True`` (calibration not augmented) against recomputing the
  teacher's logits every step, and what building the cache costs;
* **cross-check**: the per-step cost of the real ``fcpts.sparsify`` loop, from two runs of different lengths.

    python -m benchmarks.speed                       # writes benchmarks/results/speed.json
    python -m benchmarks.speed --parts bridge        # one part only (steps before_after layout components masks
                                                     #   bridge cache crosscheck)

Besides the JSON, ``speed.md`` (next to it) gets a short table of the parts in the file.

The end-to-end ``fcpts demo`` time is measured by ``benchmarks/demo_time.py`` (run it on a quiet machine).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from benchmarks._common import RESULTS, dense_resnet50, envelope, median_times, set_threads, write_json
from fcpts import Bridge, Config, ThresholdSparsifier, controllable_loss, kd_loss
from fcpts.bridge import exact_sparsity, histc_lower_edges, histogram_density, histogram_density_histc
from fcpts.calibration import CalibrationStream
from fcpts.files import write_atomic
from fcpts.learner import threshold_groups
from fcpts.sparsify import TeacherCache, build_optimizer, sparsify, start_allocation

OUT = RESULTS / "speed.json"
PARTS = ("steps", "before_after", "layout", "components", "masks", "bridge", "cache", "crosscheck")
MODEL_PARTS = {"steps", "before_after", "layout", "components", "cache", "crosscheck"}  # need the ResNet-50
BRIDGE_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
SAMPLED_HISTOGRAM = 65_536  # Config.histogram_max_samples of the kit's faster histogram variant


# --------------------------------------------------------------------------------------------------------
# the step variants (each mirrors one iteration of fcpts.sparsify's loop, or its plain counterpart)
# --------------------------------------------------------------------------------------------------------
class FcptsStep:
    """One FCPTS iteration exactly as ``fcpts.sparsify`` runs it on a CPU (teacher, student, L_rec + λ L_c, the
    history read back in one go and checked before the backward pass, SGD)."""

    def __init__(self, model: nn.Module, teacher: nn.Module, x: torch.Tensor, config: Config, target: float):
        self.teacher, self.x, self.config, self.target = teacher, x, config, target
        self.student = copy.deepcopy(model)
        self.allocation = start_allocation(self.student, target, config)
        self.sparsifier = ThresholdSparsifier.from_config(self.student, self.allocation, config,
                                                           rounding=config.init_rounding)
        self.optimizer = build_optimizer(self.student, threshold_groups(self.sparsifier.threshold_parameters()), config)
        self.student.train(config.bn_mode == "train")
        self.history: list[dict] = []
        self.bridge_seconds: list[float] = []  # forward of global_sparsity() + L_c inside each step

    def teacher_logits(self, idx=None) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(self.x)

    def __call__(self, teacher_logits: torch.Tensor | None = None) -> None:
        config = self.config
        if teacher_logits is None:
            teacher_logits = self.teacher_logits()
        student_logits = self.student(self.x)
        loss_rec = kd_loss(student_logits, teacher_logits, config.temperature)
        tic = time.perf_counter()  # the bridge + L_c as the real loop runs them (the mask counts are fresh)
        sparsity = self.global_sparsity()
        loss_c = controllable_loss(sparsity, self.target, config.objective)
        self.bridge_seconds.append(time.perf_counter() - tic)
        loss = loss_rec + config.lam * loss_c
        row = self.read_back(sparsity, loss_rec, loss_c, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.history.append(row)

    def global_sparsity(self) -> torch.Tensor:
        return self.sparsifier.global_sparsity()

    def read_back(self, sparsity, loss_rec, loss_c, loss) -> dict:
        """The history row, as ``fcpts.sparsify`` reads it on a CPU: one transfer, then the finiteness check."""
        values = torch.stack([v.detach().double() for v in (sparsity, loss_rec, loss_c, loss)]).tolist()
        row = dict(zip(("sparsity", "loss_rec", "loss_c", "loss"), values))
        if not math.isfinite(row["loss"]):
            raise FloatingPointError("non-finite loss in the speed benchmark")
        return row

    # --- components ---
    def forward_backward(self, teacher_logits: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        kd_loss(self.student(self.x), teacher_logits, self.config.temperature).backward()

    def bridge_objective(self) -> None:
        sparsity = self.sparsifier.global_sparsity()
        controllable_loss(sparsity, self.target, self.config.objective).backward()

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def masks(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {n: m.mask(self.sparsifier.layers[n].parametrizations.weight.original).detach().clone()
                    for n, m in self.sparsifier.masks().items()}


def previous_global_sparsity(sparsifier: ThresholdSparsifier) -> torch.Tensor:
    """``ThresholdSparsifier.global_sparsity`` as the kit computed it before issue #24: layer by layer, each slope
    from a full ``torch.histc`` histogram of the layer (``histogram_density_histc``: two passes, and its range read
    back with ``.item()``, which on a GPU waits for the device twice per layer). Benchmark-local, for the
    before/after comparison only."""
    total = 0.0
    for name, mask in sparsifier.masks().items():
        weight = sparsifier.layers[name].parametrizations.weight.original
        t = mask.threshold()
        points = torch.stack([t.detach(), -t.detach()]).float()
        slope = histogram_density_histc(mask.bridge.sample(weight), points, mask.bridge.bins).sum()
        total = total + mask.sparsity(weight, t, slope) * sparsifier.info[name].numel
    return total / sparsifier.n_total


class PreviousFcptsStep(FcptsStep):
    """The FCPTS step before issue #24: ``previous_global_sparsity`` and the history read one ``.item()`` at a
    time (the finiteness check a ``bool`` of a tensor), as ``fcpts.sparsify`` did at every step."""

    def global_sparsity(self) -> torch.Tensor:
        return previous_global_sparsity(self.sparsifier)

    def read_back(self, sparsity, loss_rec, loss_c, loss) -> dict:
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss in the speed benchmark")
        return dict(sparsity=sparsity.item(), loss_rec=loss_rec.item(), loss_c=loss_c.item(), loss=loss.item())


class MaskedKDStep:
    """Plain masked KD: the same masks, weights hold zeros, gradients masked; no thresholds, bridge or L_c.

    ``hook=True`` applies the masks with ``torch.nn.utils.prune.custom_from_mask`` instead (a forward
    pre-hook recomputing ``weight_orig * mask`` every forward, the closest plain analogue of a parametrization).
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, x: torch.Tensor, masks: dict[str, torch.Tensor],
                 config: Config, hook: bool = False):
        self.teacher, self.x, self.config, self.hook = teacher, x, config, hook
        self.student = copy.deepcopy(model)
        modules = dict(self.student.named_modules())
        self.masked = [(modules[n], m) for n, m in masks.items()]
        with torch.no_grad():
            for module, mask in self.masked:
                if hook:
                    torch_prune.custom_from_mask(module, "weight", mask)
                else:
                    module.weight.mul_(mask)
        self.optimizer = build_optimizer(self.student, [], config)
        self.student.train(config.bn_mode == "train")

    def __call__(self, teacher_logits: torch.Tensor | None = None) -> None:
        if teacher_logits is None:
            with torch.no_grad():
                teacher_logits = self.teacher(self.x)
        loss = kd_loss(self.student(self.x), teacher_logits, self.config.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not self.hook:  # with the hook, autograd masks weight_orig's gradient already
            for module, mask in self.masked:
                module.weight.grad.mul_(mask)
        self.optimizer.step()
        loss.item()

    def forward_backward(self, teacher_logits: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        kd_loss(self.student(self.x), teacher_logits, self.config.temperature).backward()
        if not self.hook:
            for module, mask in self.masked:
                module.weight.grad.mul_(mask)

    def optimizer_step(self) -> None:
        self.optimizer.step()


class DenseStep:
    """A dense step on the same batch: KD against the teacher (``kd=True``) or cross-entropy on labels."""

    def __init__(self, model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, config: Config,
                 kd: bool, copy_model: bool = True):
        self.teacher, self.x, self.y, self.config, self.kd = teacher, x, y, config, kd
        self.student = copy.deepcopy(model) if copy_model else model
        self.optimizer = build_optimizer(self.student, [], config)
        self.student.train()

    def __call__(self) -> None:
        logits = self.student(self.x)
        if self.kd:
            with torch.no_grad():
                teacher_logits = self.teacher(self.x)
            loss = kd_loss(logits, teacher_logits, self.config.temperature)
        else:
            loss = F.cross_entropy(logits, self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss.item()


def _teacher(model: nn.Module, config: Config) -> nn.Module:
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.train(config.bn_mode == "train")


def _ratio(a: dict, b: dict) -> float:
    return a["median"] / b["median"]


def step_times(model: nn.Module, x: torch.Tensor, config: Config | None = None, target: float = 0.8,
               repeats: int = 10, warmup: int = 2, variants: bool = True) -> dict:
    """Median seconds of one step of each variant (interleaved) and the ratios the README reports."""
    config = config or Config.quick_cpu(progress=False)
    y = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    teacher = _teacher(model, config)
    fcpts = FcptsStep(model, teacher, x, config, target)
    masks = fcpts.masks()
    fns: dict[str, Callable[[], None]] = {
        "fcpts": fcpts,
        "masked_kd": MaskedKDStep(model, teacher, x, masks, config),
        "masked_kd_prune_hook": MaskedKDStep(model, teacher, x, masks, config, hook=True),
        "dense_kd": DenseStep(model, teacher, x, y, config, kd=True),
        "dense_train": DenseStep(model, teacher, x, y, config, kd=False),
    }
    fns["fcpts_sampled_hist"] = FcptsStep(model, teacher, x, config.replace(histogram_max_samples=SAMPLED_HISTOGRAM),
                                          target)
    if variants:
        fns["fcpts_ste"] = FcptsStep(model, teacher, x, config.replace(gradient="ste"), target)
        fns["fcpts_kde"] = FcptsStep(model, teacher, x, config.replace(bridge="kde"), target)
    times = median_times(fns, repeats=repeats, warmup=warmup)
    ratios = {f"{name}/masked_kd": _ratio(times[name], times["masked_kd"]) for name in times if name != "masked_kd"}
    ratios.update({f"{name}/dense_train": _ratio(times[name], times["dense_train"])
                   for name in ("fcpts", "masked_kd", "dense_kd")})
    ratios["fcpts/masked_kd_prune_hook"] = _ratio(times["fcpts"], times["masked_kd_prune_hook"])
    ratios["fcpts/dense_kd"] = _ratio(times["fcpts"], times["dense_kd"])
    return dict(seconds=times, ratios=ratios, batch=list(x.shape), target=target, repeats=repeats, warmup=warmup,
                n_weights=fcpts.sparsifier.n_total, n_layers=len(fcpts.sparsifier.layers))


def component_times(model: nn.Module, x: torch.Tensor, config: Config | None = None, target: float = 0.8,
                    repeats: int = 10, warmup: int = 2) -> dict:
    """Where an FCPTS step's time goes, each piece timed on its own (interleaved with the whole step)."""
    config = config or Config.quick_cpu(progress=False)
    teacher = _teacher(model, config)
    fcpts = FcptsStep(model, teacher, x, config, target)
    sampled = FcptsStep(model, teacher, x, config.replace(histogram_max_samples=SAMPLED_HISTOGRAM), target)
    plain = MaskedKDStep(model, teacher, x, fcpts.masks(), config)
    with torch.no_grad():
        logits = teacher(x)
    fns = {
        "fcpts_step": fcpts,
        "fcpts_step_sampled_hist": sampled,
        "masked_kd_step": plain,
        "teacher_forward": fcpts.teacher_logits,
        "student_fwd_bwd_thresholds": lambda: fcpts.forward_backward(logits),
        "student_fwd_bwd_plain": lambda: plain.forward_backward(logits),
        "bridge_objective": fcpts.bridge_objective,
        "optimizer_fcpts": fcpts.optimizer_step,
        "optimizer_plain": plain.optimizer_step,
    }
    times = median_times(fns, repeats=repeats, warmup=warmup)
    step = times["fcpts_step"]["median"]
    shares = {name: times[name]["median"] / step for name in fns if name not in ("fcpts_step", "fcpts_step_sampled_hist")}
    extra = times["fcpts_step"]["median"] - times["masked_kd_step"]["median"]
    # In the step, the bridge reuses the exact counts of that step's forward; standalone, it must count them.
    in_step = statistics.median(fcpts.bridge_seconds[-repeats:]) / step
    in_step_sampled = (statistics.median(sampled.bridge_seconds[-repeats:])
                       / times["fcpts_step_sampled_hist"]["median"])
    return dict(seconds=times, share_of_fcpts_step=shares,
                bridge_objective_share=in_step, bridge_objective_share_sampled_hist=in_step_sampled,
                bridge_objective_standalone_share=shares["bridge_objective"],
                sampled_histogram_max_samples=SAMPLED_HISTOGRAM,
                parametrization_overhead_s=times["student_fwd_bwd_thresholds"]["median"]
                - times["student_fwd_bwd_plain"]["median"],
                fcpts_minus_masked_kd_s=extra, repeats=repeats)


def histogram_rule_deviation(model: nn.Module, config: Config | None = None, target: float = 0.8,
                             points_per_layer: int = 16) -> dict:
    """Largest |histogram_density - histogram_density_histc| over every prunable layer of ``model``, at the
    layer's start threshold (±t), at random bin edges (exact and nominal) and at random points in and beyond the
    weights' range: the new rule against the released one. The requirement is 1e-7; 0.0 means bit-identical."""
    from fcpts.masking import prunable_layers

    config = config or Config.quick_cpu(progress=False)
    start = start_allocation(model, target, config)
    sparsifier = ThresholdSparsifier.from_config(copy.deepcopy(model), start, config, rounding=config.init_rounding)
    thresholds = sparsifier.thresholds()
    g = torch.Generator().manual_seed(0)
    worst = worst_relative = 0.0
    count = 0
    for name, module in prunable_layers(model).items():
        w = module.weight.detach().float()
        lo, hi = torch.aminmax(w)
        k = torch.randint(0, config.histogram_bins + 1, (points_per_layer // 4,), generator=g)
        t = torch.tensor(thresholds[name])
        points = torch.cat([torch.stack([t, -t]),
                            histc_lower_edges(lo, hi, k, config.histogram_bins).nan_to_num(0.0, 0.0, 0.0),
                            lo + k * ((hi - lo) / config.histogram_bins),
                            lo + (torch.rand(points_per_layer // 2, generator=g) * 1.4 - 0.2) * (hi - lo)])
        new = histogram_density(w, points, config.histogram_bins)
        released = histogram_density_histc(w, points, config.histogram_bins)
        gap = (new - released).abs()
        worst = max(worst, gap.max().item())
        worst_relative = max(worst_relative, (gap / released.abs().clamp_min(1e-30)).max().item())
        count += points.numel()
    return dict(max_abs_deviation=worst, max_relative_deviation=worst_relative, points=count,
                layers=len(thresholds))


def before_after_times(model: nn.Module, x: torch.Tensor, config: Config | None = None, target: float = 0.8,
                       repeats: int = 10, warmup: int = 2) -> dict:
    """The FCPTS step before issue #24 (``PreviousFcptsStep``) and now (``FcptsStep``), with masked KD, interleaved
    in one process: each one's ratio to masked KD, their bridge + objective shares, whether they train identically
    (the same history and thresholds after every timed step), and ``histogram_rule_deviation``."""
    config = config or Config.quick_cpu(progress=False)
    teacher = _teacher(model, config)
    now = FcptsStep(model, teacher, x, config, target)
    before = PreviousFcptsStep(model, teacher, x, config, target)
    plain = MaskedKDStep(model, teacher, x, now.masks(), config)
    times = median_times({"fcpts_before": before, "fcpts_now": now, "masked_kd": plain}, repeats=repeats,
                         warmup=warmup)

    def share(step: FcptsStep, name: str) -> float:
        return statistics.median(step.bridge_seconds[-repeats:]) / times[name]["median"]

    return dict(seconds=times,
                ratios={"fcpts_before/masked_kd": _ratio(times["fcpts_before"], times["masked_kd"]),
                        "fcpts_now/masked_kd": _ratio(times["fcpts_now"], times["masked_kd"]),
                        "fcpts_now/fcpts_before": _ratio(times["fcpts_now"], times["fcpts_before"])},
                bridge_objective_share=dict(before=share(before, "fcpts_before"), now=share(now, "fcpts_now")),
                same_training=now.history == before.history
                and now.sparsifier.thresholds() == before.sparsifier.thresholds(),
                histogram_rule=histogram_rule_deviation(model, config, target), repeats=repeats, warmup=warmup)


def layout_times(model: nn.Module, x: torch.Tensor, config: Config | None = None, target: float = 0.8,
                 repeats: int = 10, warmup: int = 2) -> dict:
    """FCPTS and masked-KD steps with the model (student and teacher) in channels_last memory format against the
    default contiguous one, interleaved: whether channels_last would pay on this CPU (the loop uses it on CUDA)."""
    config = config or Config.quick_cpu(progress=False)
    fns = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        shaped = copy.deepcopy(model).to(memory_format=fmt)
        teacher = _teacher(shaped, config)
        fcpts = FcptsStep(shaped, teacher, x, config, target)
        fns[f"fcpts_{layout}"] = fcpts
        fns[f"masked_kd_{layout}"] = MaskedKDStep(shaped, teacher, x, fcpts.masks(), config)
    times = median_times(fns, repeats=repeats, warmup=warmup)
    return dict(seconds=times, ratios={f"{kind}_channels_last/{kind}_contiguous":
                                       _ratio(times[f"{kind}_channels_last"], times[f"{kind}_contiguous"])
                                       for kind in ("fcpts", "masked_kd")}, repeats=repeats, warmup=warmup)


def profile_step(model: nn.Module, x: torch.Tensor, config: Config | None = None, target: float = 0.8,
                 steps: int = 3, top: int = 20) -> list[dict]:
    """torch.profiler over a few FCPTS steps: the ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    config = config or Config.quick_cpu(progress=False)
    fcpts = FcptsStep(model, _teacher(model, config), x, config, target)
    fcpts()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fcpts()
    rows = []
    for event in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        rows.append(dict(op=event.key, calls=event.count // steps, self_ms_per_step=event.self_cpu_time_total / 1e3 / steps,
                         total_ms_per_step=event.cpu_time_total / 1e3 / steps))
    return rows


# --------------------------------------------------------------------------------------------------------
# the bridge against layer size
# --------------------------------------------------------------------------------------------------------
def bridge_scaling(sizes=BRIDGE_SIZES, repeats: int = 7, warmup: int = 1, max_samples: int = 65536) -> list[dict]:
    """Forward+backward of ``Bridge(n, est)(w, t)`` for each size and estimator (and the exact count alone)."""
    rows = []
    for n in sizes:
        n = int(n)
        w = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.02
        t = torch.tensor(0.02, requires_grad=True)
        hist, kde = Bridge(n, "histogram"), Bridge(n, "kde", max_samples=max_samples)
        sampled = Bridge(n, "histogram", histogram_max_samples=SAMPLED_HISTOGRAM)

        def fwd_bwd(bridge):
            def run():
                t.grad = None
                bridge(w, t).backward()
            return run

        def exact():
            exact_sparsity(w, t.detach())  # the library's exact count, the floor of either estimator

        times = median_times({"histogram": fwd_bwd(hist), "kde": fwd_bwd(kde), "exact_count": exact,
                              "histogram_sampled": fwd_bwd(sampled)},
                             repeats=repeats if n < 5_000_000 else max(3, repeats // 2), warmup=warmup)
        rows.append(dict(numel=n, histogram_s=times["histogram"]["median"], kde_s=times["kde"]["median"],
                         exact_count_s=times["exact_count"]["median"],
                         histogram_sampled_s=times["histogram_sampled"]["median"],
                         kde_over_histogram=times["kde"]["median"] / times["histogram"]["median"]))
    return rows


# --------------------------------------------------------------------------------------------------------
# ways to apply a hard threshold mask (forward with the pruned count, then backward)
# --------------------------------------------------------------------------------------------------------
def mask_forms(model: nn.Module, target: float = 0.8, repeats: int = 7, warmup: int = 1) -> dict:
    """Seconds per pass over every Conv2d/Linear weight of ``model`` for several ways of computing
    w ⊙ 1{|w| > t} *and* the pruned count (the bridge needs it), forward and backward to w. ``kit`` is
    ``ThresholdMask.forward`` itself; the others are the alternatives it was measured against. All forms
    must give the same masked weights (checked)."""
    from fcpts.masking import ThresholdMask, kth_smallest_abs, prunable_layers

    weights = [m.weight.detach().clone().requires_grad_(True) for m in prunable_layers(model).values()]
    kit_masks = [ThresholdMask(w.detach(), kth_smallest_abs(w, target)) for w in weights]
    thresholds = [m.threshold().detach() for m in kit_masks]  # the very values the kit compares against
    grads = [torch.randn_like(w) for w in weights]

    def bool_count_cast(w, t):  # the kit before: a bool mask, counted, cast to float
        keep = w.detach().abs() > t
        keep.numel() - keep.count_nonzero()
        return w * keep.to(w.dtype)

    def where(w, t):
        keep = w.detach().abs() > t
        keep.numel() - keep.count_nonzero()
        return torch.where(keep, w, torch.zeros((), dtype=w.dtype))

    def hardshrink(w, t):  # one fused op, but the count then needs a pass over the output
        out = F.hardshrink(w, float(t))
        out.numel() - out.count_nonzero()
        return out

    forms = {"kit": lambda i: kit_masks[i](weights[i]), "bool_count_cast": lambda i: bool_count_cast(weights[i], thresholds[i]),
             "where": lambda i: where(weights[i], thresholds[i]), "hardshrink": lambda i: hardshrink(weights[i], thresholds[i])}
    reference = [forms["kit"](i).detach() for i in range(len(weights))]
    identical = {name: all(torch.equal(f(i).detach(), reference[i]) for i in range(len(weights))) for name, f in forms.items()}

    def run(form, backward):
        def go():
            for i in range(len(weights)):
                out = form(i)
                if backward:
                    weights[i].grad = None
                    out.backward(grads[i])
        return go

    jobs = {f"{name}_fwd": run(f, False) for name, f in forms.items()}
    jobs.update({f"{name}_fwd_bwd": run(f, True) for name, f in forms.items()})
    times = median_times(jobs, repeats=repeats, warmup=warmup)
    return dict(numel=sum(w.numel() for w in weights), layers=len(weights), target=target, identical=identical,
                seconds={k: v["median"] for k, v in times.items()},
                kit_over_bool_count_cast_fwd_bwd=times["kit_fwd_bwd"]["median"] / times["bool_count_cast_fwd_bwd"]["median"],
                repeats=repeats)


# --------------------------------------------------------------------------------------------------------
# the teacher cache
# --------------------------------------------------------------------------------------------------------
def teacher_cache_times(model: nn.Module, calib, config: Config | None = None, target: float = 0.8,
                        repeats: int = 10, warmup: int = 2) -> dict:
    """Per-step cost with cached teacher logits (``Config.cache_teacher``) vs recomputed, and the cache's
    one-off build cost (one teacher pass over the calibration set)."""
    config = (config or Config.quick_cpu(progress=False)).replace(calib_augment=False)
    stream = CalibrationStream(calib, config.batch_size, config.seed, 0)
    x, idx = next(iter(stream))
    teacher = _teacher(model, config)
    tic = time.perf_counter()
    cache = TeacherCache(teacher, stream, torch.device("cpu"))
    build = time.perf_counter() - tic
    recomputed = FcptsStep(model, teacher, x, config, target)
    cached = FcptsStep(model, teacher, x, config.replace(cache_teacher=True), target)
    times = median_times({"recomputed": recomputed, "cached": lambda: cached(cache(idx))}, repeats=repeats,
                         warmup=warmup)
    saving = times["recomputed"]["median"] - times["cached"]["median"]
    return dict(seconds=times, cached_over_recomputed=_ratio(times["cached"], times["recomputed"]),
                cache_build_s=build, calib_size=len(stream.loader.dataset),
                break_even_steps=(build / saving) if saving > 0 else None, repeats=repeats)


# --------------------------------------------------------------------------------------------------------
# cross-check against the real loop
# --------------------------------------------------------------------------------------------------------
def sparsify_per_step(model: nn.Module, calib, config: Config | None = None, target: float = 0.8,
                      steps: int = 12, mirror_repeats: int = 5) -> dict:
    """Per-step seconds of the real ``fcpts.sparsify`` loop next to the mirrored step this file times.

    Inside ``sparsify`` every step calls ``kd_loss`` once; a recording wrapper (installed for this call only)
    timestamps those calls, so the median gap between consecutive ones is the loop's per-step time, free of
    setup and projection. The mirrored step is timed just before and just after, under the same load.
    """
    import importlib

    loop = importlib.import_module("fcpts.sparsify")  # the module (the package re-exports the function)

    config = config or Config.quick_cpu(progress=False)
    x, _ = next(iter(CalibrationStream(calib, config.batch_size, 0, 0)))
    mirror = FcptsStep(model, _teacher(model, config), x, config, target)
    mirror()

    def mirror_times() -> list[float]:
        samples = []
        for _ in range(mirror_repeats):
            tic = time.perf_counter()
            mirror()
            samples.append(time.perf_counter() - tic)
        return samples

    before = mirror_times()
    stamps: list[float] = []
    original = loop.kd_loss

    def recording_kd_loss(*args, **kwargs):
        stamps.append(time.perf_counter())
        return original(*args, **kwargs)

    loop.kd_loss = recording_kd_loss
    try:
        wall = sparsify(model, calib, target, config.replace(steps=steps, progress=False)).wall_time
    finally:
        loop.kd_loss = original
    after = mirror_times()
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    per_step = gaps[len(gaps) // 2] if gaps else float("nan")
    mirrored = sorted(before + after)[len(before + after) // 2]
    return dict(steps=steps, sparsify_wall_s=wall, per_step_s=per_step, per_step_min_s=gaps[0] if gaps else None,
                mirrored_step_s=mirrored, mirrored_before_s=sorted(before)[len(before) // 2],
                mirrored_after_s=sorted(after)[len(after) // 2], real_over_mirrored=per_step / mirrored)


# --------------------------------------------------------------------------------------------------------
def run_speed(parts=PARTS, model: nn.Module | None = None, calib=None, image_size: int = 32, batch_size: int = 64,
              repeats: int = 10, warmup: int = 2, bridge_sizes=BRIDGE_SIZES, out: str | Path | None = OUT,
              model_source: str = "auto", profile: bool = True, progress: bool = True) -> dict:
    """Run the requested parts; merge them into ``out`` (parts not run keep their earlier results)."""
    config = Config.quick_cpu(progress=False, batch_size=batch_size, image_size=image_size, device="cpu")
    source = "given"
    if model is None and set(parts) & MODEL_PARTS:
        model, source = dense_resnet50(model_source)
    if calib is None and set(parts) & MODEL_PARTS:
        from fcpts.data import load_data

        calib = load_data(config).calib
    x = None
    if calib is not None:
        x, _ = next(iter(CalibrationStream(calib, batch_size, 0, 0)))
    previous = json.loads(Path(out).read_text())["results"] if out is not None and Path(out).exists() else {}
    results = dict(previous)
    say = print if progress else (lambda *a, **k: None)
    if "steps" in parts:
        say("steps ...", flush=True)
        results["steps"] = step_times(model, x, config, repeats=repeats, warmup=warmup)
        say(json.dumps(results["steps"]["ratios"], indent=1), flush=True)
    if "before_after" in parts:
        say("before_after ...", flush=True)
        results["before_after"] = before_after_times(model, x, config, repeats=repeats, warmup=warmup)
        say(json.dumps({k: v for k, v in results["before_after"].items() if k != "seconds"}, indent=1), flush=True)
    if "layout" in parts:
        say("layout ...", flush=True)
        results["layout"] = layout_times(model, x, config, repeats=repeats, warmup=warmup)
        say(json.dumps(results["layout"]["ratios"], indent=1), flush=True)
    if "components" in parts:
        say("components ...", flush=True)
        results["components"] = component_times(model, x, config, repeats=repeats, warmup=warmup)
        if profile:
            results["components"]["profile_top_ops"] = profile_step(model, x, config)
        say(json.dumps(results["components"]["share_of_fcpts_step"], indent=1), flush=True)
    if "masks" in parts:
        say("masks ...", flush=True)
        results["masks"] = mask_forms(model if model is not None else dense_resnet50(model_source)[0], repeats=repeats)
        say(json.dumps({k: v for k, v in results["masks"].items() if k != "seconds"}, indent=1), flush=True)
    if "bridge" in parts:
        say("bridge ...", flush=True)
        results["bridge"] = bridge_scaling(bridge_sizes, repeats=max(3, repeats // 2 + 2))
        say(json.dumps(results["bridge"], indent=1), flush=True)
    if "cache" in parts:
        say("cache ...", flush=True)
        results["cache"] = teacher_cache_times(model, calib, config, repeats=repeats, warmup=warmup)
        say(json.dumps({k: v for k, v in results["cache"].items() if k != "seconds"}, indent=1), flush=True)
    if "crosscheck" in parts:
        say("crosscheck ...", flush=True)
        results["crosscheck"] = sparsify_per_step(model, calib, config)
        say(json.dumps(results["crosscheck"], indent=1), flush=True)
    for name in set(parts) & MODEL_PARTS:
        results[name]["model_source"] = source
        results[name]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    settings = dict(image_size=image_size, batch_size=batch_size, repeats=repeats, warmup=warmup,
                    config="Config.quick_cpu()", device="cpu", parts_run=list(parts))
    doc = envelope("speed", settings, results)
    if out is not None:
        write_json(doc, out)
        write_atomic(Path(out).with_suffix(".md"), markdown(doc))
    return doc


def markdown(doc: dict) -> str:
    """A short table of the step parts in ``doc`` (``speed.md``; benchmarks/summarize.py writes the full section)."""
    r, m = doc["results"], doc["machine"]
    lines = [f"# benchmarks/speed.py ({doc['created']})", "",
             f"CPU, {m.get('cpu_count')} cores, torch {m.get('torch')}, {m.get('torch_threads')} thread(s), load "
             f"average {m.get('loadavg')} when written. Medians of interleaved repeats in one process; compare "
             "ratios, not seconds across tables. Details in `speed.json`.", ""]
    if "steps" in r:
        sec = r["steps"]["seconds"]
        lines += ["| step | median s | × masked KD |", "|---|---|---|"]
        lines += [f"| {name} | {v['median']:.3f} | {v['median'] / sec['masked_kd']['median']:.2f} |"
                  for name, v in sec.items()]
        lines += [""]
    if "before_after" in r:
        ba = r["before_after"]
        share, rule = ba["bridge_objective_share"], ba["histogram_rule"]
        lines += ["| FCPTS step (issue #24) | × masked KD | bridge + objective share |", "|---|---|---|",
                  f"| before: histc per layer, `.item()` reads | {ba['ratios']['fcpts_before/masked_kd']:.2f} | "
                  f"{share['before']:.1%} |",
                  f"| now: two bins counted, slopes batched, one read | {ba['ratios']['fcpts_now/masked_kd']:.2f} | "
                  f"{share['now']:.1%} |", "",
                  f"Same training before and now: {'yes' if ba['same_training'] else '**no**'}. Histogram rule, "
                  f"new against torch.histc: max deviation {rule['max_abs_deviation']:.3g} (relative "
                  f"{rule['max_relative_deviation']:.3g}) over {rule['points']} points in {rule['layers']} layers.", ""]
    if "layout" in r:
        lines += ["channels_last on this CPU: " + ", ".join(f"{k} = {v:.2f}" for k, v in r["layout"]["ratios"].items()),
                  ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model-source", choices=["auto", "embedded", "random"], default="auto",
                        help="auto: the cached embedded checkpoint if present, else random init (same cost)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    run_speed(args.parts, image_size=args.image_size, batch_size=args.batch_size, repeats=args.repeats,
              warmup=args.warmup, out=args.out, model_source=args.model_source, profile=not args.no_profile)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
