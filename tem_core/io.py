"""File formats: MRC images and stacks, IMOD tilt-angle files, SerialEM ``.mdoc``, PNG previews.

Imports no physics stage. Every writer is atomic: the data go to a temporary file in the
destination directory, which then replaces the destination with :func:`os.replace`, so an
interrupted run never leaves a half-written file. Writers refuse to replace an existing file
unless ``overwrite=True``, and an unwritable destination raises an ``OSError`` naming the path.

Conventions
-----------
* MRC data are written as float32 (mode 2) with the voxel size in Å in the header. A 2-D array
  is one image; a 3-D array ``(n, ny, nx)`` is an image stack (a tilt series: ``ispg = 0``,
  ``nz = n``, ``mz = 1`` as the MRC2014 convention for image stacks) unless ``volume=True``
  (``ispg = 1``, ``mz = nz``, e.g. a tomogram).
* Tilt angles are stored in degrees, one per line (IMOD ``.rawtlt`` / ``.tlt``, ``%.2f``),
  and handled in radians in memory.
* SerialEM metadata are converted to internal units (Å, eV, rad, e/Å²) and to this package's
  defocus sign (``defocus_a > 0`` is underfocus), see :func:`read_mdoc`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tem_core._checks import require_positive
from tem_core.units import DEG_TO_RAD, KV_TO_EV, RAD_TO_DEG, UM_TO_A

__all__ = [
    "MdocTiltSeries",
    "read_mdoc",
    "read_mrc",
    "read_tilt_angles",
    "write_mrc",
    "write_png_preview",
    "write_tilt_angles",
]

PathLike = str | os.PathLike


# --- atomic writes -------------------------------------------------------------------------


def _check_destination(path: PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def _atomic_write(path: PathLike, writer: Callable[[Path], None], *, overwrite: bool) -> Path:
    """Call ``writer(temp_path)`` on a temporary file next to ``path``, then move it into place."""
    path = _check_destination(path, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise PermissionError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


# --- MRC -----------------------------------------------------------------------------------


def _to_numpy(data: Any, name: str = "data") -> np.ndarray:
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor")
        data = data.detach().cpu().numpy()
    array = np.asarray(data)
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)):
        raise TypeError(f"{name} must be a real numeric array or tensor, got dtype {array.dtype}")
    return array


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
    array = _to_numpy(data)
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
    return _atomic_write(
        path, lambda tmp: _write_mrc_file(tmp, array, voxel, bool(volume)), overwrite=overwrite
    )


def read_mrc(path: PathLike) -> tuple[np.ndarray, float]:
    """Read an MRC file.

    Parameters
    ----------
    path
        An MRC file (2-D image, image stack or volume).

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
    with mrcfile.open(str(path), mode="r") as mrc:
        data = np.array(mrc.data)
        voxel = mrc.voxel_size
        vx, vy = float(voxel.x), float(voxel.y)
    if vx <= 0:
        warnings.warn(f"{path} has no voxel size in its header; returning 0.0 Å", stacklevel=2)
        vx = 0.0
    elif not math.isclose(vx, vy, rel_tol=1e-4):
        warnings.warn(f"{path} has anisotropic pixels ({vx} × {vy} Å); returning x", stacklevel=2)
    return data, vx


# --- tilt angles -----------------------------------------------------------------------------


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
    angles = _to_numpy(angles_rad, "angles_rad").astype(np.float64)
    if angles.ndim != 1 or angles.size == 0:
        raise ValueError(f"angles_rad must be a non-empty 1-D sequence, got shape {angles.shape}")
    if not np.all(np.isfinite(angles)):
        raise ValueError("angles_rad must be finite [rad]")
    text = "".join(f"{a * RAD_TO_DEG:.2f}\n" for a in angles)
    paths = (Path(f"{stem}.rawtlt"), Path(f"{stem}.tlt"))
    for p in paths:  # check both before writing either
        _check_destination(p, overwrite)
    for p in paths:
        _atomic_write(p, lambda tmp: tmp.write_text(text, encoding="ascii"), overwrite=overwrite)
    return paths


def read_tilt_angles(path: PathLike) -> torch.Tensor:
    """Read an IMOD ``.rawtlt`` / ``.tlt`` file (degrees, one per line) as float64 radians."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tilt-angle file {path} does not exist")
    values = [float(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]
    return torch.tensor(values, dtype=torch.float64) * DEG_TO_RAD


# --- SerialEM mdoc ---------------------------------------------------------------------------

_KEY_VALUE = re.compile(r"^\s*([A-Za-z][\w.]*)\s*=\s*(.*?)\s*$")
_SECTION = re.compile(r"^\s*\[\s*(\w+)\s*=\s*(.*?)\s*\]\s*$")
_TILT_AXIS = re.compile(r"Tilt axis angle\s*=\s*([-+0-9.eE]+)")
DEFOCUS_CONVENTIONS = ("auto", "serialem", "positive_underfocus")


@dataclass(frozen=True, kw_only=True, eq=False)
class MdocTiltSeries:
    """Per-tilt metadata of a SerialEM tilt series, sorted by ``ZValue`` (stack order).

    Attributes
    ----------
    z_values
        ``(n,)`` int64 section numbers in the image stack.
    angles_rad
        ``(n,)`` float64 tilt angles (``TiltAngle``) [rad].
    defocus_a
        ``(n,)`` defocus (``Defocus``), positive = underfocus (see ``defocus_convention``);
        NaN where absent [Å].
    target_defocus_a
        ``(n,)`` requested defocus (``TargetDefocus``), positive = underfocus; NaN if absent [Å].
    dose_e_per_a2
        ``(n,)`` dose of each exposure (``ExposureDose``); NaN if absent [e/Å²].
    prior_dose_e_per_a2
        ``(n,)`` dose received before each exposure (``PriorRecordDose``); NaN if absent [e/Å²].
    acquisition_order
        ``(n,)`` int64 position of each tilt in the order of recording, 0 for the first (by
        ``PriorRecordDose``, else ``DateTime``, else ``ZValue``);
        ``torch.argsort(acquisition_order)`` lists the tilts as recorded
        (:attr:`indices_in_acquisition_order`).
    date_times
        Per-tilt ``DateTime`` (``None`` where absent or unparsable).
    pixel_size_a
        ``PixelSpacing`` [Å] (``None`` if absent).
    energy_ev
        Beam energy from ``Voltage`` (kV) [eV] (``None`` if absent).
    tilt_axis_angle_rad
        Tilt axis angle from the ``[T = ... Tilt axis angle = ...]`` title line, else the
        first section's ``RotationAngle``; ``None`` if neither is present [rad]. SerialEM's
        value converted to radians only: it is the in-image angle of the axis on SerialEM's
        camera, to be matched to tem_core's ``tilt_axis_angle_rad`` (from +x) by the user.
    defocus_convention
        ``"serialem"`` or ``"positive_underfocus"``: how ``Defocus`` was converted.
    header
        Global ``key = value`` lines (strings).
    titles
        The ``[T = ...]`` title lines.
    sections
        The raw ``key = value`` pairs of each ``[ZValue = n]`` section, in stack order.
    """

    z_values: torch.Tensor
    angles_rad: torch.Tensor
    defocus_a: torch.Tensor
    target_defocus_a: torch.Tensor
    dose_e_per_a2: torch.Tensor
    prior_dose_e_per_a2: torch.Tensor
    acquisition_order: torch.Tensor
    date_times: tuple[datetime | None, ...]
    pixel_size_a: float | None
    energy_ev: float | None
    tilt_axis_angle_rad: float | None
    defocus_convention: str
    header: dict[str, str]
    titles: tuple[str, ...]
    sections: tuple[dict[str, str], ...]

    def __len__(self) -> int:
        return int(self.z_values.numel())

    @property
    def indices_in_acquisition_order(self) -> torch.Tensor:
        """``(n,)`` int64 indices of the tilts in the order they were recorded."""
        return torch.argsort(self.acquisition_order)

    @property
    def cumulative_dose_e_per_a2(self) -> torch.Tensor:
        """Dose received by the end of each exposure, ``prior + exposure`` [e/Å²]."""
        return self.prior_dose_e_per_a2 + self.dose_e_per_a2


def _first_float(text: str | None) -> float:
    if text is None:
        return math.nan
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return math.nan


def _parse_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    text = " ".join(text.split())
    for fmt in ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(text, fmt)
    return None


def read_mdoc(path: PathLike, *, defocus_convention: str = "auto") -> MdocTiltSeries:
    """Read a SerialEM ``.mdoc`` file of a tilt series.

    Parameters
    ----------
    path
        The ``.mdoc`` file (the ``[ZValue = n]`` sections are used; ``[FrameSet]`` ignored).
    defocus_convention
        How to read ``Defocus`` [µm]. ``"serialem"``: the microscope's defocus readout, negative
        for underfocus, so ``defocus_a = −Defocus · 10⁴``. ``"positive_underfocus"``: the values
        are already positive for underfocus (e.g. measured by autofocus or CTF fitting and
        written back), ``defocus_a = +Defocus · 10⁴``. ``"auto"`` (default): ``TargetDefocus``
        always follows SerialEM's sign (negative = underfocus); when the median ``Defocus`` has
        the opposite sign to the median ``TargetDefocus`` the values are taken as
        ``"positive_underfocus"``, otherwise (or without ``TargetDefocus``) as ``"serialem"``.

    Returns
    -------
    MdocTiltSeries
        Per-tilt values sorted by ``ZValue``, in internal units.
    """
    if defocus_convention not in DEFOCUS_CONVENTIONS:
        raise ValueError(
            f"defocus_convention must be one of {DEFOCUS_CONVENTIONS}, got {defocus_convention!r}"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mdoc file {path} does not exist")
    header: dict[str, str] = {}
    titles: list[str] = []
    raw_sections: list[tuple[int, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for lineno, line in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
    ):
        if not line.strip():
            continue
        section = _SECTION.match(line)
        if section:
            kind, value = section.groups()
            if kind == "T":
                titles.append(value)
                current = None
            elif kind == "ZValue":
                try:
                    z = int(value)
                except ValueError as exc:
                    raise ValueError(f"{path}:{lineno}: bad ZValue {value!r}") from exc
                current = {}
                raw_sections.append((z, current))
            else:  # FrameSet and other sections: skip their keys
                current = {}
            continue
        match = _KEY_VALUE.match(line)
        if match is None:
            continue
        key, value = match.groups()
        (header if current is None else current)[key] = value
    if not raw_sections:
        raise ValueError(f"{path} holds no [ZValue = n] sections; is it a SerialEM .mdoc file?")
    raw_sections.sort(key=lambda item: item[0])
    z_values = [z for z, _ in raw_sections]
    if len(set(z_values)) != len(z_values):
        raise ValueError(f"{path} has duplicate ZValue sections")
    sections = tuple(s for _, s in raw_sections)

    def column(key: str) -> torch.Tensor:
        return torch.tensor([_first_float(s.get(key)) for s in sections], dtype=torch.float64)

    angles_deg = column("TiltAngle")
    if torch.isnan(angles_deg).any():
        raise ValueError(f"{path}: every [ZValue] section needs a TiltAngle")
    defocus_um = column("Defocus")
    target_um = column("TargetDefocus")
    if defocus_convention == "auto":
        d_med, t_med = defocus_um.nanmedian(), target_um.nanmedian()
        opposite = bool(torch.isfinite(d_med) & torch.isfinite(t_med) & (d_med * t_med < 0))
        defocus_convention = "positive_underfocus" if opposite else "serialem"
    sign = 1.0 if defocus_convention == "positive_underfocus" else -1.0
    prior = column("PriorRecordDose")
    date_times = tuple(_parse_datetime(s.get("DateTime")) for s in sections)
    if not torch.isnan(prior).any():
        order = torch.argsort(prior, stable=True)
    elif all(d is not None for d in date_times):
        order = torch.tensor(sorted(range(len(sections)), key=lambda i: date_times[i]))
    else:
        order = torch.arange(len(sections))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(sections), dtype=order.dtype)

    pixel = _first_float(header.get("PixelSpacing", sections[0].get("PixelSpacing")))
    voltage_kv = _first_float(header.get("Voltage", sections[0].get("Voltage")))
    axis_deg = math.nan
    for title in titles:
        found = _TILT_AXIS.search(title)
        if found:
            axis_deg = float(found.group(1))
            break
    if math.isnan(axis_deg):
        axis_deg = _first_float(sections[0].get("RotationAngle"))
    return MdocTiltSeries(
        z_values=torch.tensor(z_values, dtype=torch.int64),
        angles_rad=angles_deg * DEG_TO_RAD,
        defocus_a=sign * defocus_um * UM_TO_A,
        target_defocus_a=-target_um * UM_TO_A,
        dose_e_per_a2=column("ExposureDose"),
        prior_dose_e_per_a2=prior,
        acquisition_order=rank.to(torch.int64),
        date_times=date_times,
        pixel_size_a=None if math.isnan(pixel) else pixel,
        energy_ev=None if math.isnan(voltage_kv) else voltage_kv * KV_TO_EV,
        tilt_axis_angle_rad=None if math.isnan(axis_deg) else axis_deg * DEG_TO_RAD,
        defocus_convention=defocus_convention,
        header=header,
        titles=tuple(titles),
        sections=sections,
    )


# --- previews --------------------------------------------------------------------------------


def write_png_preview(
    path: PathLike,
    image: np.ndarray | torch.Tensor,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    cmap: str = "gray",
    overwrite: bool = False,
) -> Path:
    """Save a 2-D image as an 8-bit PNG with a percentile contrast stretch (atomic).

    Parameters
    ----------
    path
        Destination ``.png``.
    image
        ``(ny, nx)`` real image (numpy or torch); row 0 is drawn at the top.
    percentiles
        Lower and upper percentiles mapped to black and white.
    cmap
        Matplotlib colour map name.
    overwrite
        Replace an existing file.
    """
    from matplotlib import image as mpl_image

    array = _to_numpy(image, "image").astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D (ny, nx), got shape {tuple(array.shape)}")
    low_pct, high_pct = percentiles
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise ValueError("image has no finite values")
    vmin, vmax = np.percentile(finite, [low_pct, high_pct])
    if not vmax > vmin:
        vmax = vmin + 1.0
    array = np.nan_to_num(array, nan=vmin, posinf=vmax, neginf=vmin)
    return _atomic_write(
        path,
        lambda tmp: mpl_image.imsave(tmp, array, vmin=vmin, vmax=vmax, cmap=cmap, format="png"),
        overwrite=overwrite,
    )
