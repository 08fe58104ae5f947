"""Uncertainty (fcpts.stats): packed per-image outcomes, bootstrap intervals over seeds and images, verdicts."""
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
