"""CTF fitting: defocus, astigmatism and the ring envelope from a micrograph's power spectrum.

Inverse stage. The method follows CTFFIND4 (Rohou & Grigorieff 2015, J. Struct. Biol.
192:216) in its essentials:

1. the amplitude spectrum ``S = √P`` of the micrograph, ``P`` the periodogram averaged over
   ``tile_px`` tiles (Hann window, plane detrend; :func:`micrograph_power_spectrum`);
2. background subtraction: ``D = S − B(|k|)``, ``B`` the radial profile of ``S`` smoothed by
   a running mean; once a first defocus is known the window is one local ring period, over
   which ``sin²`` averages to its mean exactly, so ``D`` holds only the rings. ``D`` is then
   divided by its running radial rms so that every ring counts equally;
3. the score: the normalised cross-correlation, over the annulus ``resolution_range_a``, of
   ``D`` with the model ``sin²(χ(k) − φ)``, ``χ`` the aberration phase of
   :func:`tem_core.optics.aberration_phase` (defocus > 0 underfocus, astigmatism in CTFFIND's
   convention ``Δf(φ) = Δf + (a/2) cos 2(φ − φ_a)``) and ``φ = φ_pp + atan(A/√(1 − A²))``
   with the amplitude contrast ``A``;
4. a 1-D search over the radial average (defocus on a grid fine enough that the phase at the
   highest frequency moves by < π/4 per step), then a 2-D grid over the astigmatism
   (magnitude × angle) and a local L-BFGS refinement of (Δf, a cos 2φ_a, a sin 2φ_a);
5. optionally (``find_phase_shift=True``, CTFFIND4's "find additional phase shift") an
   additional phase shift ``φ_pp`` in a bounded range: the 1-D search runs over (Δf, φ_pp)
   on a grid (phase step ≤ π/16), the 2-D refinement over (Δf, a cos 2φ_a, a sin 2φ_a, φ_pp);
   a fit that leaves the range is clamped to the bound and refined again with φ_pp fixed.
   Its uncertainty (and the defocus's) is a delete-a-group jackknife over the tiles: the
   tiles, in up to eight contiguous groups, are left out one group at a time, the spectrum
   of the rest refined from the full fit, and ``√((G−1)/G Σ (θ_g − θ̄)²)`` reported. The
   phase shift and the amplitude contrast move the zeros alike (only ``φ`` counts), so
   ``φ_pp`` is the offset beyond ``atan(A/√(1 − A²))`` of the given ``A``;
6. the ring envelope: in bands of ``|k|`` the regression of ``S − B`` on the model gives the
   ring modulation relative to the background; ``exp(−B_env k²/4)`` is fitted to it, and the
   fit resolution is the highest band up to which the rings correlate with the model
   (correlation ≥ 0.3, as CTFFIND's "fit resolution" uses a threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tem_core.mtf_fit import averaged_periodogram
from tem_core.optics import Microscope, aberration_phase
from tem_core.validation import (
    require_finite,
    require_in_range,
    require_positive,
    require_positive_int,
)

__all__ = ["CTFFitResult", "fit_ctf", "micrograph_power_spectrum", "ring_background"]


@dataclass(frozen=True, eq=False)
class CTFFitResult:
    """Fitted CTF parameters (internal units) and the ring envelope.

    ``defocus_a`` is the mean defocus [Å] (> 0 underfocus), ``astigmatism_a`` ≥ 0 [Å] with
    ``astigmatism_angle_rad`` in [0, π); ``defocus_u_a``/``defocus_v_a`` as in CTFFIND.
    ``score`` is the 2-D normalised cross-correlation; ``envelope_b_a2`` the B-factor [Å²]
    of the ring modulation ``m(k) = m₀ exp(−B k²/4)``; ``fit_resolution_a`` [Å];
    ``band_frequency_per_a``, ``band_modulation`` (ring amplitude / background) and
    ``band_correlation`` per band. ``phase_shift_rad`` [rad] is the additional phase shift
    (fitted with ``find_phase_shift=True``, else the value given) in the sign convention of
    :attr:`tem_core.optics.Microscope.phase_plate_rad`; ``phase_shift_error_rad`` and
    ``defocus_error_a`` are the jackknife standard errors over tiles (``nan`` unless the phase
    shift was fitted).
    """

    defocus_a: float
    astigmatism_a: float
    astigmatism_angle_rad: float
    score: float
    envelope_b_a2: float
    modulation_at_zero: float
    fit_resolution_a: float
    band_frequency_per_a: torch.Tensor
    band_modulation: torch.Tensor
    band_correlation: torch.Tensor
    phase_shift_rad: float = 0.0
    phase_shift_error_rad: float = math.nan
    defocus_error_a: float = math.nan

    @property
    def defocus_u_a(self) -> float:
        return self.defocus_a + 0.5 * self.astigmatism_a

    @property
    def defocus_v_a(self) -> float:
        return self.defocus_a - 0.5 * self.astigmatism_a


def micrograph_power_spectrum(image: torch.Tensor, *, tile_px: int = 512) -> torch.Tensor:
    """Periodogram averaged over ``tile_px`` tiles overlapping by half, FFT order [counts²].

    Hann window and a least-squares plane removed per tile (ice gradients); with the Hann
    window, half-overlapping tiles are nearly independent and double the average.
    """
    sums, counts = _tile_group_power(image, tile_px, 1)
    return sums[0] / counts[0]


def _tile_group_power(
    image: torch.Tensor, tile_px: int, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodogram sums of the half-overlapping tiles in ``groups`` contiguous groups
    (row-major tile order) and the number of tiles in each: ``(G, t, t)``, ``(G,)``."""
    require_positive_int("tile_px", tile_px)
    if not isinstance(image, torch.Tensor) or image.ndim != 2:
        raise ValueError(f"image must be a 2-D tensor, got {type(image).__name__}")
    if min(image.shape) < tile_px:
        raise ValueError(f"tile_px must be <= the image size {tuple(image.shape)}, got {tile_px}")
    tiles = image.double().unfold(0, tile_px, tile_px // 2).unfold(1, tile_px, tile_px // 2)
    tiles = tiles.reshape(-1, tile_px, tile_px)
    groups = min(groups, tiles.shape[0])
    group_of = torch.arange(tiles.shape[0]) * groups // tiles.shape[0]
    sums = torch.zeros(groups, tile_px, tile_px, dtype=torch.float64, device=image.device)
    for start in range(0, tiles.shape[0], 16):  # bounded memory
        chunk = tiles[start : start + 16]
        for g in group_of[start : start + 16].unique().tolist():
            sel = chunk[group_of[start : start + 16] == g]
            sums[g] += averaged_periodogram(sel, taper="hann", detrend="plane") * sel.shape[0]
    counts = torch.bincount(group_of, minlength=groups).to(torch.float64)
    return sums, counts


class _Spectrum:
    """Amplitude spectrum with its frequency grid, restricted to the fitting annulus."""

    def __init__(self, power, sampling_a, k_lo, k_hi):
        n = power.shape[-1]
        self.dk = 1.0 / (n * sampling_a)
        f = torch.fft.fftfreq(n, d=sampling_a, dtype=torch.float64)
        self.ky, self.kx = torch.meshgrid(f, f, indexing="ij")
        self.k = torch.sqrt(self.kx**2 + self.ky**2)
        self.amplitude = torch.sqrt(power.clamp(min=0))
        self.bin = torch.round(self.k / self.dk).long()
        self.n_bins = int(self.bin.max()) + 1
        # one half-plane (the spectrum is point-symmetric)
        self.mask = (self.k >= k_lo) & (self.k <= k_hi) & (self.kx >= 0)
        self.k_lo, self.k_hi = k_lo, k_hi

    def radial(self, values):
        sums = torch.zeros(self.n_bins, dtype=torch.float64).index_add_(
            0, self.bin.flatten(), values.flatten()
        )
        counts = torch.zeros(self.n_bins, dtype=torch.float64).index_add_(
            0, self.bin.flatten(), torch.ones_like(values.flatten())
        )
        return sums / counts.clamp(min=1)

    def flatten(self, window):
        """Background-subtracted, rms-normalised rings ``D`` (2-D) and ``S − B``.

        ``window``: the radial window of :func:`_ring_window` (background over ±½ ring
        period, rms over ±1 period).
        """
        background = _window_mean(self.radial(self.amplitude), window, 0.5)[self.bin]
        rings = self.amplitude - background
        rms = torch.sqrt(_window_mean(self.radial(rings**2), window, 1.0))[self.bin]
        return rings / rms.clamp(min=1e-300), rings, background


def _interp(x, xp, fp):
    """Piecewise-linear ``fp(x)`` on increasing (non-decreasing) ``xp``, clamped at the ends."""
    i = torch.searchsorted(xp, x, right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[i - 1], xp[i]
    t = ((x - x0) / (x1 - x0).clamp(min=1e-300)).clamp(0.0, 1.0)
    return fp[i - 1] + t * (fp[i] - fp[i - 1])


def _window_mean(values, window, periods):
    """Mean of a radial profile over ``±periods`` ring periods at every bin.

    ``window = ("bins", half_width)``: uniform over ``±half_width·periods·2`` bins (no
    defocus known yet). ``window = ("phase", χ)``: the profile's integral over the phase
    ``χ`` (trapezoid rule, edges interpolated) across ``χ_i ± periods·π``, over its length,
    i.e. uniform in phase, clipped at the ends of the profile.
    """
    kind, data = window
    n = values.numel()
    if kind == "bins":
        half = int(round(2 * periods * data))
        c = torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])
        idx = torch.arange(n, device=values.device)
        lo, hi = (idx - half).clamp(0, n), (idx + half + 1).clamp(0, n)
        return (c[hi] - c[lo]) / (hi - lo)
    phase = data
    cum = torch.cat(
        [values.new_zeros(1), torch.cumsum(0.5 * (values[1:] + values[:-1]) * torch.diff(phase), 0)]
    )
    lo = (phase - periods * math.pi).clamp(float(phase[0]), float(phase[-1]))
    hi = (phase + periods * math.pi).clamp(float(phase[0]), float(phase[-1]))
    mean = (_interp(hi, phase, cum) - _interp(lo, phase, cum)) / (hi - lo).clamp(min=1e-300)
    return torch.where(hi - lo > 1e-12, mean, values)


def _ring_window(radial_k, wavelength_a, defocus_a, cs_a):
    """Radial window of the ring background: one ring period centred *in phase*.

    With a defocus, the background at bin ``i`` is the mean of the profile over the round
    CTF's phase ``χ_i ± π/2``, uniform in phase: ``sin²`` then averages to ½ over the
    window whatever the chirp of the rings and whatever the phase offset. A window uniform
    in k and centred on k (the earlier running mean) is not centred in phase where the
    rings chirp and leaves part of a ring in the background: a bias of the fitted phase of
    0.02-0.05 rad at 1.5-0.8 µm (measured on noise-free spectra). Without a defocus: 15
    bins, uniform.
    """
    if defocus_a is None:
        return ("bins", 7.0)
    lam = wavelength_a
    phase = math.pi * lam * (defocus_a * radial_k**2 - 0.5 * cs_a * lam**2 * radial_k**4)
    return ("phase", torch.cummax(phase, 0).values)  # beyond the Cs turn: flat, clipped


def ring_background(
    profile: torch.Tensor, k_per_a: torch.Tensor, *, defocus_a: float, microscope: Microscope
) -> torch.Tensor:
    """Background of a radial (or equiphase) amplitude profile under its Thon rings.

    The mean of ``profile`` over one ring period centred in phase at every bin, weighted
    uniformly in phase (:func:`fit_ctf`'s background, see :func:`_ring_window`): where the
    profile is ``B + c sin²(χ − φ)`` with ``B`` linear in phase over a ring, it returns ``B +
    c/2`` exactly, whatever ``φ``.

    Parameters
    ----------
    profile
        ``(n,)`` profile at ``k_per_a`` [any unit].
    k_per_a
        ``(n,)`` increasing spatial frequencies [1/Å] of the bins.
    defocus_a
        Defocus of the round CTF [Å] (> 0 underfocus).
    microscope
        Supplies the wavelength and Cs.
    """
    profile = torch.as_tensor(profile, dtype=torch.float64)
    k = torch.as_tensor(k_per_a, dtype=torch.float64)
    if profile.ndim != 1 or profile.shape != k.shape:
        raise ValueError(
            f"profile and k_per_a must be 1-D of one length, got {tuple(profile.shape)} and "
            f"{tuple(k.shape)}"
        )
    require_positive("defocus_a", defocus_a, "Å")
    window = _ring_window(k, microscope.wavelength_a, float(defocus_a), float(microscope.cs_a))
    return _window_mean(profile, window, 0.5)


def _phase_offset(amplitude_contrast: float, phase_shift_rad: float) -> float:
    # sin χ − A' cos χ ∝ sin(χ − atan A'), A' = A/√(1 − A²) (weak phase + amplitude object)
    return phase_shift_rad + math.atan2(amplitude_contrast, math.sqrt(1 - amplitude_contrast**2))


def _model(kx, ky, microscope, defocus, ax, ay, offset, dk=None):
    """``sin²(χ − offset)``; with ``dk`` [1/Å] the expectation of its Hann-windowed
    periodogram: the Hann window's power kernel ``(1/6, 2/3, 1/6)`` along each axis (the
    periodogram of a Hann-tapered tile is the spectrum convolved with ``|Ŵ|²``, which at
    the bins is ``(¼, 1, ¼)²`` normalised). Without it the rings of 3-5 bins near the fit's
    high-frequency limit look shifted (a fitted phase bias of 0.015 rad at 256² tiles)."""
    a = torch.sqrt(ax**2 + ay**2 + 1e-12)
    angle = 0.5 * torch.atan2(ay, ax)

    def at(qx, qy):
        chi, _, _ = aberration_phase(
            qx, qy, wavelength_a=microscope.wavelength_a, defocus_a=defocus, astigmatism_a=a,
            astigmatism_angle_rad=angle, cs_a=float(microscope.cs_a),
        )  # fmt: skip
        return torch.sin(chi - offset) ** 2

    if dk is None:
        return at(kx, ky)
    weights = (1 / 6, 2 / 3, 1 / 6)
    return sum(
        wi * wj * at(kx + (i - 1) * dk, ky + (j - 1) * dk)
        for i, wi in enumerate(weights)
        for j, wj in enumerate(weights)
    )


def _ncc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / torch.sqrt((x * x).sum(-1) * (y * y).sum(-1) + 1e-300)


def fit_ctf(
    image: torch.Tensor,
    *,
    sampling_a: float,
    microscope: Microscope,
    tile_px: int = 512,
    defocus_range_a: tuple[float, float] = (3000.0, 50000.0),
    resolution_range_a: tuple[float, float] = (30.0, 4.0),
    max_astigmatism_a: float = 3000.0,
    amplitude_contrast: float = 0.07,
    phase_shift_rad: float = 0.0,
    find_phase_shift: bool = False,
    phase_shift_range_rad: tuple[float, float] = (0.0, math.pi),
) -> CTFFitResult:
    """Fit defocus, astigmatism and the ring envelope to ``image`` (module docstring).

    Parameters
    ----------
    image
        ``(ny, nx)`` micrograph [counts], at least ``tile_px`` on each side.
    sampling_a
        Pixel size [Å].
    microscope
        Supplies the wavelength and Cs.
    tile_px
        Tile size of the averaged periodogram [px].
    defocus_range_a
        Search range of the mean defocus [Å] (> 0 underfocus).
    resolution_range_a
        ``(low, high)`` resolution limits of the fit [Å], e.g. (30, 4).
    max_astigmatism_a
        Largest astigmatism searched [Å].
    amplitude_contrast
        Fraction ``A`` in [0, 1) (0.07 for protein in ice).
    phase_shift_rad
        Additional phase shift [rad] (phase plate), fixed; with ``find_phase_shift`` it is
        fitted instead and must be left at 0.
    find_phase_shift
        Fit the additional phase shift as well (CTFFIND4's "find additional phase shift"),
        within ``phase_shift_range_rad``, with jackknife errors (module docstring, step 5).
    phase_shift_range_rad
        ``(low, high)`` bounds of the fitted phase shift [rad], ``0 < high − low ≤ π``
        (CTFFIND's default range is 0 to π, for phase plates); negative values allow an
        offset smaller than the amplitude contrast's.
    """
    require_positive("sampling_a", sampling_a, "Å")
    lo_df, hi_df = (float(v) for v in defocus_range_a)
    require_positive("defocus_range_a", [lo_df, hi_df], "Å")
    if not hi_df > lo_df:
        raise ValueError(f"defocus_range_a must be increasing, got {defocus_range_a} Å")
    res_lo, res_hi = (float(v) for v in resolution_range_a)
    require_positive("resolution_range_a", [res_lo, res_hi], "Å")
    if not res_lo > res_hi >= 2.0 * sampling_a:
        raise ValueError(
            "resolution_range_a must be (low, high) with low > high >= 2 × sampling_a "
            f"({2 * sampling_a} Å), got {resolution_range_a} Å"
        )
    require_in_range("max_astigmatism_a", max_astigmatism_a, 0.0, math.inf, "Å")
    require_in_range("amplitude_contrast", amplitude_contrast, 0.0, 0.99)
    if not isinstance(find_phase_shift, bool):
        raise TypeError(f"find_phase_shift must be a bool, got {type(find_phase_shift).__name__}")
    require_finite("phase_shift_rad", phase_shift_rad, "rad")
    ph_lo, ph_hi = (float(v) for v in phase_shift_range_rad)
    require_finite("phase_shift_range_rad", [ph_lo, ph_hi], "rad")
    if not 0.0 < ph_hi - ph_lo <= math.pi + 1e-9:
        raise ValueError(
            "phase_shift_range_rad must be (low, high) with 0 < high - low <= π (the rings "
            f"repeat with period π in the phase), got {phase_shift_range_rad} rad"
        )
    if find_phase_shift and phase_shift_rad != 0.0:
        raise ValueError(
            "phase_shift_rad is fitted when find_phase_shift=True (give phase_shift_range_rad "
            f"instead), got {phase_shift_rad} rad"
        )
    sums, counts = _tile_group_power(image, tile_px, _JACKKNIFE_GROUPS if find_phase_shift else 1)
    spec = _Spectrum(sums.sum(0) / counts.sum(), sampling_a, 1.0 / res_lo, 1.0 / res_hi)
    base = _phase_offset(amplitude_contrast, 0.0)
    if find_phase_shift:
        n_phase = max(2, math.ceil((ph_hi - ph_lo) / (math.pi / 16))) + 1
        phases = torch.linspace(ph_lo, ph_hi, n_phase, dtype=torch.float64)
    else:
        phases = torch.tensor([float(phase_shift_rad)], dtype=torch.float64)
    lam = microscope.wavelength_a
    radial_k = torch.arange(spec.n_bins, dtype=torch.float64) * spec.dk
    in_band = (radial_k >= spec.k_lo) & (radial_k <= spec.k_hi)

    def period_bins(defocus: float | None):
        return _ring_window(radial_k, lam, defocus, float(microscope.cs_a))

    def search_1d(profile, grid):
        """Best (defocus, phase shift) of the 1-D model over ``grid`` × ``phases``."""
        models = _model(radial_k[in_band], torch.zeros(()), microscope, grid[:, None, None],
                        torch.zeros(()), torch.zeros(()), base + phases[None, :, None])  # fmt: skip
        scores = _ncc(models, profile[in_band].expand_as(models))
        i = int(torch.argmax(scores))
        return float(grid[i // len(phases)]), float(phases[i % len(phases)])

    step = 0.25 / (lam * spec.k_hi**2)
    grid = torch.arange(lo_df, hi_df + step, step, dtype=torch.float64)
    norm, _, _ = spec.flatten(period_bins(None))
    defocus, phase = search_1d(spec.radial(norm), grid)
    for _ in range(2):  # background from the ring period, then search again nearby
        norm, rings, background = spec.flatten(period_bins(defocus))
        local = torch.arange(0.9 * defocus, 1.1 * defocus, step / 4, dtype=torch.float64)
        defocus, phase = search_1d(spec.radial(norm), local)

    kx, ky, target = spec.kx[spec.mask], spec.ky[spec.mask], norm[spec.mask]
    best = (-2.0, defocus, 0.0, 0.0)
    for mag in (0.0, 0.1, 0.25, 0.5, 1.0):
        for ang in range(0 if mag else 1, 8):
            ax = mag * max_astigmatism_a * math.cos(2 * math.pi * ang / 8)
            ay = mag * max_astigmatism_a * math.sin(2 * math.pi * ang / 8)
            dfs = torch.arange(defocus - 4 * step, defocus + 4.5 * step, step)
            m = _model(kx, ky, microscope, dfs[:, None], torch.tensor(ax), torch.tensor(ay),
                       base + phase, spec.dk)  # fmt: skip
            scores = _ncc(m, target[None, :].expand_as(m))
            i = int(torch.argmax(scores))
            if float(scores[i]) > best[0]:
                best = (float(scores[i]), float(dfs[i]), ax, ay)
    start = torch.tensor([*best[1:], phase], dtype=torch.float64)
    p, score = _refine(kx, ky, target, microscope, start, step, base, find_phase_shift,
                       (ph_lo, ph_hi), spec.dk)  # fmt: skip
    if score < best[0]:  # keep the grid optimum if the refinement wandered off
        p, score = start, best[0]
    defocus, ax, ay, phase = (float(v) for v in p)
    astig = math.hypot(ax, ay)
    angle = (0.5 * math.atan2(ay, ax)) % math.pi
    norm, rings, background = spec.flatten(period_bins(defocus))
    envelope = _envelope(spec, rings, background, microscope, p[:3], base + phase)
    errors = (math.nan, math.nan)
    if find_phase_shift and sums.shape[0] > 2:
        errors = _jackknife(sums, counts, spec, p, step, base, (ph_lo, ph_hi), microscope,
                            period_bins(defocus))  # fmt: skip
    return CTFFitResult(defocus, astig, angle, score, *envelope, phase_shift_rad=phase,
                        phase_shift_error_rad=errors[1], defocus_error_a=errors[0])  # fmt: skip


#: tile groups of the jackknife (the standard error's own relative error is ≈ 1/√(2(G−1)))
_JACKKNIFE_GROUPS = 8


def _refine(kx, ky, target, microscope, start, step, base, free_phase, phase_range, dk,
            max_iter=100):  # fmt: skip
    """L-BFGS of the normalised cross-correlation over (Δf, a cos 2φ_a, a sin 2φ_a[, φ_pp]).

    Scaled so that one unit moves the phase at the highest frequency by about π/4; a phase
    shift that leaves ``phase_range`` is clamped to the bound, and the others refined again.
    Returns the parameters (4, with φ_pp) and the score.
    """
    scale = torch.tensor([step, step, step, math.pi / 4], dtype=torch.float64)

    def run(x0, free):
        u = (x0 / scale).clone().requires_grad_(True)
        optimiser = torch.optim.LBFGS([u], max_iter=max_iter, line_search_fn="strong_wolfe")
        mask = torch.tensor([1.0, 1.0, 1.0, 1.0 if free else 0.0], dtype=torch.float64)

        def closure():
            optimiser.zero_grad()
            q = (x0 / scale + (u - x0 / scale) * mask) * scale
            loss = -_ncc(_model(kx, ky, microscope, q[0], q[1], q[2], base + q[3], dk), target)
            loss.backward()
            return loss

        optimiser.step(closure)
        return ((x0 / scale + (u.detach() - x0 / scale) * mask) * scale).detach()

    p = run(start, free_phase)
    if free_phase and not phase_range[0] <= float(p[3]) <= phase_range[1]:
        p = p.clone()
        p[3] = min(max(float(p[3]), phase_range[0]), phase_range[1])
        p = run(p, False)
    score = float(_ncc(_model(kx, ky, microscope, p[0], p[1], p[2], base + p[3], dk), target))
    return p, score


def _jackknife(sums, counts, spec, p, step, base, phase_range, microscope, period):
    """Delete-a-group jackknife standard errors of the defocus [Å] and phase shift [rad]."""
    values = []
    for g in range(sums.shape[0]):
        keep = torch.arange(sums.shape[0]) != g
        power = sums[keep].sum(0) / counts[keep].sum()
        sub = _Spectrum(power, 1.0 / (spec.dk * power.shape[-1]), spec.k_lo, spec.k_hi)
        norm, _, _ = sub.flatten(period)
        q, _ = _refine(sub.kx[sub.mask], sub.ky[sub.mask], norm[sub.mask], microscope, p, step,
                       base, True, phase_range, spec.dk, max_iter=30)  # fmt: skip
        values.append(q[[0, 3]])
    v = torch.stack(values)
    g = v.shape[0]
    se = torch.sqrt((g - 1) / g * ((v - v.mean(0)) ** 2).sum(0))
    return float(se[0]), float(se[1])


def _envelope(spec, rings, background, microscope, p, offset):
    """Ring modulation per band, its B-factor fit and the fit resolution."""
    model = _model(spec.kx, spec.ky, microscope, p[0], p[1], p[2], offset, spec.dk)
    edges = torch.arange(spec.k_lo, spec.k_hi + 1e-12, 0.01)
    centres, modulation, correlation = [], [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (spec.k >= a) & (spec.k < b)
        if int(sel.sum()) < 16:
            continue
        m = model[sel] - model[sel].mean()
        r = rings[sel] - rings[sel].mean()
        slope = float((m * r).sum() / (m * m).sum().clamp(min=1e-300))
        centres.append(float(0.5 * (a + b)))
        # sin² has amplitude ½ around its mean: the ring modulation relative to background
        modulation.append(0.5 * slope / float(background[sel].mean()))
        correlation.append(float(_ncc(m, r)))
    k = torch.tensor(centres, dtype=torch.float64)
    mod = torch.tensor(modulation, dtype=torch.float64)
    corr = torch.tensor(correlation, dtype=torch.float64)
    # from the first band that correlates, up to the last before two bands in a row fail
    good = (corr >= 0.3).tolist()
    start = good.index(True) if True in good else len(good)
    last = None
    for i in range(start, len(good)):
        if good[i]:
            last = i
        elif i + 1 >= len(good) or not good[i + 1]:
            break
    fit_res = 1.0 / float(k[last]) if last is not None else math.inf
    use = (mod > 0) & (corr >= 0.3)
    b_factor, m0 = math.nan, math.nan
    if int(use.sum()) >= 2:
        design = torch.stack([torch.ones_like(k[use]), -(k[use] ** 2) / 4], dim=1)
        coef = torch.linalg.lstsq(design, torch.log(mod[use])[:, None]).solution.flatten()
        m0, b_factor = math.exp(float(coef[0])), float(coef[1])
    return b_factor, m0, fit_res, k, mod, corr
