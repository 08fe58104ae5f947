"""Comparing candidate models without labels: agreement with the dense teacher on calibration images.

Two users: the kit's hold-out selection (``Config.select_holdout``: return the reconstruction or the start,
whichever agrees with the dense model on more held-out images) and learners that choose among final mask
draws (ProbMask's ``score_masks``).
"""
from __future__ import annotations

import torch
from torch import nn

from . import distributed
from .allocation import masked_copy
from .calibration import CalibrationStream, recalibrate_bn
from .config import Config
from .masking import count_zeros
from .objective import kd_loss


@torch.no_grad()
def teacher_agreement(student: nn.Module, teacher: nn.Module, inputs, temperature: float,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """The KD loss of ``student`` against ``teacher`` (both in eval mode; the mean of the batches' losses) and
    their top-1 agreement over the images of the batches ``inputs``: how to compare candidates without labels."""
    modes = student.training, teacher.training
    student.eval()
    teacher.eval()
    kd, agree, n, batches = 0.0, 0, 0, 0
    for x in inputs:
        s_logits, t_logits = student(x.to(device)), teacher(x.to(device))
        kd += float(kd_loss(s_logits, t_logits, temperature))
        agree += int((s_logits.argmax(1) == t_logits.argmax(1)).sum())
        n, batches = n + len(x), batches + 1
    student.train(modes[0])
    teacher.train(modes[1])
    return dict(kd=kd / batches, agreement=agree / n)


class KdScorer:
    """The KD loss of the student as it is now against the teacher, both in eval mode, on the first ``batches``
    calibration batches in a fixed order: how a learner compares candidate masks without labels."""

    def __init__(self, student, teacher, data, batches: int, config: Config, device):
        stream = CalibrationStream(data, config.batch_size, config.seed, 0, shuffle=False)
        self.inputs = [x for (x, _), _ in zip(stream.one_pass(), range(batches))]
        self.student, self.teacher, self.temperature, self.device = student, teacher, config.temperature, device

    def __call__(self) -> float:
        return teacher_agreement(self.student, self.teacher, self.inputs, self.temperature, self.device)["kd"]


def start_candidate(model: nn.Module, allocation: dict[str, float], stream: CalibrationStream,
                    device: torch.device) -> nn.Module:
    """The start without reconstruction: magnitude masks of ``allocation`` on a copy of the dense ``model``,
    then BN re-estimation over one pass of the calibration stream (baseline tier b)."""
    candidate = masked_copy(model, allocation, device)
    recalibrate_bn(candidate, stream, stream.batches_per_pass, device=device)
    return candidate.eval()


def select_candidate(student: nn.Module, dense: nn.Module, start_alloc: dict[str, float], zeros_target: int,
                     stream: CalibrationStream, holdout: torch.Tensor, config: Config, device) -> tuple[nn.Module, dict]:
    """Config.select_holdout: return the reconstructed student or the start (its allocation on the dense
    weights, BN re-estimated), whichever agrees with the dense model's top-1 on more held-out images; on a tie,
    the start. The KD loss of each is reported beside."""
    start = start_candidate(dense, start_alloc, stream, device)
    distributed.average_buffers_(start)  # BN statistics re-estimated on each rank's own slices
    candidates = {"reconstructed": student}
    if count_zeros(start)[0] == zeros_target:  # only a start with exactly the target's zeros (integer-exact allocations)
        candidates["start"] = start
    batches = holdout.split(config.batch_size)
    scores = {name: teacher_agreement(m, dense, batches, config.temperature, device) for name, m in candidates.items()}
    names = list(candidates)
    # the reconstruction must earn its place: the most top-1 agreement with the dense model, a tie to the start
    choice = torch.tensor([max(range(len(names)), key=lambda i: (scores[names[i]]["agreement"], names[i] == "start"))],
                          device=device)
    distributed.broadcast_([choice])  # rank 0's choice everywhere (the scores agree up to rounding)
    chosen = names[int(choice)]
    return candidates[chosen].eval(), dict(chosen=chosen, holdout=len(holdout), scores=scores)
