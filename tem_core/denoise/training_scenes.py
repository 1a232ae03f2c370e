"""Noise-free training images for the denoising network (:mod:`tem_core.denoise.learned`):
random layouts of a structure's assembly in ice at random defocus, simulated by the
package's own forward model at the benchmark's microscope and the network's pixel size."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tem_core.validation import require_positive_int

__all__ = ["random_scene"]


def _random_rotation(generator: torch.Generator) -> torch.Tensor:
    """Uniformly distributed rotation (unit quaternion from 4 Gaussians), float64."""
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    w, x, y, z = q / q.norm()
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
        ]
    )


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


def random_scene(
    structure_path: str | Path,
    *,
    generator: torch.Generator,
    n_px: int = 192,
    padding_px: int = 24,
    max_copies: int = 4,
    defocus_range_a: tuple[float, float] = (3.0e4, 7.0e4),
    ice_range_a: tuple[float, float] = (300.0, 800.0),
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """A noise-free training image (intensity, vacuum = 1, ``(n_px, n_px)``) of 1 to
    ``max_copies`` copies of a structure's assembly at random positions and orientations
    in ice of random thickness, at random defocus; the benchmark's microscope
    (:func:`tem_core.denoise.scene.tmv_microscope`, 200 kV) and 5 Å pixels.

    Copies that would overlap are redrawn (up to 20 tries, then fewer copies).
    """
    from tem_core.denoise.learned import TRAINED_SAMPLING_A  # noqa: PLC0415 (imports this)
    from tem_core.denoise.scene import TMV_DETECTOR, tmv_microscope  # noqa: PLC0415
    from tem_core.potential import PotentialSettings  # noqa: PLC0415
    from tem_core.simulate import Imaging, micrograph  # noqa: PLC0415
    from tem_core.specimen import assembly_in_ice  # noqa: PLC0415

    require_positive_int("n_px", n_px)
    require_positive_int("max_copies", max_copies)
    grid = n_px + 2 * padding_px
    sampling = TRAINED_SAMPLING_A
    ice = _uniform(generator, *ice_range_a)
    defocus = _uniform(generator, *defocus_range_a)
    k = 1 + int(torch.randint(max_copies, (), generator=generator))
    half = 0.5 * n_px * sampling
    specimen = None
    for _ in range(20):
        rotations = torch.stack([_random_rotation(generator) for _ in range(k)])
        offsets = torch.stack(
            [
                torch.tensor(
                    [_uniform(generator, -0.8, 0.8) * half, _uniform(generator, -0.8, 0.8) * half]
                    + [0.0],
                    dtype=torch.float64,
                )
                for _ in range(k)
            ]
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                specimen = assembly_in_ice(
                    structure_path,
                    extent_a=(grid * sampling, grid * sampling),
                    ice_thickness_a=max(ice, 1.0),
                    rotations=rotations,
                    offsets_a=offsets,
                    dtype=torch.float32,
                    device=device,
                )
            break
        except ValueError:  # overlapping copies: draw again, fewer if it keeps failing
            k = max(1, k - 1)
    if specimen is None:
        raise RuntimeError(f"could not place copies of {structure_path} without overlap")
    microscope = tmv_microscope()
    potential = PotentialSettings(
        shape=(grid, grid),
        sampling_a=sampling,
        slice_thickness_a=50.0,
        energy_ev=microscope.energy_ev,
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = micrograph(
            specimen,
            potential=potential,
            microscope=microscope,
            detector=TMV_DETECTOR,
            imaging=Imaging(defocus_a=defocus, dose_e_per_a2=1.0),
        )
    p = padding_px
    return result.intensity[p : p + n_px, p : p + n_px].detach().clone()
