"""SerialEM ``.mdoc`` tilt-series metadata, converted to internal units and defocus sign."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from tem_core.io.files import PathLike
from tem_core.units import DEG_TO_RAD, KV_TO_EV, UM_TO_A

_KEY_VALUE = re.compile(r"^\s*([A-Za-z][\w.]*)\s*=\s*(.*?)\s*$")
_SECTION = re.compile(r"^\s*\[\s*(\w+)\s*=\s*(.*?)\s*\]\s*$")
_TILT_AXIS = re.compile(r"Tilt axis angle\s*=\s*([-+0-9.eE]+)")
DEFOCUS_CONVENTIONS = ("auto", "serialem", "positive_underfocus")
# Per-section keys read as numbers: a value that does not parse is an error naming the line.
_NUMERIC_KEYS = frozenset(
    {
        "TiltAngle",
        "Defocus",
        "TargetDefocus",
        "ExposureDose",
        "PriorRecordDose",
        "PixelSpacing",
        "Voltage",
        "RotationAngle",
    }
)


def _check_number(path: Path, lineno: int, key: str, value: str) -> None:
    number = _first_float(value)
    if not math.isfinite(number):
        raise ValueError(f"{path}:{lineno}: {key} must be a finite number, got {value!r}")
    if key == "TiltAngle" and abs(number) >= 90.0:
        raise ValueError(f"{path}:{lineno}: TiltAngle must lie in (-90, 90) degrees, got {value!r}")
    if key in ("ExposureDose", "PriorRecordDose", "PixelSpacing", "Voltage") and number < 0:
        raise ValueError(f"{path}:{lineno}: {key} must be >= 0, got {value!r}")


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
    in_zvalue = False
    for lineno, line in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
    ):
        if not line.strip():
            continue
        section = _SECTION.match(line)
        if section:
            kind, value = section.groups()
            in_zvalue = kind == "ZValue"
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
            raise ValueError(
                f"{path}:{lineno}: malformed line {line.strip()!r} (expected 'key = value' or "
                "a [section]); is it a SerialEM .mdoc file?"
            )
        key, value = match.groups()
        if in_zvalue and key in _NUMERIC_KEYS:
            _check_number(path, lineno, key, value)
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
