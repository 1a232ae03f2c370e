"""Tests of tem_core.detector: MTF models, dose, DQE, gain and shot noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tem_core import detector as det
from tem_core.detector import (
    Detector,
    apply_mtf,
    available_cameras,
    detect,
    expected_and_detected,
    expected_electrons,
    expected_image,
    load_dqe_table,
    load_mtf_table,
    mtf_parametric,
    mtf_tabulated,
    poisson_log_prob,
    radial_frequency_cycles_per_px,
    sample_counts,
    sample_electrons,
)

DEFAULTS = dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0)
weights = st.floats(0.0, 1.0)
widths = st.floats(0.0, 1000.0)
powers = st.floats(0.1, 10.0)


def _plain(w, a, b, c, alpha, beta):
    return (a / (1 + alpha * w**2) + b / (1 + beta * w**2) + c) / (a + b + c)


# --- parametric MTF ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(a=weights, b=weights, c=weights, alpha=widths, beta=widths, p=powers, q=powers)
def test_mtf_is_one_at_zero_frequency(a, b, c, alpha, beta, p, q):
    if a + b + c < 1e-6:
        return
    value = mtf_parametric(
        torch.zeros(1, dtype=torch.float64), a=a, b=b, c=c, alpha=alpha, beta=beta, p=p, q=q
    )
    assert value.item() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0.01, 1.0),
    b=st.floats(0.01, 1.0),
    c=weights,
    alpha=st.floats(0.1, 1000.0),
    beta=st.floats(0.1, 1000.0),
    p=powers,
    q=powers,
)
def test_mtf_decreases_monotonically(a, b, c, alpha, beta, p, q):
    w = torch.linspace(0.0, 0.75, 301, dtype=torch.float64)
    mtf = mtf_parametric(w, a=a, b=b, c=c, alpha=alpha, beta=beta, p=p, q=q)
    assert torch.all(mtf[1:] <= mtf[:-1] + 1e-12)
    assert torch.all(mtf >= c / (a + b + c) - 1e-12)


def test_mtf_default_values():
    # physics.md (TEM-simulator defaults): 0.8285 / 0.5879 / 0.3182 at 0.125 / 0.25 / 0.5 cycles/px
    w = torch.tensor([0.125, 0.25, 0.5], dtype=torch.float64)
    mtf = mtf_parametric(w, **DEFAULTS)
    torch.testing.assert_close(
        mtf, torch.tensor([0.8285, 0.5879, 0.3182], dtype=torch.float64), atol=5e-5, rtol=0
    )


def test_mtf_p_q_one_is_plain_form_and_general_form_matches_physics_md():
    w = torch.linspace(0, 0.7, 50, dtype=torch.float64)
    torch.testing.assert_close(mtf_parametric(w, **DEFAULTS, p=1.0, q=1.0), _plain(w, **DEFAULTS))
    p, q = 2.5, 0.5
    y1, y2 = 1 + 10.0 * w**2, 1 + 40.0 * w**2
    la = 2**p * y1 ** (-p) / (2 + (2**p - 2) * y1 ** (-p))
    lb = 2**q * y2 ** (-q) / (2 + (2**q - 2) * y2 ** (-q))
    torch.testing.assert_close(mtf_parametric(w, **DEFAULTS, p=p, q=q), (0.7 * la + 0.2 * lb + 0.1))


def test_mtf_follows_device_and_dtype_and_broadcasts_tensor_params():
    w = radial_frequency_cycles_per_px((4, 6), dtype=torch.float64)
    assert w.shape == (4, 6) and w.dtype == torch.float64
    assert w[0, 3].item() == pytest.approx(0.5) and w[2, 3].item() == pytest.approx(math.sqrt(0.5))
    alpha = torch.tensor([5.0, 10.0], dtype=torch.float64).reshape(2, 1, 1)
    out = mtf_parametric(w, a=0.7, b=0.2, c=0.1, alpha=alpha, beta=40.0)
    assert out.shape == (2, 4, 6)
    assert torch.all(out[0] >= out[1])


# --- tabulated MTF ---------------------------------------------------------------------------


def test_tabulated_k2_300kv_reference_values():
    # shared/data/README.md: K2 300 kV MTF 0.733 at 0.25 and 0.388 at 0.5 cycles/px
    w = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    mtf = mtf_tabulated(w, camera="k2_300kv")
    assert mtf.tolist() == pytest.approx([1.0, 0.733, 0.388], abs=1e-3)


@pytest.mark.parametrize("camera", available_cameras())
def test_every_camera_table(camera):
    freq, mtf = load_mtf_table(camera)
    assert freq[0] == 0 and mtf[0] == 1.0
    assert 0.49 <= freq[-1].item() <= 0.5
    assert torch.all(freq[1:] > freq[:-1])
    assert torch.all((mtf > 0) & (mtf <= 1.0 + 1e-9))
    assert 20 <= freq.numel() <= 110
    # interpolation reproduces the nodes, continues the last value, follows dtype
    w32 = freq.float()
    torch.testing.assert_close(mtf_tabulated(w32, camera=camera), mtf.float())
    beyond = mtf_tabulated(torch.tensor([0.6, 0.71, -0.25]), camera=camera)
    assert beyond.dtype == torch.float32
    assert beyond[0].item() == pytest.approx(mtf[-1].item(), rel=1e-6)
    assert beyond[2].item() == pytest.approx(
        mtf_tabulated(torch.tensor(0.25), camera=camera).item()
    )


def test_all_expected_cameras_present():
    for camera in (
        "k2_300kv",
        "k2_200kv",
        "falcon3ec_300kv",
        "falcon3ec_200kv",
        "falcon4ec_300kv",
        "falcon4ec_200kv",
        "falcon2_300kv",
        "de20_300kv",
    ):
        assert camera in available_cameras()


def test_dqe_tables():
    freq, dqe = load_dqe_table("k2_300kv")
    # McMullan et al. 2014: K2 counting DQE(0) ~ 0.8 at 300 kV, falling to ~0.23 at Nyquist
    assert dqe[0].item() == pytest.approx(0.8, abs=0.03)
    assert dqe[-1].item() == pytest.approx(0.23, abs=0.03)
    assert freq[0] >= 0 and freq[-1] <= 0.5
    with pytest.raises(ValueError, match="available: .*falcon3ec_counting_300kv"):
        load_dqe_table("k3")



def test_detector_for_camera_uses_the_published_dqe():
    k2 = Detector.for_camera("k2_300kv", gain_counts_per_e=2.0)
    assert (k2.mtf_camera, k2.dqe, k2.gain_counts_per_e) == ("k2_300kv", 0.79668, 2.0)
    falcon = Detector.for_camera("falcon3ec_300kv", dqe_table="falcon3ec_counting_300kv")
    assert falcon.dqe == 0.8889  # first tabulated point, 0.001 cycles/px
    with pytest.raises(ValueError, match="no DQE table 'falcon4ec_300kv'.*pass dqe_table="):
        Detector.for_camera("falcon4ec_300kv")
    # the DQE sets the noise: var/mean = 1/DQE(0) for a flat field without blur;
    # 256² pixels give a relative standard error sqrt(2/65536) = 0.0055 on the variance
    flat = torch.ones(256, 256, dtype=torch.float64)
    no_blur = Detector.for_camera("k2_300kv", mtf_enabled=False)
    counts = detect(
        flat, detector=no_blur, dose_e_per_a2=100.0, sampling_a=1.0,
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    ratio = (counts.var() / counts.mean()).item()
    assert ratio == pytest.approx(1 / 0.79668, rel=4 * 0.0055)

def test_detector_with_camera_mtf():
    d = Detector(mtf_camera="falcon3ec_300kv")
    mtf = d.mtf((8, 8), dtype=torch.float64)
    assert mtf[0, 0].item() == 1.0 and mtf.dtype == torch.float64


# --- dose, expected image ----------------------------------------------------------------------


def test_expected_electrons_and_image():
    intensity = torch.rand(3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    n = expected_electrons(intensity, dose_e_per_a2=40.0, sampling_a=1.5)
    torch.testing.assert_close(n, intensity * 40.0 * 2.25)
    # one dose per image of a batch (e.g. per tilt)
    dose = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    nb = expected_electrons(intensity, dose_e_per_a2=dose, sampling_a=1.0)
    torch.testing.assert_close(nb[2], 3.0 * intensity[2])
    # the MTF keeps the mean; gain scales it
    d = Detector(gain_counts_per_e=2.5)
    img = expected_image(intensity, detector=d, dose_e_per_a2=40.0, sampling_a=1.5)
    torch.testing.assert_close(img.mean(dim=(-2, -1)), 2.5 * n.mean(dim=(-2, -1)))
    assert torch.equal(detect(intensity, detector=d, dose_e_per_a2=40.0, sampling_a=1.5), img)



@pytest.mark.parametrize("after", [True, False])
def test_expected_and_detected_share_one_computation(after):
    """micrograph's single pass gives what expected_image and detect give separately."""
    intensity = torch.rand(2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    d = Detector(gain_counts_per_e=1.7, dqe=0.8, mtf_after_noise=after)
    kw = dict(detector=d, dose_e_per_a2=30.0, sampling_a=1.2)
    expected, counts = expected_and_detected(
        intensity, generator=torch.Generator().manual_seed(5), **kw
    )
    assert torch.equal(expected, expected_image(intensity, **kw))
    assert torch.equal(counts, detect(intensity, generator=torch.Generator().manual_seed(5), **kw))
    assert expected_and_detected(intensity, **kw)[1] is None
    # the MTF'd electrons shared by both: the gradients are those of the separate calls
    a, b = intensity.clone().requires_grad_(True), intensity.clone().requires_grad_(True)
    e, c = expected_and_detected(a, generator=torch.Generator().manual_seed(5), **kw)
    (e.sum() + (c * c).sum()).backward()
    e2 = expected_image(b, **kw)
    c2 = detect(b, generator=torch.Generator().manual_seed(5), **kw)
    (e2.sum() + (c2 * c2).sum()).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)

def test_apply_mtf_identity_and_self_adjoint():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 8, dtype=torch.float64, generator=g)
    y = torch.randn(2, 9, 8, dtype=torch.float64, generator=g)
    torch.testing.assert_close(apply_mtf(x, torch.ones(9, 8, dtype=torch.float64)), x)
    mtf = mtf_parametric(radial_frequency_cycles_per_px((9, 8), dtype=torch.float64), **DEFAULTS)
    lhs = (apply_mtf(x, mtf) * y).sum()
    rhs = (x * apply_mtf(y, mtf)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


# --- noise statistics --------------------------------------------------------------------------

SHAPE = (512, 512)
DOSE, SAMPLING = 5.0, 2.0  # N = 20 electrons per pixel


def _flat(detector, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    ones = torch.ones(*batch, *SHAPE, dtype=torch.float64)
    return detect(ones, detector=detector, dose_e_per_a2=DOSE, sampling_a=SAMPLING, generator=g)


@pytest.mark.parametrize("noise_model", ["poisson_wald", "scaled_poisson"])
@pytest.mark.parametrize("gain, dqe", [(1.0, 1.0), (3.0, 0.4)])
def test_flat_field_mean_and_variance(gain, dqe, noise_model):
    n = DOSE * SAMPLING**2
    d = Detector(gain_counts_per_e=gain, dqe=dqe, noise_model=noise_model, mtf_enabled=False)
    x = _flat(d)
    mean, var = x.mean().item(), x.var().item()
    # relative standard errors: mean ~ 0.1 %, variance ~ 0.3-0.5 % (2.6e5 pixels)
    assert mean == pytest.approx(gain * n, rel=5e-3)
    assert var == pytest.approx(gain**2 * n / dqe, rel=3e-2)
    if gain == 1.0 and dqe == 1.0:  # pure Poisson: integer counts, mean = variance
        assert torch.equal(x, x.round()) and var == pytest.approx(mean, rel=3e-2)
    # with the MTF after the noise: mean unchanged, variance times mean(MTF²)
    d_mtf = Detector(gain_counts_per_e=gain, dqe=dqe, noise_model=noise_model)
    y = _flat(d_mtf)
    mtf2 = (d_mtf.mtf(SHAPE, dtype=torch.float64) ** 2).mean().item()
    assert y.mean().item() == pytest.approx(mean, rel=1e-9)  # MTF(0) = 1, same noise
    assert y.var().item() == pytest.approx(gain**2 * n / dqe * mtf2, rel=3e-2)


def _radial_ratio(x, mtf2):
    spectrum = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs() ** 2 / x[0].numel()
    ratio = (spectrum / mtf2).mean(dim=0)
    omega = radial_frequency_cycles_per_px(SHAPE, dtype=torch.float64)
    edges = torch.arange(0.05, 0.501, 0.025)
    return torch.stack(
        [
            ratio[(omega >= lo) & (omega < hi)].mean()
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
    )


def test_noise_power_spectrum_follows_mtf_squared():
    d = Detector(gain_counts_per_e=2.0, dqe=0.5)
    x = _flat(d, seed=3, batch=(4,))
    mtf2 = d.mtf(SHAPE, dtype=torch.float64) ** 2
    radial = _radial_ratio(x, mtf2)
    expected = 4.0 * DOSE * SAMPLING**2 / 0.5  # white level gain² N / DQE
    # each bin averages >= 8000 exponential periodogram values: ~1 % standard error
    torch.testing.assert_close(radial, torch.full_like(radial, expected), rtol=0.05, atol=0)
    # blurring before the noise gives a white spectrum instead
    d_before = Detector(gain_counts_per_e=2.0, dqe=0.5, mtf_after_noise=False)
    flat = _radial_ratio(_flat(d_before, seed=4, batch=(4,)), torch.ones_like(mtf2))
    torch.testing.assert_close(flat, torch.full_like(flat, expected), rtol=0.05, atol=0)


def test_determinism_under_seed():
    for model in ("poisson_wald", "scaled_poisson"):
        d = Detector(dqe=0.7, gain_counts_per_e=1.3, noise_model=model)
        a = _flat(d, seed=11)
        b = _flat(d, seed=11)
        c = _flat(d, seed=12)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_wald_zero_and_one_dqe_edge_cases():
    g = torch.Generator().manual_seed(5)
    zeros = sample_electrons(torch.zeros(100, dtype=torch.float64), dqe=0.3, generator=g)
    assert torch.equal(zeros, torch.zeros(100, dtype=torch.float64))
    many = sample_electrons(torch.full((20000,), 1e4, dtype=torch.float64), dqe=0.25, generator=g)
    assert torch.all(torch.isfinite(many)) and torch.all(many > 0)
    assert many.var().item() == pytest.approx(4e4, rel=0.05)


# --- gradients ---------------------------------------------------------------------------------


def test_gradcheck_mtf_parametric():
    w = torch.linspace(0, 0.7, 7, dtype=torch.float64)
    params = [
        torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for v in (0.7, 0.2, 0.1, 10.0, 40.0, 1.3, 0.8)
    ]

    def f(a, b, c, alpha, beta, p, q):
        return mtf_parametric(w, a=a, b=b, c=c, alpha=alpha, beta=beta, p=p, q=q)

    assert torch.autograd.gradcheck(f, params)


def test_gradcheck_expected_image():
    g = torch.Generator().manual_seed(6)
    intensity = (1 + 0.1 * torch.randn(2, 6, 5, dtype=torch.float64, generator=g)).requires_grad_()
    values = (30.0, 1.7, 0.7, 0.2, 0.1, 10.0, 40.0, 1.2, 0.9)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]

    def f(x, dose, gain, a, b, c, alpha, beta, p, q):
        d = Detector(gain_counts_per_e=gain, a=a, b=b, c=c, alpha=alpha, beta=beta, p=p, q=q)
        return expected_image(x, detector=d, dose_e_per_a2=dose, sampling_a=1.1)

    assert torch.autograd.gradcheck(f, [intensity, *params])


def test_gradcheck_sampled_image_wrt_gain_and_mtf():
    intensity = torch.ones(6, 5, dtype=torch.float64)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (2.0, 0.7, 12.0)]

    def f(gain, a, alpha):
        d = Detector(gain_counts_per_e=gain, dqe=0.6, a=a, alpha=alpha)
        g = torch.Generator().manual_seed(7)
        return detect(intensity, detector=d, dose_e_per_a2=10.0, sampling_a=1.0, generator=g)

    assert torch.autograd.gradcheck(f, params)


def test_poisson_log_prob():
    scipy_stats = pytest.importorskip("scipy.stats")
    k = torch.tensor([0.0, 1.0, 3.0, 10.0, 0.0, 2.0], dtype=torch.float64)
    lam = torch.tensor([0.5, 1.0, 2.5, 12.0, 0.0, 0.0], dtype=torch.float64)
    lp = poisson_log_prob(k, lam)
    ref = torch.from_numpy(scipy_stats.poisson.logpmf(k.numpy(), lam.numpy()))
    torch.testing.assert_close(lp, ref)
    lam_grad = lam[:4].clone().requires_grad_()
    poisson_log_prob(k[:4], lam_grad).sum().backward()
    torch.testing.assert_close(lam_grad.grad, k[:4] / lam[:4] - 1)  # score k/λ − 1
    assert torch.autograd.gradcheck(
        lambda x: poisson_log_prob(k[:4], x), [lam[:4].clone().requires_grad_()]
    )
    # counts from sample_counts are integers with the right mean
    counts = sample_counts(torch.full((1000,), 3.0), generator=torch.Generator().manual_seed(8))
    assert torch.equal(counts, counts.round()) and counts.mean().item() == pytest.approx(
        3.0, abs=0.25
    )


# --- errors ------------------------------------------------------------------------------------


def test_bad_inputs():
    x = torch.ones(4, 4)
    d = Detector()
    with pytest.raises(ValueError, match=r"dose_e_per_a2 must be >= 0, got -1.0 e/Å²"):
        expected_image(x, detector=d, dose_e_per_a2=-1.0, sampling_a=1.0)
    with pytest.raises(ValueError, match="sampling_a must be > 0"):
        expected_electrons(x, dose_e_per_a2=1.0, sampling_a=0.0)
    with pytest.raises(ValueError, match="gain_counts_per_e must be finite, got nan counts/e"):
        Detector(gain_counts_per_e=float("nan"))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"dqe must lie in \(0, 1\]"):
            Detector(dqe=bad)
    with pytest.raises(ValueError, match=r"dqe must lie in \(0, 1\]"):
        sample_electrons(x, dqe=torch.tensor(2.0), generator=torch.Generator())
    with pytest.raises(ValueError, match=r"a \+ b \+ c must be > 0"):
        mtf_parametric(x, a=0.0, b=0.0, c=0.0, alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="a must be >= 0"):
        Detector(a=-0.1)
    with pytest.raises(ValueError, match="alpha must be >= 0, got -1.0 px²"):
        Detector(alpha=-1.0)
    with pytest.raises(ValueError, match="p must be > 0"):
        mtf_parametric(x, **DEFAULTS, p=0.0)
    with pytest.raises(ValueError, match="unknown camera 'k3'; available: de20_300kv, .*k2_300kv"):
        Detector(mtf_camera="k3")
    with pytest.raises(ValueError, match="unknown camera"):
        mtf_tabulated(x, camera="k3")
    with pytest.raises(ValueError, match="noise_model must be one of"):
        Detector(noise_model="gaussian")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        detect(x, detector=d, dose_e_per_a2=1.0, sampling_a=1.0, generator=0)
    with pytest.raises(ValueError, match="expected counts must be >= 0"):
        sample_counts(-x, generator=torch.Generator())
    with pytest.raises(ValueError, match="does not match"):
        apply_mtf(x, torch.ones(3, 3))
    with pytest.raises(TypeError, match="detector must be a Detector"):
        expected_image(x, detector=None, dose_e_per_a2=1.0, sampling_a=1.0)


def test_module_imports_no_stage_to_its_right():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(det))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    for forbidden in ("tem_core.io", "tem_core.simulate", "tem_core.mtf_fit"):
        assert forbidden not in imported


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    intensity = torch.rand(
        2, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(9)
    )
    d = Detector(gain_counts_per_e=2.0, dqe=0.5, mtf_camera="k2_300kv")
    cpu = expected_image(intensity, detector=d, dose_e_per_a2=20.0, sampling_a=1.0)
    gpu = expected_image(intensity.cuda(), detector=d, dose_e_per_a2=20.0, sampling_a=1.0)
    torch.testing.assert_close(gpu.cpu(), cpu)
    g = torch.Generator(device="cuda").manual_seed(0)
    sample = detect(intensity.cuda(), detector=d, dose_e_per_a2=20.0, sampling_a=1.0, generator=g)
    assert sample.device.type == "cuda"
    # mean within 4 standard errors of the expected mean (variance <= gain² N/DQE per pixel)
    n_px, mean = sample.numel(), float(gpu.mean())
    se = math.sqrt(2.0**2 * (mean / 2.0) / 0.5 / n_px)
    assert abs(float(sample.mean()) - mean) < 4 * se


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_detector_mtf_built_in_place_equals_the_graph_path_bitwise(dtype):
    """Without a graph the MTF is built in place (4 grids instead of 7): the same bits as
    the expressions used when a parameter requires grad."""
    settings = dict(a=0.5, b=0.3, c=0.2, alpha=7.0, beta=55.0, p=1.6, q=0.7)
    lean = Detector(**settings).mtf((90, 128), dtype=dtype)
    graph = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in settings.items()}
    full = Detector(**graph).mtf((90, 128), dtype=dtype)
    assert full.requires_grad
    assert torch.equal(lean, full.detach())
