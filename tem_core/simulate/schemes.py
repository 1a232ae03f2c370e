"""Tilt schemes: angles in acquisition order with per-tilt dose and defocus.

Uniform, bidirectional and dose-symmetric (Hagen et al. 2017) schemes, or one imported from
a SerialEM ``.mdoc`` acquisition (:func:`tem_core.io.read_mdoc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tem_core import io as tio
from tem_core.validation import require_finite, require_integer, require_positive


@dataclass(frozen=True, kw_only=True)
class TiltScheme:
    """Tilt angles in acquisition order, with per-tilt dose and defocus.

    Parameters
    ----------
    angles_rad
        Tilt angles in **acquisition order** [rad].
    dose_e_per_a2
        Dose of each exposure, same order [e/Å²].
    defocus_a
        Defocus of each exposure, same order [Å], positive = underfocus.
    tilt_axis_angle_rad
        In-plane angle of the tilt axis from +x [rad].
    """

    angles_rad: tuple[float, ...]
    dose_e_per_a2: tuple[float, ...]
    defocus_a: tuple[float, ...]
    tilt_axis_angle_rad: float = 0.0
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        n = len(self.angles_rad)
        if n == 0:
            raise ValueError("angles_rad must hold at least one tilt, got 0")
        for label, values, unit in (
            ("dose_e_per_a2", self.dose_e_per_a2, "e/Å²"),
            ("defocus_a", self.defocus_a, "Å"),
        ):
            if len(values) != n:
                raise ValueError(f"{label} must have one value per tilt ({n}), got {len(values)}")
            require_finite(label, list(values), unit)
        require_finite("angles_rad", list(self.angles_rad), "rad")
        require_positive("dose_e_per_a2", list(self.dose_e_per_a2), "e/Å²")
        if any(abs(a) >= math.pi / 2 for a in self.angles_rad):
            bad = max(self.angles_rad, key=abs)
            raise ValueError(f"angles_rad must lie in (-pi/2, pi/2), got {bad} rad")
        require_finite("tilt_axis_angle_rad", self.tilt_axis_angle_rad, "rad")

    def __len__(self) -> int:
        return len(self.angles_rad)

    @property
    def total_dose_e_per_a2(self) -> float:
        return float(sum(self.dose_e_per_a2))

    def sorted_by_angle(self) -> list[int]:
        """Acquisition indices ordered by increasing angle (the order of the output stack)."""
        return sorted(range(len(self)), key=lambda i: self.angles_rad[i])


def _angles_grid(min_angle_rad: float, max_angle_rad: float, step_rad: float) -> list[float]:
    require_positive("step_rad", step_rad, "rad")
    require_finite("min_angle_rad", min_angle_rad, "rad")
    require_finite("max_angle_rad", max_angle_rad, "rad")
    if max_angle_rad < min_angle_rad:
        raise ValueError(
            f"max_angle_rad must be >= min_angle_rad ({min_angle_rad} rad), got {max_angle_rad} rad"
        )
    n = int(round((max_angle_rad - min_angle_rad) / step_rad)) + 1
    return [min_angle_rad + i * step_rad for i in range(n)]


def tilt_scheme(
    kind: str,
    *,
    min_angle_rad: float,
    max_angle_rad: float,
    step_rad: float,
    total_dose_e_per_a2: float,
    defocus_a: float,
    start_angle_rad: float = 0.0,
    group_size: int = 2,
    tilt_axis_angle_rad: float = 0.0,
) -> TiltScheme:
    """Build a tilt scheme with the dose shared equally between tilts.

    Parameters
    ----------
    kind
        ``"uniform"`` (min to max), ``"bidirectional"`` (start to max, then from start - step
        down to min) or ``"dose-symmetric"`` (Hagen et al. 2017, J. Struct. Biol. 197:191: start
        at ``start_angle_rad``, then alternate groups of ``group_size`` tilts on each side).
    min_angle_rad, max_angle_rad, step_rad
        Angular range and increment [rad].
    total_dose_e_per_a2
        Dose of the whole series [e/Å²].
    defocus_a
        Defocus of every tilt [Å] (positive = underfocus).
    """
    require_positive("total_dose_e_per_a2", total_dose_e_per_a2, "e/Å²")
    grid = _angles_grid(min_angle_rad, max_angle_rad, step_rad)
    if kind == "uniform":
        order = grid
    elif kind in ("bidirectional", "dose-symmetric"):
        i0 = min(range(len(grid)), key=lambda i: abs(grid[i] - start_angle_rad))
        if kind == "bidirectional":
            order = grid[i0:] + grid[:i0][::-1]
        else:
            require_integer("group_size", group_size, minimum=1)
            order = [grid[i0]]
            up, down = grid[i0 + 1 :], grid[:i0][::-1]
            while up or down:
                order += up[:group_size]
                up = up[group_size:]
                order += down[:group_size]
                down = down[group_size:]
    else:
        raise ValueError(
            f"kind must be 'uniform', 'bidirectional' or 'dose-symmetric', got {kind!r}"
        )
    dose = total_dose_e_per_a2 / len(order)
    return TiltScheme(
        angles_rad=tuple(order),
        dose_e_per_a2=(dose,) * len(order),
        defocus_a=(float(defocus_a),) * len(order),
        tilt_axis_angle_rad=tilt_axis_angle_rad,
        name=kind,
    )


def tilt_scheme_from_mdoc(
    path: str | Path, *, tilt_axis_angle_rad: float | None = None
) -> TiltScheme:
    """Import a SerialEM ``.mdoc`` acquisition: angles, doses and defoci in acquisition order."""
    mdoc = tio.read_mdoc(path)
    order = np.argsort(np.asarray(mdoc.acquisition_order))
    axis = mdoc.tilt_axis_angle_rad if tilt_axis_angle_rad is None else tilt_axis_angle_rad
    return TiltScheme(
        angles_rad=tuple(float(np.asarray(mdoc.angles_rad)[i]) for i in order),
        dose_e_per_a2=tuple(float(np.asarray(mdoc.dose_e_per_a2)[i]) for i in order),
        defocus_a=tuple(float(np.asarray(mdoc.defocus_a)[i]) for i in order),
        tilt_axis_angle_rad=float(axis if axis is not None else 0.0),
        name=Path(path).name,
    )
