"""Single-axis parallel-beam tilt geometry: angles, tilt axis, voxel size, volume shape.

Conventions (those of :func:`tem_core.specimen.tilt_specimen` and :func:`tem_core.simulate
.tilt_series`): the stack is ``(n_tilts, ny, nx)`` with ``x`` along columns and ``y`` along
rows; the tilt axis lies in the image plane at ``tilt_axis_angle_rad`` from +x; a tilt θ
rotates the specimen right-handed about that axis. The reconstruction volume is
``(nz, ny, nx)`` in the frame where the tilt axis is the volume's y axis (IMOD's aligned-stack
convention): with the axis along y (``tilt_axis_angle_rad = π/2``, the default and the
usual IMOD layout) the volume's x and y are the stack's; otherwise the images are rotated
in-plane by ``π/2 - tilt_axis_angle_rad`` first (exactly for multiples of 90°, bilinearly
otherwise). A voxel is a cube with the stack's pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tem_core import io as tio
from tem_core.propagate import available_memory_bytes
from tem_core.simulate import TiltSeriesResult
from tem_core.validation import require_finite, require_positive

_QUARTER_TURN_TOL = 1e-9  # [rad]


def _quarter_turns(angle_rad: float) -> int | None:
    """Number of quarter turns if ``angle_rad`` is a multiple of π/2, else ``None``."""
    turns = angle_rad / (0.5 * math.pi)
    k = round(turns)
    if abs(turns - k) * 0.5 * math.pi < _QUARTER_TURN_TOL:
        return k % 4
    return None


@dataclass(frozen=True, kw_only=True)
class TiltGeometry:
    """Geometry of a single-axis tilt series and of the volume reconstructed from it.

    Parameters
    ----------
    angles_rad
        Tilt angle of each image of the stack, in stack order; strictly monotonic (stacks are
        stored sorted by angle whatever the acquisition order, e.g. dose-symmetric) and within
        (-π/2, π/2) [rad].
    detector_shape
        ``(ny, nx)`` of the stack's images [px].
    pixel_size_a
        Pixel size of the stack, also the reconstruction's voxel size [Å].
    thickness_a
        Thickness of the reconstructed slab along the beam of the untilted specimen [Å];
        rounded to whole voxels.
    tilt_axis_angle_rad
        In-plane angle of the tilt axis from +x [rad]; ``π/2`` puts it along y (rows).
    """

    angles_rad: tuple[float, ...]
    detector_shape: tuple[int, int]
    pixel_size_a: float
    thickness_a: float
    tilt_axis_angle_rad: float = 0.5 * math.pi

    def __post_init__(self) -> None:
        angles = tuple(float(a) for a in self.angles_rad)
        object.__setattr__(self, "angles_rad", angles)
        if len(angles) == 0:
            raise ValueError("angles_rad must hold at least one tilt angle, got an empty list")
        require_finite("angles_rad", list(angles), "rad")
        if any(abs(a) >= 0.5 * math.pi for a in angles):
            bad = max(angles, key=abs)
            raise ValueError(f"angles_rad must lie in (-pi/2, pi/2), got {bad} rad")
        steps = [b - a for a, b in zip(angles[:-1], angles[1:], strict=True)]
        if steps and not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
            i = next(i for i, s in enumerate(steps) if s == 0 or (s > 0) != (steps[0] > 0))
            raise ValueError(
                "angles_rad must be strictly monotonic (one per stack image, sorted by angle), "
                f"got {angles[i]} then {angles[i + 1]} rad at positions {i}, {i + 1}; "
                "sort the stack and its angles together (torch.argsort(angles))"
            )
        shape = tuple(int(n) for n in self.detector_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"detector_shape must be (ny, nx) with positive sizes, got {shape}")
        object.__setattr__(self, "detector_shape", shape)
        if self.pixel_size_a is None:
            raise ValueError(
                "pixel_size_a is missing: the stack's header holds no pixel size; pass "
                "pixel_size_a=<Å per pixel> (e.g. PixelSpacing of the .mdoc, or nm/px * 10)"
            )
        require_finite("pixel_size_a", self.pixel_size_a, "Å")
        if not self.pixel_size_a > 0:
            raise ValueError(
                f"pixel_size_a must be > 0, got {self.pixel_size_a} Å (a header without a "
                "pixel size stores 0); pass pixel_size_a=<Å per pixel> explicitly"
            )
        require_positive("thickness_a", self.thickness_a, "Å")
        require_finite("tilt_axis_angle_rad", self.tilt_axis_angle_rad, "rad")
        if self.nz < 1:
            raise ValueError(
                f"thickness_a must be at least one voxel ({self.pixel_size_a} Å), "
                f"got {self.thickness_a} Å"
            )

    # --- derived quantities -------------------------------------------------------------
    @property
    def n_tilts(self) -> int:
        return len(self.angles_rad)

    @property
    def voxel_size_a(self) -> float:
        """Edge of a cubic voxel [Å] (the stack's pixel size)."""
        return float(self.pixel_size_a)

    @property
    def alignment_rotation_rad(self) -> float:
        """In-plane rotation that brings the tilt axis onto +y [rad]."""
        return 0.5 * math.pi - float(self.tilt_axis_angle_rad)

    @property
    def quarter_turns(self) -> int | None:
        """The alignment rotation in quarter turns, or ``None`` if it is not a multiple of 90°."""
        return _quarter_turns(self.alignment_rotation_rad)

    @property
    def aligned_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the images rotated so that the tilt axis runs along y [px]."""
        ny, nx = self.detector_shape
        return (nx, ny) if self.quarter_turns in (1, 3) else (ny, nx)

    @property
    def nz(self) -> int:
        return int(round(float(self.thickness_a) / float(self.pixel_size_a)))

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)`` of the reconstruction [voxels]."""
        ny, nx = self.aligned_shape
        return (self.nz, ny, nx)

    def fully_sampled_x(self) -> tuple[int, int]:
        """Columns ``[x0, x1)`` of the volume whose every voxel projects inside the detector
        at every tilt (outside, high-tilt rays leave the field and the voxels are
        under-determined: crop them before comparing or rendering)."""
        nz, _, nx = self.volume_shape
        reach = 0.5 * nx
        for theta in self.angles_rad:
            c, s = abs(math.cos(theta)), abs(math.sin(theta))
            reach = min(reach, (0.5 * nx - 0.5 * (nz - 1) * s - 0.5 * (c + s)) / c + 0.5)
        centre = 0.5 * (nx - 1)
        half = max(0.0, reach - 0.5)
        x0 = max(0, math.ceil(centre - half - 1e-9))
        x1 = min(nx, math.floor(centre + half + 1e-9) + 1)
        return (x0, max(x0, x1))

    def angles_tensor(self, *, dtype=torch.float64, device=None) -> torch.Tensor:
        return torch.tensor(self.angles_rad, dtype=dtype, device=device)

    def check_stack(self, stack: torch.Tensor, name: str = "stack") -> None:
        """Raise ``ValueError`` unless ``stack`` is ``(n_tilts, ny, nx)`` and finite."""
        if not isinstance(stack, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(stack).__name__}")
        expected = (self.n_tilts, *self.detector_shape)
        if stack.ndim != 3 or stack.shape[0] != self.n_tilts:
            raise ValueError(
                f"{name} must hold one image per tilt angle: angles_rad has {self.n_tilts} "
                f"angles but {name} has shape {tuple(stack.shape)} (expected {expected})"
            )
        if tuple(stack.shape[1:]) != self.detector_shape:
            raise ValueError(
                f"{name} images must be detector_shape {self.detector_shape}, "
                f"got {tuple(stack.shape[1:])}"
            )
        finite = torch.isfinite(stack.detach())
        if not bool(finite.all()):
            bad = int((~finite).sum())
            tilt = int((~finite).reshape(stack.shape[0], -1).any(1).nonzero()[0])
            raise ValueError(
                f"{name} must be finite, got {bad} non-finite pixels (first in tilt {tilt})"
            )

    def check_volume(self, volume: torch.Tensor, name: str = "volume") -> None:
        if not isinstance(volume, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(volume).__name__}")
        if tuple(volume.shape) != self.volume_shape:
            raise ValueError(
                f"{name} must have the geometry's volume_shape {self.volume_shape} (nz, ny, nx), "
                f"got {tuple(volume.shape)}"
            )
        finite = torch.isfinite(volume.detach())
        if not bool(finite.all()):
            raise ValueError(
                f"{name} must be finite, got {int((~finite).sum())} non-finite voxels (nan or inf)"
            )

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Memory of a reconstruction: the volume, the stack and the slice projection matrix."""
        nz, ny, nx = self.volume_shape
        item = torch.empty((), dtype=dtype).element_size()
        volume = nz * ny * nx * item
        stack = self.n_tilts * ny * nx * item
        # strip kernel: at most ~2.5 bins per pixel and angle, A and its transpose,
        # value + int64 column index each
        matrix = int(2 * 2.5 * self.n_tilts * nz * nx * (item + 8))
        return 2 * volume + 2 * stack + matrix

    def check_memory(self, dtype: torch.dtype = torch.float32, device=None) -> int:
        """Refuse (``MemoryError``) before allocating a reconstruction that does not fit."""
        need = self.memory_bytes(dtype)
        have = available_memory_bytes(device)
        if need > have:
            raise MemoryError(
                f"volume_shape {self.volume_shape} (thickness_a={self.thickness_a} Å at "
                f"pixel_size_a={self.pixel_size_a} Å) needs about {need / 2**30:.1f} GiB in "
                f"{dtype} but {have / 2**30:.1f} GiB are available on "
                f"{torch.device('cpu' if device is None else device)}; reduce thickness_a, "
                "bin or crop the stack"
            )
        return need


def read_angles(path: str | Path) -> tuple[torch.Tensor, float | None]:
    """Tilt angles [rad] of a stack, in stack order, and the tilt-axis angle if the file has one.

    ``.tlt`` / ``.rawtlt`` (IMOD, degrees one per line) or ``.mdoc`` (SerialEM; angles by
    ``ZValue``, the tilt-axis angle as SerialEM reports it, not converted to tem_core's frame).
    """
    path = Path(path)
    if path.suffix.lower() == ".mdoc":
        mdoc = tio.read_mdoc(path)
        return mdoc.angles_rad.clone(), mdoc.tilt_axis_angle_rad
    if path.suffix.lower() in (".tlt", ".rawtlt", ".txt"):
        return tio.read_tilt_angles(path), None
    raise ValueError(f"path must be a .tlt, .rawtlt or .mdoc file, got {path.name!r}")


def geometry_from_files(
    angles_path: str | Path,
    *,
    detector_shape: tuple[int, int],
    thickness_a: float,
    pixel_size_a: float | None,
    tilt_axis_angle_rad: float = 0.5 * math.pi,
) -> TiltGeometry:
    """Geometry from an IMOD angle file or a SerialEM ``.mdoc`` (see :func:`read_angles`).

    ``pixel_size_a`` is the stack's pixel size [Å] (:func:`tem_core.io.read_mrc` returns it;
    ``None`` or 0 when the header holds none raises, asking for it).
    """
    angles, _ = read_angles(angles_path)
    return TiltGeometry(
        angles_rad=tuple(angles.tolist()),
        detector_shape=detector_shape,
        pixel_size_a=pixel_size_a,  # type: ignore[arg-type]
        thickness_a=thickness_a,
        tilt_axis_angle_rad=tilt_axis_angle_rad,
    )


def geometry_from_tilt_series(
    result: TiltSeriesResult, *, thickness_a: float, tilt_axis_angle_rad: float
) -> TiltGeometry:
    """Geometry of a simulated :class:`tem_core.simulate.TiltSeriesResult`.

    ``tilt_axis_angle_rad`` is the scheme's (``TiltScheme.tilt_axis_angle_rad``) [rad].
    """
    return TiltGeometry(
        angles_rad=result.angles_rad,
        detector_shape=tuple(result.stack.shape[-2:]),
        pixel_size_a=result.sampling_a,
        thickness_a=thickness_a,
        tilt_axis_angle_rad=tilt_axis_angle_rad,
    )
