"""Structured amorphous ice: a 3-D Gaussian random field of the ice's potential fluctuations.

Part of the potential stage (:mod:`tem_core.potential`). The potential of vitreous ice is
its mean inner potential ``V₀`` (the uniform slab of :mod:`tem_core.potential`) plus
fluctuations ``δV(r)`` whose power spectral density is that of a molecular liquid,

``P(k) = n |F(k)|² S(k)``   [V²·Å³],   k = |k| [1/Å] (cycles per Å),

with the number density ``n`` of water molecules, the molecule's electron scattering
amplitude ``F(k) = C (f_O + 2 f_H)`` (Peng 1996 factors ``f(s = k/2)`` and ``C = h²/(2π m₀ e)``;
``|F|²`` by the Debye formula with the O-H 0.9572 Å and H-H 1.5139 Å distances of the
molecule) and a structure factor ``S(k)`` of low-density amorphous ice:

``S(k) = 1 − (1 − S₀) exp(−(k/w₀)^n) + h exp(−(k − k_p)²/(2 w_p²))``.

The peak at ``k_p = 0.27 Å⁻¹`` (Q = 2π k = 1.70 Å⁻¹, the 3.7 Å ring of cryo-EM spectra) with
``S(k_p) ≈ 2.3`` and FWHM ≈ 0.045 Å⁻¹ (ΔQ ≈ 0.3 Å⁻¹) follows the X-ray/neutron structure
factor of low-density amorphous ice (Bellissent-Funel et al. 1987, J. Chem. Phys. 87:2231;
Finney et al. 2002, Phys. Rev. Lett. 88:225503); the small ``S₀ = S(0)`` (n k_B T κ_T,
LDA ice is close to hyperuniform: Martelli et al. 2017, Phys. Rev. Lett. 119:136002) stays
low up to ``Q ≈ 1.2 Å⁻¹`` and rises steeply to the peak, as a liquid's structure factor does
below its first peak (``w₀ = 0.25 Å⁻¹``, ``n = 6``). This is a phenomenological fit of those
curves, not an ab-initio structure; every parameter is a field of :class:`IceStructure`.

Realisation: ``M`` random plane waves (random Fourier features), fixed in the *untilted
specimen frame* by a seed, so every tilt of a series images the same 3-D ice:

``δV(r) = Σ_m A_m cos(2π k_m·r + φ_m)``,   ``A_m² = 2 P(k_m) k_m² / (M q(k_m) p(k̂_m))``,

with phases uniform, ``|k_m|`` drawn from ``q`` (half uniform on ``[0, k_max]``, half
∝ ``k² P(k)``) and directions from ``p`` (below): the expected spectrum is ``P(k)``
exactly, for every direction. For a slice ``z0 ≤ z < z1`` of a specimen tilted by ``R``
(``k' = R k``) the slice integral and the pixel average are analytic: each mode becomes a
2-D plane wave of frequency ``(k'_x, k'_y)`` with weight
``Δz sinc(k'_z Δz) sinc(k'_x s) sinc(k'_y s)``. The off-grid plane waves are summed on the
pixel grid by a type-1 non-uniform FFT (Gaussian gridding, Greengard & Lee 2004, SIAM
Rev. 46:443; oversampling 2, ±3 grid points, relative error ~1e-3), so memory per slice is
a few grids, independent of the ice thickness. Modes beyond the grid's Nyquist frequency
are dropped (the pixel average would alias them).

Where the modes go. A view through ice of thickness ``t`` keeps only the modes with
``|k'_z| ≲ 1/(2t)`` (the ``sinc(k'_z t)`` of the projection): with isotropic directions
that is a fraction ``1/(2tk)`` of them, about 1 % at the Thon rings of 200 Å ice, so the
image's spectrum would be the sum of a few modes per radial bin, far more speckled than
real ice, whose ~10⁷ molecules make it smooth (a ring minimum or the 3.7 Å ring's maximum
then moves by several % from one seed to the next). Hence the direction density is a
mixture, ``p = (1 − β_v)/(4π) + β_v · mean_v 1[|k̂·n_v| < c]/(4π c)`` with ``c = w_z/|k|``:
a fraction ``β_v = view_fraction`` (0.75) of the modes is drawn uniformly in the band
``|k'_z| < w_z`` (0.005 Å⁻¹) of one of the views (normals ``n_v``: the untilted view, or
the tilts of a series, :meth:`IceStructure.for_views`), the rest isotropically. The
weights ``1/p`` keep the field unbiased in every direction; a listed view gets 20-40× more
effective modes (the radial spectrum of projected 200 Å ice at 1536² px scatters by 5-7 %
per bin instead of 14-21 %; a Gaussian field: 2 %), an unlisted tilted view about ¼ of the
isotropic count.

Beam-induced motion. Under the beam the water molecules move as in a fluid: McMullan,
Vinothkumar & Henderson (2015, Ultramicroscopy 158:26) measured a random displacement of
mean square ``μ`` ≈ 1.1 Å² per 300 kV e/Å² (the Thon rings of pure ice are stronger in the
sum of the frames' power spectra than in the power spectrum of the summed frames, unlike
pre-irradiated carbon). An image recorded over an exposure ``D`` then sums a changing
ice: a mode of wave vector ``k`` keeps the correlation ``exp(−γ |N₁ − N₂|)``, ``γ = (2πk)² μ/6``
per e/Å² (the self part of the intermediate scattering function of a random walk with
3-D mean square ``μ N``), between the exposures ``N₁`` and ``N₂``, and the power of the
exposure average is ``F(x) = 2 (x − 1 + e^{−x}) / x²`` of the power of one instant, ``x = γ D``.
With ``exposure_e_per_a2 = D`` each mode's amplitude is multiplied by ``√F``: one
realisation with the averaged spectrum (the ice is statistically the same amorphous ice at
every instant; only the average over the exposure loses power). Check against the paper's
own numbers: the sum of frames' power spectra sees the 3.7 Å ring best at frames of
``x ≈ 2.15`` (maximum of ``√x F(x)``), 4.1 e/Å² with ``μ = 1.1`` at k = 0.27 Å⁻¹; they quote
4.0 e/Å². The ice's loss is this motion, not the critical-exposure curve of proteins
(:class:`tem_core.potential.RadiationDamage`, which the simulation applies to the rest).

Absorption. The fluctuations are the potential of the water's atoms about their mean, so
they absorb the fraction of it that every atom does, ``V' = f δV`` (``f`` =
``PotentialSettings.ice_structure_absorption_fraction``, by default the atoms' 0.07); the
mean ice absorbs by its inelastic mean free path. The Thon rings of ice-embedded specimens
come mostly from the ice, and their amplitude contrast is about 0.07 (Toyoshima & Unwin
1988, Ultramicroscopy 25:279; CTFFIND and RELION assume 0.07-0.10). With ``f = 0`` (the
model before) the rings of the field of ``benchmarks/realism.py`` (spikes in 200 Å ice,
where the fluctuations carry 11-42× the particles' power at 0.05-0.16 Å⁻¹) had an
amplitude contrast of about 0.01, and their first zero sat ~1 % further out
(``benchmarks/realism_amplitude_contrast.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from tem_core import units
from tem_core._fft import ifft2
from tem_core.structure import rotate_points
from tem_core.validation import (
    require_finite,
    require_in_range,
    require_positive,
    require_positive_int,
)

WATER_MOLAR_MASS_G_PER_MOL = 18.01528
#: Physical range of amorphous-ice densities [g/cm³]: low-density (0.94) to very-high-density
#: amorphous ice (1.26); outside it the material is not amorphous ice.
ICE_DENSITY_RANGE_G_PER_CM3 = (0.85, 1.30)
_D_OH_A, _D_HH_A = 0.9572, 1.5139
_SPREAD = 3  # grid points on each side of a mode (Gaussian gridding)
_OVERSAMPLING = 2


@dataclass(frozen=True, kw_only=True)
class IceStructure:
    """Amorphous-ice structure: the 3-D random field of potential fluctuations (module doc).

    Parameters
    ----------
    seed
        Seed of the field (same seed, same ice; a tilt series sees one object).
    n_modes
        Random plane waves ``M`` (more: smoother spectra, slower).
    density_g_per_cm3
        Mass density [g/cm³] (0.94: low-density amorphous ice), sets ``n``.
    max_frequency_per_a
        Highest spatial frequency of the field [1/Å].
    peak_frequency_per_a, peak_width_per_a, peak_height
        Structure-factor peak ``k_p`` [1/Å], its Gaussian σ ``w_p`` [1/Å] and excess ``h``.
    s0, low_width_per_a, low_exponent
        ``S(0)``, the frequency ``w₀`` [1/Å] and steepness ``n`` of the rise of ``S`` to 1.
    view_fraction
        Fraction ``β_v`` of the modes drawn near the planes the images will see (module doc,
        "Where the modes go"); 0: isotropic directions (every view equally speckled).
    view_half_width_per_a
        Half-width ``w_z`` [1/Å] of those bands in ``k_z`` of each view (0.005 = 1/(2·100 Å):
        a 100 Å slab passes ``|k_z| ≲ 1/(2t)``).
    view_tilts_rad, view_tilt_axis_rad
        Tilts [rad] of the views and their in-plane tilt axis [rad], as given to
        :func:`tem_core.specimen.tilt_specimen`. ``None``: the untilted micrograph, and in
        :func:`tem_core.simulate.tilt_series` the series' own tilts (:meth:`for_views`). Any
        other view is still unbiased, with the isotropic modes' smoothness.
    exposure_e_per_a2
        Exposure ``D`` [e/Å², 300 kV equivalent] over which the image averages the moving
        ice (module doc, "Beam-induced motion"); 0: one instant. :func:`tem_core.simulate.
        micrograph` sets it to the exposure when ``imaging.damage`` is given.
    motion_msd_a2_per_e_per_a2
        Mean square 3-D displacement ``μ`` of a water molecule per unit exposure [Å² per
        e/Å²] at 300 kV (1.1: McMullan et al. 2015).
    """

    seed: int = 0
    n_modes: int = 2**17
    density_g_per_cm3: float = 0.94
    max_frequency_per_a: float = 0.6
    peak_frequency_per_a: float = 0.27
    peak_width_per_a: float = 0.019
    peak_height: float = 1.5
    s0: float = 0.05
    low_width_per_a: float = 0.25
    low_exponent: float = 6.0
    view_fraction: float = 0.75
    view_half_width_per_a: float = 0.005
    view_tilts_rad: tuple[float, ...] | None = None
    view_tilt_axis_rad: float = 0.0
    exposure_e_per_a2: float = 0.0
    motion_msd_a2_per_e_per_a2: float = 1.1

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        require_positive_int("n_modes", self.n_modes)
        lo, hi = ICE_DENSITY_RANGE_G_PER_CM3
        require_in_range(
            "density_g_per_cm3", self.density_g_per_cm3, lo, hi, "g/cm³", inclusive=True
        )
        require_in_range("max_frequency_per_a", self.max_frequency_per_a, 0.0, 5.0, "1/Å")
        require_positive("max_frequency_per_a", self.max_frequency_per_a, "1/Å")
        require_positive("peak_frequency_per_a", self.peak_frequency_per_a, "1/Å")
        require_positive("peak_width_per_a", self.peak_width_per_a, "1/Å")
        require_in_range("peak_height", self.peak_height, 0.0, 10.0, "", inclusive=True)
        require_in_range("s0", self.s0, 0.0, 1.0, "", inclusive=True)
        require_positive("low_width_per_a", self.low_width_per_a, "1/Å")
        require_positive("low_exponent", self.low_exponent)
        require_in_range("view_fraction", self.view_fraction, 0.0, 1.0, "", inclusive=True)
        if self.view_fraction == 1.0:
            raise ValueError(
                "view_fraction must be < 1 (some isotropic modes keep every view unbiased), got 1"
            )
        require_positive("view_half_width_per_a", self.view_half_width_per_a, "1/Å")
        if self.view_tilts_rad is not None:
            if not isinstance(self.view_tilts_rad, tuple) or len(self.view_tilts_rad) == 0:
                raise ValueError(
                    "view_tilts_rad must be None or a non-empty tuple of angles [rad], "
                    f"got {self.view_tilts_rad!r}"
                )
            require_in_range("view_tilts_rad", list(self.view_tilts_rad), -0.5 * math.pi,
                             0.5 * math.pi, "rad", inclusive=True)  # fmt: skip
        require_finite("view_tilt_axis_rad", self.view_tilt_axis_rad, "rad")
        require_in_range("exposure_e_per_a2", self.exposure_e_per_a2, 0.0, math.inf, "e/Å²",
                         inclusive=True)  # fmt: skip
        require_in_range("motion_msd_a2_per_e_per_a2", self.motion_msd_a2_per_e_per_a2, 0.0,
                         100.0, "Å² per e/Å²", inclusive=True)  # fmt: skip

    def for_views(self, tilts_rad, tilt_axis_rad: float) -> IceStructure:
        """This structure with its view bands on ``tilts_rad`` [rad] about ``tilt_axis_rad``
        [rad], unless it names its views already (a tilt series calls this once)."""
        if self.view_tilts_rad is not None:
            return self
        tilts = tuple(sorted({round(float(t), 12) for t in tilts_rad}))
        return dataclasses.replace(
            self, view_tilts_rad=tilts, view_tilt_axis_rad=float(tilt_axis_rad)
        )

    @property
    def molecules_per_a3(self) -> float:
        """Number density of water molecules [1/Å³] (0.94 g/cm³: 0.03142 Å⁻³)."""
        return (
            self.density_g_per_cm3
            / WATER_MOLAR_MASS_G_PER_MOL
            * units.AVOGADRO_PER_MOL
            / units.CM3_TO_A3
        )

    def structure_factor(self, k_per_a: torch.Tensor) -> torch.Tensor:
        """``S(k)`` [dimensionless] at spatial frequencies ``k`` [1/Å]."""
        k = k_per_a
        low = 1.0 - (1.0 - self.s0) * torch.exp(-((k / self.low_width_per_a) ** self.low_exponent))
        peak = self.peak_height * torch.exp(
            -((k - self.peak_frequency_per_a) ** 2) / (2.0 * self.peak_width_per_a**2)
        )
        return low + peak

    def power_spectrum(self, k_per_a: torch.Tensor) -> torch.Tensor:
        """3-D power spectral density ``n |F(k)|² S(k)`` of the potential [V²·Å³]."""
        k = k_per_a.to(torch.float64)
        return (self.molecules_per_a3 * water_form_factor_squared(k) * self.structure_factor(k)).to(
            k_per_a.dtype
        )


def ice_mean_inner_potential_v(density_g_per_cm3: float) -> float:
    """Isolated-atom mean inner potential of amorphous ice ``n C F(0)`` [V] (0.94: 4.575 V)."""
    structure = IceStructure(density_g_per_cm3=density_g_per_cm3)
    f0 = torch.sqrt(water_form_factor_squared(torch.zeros(1, dtype=torch.float64)))
    return float(structure.molecules_per_a3 * f0)


def _peng(z: int) -> tuple[torch.Tensor, torch.Tensor]:
    import gemmi

    element = gemmi.Element(z)
    return (
        torch.tensor(element.c4322.a, dtype=torch.float64),
        torch.tensor(element.c4322.b, dtype=torch.float64),
    )


def _sinc0(x: torch.Tensor) -> torch.Tensor:
    """``sin(x)/x`` with the limit 1 at 0."""
    return torch.sinc(x / math.pi)


def water_form_factor_squared(k_per_a: torch.Tensor) -> torch.Tensor:
    """Orientation-averaged ``|F(k)|²`` of one water molecule [V²·Å⁶] (Debye formula)."""
    k = k_per_a.to(torch.float64)
    fo, fh = (
        units.PENG_PREFACTOR_V_A2 * (a * torch.exp(-b * (k[..., None] / 2.0) ** 2)).sum(-1)
        for a, b in (_peng(8), _peng(1))
    )
    q = 2.0 * math.pi * k
    return (
        fo**2
        + 2.0 * fh**2
        + 4.0 * fo * fh * _sinc0(q * _D_OH_A)
        + 2.0 * fh**2 * _sinc0(q * _D_HH_A)
    )


def exposure_average(
    k_per_a: torch.Tensor, exposure_e_per_a2: float, msd_a2_per_e_per_a2: float
) -> torch.Tensor:
    """Amplitude factor ``√F(γ D)`` of the exposure-averaged moving ice (module doc) [1]."""
    x = (2.0 * math.pi * k_per_a) ** 2 * (msd_a2_per_e_per_a2 / 6.0) * exposure_e_per_a2
    safe = torch.where(x > 1e-6, x, torch.ones_like(x))
    power = torch.where(x > 1e-6, 2.0 * (safe + torch.expm1(-safe)) / safe**2, 1.0 - x / 3.0)
    return torch.sqrt(power)


def sample_modes(structure: IceStructure) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The field's plane waves: wave vectors ``(M, 3)`` [1/Å], amplitudes [V], phases [rad].

    Drawn on the CPU in float64 from ``torch.Generator().manual_seed(structure.seed)``:
    ``|k|`` from ``q`` (module doc), the direction from the mixture ``p(k̂)`` of an isotropic
    part and the bands around the views' planes, amplitude ``A² = 2 P(k) k² / (M q(k) p(k̂))``,
    times the exposure average :func:`exposure_average` (the same modes at every exposure).
    """
    instant = dataclasses.replace(structure, exposure_e_per_a2=0.0)
    k, amplitudes, phases = _instant_modes(instant)
    if structure.exposure_e_per_a2 > 0 and structure.motion_msd_a2_per_e_per_a2 > 0:
        factor = exposure_average(torch.linalg.vector_norm(k, dim=1),
                                  structure.exposure_e_per_a2,
                                  structure.motion_msd_a2_per_e_per_a2)  # fmt: skip
        amplitudes = amplitudes * factor
    return k, amplitudes, phases


@functools.lru_cache(maxsize=4)
def _instant_modes(structure: IceStructure) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(structure.seed)
    m, k_max = structure.n_modes, structure.max_frequency_per_a
    grid = (torch.arange(4096, dtype=torch.float64) + 0.5) * (k_max / 4096)
    weight = 4.0 * math.pi * grid**2 * structure.power_spectrum(grid)
    pdf = 0.5 / k_max + 0.5 * weight / (weight.sum() * (k_max / 4096))
    probs = pdf * (k_max / 4096)
    bins = torch.multinomial(probs / probs.sum(), m, replacement=True, generator=g)
    u = torch.rand(m, generator=g, dtype=torch.float64)
    k = (bins.double() + u) * (k_max / 4096)
    q = pdf[bins]
    direction = torch.randn(m, 3, generator=g, dtype=torch.float64)
    direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    phases = 2.0 * math.pi * torch.rand(m, generator=g, dtype=torch.float64)
    # the view bands: |k'_z| < w_z in the frame of one view (chosen uniformly), k'_z uniform
    normals = _view_normals(structure)
    c = (structure.view_half_width_per_a / k).clamp(max=1.0)
    in_band = torch.rand(m, generator=g, dtype=torch.float64) < structure.view_fraction
    view = torch.randint(normals.shape[0], (m,), generator=g)
    cos_t = c * (2.0 * torch.rand(m, generator=g, dtype=torch.float64) - 1.0)
    az = 2.0 * math.pi * torch.rand(m, generator=g, dtype=torch.float64)
    sin_t = torch.sqrt((1.0 - cos_t**2).clamp(min=0.0))
    local = torch.stack((sin_t * torch.cos(az), sin_t * torch.sin(az), cos_t), dim=1)
    rots = torch.stack([_rotation(structure.view_tilt_axis_rad, t) for t in _tilts(structure)])
    banded = rotate_points(rots[view].transpose(1, 2), local[:, None, :])[:, 0]  # k = Rᵀ k'
    direction = torch.where(in_band[:, None], banded, direction)
    # mixture density on the unit sphere [1/sr]
    inside = ((direction @ normals.T).abs() <= c[:, None]).double()
    density = (1.0 - structure.view_fraction) / (4.0 * math.pi) + structure.view_fraction * (
        inside.mean(dim=1) / (4.0 * math.pi * c)
    )
    amplitudes = torch.sqrt(2.0 * structure.power_spectrum(k) * k**2 / (m * q * density))
    return direction * k[:, None], amplitudes, phases


def _view_normals(structure: IceStructure) -> torch.Tensor:
    """Unit normals ``Rᵀ e_z`` of the views' image planes in the specimen frame, ``(V, 3)``."""
    return torch.stack([_rotation(structure.view_tilt_axis_rad, t)[2] for t in _tilts(structure)])


def _tilts(structure: IceStructure) -> tuple[float, ...]:
    return (0.0,) if structure.view_tilts_rad is None else structure.view_tilts_rad


class IceField:
    """The ice field seen by one (tilted) specimen on one pixel grid, evaluated per slice.

    Parameters
    ----------
    structure
        The field's parameters and seed.
    specimen
        Supplies the tilt (``tilt_angle_rad`` about ``tilt_axis_angle_rad``) and the slab
        centre, the rotation centre.
    shape, sampling_a
        Pixel grid ``(ny, nx)`` and pixel size [Å].
    dtype, device
        Of the slices produced (real dtype).
    """

    def __init__(self, structure: IceStructure, specimen, shape, sampling_a: float, dtype, device):
        k, amp, phase = sample_modes(structure)
        phi, theta = specimen.tilt_axis_angle_rad, specimen.tilt_angle_rad
        rot = _rotation(phi, theta)
        centre = specimen.slab_center_a.detach().double().cpu()
        k_lab = rotate_points(rot, k)
        ny, nx = shape
        s = float(sampling_a)
        tx, ty = k_lab[:, 0] * s, k_lab[:, 1] * s  # cycles per pixel
        keep = (tx.abs() < 0.5) & (ty.abs() < 0.5)
        tx, ty, kz = tx[keep], ty[keep], k_lab[keep, 2]
        # specimen-frame phase at the slab centre, then the grid origin offset (j' = j − n/2)
        kc = k[keep]  # k · centre in a fixed order (no BLAS: the same bits for every thread count)
        base = phase[keep] + 2.0 * math.pi * (
            kc[:, 0] * centre[0] + kc[:, 1] * centre[1] + kc[:, 2] * centre[2]
        )
        base = base + 2.0 * math.pi * (tx * (nx // 2 + 0.5 - float(centre[0]) / s))
        base = base + 2.0 * math.pi * (ty * (ny // 2 + 0.5 - float(centre[1]) / s))
        weight = amp[keep] * torch.sinc(tx) * torch.sinc(ty)
        self.n_modes = int(keep.sum())
        self.shape, self.dtype, self.device = (ny, nx), dtype, device
        self.centre_z = float(centre[2])
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.cdtype = cdtype
        f64 = dict(dtype=torch.float64, device=device)
        self.kz = kz.to(**f64)
        self.base = base.to(**f64)
        self.weight = weight.to(**f64)
        self.mx, self.my = _OVERSAMPLING * nx, _OVERSAMPLING * ny
        ix, wx, corr_x = _gridding(tx.to(**f64), nx, self.mx)
        iy, wy, corr_y = _gridding(ty.to(**f64), ny, self.my)
        # flattened (mode, y offset, x offset) grid indices and weights of the spreading
        self.flat = (iy[:, :, None] * self.mx + ix[:, None, :]).reshape(self.n_modes, -1)
        self.spread = (wy[:, :, None] * wx[:, None, :]).reshape(self.n_modes, -1).to(dtype)
        self.correction = (corr_y[:, None] * corr_x[None, :]).to(dtype)
        self.rows_y = (torch.arange(ny, device=device) - ny // 2) % self.my
        self.cols_x = (torch.arange(nx, device=device) - nx // 2) % self.mx

    def slice_integral(self, z0_a: float, z1_a: float) -> torch.Tensor:
        """``∫_{z0}^{z1} δV dz`` averaged over each pixel [V·Å], ``(ny, nx)``."""
        dz = z1_a - z0_a
        zc = 0.5 * (z0_a + z1_a) - self.centre_z
        coeff = self.weight * dz * torch.sinc(self.kz * dz)
        arg = self.base + 2.0 * math.pi * self.kz * zc
        c = torch.stack((torch.cos(arg), torch.sin(arg)), dim=-1) * coeff[:, None]
        vals = self.spread[:, :, None] * c.to(self.dtype)[:, None, :]
        grid = torch.zeros(self.my * self.mx, 2, dtype=self.dtype, device=self.device)
        grid.index_add_(0, self.flat.reshape(-1), vals.reshape(-1, 2))
        grid = torch.view_as_complex(grid)
        # Σ_k F(k) e^{2πi jk/M} = M · ifft(F)[j]; the M's cancel against G's normalisation
        spatial = ifft2(grid.reshape(self.my, self.mx), norm="forward")
        spatial = spatial.index_select(0, self.rows_y).index_select(1, self.cols_x)
        return spatial.real.to(self.dtype) * self.correction


def _gridding(t: torch.Tensor, n: int, m: int):
    """Gaussian-gridding indices, weights and deconvolution for frequencies ``t`` [cycles/px].

    With ``θ = 2π t`` and ``τ = π w / (n² R (R − ½))`` (Greengard & Lee 2004, ``w`` = spread,
    ``R`` = oversampling): ``Σ_m c_m e^{i j θ_m} = (1/G(j)) Σ_k F_k e^{2πi jk/M}`` with
    ``F_k = Σ_m c_m exp(−(θ_k − θ_m)²/(4τ))`` and ``G(j) = √(τ/π) M e^{−j² τ}``.
    """
    r = _OVERSAMPLING
    tau = math.pi * _SPREAD / (n * n * r * (r - 0.5))
    theta = 2.0 * math.pi * t
    nearest = torch.round(theta * m / (2.0 * math.pi))
    offsets = torch.arange(-_SPREAD, _SPREAD + 1, device=t.device, dtype=t.dtype)
    grid_theta = (nearest[:, None] + offsets) * (2.0 * math.pi / m)
    weights = torch.exp(-((theta[:, None] - grid_theta) ** 2) / (4.0 * tau))
    index = ((nearest[:, None] + offsets).long()) % m
    j = torch.arange(n, device=t.device, dtype=t.dtype) - n // 2
    correction = torch.exp(j**2 * tau) / (math.sqrt(tau / math.pi) * m)
    # rows of the output in the order j = 0..n-1 map to j' = j − n//2
    return index, weights, correction


def _rotation(phi: float, theta: float) -> torch.Tensor:
    """Right-handed rotation by ``theta`` about the in-plane axis ``(cos φ, sin φ, 0)``."""
    u = torch.tensor([math.cos(phi), math.sin(phi), 0.0], dtype=torch.float64)
    kx = torch.tensor(
        [[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]], dtype=torch.float64
    )
    eye = torch.eye(3, dtype=torch.float64)
    return eye + math.sin(theta) * kx + (1.0 - math.cos(theta)) * (kx @ kx)
