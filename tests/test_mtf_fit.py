"""MTF estimation: focal frequency loss, Whittle fit, published FFL fit, background crops."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from tem_core.detector import (
    apply_mtf,
    mtf_parametric,
    radial_frequency_cycles_per_px,
    sample_counts,
)
from tem_core.mtf_fit import (
    MTFFit,
    MTFNotIdentifiableError,
    averaged_periodogram,
    detect_particles_in_crops,
    find_background_crops,
    fit_mtf_edge,
    fit_mtf_ffl,
    fit_mtf_whittle,
    focal_frequency_loss,
    knife_edge_image,
    mtf_from_spec,
    mtf_relative_rms_error,
    normalise_min_max,
    radial_profile,
    simulate_flat_background,
    synthetic_background_crops,
)
from tem_core.mtf_fit.poisson import poisson_scale, ring_smoothed

# TEM-simulator's example detector: MTF 0.8285 / 0.5879 / 0.3182 at 0.125 / 0.25 / 0.5 cycles/px
TRUTH = dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0)


def _blurred_noise(shape, *, mean=25.0, truth=TRUTH, seed=0):
    mtf = mtf_parametric(radial_frequency_cycles_per_px(shape[-2:], dtype=torch.float64), **truth)
    return simulate_flat_background(
        shape, mean_electrons_per_px=mean, mtf=mtf, generator=torch.Generator().manual_seed(seed)
    )


def _crops_from_micrograph(n_crops, size, *, big=512, seed=0):
    """Crops cut from larger periodic micrographs: not periodic themselves, like real crops."""
    return synthetic_background_crops(
        TRUTH,
        n_crops=n_crops,
        crop_size_px=size,
        mean_electrons_per_px=25.0,
        generator=torch.Generator().manual_seed(seed),
        micrograph_size_px=big,
    )


# --- focal frequency loss ----------------------------------------------------------------------


def _ffl_by_hand(pred, target, alpha):
    """Jiang et al. 2021, written out with numpy for one (H, W) image."""
    d = np.fft.fft2(pred, norm="ortho") - np.fft.fft2(target, norm="ortho")
    dist = np.abs(d) ** 2
    w = np.sqrt(dist) ** alpha
    w = w / w.max()
    return float(np.mean(w * dist))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_ffl_matches_hand_computed_values(alpha):
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(3, 8, 10, generator=g, dtype=torch.float64)
    target = torch.rand(3, 8, 10, generator=g, dtype=torch.float64)
    pairs = zip(pred.numpy(), target.numpy(), strict=True)
    expected = np.mean([_ffl_by_hand(p, t, alpha) for p, t in pairs])
    got = focal_frequency_loss(pred, target, alpha=alpha)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_ffl_alpha_zero_is_mse_by_parseval():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.rand(2, 2, 16, 16, generator=g, dtype=torch.float64)
    assert float(focal_frequency_loss(pred, target, alpha=0.0)) == pytest.approx(
        float(torch.mean((pred - target) ** 2)), rel=1e-12
    )
    assert float(focal_frequency_loss(pred, pred.clone())) == 0.0  # NaN weights -> 0


# Parity with the focal-frequency-loss package: tests/test_peer_parity.py (stored arrays).


def test_ffl_rejects_bad_input():
    x = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="same shape"):
        focal_frequency_loss(x, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        focal_frequency_loss(x, x, alpha=-1.0)


def test_normalise_min_max_range():
    x = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0))
    y = normalise_min_max(x)
    assert torch.allclose(y.amin(dim=(-2, -1)), torch.zeros(3))
    assert torch.allclose(y.amax(dim=(-2, -1)), torch.ones(3))


# --- Whittle fit -------------------------------------------------------------------------------


def test_periodogram_of_blurred_noise_is_mean_times_mtf_squared():
    """Poisson noise (variance = mean) blurred by the MTF has NPS mean · MTF²."""
    x = _blurred_noise((8, 128, 128), mean=25.0)
    _, nps = radial_profile(averaged_periodogram(x, taper=None), n_bins=8)
    model = 25.0 * mtf_parametric(radial_frequency_cycles_per_px((128, 128)), **TRUTH) ** 2
    _, expected = radial_profile(model.double(), n_bins=8)  # ring means of the model
    assert torch.allclose(nps, expected, rtol=0.04)


def test_whittle_recovers_known_mtf():
    crops = _crops_from_micrograph(8, 128)
    fit = fit_mtf_whittle(crops, generator=torch.Generator().manual_seed(0), n_restarts=3)
    omega = torch.tensor([0.125, 0.25, 0.5], dtype=torch.float64)
    true = mtf_parametric(omega, **TRUTH)
    # 5% at 0.25 / 0.5 / 1.0 Nyquist from 8 crops of 128² (typical error ~1%)
    assert torch.allclose(fit.mtf(omega), true, rtol=0.05)
    assert mtf_relative_rms_error(fit, TRUTH) < 0.05
    assert fit.params["a"] + fit.params["b"] + fit.params["c"] == pytest.approx(1.0)
    assert fit.params["alpha"] <= fit.params["beta"]
    # the standard errors are calibrated (tests/test_mtf_standard_errors.py): the errors
    # must lie within 3 s.e. (measured 0.60, 0.24, 0.27 s.e.; s.e. 0.012, 0.010, 0.005)
    se = fit.mtf_standard_error(omega)
    assert bool(torch.all((fit.mtf(omega) - true).abs() < 3 * se))
    assert bool(torch.all(se < 0.02))  # 8 crops of 128² pin the MTF to ~1 %
    # gain = s / mean: measured 1.007, s.e. of s 3.0 %
    gain_se = fit.standard_errors["s"] / fit.scale
    assert abs(fit.gain_counts_per_e(float(crops.mean())) - 1.0) < 3 * gain_se
    assert fit.final_loss == pytest.approx(min(fit.loss_history), abs=1e-6)


def test_whittle_flags_white_noise_as_not_identifiable():
    """White noise: flagged, no MTF; the noise transfer is flat and the scale gives the gain."""
    g = torch.Generator().manual_seed(5)
    crops = 7.0 * sample_counts(torch.full((4, 64, 64), 40.0, dtype=torch.float64), generator=g)
    with pytest.warns(UserWarning, match="MTF not identifiable from noise: the noise power"):
        fit = fit_mtf_whittle(crops)
    assert not fit.identifiable and fit.model.chosen == "white"
    assert "white within its statistical error" in fit.diagnosis
    with pytest.raises(MTFNotIdentifiableError, match="MTF not identifiable from noise"):
        fit.mtf(torch.tensor([0.25]))
    omega = torch.linspace(0.05, 0.5, 10, dtype=torch.float64)
    assert torch.allclose(fit.noise_transfer(omega), torch.ones_like(omega))
    # 4 x 64² Poisson pixels: the scale's relative standard error is 1/sqrt(8000) ≈ 1.1%
    assert fit.gain_counts_per_e(float(crops.mean())) == pytest.approx(7.0, rel=0.04)


def test_counting_camera_crops_are_flagged():
    """Counting camera (K2 MTF on the signal, white noise): not an MTF of 1 but a flag."""
    crops = synthetic_background_crops(
        "k2_300kv",
        n_crops=4,
        crop_size_px=128,
        mean_electrons_per_px=40.0,
        generator=torch.Generator().manual_seed(2),
        gain_counts_per_e=101.0,
        counting=True,
    )
    with pytest.warns(UserWarning, match="MTF not identifiable from noise"):
        fit = fit_mtf_whittle(crops)
    assert not fit.identifiable
    assert fit.gain_counts_per_e(float(crops.mean())) == pytest.approx(101.0, rel=0.04)


def test_real_k2_micrograph_is_flagged(data_dir):
    """The real K2 counting micrograph: the default workflow says the MTF is not identifiable.

    Its noise is not white (the specimen adds low-frequency power, and the spectrum falls
    by ~10% towards Nyquist), but the fitted noise transfer at Nyquist (0.75 with every
    frequency used, 0.97 above 0.08 cycles/px) is above the pixel-aperture bound 2/π that
    limits any pixelated detector's signal MTF.
    """
    from tem_core.io import read_mrc

    image, _ = read_mrc(data_dir / "fei-extended_crop2048.mrc")
    micrograph = torch.from_numpy(np.asarray(image, dtype=np.float64))
    found = find_background_crops(micrograph, crop_size=256, n_max=8)
    with pytest.warns(UserWarning, match="MTF not identifiable from noise: the noise transfer"):
        fit = fit_mtf_whittle(found.crops, detrend="plane")
    assert not fit.identifiable and "counting camera" in fit.diagnosis
    assert float(fit.noise_transfer(torch.tensor([0.5], dtype=torch.float64))) > 2 / math.pi
    # counting camera: the gain from the white-noise level, not from the model's scale
    # (pulled up by specimen power and the ice ring); 256 tiles of 128² measured 104.9
    gain = fit.gain_counts_per_e(float(found.crops.mean()))
    assert gain == pytest.approx(104.9, rel=0.02)
    assert fit.scale / float(found.crops.mean()) > 1.2 * gain
    # summed, gain-normalised counting frames are not Poisson counts: said, and not used
    assert fit.poisson is None and "not Poisson-like" in fit.model.reason


def test_model_choice_is_deterministic_and_explained():
    crops = _crops_from_micrograph(8, 128)
    first = fit_mtf_whittle(crops)
    second = fit_mtf_whittle(crops)
    assert first.params == second.params  # a fixed grid of starts, no random generator
    assert first.model.chosen == "lorentzian"  # the truth has p = q = 1
    # the NPS scale is pinned by the Poisson count lattice as well (N = 25 e/px simulated)
    assert "combined with the Poisson count lattice" in first.model.reason
    assert first.poisson.electrons_per_px == pytest.approx(25.0, rel=3 * first.poisson.relative_se)
    assert "smallest AIC" in first.model.reason
    assert first.model.nll["white"] > first.model.nll["lorentzian"]
    assert first.model.p_values["shaped vs lorentzian"] > 1e-3


def test_shape_exponents_are_chosen_when_the_data_need_them():
    """A Falcon 3EC table (300 kV) cannot be followed with p = q = 1: a richer model wins."""
    crops = synthetic_background_crops(
        "falcon3ec_300kv",
        n_crops=8,
        crop_size_px=256,
        mean_electrons_per_px=40.0,
        generator=torch.Generator().manual_seed(3),
        micrograph_size_px=512,
        gain_counts_per_e=50.0,
    )
    fit = fit_mtf_whittle(crops)
    assert fit.model.chosen in ("shaped", "spline")
    assert fit.model.aic[fit.model.chosen] < fit.model.aic["lorentzian"] - 100


def test_knife_edge_recovers_known_mtf():
    """Slanted edge, counting camera (MTF on the signal only), 2000 e/px (a calibration dose)."""
    img = knife_edge_image(
        (512, 512),
        mtf=TRUTH,
        angle_deg=4.0,
        mean_electrons_per_px=2000.0,
        generator=torch.Generator().manual_seed(1),
    )
    edge = fit_mtf_edge(img)
    assert edge.angle_deg == pytest.approx(4.0, abs=0.05)
    omega = torch.tensor([0.125, 0.25, 0.375, 0.45], dtype=torch.float64)
    truth = mtf_from_spec(TRUTH, omega)
    # measured: within 3% at these frequencies (jackknife s.e. ~0.5-1%)
    assert torch.allclose(edge.mtf(omega), truth, rtol=0.05)
    with pytest.raises(ValueError, match="tilted by"):
        fit_mtf_edge(
            knife_edge_image(
                (256, 256),
                mtf=TRUTH,
                angle_deg=0.0,
                mean_electrons_per_px=100.0,
                generator=torch.Generator().manual_seed(0),
            )
        )


def test_simulated_background_reproduces_fitted_spectrum():
    fit = MTFFit(method="whittle", params={**TRUTH, "p": 1.0, "q": 1.0}, scale=5.0 * 100.0)
    g = torch.Generator().manual_seed(7)
    sim = fit.simulate_background((16, 64, 64), mean_counts=100.0, generator=g)
    assert float(sim.mean()) == pytest.approx(100.0, rel=0.02)
    _, nps = radial_profile(averaged_periodogram(sim, taper=None), n_bins=6)
    _, model = radial_profile(
        fit.noise_power(radial_frequency_cycles_per_px((64, 64))).double(), n_bins=6
    )
    assert torch.allclose(nps, model, rtol=0.1)  # first ring: ~350 bins, 5% s.d.


# --- published FFL fit -------------------------------------------------------------------------


def test_ffl_fit_runs_and_reduces_its_loss():
    """Released-notebook variant (FFL alone on counts, gain fitted): the loss falls."""
    crops = _blurred_noise((2, 64, 64), mean=25.0)
    fit = fit_mtf_ffl(
        crops,
        generator=torch.Generator().manual_seed(0),
        n_steps=40,
        normalise=False,
        mse_weight=0.0,
        betas=(0.9, 0.999),
    )
    history = np.array(fit.loss_history)
    assert len(history) == 40 and np.isfinite(history).all()
    assert history[-5:].mean() < history[:5].mean()
    assert fit.method == "ffl" and fit.scale is not None
    assert sum(fit.params[k] for k in "abc") == pytest.approx(1.0)


def test_ffl_fit_default_runs():
    crops = _blurred_noise((2, 32, 32), mean=25.0)
    fit = fit_mtf_ffl(
        crops,
        generator=torch.Generator().manual_seed(1),
        n_steps=5,
        init={"alpha": 10.0, "beta": 40.0},
    )
    assert len(fit.loss_history) == 5 and all(math.isfinite(v) for v in fit.loss_history)
    assert math.isfinite(mtf_relative_rms_error(fit, TRUTH))


def test_ffl_loss_gradient_wrt_mtf_params_is_finite():
    crops = normalise_min_max(_blurred_noise((2, 32, 32)))
    omega = radial_frequency_cycles_per_px((32, 32), dtype=torch.float64)
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in TRUTH.items()}
    g = torch.Generator().manual_seed(4)
    counts = sample_counts(torch.full((2, 32, 32), 25.0, dtype=torch.float64), generator=g)
    pred = normalise_min_max(apply_mtf(counts, mtf_parametric(omega, **params)))
    loss = torch.mean((pred - crops) ** 2) + focal_frequency_loss(pred, crops, alpha=1.0)
    loss.backward()
    grads = torch.stack([p.grad for p in params.values()])
    assert bool(torch.isfinite(grads).all()) and bool((grads != 0).any())


# --- background crops --------------------------------------------------------------------------


def _micrograph_with_blobs(seed=0):
    size, mean = 512, 50.0
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = [(100, 100, 0.4), (300, 420, -0.3), (430, 150, 0.5)]  # (row, col, contrast)
    expected = torch.full((size, size), mean, dtype=torch.float64)
    for r, c, contrast in centres:
        r2 = (yy - r) ** 2 + (xx - c) ** 2
        expected = expected + mean * contrast * torch.exp(-r2 / (2 * 15.0**2))
    g = torch.Generator().manual_seed(seed)
    counts = sample_counts(expected, generator=g)
    mtf = mtf_parametric(radial_frequency_cycles_per_px((size, size), dtype=torch.float64), **TRUTH)
    return apply_mtf(counts, mtf), centres


def test_crop_finder_rejects_blob_tiles():
    image, centres = _micrograph_with_blobs()
    found = find_background_crops(image, crop_size=64)
    assert 30 <= len(found) <= 64
    for r0, c0 in found.origins_px.tolist():
        for r, c, _ in centres:  # no accepted tile reaches within 1.5σ of a blob centre
            dr = max(r0 - r, 0, r - (r0 + 63))
            dc = max(c0 - c, 0, c - (c0 + 63))
            assert math.hypot(dr, dc) > 22.5, f"tile {(r0, c0)} overlaps blob {(r, c)}"
    assert found.crops.shape[1:] == (64, 64)
    assert bool(torch.all(found.scores[:-1] <= found.scores[1:]))
    few = find_background_crops(image.numpy(), crop_size=64, n_max=5)
    assert len(few) == 5


def test_detect_particles_warns_on_blob_crops():
    image, _ = _micrograph_with_blobs()
    blob = image[68:132, 68:132]  # centred on the first blob
    flat = image[200:264, 200:264]
    with pytest.warns(UserWarning, match="appear to contain particles"):
        flags = detect_particles_in_crops(torch.stack([flat, blob]))
    assert flags.tolist() == [False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not bool(detect_particles_in_crops(_blurred_noise((4, 64, 64))).any())
    with pytest.warns(UserWarning, match="appear to contain particles"):
        fit_mtf_whittle(
            torch.stack([flat, blob]),
            generator=torch.Generator(),
            n_restarts=1,
            max_iter=5,
            debias_iterations=0,
        )


def test_constant_crops_raise_naming_the_cause():
    g = torch.Generator()
    with pytest.raises(ValueError, match="crops must hold noise, but 2 of 2 crops are constant"):
        fit_mtf_whittle(torch.full((2, 64, 64), 100.0))
    with pytest.raises(ValueError, match="crops are constant"):
        fit_mtf_ffl(torch.full((2, 32, 32), 5.0), generator=g, n_steps=2)


def test_one_tiny_crop_warns_that_the_mtf_is_poorly_determined():
    crops = _crops_from_micrograph(1, 16, big=64)
    with pytest.warns(UserWarning, match="MTF poorly determined by 1 crop"):
        fit_mtf_whittle(crops)


def test_bad_inputs_raise():
    g = torch.Generator()
    with pytest.raises(ValueError, match="finite"):
        fit_mtf_whittle(torch.full((1, 32, 32), float("nan")), generator=g)
    with pytest.raises(ValueError, match="model must be 'auto' or one of"):
        fit_mtf_whittle(_blurred_noise((1, 32, 32)), model="gaussian")
    with pytest.raises(ValueError, match="random starts need a generator"):
        fit_mtf_whittle(_blurred_noise((1, 32, 32)), n_restarts=2)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        fit_mtf_whittle(torch.ones(2, 8, 8), generator=g)
    with pytest.raises(ValueError, match=r"shape \(M, N\) or \(B, M, N\)"):
        fit_mtf_ffl(torch.ones(2, 2, 32, 32), generator=g)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        fit_mtf_whittle(_blurred_noise((1, 32, 32)), generator="seed")
    with pytest.raises(ValueError, match="ffl_weight and mse_weight are both 0"):
        fit_mtf_ffl(torch.ones(32, 32), generator=g, ffl_weight=0.0, mse_weight=0.0)
    with pytest.raises(ValueError, match="only 1 tiles"):
        find_background_crops(torch.ones(100, 100), crop_size=64)
    with pytest.raises(ValueError, match="crop_size must be >= 16"):
        find_background_crops(torch.ones(100, 100), crop_size=8)
    with pytest.raises(ValueError, match="found only"):
        image, _ = _micrograph_with_blobs()
        find_background_crops(image, crop_size=64, min_crops=100)
    with pytest.raises(ValueError, match="micrograph must be finite"):
        find_background_crops(torch.full((64, 64), float("inf")), crop_size=16)
    with pytest.raises(ValueError, match="init has unknown parameter"):
        fit_mtf_ffl(_blurred_noise((1, 32, 32)), generator=g, n_steps=1, init={"gamma": 1.0})


def test_synthetic_background_crops_statistics_and_errors() -> None:
    crops = synthetic_background_crops(
        TRUTH,
        n_crops=5,
        crop_size_px=64,
        mean_electrons_per_px=25.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert crops.shape == (5, 64, 64)
    assert abs(float(crops.mean()) - 25.0) < 0.2  # the MTF keeps the mean (MTF(0) = 1)
    # blurred Poisson noise on the periodic 128² micrographs: variance = mean · Σ PSF²
    # = mean · ⟨MTF²⟩ over the grid (Parseval) = 5.86 here. Measured over 40 seeds: ratio
    # 1.001 ± 0.013 (min 0.973, max 1.022), so 5 % is about four standard deviations.
    omega = radial_frequency_cycles_per_px((128, 128), dtype=torch.float64)
    expected_var = 25.0 * float((mtf_parametric(omega, **TRUTH) ** 2).mean())
    assert float(crops.var()) == pytest.approx(expected_var, rel=0.05)
    with pytest.raises(ValueError, match="micrograph_size_px must be a multiple"):
        synthetic_background_crops(
            TRUTH,
            n_crops=1,
            crop_size_px=64,
            mean_electrons_per_px=25.0,
            generator=torch.Generator(),
            micrograph_size_px=100,
        )


# --- the NPS scale: Poisson skewness -------------------------------------------------------------


def _table_crops(camera, seed, *, n_crops=16, size=256, dose=40.0, gain=50.0):
    return synthetic_background_crops(
        camera,
        n_crops=n_crops,
        crop_size_px=size,
        mean_electrons_per_px=dose,
        generator=torch.Generator().manual_seed(seed),
        micrograph_size_px=4 * size,
        gain_counts_per_e=gain,
    )


def _skewness_scale(crops):
    spectrum = ring_smoothed(averaged_periodogram(crops, taper=None))
    return poisson_scale(crops, spectrum, count_lattice=False)  # the skewness alone


def test_poisson_skewness_does_not_depend_on_the_mtf():
    """The same electrons blurred by two very different tables: the same N after whitening."""
    sharp = _skewness_scale(_table_crops("falcon4ec_300kv", 3))
    blurred = _skewness_scale(_table_crops("falcon2_300kv", 3))  # MTF 0.05 at Nyquist
    assert not sharp.problem and not blurred.problem
    # measured 1.5% apart (half a standard error: the borders and the measured whitening
    # filters differ), where the MTFs differ 3-fold at Nyquist
    assert blurred.electrons_per_px == pytest.approx(sharp.electrons_per_px, rel=sharp.relative_se)
    for measured in (sharp, blurred):
        assert measured.gain_counts_per_e == pytest.approx(50.0, rel=3 * measured.relative_se)
        # 16 x 256² pixels less the border at 40 e/px: 2·sqrt(6/n)/skew ≈ 3.2%
        predicted = 2 * math.sqrt(6 / measured.n_pixels) * math.sqrt(40.0)
        assert measured.relative_se == pytest.approx(predicted, rel=0.1)


def test_poisson_skewness_refuses_gaussian_and_heavy_tailed_noise():
    g = torch.Generator().manual_seed(4)
    gaussian = 100.0 + 5.0 * torch.randn(8, 128, 128, generator=g, dtype=torch.float64)
    measured = _skewness_scale(gaussian)
    assert measured is None or "not skewed" in measured.problem
    counts = sample_counts(torch.full((8, 128, 128), 40.0, dtype=torch.float64), generator=g)
    hot = torch.rand(counts.shape, generator=g, dtype=torch.float64) < 1e-3
    measured = _skewness_scale(counts + 200.0 * hot)  # hot pixels: heavy tails
    assert "not Poisson-like" in measured.problem


def test_falcon2_table_gain_and_mtf_within_targets():
    """Issue 11 (2): the Falcon 2 table, whose MTF falls 9% by 0.025 cycles/px, was 7.5% off
    with its gain 13% low when the scale came from the spectrum alone."""
    crops = _table_crops("falcon2_300kv", 107)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no warning on clean Poisson crops
        fit = fit_mtf_whittle(crops)
    omega = torch.tensor([0.25, 0.375, 0.45], dtype=torch.float64)
    error = fit.mtf(omega) / mtf_from_spec("falcon2_300kv", omega) - 1
    assert float(error.abs().max()) < 0.05  # measured 0.3%
    gain = fit.gain_counts_per_e(float(crops.mean()))
    se = fit.standard_errors["s"] / fit.scale  # the count lattice: 0.016%
    assert se < 1e-3
    assert gain == pytest.approx(50.0, rel=3 * se)  # measured +0.005%
    assert fit.poisson is not None and "Poisson count lattice" in fit.model.reason
    alone = fit_mtf_whittle(crops, poisson_skewness=False)
    assert fit.poisson is not None and alone.poisson is None


def test_random_charge_per_electron_is_not_taken_for_poisson():
    """A compound-Poisson camera (1 or 20 counts per electron): the skewness implies twice
    the gain of the spectrum's scale; the fit warns and does not use it."""
    g = torch.Generator().manual_seed(6)
    shape = (1, 1024, 1024)
    small = sample_counts(torch.full(shape, 36.0, dtype=torch.float64), generator=g)
    large = sample_counts(torch.full(shape, 4.0, dtype=torch.float64), generator=g)
    mtf = mtf_parametric(radial_frequency_cycles_per_px((1024, 1024), dtype=torch.float64), **TRUTH)
    image = apply_mtf(small + 20.0 * large, mtf)
    crops = image.reshape(4, 256, 4, 256).permute(0, 2, 1, 3).reshape(16, 256, 256)
    with pytest.warns(UserWarning, match="not Poisson with a fixed gain per electron"):
        fit = fit_mtf_whittle(crops)
    assert fit.poisson is None and "Poisson skewness not used" in fit.model.reason
    # the spectrum's own gain: E[G²]/E[G] = 40.9/2.9 = 14.1 counts/e
    assert fit.gain_counts_per_e(float(crops.mean())) == pytest.approx(40.9 / 2.9, rel=0.15)
