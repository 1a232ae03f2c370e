"""A denoiser that uses the detector model: exact counts, their sum, Anscombe, TV + SURE.

The simulator's detector (and TEM-simulator's) records ``y_j = gain · MTF ⊛ e_j`` with
``e_j ~ Poisson(λ)`` (DQE = 1; for DQE < 1 the electrons have variance ``λ / DQE`` and
``DQE · e_j`` is close to ``Poisson(DQE · λ)``). Four facts make a better estimator than
fitting ``λ`` through sampled surrogate losses:

1. **The counts are recoverable.** The MTF has no zeros, so
   ``e_j = F⁻¹[F[y_j] / (gain · MTF)]`` exactly: the blur hides nothing, it only correlates
   the noise. After this step the noise is white and its variance is known per pixel.
2. **The sum is sufficient.** For independent Poisson projections of one view
   ``S = Σ_j e_j ~ Poisson(n λ)`` carries all the information about ``λ`` (the likelihood
   depends on the data only through ``S``): the maximum-likelihood estimate is ``S / n``,
   whose blurred version ``gain · MTF(S/n)`` is exactly the mean of the projections. Any
   gain over the mean therefore has to come from a prior, and the prior acts on one image.
3. **The noise level is known.** The Anscombe transform ``z = 2√(S + 3/8)`` makes the noise
   approximately Gaussian with unit variance whatever the dose (:func:`anscombe_variance`),
   so the regularisation weight can be chosen from the data alone by Stein's unbiased risk
   estimate (SURE), which needs exactly that variance; nothing is tuned per image.
4. **The prior.** A specimen in ice is mostly a flat background with compact particles:
   total variation (Rudin, Osher & Fatemi 1992) flattens the background and keeps edges.
   The MAP estimate ``argmin_u ½‖u − z‖² + w·TV(u)`` (the Gaussian likelihood of the
   variance-stabilised data: a Poisson MAP with TV through the Anscombe approximation) is
   computed by fast gradient projection on the dual (Beck & Teboulle 2009) for a short
   ladder of weights, warm-started, and the weight with the smallest SURE is kept.

The estimate is mapped back with the exact unbiased inverse Anscombe transform (Mäkitalo &
Foi 2011, IEEE TIP 20:99, closed-form approximation), divided by ``n`` and blurred:
``gain · MTF(λ̂)``, the estimate of the noise-free detector image. Two-pass non-local means
(Buades, Coll & Morel 2005) is offered as an alternative prior (``regulariser="nlm"``).

All of it is torch (FFTs, pooling, elementwise updates), so it follows the input's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tem_core._fft import fft2, ifft2
from tem_core.denoise._validate import (
    check_detector,
    check_image,
    check_image_stack,
    check_positive_counts,
    transfer_function,
)
from tem_core.denoise.blend import network_estimate
from tem_core.denoise.learned import check_symmetries, check_weights_path
from tem_core.denoise.wiener import WienerSettings, local_wiener
from tem_core.detector import Detector, apply_mtf
from tem_core.validation import (
    refuse_half_precision,
    require_generator,
    require_in_range,
    require_nonnegative,
    require_positive,
)

__all__ = [
    "NLMSettings",
    "PoissonResult",
    "PoissonSettings",
    "REGULARISERS",
    "anscombe",
    "anscombe_variance",
    "denoise_poisson",
    "gaussian_filter",
    "inverse_anscombe",
    "mean_of_projections",
    "nlm_denoise",
    "recover_electrons",
    "tv_denoise",
    "tv_sure",
]


@dataclass(frozen=True, kw_only=True)
class NLMSettings:
    """Non-local means settings, for unit noise variance.

    The defaults were tuned once (``benchmarks/denoise.py --tune``: a 3 × 4 grid of the two
    strengths, search radius 5) on a separate image, the TMV scene with the segments moved
    and turned, over doses 100-2000 e/nm² and 2-50 projections; they are used unchanged for
    every dose and every number of projections.

    Parameters
    ----------
    patch_radius_px
        Patches are ``(2r + 1)²`` pixels.
    search_radius_px
        Candidates within ``±r`` pixels in x and y.
    strength
        ``h / σ`` of the first pass: weights ``exp(−max(d² − 2σ², 0) / h²)`` with ``d²``
        the mean squared patch difference.
    second_pass_strength
        ``h / σ`` of the second pass (distances measured on the first estimate); 0 skips it.
    """

    patch_radius_px: int = 3
    search_radius_px: int = 5
    strength: float = 0.35
    second_pass_strength: float = 0.15

    def __post_init__(self) -> None:
        for name in ("patch_radius_px", "search_radius_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r} px")
        require_positive("strength", self.strength)
        require_nonnegative("second_pass_strength", self.second_pass_strength)


#: Priors offered by :func:`denoise_poisson`.
REGULARISERS = ("tv", "nlm", "wiener", "network")


@dataclass(frozen=True, kw_only=True)
class PoissonSettings:
    """Settings of :func:`denoise_poisson` (none is tuned per image).

    Parameters
    ----------
    regulariser
        ``"tv"`` (default): total variation with the weight chosen by SURE;
        ``"nlm"``: two-pass non-local means (:class:`NLMSettings`);
        ``"wiener"``: the two-stage local spectral Wiener filter
        (:func:`tem_core.denoise.wiener.local_wiener`, :class:`WienerSettings`), the best
        of the three classical priors on the particles of the benchmark scene;
        ``"network"``: a U-Net trained on the simulator's own images with this exact noise
        model (:mod:`tem_core.denoise.learned`; trained at 5 Å pixels, 200 kV, 3-7 µm
        underfocus, 25-50 000 electrons per pixel summed over the projections; warns
        outside that range).
    tv_weights
        Candidate TV weights in units of the (unit) noise standard deviation after the
        Anscombe transform; the one with the smallest Stein unbiased risk estimate is kept
        (:func:`tv_sure`): the noise level is known exactly, so the risk can be estimated
        from the data alone. ``inf`` stands for the constant image (the limit of infinite
        weight), which wins where the specimen's signal is below the noise.
    tv_iterations
        Iterations of the fast dual gradient projection for the first weight (each further
        weight is warm-started and gets half as many).
    nlm
        Settings of the NLM prior.
    wiener
        Settings of the local Wiener filter.
    weights_path
        File of trained network weights (``"network"`` prior); ``None``: the weights shipped
        with the package (``tem_core/data/denoise_unet.pt``); a tuple of files: the
        average of those networks (an ensemble, each over ``network_symmetries``).
    network_symmetries
        The ``"network"`` prior's estimate is averaged over this many of the square's
        symmetries (1, 2, 4 or 8: none, the half turn, the quarter turns, the quarter turns
        and mirrors; test-time augmentation, :func:`tem_core.denoise.learned.network_denoise`).
        The default was chosen once on the benchmark's separate tuning scene
        (``benchmarks/denoise.py --tune-network``), never on the benchmark's scene.
    network_blend
        Blend the network's estimate with the Wiener estimate, per image, with the weight
        that minimises SURE after the MTF (:func:`tem_core.denoise.blend.sure_blend`).
    """

    regulariser: str = "tv"
    tv_weights: tuple[float, ...] = (math.inf, 16.0, 4.0, 2.0, 1.41, 1.0)
    tv_iterations: int = 100
    nlm: NLMSettings = NLMSettings()
    wiener: WienerSettings = WienerSettings()
    weights_path: str | tuple[str, ...] | None = None
    network_symmetries: int = 2
    network_blend: bool = True

    def __post_init__(self) -> None:
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, got {self.regulariser!r}")
        if len(self.tv_weights) == 0:
            raise ValueError("tv_weights must hold at least one weight, got none")
        bad = [w for w in self.tv_weights if not (isinstance(w, int | float) and w > 0)]
        if bad or any(math.isnan(w) for w in self.tv_weights):
            raise ValueError(f"tv_weights must be > 0 (inf: constant image), got {bad[:1]}")
        if (
            isinstance(self.tv_iterations, bool)
            or not isinstance(self.tv_iterations, int)
            or (self.tv_iterations < 1)
        ):
            raise ValueError(
                f"tv_iterations must be a positive integer, got {self.tv_iterations!r}"
            )
        if not isinstance(self.nlm, NLMSettings):
            raise TypeError(f"nlm must be NLMSettings, got {type(self.nlm).__name__}")
        if not isinstance(self.wiener, WienerSettings):
            raise TypeError(f"wiener must be WienerSettings, got {type(self.wiener).__name__}")
        paths = check_weights_path("weights_path", self.weights_path)
        object.__setattr__(self, "weights_path", paths)
        check_symmetries("network_symmetries", self.network_symmetries)
        if not isinstance(self.network_blend, bool):
            raise ValueError(f"network_blend must be True or False, got {self.network_blend!r}")


@dataclass(frozen=True, eq=False)
class PoissonResult:
    """``denoised``: ``gain · MTF(λ̂)`` [counts]; ``rate``: ``λ̂``, the expected electrons
    per pixel before the MTF [electrons/pixel]; ``intensity``: ``λ̂ / (dose · s²)``, the
    image intensity with vacuum = 1 (only when the dose and pixel size were given); all
    ``(..., ny, nx)``."""

    denoised: torch.Tensor
    rate: torch.Tensor
    intensity: torch.Tensor | None = None


def anscombe(counts: torch.Tensor) -> torch.Tensor:
    """Anscombe transform ``2√(k + 3/8)`` (Poisson → approximately unit-variance Gaussian)."""
    refuse_half_precision("counts", counts)
    return 2.0 * torch.sqrt(counts.clamp_min(0.0) + 0.375)


def anscombe_variance(mean_counts: float) -> float:
    """Exact variance of ``anscombe(k)`` for ``k ~ Poisson(mean_counts)`` (1 for large means).

    Summed over the Poisson pmf (below 1 at low counts: 0.96 at 10, 0.995 at 50).
    """
    mu = max(float(mean_counts), 1e-6)
    k = torch.arange(0, int(mu + 12 * math.sqrt(mu) + 30), dtype=torch.float64)
    pmf = torch.exp(k * math.log(mu) - mu - torch.lgamma(k + 1))
    z = anscombe(k)
    m = (pmf * z).sum()
    return float((pmf * (z - m) ** 2).sum())


def inverse_anscombe(z: torch.Tensor) -> torch.Tensor:
    """Exact unbiased inverse of :func:`anscombe` (Mäkitalo & Foi 2011, closed form), ≥ 0.

    Values below ``2√(3/8)`` (the transform of 0 counts) map to 0.
    """
    refuse_half_precision("z", z)
    zero = 2.0 * math.sqrt(0.375)
    zs = z.clamp_min(zero)
    c = math.sqrt(1.5)
    out = 0.25 * zs**2 + 0.25 * c / zs - 1.375 / zs**2 + 0.625 * c / zs**3 - 0.125
    return torch.where(z > zero, out.clamp_min(0.0), torch.zeros_like(out))


def recover_electrons(
    projections: torch.Tensor, *, detector: Detector, mtf: torch.Tensor | None = None
) -> torch.Tensor:
    """Undo gain and MTF: ``F⁻¹[F[y] / (gain · MTF)]`` [electrons/pixel], same shape.

    Exact for the simulator's detector (noise before MTF, periodic field). Raises when the
    MTF has values below :data:`tem_core.denoise._validate.MIN_INVERTIBLE_MTF`.
    """
    projections = check_image_stack(
        "projections", projections[None] if projections.ndim == 2 else projections
    )
    detector = check_detector(detector)
    shape = tuple(projections.shape[-2:])
    mtf_t = transfer_function(detector, shape, projections, mtf, invert=True)
    gain = torch.as_tensor(
        detector.gain_counts_per_e, device=projections.device, dtype=projections.dtype
    )
    electrons = projections / gain
    if mtf_t is not None:
        electrons = ifft2(fft2(electrons) / mtf_t).real
    return electrons


def mean_of_projections(projections: torch.Tensor) -> torch.Tensor:
    """The mean of ``(..., n, ny, nx)`` projections over ``n`` (the ML baseline)."""
    projections = check_image_stack("projections", projections)
    return projections.mean(dim=-3)


def gaussian_filter(image: torch.Tensor, *, sigma_px: float) -> torch.Tensor:
    """Periodic Gaussian blur of ``(..., ny, nx)`` images with standard deviation ``sigma_px``."""
    require_nonnegative("sigma_px", sigma_px, "px")
    image = check_image("image", image)
    ny, nx = image.shape[-2:]
    fy = torch.fft.fftfreq(ny, device=image.device, dtype=image.dtype)[:, None]
    fx = torch.fft.fftfreq(nx, device=image.device, dtype=image.dtype)[None, :]
    kernel = torch.exp(-2.0 * math.pi**2 * sigma_px**2 * (fx**2 + fy**2))
    return ifft2(fft2(image) * kernel).real


def _nlm_pass(
    z: torch.Tensor, guide: torch.Tensor, *, h: float, noise_var: float, patch: int, search: int
) -> torch.Tensor:
    """One non-local-means pass over ``(B, ny, nx)``: weights from ``guide``, averages of ``z``."""
    b, ny, nx = z.shape
    pad = search + patch
    gp = F.pad(guide[:, None], (pad,) * 4, mode="reflect")[:, 0]
    zp = F.pad(z[:, None], (search,) * 4, mode="reflect")[:, 0]
    centre = gp[:, search : search + ny + 2 * patch, search : search + nx + 2 * patch]
    acc = torch.zeros_like(z)
    wsum = torch.zeros_like(z)
    wmax = torch.zeros_like(z)
    width = 2 * search + 1
    kernel = 2 * patch + 1
    for dy in range(width):
        shifted = torch.stack(
            [gp[:, dy : dy + ny + 2 * patch, dx : dx + nx + 2 * patch] for dx in range(width)],
            dim=1,
        )
        dist = F.avg_pool2d((shifted - centre[:, None]) ** 2, (1, kernel), stride=1)
        dist = F.avg_pool2d(dist, (kernel, 1), stride=1)  # separable box filter
        w = torch.exp(-(dist - noise_var).clamp_min(0.0) / h**2)
        if dy == search:
            w[:, search] = 0.0  # the centre pixel gets the largest other weight below
        wmax = torch.maximum(wmax, w.amax(dim=1))
        values = torch.stack([zp[:, dy : dy + ny, dx : dx + nx] for dx in range(width)], dim=1)
        acc += (w * values).sum(dim=1)
        wsum += w.sum(dim=1)
    wmax = wmax.clamp_min(1e-30)  # all candidates far away: keep the pixel itself
    acc += wmax * z
    wsum += wmax
    return acc / wsum.clamp_min(torch.finfo(z.dtype).tiny)


def _grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gy = torch.zeros_like(u)
    gx = torch.zeros_like(u)
    gy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    gx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return gy, gx


def _div(py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Minus the adjoint of :func:`_grad` (Neumann boundaries)."""
    dy = torch.zeros_like(py)
    dx = torch.zeros_like(px)
    dy[..., 0, :] = py[..., 0, :]
    dy[..., 1:-1, :] = py[..., 1:-1, :] - py[..., :-2, :]
    dy[..., -1, :] = -py[..., -2, :]
    dx[..., :, 0] = px[..., :, 0]
    dx[..., :, 1:-1] = px[..., :, 1:-1] - px[..., :, :-2]
    dx[..., :, -1] = -px[..., :, -2]
    return dy + dx


def _tv_dual(
    image: torch.Tensor, weight: float, n_iterations: int, dual: tuple[torch.Tensor, ...] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast gradient projection on the ROF dual (Beck & Teboulle 2009, FGP), step 1/8."""
    py, px = (torch.zeros_like(image), torch.zeros_like(image)) if dual is None else dual
    ry, rx = py, px
    t = 1.0
    for _ in range(n_iterations):
        gy, gx = _grad(_div(ry, rx) - image / weight)
        qy, qx = ry + gy / 8.0, rx + gx / 8.0
        scale = torch.sqrt(qy**2 + qx**2).clamp_min(1.0)
        qy, qx = qy / scale, qx / scale
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        ry = qy + ((t - 1.0) / t_next) * (qy - py)
        rx = qx + ((t - 1.0) / t_next) * (qx - px)
        py, px, t = qy, qx, t_next
    return py, px


def tv_denoise(image: torch.Tensor, *, weight: float, n_iterations: int = 200) -> torch.Tensor:
    """Total-variation denoising (ROF): ``argmin_u ½‖u − f‖² + weight · TV(u)``.

    Fast gradient projection on the dual (Beck & Teboulle 2009) on ``(..., ny, nx)``
    images (isotropic TV, Neumann boundaries); ``weight`` in the image's units.
    """
    image = check_image("image", image)
    require_positive("weight", weight)
    py, px = _tv_dual(image, float(weight), n_iterations, None)
    return image - weight * _div(py, px)


def tv_sure(
    image: torch.Tensor,
    *,
    weights: tuple[float, ...],
    n_iterations: int,
    generator: torch.Generator,
    probe_step: float = 0.05,
) -> tuple[torch.Tensor, float]:
    """TV denoising of one ``(ny, nx)`` image with unit Gaussian noise, weight by SURE.

    For each weight (largest first, each solve warm-started from the previous one) Stein's
    unbiased risk estimate ``‖z − u‖²/N − 1 + 2 div(u)/N`` is evaluated with a Monte-Carlo
    divergence (Ramani, Blu & Unser 2008): ``div ≈ bᵀ(u(z + εb) − u(z))/ε`` for one
    Rademacher probe ``b`` from ``generator`` and ``ε = probe_step``. Returns the estimate
    of the weight with the smallest risk, and that weight. A weight ``inf`` is the constant
    image ``mean(z)`` (divergence 1).
    """
    image = check_image("image", image)
    require_generator(generator, image, "image")
    probe = torch.randint(0, 2, image.shape, generator=generator, device=image.device)
    probe = probe.to(image.dtype) * 2 - 1
    n = image.numel()
    dual = None
    best = (math.inf, image, float(weights[0]))
    solved = 0
    for w in weights:
        if math.isinf(w):  # the constant image: divergence 1
            u = torch.full_like(image, float(image.mean()))
            risk = float(((image - u) ** 2).sum()) / n - 1.0 + 2.0 / n
            if risk < best[0]:
                best = (risk, u, math.inf)
            continue
        dual = _tv_dual(
            image, float(w), n_iterations if solved == 0 else max(n_iterations // 2, 1), dual
        )
        solved += 1
        u = image - w * _div(*dual)
        moved = _tv_dual(image + probe_step * probe, float(w), max(n_iterations // 2, 1), dual)
        u_moved = image + probe_step * probe - w * _div(*moved)
        div = float((probe * (u_moved - u)).sum()) / probe_step
        risk = float(((image - u) ** 2).sum()) / n - 1.0 + 2.0 * div / n
        if risk < best[0]:
            best = (risk, u, float(w))
    return best[1], best[2]


def nlm_denoise(
    image: torch.Tensor, *, sigma: float | torch.Tensor, settings: NLMSettings | None = None
) -> torch.Tensor:
    """Non-local means for ``(..., ny, nx)`` images with Gaussian noise of std ``sigma``.

    ``sigma`` is a float or a tensor of the batch shape (one per image) [image units].
    """
    settings = NLMSettings() if settings is None else settings
    image = check_image("image", image)
    require_positive("sigma", sigma)
    if min(image.shape[-2:]) <= settings.search_radius_px + settings.patch_radius_px:
        raise ValueError(
            f"image must be larger than search_radius_px + patch_radius_px "
            f"({settings.search_radius_px + settings.patch_radius_px} px), "
            f"got {tuple(image.shape[-2:])}"
        )
    batch = image.shape[:-2]
    z = image.reshape(-1, *image.shape[-2:])
    s = torch.as_tensor(sigma, device=z.device, dtype=z.dtype).reshape(-1)
    s = torch.broadcast_to(s, (z.shape[0],))[:, None, None]
    z = z / s  # unit noise variance
    kw = dict(patch=settings.patch_radius_px, search=settings.search_radius_px)
    out = _nlm_pass(z, z, h=settings.strength, noise_var=2.0, **kw)
    if settings.second_pass_strength > 0:
        out = _nlm_pass(z, out, h=settings.second_pass_strength, noise_var=0.0, **kw)
    return (out * s).reshape(*batch, *image.shape[-2:])


def denoise_poisson(
    projections: torch.Tensor,
    *,
    detector: Detector,
    settings: PoissonSettings | None = None,
    mtf: torch.Tensor | None = None,
    dose_e_per_a2: float | None = None,
    sampling_a: float | None = None,
    generator: torch.Generator | None = None,
) -> PoissonResult:
    """Denoise ``n`` projections of one view with the known detector model (module docstring).

    Parameters
    ----------
    projections
        ``(..., n, ny, nx)`` detector counts of the same view (``n ≥ 1``) [counts].
    detector
        The camera: gain, DQE and MTF (noise before MTF, as in the simulator).
    settings
        :class:`PoissonSettings` (the prior; nothing is tuned per image).
    mtf
        ``(ny, nx)`` MTF in FFT order overriding the detector's; must have no zeros.
    dose_e_per_a2, sampling_a
        Dose per projection [e/Å²] and pixel size [Å] (both > 0, optional): with them the
        result also holds the intensity estimate (vacuum = 1).
    generator
        Source of the SURE probes (TV prior, network blend); ``None``: a generator seeded
        with 0 on the projections' device, so the result is deterministic.

    Returns
    -------
    PoissonResult
        ``denoised`` ``(..., ny, nx)`` [counts], ``rate`` [electrons/pixel], ``intensity``.
    """
    settings = PoissonSettings() if settings is None else settings
    if not isinstance(settings, PoissonSettings):
        raise TypeError(f"settings must be PoissonSettings, got {type(settings).__name__}")
    projections = check_image_stack("projections", projections)
    check_positive_counts("projections", projections)
    detector = check_detector(detector)
    if (dose_e_per_a2 is None) != (sampling_a is None):
        raise ValueError("dose_e_per_a2 and sampling_a must be given together (or neither)")
    if dose_e_per_a2 is not None:
        require_positive("dose_e_per_a2", dose_e_per_a2, "e/Å²")
        require_positive("sampling_a", sampling_a, "Å")
    n = projections.shape[-3]
    electrons = recover_electrons(projections, detector=detector, mtf=mtf)
    dqe = torch.as_tensor(detector.dqe, device=electrons.device, dtype=electrons.dtype)
    require_in_range("dqe", float(dqe.mean()), 1e-6, 1.0)
    total = (electrons * dqe).sum(dim=-3)  # ≈ Poisson(n · dqe · λ)
    z = anscombe(total)
    # the SURE probes: seeded with 0 unless a generator is given (deterministic output)
    probe_generator = generator or torch.Generator(device=z.device).manual_seed(0)
    if settings.regulariser == "nlm":
        rate = inverse_anscombe(nlm_denoise(z, sigma=1.0, settings=settings.nlm)) / (n * dqe)
    elif settings.regulariser == "wiener":
        # the exact variance of the Anscombe-transformed counts at each image's mean (< 1)
        flat_z = z.reshape(-1, *z.shape[-2:])
        flat_s = total.reshape(-1, *z.shape[-2:])
        filtered = torch.stack(
            [
                local_wiener(
                    img, noise_var=anscombe_variance(float(s.mean())), settings=settings.wiener
                )
                for img, s in zip(flat_z, flat_s, strict=True)
            ]
        ).reshape(z.shape)
        rate = inverse_anscombe(filtered) / (n * dqe)
    elif settings.regulariser == "network":
        rate = network_estimate(
            total,
            weights_path=settings.weights_path,
            symmetries=settings.network_symmetries,
            blend=settings.network_blend,
            mtf=transfer_function(detector, tuple(total.shape[-2:]), total, mtf, invert=False),
            generator=probe_generator,
            sampling_a=sampling_a,
        ) / (n * dqe)
    else:
        rates = []
        for img, counts in zip(
            z.reshape(-1, *z.shape[-2:]), total.reshape(-1, *z.shape[-2:]), strict=True
        ):
            u, weight = tv_sure(
                img,
                weights=settings.tv_weights,
                n_iterations=settings.tv_iterations,
                generator=probe_generator,
            )
            # the constant image: the maximum-likelihood constant, mean(S)/n, exactly
            rates.append(
                torch.full_like(counts, float(counts.mean()))
                if math.isinf(weight)
                else inverse_anscombe(u)
            )
        rate = torch.stack(rates).reshape(z.shape) / (n * dqe)
    shape = tuple(rate.shape[-2:])
    mtf_t = transfer_function(detector, shape, rate, mtf, invert=False)
    blurred = apply_mtf(rate, mtf_t) if mtf_t is not None else rate
    gain = torch.as_tensor(detector.gain_counts_per_e, device=rate.device, dtype=rate.dtype)
    intensity = None
    if dose_e_per_a2 is not None:
        intensity = rate / (float(dose_e_per_a2) * float(sampling_a) ** 2)
    return PoissonResult(gain * blurred, rate, intensity)
