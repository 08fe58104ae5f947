"""The bridge: exact sparsity forward, density-estimate gradient backward."""
import math

import pytest
import torch

from fcpts.bridge import (Bridge, bridge_slopes, count_at_least, exact_sparsity, histc_lower_edges, histogram_densities,
                          histogram_density, histogram_density_histc, histogram_slopes, kde_density)

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


# ----- the released histogram rule without torch.histc: the same numbers -------------------------------------
def random_layers(count, seed=0):
    """Layers of many shapes and scales: Gaussian at scales 1e-6..1, offset, uniform, a few discrete values (many
    weights on one value), tiny (denormal-range) values, one weight, constant layers."""
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        n = int(torch.randint(1, 3000, (1,), generator=g))
        kind = i % 7
        if kind == 0:
            w = torch.randn(n, generator=g) * 10 ** float(torch.empty(1).uniform_(-6, 0, generator=g))
        elif kind == 1:
            w = torch.rand(n, generator=g) * 0.3 - 0.05
        elif kind == 2:
            w = torch.randint(-50, 50, (n,), generator=g).float() * 0.01
        elif kind == 3:
            w = torch.randn(n, generator=g).abs() * 1e-3 + 1.0
        elif kind == 4:
            w = torch.randn(n, generator=g) * 1e-30
        elif kind == 5:
            w = torch.full((n,), float(torch.randn(1, generator=g)))  # constant: no width, density 0
        else:
            w = torch.randn(n, generator=g) * 0.05 + 0.01
        yield w


def with_weights_on_the_edges(w, bins=100):
    """``w`` plus weights exactly on torch.histc's bin edges, one float either side, and on lo + k (hi - lo) / bins."""
    lo, hi = torch.aminmax(w)
    edges = histc_lower_edges(lo, hi, torch.arange(bins + 1), bins)
    edges = edges[torch.isfinite(edges)]
    below, above = torch.nextafter(edges, torch.tensor(-math.inf)), torch.nextafter(edges, torch.tensor(math.inf))
    nominal = (lo.double() + torch.arange(bins + 1).double() * (hi.double() - lo.double()) / bins).float()
    extra = torch.cat([edges, below, above, nominal])
    return torch.cat([w, extra[(extra >= lo) & (extra <= hi)]])


def test_exact_edges_reproduce_every_histc_bin_count():
    # every bin of torch.histc, counted as #(w >= edge k) - #(w >= edge k+1), including weights on the edges
    for w in random_layers(210):
        w = with_weights_on_the_edges(w)
        lo, hi = torch.aminmax(w)
        if hi <= lo:
            continue
        for bins in (100, 7):  # 101 edges: one sort; 8 edges: one comparison pass each
            edges = histc_lower_edges(lo, hi, torch.arange(bins + 1), bins)
            at_least = count_at_least(w, edges)
            assert torch.equal((at_least[:-1] - at_least[1:]).float(), torch.histc(w, bins, lo.item(), hi.item()))


def test_histogram_density_equals_the_histc_rule():
    # thresholds anywhere: on the bin edges (exact and nominal), inside, outside [lo, hi], at lo and hi, ±t
    g = torch.Generator().manual_seed(5)
    worst = 0.0
    for w in random_layers(280, seed=1):
        w = with_weights_on_the_edges(w)
        lo, hi = torch.aminmax(w)
        span = hi - lo
        k = torch.randint(0, 101, (6,), generator=g)
        points = torch.cat([
            histc_lower_edges(lo, hi, k, 100).nan_to_num(0.0, posinf=0.0, neginf=0.0),
            lo + k * (span / 100), (lo.double() + k.double() * span.double() / 100).float(),
            lo + (torch.rand(6, generator=g) * 1.6 - 0.3) * span, torch.stack([lo, hi, -lo, -hi]),
            torch.tensor([0.0, 1e-8, 10.0, -10.0])])
        released = histogram_density_histc(w, points)
        many = histogram_density(w, points)  # 56 edges: counted on a sorted copy
        pairs = histogram_densities([w] * (points.numel() // 2), points.reshape(-1, 2)).reshape(-1)  # 4 passes each
        for new in (many, pairs):
            worst = max(worst, (new - released).abs().max().item())
            assert torch.equal(new, released), (w.numel(), lo.item(), hi.item())
    assert worst == 0.0  # the max deviation from the released rule (the requirement is 1e-7)


def test_constant_and_single_weight_layers_have_zero_density():
    for w in (torch.full((50,), 0.3), torch.tensor([0.1]), torch.zeros(10)):
        points = torch.tensor([0.3, -0.3, 0.1, 0.0])
        assert histogram_density(w, points).tolist() == [0.0] * 4 == histogram_density_histc(w, points).tolist()


def test_batched_slopes_equal_each_layers_own_bridge():
    layers = [w for w in random_layers(14, seed=2)] + [torch.randn(4, 3, 3, 3)]  # any shape
    t = torch.stack([w.abs().flatten().median() for w in layers])
    batched = histogram_slopes(layers, t)
    for w, ti, slope in zip(layers, t, batched):
        points = torch.stack([ti, -ti])
        assert torch.equal(slope, Bridge(w.numel()).density_at(w, ti))
        assert torch.equal(slope, histogram_density_histc(w, points).sum())
    bridges = [Bridge(w.numel(), "histogram", histogram_max_samples=50) for w in layers]  # strided samples too
    for bridge, w, ti, slope in zip(bridges, layers, t, bridge_slopes(bridges, layers, list(t))):
        sample = w.flatten()[:: bridge.stride]
        assert torch.equal(slope, histogram_density_histc(sample, torch.stack([ti, -ti])).sum())


def test_the_bridge_reads_nothing_back_from_the_device(monkeypatch):
    # .item(), bool(), float(), .tolist() on a GPU tensor wait for the device; the histogram bridge uses none
    def refuse(*args, **kwargs):
        raise AssertionError("the bridge read a value back to the host")

    w = torch.randn(3000)
    t = torch.tensor(0.05, requires_grad=True)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    Bridge(w.numel())(w, t).backward()
    histogram_slopes([w, w[:100]], torch.stack([t.detach(), t.detach()]))
    monkeypatch.undo()
    assert t.grad.item() == pytest.approx(histogram_density_histc(w, torch.tensor([0.05, -0.05])).sum().item())


def test_a_large_layer_counted_in_slices_gives_the_histc_slopes():
    w = with_weights_on_the_edges(torch.randn(300_000, generator=torch.Generator().manual_seed(3)) * 0.05)
    lo, hi = torch.aminmax(w)
    on_edges = histc_lower_edges(lo, hi, torch.tensor([50, 55, 61, 99]), 100)
    t = torch.cat([torch.tensor([0.0, 0.01, 0.03, 0.05, 0.2]), hi.reshape(1), on_edges, -lo.reshape(1)])
    for ti, slope in zip(t, histogram_slopes([w] * t.numel(), t)):  # > 2**17 weights: counted slice by slice
        assert torch.equal(slope, histogram_density_histc(w, torch.stack([ti, -ti])).sum())
