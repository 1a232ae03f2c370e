"""IMOD tilt-angle files ``.rawtlt`` / ``.tlt`` (degrees on disk, radians in memory)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tem_core.io.files import PathLike, atomic_write, check_destination, to_numpy
from tem_core.units import DEG_TO_RAD, RAD_TO_DEG

#: A tilt of ±90° or more puts the specimen edge-on or upside down: refused on reading.
MAX_TILT_DEG = 90.0


def write_tilt_angles(
    stem_or_path: PathLike,
    angles_rad: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write IMOD tilt-angle files ``<stem>.rawtlt`` and ``<stem>.tlt`` (degrees, one per line).

    Both files hold the same angles (``%.2f`` degrees, in stack order); IMOD's ``tiltalign``
    later rewrites ``.tlt`` with refined angles.

    Parameters
    ----------
    stem_or_path
        ``path/TS_01``, ``path/TS_01.rawtlt`` or ``path/TS_01.tlt``.
    angles_rad
        Tilt angles (1-D, finite) [rad].
    overwrite
        Replace existing files.

    Returns
    -------
    (rawtlt_path, tlt_path)
    """
    stem = Path(stem_or_path)
    if stem.suffix in (".rawtlt", ".tlt"):
        stem = stem.with_suffix("")
    angles = to_numpy(angles_rad, "angles_rad").astype(np.float64)
    if angles.ndim != 1 or angles.size == 0:
        raise ValueError(f"angles_rad must be a non-empty 1-D sequence, got shape {angles.shape}")
    if not np.all(np.isfinite(angles)):
        raise ValueError("angles_rad must be finite [rad]")
    text = "".join(f"{a * RAD_TO_DEG:.2f}\n" for a in angles)
    paths = (Path(f"{stem}.rawtlt"), Path(f"{stem}.tlt"))
    for p in paths:  # check both before writing either
        check_destination(p, overwrite)
    for p in paths:
        atomic_write(p, lambda tmp: tmp.write_text(text, encoding="ascii"), overwrite=overwrite)
    return paths


def read_tilt_angles(path: PathLike) -> torch.Tensor:
    """Read an IMOD ``.rawtlt`` / ``.tlt`` file (degrees, one per line) as float64 radians.

    Strict: a line with text or several numbers, a non-finite angle or one outside
    (-90°, 90°), and a file without angles raise ``ValueError`` naming the path and line.
    Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tilt-angle file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a text file of tilt angles: {exc}") from exc
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise ValueError(
                f"{path}, line {number}: expected one tilt angle in degrees, got {line.strip()!r}"
            )
        try:
            angle = float(fields[0])
        except ValueError:
            raise ValueError(
                f"{path}, line {number}: tilt angle must be a number in degrees, got {fields[0]!r}"
            ) from None
        if not math.isfinite(angle) or abs(angle) >= MAX_TILT_DEG:
            raise ValueError(
                f"{path}, line {number}: tilt angle must be finite and lie in "
                f"(-{MAX_TILT_DEG:g}, {MAX_TILT_DEG:g}) degrees, got {fields[0]}"
            )
        values.append(angle)
    if not values:
        raise ValueError(f"{path} holds no tilt angles (empty file)")
    return torch.tensor(values, dtype=torch.float64) * DEG_TO_RAD
