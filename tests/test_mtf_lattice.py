"""Electrons per pixel from the count lattice of whitened Poisson noise (issue 11)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from tem_core.detector import apply_mtf, radial_frequency_cycles_per_px
from tem_core.mtf_fit import (
    averaged_periodogram,
    fit_mtf_whittle,
    mtf_from_spec,
    synthetic_background_crops,
)
from tem_core.mtf_fit.lattice import (
    bin_probabilities,
    fisher_information,
    fit_count_lattice,
    histogram_nll,
    poisson_gaussian_log_density,
    probabilities_and_jacobian,
)
from tem_core.mtf_fit.poisson import poisson_scale, ring_smoothed


def _theta(a, b, n, tau):
    return torch.tensor([math.log(a), b, math.log(n), math.log(tau)], dtype=torch.float64)


def test_poisson_gaussian_density_matches_a_direct_sum():
    """Against scipy's Poisson pmf and normal pdf summed term by term."""
    a, b, n, tau = 2.5, -30.0, 12.3, 0.4
    w = torch.tensor([-31.0, -12.2, 0.1, 7.7], dtype=torch.float64)
    scalars = (torch.tensor(v, dtype=torch.float64) for v in (a, b, n, tau))
    ours = poisson_gaussian_log_density(w, *scalars)
    k = np.arange(0, 200)
    direct = [
        np.log(np.sum(stats.poisson.pmf(k, n) * stats.norm.pdf(x, a * k + b, tau)))
        for x in w.numpy()
    ]
    np.testing.assert_allclose(ours.numpy(), direct, rtol=1e-12)


def test_bin_probabilities_integrate_the_density_and_the_gradient_is_exact():
    """A bin's probability is the integral of the density (Simpson, 2001 points per bin),
    the analytic Jacobian used by the fit equals autograd's, and the histogram
    likelihood's autograd gradient passes gradcheck in float64."""
    theta = _theta(2.0, -20.0, 9.0, 0.3)
    edges = torch.linspace(-25.0, 20.0, 46, dtype=torch.float64)
    k = torch.arange(0, 60, dtype=torch.float64)
    prob = bin_probabilities(theta, edges, k)
    params = [torch.tensor(v, dtype=torch.float64) for v in (2.0, -20.0, 9.0, 0.3)]
    for j in (3, 17, 30):
        x = torch.linspace(float(edges[j]), float(edges[j + 1]), 2001, dtype=torch.float64)
        dens = poisson_gaussian_log_density(x, *params).exp()
        h = float(x[1] - x[0])
        simpson = h / 3 * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum())
        assert float(prob[j]) == pytest.approx(float(simpson), rel=1e-9, abs=1e-15)
    prob_analytic, jac = probabilities_and_jacobian(theta, edges, k)
    torch.testing.assert_close(prob_analytic, prob, rtol=0, atol=0)
    auto = torch.autograd.functional.jacobian(lambda t: bin_probabilities(t, edges, k), theta)
    torch.testing.assert_close(jac, auto, rtol=1e-12, atol=1e-14)  # measured 1e-15
    counts = torch.poisson(1e3 * prob, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(
        lambda t: histogram_nll(t, edges, counts, k), (theta.clone().requires_grad_(),)
    )


def test_fisher_information_poisson_limit_and_loss_without_lattice():
    """Resolved lattice: the Cramér-Rao error of N is that of counted electrons,
    sqrt(N/n); without it (τ = a) the shape alone knows N to tens of percent."""
    n_px = 900_000
    for tau_a, lo, hi in ((0.1, 1.0, 1.0 + 1e-6), (0.3, 1.0, 1.01), (1.0, 100.0, math.inf)):
        cov = torch.linalg.inv(fisher_information(_theta(1.0, -40.0, 40.0, tau_a), n_px))
        ratio = math.sqrt(float(cov[2, 2])) / (math.sqrt(40.0 / n_px) / 40.0)
        assert lo - 1e-6 <= ratio <= hi  # measured 1.0000, 1.004, 3566


def _table_crops(camera, seed, *, dose=40.0, gain=50.0):
    return synthetic_background_crops(
        camera,
        n_crops=16,
        crop_size_px=256,
        mean_electrons_per_px=dose,
        generator=torch.Generator().manual_seed(seed),
        micrograph_size_px=1024,
        gain_counts_per_e=gain,
    )


def _measure(crops, **kwargs):
    return poisson_scale(crops, ring_smoothed(averaged_periodogram(crops, taper=None)), **kwargs)


def test_count_lattice_gain_is_unbiased_on_camera_tables():
    """20 seeds per table, 16 × 256² at 40 e/px (benchmarks/mtf_count_lattice.py): gain
    error mean within ±0.001%, s.d. 0.003-0.004%, worst 0.009%; here two tables and two
    doses, within 3 Cramér-Rao errors (0.05% at 40 e/px)."""
    for camera, seed, dose in (("falcon2_300kv", 7, 40.0), ("k2_300kv", 107, 100.0)):
        measured = _measure(_table_crops(camera, seed, dose=dose))
        assert not measured.problem
        lat = measured.lattice
        assert lat.tau_over_spacing < 0.2  # measured 0.10 and 0.11
        # the next integer offset costs about n/(4N²) (measured 135 and 24.7)
        assert lat.integer_margin == pytest.approx(lat.n_pixels / (4 * dose**2), rel=0.3)
        assert measured.gain_counts_per_e == pytest.approx(50.0, rel=3 * measured.relative_se)
        assert measured.relative_se == pytest.approx(
            math.sqrt(dose / measured.n_pixels) / dose, rel=0.02
        )


def test_the_same_electrons_give_the_same_count_through_two_tables():
    """The lattice recovers the counts, not a property of the MTF: the same Poisson draw
    blurred by a sharp and a very soft table (MTF 0.05 at Nyquist) gives N equal to
    one Cramér-Rao error, 1.6e-4 (measured 2.9e-5: the two filters' borders differ,
    4 and 7 px, so the pixels do), while the skewness alone differs by 1.5%."""
    sharp = _measure(_table_crops("falcon4ec_300kv", 3))
    soft = _measure(_table_crops("falcon2_300kv", 3))
    assert sharp.electrons_per_px == pytest.approx(soft.electrons_per_px, rel=sharp.relative_se)


def _random_charge_crops(cv, seed=7):
    g = torch.Generator().manual_seed(seed)
    k = torch.poisson(torch.full((1, 1024, 1024), 40.0, dtype=torch.float64), generator=g)
    shape = 1.0 / cv**2  # a sum of k gamma charges (mean 1, spread cv) is gamma(k·shape)
    charge = torch._standard_gamma(k * shape + (k == 0), generator=g) / shape * (k > 0)
    omega = radial_frequency_cycles_per_px((1024, 1024), dtype=torch.float64)
    image = 50.0 * apply_mtf(charge, mtf_from_spec("falcon2_300kv", omega))
    return image.reshape(4, 256, 4, 256).permute(0, 2, 1, 3).reshape(16, 256, 256)


def test_random_charge_per_electron_has_no_lattice():
    """Gamma charge per electron, spread 30%: the skewness alone says +34% gain, which
    the kurtosis does not flag (0.0326 vs 0.0336); no lattice, so it is refused. A 5%
    spread keeps the lattice (residual 0.33 of the spacing) and the mean gain."""
    wide = _measure(_random_charge_crops(0.3))
    assert "no count lattice" in wide.problem and wide.lattice is None
    skew_gain = float(_random_charge_crops(0.3).mean()) / wide.skewness_electrons_per_px
    assert skew_gain > 1.25 * 50.0  # what the skewness alone would have returned
    narrow = _measure(_random_charge_crops(0.05))
    assert not narrow.problem
    assert narrow.gain_counts_per_e == pytest.approx(50.0, rel=3 * narrow.relative_se)


def test_read_noise_is_refused_not_taken_for_poisson():
    """Gaussian read noise of 0.1 electron (5 counts) after the blur washes out the lattice
    (the whitening amplifies it where the MTF is small); the skewness alone then put the
    gain 6% low silently. Now it is refused with the reason."""
    g = torch.Generator().manual_seed(8)
    crops = _table_crops("falcon2_300kv", 7)
    crops = crops + 5.0 * torch.randn(crops.shape, generator=g, dtype=torch.float64)
    assert "no count lattice" in _measure(crops).problem


def test_lattice_is_not_looked_for_when_asked_not_to():
    measured = _measure(_table_crops("falcon2_300kv", 7), count_lattice=False)
    assert measured.lattice is None and not measured.problem
    assert measured.electrons_per_px == measured.skewness_electrons_per_px


def test_fit_count_lattice_needs_skewed_values():
    g = torch.Generator().manual_seed(1)
    assert fit_count_lattice(torch.randn(10_000, generator=g, dtype=torch.float64)) is None
    assert fit_count_lattice(torch.ones(10, dtype=torch.float64)) is None


def test_default_fit_warns_and_uses_the_spectrum_for_a_random_charge():
    crops = _random_charge_crops(0.3)
    with pytest.warns(UserWarning, match="not Poisson with a fixed gain per electron: no count"):
        fit = fit_mtf_whittle(crops)
    assert fit.poisson is None and "Poisson skewness not used" in fit.model.reason
    alone = fit_mtf_whittle(crops, poisson_skewness=False)
    assert fit.scale == pytest.approx(alone.scale, rel=1e-6)


def test_default_fit_uses_the_lattice_quietly_on_clean_counts():
    crops = _table_crops("falcon4ec_300kv", 207)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit = fit_mtf_whittle(crops)
    assert "count lattice" in fit.model.reason and fit.poisson.lattice is not None
    omega = torch.tensor([0.25, 0.375, 0.45], dtype=torch.float64)
    error = fit.mtf(omega) / mtf_from_spec("falcon4ec_300kv", omega) - 1
    assert float(error.abs().max()) < 0.05
    assert fit.gain_counts_per_e(float(crops.mean())) == pytest.approx(50.0, rel=1e-3)
