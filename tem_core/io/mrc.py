"""MRC images, image stacks and volumes (float32, voxel size in Å; MRC2014)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from tem_core.io.files import PathLike, atomic_write, to_numpy
from tem_core.validation import require_positive


def _write_mrc_file(tmp: Path, array: np.ndarray, voxel_size_a: float, volume: bool) -> None:
    """Write ``array`` (float32) to ``tmp`` with mrcfile (module-level so tests can replace it)."""
    import mrcfile

    with mrcfile.new(str(tmp), overwrite=True) as mrc:
        mrc.set_data(array)
        if array.ndim == 3:
            if volume:
                mrc.set_volume()
            else:
                mrc.set_image_stack()
        mrc.voxel_size = voxel_size_a
        mrc.update_header_stats()
        mrc.add_label("tem_core")


def write_mrc(
    path: PathLike,
    data: np.ndarray | torch.Tensor,
    *,
    voxel_size_a: float,
    overwrite: bool = False,
    volume: bool = False,
) -> Path:
    """Write an image, an image stack or a volume to an MRC file (float32, atomic).

    Parameters
    ----------
    path
        Destination (``.mrc``; ``.st`` / ``.ali`` for IMOD tilt series work too).
    data
        ``(ny, nx)`` image, ``(n, ny, nx)`` image stack (tilt series) or volume; numpy or
        torch (detached, moved to the CPU), real and finite; stored as float32 (mode 2).
    voxel_size_a
        Pixel / voxel size written to the header (> 0) [Å].
    overwrite
        Replace an existing file.
    volume
        Write 3-D data as a volume (``ispg = 1``) instead of an image stack (``ispg = 0``).

    Returns
    -------
    Path
        The path written.
    """
    array = to_numpy(data)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"data must be 2-D (ny, nx) or 3-D (n, ny, nx), got shape {tuple(array.shape)}"
        )
    if array.size == 0:
        raise ValueError(f"data must not be empty, got shape {tuple(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError("data must be finite (it contains nan or inf)")
    require_positive("voxel_size_a", voxel_size_a, "Å")
    voxel = float(voxel_size_a)
    array = np.ascontiguousarray(array, dtype=np.float32)
    return atomic_write(
        path, lambda tmp: _write_mrc_file(tmp, array, voxel, bool(volume)), overwrite=overwrite
    )


def read_mrc(path: PathLike, *, permissive: bool = False) -> tuple[np.ndarray, float]:
    """Read an MRC file (also gzip-compressed, ``.mrc.gz``).

    Parameters
    ----------
    path
        An MRC file (2-D image, image stack or volume).
    permissive
        Read files with header defects (no ``MAP`` ID, unknown machine stamp: older FEI and
        vendor files) with warnings instead of errors (mrcfile's permissive mode).

    An unknown mode, a truncated data block, a header without data and non-finite values
    raise ``ValueError`` naming the path, also with ``permissive=True``.

    Returns
    -------
    (data, voxel_size_a)
        The data in the file's dtype (an in-memory copy, ``(ny, nx)`` or ``(nz, ny, nx)``) and
        the x voxel size from the header [Å] (0.0 when the header has none, with a warning).
    """
    import mrcfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MRC file {path} does not exist")
    # data defects (unknown mode, truncated data, header only) are errors in both modes;
    # header defects (no MAP ID, unknown machine stamp) only without ``permissive``
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.open(str(path), mode="r", permissive=bool(permissive)) as mrc:
                data = None if mrc.data is None else np.array(mrc.data)
                voxel = mrc.voxel_size
                vx, vy = float(voxel.x), float(voxel.y)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(
                f"{path} is not a readable MRC file ({path.stat().st_size} bytes): {exc}"
            ) from exc
    problems = "; ".join(dict.fromkeys(str(w.message) for w in caught))
    if data is None:
        raise ValueError(
            f"{path} is not a readable MRC file ({path.stat().st_size} bytes): "
            f"{problems or 'no data'} (unknown mode, truncated data or header only)"
        )
    if problems:
        warnings.warn(f"{path} read permissively: {problems}", stacklevel=2)
    if data.size == 0:
        raise ValueError(f"{path} holds a header but no data")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise ValueError(f"{path} holds non-finite values (nan or inf)")
    if vx <= 0:
        warnings.warn(f"{path} has no voxel size in its header; returning 0.0 Å", stacklevel=2)
        vx = 0.0
    elif not math.isclose(vx, vy, rel_tol=1e-4):
        warnings.warn(f"{path} has anisotropic pixels ({vx} × {vy} Å); returning x", stacklevel=2)
    return data, vx
