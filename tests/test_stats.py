"""Uncertainty (fcpts.stats): packed per-image outcomes, bootstrap intervals over seeds and images, verdicts;
their coverage of a known truth, and the one-seed case against scipy.stats.bootstrap."""
import functools
import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from fcpts.stats import bootstrap_interval, pack_outcomes, paired_difference, unpack_outcomes, verdict

N = 360  # the digits test split


def outcomes(accuracy: float, seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < accuracy


@pytest.mark.parametrize("n", [1, 7, 8, 360, 50_000])
def test_outcomes_round_trip(n):
    bits = outcomes(0.7, n, n)
    text = pack_outcomes(torch.from_numpy(bits))
    assert len(text) == 2 * ((n + 7) // 8) and np.array_equal(unpack_outcomes(text, n), bits)
    with pytest.raises(ValueError):
        unpack_outcomes(text, n + 9)


def test_identical_rows_give_a_zero_difference_with_a_narrow_interval():
    a = np.stack([outcomes(0.95, s) for s in range(3)])
    d = paired_difference(a, a.copy())
    assert d.estimate == 0.0 and d.contains(0.0) and d.high - d.low < 0.01
    assert "within noise" in verdict("A", "B", d)


@pytest.mark.parametrize("k", [1, 3, 9])
def test_rows_differing_on_k_fixed_images(k):
    base = outcomes(0.9, 0)
    better = base.copy()
    wrong = np.flatnonzero(~base)[:k]
    better[wrong] = True  # right on k more images, the same elsewhere, for every seed
    a, b = np.stack([better] * 3), np.stack([base] * 3)
    d = paired_difference(a, b)
    assert d.estimate == pytest.approx(k / N)
    assert d.low >= 0 and d.contains(k / N)
    # paired: only the k images vary between replicates, so the interval is far narrower than unpaired
    unpaired = bootstrap_interval(a).high - bootstrap_interval(a).low
    assert d.high - d.low < unpaired


def test_a_real_gap_is_a_win_and_a_one_image_gap_is_noise():
    strong = np.stack([outcomes(0.98, s) for s in range(3)])
    weak = np.stack([outcomes(0.90, 10 + s) for s in range(3)])
    gap = paired_difference(strong, weak)
    assert gap.low > 0 and verdict("FCPTS", "ERK", gap).startswith("FCPTS beats ERK by")
    assert verdict("ERK", "FCPTS", paired_difference(weak, strong)).startswith("FCPTS beats ERK by")
    one_image = strong.copy()
    one_image[:, np.flatnonzero(strong[0])[0]] = False
    assert "within noise" in verdict("A", "B", paired_difference(strong[:1], one_image[:1]))


def test_interval_of_one_method_covers_its_mean_and_widens_with_seed_spread():
    steady = np.stack([outcomes(0.9, 0)] * 3)
    shaky = np.stack([outcomes(p, s) for s, p in enumerate((0.80, 0.90, 0.99))])
    i, j = bootstrap_interval(steady), bootstrap_interval(shaky)
    assert i.contains(i.estimate) and j.contains(j.estimate)
    assert j.high - j.low > i.high - i.low
    assert bootstrap_interval(steady) == bootstrap_interval(steady)  # seeded
    with pytest.raises(ValueError, match="different test sets"):
        paired_difference(steady, steady[:, :100])


def test_unpaired_seeds_are_drawn_separately():
    a = np.stack([outcomes(0.95, s) for s in range(3)])
    assert paired_difference(a, a, paired_seeds=False).high > 0.005  # seed spread counts twice
    with pytest.raises(ValueError, match="paired seeds"):
        paired_difference(a, a[:2], paired_seeds=True)
    assert paired_difference(a, a[:2]).contains(paired_difference(a, a[:2]).estimate)


# ------------------------------------------------------------------------------ coverage against a known truth
# Synthetic comparisons with a known truth, from a population of test images (the digits split's size, 3 seeds):
#
# * image i is wrong for method B with probability e_i ~ Beta(κμ, κ(1 − μ)) (mean μ), the same for every seed,
#   independently across seeds given e_i. κ sets where the noise lives: small κ makes e_i nearly 0 or 1 (the
#   images decide), large κ spreads the errors as flips between seeds.
# * method A fixes 30 % of B's errors: either always the same ones (a fixed random 30 % of the images, F_i drawn
#   once per image: A right where B is or F_i), or A is wrong with probability 0.7 e_i, drawn independently of B.
#
# Either way B's expected accuracy is 1 − μ and A − B's is GAIN·μ exactly. The two-level bootstrap resamples
# images (the test split as a sample of images) and seeds (the training randomness), so those expectations over
# both are the truth its intervals target, and every case draws its own images and seeds. (With one fixed set
# of images for all cases the truth would be the mean over those images, and resampling images would only
# widen the interval.) No seed-level effect is simulated: three seeds cannot estimate one.
SEEDS, GAIN = 3, 0.3
COVERAGE_CASES = 400  # Monte Carlo error of a coverage near 95 %: ±1.1 points (one standard error)
# Replicates per interval: fcpts.stats runs its replicates in a Python loop (~20 µs each), so the default
# 2,000 over 2 × 400 intervals would take ~30 s. With 400 the 2.5 % and 97.5 % percentiles move by about
# 0.13 bootstrap standard errors, which changes a 95 % coverage by well under one point.
COVERAGE_REPLICATES = 400


def true_standard_errors(mu: float, kappa: float, fixed_gain: bool, seeds: int = SEEDS, n: int = N):
    """The exact standard errors of B's mean accuracy and of the paired difference A − B: each is the mean over
    n independent images of that image's mean over the seeds (Var = Var(E[·|e]) + E[Var(·|e)] / seeds)."""
    e1, e2 = mu, mu * (kappa * mu + 1) / (kappa + 1)  # E[e], E[e²] of the Beta
    var_b = (e2 - e1 ** 2) + (e1 - e2) / seeds
    if fixed_gain:  # A − B = F_i · 1[B wrong]
        var_d = GAIN * (e2 + (e1 - e2) / seeds) - (GAIN * e1) ** 2
    else:  # A − B = Bernoulli(1 − 0.7 e) − Bernoulli(1 − e), independent given e
        keep = 1 - GAIN
        var_d = GAIN ** 2 * (e2 - e1 ** 2) + ((1 + keep) * e1 - (1 + keep ** 2) * e2) / seeds
    return math.sqrt(var_b / n), math.sqrt(var_d / n)


def synthetic_pair(rng, mu: float, kappa: float, fixed_gain: bool, seeds: int = SEEDS, n: int = N):
    """0/1 outcomes ``[seeds, images]`` of A and B for one fresh draw of images and seeds."""
    e = rng.beta(kappa * mu, kappa * (1 - mu), n)
    b = rng.random((seeds, n)) >= e
    if fixed_gain:
        return b | (rng.random(n) < GAIN), b
    return rng.random((seeds, n)) >= (1 - GAIN) * e, b


@dataclass
class Coverage:
    name: str
    truth: float
    se: float  # the exact standard error of the estimate
    estimates: list = field(default_factory=list)
    lows: list = field(default_factory=list)
    highs: list = field(default_factory=list)

    def covers(self, value: float) -> float:
        """The share of the intervals that contain ``value``."""
        return float(np.mean((np.array(self.lows) <= value) & (value <= np.array(self.highs))))

    def width(self) -> float:
        """Mean interval width over the exact 2 · 1.96 · se."""
        return float(np.mean(np.array(self.highs) - np.array(self.lows)) / (2 * 1.96 * self.se))

    def report(self, shift: float = 3) -> str:
        above, below = self.covers(self.truth + shift * self.se), self.covers(self.truth - shift * self.se)
        return (f"{self.name}: its 95 % interval covered the truth {self.truth:.4f} in {self.covers(self.truth):.1%} "
                f"of {len(self.lows)} cases, truth + / − {shift:g} se in {above:.1%} / {below:.1%}; "
                f"mean width {self.width():.2f} × the exact "
                f"2·1.96·se = {2 * 1.96 * self.se:.4f}; estimates: mean {np.mean(self.estimates):.4f}, "
                f"sd {np.std(self.estimates):.4f} (exact se {self.se:.4f})")

    def check(self, coverage: tuple[float, float], width: tuple[float, float], shift: float) -> None:
        message = self.report(shift)
        # the simulation itself: the estimates centre on the truth and spread by the exact standard error
        assert abs(np.mean(self.estimates) - self.truth) < 4 * self.se / math.sqrt(len(self.lows)), message
        assert abs(np.std(self.estimates) / self.se - 1) < 0.15, message
        assert coverage[0] <= self.covers(self.truth) <= coverage[1], message
        # not vacuously: not far wider than the exact sampling spread, and a truth `shift` se away is mostly outside
        # (a symmetric interval of the exact width covers one 3 se away ~15 % of the time; the skew of these
        # U-shaped error rates puts more of that on one side)
        assert width[0] < self.width() < width[1], message
        shifted = max(self.covers(self.truth + shift * self.se), self.covers(self.truth - shift * self.se))
        assert shifted < 1 / 3, message


@functools.lru_cache(maxsize=None)
def coverage(mu: float, kappa: float, fixed_gain: bool, cases: int, seed: int = 0) -> dict[str, Coverage]:
    """B's accuracy by ``bootstrap_interval`` and A − B by ``paired_difference`` over ``cases`` synthetic cases."""
    rng = np.random.default_rng(seed)
    se_b, se_d = true_standard_errors(mu, kappa, fixed_gain)
    out = dict(accuracy=Coverage("bootstrap_interval, B's accuracy", 1 - mu, se_b),
               difference=Coverage("paired_difference, A − B", GAIN * mu, se_d))
    for case in range(cases):
        a, b = synthetic_pair(rng, mu, kappa, fixed_gain)
        intervals = dict(accuracy=bootstrap_interval(b, replicates=COVERAGE_REPLICATES, seed=case),
                         difference=paired_difference(a, b, replicates=COVERAGE_REPLICATES, seed=case))
        for result, interval in ((out[k], intervals[k]) for k in out):
            result.estimates.append(interval.estimate)
            result.lows.append(interval.low)
            result.highs.append(interval.high)
    return out


# Where the images decide (κ = 0.1: most images always right or always wrong; A's gain on fixed images), the
# bootstrap's assumptions hold: nominal coverage, and about the exact width.
@pytest.mark.parametrize("which", ["accuracy", "difference"])
def test_intervals_cover_the_truth_95_percent_of_the_time(which):
    result = coverage(mu=0.1, kappa=0.1, fixed_gain=True, cases=COVERAGE_CASES)[which]
    result.check(coverage=(0.92, 0.98), width=(0.8, 1.25), shift=3)


# Where outcomes flip between seeds (κ = 3, μ = 2 %, A's outcomes drawn independently of B's): the regime of the
# committed quality tables, where most FCPTS errors at 50–90 % are images right in one seed and wrong in another
# (per-image variance about 1 : 3 between images and flips there; 0.0049 : 0.0147 here). Resampling both seeds
# and images counts the flips (the seed × image interaction) about three times instead of once: through the
# row means, the column means and the joint draw (Owen's "pigeonhole bootstrap", 2007). The intervals are
# conservative there: wider than needed (~1.3-1.5×), never narrower; so the shifted truth is 4 se away.
@pytest.mark.parametrize("which", ["accuracy", "difference"])
def test_intervals_are_conservative_when_outcomes_flip_between_seeds(which):
    result = coverage(mu=0.02, kappa=3.0, fixed_gain=False, cases=200)[which]
    result.check(coverage=(0.95, 1.0), width=(0.8, 1.6), shift=4)


def test_one_seed_percentile_intervals_agree_with_scipy():
    """With one seed (one row) both functions are the plain percentile bootstrap over images, as
    ``scipy.stats.bootstrap(method="percentile")``; the paired difference as its ``paired=True``. Both sides'
    endpoints are percentiles of a distribution on multiples of 1/360 (one image), and with 10,000 resamples each
    their Monte Carlo error is ~0.03 bootstrap standard errors (~0.05 points), so they land on the same or an
    adjacent multiple: agreement within one image."""
    stats = pytest.importorskip("scipy.stats")
    rng = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"  # scipy < 1.15
    a, b = synthetic_pair(np.random.default_rng(7), mu=0.1, kappa=0.5, fixed_gain=True, seeds=1)
    replicates = 10_000
    kit_acc = bootstrap_interval(b, replicates=replicates, seed=1)
    kit_diff = paired_difference(a, b, replicates=replicates, seed=1)
    ref_acc = stats.bootstrap((b[0].astype(float),), np.mean, method="percentile", n_resamples=replicates,
                              **{rng: np.random.default_rng(2)}).confidence_interval
    ref_diff = stats.bootstrap((a[0].astype(float), b[0].astype(float)),
                               lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                               method="percentile", n_resamples=replicates,
                               **{rng: np.random.default_rng(3)}).confidence_interval
    assert kit_acc.estimate == pytest.approx(b.mean()) and kit_diff.estimate == pytest.approx(a.mean() - b.mean())
    for kit, ref in ((kit_acc, ref_acc), (kit_diff, ref_diff)):
        message = (f"kit [{kit.low:.4f}, {kit.high:.4f}] vs scipy [{ref.low:.4f}, {ref.high:.4f}] "
                   f"(one image = {1 / N:.4f})")
        assert abs(kit.low - ref.low) <= 1 / N + 1e-12 and abs(kit.high - ref.high) <= 1 / N + 1e-12, message
        assert kit.high - kit.low > 5 / N, message  # a real interval, not a degenerate one
