"""Denoising: metrics, the detector-model denoiser, the published surrogate method and its
variants, registration, neighbour references and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from tem_core.denoise import (
    NLMSettings,
    PoissonSettings,
    SurrogateSettings,
    WienerSettings,
    anscombe,
    denoise_poisson,
    denoise_surrogate,
    estimate_noise_std,
    estimate_rotation,
    estimate_shift,
    gaussian_filter,
    inverse_anscombe,
    local_wiener,
    mean_of_projections,
    neighbour_references,
    nlm_denoise,
    recover_electrons,
    register,
    tv_denoise,
    tv_sure,
    warp,
)
from tem_core.denoise.metrics import (
    focal_frequency_loss,
    fourier_ring_correlation,
    mse,
    normalise_minmax,
    psnr,
    ssim,
)
from tem_core.denoise.surrogate import _step_loss
from tem_core.detector import Detector, detect

DET = Detector(dqe=1.0, gain_counts_per_e=10.0)  # TEM-simulator's default MTF


def blobs(n: int = 64, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A test image: 1 + Gaussian blobs of ±30 % contrast (≥ 0.2)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=dtype), torch.arange(n, dtype=dtype), indexing="ij"
    )
    image = torch.ones(n, n, dtype=dtype)
    for _ in range(12):
        y, x = (torch.rand(2, generator=g, dtype=dtype) * (n - 24) + 12).tolist()
        s = float(torch.rand(1, generator=g, dtype=dtype)) * 3 + 1.5
        sign = 1.0 if float(torch.rand(1, generator=g)) > 0.5 else -1.0
        image = image + sign * 0.3 * torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s**2))
    return image.clamp_min(0.2)


# --- metrics ---------------------------------------------------------------------------------


def test_psnr_of_a_constant_error():
    t = torch.zeros(8, 8, dtype=torch.float64)
    assert float(psnr(t + 0.1, t, data_range=1.0)) == pytest.approx(20.0, abs=1e-12)
    assert float(mse(t + 0.1, t)) == pytest.approx(0.01, abs=1e-15)


def test_ssim_identity_and_range_dependence():
    x = normalise_minmax(blobs(32))
    assert float(ssim(x, x, data_range=1.0)) == pytest.approx(1.0, abs=1e-12)
    noisy = x + 0.1 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype
    )
    s1 = float(ssim(noisy, x, data_range=1.0))
    assert 0 < s1 < 1
    # a larger data range raises the stabilising constants, hence the score
    assert float(ssim(noisy, x, data_range=10.0)) > s1
    # constant images p, q: no variance, so SSIM = luminance term (2pq + C1)/(p² + q² + C1)
    p, q = torch.full((24, 24), 0.3, dtype=torch.float64), torch.full((24, 24), 0.5)
    c1 = (0.01 * 2.0) ** 2
    expected = (2 * 0.3 * 0.5 + c1) / (0.3**2 + 0.5**2 + c1)
    assert float(ssim(p, q.double(), data_range=2.0)) == pytest.approx(expected, rel=1e-12)


def test_focal_frequency_loss_and_frc_invariants():
    x = blobs(32)
    assert float(focal_frequency_loss(x, x)) == 0.0
    f, c = fourier_ring_correlation(x, 2 * x + 3, n_rings=8)
    assert torch.allclose(c, torch.ones_like(c), atol=1e-12)
    assert f[0] == pytest.approx(0.5 / 16) and f[-1] == pytest.approx(0.5 - 0.5 / 16)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(128, 128, generator=g, dtype=torch.float64) for _ in range(2))
    _, c = fourier_ring_correlation(a, b, n_rings=16)
    # independent white noise: |FRC| ~ 1/√(pixels per ring) ≥ 1/√(≈ 50 in the first ring)
    assert float(c.abs().max()) < 4 / math.sqrt(50)


def test_focal_frequency_loss_matches_its_definition():
    g = torch.Generator().manual_seed(3)
    a, b = (torch.rand(1, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    d = torch.fft.fft2(a, norm="ortho") - torch.fft.fft2(b, norm="ortho")
    w = d.abs() / d.abs().max()
    assert float(focal_frequency_loss(a, b)) == pytest.approx(
        float((w * d.abs() ** 2).mean()), rel=1e-12
    )


# --- the detector-model denoiser -------------------------------------------------------------


def test_recover_electrons_returns_the_integer_counts():
    image = blobs(32)
    g = torch.Generator().manual_seed(5)
    counts = detect(
        image.expand(3, -1, -1), detector=DET, dose_e_per_a2=0.5, sampling_a=5.0, generator=g
    )
    electrons = recover_electrons(counts, detector=DET)
    assert torch.allclose(electrons, torch.round(electrons), atol=1e-9)
    assert float(electrons.min()) > -1e-9


def test_inverse_anscombe_is_unbiased():
    # E[anscombe(k)] over the Poisson pmf, mapped back, gives λ (Mäkitalo & Foi 2011)
    k = torch.arange(0, 400, dtype=torch.float64)
    for lam in (3.0, 10.0, 50.0):
        pmf = torch.exp(k * math.log(lam) - lam - torch.lgamma(k + 1))
        back = float(inverse_anscombe((pmf * anscombe(k)).sum()))
        # the closed form's error is below 0.02 counts from λ = 3 on (measured 0.006)
        assert back == pytest.approx(lam, abs=0.02)


def test_denoise_poisson_beats_the_mean():
    image = blobs(64)
    truth = detect(image, detector=DET, dose_e_per_a2=0.2, sampling_a=5.0)
    g = torch.Generator().manual_seed(2)
    noisy = detect(
        image.expand(4, -1, -1), detector=DET, dose_e_per_a2=0.2, sampling_a=5.0, generator=g
    )
    span = float(truth.max() - truth.min())
    mean = mean_of_projections(noisy)
    result = denoise_poisson(noisy, detector=DET, dose_e_per_a2=0.2, sampling_a=5.0)
    gain = float(psnr(result.denoised, truth, data_range=span) - psnr(mean, truth, data_range=span))
    assert gain > 3.0  # measured 5.6 dB
    assert result.intensity is not None
    assert float((result.intensity - image).abs().mean()) < 0.05


def test_local_wiener_removes_white_noise_and_keeps_flat_images():
    x = blobs(64) * 5.0
    noisy = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    out = local_wiener(noisy)
    # unit noise: MSE 0.97 before, 0.022 after (measured); a factor 10 at least
    assert float(mse(out, x)) < 0.1 * float(mse(noisy, x))
    # noise alone is removed (output std measured 0.037 for unit noise), the level kept
    pure = 3.0 + torch.randn(96, 96, generator=torch.Generator().manual_seed(2))
    flat = local_wiener(pure.double())
    assert float(flat.std()) < 0.1 and float(flat.mean()) == pytest.approx(3.0, abs=0.05)
    # a constant image is a fixed point (all its patch spectra are zero but the mean)
    c = torch.full((40, 50), 2.5, dtype=torch.float64)
    assert torch.equal(local_wiener(c), c)
    # batched = one by one; scale equivariant with the noise variance; dtype kept
    both = local_wiener(torch.stack([noisy, 0.5 * noisy]))
    assert torch.allclose(both[0], out, atol=1e-12)
    assert torch.allclose(both[1], local_wiener(0.5 * noisy), atol=1e-12)
    assert torch.allclose(local_wiener(3.0 * noisy, noise_var=9.0) / 3.0, out, atol=1e-12)
    assert local_wiener(noisy.float()).dtype == torch.float32


def test_denoise_poisson_wiener_beats_the_mean_and_tv():
    image = blobs(64)
    truth = detect(image, detector=DET, dose_e_per_a2=0.2, sampling_a=5.0)
    g = torch.Generator().manual_seed(2)
    noisy = detect(
        image.expand(4, -1, -1), detector=DET, dose_e_per_a2=0.2, sampling_a=5.0, generator=g
    )
    span = float(truth.max() - truth.min())

    def score(x):
        return float(psnr(x, truth, data_range=span))

    wiener = denoise_poisson(noisy, detector=DET, settings=PoissonSettings(regulariser="wiener"))
    tv = denoise_poisson(noisy, detector=DET)
    # measured: 11.3 dB over the mean, 1.05 dB over TV
    assert score(wiener.denoised) - score(mean_of_projections(noisy)) > 8.0
    assert score(wiener.denoised) > score(tv.denoised) + 0.5


def test_particle_windows_sit_on_the_known_positions():
    from tem_core.denoise.scene import TMV_PARTICLES, particle_windows

    mask = particle_windows((128, 320), origin_px=(146, 40))
    assert int(mask.sum()) == 3 * 48**2  # three disjoint 48² windows inside the strip
    # the segments at x = −50, 0, 50 nm, y = 5 nm: pixels 200 + 2·(x, y) − origin
    for x_nm, y_nm, *_ in TMV_PARTICLES:
        r, c = int(200 + 2 * y_nm - 146), int(200 + 2 * x_nm - 40)
        assert mask[r - 24 : r + 24, c - 24 : c + 24].all()
        assert not mask[r - 25, c] and not mask[r, c + 24]
    with pytest.raises(ValueError, match="half_width_px must be"):
        particle_windows((8, 8), half_width_px=0)


def test_gaussian_filter_preserves_the_mean_and_nlm_removes_noise():
    x = blobs(48)
    assert float(gaussian_filter(x, sigma_px=2.0).mean()) == pytest.approx(float(x.mean()))
    g = torch.Generator().manual_seed(4)
    noisy = x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    assert float(estimate_noise_std(noisy)) == pytest.approx(0.05, rel=0.1)
    den = nlm_denoise(noisy, sigma=0.05, settings=NLMSettings(search_radius_px=4))
    assert float(mse(den, x)) < 0.4 * float(mse(noisy, x))  # measured 0.31


def test_tv_denoise_solves_rof_and_sure_picks_a_sensible_weight():
    # a disc on a flat background: ROF keeps a constant image and flattens noise
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = torch.where((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2, 3.0, 0.0).double()
    assert torch.allclose(
        tv_denoise(torch.full((8, 8), 2.0, dtype=torch.float64), weight=1.0),
        torch.full((8, 8), 2.0, dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(0)
    noisy = disc + torch.randn(disc.shape, generator=g, dtype=disc.dtype)
    u = tv_denoise(noisy, weight=1.0, n_iterations=300)

    # optimality: the ROF objective is not lowered by small perturbations of u
    def rof(v):
        gy, gx = v[1:, :-1] - v[:-1, :-1], v[:-1, 1:] - v[:-1, :-1]
        tv = (
            torch.sqrt(gy**2 + gx**2).sum()
            + (v[-1, 1:] - v[-1, :-1]).abs().sum()
            + (v[1:, -1] - v[:-1, -1]).abs().sum()
        )
        return float(0.5 * ((v - noisy) ** 2).sum() + tv)

    base = rof(u)
    for _ in range(5):
        d = torch.randn(u.shape, generator=g, dtype=u.dtype) * 0.01
        assert rof(u + d) > base - 1e-3 and rof(u - d) > base - 1e-3
    chosen, weight = tv_sure(
        noisy,
        weights=(16.0, 4.0, 1.0, 0.25),
        n_iterations=100,
        generator=torch.Generator().manual_seed(1),
    )
    assert weight in (4.0, 1.0)  # not the flattening nor the barely smoothing extreme
    assert float(mse(chosen, disc)) < 0.2 * float(mse(noisy, disc))
    # pure noise: SURE prefers a (nearly) constant image to a weakly smoothed one
    flat_noise = torch.randn(64, 64, generator=g, dtype=torch.float64) + 5.0
    chosen, weight = tv_sure(
        flat_noise,
        weights=(math.inf, 4.0, 1.0),
        n_iterations=100,
        generator=torch.Generator().manual_seed(2),
    )
    assert weight in (math.inf, 4.0) and float(chosen.std()) < 0.05  # (nearly) constant
    chosen, weight = tv_sure(
        flat_noise,
        weights=(math.inf, 1.0),
        n_iterations=100,
        generator=torch.Generator().manual_seed(2),
    )
    assert weight == math.inf and torch.all(chosen == flat_noise.mean())


# --- the published method and its variants ---------------------------------------------------


def _exact_gradient(lam: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """∇λ E[mean (ref − norm(k))²] for a 2 × 2 Poisson image, by enumeration."""
    ks = torch.arange(16, dtype=torch.float64)
    k = torch.cartesian_prod(ks, ks, ks, ks).reshape(-1, 2, 2)
    p = torch.exp((k * torch.log(lam) - lam - torch.lgamma(k + 1)).sum((-2, -1)))
    f = ((ref - normalise_minmax(k)) ** 2).mean((-2, -1))
    return (p[:, None, None] * f[:, None, None] * (k / lam - 1)).sum(0)


def _mean_gradient(estimator: str, lam, ref, samples: int, reps: int):
    grads = []
    for rep in range(reps):
        rate = lam.clone()[None].requires_grad_(True)
        loss, _ = _step_loss(
            rate,
            ref.expand(1, samples, 2, 2),
            gain=torch.tensor(1.0),
            mtf=None,
            settings=SurrogateSettings(estimator=estimator, n_samples=samples),
            generator=torch.Generator().manual_seed(rep),
        )
        loss.backward()
        grads.append(rate.grad[0])
    g = torch.stack(grads)
    return g.mean(0), g.std(0) / math.sqrt(reps)


def test_unbiased_variant_is_unbiased_and_the_published_one_is_not():
    lam = torch.tensor([[0.6, 1.2], [1.8, 2.4]], dtype=torch.float64)
    ref = normalise_minmax(torch.tensor([[0.0, 1.0], [2.0, 4.0]], dtype=torch.float64))
    exact = _exact_gradient(lam, ref)
    mean, se = _mean_gradient("unbiased", lam, ref, 20000, 8)
    assert torch.all((mean - exact).abs() < 4 * se + 1e-12)
    # the published per-pixel product: even granting its (1 − 1/N) baseline factor it
    # misses the coupling through the normalisation (measured 0.019 off, SE ≈ 1e-4)
    mean_p, se_p = _mean_gradient("published", lam, ref, 20000, 8)
    assert float(((mean_p - 0.75 * exact).abs() / se_p).max()) > 20


def test_published_gradient_is_the_per_pixel_product():
    torch.manual_seed(0)
    lam = torch.rand(1, 6, 6, dtype=torch.float64) * 5 + 1
    ref = normalise_minmax(torch.rand(1, 4, 6, 6, dtype=torch.float64))
    rate = lam.clone().requires_grad_(True)
    settings = SurrogateSettings(n_samples=4)
    loss, _ = _step_loss(
        rate,
        ref,
        gain=torch.tensor(1.0),
        mtf=None,
        settings=settings,
        generator=torch.Generator().manual_seed(9),
    )
    loss.backward()
    k = torch.poisson(
        lam[:, None].expand(1, 4, 6, 6).contiguous(), generator=torch.Generator().manual_seed(9)
    )
    se = (ref - normalise_minmax(k)) ** 2
    expected = ((se - se.mean((-2, -1), keepdim=True)) * (k / lam[:, None] - 1)).mean(1) / 36
    assert torch.allclose(rate.grad, expected, atol=1e-12)


def test_pathwise_gradient_is_the_derivative_of_the_sampled_loss():
    """With the noise ε fixed (same seed) the pathwise loss is a smooth function of the
    rate; its autograd gradient at a pixel that is no sample's minimum or maximum (the
    detached min-max normalisation does not move) equals the central difference.
    Measured gap ≤ 8e-10 relative (h = 1e-4 counts, float64); bound 1e-7."""
    from tem_core.estimators import pathwise_poisson_sample

    g = torch.Generator().manual_seed(5)
    lam = 20.0 + 5.0 * torch.rand((1, 8, 8), generator=g, dtype=torch.float64)
    ref = normalise_minmax(blobs(8)).expand(1, 3, 8, 8)
    settings = SurrogateSettings(estimator="pathwise", n_samples=3)

    def loss_at(rate: torch.Tensor) -> torch.Tensor:
        loss, _ = _step_loss(
            rate, ref, gain=torch.tensor(1.0, dtype=torch.float64), mtf=None,
            settings=settings, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        return loss

    rate = lam.clone().requires_grad_(True)
    loss_at(rate).backward()
    k = pathwise_poisson_sample(
        lam[:, None].expand(1, 3, 8, 8), generator=torch.Generator().manual_seed(0)
    ).flatten(-2)
    extremes = set(k.argmin(-1).flatten().tolist()) | set(k.argmax(-1).flatten().tolist())
    pixels = [i for i in range(64) if i not in extremes][:6]
    h = 1e-4
    for i in pixels:
        step = torch.zeros(64, dtype=torch.float64)
        step[i] = h
        step = step.reshape(1, 8, 8)
        central = (loss_at(lam + step) - loss_at(lam - step)) / (2 * h)
        grad = rate.grad.flatten()[i]
        assert float(grad) != 0.0
        assert float(central) == pytest.approx(float(grad), rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("estimator", ["published", "unbiased", "pathwise"])
def test_denoise_surrogate_runs_and_reduces_its_objective(estimator):
    image = blobs(24)
    g = torch.Generator().manual_seed(1)
    noisy = detect(
        image.expand(2, 2, -1, -1), detector=DET, dose_e_per_a2=2.0, sampling_a=5.0, generator=g
    )
    seen = []
    result = denoise_surrogate(
        noisy,
        detector=DET,
        generator=torch.Generator().manual_seed(2),
        settings=SurrogateSettings(n_iterations=30, n_samples=8, estimator=estimator),
        callback=lambda it, out: seen.append(it),
    )
    assert result.denoised.shape == (2, 24, 24) and result.rate.shape == (2, 24, 24)
    assert seen == list(range(30))
    assert float(result.objective[-5:].mean()) < float(result.objective[:5].mean())


def test_published_method_beats_one_projection():
    image = blobs(32)
    truth = detect(image, detector=DET, dose_e_per_a2=2.0, sampling_a=5.0)
    noisy = detect(
        image.expand(2, -1, -1),
        detector=DET,
        dose_e_per_a2=2.0,
        sampling_a=5.0,
        generator=torch.Generator().manual_seed(3),
    )
    out = denoise_surrogate(
        noisy,
        detector=DET,
        generator=torch.Generator().manual_seed(4),
        settings=SurrogateSettings(n_iterations=120, n_samples=10),
    )
    t = normalise_minmax(truth)
    gain = psnr(normalise_minmax(out.denoised), t, data_range=1.0) - psnr(
        normalise_minmax(noisy[0]), t, data_range=1.0
    )
    assert float(gain) > 0.5  # measured 0.98 dB


# --- registration and neighbouring tilts -----------------------------------------------------


def textured(n: int = 128, seed: int = 0) -> torch.Tensor:
    """30 bright Gaussian blobs (σ 1.5-5.5 px) in the central 80² px."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    img = torch.zeros(n, n, dtype=torch.float64)
    for _ in range(30):
        y, x = (torch.rand(2, generator=g) * 80 + (n - 80) / 2).tolist()
        s = float(torch.rand(1, generator=g)) * 4 + 1.5
        img += torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s**2))
    return img


@pytest.mark.parametrize("seed", [0, 1])
def test_register_recovers_a_known_shift_and_rotation(seed):
    img = textured(seed=seed)
    moved = warp(img, angle_rad=math.radians(-12.0), shift_px=(2.3, 4.7))
    angle, shift = register(img, moved)
    # measured: up to 0.04° and 0.05 px
    assert math.degrees(angle) == pytest.approx(-12.0, abs=0.15)
    assert shift[0] == pytest.approx(2.3, abs=0.15) and shift[1] == pytest.approx(4.7, abs=0.15)
    assert estimate_shift(img, warp(img, shift_px=(3.4, -5.2))) == pytest.approx(
        (3.4, -5.2), abs=0.1
    )
    assert math.degrees(estimate_rotation(img, warp(img, angle_rad=math.radians(7.0)))) == (
        pytest.approx(7.0, abs=0.15)
    )


def test_neighbour_references_align_the_neighbours():
    img = blobs(96, seed=3)
    stack = torch.stack([warp(img, shift_px=(1.5, -2.0)), img, warp(img, shift_px=(-3.0, 1.0))])
    refs = neighbour_references(stack, 1, rotation=False)
    assert refs.shape == (3, 96, 96)
    inner = (slice(10, -10), slice(10, -10))
    for r in refs:
        assert float((r - img)[inner].abs().max()) < 0.02
    assert neighbour_references(stack, 0).shape == (2, 96, 96)


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_names_the_parameter():
    good = torch.ones(2, 16, 16)
    with pytest.raises(ValueError, match="stack must hold at least 2 tilts"):
        neighbour_references(torch.ones(1, 16, 16), 0)
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        SurrogateSettings(estimator="unbiased", n_samples=1)
    with pytest.raises(ValueError, match="projections must have shape"):
        denoise_poisson(torch.ones(16, 16), detector=DET)
    with pytest.raises(ValueError, match="moving must have the shape of fixed"):
        register(torch.ones(16, 16), torch.ones(16, 12))
    with pytest.raises(ValueError, match="mtf must have the image shape"):
        denoise_poisson(good, detector=DET, mtf=torch.ones(8, 8))
    bad = good.clone()
    bad[1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="projections must be finite, got nan"):
        denoise_poisson(bad, detector=DET)
    with pytest.raises(ValueError, match="projections must be finite"):
        denoise_surrogate(bad, detector=DET, generator=torch.Generator())
    with pytest.raises(ValueError, match="dose_e_per_a2 must be > 0, got 0"):
        denoise_poisson(good, detector=DET, dose_e_per_a2=0.0, sampling_a=5.0)
    zeros = torch.ones(16, 16)
    zeros[8, 8] = 0.0
    with pytest.raises(ValueError, match="mtf must be >= 0.001 at every frequency"):
        recover_electrons(good, detector=DET, mtf=zeros)
    with pytest.raises(ValueError, match="estimator must be one of"):
        SurrogateSettings(estimator="magic")
    with pytest.raises(ValueError, match="regulariser must be one of"):
        PoissonSettings(regulariser="bm3d")
    with pytest.raises(ValueError, match="step_px must divide patch_px"):
        WienerSettings(patch_px=32, step_px=5)
    with pytest.raises(ValueError, match="patch_px must be even and >= 8"):
        WienerSettings(patch_px=7, step_px=7)
    with pytest.raises(ValueError, match="pool must be odd"):
        WienerSettings(pool=4)
    with pytest.raises(ValueError, match="noise_var must be"):
        local_wiener(torch.ones(40, 40), noise_var=0.0)
    with pytest.raises(ValueError, match="larger than patch_px / 2"):
        local_wiener(torch.ones(10, 40))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        denoise_surrogate(good, detector=DET, generator=None)


# --- CUDA ------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_parity():
    image = blobs(64)
    noisy = detect(
        image.expand(3, -1, -1),
        detector=DET,
        dose_e_per_a2=0.5,
        sampling_a=5.0,
        generator=torch.Generator().manual_seed(0),
    )
    cpu = denoise_poisson(noisy, detector=DET).denoised
    gpu = denoise_poisson(noisy.cuda(), detector=DET).denoised
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)
    wiener = PoissonSettings(regulariser="wiener")
    w_cpu = denoise_poisson(noisy, detector=DET, settings=wiener).denoised
    w_gpu = denoise_poisson(noisy.cuda(), detector=DET, settings=wiener).denoised
    assert torch.allclose(w_gpu.cpu(), w_cpu, rtol=1e-9, atol=1e-9)
    moved = warp(image, angle_rad=0.1, shift_px=(1.0, 2.0))
    a_cpu, s_cpu = register(image, moved)
    a_gpu, s_gpu = register(image.cuda(), moved.cuda())
    assert a_gpu == pytest.approx(a_cpu, abs=1e-6) and s_gpu == pytest.approx(s_cpu, abs=1e-6)
    out = denoise_surrogate(
        noisy.cuda().float(),
        detector=DET,
        generator=torch.Generator(device="cuda").manual_seed(0),
        settings=SurrogateSettings(n_iterations=3, n_samples=4),
    )
    assert out.denoised.device.type == "cuda" and torch.isfinite(out.denoised).all()
