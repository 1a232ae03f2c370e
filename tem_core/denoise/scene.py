"""The diff-tem paper's denoising scene: three TMV segments in ice, three tilts.

Built with the forward stages (structure → specimen → simulate), following the diff-tem
release's ``input_TMV_*.txt`` and ``TMV_coord.txt`` (TEM-simulator's TMV example): three
copies of the 49-subunit TMV segment of PDB 2OM3 (first model, BIOMT operators) at
(−50, 5, 0), (0, 5, 0), (50, 5, 0) nm from the field centre with z-x-z Euler angles
(0, 0, 0), (0, 90, 0), (0, 90, 90) degrees, in 50 nm of ice; tilts −2°, 0°, +2° about x;
200 kV, Cs = Cc = 2 mm, 1.3 eV energy spread, a 50 µm objective aperture at 3 mm focal
length, 0.1 mrad illumination, 5 µm underfocus; 0.5 nm pixels, a 400² detector inside a
padded simulation grid. The detector (gain 10, MTF (0.7, 0.2, 0.1, 10, 40), Poisson noise
before the MTF, DQE 1 as in the release's differentiable quantisation) is
:data:`TMV_DETECTOR`. The functions return the image-plane intensity (vacuum = 1); doses
and noise are applied by the caller with :func:`tem_core.detector.detect`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import PotentialSettings
from tem_core.simulate import Imaging, micrograph
from tem_core.specimen import assembly_in_ice, tilt_specimen
from tem_core.units import DEG_TO_RAD, KV_TO_EV, MM_TO_A, MRAD_TO_RAD, NM_TO_A, UM_TO_A
from tem_core.validation import require_positive, require_positive_int

__all__ = [
    "TMV_DETECTOR",
    "TMV_PARTICLES",
    "TMV_TILTS_DEG",
    "particle_windows",
    "tmv_intensities",
]

#: x, y, z [nm] from the field centre and z-x-z Euler angles φ, θ, ψ [deg] (TMV_coord.txt).
TMV_PARTICLES = (
    (-50.0, 5.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, 5.0, 0.0, 0.0, 90.0, 0.0),
    (50.0, 5.0, 0.0, 0.0, 90.0, 90.0),
)
#: Tilt angles of the release's denoising input [deg].
TMV_TILTS_DEG = (-2.0, 0.0, 2.0)
#: The release's detector: gain 10, TEM-simulator's default MTF, DQE 1, noise before MTF.
TMV_DETECTOR = Detector(dqe=1.0, gain_counts_per_e=10.0, a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0)
_PIXEL_NM = 0.5
_ICE_NM = 50.0


def _euler_zxz(phi_deg: float, theta_deg: float, psi_deg: float) -> torch.Tensor:
    """``Rz(ψ) Rx(θ) Rz(φ)`` (float64): first φ about z, then θ about x, then ψ about z, as
    TEM-simulator's TMV_coord.txt describes its columns (the third segment lies across the
    second)."""

    def rz(a: float) -> torch.Tensor:
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def rx(a: float) -> torch.Tensor:
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)

    return rz(psi_deg * DEG_TO_RAD) @ rx(theta_deg * DEG_TO_RAD) @ rz(phi_deg * DEG_TO_RAD)


def tmv_microscope() -> Microscope:
    """The release's microscope (200 kV, Cs = Cc = 2 mm, 1.3 eV, 8.3 mrad aperture)."""
    return Microscope(
        energy_ev=200.0 * KV_TO_EV,
        cs_a=2.0 * MM_TO_A,
        cc_a=2.0 * MM_TO_A,
        energy_spread_ev=1.3,
        illumination_semiangle_rad=0.1 * MRAD_TO_RAD,
        objective_aperture_rad=(50.0 * UM_TO_A / 2) / (3.0 * MM_TO_A),
    )


def tmv_intensities(
    structure_path: str | Path,
    *,
    n_px: int = 400,
    padding_px: int = 24,
    tilts_deg: Sequence[float] = TMV_TILTS_DEG,
    slice_thickness_a: float = 50.0,
    particles: Sequence[Sequence[float]] = TMV_PARTICLES,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Image-plane intensities (vacuum = 1) of the TMV scene, ``(n_tilts, n_px, n_px)``.

    Parameters
    ----------
    structure_path
        The 2OM3 model (``data/2om3.pdb.gz`` of the repository).
    n_px
        Detector size [px] (0.5 nm pixels); the simulation grid adds ``padding_px`` on each
        side and the result is its central ``n_px²``.
    tilts_deg
        Tilt angles about x [deg].
    slice_thickness_a
        Multislice slice thickness [Å].
    particles
        Positions and Euler angles as :data:`TMV_PARTICLES` (another layout gives a
        separate image, e.g. to tune a denoiser on).
    device
        Where to simulate.
    """
    require_positive_int("n_px", n_px)
    if isinstance(padding_px, bool) or not isinstance(padding_px, int) or padding_px < 0:
        raise ValueError(f"padding_px must be a non-negative integer, got {padding_px!r} px")
    require_positive("slice_thickness_a", slice_thickness_a, "Å")
    if len(particles) < 1 or any(len(p) != 6 for p in particles):
        raise ValueError("particles must be rows of x, y, z [nm], phi, theta, psi [deg]")
    grid = n_px + 2 * padding_px
    sampling = _PIXEL_NM * NM_TO_A
    specimen = assembly_in_ice(
        structure_path,
        extent_a=(grid * sampling, grid * sampling),
        ice_thickness_a=_ICE_NM * NM_TO_A,
        rotations=torch.stack([_euler_zxz(*p[3:]) for p in particles]),
        offsets_a=torch.tensor([p[:3] for p in particles], dtype=torch.float64) * NM_TO_A,
        dtype=torch.float32,
        device=device,
    )
    microscope = tmv_microscope()
    potential = PotentialSettings(
        shape=(grid, grid),
        sampling_a=sampling,
        slice_thickness_a=slice_thickness_a,
        energy_ev=microscope.energy_ev,
    )
    imaging = Imaging(defocus_a=5.0 * UM_TO_A, dose_e_per_a2=1.0)
    out = []
    for tilt in tilts_deg:
        tilted = tilt_specimen(specimen, tilt_angle_rad=float(tilt) * DEG_TO_RAD)
        with torch.no_grad():
            result = micrograph(
                tilted,
                potential=potential,
                microscope=microscope,
                detector=TMV_DETECTOR,
                imaging=imaging,
            )
        out.append(result.intensity[padding_px : padding_px + n_px, padding_px : padding_px + n_px])
    return torch.stack(out)


def particle_windows(
    shape: tuple[int, int],
    *,
    origin_px: tuple[int, int] = (0, 0),
    particles: Sequence[Sequence[float]] = TMV_PARTICLES,
    half_width_px: int = 24,
    n_px: int = 400,
) -> torch.Tensor:
    """Boolean mask of square windows centred on the particles' known positions.

    The denoising benchmark scores inside these windows: 48² px (24 nm) around each 18-nm
    segment hold 99.8 % of the noise-free image's contrast energy, the rest of the field
    being flat ice, which a constant image reproduces perfectly.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the (cropped) image [px].
    origin_px
        Row and column of the crop's first pixel in the ``n_px²`` detector [px].
    particles
        Rows of x, y [nm] from the field centre (and angles, ignored), as
        :data:`TMV_PARTICLES`.
    half_width_px
        Half the window's side [px].
    n_px
        The detector's size [px] (0.5 nm pixels).
    """
    require_positive_int("half_width_px", half_width_px)
    mask = torch.zeros(tuple(shape), dtype=torch.bool)
    h = half_width_px
    for p in particles:
        r = round(n_px / 2 + p[1] / _PIXEL_NM - origin_px[0])
        c = round(n_px / 2 + p[0] / _PIXEL_NM - origin_px[1])
        mask[max(r - h, 0) : max(r + h, 0), max(c - h, 0) : max(c + h, 0)] = True
    return mask
