"""Dataset descriptions: a TOML file read with :mod:`tomllib` and validated strictly.

A TOML file is an edge of the package, like a notebook's parameter cell: values are in field
units named in the key (``voltage_kv``, ``defocus_um``, ``ice_thickness_nm``) and converted to
internal units (Å, eV, rad) when an item is built. Every error names the file, the key path,
the value and the unit, e.g. ``example.toml: imaging.defocus_um must be > 0 µm, got -1``.

A sampled value is written as

* a number, string or boolean: fixed for every item;
* ``{ choice = [a, b, ...] }``: one of the listed values, each equally likely;
* ``{ uniform = [low, high] }``: uniform on ``[low, high)``;
* ``{ int_uniform = [low, high] }``: an integer in ``[low, high]`` (both included).

The sections and keys are listed in :data:`SCHEMA` (and documented in
``data/example_dataset.toml``); unknown sections or keys are errors, so a typo never falls
back silently to a default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tem_core.detector import available_cameras

__all__ = [
    "ParameterDistribution",
    "DatasetSpec",
    "StructureSpec",
    "load_dataset_spec",
    "parse_dataset_spec",
]

KINDS = ("micrograph", "tilt_series")
DEVICES = ("auto", "cpu", "cuda")
SUPPORTS = ("vacuum", "carbon", "gold")
POSES = ("uniform", "in_plane", "none")
METHODS = ("multislice", "projection")
SCHEMES = ("uniform", "bidirectional", "dose-symmetric")
NOISE_MODELS = ("poisson_wald", "scaled_poisson")
OPTIONAL_SECTIONS = ("outputs", "microscope", "detector", "tilt")


class DatasetSpecError(ValueError):
    """A dataset description that cannot be used; the message names file, key, value, unit."""


@dataclass(frozen=True)
class ParameterDistribution:
    """A value drawn per item: ``fixed``, ``choice``, ``uniform`` or ``int_uniform``."""

    kind: str
    values: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value with ``rng`` (a fixed value draws nothing)."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        low, high = self.values
        if self.kind == "uniform":
            return float(low + (high - low) * rng.random())
        return int(rng.integers(low, high, endpoint=True))

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed"

    def support(self) -> tuple[Any, ...]:
        """The values this distribution can give (the range ends for uniform ones)."""
        return self.values


# key -> (type, unit, constraint, default); type "num", "int", "str", "bool", "pair";
# constraint: None, ">0", ">=0", a tuple of allowed strings, or ("range", low, high)
# (ranges: what a transmission microscope can have; a value outside is a unit slip, e.g. a
# defocus in Å under defocus_um, or 300e3 under voltage_kv)
_NUM, _INT, _STR, _BOOL = "num", "int", "str", "bool"
REQUIRED = object()
SCHEMA: dict[str, dict[str, tuple[str, str, Any, Any]]] = {
    "dataset": {
        "name": (_STR, "", None, "dataset"),
        "items": (_INT, "", ">0", REQUIRED),
        "seed": (_INT, "", ">=0", REQUIRED),
        "kind": (_STR, "", KINDS, "micrograph"),
        "device": (_STR, "", DEVICES, "auto"),
    },
    "grid": {
        "shape_px": ("pair", "px", ">0", REQUIRED),
        "pixel_size_a": (_NUM, "Å", ("range", 0.01, 1000.0), REQUIRED),
        "slice_thickness_a": (_NUM, "Å", ">0", 20.0),
        "method": (_STR, "", METHODS, "multislice"),
    },
    "specimen": {
        "ice_thickness_nm": (_NUM, "nm", ("range", 0.1, 10_000.0), REQUIRED),
        "support": (_STR, "", SUPPORTS, "vacuum"),
        "hole_diameter_um": (_NUM, "µm", ("range", 0.01, 1000.0), None),
        "support_thickness_nm": (_NUM, "nm", ">=0", 15.0),
        "edge_thickness_nm": (_NUM, "nm", ">0", None),
        "structured_ice": (_BOOL, "", None, False),
        "poses": (_STR, "", POSES, "uniform"),
        "min_gap_a": (_NUM, "Å", ">=0", 5.0),
    },
    "microscope": {
        "voltage_kv": (_NUM, "kV", ("range", 1.0, 10_000.0), 300.0),
        "cs_mm": (_NUM, "mm", ("range", -100.0, 100.0), 2.7),
        "cc_mm": (_NUM, "mm", ("range", 0.0, 100.0), 2.7),
        "energy_spread_ev": (_NUM, "eV", ">=0", 0.7),
        "illumination_semiangle_mrad": (_NUM, "mrad", ">=0", 0.0),
        "objective_aperture_mrad": (_NUM, "mrad", ">0", None),
        "energy_filter": (_BOOL, "", None, False),
    },
    "detector": {
        "camera": (_STR, "", None, "parametric"),
        "dqe": (_NUM, "", ("range", 1e-6, 1.0), None),  # None: the camera's DQE(0), else 1
        "gain_counts_per_e": (_NUM, "counts/e", ">0", 1.0),
        "noise_model": (_STR, "", NOISE_MODELS, "poisson_wald"),
    },
    "imaging": {
        "defocus_um": (_NUM, "µm", ("range", -1000.0, 1000.0), REQUIRED),
        "dose_e_per_a2": (_NUM, "e/Å²", ">0", REQUIRED),
        "astigmatism_nm": (_NUM, "nm", ">=0", 0.0),
        "astigmatism_angle_deg": (_NUM, "deg", None, 0.0),
        # None: the package's default for the kind (on for tilt series, off for micrographs)
        "radiation_damage": (_BOOL, "", None, None),
    },
    "tilt": {
        "scheme": (_STR, "", SCHEMES, "dose-symmetric"),
        "min_deg": (_NUM, "deg", ("range", -89.0, 89.0), -60.0),
        "max_deg": (_NUM, "deg", ("range", -89.0, 89.0), 60.0),
        "step_deg": (_NUM, "deg", ">0", 3.0),
        "start_deg": (_NUM, "deg", ("range", -89.0, 89.0), 0.0),
        "group_size": (_INT, "", ">0", 2),
        "axis_deg": (_NUM, "deg", None, 0.0),
    },
    "outputs": {
        "noise_free": (_BOOL, "", None, True),
        "particles": (_BOOL, "", None, True),
        "potential_volume": (_BOOL, "", None, False),
    },
}
STRUCTURE_SCHEMA: dict[str, tuple[str, str, Any, Any]] = {
    "path": (_STR, "", None, REQUIRED),
    "copies": (_INT, "", ">=0", 1),
    "assembly": (_STR, "", None, None),
    "add_hydrogens": (_BOOL, "", None, False),
    "keep_waters": (_BOOL, "", None, False),
    "name": (_STR, "", None, None),
}
# keys whose value is set once for the whole dataset (not sampled per item)
STATIC = {
    "dataset.name",
    "dataset.items",
    "dataset.seed",
    "dataset.kind",
    "dataset.device",
    "grid.shape_px",
    "grid.slice_thickness_a",
    "grid.method",
    "outputs.noise_free",
    "outputs.particles",
    "outputs.potential_volume",
    "structures.path",
    "structures.assembly",
    "structures.add_hydrogens",
    "structures.keep_waters",
    "structures.name",
}


@dataclass(frozen=True, kw_only=True)
class StructureSpec:
    """One atomic model of the recipe: ``path`` (resolved), copies per item, reading options."""

    path: Path
    copies: ParameterDistribution
    assembly: str | None = None
    add_hydrogens: bool = False
    keep_waters: bool = False
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """A validated dataset description.

    Attributes
    ----------
    source
        The TOML file (``None`` when parsed from a dict).
    values
        ``{"section.key": value or ParameterDistribution}`` in field units, defaults filled in.
    structures
        The atomic models (at least one).
    """

    source: Path | None
    values: dict[str, Any]
    structures: tuple[StructureSpec, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def n_items(self) -> int:
        return int(self.values["dataset.items"])

    @property
    def seed(self) -> int:
        return int(self.values["dataset.seed"])

    @property
    def kind(self) -> str:
        return str(self.values["dataset.kind"])

    @property
    def name(self) -> str:
        return str(self.values["dataset.name"])

    def sampled_keys(self) -> list[str]:
        """Keys drawn per item, in a fixed order (the metadata table's columns)."""
        keys = [k for k, v in self.values.items() if isinstance(v, ParameterDistribution)]
        keys += [f"structures.{i}.copies" for i in range(len(self.structures))]
        return keys


def _where(source: Path | None, key: str) -> str:
    return f"{source.name if source else '<dict>'}: {key}"


def _fail(source: Path | None, key: str, message: str) -> DatasetSpecError:
    return DatasetSpecError(f"{_where(source, key)} {message}")


def _check_scalar(source, key: str, value: Any, kind: str, unit: str, rule: Any) -> Any:
    shown = f"{value!r} {unit}".rstrip()
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise _fail(source, key, f"must be true or false, got {shown}")
        return value
    if kind == _STR:
        if not isinstance(value, str):
            raise _fail(source, key, f"must be a string, got {shown}")
        if isinstance(rule, tuple) and rule[0] != "range" and value not in rule:
            raise _fail(source, key, f"must be one of {list(rule)}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(source, key, f"must be a number [{unit}], got {shown}".replace(" []", ""))
    if kind == _INT and not isinstance(value, int):
        raise _fail(source, key, f"must be an integer, got {shown}")
    if not math.isfinite(value):
        raise _fail(source, key, f"must be finite, got {shown}")
    if rule == ">0" and not value > 0:
        raise _fail(source, key, f"must be > 0 {unit}, got {shown}".replace("  ", " "))
    if rule == ">=0" and not value >= 0:
        raise _fail(source, key, f"must be >= 0 {unit}, got {shown}".replace("  ", " "))
    if isinstance(rule, tuple) and rule[0] == "range" and not rule[1] <= value <= rule[2]:
        raise _fail(source, key, f"must lie in [{rule[1]}, {rule[2]}] {unit}, got {shown}")
    return float(value) if kind == _NUM else int(value)


def _parse_value(source, key: str, value: Any, spec: tuple[str, str, Any, Any], static: bool):
    kind, unit, rule, _ = spec
    if kind == "pair":
        if not isinstance(value, list) or len(value) != 2:
            raise _fail(source, key, f"must be a pair [ny, nx] [{unit}], got {value!r}")
        return tuple(_check_scalar(source, key, v, _INT, unit, rule) for v in value)
    if not isinstance(value, dict):
        checked = _check_scalar(source, key, value, kind, unit, rule)
        return checked if static else ParameterDistribution("fixed", (checked,))
    if static:
        raise _fail(source, key, f"is set once for the whole dataset; got a distribution {value}")
    if len(value) != 1:
        raise _fail(
            source,
            key,
            f"must be a value or one of {{choice|uniform|int_uniform = [...]}}, got {value!r}",
        )
    ((dist, args),) = value.items()
    if dist not in ("choice", "uniform", "int_uniform"):
        raise _fail(
            source, key, f"distribution must be 'choice', 'uniform' or 'int_uniform', got {dist!r}"
        )
    if not isinstance(args, list) or not args:
        raise _fail(source, key, f"{dist} needs a non-empty list, got {args!r}")
    if dist == "choice":
        return ParameterDistribution(
            "choice", tuple(_check_scalar(source, key, v, kind, unit, rule) for v in args)
        )
    if kind not in (_NUM, _INT) or (dist == "uniform" and kind == _INT):
        raise _fail(source, key, f"cannot be drawn from {dist} (it takes {kind} values)")
    if dist == "int_uniform" and kind != _INT:
        raise _fail(source, key, f"cannot be drawn from int_uniform (it takes {kind} values)")
    if len(args) != 2:
        raise _fail(source, key, f"{dist} needs [low, high] [{unit}], got {args!r}")
    low, high = (_check_scalar(source, key, v, kind, unit, rule) for v in args)
    if high < low:
        raise _fail(source, key, f"{dist} needs low <= high, got [{low}, {high}] {unit}".rstrip())
    return ParameterDistribution(dist, (low, high))


def _parse_table(source, section: str, table: Any, schema, static_prefix: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _fail(source, section, f"must be a table, got {table!r}")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise _fail(
            source,
            f"{section}.{unknown[0]}",
            f"is not a known key; known keys of [{section}]: {sorted(schema)}",
        )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        path = f"{section}.{key}"
        if key not in table:
            if spec[3] is REQUIRED:
                raise _fail(source, path, "is required")
            default = spec[3]
            static = f"{static_prefix}.{key}" in STATIC or spec[0] == "pair"
            out[key] = (
                default if static or default is None else ParameterDistribution("fixed", (default,))
            )
            continue
        static = f"{static_prefix}.{key}" in STATIC
        out[key] = _parse_value(source, path, table[key], spec, static)
    return out


def parse_dataset_spec(raw: dict[str, Any], *, source: str | Path | None = None) -> DatasetSpec:
    """Validate a dataset description already read into a dict (see :func:`load_dataset_spec`).

    Relative structure paths are resolved against ``source``'s folder (or the working
    directory when ``source`` is ``None``).
    """
    src = Path(source) if source is not None else None
    if not isinstance(raw, dict):
        raise DatasetSpecError(f"{_where(src, '<root>')} must be a table, got {type(raw).__name__}")
    known = set(SCHEMA) | {"structures"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(src, unknown[0], f"is not a known section; known sections: {sorted(known)}")
    values: dict[str, Any] = {}
    for section, schema in SCHEMA.items():
        table = raw.get(section, {} if section in OPTIONAL_SECTIONS else None)
        if table is None:
            raise _fail(src, section, "is required (a [section] table)")
        for key, value in _parse_table(src, section, table, schema, section).items():
            values[f"{section}.{key}"] = value
    # cross-checks
    if values["dataset.kind"] != "tilt_series":
        if "tilt" in raw:
            raise _fail(src, "tilt", "is only used when dataset.kind = 'tilt_series'")
        values = {k: v for k, v in values.items() if not k.startswith("tilt.")}
    else:
        low = max(values["tilt.min_deg"].support())
        high = min(values["tilt.max_deg"].support())
        if high < low:
            raise _fail(src, "tilt.max_deg", f"must be >= tilt.min_deg ({low} deg), got {high} deg")
    camera = values["detector.camera"]
    cameras = ("parametric", *available_cameras())
    for cam in camera.support():
        if cam not in cameras:
            raise _fail(src, "detector.camera", f"must be one of {list(cameras)}, got {cam!r}")
    for support in values["specimen.support"].support():
        if support != "vacuum" and values["specimen.hole_diameter_um"] is None:
            raise _fail(
                src,
                "specimen.support",
                f"{support!r} needs specimen.hole_diameter_um (the "
                "hole in the film that holds the ice), got no hole",
            )
    edge = values["specimen.edge_thickness_nm"]
    if edge is not None:
        if values["specimen.hole_diameter_um"] is None:
            raise _fail(src, "specimen.edge_thickness_nm", "needs specimen.hole_diameter_um")
        centre = max(values["specimen.ice_thickness_nm"].support())
        thinnest = min(edge.support())
        if thinnest < centre:
            raise _fail(
                src,
                "specimen.edge_thickness_nm",
                f"must be >= specimen.ice_thickness_nm "
                f"({centre} nm: a meniscus is thinnest at the centre), got {thinnest} nm",
            )
    structures = _parse_structures(src, raw.get("structures"))
    return DatasetSpec(source=src, values=values, structures=structures, raw=raw)


def _parse_structures(src: Path | None, raw: Any) -> tuple[StructureSpec, ...]:
    if raw is None:
        raise _fail(src, "structures", "is required: at least one [[structures]] entry")
    if not isinstance(raw, list) or not raw:
        raise _fail(src, "structures", f"must be a list of [[structures]] tables, got {raw!r}")
    base = src.parent if src is not None else Path.cwd()
    out = []
    for i, table in enumerate(raw):
        section = f"structures[{i}]"
        parsed = _parse_table(src, section, table, STRUCTURE_SCHEMA, "structures")
        path = Path(parsed["path"])
        path = path if path.is_absolute() else (base / path)
        if not path.is_file():
            raise _fail(src, f"{section}.path", f"must name an existing file, got {str(path)!r}")
        copies = parsed["copies"]
        if not isinstance(copies, ParameterDistribution):
            copies = ParameterDistribution("fixed", (copies,))
        out.append(
            StructureSpec(
                path=path.resolve(),
                copies=copies,
                assembly=parsed["assembly"],
                add_hydrogens=parsed["add_hydrogens"],
                keep_waters=parsed["keep_waters"],
                name=parsed["name"] or path.name.split(".")[0],
            )
        )
    return tuple(out)


def load_dataset_spec(
    path: str | Path, *, defaults: dict[str, dict[str, Any]] | None = None
) -> DatasetSpec:
    """Read and validate a dataset description (TOML).

    Parameters
    ----------
    path
        The ``.toml`` file; structure paths in it are relative to its folder.
    defaults
        ``{section: {key: value}}`` used where the file has no value (``tem-book simulate``
        reads a single-image settings file with ``{"dataset": {"items": 1, "seed": 0}}``).

    Raises
    ------
    DatasetSpecError
        On a TOML syntax error or any invalid key or value; the message names the file, the
        key path, the value and the unit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset description {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DatasetSpecError(f"{path.name}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetSpecError(
            f"{path.name}: not a UTF-8 text file (byte {exc.start}: {exc.reason})"
        ) from exc
    for section, table in (defaults or {}).items():
        target = raw.setdefault(section, {})
        if isinstance(target, dict):
            for key, value in table.items():
                target.setdefault(key, value)
    return parse_dataset_spec(raw, source=path)
