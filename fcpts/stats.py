"""Uncertainty for the kit's comparisons: per-image outcomes, bootstrap intervals over seeds and test images,
and paired verdicts.

A runner row keeps which test images its model got right (``pack_outcomes``: one bit per image, hex-encoded,
in the test split's order). With a method's rows over several seeds as a 0/1 matrix ``[seeds, images]``:

* ``bootstrap_interval``: the mean accuracy with a percentile interval from a two-level bootstrap that
  resamples seeds (training randomness) and test images (which images the test split happened to hold);
* ``paired_difference``: the difference of two methods' accuracies on the *same* images (and, where both ran
  the same seeds, the same seeds): each replicate draws one set of images, and seeds, for both, so image
  difficulty and the calibration sample cancel;
* ``verdict``: "A beats B" only when that interval excludes 0, otherwise "within noise", with the interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LEVEL = 0.95
REPLICATES = 2000


def pack_outcomes(correct: torch.Tensor | np.ndarray) -> str:
    """Per-image top-1 outcomes (bool, test-split order) as a hex string, 4 images per character."""
    bits = np.asarray(correct, dtype=bool).ravel()
    packed = np.packbits(bits)  # big-endian bit order, zero-padded to a whole byte
    return packed.tobytes().hex()


def unpack_outcomes(text: str, n: int) -> np.ndarray:
    """The inverse of ``pack_outcomes`` for ``n`` images."""
    raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    bits = np.unpackbits(raw)
    if len(bits) < n or bits[n:].any():
        raise ValueError(f"outcome string holds {len(bits)} bits, not {n} images (or its padding is not zero)")
    return bits[:n].astype(bool)


@dataclass(frozen=True)
class Interval:
    estimate: float  # on the data as observed
    low: float
    high: float
    level: float = LEVEL

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def points(self) -> str:
        """'97.8 [96.9, 98.6]' in percentage points."""
        return f"{100 * self.estimate:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"

    def signed(self) -> str:
        """'+0.3 [-1.4, +0.8]': a difference in percentage points."""
        return f"{100 * self.estimate:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def _matrix(outcomes) -> np.ndarray:
    m = np.atleast_2d(np.asarray(outcomes, dtype=float))
    if m.size == 0:
        raise ValueError("no outcomes")
    return m


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(outcomes, replicates: int = REPLICATES, level: float = LEVEL, seed: int = 0) -> Interval:
    """Mean accuracy of ``outcomes`` ``[seeds, images]`` with a two-level bootstrap interval."""
    m = _matrix(outcomes)
    rng = np.random.default_rng(seed)
    seeds, images = m.shape
    stats = np.empty(replicates)
    for r in range(replicates):
        # outcomes are 0/1, so every partial sum is an exact integer: summing over the drawn seeds first, then
        # over the drawn images, gives the mean of the drawn submatrix bit for bit, in two cheap passes
        column_sums = np.bincount(rng.integers(0, seeds, seeds), minlength=seeds) @ m
        stats[r] = column_sums[rng.integers(0, images, images)].sum() / (seeds * images)
    return Interval(float(m.mean()), *_percentiles(stats, level), level=level)


def paired_difference(a, b, replicates: int = REPLICATES, level: float = LEVEL, seed: int = 0,
                      paired_seeds: bool | None = None) -> Interval:
    """Accuracy of ``a`` minus accuracy of ``b`` (each ``[seeds, images]``, the same images in the same order),
    with a bootstrap that draws the images once per replicate for both. Seeds are paired too (row i of both
    is the same seed: the same calibration sample and augmentations) when ``paired_seeds``, by default when
    both have as many rows; otherwise each method's seeds are drawn separately."""
    ma, mb = _matrix(a), _matrix(b)
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"the rows cover different test sets ({ma.shape[1]} vs {mb.shape[1]} images)")
    paired_seeds = len(ma) == len(mb) if paired_seeds is None else paired_seeds
    if paired_seeds and len(ma) != len(mb):
        raise ValueError(f"paired seeds need as many rows in both ({len(ma)} vs {len(mb)})")
    rng = np.random.default_rng(seed)
    images = ma.shape[1]
    stats = np.empty(replicates)
    for r in range(replicates):
        pick = rng.integers(0, images, images)
        rows_a = rng.integers(0, len(ma), len(ma))
        rows_b = rows_a if paired_seeds else rng.integers(0, len(mb), len(mb))
        sums_a = np.bincount(rows_a, minlength=len(ma)) @ ma  # exact integer sums, as in bootstrap_interval
        sums_b = np.bincount(rows_b, minlength=len(mb)) @ mb
        stats[r] = sums_a[pick].sum() / (len(ma) * images) - sums_b[pick].sum() / (len(mb) * images)
    return Interval(float(ma.mean() - mb.mean()), *_percentiles(stats, level), level=level)


def verdict(name_a: str, name_b: str, difference: Interval) -> str:
    """'A beats B by 2.5 points [0.8, 4.1]', 'B beats A ...', or 'A and B: within noise (-0.3 points [-1.4, 0.8])'."""
    d = difference
    if d.low > 0:
        return f"{name_a} beats {name_b} by {100 * d.estimate:.1f} points [{100 * d.low:.1f}, {100 * d.high:.1f}]"
    if d.high < 0:
        return f"{name_b} beats {name_a} by {-100 * d.estimate:.1f} points [{-100 * d.high:.1f}, {-100 * d.low:.1f}]"
    return f"{name_a} and {name_b}: within noise ({d.signed().replace(' [', ' points [', 1)})"
