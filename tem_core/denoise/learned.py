"""A small U-Net trained on the simulator's own images with the detector's exact noise model.

The detector-model method (:mod:`tem_core.denoise.poisson`) reduces ``n`` projections to
one sufficient statistic, the summed exact counts ``S ~ Poisson(N · I)`` with ``N`` the
electrons per pixel at vacuum summed over the projections and ``I`` the image intensity
(vacuum = 1). What is left is a prior for ``I``; here it is learned: a U-Net is trained with
mean squared error to map ``S`` to the noise-free image on many noise draws of images that
the package's own simulator made (random layouts of TMV segments, apoferritin and virions in
ice, random defocus and ice thickness), over ``N`` spanning the doses and projection counts
of the benchmark. One network serves every dose and every ``n``: its input is the relative
contrast ``K (S / mean(S) − 1)`` and the known noise level ``K / √mean(S)`` as a second
channel (Poisson: the relative variance is ``1 / mean(S)``; ``K`` = :data:`CONTRAST_SCALE`
keeps the phase contrast of order one), its output the noise-free relative contrast before
the MTF. The loss is taken after the detector's MTF, so it weights frequencies as a PSNR of
the detector image does. The network does not depend on the camera (the exact-count step
undoes gain and MTF), but it does on the pixel size (5 Å), voltage (200 kV) and defocus range
(3-7 µm) of its training images and on the range of ``N`` (:data:`TRAINED_ELECTRONS`):
:func:`network_denoise` warns outside them.

A network trained on the simulator is evaluated on the simulator in the benchmark: the
benchmark's scene is held out, the forward model is not.

Everything is torch (convolutions, FFTs), so training and inference follow the device of
their inputs; randomness only through explicit generators.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tem_core._fft import fft2, ifft2
from tem_core.denoise._validate import check_image
from tem_core.denoise.training_scenes import random_scene
from tem_core.detector import Detector
from tem_core.validation import (
    require_float_dtype,
    require_positive,
    require_positive_int,
    require_shape,
)

__all__ = [
    "CONTRAST_SCALE",
    "DEFAULT_WEIGHTS",
    "SYMMETRIES",
    "TRAINED_ELECTRONS",
    "TRAINED_SAMPLING_A",
    "TrainSettings",
    "UNet",
    "load_denoiser",
    "network_denoise",
    "particle_mask",
    "random_scene",
    "train_denoiser",
]

#: the relative contrast is multiplied by this before the network (phase contrast ~0.3 %)
CONTRAST_SCALE = 300.0
#: electrons per pixel at vacuum summed over the projections, the training range (doses of
#: 100-2000 e/nm² per projection at 5 Å pixels give 25-500 per projection, ×2..50)
TRAINED_ELECTRONS = (25.0, 50_000.0)
#: floor of the pilot's squared error that normalises the loss (``pilot=True``), in the
#: network's contrast units² (a TMV segment's contrast has variance ≈ 0.25 there)
PILOT_LOSS_FLOOR = 0.02
#: a training pixel belongs to a particle (``TrainSettings.particle_weight``) where the noise-
#: free intensity's local mean absolute deviation from the crop's mean (7 × 7 px) exceeds
#: this, dilated by :data:`PARTICLE_DILATION_PX`: the simulated ice is flat (deviations
#: < 1e-4), the particles' contrast is 1e-3 to 3e-2
PARTICLE_CONTRAST = 1e-3
#: half-width of the dilation of the particle mask [px]
PARTICLE_DILATION_PX = 4
#: pixel size of the training images [Å]
TRAINED_SAMPLING_A = 5.0
#: numbers of dihedral symmetries :func:`network_denoise` can average over: the identity;
#: with the half turn; the four quarter turns; the quarter turns and their mirror images
SYMMETRIES = (1, 2, 4, 8)
#: weights shipped with the package (``benchmarks/train_denoiser.py`` made them)
DEFAULT_WEIGHTS = "denoise_unet.pt"


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A plain U-Net: ``len(channels)`` levels, two 3×3 convolutions per level, 2×2 average
    pooling down, bilinear upsampling and concatenation up; no normalisation layers (the
    output does not depend on the batch). Input ``(B, 2, ny, nx)`` (contrast, noise level),
    output ``(B, 1, ny, nx)``; ``ny`` and ``nx`` multiples of ``2^(levels − 1)``."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 96), in_channels: int = 2) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.in_channels = int(in_channels)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels must hold ≥ 2 positive widths, got {channels!r}")
        self.down = nn.ModuleList()
        c_prev = self.in_channels
        for c in self.channels:
            self.down.append(_Block(c_prev, c))
            c_prev = c
        self.up = nn.ModuleList(
            _Block(self.channels[i + 1] + self.channels[i], self.channels[i])
            for i in reversed(range(len(self.channels) - 1))
        )
        self.head = nn.Conv2d(self.channels[0], 1, 1)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this [px]."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def _initialise(model: nn.Module, generator: torch.Generator) -> None:
    """He-uniform weights and zero biases from ``generator`` (no global random state)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                bound = math.sqrt(6.0 / fan_in)
                w = torch.rand(m.weight.shape, generator=generator, dtype=torch.float64)
                m.weight.copy_((2 * w - 1) * bound)
                m.bias.zero_()


def wiener_pilot(total: torch.Tensor) -> torch.Tensor:
    """The detector-model method's Wiener estimate of ``E[S]`` for ``(B, ny, nx)`` summed
    counts: Anscombe, :func:`tem_core.denoise.wiener.local_wiener` with the exact Anscombe
    variance at each image's mean, exact unbiased inverse."""
    from tem_core.denoise.poisson import (  # noqa: PLC0415 (poisson imports this module)
        anscombe,
        anscombe_variance,
        inverse_anscombe,
    )
    from tem_core.denoise.wiener import local_wiener  # noqa: PLC0415

    z = anscombe(total)
    return torch.stack(
        [
            inverse_anscombe(local_wiener(zi, noise_var=anscombe_variance(float(si.mean()))))
            for zi, si in zip(z, total, strict=True)
        ]
    )


def _inputs(total: torch.Tensor, pilot: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input ``(B, 2 or 3, ny, nx)`` and each image's mean count ``(B, 1, 1, 1)``."""
    m = total.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    contrast = CONTRAST_SCALE * (total / m - 1.0)
    level = (CONTRAST_SCALE / torch.sqrt(m)).expand_as(contrast)
    channels = [contrast, level]
    if pilot:
        channels.append(CONTRAST_SCALE * (wiener_pilot(total) / m - 1.0))
    return torch.stack(channels, dim=1), m[:, None]


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    ny, nx = x.shape[-2:]
    py, px = (-ny) % multiple, (-nx) % multiple
    if py or px:
        mode = "reflect" if py < ny and px < nx else "replicate"
        x = F.pad(x, (0, px, 0, py), mode=mode)
    return x, (ny, nx)


def load_denoiser(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> UNet:
    """The trained U-Net from ``path`` (default: the weights shipped in ``tem_core/data``).

    Raises ``FileNotFoundError`` naming the path when the file is missing, ``ValueError``
    when it holds no U-Net state.
    """
    if path is None:
        ref = resources.files("tem_core") / "data" / DEFAULT_WEIGHTS
        path = Path(str(ref))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights_path {str(path)!r} does not exist: train with "
            "benchmarks/train_denoiser.py or pass the file of trained weights"
        )
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stored, dict) or "state" not in stored or "channels" not in stored:
        raise ValueError(f"weights_path {str(path)!r} holds no U-Net state ('state', 'channels')")
    model = UNet(stored["channels"], in_channels=int(stored.get("in_channels", 2)))
    model.load_state_dict(stored["state"])
    return model.to(device=device, dtype=dtype).eval()


def _symmetry(x: torch.Tensor, index: int, *, inverse: bool = False) -> torch.Tensor:
    """The ``index``-th element of the dihedral group of the square (quarter turns ``index
    % 4`` in the order 0, 2, 1, 3 half-turn first, then mirrored for ``index ≥ 4``) applied
    to the last two axes of ``x``, or its inverse; the first 1, 2, 4 or 8 form a group."""
    turns = (0, 2, 1, 3)[index % 4]
    mirror = index >= 4
    if inverse:
        x = x.flip(-1) if mirror else x
        return torch.rot90(x, -turns, dims=(-2, -1)) if turns else x
    x = torch.rot90(x, turns, dims=(-2, -1)) if turns else x
    return x.flip(-1) if mirror else x


def check_symmetries(name: str, value: int) -> int:
    """``value`` if it is one of :data:`SYMMETRIES`, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in SYMMETRIES:
        raise ValueError(f"{name} must be one of {SYMMETRIES} (symmetries), got {value!r}")
    return value


def _network_once(flat: torch.Tensor, model: UNet, pilot: bool) -> torch.Tensor:
    """The network's estimate of ``E[S]`` for ``(B, ny, nx)`` summed counts (model dtype)."""
    x, m = _inputs(flat, pilot)
    ny, nx = x.shape[-2:]
    x, _ = _pad_to(x, model.multiple)
    with torch.no_grad():
        out = model(x)[..., :ny, :nx]
        if pilot:  # the network predicts a correction of the Wiener pilot
            out = out + x[:, 2:3, :ny, :nx]
    return (m * (1.0 + out / CONTRAST_SCALE))[:, 0]


def check_weights_path(name: str, value):
    """``value`` (a path, ``None`` or a non-empty tuple of paths, an ensemble) as a path,
    ``None`` or a tuple of ``str``; a ``TypeError`` naming ``name`` otherwise."""
    if value is None or isinstance(value, str | Path):
        return value
    if isinstance(value, tuple) and value and all(isinstance(v, str | Path) for v in value):
        return tuple(str(v) for v in value)
    raise TypeError(
        f"{name} must be a path, None or a non-empty tuple of paths (an ensemble), got {value!r}"
    )


def _models(model) -> tuple[UNet, ...]:
    models = (model,) if isinstance(model, UNet) else model
    if not (isinstance(models, Sequence) and models and all(isinstance(m, UNet) for m in models)):
        raise TypeError(f"model must be a UNet or a non-empty sequence of UNets, got {model!r}")
    return tuple(models)


def network_denoise(
    total: torch.Tensor,
    *,
    model: UNet | Sequence[UNet],
    sampling_a: float | None = None,
    n_electrons_vacuum: float | None = None,
    symmetries: int = 1,
) -> torch.Tensor:
    """Noise-free estimate of ``(..., ny, nx)`` summed exact counts ``S`` [electrons/pixel].

    Returns the estimate of ``E[S]`` before the MTF (same shape, device and dtype). Warns
    when ``sampling_a`` (if given) differs from :data:`TRAINED_SAMPLING_A` by more than 10 %
    or when the mean count (or ``n_electrons_vacuum``) lies outside
    :data:`TRAINED_ELECTRONS`: the network was not trained there.

    ``symmetries`` (one of :data:`SYMMETRIES`) averages the whole estimate (Wiener pilot and
    network) over that many transforms ``g`` of the square's symmetry group: ``mean_g
    g⁻¹ f(g S)`` (test-time augmentation). The noise model and the training images are
    invariant under quarter turns and mirrors (the network was trained on randomly turned
    and mirrored crops) while the network itself is not, so the average removes the part of
    its error that depends on the orientation. With 4 or 8 the estimate of a quarter-turned
    input is the quarter-turned estimate (to rounding); the cost grows with the number.
    On the benchmark's separate tuning image (particle-window PSNR, mean of the 40 dose ×
    n settings) 1, 2, 4 and 8 score 21.912, 21.956, 21.955 and 21.954 dB
    (``benchmarks/results/denoise_tune_network_2026-12-02.json``): 2 is the default of
    :class:`tem_core.denoise.PoissonSettings`.

    A sequence of models (an ensemble) averages their estimates, each over ``symmetries``
    transforms (the estimate is affine in the network's output, so this is the average in
    the network's contrast units); one model gives that model's estimate. Not the default:
    the shipped weights averaged with the previous ones (commit f27cbff) score 22.184 dB
    (2 symmetries each) and 22.170 dB (1 each) on the tuning image against 22.244 dB
    alone, lower at 100 e/nm² too (``benchmarks/results/denoise_lowdose_tune_2026-12-02c.json``).
    """
    total = check_image("total", total, min_size=2)
    models = _models(model)
    symmetries = check_symmetries("symmetries", symmetries)
    if sampling_a is not None:
        require_positive("sampling_a", sampling_a, "Å")
        if abs(sampling_a / TRAINED_SAMPLING_A - 1.0) > 0.1:
            warnings.warn(
                f"sampling_a = {sampling_a} Å: the denoising network was trained on "
                f"{TRAINED_SAMPLING_A} Å pixels only; its output is not validated there",
                RuntimeWarning,
                stacklevel=2,
            )
    flat = total.reshape(-1, *total.shape[-2:])
    counts = flat.mean(dim=(-2, -1))
    level = float(counts.min()) if n_electrons_vacuum is None else float(n_electrons_vacuum)
    top = float(counts.max()) if n_electrons_vacuum is None else float(n_electrons_vacuum)
    lo, hi = TRAINED_ELECTRONS
    if level < lo or top > hi:
        warnings.warn(
            f"mean count {level:.3g}-{top:.3g} electrons/pixel is outside the denoising "
            f"network's training range {lo:g}-{hi:g} electrons/pixel (dose × n × pixel area)",
            RuntimeWarning,
            stacklevel=2,
        )
    param = next(models[0].parameters())
    flat = flat.to(device=param.device, dtype=param.dtype)
    rate = torch.zeros_like(flat)
    for net in models:
        pilot = net.in_channels == 3
        for index in range(symmetries):
            turned = _network_once(_symmetry(flat, index), net, pilot)
            rate = rate + _symmetry(turned, index, inverse=True)
    rate = rate / (symmetries * len(models))
    return rate.to(device=total.device, dtype=total.dtype).reshape(total.shape)


# ---------------------------------------------------------------------------------------
# training (the training images: :mod:`tem_core.denoise.training_scenes`)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Settings of :func:`train_denoiser`.

    Parameters
    ----------
    steps
        Adam steps.
    batch
        Crops per step.
    crop_px
        Side of the square training crops [px] (a multiple of the network's 8).
    learning_rate
        Adam's learning rate (cosine decay to 5 % over the steps).
    electrons
        Range of the electrons per pixel at vacuum summed over the projections [e/px];
        drawn log-uniformly per crop.
    focus_electrons
        A narrower range [e/px] inside ``electrons`` from which a share ``focus_share`` of
        the crops draws its electrons (log-uniformly) instead, so that the network sees more
        of the counts where it is weakest; ``None``: no focus.
    focus_share
        Probability in ``[0, 1)`` that a crop draws from ``focus_electrons``.
    channels
        The U-Net's widths per level.
    pilot
        Give the network the Wiener estimate (:func:`wiener_pilot`) as a third input and
        train it to correct it (residual; the last layer starts at zero, so training starts
        from the Wiener method); the loss of each crop is then divided by the pilot's own
        squared error plus :data:`PILOT_LOSS_FLOOR`, so that every dose counts alike.
    particle_weight
        Extra weight ``β`` of the loss on the particles: each pixel's squared error is
        weighted by ``1 + β`` on the particles (:func:`particle_mask` of the noise-free crop)
        and by 1 elsewhere. With ``β = 0`` the flat ice (~90 % of the pixels) dominates
        the loss, and the network learns to flatten the ice at the particles' expense.
    seed
        Seeds the weights, the crops and the noise.
    """

    steps: int = 3000
    batch: int = 8
    crop_px: int = 96
    learning_rate: float = 1e-3
    electrons: tuple[float, float] = TRAINED_ELECTRONS
    channels: tuple[int, ...] = (16, 32, 64, 96)
    pilot: bool = True
    particle_weight: float = 0.0
    focus_electrons: tuple[float, float] | None = None
    focus_share: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "crop_px"):
            require_positive_int(name, getattr(self, name))
        require_positive("learning_rate", self.learning_rate)
        if not (isinstance(self.particle_weight, (int, float)) and self.particle_weight >= 0):
            raise ValueError(f"particle_weight must be a number ≥ 0, got {self.particle_weight!r}")
        lo, hi = self.electrons
        require_positive("electrons", lo, "e/px")
        if not hi >= lo:
            raise ValueError(f"electrons must be (low, high) with high ≥ low, got {self.electrons}")
        if not (isinstance(self.focus_share, (int, float)) and 0 <= self.focus_share < 1):
            raise ValueError(f"focus_share must be a number in [0, 1), got {self.focus_share!r}")
        if self.focus_electrons is not None:
            f_lo, f_hi = self.focus_electrons
            if not lo <= f_lo <= f_hi <= hi:
                raise ValueError(
                    f"focus_electrons must be (low, high) inside electrons {self.electrons} "
                    f"e/px, got {self.focus_electrons} e/px"
                )
        elif self.focus_share > 0:
            raise ValueError(
                f"focus_share = {self.focus_share} needs focus_electrons (e/px), got None"
            )
        if self.crop_px % 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"crop_px must be a multiple of {2 ** (len(self.channels) - 1)}, got "
                f"{self.crop_px} px"
            )


def particle_mask(clean: torch.Tensor) -> torch.Tensor:
    """Where ``(B, ny, nx)`` noise-free intensities hold a particle (boolean, same shape):
    the 7 × 7 local mean of ``|I − mean(I)|`` above :data:`PARTICLE_CONTRAST`, dilated by
    :data:`PARTICLE_DILATION_PX`."""
    require_shape("clean", clean, ("B", "ny", "nx"))
    require_float_dtype("clean", clean)
    dev = (clean - clean.mean(dim=(-2, -1), keepdim=True)).abs()[:, None]
    local = F.avg_pool2d(dev, 7, stride=1, padding=3, count_include_pad=False)
    inside = (local > PARTICLE_CONTRAST).to(clean.dtype)
    k = 2 * PARTICLE_DILATION_PX + 1
    return F.max_pool2d(inside, k, stride=1, padding=PARTICLE_DILATION_PX)[:, 0] > 0


def _mtf_crop(detector: Detector, n: int, like: torch.Tensor) -> torch.Tensor:
    from tem_core.denoise._validate import transfer_function  # noqa: PLC0415

    mtf = transfer_function(detector, (n, n), like, None, invert=False)
    return torch.ones(n, n, dtype=like.dtype, device=like.device) if mtf is None else mtf


def train_denoiser(
    images: torch.Tensor,
    *,
    detector: Detector,
    settings: TrainSettings | None = None,
    callback=None,
) -> tuple[UNet, list[float]]:
    """Train the U-Net on noise-free intensities ``(K, ny, nx)`` (vacuum = 1).

    Each step: ``batch`` random crops (random flips and quarter turns), for each a total
    ``N`` drawn log-uniformly in ``settings.electrons``, exact counts ``S ~ Poisson(N·I)``
    (the sufficient statistic of ``n`` projections, so ``n`` and the dose need not be drawn
    separately), target ``K (N I / mean(S) − 1)``; loss: mean squared error after the
    detector's MTF. Deterministic for a given ``settings.seed`` on one device and thread
    count. Returns the model (eval mode, on the images' device and dtype) and the loss of
    every step. ``callback(step, loss, model)`` is called after each step when given.
    """
    settings = TrainSettings() if settings is None else settings
    images = check_image("images", images, min_size=settings.crop_px)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (K, ny, nx), got {tuple(images.shape)}")
    g = torch.Generator(device="cpu").manual_seed(settings.seed)
    model = UNet(settings.channels, in_channels=3 if settings.pilot else 2)
    _initialise(model, g)
    if settings.pilot:
        with torch.no_grad():
            model.head.weight.zero_()
    model = model.to(device=images.device, dtype=images.dtype).train()
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / settings.steps, 1.0))),
    )
    c = settings.crop_px
    mtf = _mtf_crop(detector, c, images)
    lo, hi = (math.log(v) for v in settings.electrons)
    k_img, ny, nx = images.shape
    losses = []
    for step in range(settings.steps):
        idx = torch.randint(k_img, (settings.batch,), generator=g)
        r0 = torch.randint(ny - c + 1, (settings.batch,), generator=g)
        c0 = torch.randint(nx - c + 1, (settings.batch,), generator=g)
        turns = torch.randint(4, (settings.batch,), generator=g)
        flips = torch.randint(2, (settings.batch,), generator=g)
        crops = []
        for i in range(settings.batch):
            crop = images[idx[i], r0[i] : r0[i] + c, c0[i] : c0[i] + c]
            crop = torch.rot90(crop, int(turns[i]), dims=(-2, -1))
            crops.append(crop.flip(-1) if flips[i] else crop)
        clean = torch.stack(crops)
        log_n = lo + (hi - lo) * torch.rand(settings.batch, generator=g)
        if settings.focus_share > 0:  # only then more draws: the default's stream unchanged
            f_lo, f_hi = (math.log(v) for v in settings.focus_electrons)
            focus = f_lo + (f_hi - f_lo) * torch.rand(settings.batch, generator=g)
            pick = torch.rand(settings.batch, generator=g) < settings.focus_share
            log_n = torch.where(pick, focus, log_n)
        n_e = torch.exp(log_n)
        rate = clean * n_e.to(clean)[:, None, None]
        # Poisson draws on the CPU from the seeded generator (device-independent noise)
        counts = torch.poisson(rate.detach().cpu().double(), generator=g).to(clean)
        x, m = _inputs(counts, settings.pilot)
        target = CONTRAST_SCALE * (rate / m[:, 0] - 1.0)
        out = model(x)[:, 0]
        if settings.pilot:
            out = out + x[:, 2]
        residual = ifft2(fft2(out - target) * mtf).real
        if settings.particle_weight > 0:
            weight = 1.0 + settings.particle_weight * particle_mask(clean).to(clean.dtype)
        else:
            weight = torch.ones_like(clean)
        per_crop = (weight * residual**2).mean(dim=(-2, -1))
        if settings.pilot:
            # relative to the pilot's own error (detached, floored): every dose counts alike
            # in dB, instead of the noisiest crops dominating the squared error
            with torch.no_grad():
                pilot_res = ifft2(fft2(x[:, 2] - target) * mtf).real
                base = (weight * pilot_res**2).mean(dim=(-2, -1))
                floor = PILOT_LOSS_FLOOR * weight.mean(dim=(-2, -1))
            per_crop = per_crop / (base + floor)
        loss = per_crop.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1], model)
    return model.eval(), losses
