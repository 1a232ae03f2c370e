"""Standard errors of Whittle MTF fits: Fisher information, and a Monte-Carlo calibration.

The covariance of :func:`tem_core.mtf_fit.fit_mtf_whittle` is the inverse Fisher
information of the Whittle likelihood. Checked here (float64, seeded generators):

* exactly: it is the inverse of the expected Hessian of the objective (the observed
  Hessian on noise-free data), and it scales as 1/crops;
* by Monte Carlo: periodograms drawn from the Whittle model itself (each bin ``S`` times
  the mean of ``B`` unit exponentials), fitted repeatedly; the empirical spread of the
  estimates must match the reported standard errors within the sampling error of a
  standard deviation estimated from ``R`` repeats (χ² bounds, derived below);
* end to end: :func:`fit_mtf_whittle` on synthetic crops, the 8 → 32 crop case that
  exposed the observed-Hessian errors (β's error grew 2.2 → 235 px²).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy import stats

from tem_core.detector import mtf_parametric, radial_frequency_cycles_per_px
from tem_core.mtf_fit import MTFFit, fit_mtf_whittle, synthetic_background_crops
from tem_core.mtf_fit.likelihood import WhittleProblem, fisher_covariance, newton

# A camera whose noise spectrum pins down all five Lorentzian parameters (relative errors
# 1-10 % with 256 crops of 64²); TEM-simulator's (0.7, 0.2, 0.1, 10, 40) does not (below).
WELL_DETERMINED = dict(a=0.3, b=0.6, c=0.1, alpha=10.0, beta=200.0, p=1.0, q=1.0, s=10.0)
NAMES = ("a", "b", "alpha", "beta", "s")
OMEGA = torch.tensor([0.125, 0.25, 0.45], dtype=torch.float64)
SIZE = 64


def _problem(power_half: torch.Tensor, n_crops: int) -> WhittleProblem:
    """The Whittle problem of ``fit_mtf_whittle`` for SIZE² crops (rfft half plane)."""
    radius = radial_frequency_cycles_per_px((SIZE, SIZE), dtype=torch.float64)
    radius = radius[:, : SIZE // 2 + 1]
    weight = torch.ones_like(radius)
    weight[:, 0] = weight[:, -1] = 0.5  # self-conjugate columns
    mask = (radius >= 1.5 / SIZE) & (radius <= 0.5)
    return WhittleProblem.build(
        power_half,
        radius,
        weight,
        mask,
        n_crops,
        width_bounds=(0.1, 1000.0),
        shape_bounds=(0.2, 5.0),
    )


def _truth() -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in WELL_DETERMINED.items()}


def _true_mtf(omega: torch.Tensor) -> torch.Tensor:
    keys = ("a", "b", "c", "alpha", "beta")
    return mtf_parametric(omega, **{k: WELL_DETERMINED[k] for k in keys})


def _true_spectrum_half() -> torch.Tensor:
    """``S = s · MTF²`` on the rfft half plane of a SIZE² crop [counts² per bin]."""
    radius = radial_frequency_cycles_per_px((SIZE, SIZE), dtype=torch.float64)
    return WELL_DETERMINED["s"] * _true_mtf(radius[:, : SIZE // 2 + 1]) ** 2


def _whittle_periodogram(n_crops: int, generator: torch.Generator) -> torch.Tensor:
    """Averaged periodogram of ``n_crops`` crops of Gaussian noise with spectrum S (half plane).

    Every bin is ``S · mean of n_crops Exp(1)`` (``|z|²/2`` of a complex unit Gaussian),
    with the Hermitian symmetry of a real crop on the self-conjugate columns.
    """
    spectrum = _true_spectrum_half()
    z = torch.randn(2, n_crops, SIZE, SIZE // 2 + 1, generator=generator, dtype=torch.float64)
    power = spectrum * 0.5 * (z**2).sum(0).mean(0)
    mirror = (-torch.arange(SIZE)) % SIZE
    lower = torch.arange(SIZE) > SIZE // 2
    for col in (0, SIZE // 2):
        power[lower, col] = power[mirror[lower], col]
    return power


def _fit(problem: WhittleProblem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimates, covariance and MTF at OMEGA of the Lorentzian model."""
    u = newton(problem, problem.unconstrained(WELL_DETERMINED), n_iter=30)
    params = {k: v.detach() for k, v in problem.natural(u).items()}
    cov, names = fisher_covariance(problem, params, 1.0)
    assert names == NAMES and cov is not None
    fit = MTFFit(
        method="whittle",
        params={k: float(v) for k, v in params.items() if k != "s"},
        scale=float(params["s"]),
        covariance=cov,
        covariance_names=names,
    )
    estimates = torch.tensor([float(params[k]) for k in NAMES] + fit.mtf(OMEGA).tolist())
    errors = torch.tensor(
        [fit.standard_errors[k] for k in NAMES] + fit.mtf_standard_error(OMEGA).tolist()
    )
    return estimates, errors, cov


def test_fisher_covariance_is_the_inverse_expected_hessian_and_scales_as_one_over_crops():
    """On noise-free data (P = S at the truth) the observed Hessian of the total NLL has
    no ``(1 − P/S) ∇²log S`` term and equals the Fisher information exactly."""
    truth = _truth()
    noise_free = _true_spectrum_half()
    problem = _problem(noise_free, 16)
    cov, names = fisher_covariance(problem, truth, 1.0)
    phi0 = torch.stack([truth[k] for k in names])

    def nll(phi: torch.Tensor) -> torch.Tensor:
        values = {**truth, **dict(zip(names, phi, strict=True))}
        values["c"] = 1.0 - values["a"] - values["b"]
        return problem.total_nll(values)

    hessian = torch.autograd.functional.hessian(nll, phi0)
    # measured 1e-13 relative to the largest entry (the information's condition number is
    # ~1e9, so inverting it loses ~9 of float64's 16 digits); 100x margin
    gap = (torch.linalg.inv(cov) - hessian).abs().max() / hessian.abs().max()
    assert gap < 1e-11
    cov64, _ = fisher_covariance(_problem(noise_free, 64), truth, 1.0)
    torch.testing.assert_close(cov64, cov / 4, rtol=1e-12, atol=0)
    inflated, _ = fisher_covariance(problem, truth, 3.5)
    torch.testing.assert_close(inflated, 3.5 * cov, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_standard_errors_match_the_monte_carlo_spread_of_repeated_fits():
    """R fits of independent Whittle periodograms (256 crops of 64², known parameters).

    With correct standard errors σ, (R − 1)·std²/σ² follows χ²(R − 1), so the ratio
    empirical std / σ lies in [sqrt(χ²_lo/(R − 1)), sqrt(χ²_hi/(R − 1))] with probability
    1 − 1e-3 for each of the 8 quantities (5 parameters, MTF at 3 frequencies): for R = 40,
    [0.64, 1.39]: errors too small by √2 or more, or too large by 1.6 or more, fail (a sum
    vs a mean over crops or bins is off by far more; the exact test above catches any
    mis-scaling of the information).
    The coverage of ±1.96 σ is checked too (pooled; binomial bound for R correlated
    repeats), and the mean's bias (< 4 σ/√R). Measured (seed 20261201): ratios 1.01-1.12,
    coverage 0.919, bias ≤ 0.23 σ; 12 s. Seeds 1, 2, 3: ratios 0.85-1.19, coverage
    0.89-0.95, bias ≤ 0.39 σ.
    """
    repeats, n_crops = 40, 256
    generator = torch.Generator().manual_seed(20261201)
    estimates, errors = [], []
    for _ in range(repeats):
        est, err, _ = _fit(_problem(_whittle_periodogram(n_crops, generator), n_crops))
        estimates.append(est)
        errors.append(err)
    est, err = torch.stack(estimates), torch.stack(errors)
    truth = torch.tensor(
        [WELL_DETERMINED[k] for k in NAMES] + _true_mtf(OMEGA).tolist(),
        dtype=torch.float64,
    )
    sigma = err.mean(0)
    ratio = est.std(0) / sigma
    tail = 1e-3 / 2
    lo = math.sqrt(stats.chi2.ppf(tail, repeats - 1) / (repeats - 1))
    hi = math.sqrt(stats.chi2.ppf(1 - tail, repeats - 1) / (repeats - 1))
    assert bool(((ratio > lo) & (ratio < hi)).all()), (ratio.tolist(), lo, hi)
    # coverage of ±1.96 s.e., pooled over the 8 quantities; they are strongly correlated
    # (the MTF values move together), so the bound treats them as one: Binomial(R, 0.95)
    inside = ((est - truth).abs() < 1.96 * err).double()
    coverage_lo = stats.binom.ppf(1e-4, repeats, 0.95) / repeats
    assert float(inside.mean()) >= coverage_lo
    # no bias beyond 4 standard errors of a mean of R estimates
    assert bool(((est.mean(0) - truth).abs() < 4 / math.sqrt(repeats) * sigma).all())


@pytest.mark.slow
def test_fit_errors_shrink_with_more_crops_end_to_end():
    """fit_mtf_whittle on synthetic crops: 64 vs 256 crops of 64² of the well-determined
    camera. Every standard error shrinks by √4 = 2 within 25 %, and the MTF error at
    0.25 cycles/px matches the Fisher prediction at the truth within 25 %: the errors are
    evaluated at the estimates, and vary between repeats by 4-16 % (β the most; the
    Monte-Carlo test above at 256 crops), so 25 % is about 4 of those spreads for the MTF.
    Measured: ratios 1.90-2.06, MTF error 0.00607 vs 0.00568 predicted.

    Before the fix (observed Hessian) TEM-simulator's detector at 8 → 32 crops of 128²
    gave β ± 2.2 → ± 235 px² or no covariance at all.
    """
    truth = {k: WELL_DETERMINED[k] for k in ("a", "b", "c", "alpha", "beta")}
    errors = {}
    for n_crops in (64, 256):
        crops = synthetic_background_crops(
            truth,
            n_crops=n_crops,
            crop_size_px=SIZE,
            mean_electrons_per_px=10.0,
            generator=torch.Generator().manual_seed(n_crops),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an interior optimum: no precision warning
            fit = fit_mtf_whittle(  # the spectrum alone: the Poisson skewness would add
                crops,  # information about s (MTF s.e. at 0.25 then 0.0025, not 0.0057)
                model="lorentzian",
                width_bounds_px2=(0.1, 1000.0),
                check_particles=False,
                poisson_skewness=False,
            )
        assert fit.at_bound == ()
        errors[n_crops] = fit
    se64, se256 = errors[64].standard_errors, errors[256].standard_errors
    for k in NAMES:
        assert se64[k] / se256[k] == pytest.approx(2.0, rel=0.25), k
    problem = _problem(_true_spectrum_half(), 256)
    cov, names = fisher_covariance(problem, _truth(), 1.0)
    at_truth = MTFFit(
        method="whittle",
        params={k: WELL_DETERMINED[k] for k in ("a", "b", "c", "alpha", "beta", "p", "q")},
        scale=10.0,
        covariance=cov,
        covariance_names=names,
    )
    omega = torch.tensor([0.25], dtype=torch.float64)
    predicted = float(at_truth.mtf_standard_error(omega))
    assert float(errors[256].mtf_standard_error(omega)) == pytest.approx(predicted, rel=0.25)


def test_a_fit_on_a_bound_says_so():
    """TEM-simulator's detector from 8 crops of 128² (seed 1) ends with c ≈ 5e-6: the
    observed Hessian gave β ± 3.0 px² there; the errors now come with ``at_bound``."""
    crops = synthetic_background_crops(
        dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0),
        n_crops=8,
        crop_size_px=128,
        mean_electrons_per_px=10.0,
        generator=torch.Generator().manual_seed(1),
    )
    fit = fit_mtf_whittle(crops, model="lorentzian", check_particles=False)
    assert fit.at_bound == ("c",) and fit.params["c"] < 1e-3
    assert fit.standard_errors is not None
    # and the Fisher errors are flagged, naming the parameter on the bound
    assert fit.fisher_errors_reliable is False
    assert "c on a bound" in fit.fisher_errors_note
    assert "bootstrap_standard_errors" in fit.fisher_errors_note


def test_weakly_determined_errors_are_flagged_and_well_determined_ones_are_not():
    """The flag's threshold (30 % relative error) against measured fits: TEM-simulator's
    camera from 32 crops of 128² (errors 1.6-2.8x too small, benchmark) is flagged for its
    widths; the well-determined camera from 256 crops of 64² (errors calibrated by the
    Monte Carlo above) is not."""
    weak = fit_mtf_whittle(
        synthetic_background_crops(
            dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0), n_crops=32, crop_size_px=128,
            mean_electrons_per_px=10.0, generator=torch.Generator().manual_seed(2),
        ),
        model="lorentzian", width_bounds_px2=(0.1, 1000.0), check_particles=False,
    )  # fmt: skip
    assert weak.fisher_errors_reliable is False
    assert "more than 30% of the value" in weak.fisher_errors_note
    good = _end_to_end_fit(256, seed=3)
    assert good.fisher_errors_reliable is True and good.fisher_errors_note == ""
    largest = max(good.standard_errors[k] / good.params[k] for k in ("a", "b", "alpha", "beta"))
    assert largest < 0.3  # measured 0.05-0.17 for this camera


def _end_to_end_fit(n_crops: int, seed: int, **kwargs) -> MTFFit:
    crops = synthetic_background_crops(
        {k: WELL_DETERMINED[k] for k in ("a", "b", "c", "alpha", "beta")},
        n_crops=n_crops, crop_size_px=SIZE, mean_electrons_per_px=10.0,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_mtf_whittle(
            crops, model="lorentzian", width_bounds_px2=(0.1, 1000.0), check_particles=False,
            **kwargs,
        )  # fmt: skip


def _bootstrap_interval(n: int) -> tuple[float, float]:
    """Bounds of (s.d. of n draws) / σ, χ² with n − 1 degrees of freedom, 99.9 %."""
    low = math.sqrt(stats.chi2.ppf(0.0005, n - 1) / (n - 1))
    high = math.sqrt(stats.chi2.ppf(0.9995, n - 1) / (n - 1))
    return low, high


def test_bootstrap_errors_agree_with_fisher_where_the_data_determine_the_parameters():
    """Parametric bootstrap (refits of crops simulated from the fit) of a spectrum-only
    fit: where the Fisher errors are calibrated (well-determined camera, 256 crops of 64²)
    the bootstrap standard deviation of n = 12 refits estimates the same σ: ratio within
    the χ² interval of a standard deviation from 11 degrees of freedom, 99.9 % (a wrong
    model of the noise, e.g. the gain or the transfer simulated twice, would double or
    halve it)."""
    fit = _end_to_end_fit(256, seed=4, poisson_skewness=False)
    assert fit.scale_path == "spectrum"
    n = 12
    boot = fit.bootstrap_standard_errors(n, generator=torch.Generator().manual_seed(5))
    fisher = fit.standard_errors
    low, high = _bootstrap_interval(n)
    ratios = {k: boot[k] / fisher[k] for k in NAMES}
    assert all(low <= r <= high for r in ratios.values()), (ratios, (low, high))
    assert set(boot) == {*fit.covariance_names, "MTF(0.25)"}
    mtf_error = float(fit.mtf_standard_error(torch.tensor([0.25], dtype=torch.float64)))
    assert low <= boot["MTF(0.25)"] / mtf_error <= high


def test_bootstrap_of_a_lattice_fit_keeps_every_replica_on_the_lattice():
    """The default fit takes its scale from the count lattice (0.03 % here); the bootstrap
    replicas, cut from simulated micrographs like the crops, all take that path too
    (none discarded), so the spread of s is that of lattice fits: unimodal, within the
    χ² interval of the Fisher error, every replica within 5 errors of the fit. Before,
    periodic simulated crops put the refits' spectrum scale 1.8 s.e. high on average and
    3 of 40 refits refused the lattice and fell back to it (s 18 % off: s.d. ratio ~ 100)."""
    fit = _end_to_end_fit(256, seed=4)
    assert fit.scale_path == "count lattice"
    n = 12
    replicas = fit.bootstrap_replicas(n, generator=torch.Generator().manual_seed(5))
    assert replicas.path == "count lattice"
    assert replicas.discarded == 0
    assert all(len(v) == n for v in replicas.values.values())
    fisher = fit.standard_errors
    boot = replicas.standard_errors
    low, high = _bootstrap_interval(n)
    ratios = {k: boot[k] / fisher[k] for k in NAMES}
    assert all(low <= r <= high for r in ratios.values()), (ratios, (low, high))
    deviations = [abs(s - fit.scale) / fisher["s"] for s in replicas.values["s"]]
    assert max(deviations) < 5.0, deviations
    assert fisher["s"] / fit.scale < 1e-3  # the lattice's precision, not the spectrum's


def test_bootstrap_is_reproducible_with_a_generator():
    fit = _end_to_end_fit(16, seed=6)
    first = fit.bootstrap_standard_errors(2, generator=torch.Generator().manual_seed(9))
    again = fit.bootstrap_standard_errors(2, generator=torch.Generator().manual_seed(9))
    other = fit.bootstrap_standard_errors(2, generator=torch.Generator().manual_seed(10))
    assert first == again
    assert first != other


def test_bootstrap_conditions_on_the_path_of_the_fit(monkeypatch):
    """Replicas whose refit leaves the fit's path are discarded and redrawn (counted, with
    the refit's reason); when more than n leave it the bootstrap refuses. A fit whose
    scale came from the spectrum is refitted from the spectrum alone (the simulated
    Poisson crops would show a lattice the data did not)."""
    import tem_core.mtf_fit.whittle as whittle

    fit = _end_to_end_fit(16, seed=6)
    assert fit.scale_path == "count lattice"
    real = whittle.fit_mtf_whittle
    calls: list[dict] = []

    def every_other_off_path(crops, **kwargs):
        calls.append(kwargs)
        refit = real(crops, **kwargs)
        if len(calls) % 2:
            return MTFFit(**{**refit.__dict__, "poisson": None})
        return refit

    monkeypatch.setattr(whittle, "fit_mtf_whittle", every_other_off_path)
    replicas = fit.bootstrap_replicas(3, generator=torch.Generator().manual_seed(1))
    assert (replicas.discarded, len(calls), len(replicas.values["s"])) == (3, 6, 3)
    assert len(replicas.discarded_reasons) == 3
    assert all(kwargs["poisson_skewness"] for kwargs in calls)

    def always_off_path(crops, **kwargs):
        return MTFFit(**{**real(crops, **kwargs).__dict__, "poisson": None})

    monkeypatch.setattr(whittle, "fit_mtf_whittle", always_off_path)
    with pytest.raises(RuntimeError, match=r"did not take its path"):
        fit.bootstrap_replicas(2, generator=torch.Generator().manual_seed(1))

    calls.clear()
    monkeypatch.setattr(whittle, "fit_mtf_whittle", every_other_off_path)
    refused = MTFFit(**{**fit.__dict__, "poisson": None})  # as if the lattice was refused
    assert refused.scale_path == "spectrum"
    replicas = refused.bootstrap_replicas(2, generator=torch.Generator().manual_seed(1))
    assert replicas.discarded == 0 and len(calls) == 2
    assert not any(kwargs["poisson_skewness"] for kwargs in calls)


def test_simulated_crops_are_cut_from_micrographs():
    """``cut_from_micrographs``: the crops are the quarters of periodic micrographs twice
    their size (not periodic themselves), drawn from the same generator stream."""
    fit = _end_to_end_fit(16, seed=6)
    crops = fit.simulate_background(
        (5, 32, 48), mean_counts=10.0, generator=torch.Generator().manual_seed(3),
        cut_from_micrographs=True,
    )  # fmt: skip
    micrographs = fit.simulate_background(
        (2, 64, 96), mean_counts=10.0, generator=torch.Generator().manual_seed(3)
    )
    assert crops.shape == (5, 32, 48)
    quarters = [micrographs[i, y : y + 32, x : x + 48] for i in range(2)
                for y in (0, 32) for x in (0, 48)]  # fmt: skip
    for crop, quarter in zip(crops, quarters[:5], strict=True):
        torch.testing.assert_close(crop, quarter, rtol=0, atol=0)


def test_bootstrap_input_checks():
    fit = _end_to_end_fit(16, seed=6)
    with pytest.raises(ValueError, match=r"n must be an integer >= 2, got 1"):
        fit.bootstrap_standard_errors(1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"n must be an integer >= 2, got 2\.5"):
        fit.bootstrap_replicas(2.5, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"n must be an integer >= 2, got True"):
        fit.bootstrap_standard_errors(True, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator, got int"):
        fit.bootstrap_standard_errors(4, generator=0)
    with pytest.raises(ValueError, match=r"needs a Whittle fit"):
        MTFFit(method="ffl", params=dict(fit.params)).bootstrap_standard_errors(
            4, generator=torch.Generator()
        )
    with pytest.raises(ValueError, match=r"scale_path needs a Whittle fit"):
        _ = MTFFit(method="ffl", params=dict(fit.params)).scale_path
