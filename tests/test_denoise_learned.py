"""The learned prior of the detector-model denoiser (``tem_core.denoise.learned``): shapes,
dtype and device, determinism, the shipped weights, training, bad input."""

from __future__ import annotations

from importlib import resources

import pytest
import torch

from tem_core.denoise import PoissonSettings, denoise_poisson, mean_of_projections
from tem_core.denoise.blend import sure_blend
from tem_core.denoise.learned import (
    TRAINED_ELECTRONS,
    TrainSettings,
    UNet,
    load_denoiser,
    network_denoise,
    particle_mask,
    train_denoiser,
    wiener_pilot,
)
from tem_core.denoise.metrics import psnr
from tem_core.detector import Detector, detect

DET = Detector(dqe=1.0, gain_counts_per_e=10.0)  # TEM-simulator's default MTF
NET = PoissonSettings(regulariser="network")


def rods(n: int = 96, seed: int = 0, contrast: float = 0.01) -> torch.Tensor:
    """Intensity 1 ± ``contrast``: a few random bars with fringes (a phase-contrast-like
    test image; not the simulator)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    image = torch.zeros(n, n, dtype=torch.float64)
    for _ in range(3):
        y, x = (torch.rand(2, generator=g, dtype=torch.float64) * (n - 32) + 16).tolist()
        a = float(torch.rand((), generator=g)) * 3.14
        u = (yy - y) * torch.cos(torch.tensor(a)) + (xx - x) * torch.sin(torch.tensor(a))
        v = -(yy - y) * torch.sin(torch.tensor(a)) + (xx - x) * torch.cos(torch.tensor(a))
        image += torch.exp(-(u**2) / 60.0 - v**2 / 400.0) * torch.cos(u / 2.0)
    return 1.0 + contrast * image / image.abs().max()


def test_shipped_weights_load_offline_and_follow_dtype():
    model = load_denoiser()
    assert isinstance(model, UNet) and not model.training
    total = 200.0 + 14.0 * torch.randn(2, 37, 50, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.float64):
        m = load_denoiser(dtype=dtype)
        out = network_denoise(total.to(dtype), model=m)
        assert out.shape == total.shape and out.dtype == dtype and out.device == total.device


def test_inference_is_deterministic_and_batch_equals_one_by_one():
    model = load_denoiser(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    total = torch.poisson(500.0 * rods(64).expand(3, -1, -1), generator=g)
    a = network_denoise(total, model=model)
    b = network_denoise(total, model=model)
    assert torch.equal(a, b)
    single = torch.stack([network_denoise(t, model=model) for t in total])
    # float64 convolutions: batched and single runs agree to rounding (measured 1e-13)
    torch.testing.assert_close(a, single, rtol=1e-10, atol=1e-9)


def test_network_prior_beats_the_mean_and_keeps_the_level():
    truth_i = rods(96, seed=3)
    g = torch.Generator().manual_seed(4)
    dose, sampling = 4.0, 5.0  # 400 e/nm² per projection at 5 Å: 100 e/px
    noisy = detect(
        truth_i.expand(5, -1, -1),
        detector=DET,
        dose_e_per_a2=dose,
        sampling_a=sampling,
        generator=g,
    )
    truth = detect(truth_i, detector=DET, dose_e_per_a2=dose, sampling_a=sampling)
    out = denoise_poisson(noisy, detector=DET, settings=NET, dose_e_per_a2=dose, sampling_a=5.0)
    span = float(truth.max() - truth.min())
    gain = float(
        psnr(out.denoised, truth, data_range=span)
        - psnr(mean_of_projections(noisy), truth, data_range=span)
    )
    # measured 20.4 dB on this image (bars, not the simulator's particles; the Wiener
    # prior alone: 19.6 dB)
    assert gain > 15.0
    # the level is kept: mean counts within 0.5 % (measured 0.10 %)
    assert abs(float(out.denoised.mean() / truth.mean()) - 1.0) < 5e-3
    assert out.intensity is not None and abs(float(out.intensity.mean()) - 1.0) < 5e-3


def test_noise_only_input_gives_a_nearly_flat_output():
    g = torch.Generator().manual_seed(5)
    total = torch.poisson(torch.full((2, 64, 64), 1000.0, dtype=torch.float64), generator=g)
    out = network_denoise(total, model=load_denoiser(dtype=torch.float64))
    # input noise: relative std 1/√1000 = 3.2 %; the output keeps < 20 % of it (measured 3.2 %)
    assert float((out / out.mean() - 1).std()) < 0.2 / 1000**0.5


def test_tiny_training_run_lowers_the_loss_and_is_deterministic():
    images = torch.stack([rods(48, seed=s, contrast=0.02) for s in range(4)]).float()
    # one noise level (10⁴ e/px): the irreducible error of low doses would hide the trend
    settings = TrainSettings(
        steps=60,
        batch=4,
        crop_px=32,
        channels=(4, 8),
        learning_rate=3e-3,
        seed=2,
        electrons=(1e4, 1e4),
        pilot=False,
    )
    model, losses = train_denoiser(images, detector=DET, settings=settings)
    again = train_denoiser(images, detector=DET, settings=settings)[1]
    assert losses == again
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first  # measured 0.32 of the first ten steps' mean
    assert isinstance(model, UNet) and not model.training


def test_pilot_network_corrects_the_wiener_estimate():
    """With the Wiener pilot as input, the network predicts a correction: a zero last layer
    returns the detector-model Wiener estimate exactly (training starts there)."""
    model = UNet((4, 8), in_channels=3).double()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    g = torch.Generator().manual_seed(7)
    total = torch.poisson(300.0 * rods(64).expand(2, -1, -1), generator=g)
    torch.testing.assert_close(
        network_denoise(total, model=model), wiener_pilot(total), rtol=1e-12, atol=1e-9
    )
    images = torch.stack([rods(48, seed=s, contrast=0.02) for s in range(2)]).float()
    settings = TrainSettings(steps=3, batch=2, crop_px=32, channels=(4, 8), seed=1)
    losses = train_denoiser(images, detector=DET, settings=settings)[1]
    # the first step's loss is the pilot's relative error: e/(e + floor) < 1
    assert 0.0 < losses[0] < 1.0


def test_bad_weights_and_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights_path"):
        load_denoiser(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    torch.save({"not": "a model"}, junk)
    with pytest.raises(ValueError, match="weights_path"):
        load_denoiser(junk)
    noisy = 10.0 * torch.poisson(torch.full((2, 32, 32), 100.0))
    with pytest.raises(FileNotFoundError, match="weights_path"):
        denoise_poisson(
            noisy,
            detector=DET,
            settings=PoissonSettings(regulariser="network", weights_path=str(junk) + "x"),
        )
    with pytest.raises(TypeError, match="weights_path"):
        PoissonSettings(regulariser="network", weights_path=3)
    with pytest.raises(ValueError, match="crop_px"):
        TrainSettings(crop_px=30)
    with pytest.raises(ValueError, match="steps"):
        TrainSettings(steps=0)
    with pytest.raises(ValueError, match="electrons"):
        TrainSettings(electrons=(100.0, 10.0))
    with pytest.raises(ValueError, match="images"):
        train_denoiser(torch.ones(2, 16, 16), detector=DET, settings=TrainSettings(crop_px=32))
    for bad in (-1.0, float("nan"), "4"):
        with pytest.raises(ValueError, match="particle_weight"):
            TrainSettings(particle_weight=bad)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="focus_share"):
            TrainSettings(focus_share=bad, focus_electrons=(300.0, 3000.0))
    with pytest.raises(ValueError, match="focus_electrons"):
        TrainSettings(focus_share=0.5)
    with pytest.raises(ValueError, match="focus_electrons"):
        TrainSettings(focus_electrons=(10.0, 100.0))


def test_focus_electrons_changes_only_the_focused_runs():
    """focus_share = 0 draws nothing more (the same losses as without a focus range); a
    share > 0 draws other doses (other losses), deterministically."""
    images = torch.stack([rods(48, seed=s, contrast=0.02) for s in range(2)]).float()
    base = {"steps": 3, "batch": 2, "crop_px": 32, "channels": (4, 8), "seed": 1}
    plain = train_denoiser(images, detector=DET, settings=TrainSettings(**base))[1]
    unused = TrainSettings(**base, focus_electrons=(300.0, 3000.0))
    assert train_denoiser(images, detector=DET, settings=unused)[1] == plain
    focused = TrainSettings(**base, focus_electrons=(300.0, 3000.0), focus_share=0.5)
    losses = train_denoiser(images, detector=DET, settings=focused)[1]
    assert losses != plain
    assert train_denoiser(images, detector=DET, settings=focused)[1] == losses


def test_particle_mask_finds_the_particle_not_the_flat_ice():
    """A 1 % disc on flat ice (deviations 1e-5, like the simulator's ice): the mask covers
    the disc and a dilated rim, nothing far from it."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 20) ** 2 + (xx - 40) ** 2 < 36).double()
    clean = 1.0 + 1e-5 * torch.randn(64, 64, generator=g, dtype=torch.float64) - 0.01 * disc
    mask = particle_mask(clean[None])[0]
    assert bool(mask[disc > 0].all())
    far = ((yy - 20) ** 2 + (xx - 40) ** 2) > 15**2
    assert not bool(mask[far].any())


def test_particle_mask_rejects_a_single_image_and_integers():
    with pytest.raises(ValueError, match="clean"):
        particle_mask(torch.ones(16, 16))
    with pytest.raises(TypeError, match="clean"):
        particle_mask(torch.ones(1, 16, 16, dtype=torch.int64))


def test_particle_weight_changes_the_loss_and_zero_is_the_plain_loss():
    images = torch.stack([rods(48, seed=s, contrast=0.02) for s in range(2)]).float()
    kw = {"steps": 2, "batch": 2, "crop_px": 32, "channels": (4, 8), "seed": 1}

    def losses(**extra):
        return train_denoiser(images, detector=DET, settings=TrainSettings(**kw, **extra))[1]

    plain, zero, weighted = losses(), losses(particle_weight=0.0), losses(particle_weight=4.0)
    assert plain == zero
    assert weighted[0] != plain[0] and 0.0 < weighted[0] < 1.0


def test_symmetries_one_is_the_plain_network_and_four_eight_are_turn_invariant():
    model = load_denoiser(dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    total = torch.poisson(400.0 * rods(64).expand(2, -1, -1), generator=g)
    plain = network_denoise(total, model=model)
    assert torch.equal(network_denoise(total, model=model, symmetries=1), plain)

    def turn(x):
        return torch.rot90(x, 1, dims=(-2, -1))

    # the same holds for sides that are no multiple of the network's 8 (padding, STFT grid)
    odd = torch.poisson(400.0 * rods(64)[:60, :52].expand(2, -1, -1), generator=g)
    for image in (total, odd):
        for k in (4, 8):
            out = network_denoise(image, model=model, symmetries=k)
            # the same transforms, summed in another order: rounding only (measured 2e-13)
            torch.testing.assert_close(
                network_denoise(turn(image), model=model, symmetries=k),
                turn(out),
                rtol=1e-12,
                atol=1e-9,
            )
        # without averaging the network is not turn-invariant (measured 1.2-3 e/px)
        one = network_denoise(image, model=model)
        assert float((network_denoise(turn(image), model=model) - turn(one)).abs().max()) > 0.1
    mirrored = network_denoise(total.flip(-1), model=model, symmetries=8)
    torch.testing.assert_close(
        mirrored, network_denoise(total, model=model, symmetries=8).flip(-1), rtol=1e-12, atol=1e-9
    )
    # the average keeps the level (within 0.1 % of the plain network's mean)
    avg = network_denoise(total, model=model, symmetries=8)
    assert abs(float(avg.mean() / plain.mean()) - 1.0) < 1e-3


def test_symmetries_follow_dtype_and_settings_validate():
    for dtype in (torch.float32, torch.float64):
        model = load_denoiser(dtype=dtype)
        total = torch.poisson(torch.full((3, 40, 48), 300.0, dtype=dtype))
        for k in (2, 8):
            out = network_denoise(total, model=model, symmetries=k)
            assert out.shape == total.shape and out.dtype == dtype and out.device == total.device
    noisy = detect(
        rods(48).expand(3, -1, -1),
        detector=DET,
        dose_e_per_a2=4.0,
        sampling_a=5.0,
        generator=torch.Generator().manual_seed(9),
    ).float()
    settings = PoissonSettings(regulariser="network", network_symmetries=8)
    res = denoise_poisson(noisy, detector=DET, settings=settings)
    assert res.denoised.shape == (48, 48) and res.denoised.dtype == torch.float32
    for bad in (0, 3, 16, 2.0, True, "8"):
        with pytest.raises(ValueError, match="network_symmetries"):
            PoissonSettings(regulariser="network", network_symmetries=bad)
        with pytest.raises(ValueError, match="symmetries"):
            network_denoise(torch.full((16, 16), 300.0), model=model, symmetries=bad)


def test_sure_blend_picks_the_estimator_with_the_lower_risk():
    g = torch.Generator().manual_seed(10)
    truth = 400.0 * rods(64, contrast=0.05)
    total = torch.poisson(truth.expand(2, -1, -1), generator=g)

    def identity(s):
        return s

    def oracle(s):  # the truth itself: zero risk, zero divergence
        return truth.expand_as(s).clone()

    mtf = DET.mtf((64, 64), dtype=torch.float64)
    for first, second, expected in ((identity, oracle, 0.0), (oracle, identity, 1.0)):
        out, a = sure_blend(
            total, first, second, mtf=mtf, generator=torch.Generator().manual_seed(0)
        )
        # the identity's SURE is ≈ 0 after subtracting its own noise, the oracle's ≈ −noise:
        # the weight goes (nearly) all the way (measured 0.00 and 1.00 after clipping)
        assert a.shape == (2,) and torch.all((a - expected).abs() < 0.05)
        assert out.shape == total.shape
    # two equal estimators: weight 1 (no division by zero), output unchanged
    out, a = sure_blend(total, oracle, oracle, mtf=None, generator=torch.Generator())
    assert torch.equal(a, torch.ones(2, dtype=total.dtype)) and torch.equal(out, oracle(total))
    with pytest.raises(TypeError, match="generator"):
        sure_blend(total, oracle, identity, mtf=None, generator=0)
    with pytest.raises(ValueError, match="probe_step"):
        sure_blend(total, oracle, identity, mtf=None, generator=torch.Generator(), probe_step=0)


def test_network_blend_is_deterministic_follows_dtype_and_validates():
    noisy = detect(
        rods(48).expand(4, -1, -1),
        detector=DET,
        dose_e_per_a2=2.0,
        sampling_a=5.0,
        generator=torch.Generator().manual_seed(11),
    )
    blended = PoissonSettings(regulariser="network", network_blend=True)
    plain = PoissonSettings(regulariser="network", network_blend=False)
    for dtype in (torch.float32, torch.float64):
        a = denoise_poisson(noisy.to(dtype), detector=DET, settings=blended).denoised
        b = denoise_poisson(noisy.to(dtype), detector=DET, settings=blended).denoised
        assert torch.equal(a, b) and a.dtype == dtype and a.shape == (48, 48)
        c = denoise_poisson(noisy.to(dtype), detector=DET, settings=plain).denoised
        # here SURE keeps the network (weight clipped at 1): the same as without the blend
        assert c.dtype == dtype
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-3)
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="network_blend"):
            PoissonSettings(regulariser="network", network_blend=bad)


def test_outside_the_training_range_warns():
    model = load_denoiser()
    low = torch.poisson(torch.full((32, 32), TRAINED_ELECTRONS[0] / 5))
    with pytest.warns(RuntimeWarning, match="training range"):
        network_denoise(low + 1.0, model=model)
    ok = torch.poisson(torch.full((32, 32), 1000.0))
    with pytest.warns(RuntimeWarning, match="sampling_a = 1.0 Å"):
        network_denoise(ok, model=model, sampling_a=1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_parity():
    g = torch.Generator().manual_seed(6)
    noisy = detect(
        rods(64).expand(3, -1, -1), detector=DET, dose_e_per_a2=2.0, sampling_a=5.0, generator=g
    ).float()
    for settings in (NET, PoissonSettings(regulariser="network", network_symmetries=8)):
        cpu = denoise_poisson(noisy, detector=DET, settings=settings).denoised
        gpu = denoise_poisson(noisy.cuda(), detector=DET, settings=settings).denoised
        assert gpu.device.type == "cuda"
        # float32 convolutions on two devices: relative 1e-4 of the counts
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-3 * float(cpu.mean()))


def test_ensemble_of_networks(tmp_path):
    """An ensemble averages its networks' estimates: one model (also as a 1-tuple) gives that
    model's estimate; a model twice gives it too (to rounding); two models give their mean,
    each over the same symmetries; the prior takes a tuple of weight files."""
    first = load_denoiser(dtype=torch.float64)
    second = UNet(first.channels, in_channels=first.in_channels).to(torch.float64).eval()
    second.load_state_dict({k: 0.5 * v for k, v in first.state_dict().items()})
    g = torch.Generator().manual_seed(7)
    total = torch.poisson(800.0 * rods(48).expand(2, -1, -1), generator=g)
    for k in (1, 2):
        one = network_denoise(total, model=first, symmetries=k)
        assert torch.equal(network_denoise(total, model=(first,), symmetries=k), one)
        torch.testing.assert_close(
            network_denoise(total, model=[first, first], symmetries=k), one, rtol=1e-12, atol=0
        )
        other = network_denoise(total, model=second, symmetries=k)
        both = network_denoise(total, model=(first, second), symmetries=k)
        assert both.shape == total.shape and both.dtype == total.dtype
        torch.testing.assert_close(both, 0.5 * (one + other), rtol=1e-12, atol=1e-9)
        assert float((both - one).abs().max()) > 1e-3  # the second network does change it
    shipped = str(resources.files("tem_core") / "data" / "denoise_unet.pt")
    halved = tmp_path / "halved.pt"
    stored = torch.load(shipped, weights_only=True)
    torch.save({**stored, "state": {k: 0.5 * v for k, v in stored["state"].items()}}, halved)
    files = (shipped, str(halved))
    ens = PoissonSettings(regulariser="network", weights_path=files)
    assert ens.weights_path == files
    noisy = 10.0 * torch.poisson(torch.full((3, 32, 32), 100.0), generator=g)
    out = denoise_poisson(noisy, detector=DET, settings=ens)
    assert out.denoised.shape == (32, 32) and torch.isfinite(out.denoised).all()
    single = PoissonSettings(regulariser="network", weights_path=files[0])
    assert not torch.equal(out.rate, denoise_poisson(noisy, detector=DET, settings=single).rate)


def test_ensemble_bad_input(tmp_path):
    model = load_denoiser()
    total = torch.full((16, 16), 300.0)
    for bad in ((), [model, "x"], "model", None):
        with pytest.raises(TypeError, match="model"):
            network_denoise(total, model=bad)
    for bad in ((), ("a.pt", 3), ["a.pt"]):
        with pytest.raises(TypeError, match="weights_path"):
            PoissonSettings(regulariser="network", weights_path=bad)
    noisy = 10.0 * torch.poisson(torch.full((2, 32, 32), 100.0))
    missing = (str(tmp_path / "missing.pt"),)
    with pytest.raises(FileNotFoundError, match="weights_path"):
        denoise_poisson(
            noisy,
            detector=DET,
            settings=PoissonSettings(regulariser="network", weights_path=missing),
        )
