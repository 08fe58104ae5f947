"""The bridge: exact sparsity forward, density-estimate gradient backward."""
import math

import pytest
import torch

from fcpts.bridge import Bridge, exact_sparsity, histogram_density, kde_density

N = 200_000


def gaussian(sigma=0.05):
    return torch.randn(N, generator=torch.Generator().manual_seed(0)) * sigma


def laplace(b=0.03):
    u = torch.rand(N, generator=torch.Generator().manual_seed(1)) - 0.5
    return -b * torch.sign(u) * torch.log1p(-2 * u.abs())  # inverse CDF of Laplace(0, b)


def gaussian_pdf(x, s=0.05):
    return math.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))


def laplace_pdf(x, b=0.03):
    return math.exp(-abs(x) / b) / (2 * b)


def laplace_cdf(x, b=0.03):
    return 0.5 * math.exp(x / b) if x < 0 else 1 - 0.5 * math.exp(-x / b)


def bridge_grad(bridge, w, t):
    t = torch.tensor(t, requires_grad=True)
    bridge(w, t).backward()
    return t.grad.item()


@pytest.mark.parametrize("estimator", ["histogram", "kde"])
@pytest.mark.parametrize("factor", [0.5, 1.0, 1.5, 2.0])
def test_gradient_matches_gaussian_density(estimator, factor):
    w, sigma = gaussian(), 0.05
    t = factor * sigma
    grad = bridge_grad(Bridge(N, estimator, seed=3), w, t)
    analytic = 2 * gaussian_pdf(t)  # dS/dt = p(t) + p(-t)
    assert grad == pytest.approx(analytic, rel=0.05)


@pytest.mark.parametrize("factor", [0.5, 1.0, 1.5, 2.0])
def test_kde_gradient_matches_laplace_density(factor):
    w, b = laplace(), 0.03
    t = factor * b
    assert bridge_grad(Bridge(N, "kde", seed=3), w, t) == pytest.approx(2 * laplace_pdf(t), rel=0.05)


@pytest.mark.parametrize("bin_index", [52, 55, 58, 62])
def test_histogram_gradient_matches_laplace_density(bin_index):
    # A 100-bin histogram resolves the density only to one bin; over a Laplace sample's wide range a bin is
    # ~0.2 b wide, so the point density varies inside it. At bin centres the box kernel is unbiased to
    # second order, and anywhere in a bin it equals the bin-average of the true density.
    w, b = laplace(), 0.03
    lo, hi = w.min().item(), w.max().item()
    width = (hi - lo) / 100
    centre = lo + (bin_index + 0.5) * width
    # symmetric estimate needs -t too: compare each side's density separately
    points = torch.tensor([centre])
    assert histogram_density(w, points).item() == pytest.approx(laplace_pdf(centre), rel=0.05)
    off = lo + (bin_index + 0.9) * width
    bin_lo, bin_hi = lo + bin_index * width, lo + (bin_index + 1) * width
    bin_mean = (laplace_cdf(bin_hi) - laplace_cdf(bin_lo)) / width
    assert histogram_density(w, torch.tensor([off])).item() == pytest.approx(bin_mean, rel=0.05)


@pytest.mark.parametrize("estimator", ["histogram", "kde"])
def test_gradient_matches_finite_difference_of_true_cdf(estimator):
    w, sigma = gaussian(), 0.05
    t, h = 0.8 * sigma, 1e-4
    normal_cdf = lambda x: 0.5 * (1 + math.erf(x / (sigma * math.sqrt(2))))
    true_fd = ((normal_cdf(t + h) - normal_cdf(-t - h)) - (normal_cdf(t - h) - normal_cdf(-t + h))) / (2 * h)
    assert bridge_grad(Bridge(N, estimator), w, t) == pytest.approx(true_fd, rel=0.05)


def test_forward_is_the_exact_fraction_and_only_t_gets_gradient():
    w = torch.tensor([-0.3, -0.1, 0.0, 0.05, 0.2, 0.4], requires_grad=True)
    t = torch.tensor(0.1, requires_grad=True)
    value = Bridge(w.numel())(w, t)
    assert value.item() == pytest.approx(3 / 6)  # -0.1, 0.0, 0.05 have |w| <= 0.1: the mask removes them
    assert exact_sparsity(w, 0.1).item() == pytest.approx(0.5)
    value.backward()
    assert t.grad is not None and w.grad is None


def test_histogram_is_zero_outside_the_weight_range():
    w = torch.linspace(-1, 1, 1000)
    assert histogram_density(w, torch.tensor([1.5, -2.0])).tolist() == [0.0, 0.0]


def test_kde_subsample_is_fixed_bounded_and_seeded():
    a = Bridge(10_000_000, "kde", max_samples=4096, seed=7)
    b = Bridge(10_000_000, "kde", max_samples=4096, seed=7)
    c = Bridge(10_000_000, "kde", max_samples=4096, seed=8)
    assert a.subsample.numel() == 4096 and torch.equal(a.subsample, b.subsample)
    assert not torch.equal(a.subsample, c.subsample)
    assert Bridge(1000, "kde", max_samples=4096).subsample is None  # small layers use every weight


def test_kde_density_integrates_to_one():
    sample = gaussian()[:5000]
    grid = torch.linspace(-0.4, 0.4, 4001)
    density = kde_density(sample, grid)
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-3)


def test_sampled_histogram_tracks_the_full_one_and_is_off_by_default():
    w = gaussian()  # a Gaussian layer; the strided sample sees every k-th weight
    t = torch.tensor(0.05)
    full = Bridge(w.numel(), "histogram")
    sampled = Bridge(w.numel(), "histogram", histogram_max_samples=w.numel() // 8)
    assert full.stride == 1 and sampled.stride == 8
    assert sampled.density_at(w, t).item() == pytest.approx(full.density_at(w, t).item(), rel=0.1)
    assert Bridge(100, "histogram", histogram_max_samples=4096).stride == 1  # small layers use every weight
    with pytest.raises(ValueError, match="histogram_max_samples"):
        Bridge(100, "histogram", histogram_max_samples=-1)


def test_a_given_exact_count_is_used_as_the_value():
    w = torch.randn(1000)
    t = torch.tensor(0.3, requires_grad=True)
    bridge = Bridge(w.numel())
    assert bridge(w, t, exact=exact_sparsity(w, 0.3)).item() == pytest.approx(bridge(w, t).item())
    # The given count is taken as it is (not recounted); the gradient is still the density estimate.
    value = bridge(w, t, exact=torch.tensor(0.123))
    assert value.item() == pytest.approx(0.123)
    (grad,) = torch.autograd.grad(value, t)
    assert grad.item() == pytest.approx(bridge.density_at(w, t).item())
