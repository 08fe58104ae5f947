"""nano FCPTS: the released recipe in one file, to read top to bottom.

    from fcpts import nano
    model, history = nano.sparsify(dense_model, calibration_images, nano.NanoConfig(target=0.8, steps=150))

FCPTS learns one threshold t_l per Conv2d/Linear layer; a weight survives when |w| > t_l. The loss is
L = L_rec + λ·L_c: L_rec keeps the sparse student's outputs close to the frozen dense teacher's (KD at T = 4),
L_c = |S(t) - S*| pulls the global sparsity S to the target S*. The mask 1{|w| > t} has no gradient, so S(t)
reaches t through the *bridge*: the exact count forward, a histogram estimate of the weight density backward.
At the end one shared shift of every threshold (the projection) leaves exactly round(S*·N) zeros.

This file is a second copy of what ``fcpts.sparsify`` runs with its default ``Config``: no options, no
distributed training, no safeguards. ``tests/test_nano.py`` checks that both give the same per-step history
and the same final weights, so this copy cannot drift from the real one.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class NanoConfig:
    """What ``nano.sparsify`` lets you change (``Config()``'s defaults); other options stay at ``RELEASED``."""
    target: float = 0.8  # S*, the fraction of all Conv2d/Linear weights that end at zero
    steps: int = 1600  # optimiser steps (the paper: 1,600 on 1,024 ImageNet images)
    batch_size: int = 64  # calibration images per step
    base_lr: float = 0.04  # per 256 images: lr = base_lr * batch_size / 256
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 3e-4  # on the network's parameters, never on the thresholds
    temperature: float = 4.0  # KD temperature T
    lam: float = 1.0  # λ, the weight of L_c
    histogram_bins: int = 100  # the bridge's histogram
    seed: int = 0  # batch order and augmentations


# Where fcpts.Config can differ from what this file runs: nano refuses those settings rather than ignore them.
RELEASED = dict(bridge="histogram", gradient="released", parameterization="sigmoid", objective="abs", init="erk",
                erk_gamma=1.0, init_rounding="released", lr_schedule="released", warmup_steps=-1, bn_mode="train",
                bn_recalibrate=False, grad_clip=0.0, block_mse_weight=0.0, histogram_max_samples=0, project=True,
                select_holdout=0, cache_teacher=False, include=("*",), exclude=())


# ---- 1. a learnable threshold on every layer ----------------------------------------------------------------
class Threshold(nn.Module):
    """w -> w ⊙ 1{|w| > t}, t = sigmoid(s). The mask is a constant for autograd: L_rec trains w, never t."""

    def __init__(self, score: torch.Tensor):
        super().__init__()
        self.score = nn.Parameter(score)

    def threshold(self) -> torch.Tensor:
        return torch.sigmoid(self.score)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * (weight.detach().abs() > self.threshold().detach()).to(weight.dtype)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


# ---- 2. where the thresholds start: ERK ---------------------------------------------------------------------
def erk_sparsities(model: nn.Module, target: float) -> dict[str, float]:
    """ERK: layer l keeps a fraction ε·(Σ dims / Π dims) of its weights (small layers keep more), ε set so the
    kept weights fill the budget; a layer over 1 becomes dense and ε is solved again. The budget is the released
    one: floor(S*·n_l) zeros per layer, summed."""
    shapes = {name: tuple(m.weight.shape) for name, m in weight_layers(model).items()}
    sizes = {name: math.prod(s) for name, s in shapes.items()}
    raw = {name: sum(s) / math.prod(s) for name, s in shapes.items()}
    keep = sum(sizes.values()) - sum(math.floor(target * n) for n in sizes.values())
    dense: set[str] = set()
    while True:
        free = [name for name in shapes if name not in dense]
        eps = (keep - sum(sizes[name] for name in dense)) / sum(sizes[name] * raw[name] for name in free)
        over = {name for name in free if eps * raw[name] > 1.0}
        if not over:
            return {name: 0.0 if name in dense else 1.0 - eps * raw[name] for name in shapes}
        dense |= over


@torch.no_grad()
def start_score(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The score s whose threshold sigmoid(s) prunes int(sparsity·n) weights: the k-th smallest |w|, its logit
    in float32 floored at -30. A layer with k = 0 starts a hair below its smallest non-zero |w|: all kept."""
    flat = weight.abs().flatten().float().cpu()
    k = int(sparsity * flat.numel())
    if k == 0:
        below = float(flat[flat > 0].min()) * (1.0 - 2.0 ** -16)
        return torch.tensor(math.log(below) - math.log1p(-below), dtype=torch.float32)
    t = torch.kthvalue(flat, k).values
    return torch.logit(t.clamp(max=1.0 - 2.0 ** -24)).clamp(min=-30.0)


def attach_thresholds(model: nn.Module, target: float) -> dict[str, Threshold]:
    """Prepare: a ``Threshold`` parametrization on every Conv2d/Linear weight, started at ERK."""
    start = erk_sparsities(model, target)
    thresholds = {}
    for name, module in weight_layers(model).items():
        w = module.weight.detach()
        thresholds[name] = Threshold(start_score(w, start[name]).to(w.device, w.dtype))
        parametrize.register_parametrization(module, "weight", thresholds[name], unsafe=True)
    return thresholds


# ---- 3. the bridge: a sparsity that has a gradient ----------------------------------------------------------
@torch.no_grad()
def histogram_density(weight: torch.Tensor, points: torch.Tensor, bins: int) -> torch.Tensor:
    """The density of the layer's signed weights at ``points``: 100 equal bins over [min w, max w]."""
    w = weight.flatten().float()
    lo, hi = torch.aminmax(w)
    width = (hi - lo) / bins
    if width <= 0:
        return torch.zeros_like(points, dtype=torch.float32)
    counts = torch.histc(w, bins=bins, min=lo.item(), max=hi.item())
    index = torch.floor((points.float() - lo) / width).long().clamp(0, bins - 1)
    inside = (points >= lo) & (points <= hi)
    return torch.where(inside, counts[index] / (w.numel() * width), torch.zeros_like(width))


def layer_sparsity(weight: torch.Tensor, t: torch.Tensor, bins: int) -> torch.Tensor:
    """S_l(t) = P(|w| <= t). Forward: the exact fraction pruned. Backward: dS_l/dt = p(t) + p(-t)."""
    weight = weight.detach()
    exact = torch.count_nonzero(weight.abs() <= t.detach()) / weight.numel()
    slope = histogram_density(weight, torch.stack([t.detach(), -t.detach()]).float(), bins).sum()
    return exact.to(t.dtype) + (t - t.detach()) * slope.to(t.dtype)  # value: exact; derivative: slope


def global_sparsity(model: nn.Module, bins: int) -> torch.Tensor:
    """S = Σ n_l·S_l / N over every Conv2d/Linear weight."""
    total, count = 0.0, 0
    for module in weight_layers(model).values():
        weight, mask = module.parametrizations.weight.original, module.parametrizations.weight[0]
        total = total + layer_sparsity(weight, mask.threshold(), bins) * weight.numel()
        count += weight.numel()
    return total / count


# ---- 4. the loss --------------------------------------------------------------------------------------------
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_rec: KL(teacher ‖ student) on logits softened by T, scaled by T² (gradients keep their size)."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    log_q = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature ** 2


# ---- 5. the learning rate: linear warm-up, then cosine (timm's scheduler as the released loop steps it) ------
def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    t = step - 1  # the scheduler is stepped after each optimiser step: step s runs at its value for s - 1
    if t < 0:
        return 0.0 if warmup > 0 else base
    if t < warmup:
        return t * (base / warmup)
    return 0.5 * base * (1 + math.cos(math.pi * t / steps))  # over the whole run, warm-up included


# ---- 6. one FCPTS step --------------------------------------------------------------------------------------
def fcpts_step(student: nn.Module, teacher: nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer,
               lr: float, config: NanoConfig) -> dict:
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.no_grad():
        teacher_logits = teacher(x)
    loss_rec = kd_loss(student(x), teacher_logits, config.temperature)  # trains the weights
    sparsity = global_sparsity(student, config.histogram_bins)
    loss_c = (sparsity - config.target).abs()  # trains the thresholds, through the bridge
    loss = loss_rec + config.lam * loss_c
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()  # SGD on weights and thresholds together
    return dict(sparsity=sparsity.item(), loss_rec=loss_rec.item(), loss_c=loss_c.item(), loss=loss.item(), lr=lr)


# ---- 7. exact control: project, then squash -----------------------------------------------------------------
@torch.no_grad()
def project(model: nn.Module, target: float) -> dict[str, torch.Tensor]:
    """One shared shift τ of every threshold: prune the round(S*·N) lowest |w| / t_l (ties by position). Each
    layer's threshold becomes τ·t_l: the learned shape of the allocation stays, its level becomes exact."""
    layers = weight_layers(model)
    weights = {n: m.parametrizations.weight.original.detach() for n, m in layers.items()}
    t = {n: max(float(m.parametrizations.weight[0].threshold()), 1e-12) for n, m in layers.items()}
    scores = torch.cat([weights[n].abs().float().flatten() / t[n] for n in layers])
    zeros = round(target * scores.numel())
    prune = torch.zeros_like(scores, dtype=torch.bool)
    if zeros > 0:
        tau = torch.kthvalue(scores.cpu(), zeros).values.item()
        prune = scores < tau
        ties = torch.nonzero(scores == tau).flatten()
        prune[ties[: zeros - int(prune.sum())]] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = (~prune[start:start + w.numel()]).reshape(w.shape).to(w.dtype)
        start += w.numel()
    return masks


@torch.no_grad()
def squash(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Remove the parametrizations: plain modules whose weights hold real zeros, the original state_dict keys."""
    for name, module in weight_layers(model).items():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight.mul_(masks[name])
        module._parameters = {k: module._parameters[k] for k in ("weight", "bias") if k in module._parameters}
    return model


# ---- 8. the whole run ---------------------------------------------------------------------------------------
def batches(data, config: NanoConfig):
    """Endless shuffled batches of calibration inputs (labels, if any, are never read)."""
    dataset = TensorDataset(data) if isinstance(data, torch.Tensor) else data
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=len(dataset) >= config.batch_size,
                        generator=torch.Generator().manual_seed(config.seed))
    for epoch in itertools.count():
        if hasattr(dataset, "set_epoch"):  # the kit's augmented datasets draw fresh, seeded augmentations per pass
            dataset.set_epoch(epoch)
        for batch in loader:
            yield batch[0], len(loader)


def sparsify(model: nn.Module, calibration_data, config: NanoConfig | None = None) -> tuple[nn.Module, list[dict]]:
    """FCPTS on a copy of ``model``: (the squashed student with exactly round(S*·N) zeros, one history row per
    step). ``config`` may also be an ``fcpts.Config`` that keeps the released defaults."""
    config = config or NanoConfig()
    changed = [k for k, v in RELEASED.items() if getattr(config, k, v) != v]
    if changed:
        raise ValueError(f"nano runs the released recipe only; {', '.join(changed)} differ: use fcpts.sparsify")
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    teacher = copy.deepcopy(model).train().requires_grad_(False)  # train mode: BN uses batch statistics
    student = copy.deepcopy(model).train()
    thresholds = attach_thresholds(student, config.target)
    scores = [m.score for m in thresholds.values()]
    others = [p for p in student.parameters() if all(p is not s for s in scores)]
    base_lr = config.base_lr * config.batch_size / 256
    optimizer = torch.optim.SGD([dict(params=others, weight_decay=config.weight_decay),
                                 dict(params=scores, weight_decay=0.0)], lr=base_lr, momentum=config.momentum)
    stream, history = batches(calibration_data, config), []
    for step in range(config.steps):
        x, per_pass = next(stream)  # warm-up: one pass over the calibration set
        row = fcpts_step(student, teacher, x.to(device), optimizer, lr_at(step, config.steps, base_lr, per_pass), config)
        history.append(dict(step=step, **row))
    return squash(student, project(student, config.target)).eval(), history
