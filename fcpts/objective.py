"""The two halves of the FCPTS loss: L = L_rec + λ · L_c.

* L_c, the controllable objective, pulls the global sparsity S(t) (from the bridge) to the target S*.
* L_rec, the reconstruction loss, keeps the sparse student close to the frozen dense teacher: KL on
  temperature-softened logits (scaled by T²), optionally plus an MSE on block outputs.
"""
from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import nn


def controllable_loss(sparsity: torch.Tensor, target: float, kind: str = "abs") -> torch.Tensor:
    """|S - S*| (released) or (S - S*)^2."""
    gap = sparsity - target
    if kind == "abs":
        return gap.abs()
    if kind == "pow2":
        return gap * gap
    raise ValueError(f"unknown objective {kind!r}; use 'abs' or 'pow2'")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """KL(teacher || student) on logits softened by T, averaged over the batch and scaled by T²."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


_BLOCK_CLASS_NAMES = ("BasicBlock", "Bottleneck", "InvertedResidual", "ResBottleneckBlock", "EncoderBlock")


def block_names(model: nn.Module, patterns: tuple[str, ...] = ()) -> list[str]:
    """Modules whose outputs feed the block MSE: those matching ``patterns``, else the residual blocks."""
    if patterns:
        names = [n for n, _ in model.named_modules() if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    else:
        names = [n for n, m in model.named_modules() if type(m).__name__ in _BLOCK_CLASS_NAMES]
    if not names:
        raise ValueError("block MSE asked for, but no module matches: set Config.block_patterns "
                         "(fnmatch patterns on qualified module names, e.g. 'layer*.*')")
    return names


class OutputRecorder:
    """Forward hooks that keep the outputs of named modules; used as a context manager so the hooks are
    always removed afterwards."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model, self.names, self.outputs, self._handles = model, names, {}, []

    def __enter__(self) -> "OutputRecorder":
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def keep(_module, _inputs, output):
            self.outputs[name] = output
        return keep

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()


def block_mse(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the MSE between student and teacher block outputs."""
    losses = [F.mse_loss(student[n], teacher[n].detach()) for n in teacher]
    return torch.stack(losses).mean()
