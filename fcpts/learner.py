"""What an allocation learner is: masks on a model's prunable layers, with a prepare -> step -> squash lifecycle.

The shared reconstruction loop (``fcpts.sparsify.learn_allocation``) owns everything the methods share; a
``Learner`` adds its own parameters, its penalty, what happens around each optimiser step and how its final
masks are chosen. The lifecycle follows ``torch.ao.pruning``:

    learner.prepare(student, allocation, config)   # one parametrization per prunable layer's weight
    ... the loop's steps call the hooks ...
    learner.squash(masks, tau)                     # plain modules, real zeros, the original state_dict keys
    learner.state_dict() / load_state_dict(state)  # thresholds / scores / dual variables, keyed by layer name

FCPTS is ``FcptsLearner`` here; STR and ProbMask are in ``fcpts.learners``, DSA-style in ``fcpts.dsa``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .config import Config
from .masking import (ThresholdSparsifier, all_weight_layers, attach_parametrizations, prunable_layers,
                      squash_layers)
from .objective import controllable_loss
from .projection import project_masks

_EPS = 1e-6


def logit(p: float) -> float:
    """log(p / (1 − p)) with p clipped to [1e-6, 1 − 1e-6]: where a learner's sigmoid-parameterised value starts."""
    p = min(max(float(p), _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


class Learner:
    """One allocation learner under the shared post-training budget (see the module docstring).

    Subclasses set ``name`` and implement ``prepare`` (usually with ``attach``), ``penalty``,
    ``layer_sparsities``, ``sparsity_before_projection`` and ``final_masks``; the other hooks default to
    nothing."""

    name = "learner"
    selection_batches = 0  # > 0: the loop sets ``score_masks()``, the KD loss on that many calibration batches
    start: dict[str, float] | None = None  # set by a learner that does not start at the given allocation
    layers: dict[str, nn.Module]

    # ----- prepare: one parametrization per prunable layer -----
    def prepare(self, student: nn.Module, allocation: dict[str, float], config: Config) -> None:
        """Attach the learner to ``student`` (parametrizations on the prunable layers' weights)."""
        raise NotImplementedError

    def attach(self, student: nn.Module, config: Config,
               make: Callable[[int, str, torch.Tensor], nn.Module]) -> None:
        """Register ``make(index, name, weight)`` on every prunable layer; count the global budget's weights
        (every Conv2d/Linear weight: excluded layers count as dense, method.md §1)."""
        self.layers = prunable_layers(student, config.include, config.exclude)
        # counted before the parametrizations: reading a parametrized weight runs its forward (a random draw)
        self.n_total = sum(m.weight.numel() for m in all_weight_layers(student).values())
        self.n_prunable = sum(m.weight.numel() for m in self.layers.values())
        attach_parametrizations(self.layers, make)

    def mods(self) -> dict[str, nn.Module]:
        """The parametrization module of every prunable layer."""
        return {n: m.parametrizations.weight[0] for n, m in self.layers.items()}

    def originals(self) -> dict[str, torch.Tensor]:
        """The dense weights under the parametrizations (what the network's optimiser updates)."""
        return {n: m.parametrizations.weight.original for n, m in self.layers.items()}

    def global_fraction(self, pruned: dict[str, float]) -> float:
        """Pruned weights per layer -> the global sparsity over every Conv2d/Linear weight."""
        return sum(pruned.values()) / self.n_total

    # ----- the loop's hooks -----
    def parameter_groups(self, config: Config) -> list[dict]:
        """Groups of the learner's own parameters that join the loop's SGD optimiser (with their weight decay)."""
        return []

    def extra_optimizer(self, config: Config) -> torch.optim.Optimizer | None:
        """An optimiser of the learner's own (e.g. Adam on ProbMask's scores), stepped with the SGD one."""
        return None

    def before_step(self, step: int, steps: int) -> None:
        """Called before the step's forward pass (temperature schedules, ...)."""

    def penalty(self, step: int, steps: int) -> tuple[torch.Tensor | float, torch.Tensor, dict]:
        """(extra loss added to L_rec, the global sparsity of this step's masks, values for the history).

        History values may be numbers or 0-d tensors; the loop reads tensors back from the device in batches
        (``fcpts.sparsify``), so return them as tensors (detached) rather than calling ``.item()`` every step."""
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called between backward and the optimiser steps (gradient clipping of the learner's own parameters)."""

    def after_step(self, step: int, steps: int) -> None:
        """Called after the optimiser step (projections, dual updates, ...)."""

    def layer_sparsities(self) -> dict[str, float]:
        raise NotImplementedError

    def sparsity_before_projection(self) -> float:
        """The global sparsity the learner's own final masks give, before the kit's exact projection."""
        raise NotImplementedError

    # ----- squash: the final masks into plain weights -----
    def final_masks(self, weights: dict[str, torch.Tensor], zeros: int, zeros_elsewhere: int,
                    project: bool) -> tuple[dict[str, torch.Tensor], float, dict[str, float]]:
        """(0/1 masks per layer, the projection shift τ, per-layer thresholds to report) at the end."""
        raise NotImplementedError

    def export(self, name: str, weight: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
        """The weight the squashed model stores (default w ⊙ mask; STR stores its shrunk weights)."""
        return weight * mask

    def squash(self, masks: dict[str, torch.Tensor], tau: float, layers: dict[str, nn.Module] | None = None) -> None:
        """Remove the parametrizations of ``layers`` (default: the ones ``attach`` registered); every layer stores
        ``export(name, dense weight, its mask, τ)``."""
        layers = self.layers if layers is None else layers
        squash_layers(layers, lambda name, weight: self.export(name, weight, masks[name], tau))

    # ----- state: save and restore what the learner has learned -----
    def state_dict(self) -> dict:
        """The learner's parameters and buffers by layer name, plus ``extra_state()``."""
        return dict(layers={n: {k: v.detach().clone() for k, v in m.state_dict().items()}
                            for n, m in self.mods().items()}, extra=self.extra_state())

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` onto a learner prepared on the same architecture."""
        layers = state["layers"]
        if set(layers) != set(getattr(self, "layers", {}) or {}):
            raise ValueError(f"state for layers {sorted(set(layers))[:5]} does not match this learner's "
                             "prunable layers: prepare it on the same model and include/exclude first")
        for name, module in self.mods().items():
            module.load_state_dict(layers[name])
        self.set_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict:
        """What the learner holds outside its parametrizations (dual variables, random generators)."""
        return {}

    def set_extra_state(self, state: dict) -> None:
        """Restore ``extra_state()``."""


def threshold_groups(thresholds: list[nn.Parameter]) -> list[dict]:
    """FCPTS's thresholds as one optimiser group: never decayed (decay would bias the allocation)."""
    return [dict(params=thresholds, weight_decay=0.0)]


class FcptsLearner(Learner):
    """FCPTS: one learnable threshold per layer, the bridge, and λ·L_c (method.md §2)."""

    name = "fcpts"

    def __init__(self, learn_thresholds: bool = True):
        self.learn_thresholds = learn_thresholds

    def prepare(self, student, allocation, config):
        self.config = config
        # the loop's own start follows config.init_rounding; a given allocation is exact (the loop passes a config
        # with init_rounding="exact" for it)
        self.sparsifier = ThresholdSparsifier.from_config(student, allocation, config, rounding=config.init_rounding)
        self.layers, self.n_total = self.sparsifier.layers, self.sparsifier.n_total
        self.n_prunable = sum(i.numel for i in self.sparsifier.info.values() if i.prunable)
        self.params = self.sparsifier.threshold_parameters()
        for p in self.params:
            p.requires_grad_(self.learn_thresholds)

    def parameter_groups(self, config):
        return threshold_groups(self.params)

    def penalty(self, step, steps):
        sparsity = self.sparsifier.global_sparsity()
        loss_c = controllable_loss(sparsity, self.config.target, self.config.objective)
        return self.config.lam * loss_c, sparsity, dict(loss_c=loss_c.detach())  # read back by the loop, in batches

    def layer_sparsities(self):
        return self.sparsifier.layer_sparsities()

    def sparsity_before_projection(self):
        return float(self.sparsifier.global_sparsity().detach())

    def final_masks(self, weights, zeros, zeros_elsewhere, project):
        thresholds = self.sparsifier.thresholds()
        if not project:
            return {n: self.sparsifier.masks()[n].mask(w).detach() for n, w in weights.items()}, 1.0, thresholds
        masks, tau = project_masks(weights, thresholds, zeros, zeros_elsewhere)
        return masks, tau, {n: t * tau for n, t in thresholds.items()}
