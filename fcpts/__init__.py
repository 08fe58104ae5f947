"""fcpts: Fast and Controllable Post-Training Sparsity (Gong et al., AAAI 2024), faithful and then better.

The core vocabulary follows ``torch.ao.pruning``: per-layer settings keyed by qualified module names, a
prepare -> step -> squash lifecycle, and masks that squash into a plain ``state_dict`` with real zeros.
"""
from .allocation import (ALLOCATIONS, allocate, apply_masks, erk_allocation, exact_counts,
                         global_magnitude_allocation, lamp_allocation, magnitude_masks, uniform_allocation)
from .bridge import Bridge, exact_sparsity, histogram_density, kde_density
from .calibration import CalibrationStream, recalibrate_bn
from .config import Config, check_target
from .masking import (ThresholdMask, ThresholdSparsifier, count_zeros, prunable_layers,
                      weight_sparsity_table)
from .objective import controllable_loss, kd_loss
from .projection import project_masks
from .learner import FcptsLearner, Learner
from .sparsify import SparsifyResult, learn_allocation, sparsify
from .learners import ProbMaskConfig, ProbMaskLearner, StrConfig, StrLearner
from .dsa import DsaConfig, DsaLearner
from .export import export_run, load_sparse, save_sparse

__version__ = "0.1.0"
