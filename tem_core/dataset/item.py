"""One dataset item: its parameters from (master seed, index), its simulation and its files.

Seeds
-----
Every drawn parameter has its own random stream,
``numpy.random.SeedSequence(entropy=seed, spawn_key=(index, crc32(key)))``, so an item's
parameters depend only on the master seed, the item index and the key (adding a key to the
description does not change the values drawn for the others). The specimen (poses, positions)
and the shot noise get two more streams (keys ``"specimen"`` and ``"noise"``), turned into
``torch.Generator`` seeds. The specimen is drawn on the CPU in float64 whatever the device,
so particle positions and poses are the same on a GPU; images are bit-identical when an item
is regenerated on the same kind of device (the noise stream is device-specific in torch).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tem_core
from tem_core import io as tio
from tem_core import units
from tem_core.dataset.spec import DatasetSpec, ParameterDistribution
from tem_core.dataset.star import PARTICLES_STAR_LAYOUT, particle_columns, write_star
from tem_core.detector import Detector, available_dqe_tables
from tem_core.io.files import atomic_write
from tem_core.optics import Microscope
from tem_core.potential import (
    IceStructure,
    PotentialSettings,
    RadiationDamage,
    iter_slice_potentials,
)
from tem_core.simulate import Imaging, micrograph, resolve_device, tilt_scheme
from tem_core.specimen import IceSlab, Specimen, build_specimen, place_particles, tilt_specimen
from tem_core.structure import AtomicModel, assembly_operators, expand_assembly, read_structure

__all__ = [
    "ItemResult",
    "data_sha256",
    "item_name",
    "item_parameters",
    "item_paths",
    "settings_hash",
    "generate_item",
]


def item_name(index: int) -> str:
    """File stem of item ``index``: ``item_000003``."""
    return f"item_{index:06d}"


def _stream(seed: int, index: int, key: str) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=seed, spawn_key=(index, zlib.crc32(key.encode())))


def _torch_seed(seed: int, index: int, key: str) -> int:
    return int(_stream(seed, index, key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def item_parameters(spec: DatasetSpec, index: int) -> dict[str, Any]:
    """The concrete parameters of item ``index`` (field units, keys as in the TOML) and seeds.

    Depends only on ``spec``'s master seed, ``index`` and the key: any item can be
    regenerated alone.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < spec.n_items:
        raise ValueError(f"index must be an integer in [0, {spec.n_items}), got {index!r}")
    params: dict[str, Any] = {"index": index, "name": item_name(index)}
    for key, value in spec.values.items():
        if isinstance(value, ParameterDistribution):
            params[key] = value.sample(np.random.default_rng(_stream(spec.seed, index, key)))
        elif value is None and key.split(".")[0] not in ("dataset", "grid", "outputs"):
            params[key] = None
    for i, structure in enumerate(spec.structures):
        key = f"structures.{i}.copies"
        params[key] = structure.copies.sample(np.random.default_rng(_stream(spec.seed, index, key)))
    params["seed.specimen"] = _torch_seed(spec.seed, index, "specimen")
    params["seed.noise"] = _torch_seed(spec.seed, index, "noise")
    params["seed.ice"] = _torch_seed(spec.seed, index, "ice")
    return params


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes (little-endian, C order): the same for
    bit-identical images whatever the file header holds (MRC labels carry a time stamp)."""
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()


def static_settings(spec: DatasetSpec) -> dict[str, Any]:
    """Settings shared by every item (everything not drawn), JSON-serialisable."""
    out = {k: v for k, v in spec.values.items() if not isinstance(v, ParameterDistribution)}
    out["grid.shape_px"] = list(out["grid.shape_px"])
    out["structures"] = [
        {
            "path": str(s.path),
            "sha256": _file_sha256(str(s.path), s.path.stat().st_mtime_ns),
            "assembly": s.assembly,
            "add_hydrogens": s.add_hydrogens,
            "keep_waters": s.keep_waters,
            "name": s.name,
        }
        for s in spec.structures
    ]
    return out


def settings_hash(spec: DatasetSpec, params: dict[str, Any]) -> str:
    """SHA-256 over everything that decides an item's files (parameters, seeds, structure
    files' contents, shared settings, the package version)."""
    static = static_settings(spec)
    static.pop("dataset.items", None)  # growing the dataset keeps the finished items
    for s in static["structures"]:
        s.pop("path")
    payload = {
        "params": params,
        "static": static,
        "tem_core": tem_core.__version__,
        "particles_star_layout": PARTICLES_STAR_LAYOUT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def item_paths(spec: DatasetSpec, index: int) -> dict[str, str]:
    """Files of item ``index``, relative to the output folder (keys: role)."""
    name = item_name(index)
    main = "tilt_series" if spec.kind == "tilt_series" else "micrographs"
    paths = {"image": f"{main}/{name}.mrc"}
    if spec.kind == "tilt_series":
        paths.update(rawtlt=f"{main}/{name}.rawtlt", tlt=f"{main}/{name}.tlt")
    if spec["outputs.noise_free"]:
        paths["noise_free"] = f"noise_free/{name}.mrc"
    if spec["outputs.particles"]:
        paths["particles"] = f"particles/{name}.star"
    if spec["outputs.potential_volume"]:
        paths["potential"] = f"potential/{name}.mrc"
    return paths


# --------------------------------------------------------------------------- building


@functools.lru_cache(maxsize=16)
def _model(path: str, assembly: str | None, add_h: bool, waters: bool) -> AtomicModel:
    model = read_structure(path, add_hydrogens=add_h, keep_waters=waters)
    if assembly is not None:
        model = expand_assembly(model, assembly_operators(path, assembly_id=assembly))
    return model.centered()


@dataclass(frozen=True, kw_only=True, eq=False)
class ItemSetup:
    """The objects an item's parameters describe (internal units)."""

    specimen: Specimen
    class_numbers: list[int]
    potential: PotentialSettings
    microscope: Microscope
    detector: Detector
    imaging: Imaging
    params: dict[str, Any]


def _in_plane_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    psi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    c, s, zero, one = psi.cos(), psi.sin(), torch.zeros(n, dtype=torch.float64), torch.ones(n)
    return torch.stack(
        [
            torch.stack([c, -s, zero], -1),
            torch.stack([s, c, zero], -1),
            torch.stack([zero, zero, one.double()], -1),
        ],
        -2,
    )


def build_item(spec: DatasetSpec, params: dict[str, Any], device: torch.device) -> ItemSetup:
    """Specimen, potential settings, microscope, detector and imaging of one item."""
    p = params
    ny, nx = spec["grid.shape_px"]
    s = float(p["grid.pixel_size_a"])
    energy_ev = float(p["microscope.voltage_kv"]) * units.KV_TO_EV
    hole = p.get("specimen.hole_diameter_um")
    edge = p.get("specimen.edge_thickness_nm")
    ice = IceSlab(
        thickness_a=float(p["specimen.ice_thickness_nm"]) * units.NM_TO_A,
        hole_diameter_a=None if hole is None else float(hole) * units.UM_TO_A,
        support=p["specimen.support"],
        support_thickness_a=float(p["specimen.support_thickness_nm"]) * units.NM_TO_A,
        edge_thickness_a=None if edge is None else float(edge) * units.NM_TO_A,
    )
    models, counts, classes = [], [], []
    for i, st in enumerate(spec.structures):
        n = int(p[f"structures.{i}.copies"])
        models.append(_model(str(st.path), st.assembly, st.add_hydrogens, st.keep_waters))
        counts.append(n)
        classes += [i + 1] * n
    generator = torch.Generator().manual_seed(int(p["seed.specimen"]))
    extent = (nx * s, ny * s)
    gap = float(p["specimen.min_gap_a"])
    poses = None
    if p["specimen.poses"] != "uniform":
        radii = [
            m.bounding_radius_a() for m, c in zip(models, counts, strict=True) for _ in range(c)
        ]
        k = len(radii)
        rot = (
            _in_plane_rotations(k, generator)
            if p["specimen.poses"] == "in_plane"
            else torch.eye(3, dtype=torch.float64).expand(k, 3, 3).clone()
        )
        centers = place_particles(
            radii,
            extent_a=extent,
            thickness_a=ice.thickness_a,
            generator=generator,
            min_gap_a=gap,
            hole_diameter_a=ice.hole_diameter_a,
        )
        poses = (rot, centers)
    specimen = build_specimen(
        [m.to(device=device, dtype=torch.float32) for m in models],
        counts,
        extent_a=extent,
        ice=ice,
        generator=generator,
        poses=poses,
        min_gap_a=gap,
    )
    aperture = p.get("microscope.objective_aperture_mrad")
    microscope = Microscope(
        energy_ev=energy_ev,
        cs_a=float(p["microscope.cs_mm"]) * units.MM_TO_A,
        cc_a=float(p["microscope.cc_mm"]) * units.MM_TO_A,
        energy_spread_ev=float(p["microscope.energy_spread_ev"]),
        illumination_semiangle_rad=float(p["microscope.illumination_semiangle_mrad"])
        * units.MRAD_TO_RAD,
        objective_aperture_rad=None if aperture is None else float(aperture) * units.MRAD_TO_RAD,
        energy_filter=bool(p["microscope.energy_filter"]),
    )
    camera, dqe = p["detector.camera"], p.get("detector.dqe")
    settings = dict(
        gain_counts_per_e=float(p["detector.gain_counts_per_e"]),
        noise_model=p["detector.noise_model"],
    )
    if dqe is None and camera in available_dqe_tables():  # the camera's published DQE(0)
        detector = Detector.for_camera(camera, **settings)
    else:
        detector = Detector(
            dqe=1.0 if dqe is None else float(dqe),
            mtf_camera=None if camera == "parametric" else camera,
            **settings,
        )
    potential = PotentialSettings(
        shape=(ny, nx),
        sampling_a=s,
        slice_thickness_a=float(spec["grid.slice_thickness_a"]),
        energy_ev=energy_ev,
        ice_structure=IceStructure(seed=int(p["seed.ice"]))
        if p["specimen.structured_ice"]
        else None,
    )
    imaging = Imaging(
        defocus_a=float(p["imaging.defocus_um"]) * units.UM_TO_A,
        dose_e_per_a2=float(p["imaging.dose_e_per_a2"]),
        astigmatism_a=float(p["imaging.astigmatism_nm"]) * units.NM_TO_A,
        astigmatism_angle_rad=float(p["imaging.astigmatism_angle_deg"]) * units.DEG_TO_RAD,
        method=spec["grid.method"],
        damage=RadiationDamage() if _damage(spec, p) else None,
    )
    return ItemSetup(
        specimen=specimen,
        class_numbers=classes,
        potential=potential,
        microscope=microscope,
        detector=detector,
        imaging=imaging,
        params=params,
    )


def _damage(spec: DatasetSpec, params: dict[str, Any]) -> bool:
    """Radiation damage: as asked, else the package's default (tilt series yes, images no)."""
    asked = params.get("imaging.radiation_damage")
    return spec.kind == "tilt_series" if asked is None else bool(asked)


def _simulate(spec: DatasetSpec, setup: ItemSetup, device: torch.device):
    """(counts, expected, angles_rad or None) of a micrograph or a tilt series."""
    noise = torch.Generator(device=device).manual_seed(int(setup.params["seed.noise"]))
    kw = dict(potential=setup.potential, microscope=setup.microscope, detector=setup.detector)
    if spec.kind == "micrograph":
        with torch.no_grad():
            r = micrograph(setup.specimen, imaging=setup.imaging, generator=noise, **kw)
        return r.counts, r.expected, None
    p, deg = setup.params, units.DEG_TO_RAD
    scheme = tilt_scheme(
        p["tilt.scheme"],
        min_angle_rad=p["tilt.min_deg"] * deg,
        max_angle_rad=p["tilt.max_deg"] * deg,
        step_rad=p["tilt.step_deg"] * deg,
        total_dose_e_per_a2=setup.imaging.dose_e_per_a2,
        defocus_a=setup.imaging.defocus_a,
        start_angle_rad=p["tilt.start_deg"] * deg,
        group_size=int(p["tilt.group_size"]),
        tilt_axis_angle_rad=p["tilt.axis_deg"] * deg,
    )
    # structured ice: its modes concentrate on the series' views (as simulate.tilt_series)
    kw["potential"] = setup.potential.for_views(scheme.angles_rad, scheme.tilt_axis_angle_rad)
    counts, expected = [], []
    order = scheme.sorted_by_angle()
    for k in order:  # each tilt its own noise stream, as in simulate.tilt_series
        tilted = tilt_specimen(
            setup.specimen,
            tilt_angle_rad=scheme.angles_rad[k],
            tilt_axis_angle_rad=scheme.tilt_axis_angle_rad,
        )
        imaging = Imaging(
            defocus_a=scheme.defocus_a[k],
            dose_e_per_a2=scheme.dose_e_per_a2[k],
            astigmatism_a=setup.imaging.astigmatism_a,
            astigmatism_angle_rad=setup.imaging.astigmatism_angle_rad,
            method=setup.imaging.method,
            damage=RadiationDamage() if _damage(spec, p) else None,
            prior_dose_e_per_a2=float(sum(scheme.dose_e_per_a2[:k])),  # acquisition order
        )
        gen = torch.Generator(device=device).manual_seed(int(setup.params["seed.noise"]) + k)
        with torch.no_grad():
            r = micrograph(tilted, imaging=imaging, generator=gen, **kw)
        counts.append(r.counts)
        expected.append(r.expected)
    angles = [scheme.angles_rad[k] for k in order]
    return torch.stack(counts), torch.stack(expected), angles


def potential_volume_v(specimen: Specimen, potential: PotentialSettings) -> torch.Tensor:
    """The specimen's potential on cubic voxels of the pixel size, ``(nz, ny, nx)`` [V]."""
    cubic = PotentialSettings(
        shape=potential.shape,
        sampling_a=potential.sampling_a,
        slice_thickness_a=potential.sampling_a,
        energy_ev=potential.energy_ev,
    )
    with torch.no_grad():
        slices = [v.real if v.is_complex() else v for v in iter_slice_potentials(specimen, cubic)]
    return torch.stack(slices) / potential.sampling_a


@dataclass(frozen=True, kw_only=True)
class ItemResult:
    """What a worker reports: ``ok``, the record (or the error and traceback)."""

    index: int
    ok: bool
    record: dict[str, Any]


def _write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


def generate_item(
    spec: DatasetSpec,
    index: int,
    out: str | Path,
    *,
    device: str | torch.device | None = None,
    paths: dict[str, str] | None = None,
    write_record: bool = True,
) -> dict[str, Any]:
    """Simulate item ``index`` of ``spec`` and write its files under ``out`` (atomically).

    Writes the image (MRC with the pixel size; tilt series ordered by angle with IMOD
    ``.rawtlt``/``.tlt``), the requested ground truth (noise-free image, particles STAR,
    potential volume) and, last, ``records/<item>.json`` with the settings hash and each
    file's SHA-256: an item counts as finished only when its record is complete.

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: ``dataset.device``.
    paths
        Output files relative to ``out`` (default :func:`item_paths`).
    write_record
        Write ``records/<item>.json`` (a dataset run needs it; a single image does not).

    Returns
    -------
    dict
        The record (also written to ``records/<item>.json``).
    """
    t0 = time.perf_counter()
    out = Path(out)
    dev = resolve_device(device if device is not None else spec["dataset.device"])
    params = item_parameters(spec, index)
    paths = item_paths(spec, index) if paths is None else paths
    setup = build_item(spec, params, dev)
    counts, expected, angles = _simulate(spec, setup, dev)
    s = setup.potential.sampling_a
    for rel in paths.values():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
    image = np.ascontiguousarray(counts.float().cpu().numpy())
    tio.write_mrc(out / paths["image"], image, voxel_size_a=s, overwrite=True)
    if angles is not None and "tlt" in paths:
        tio.write_tilt_angles(out / paths["tlt"], angles, overwrite=True)
    if "noise_free" in paths:
        tio.write_mrc(
            out / paths["noise_free"],
            expected.float().cpu().numpy(),
            voxel_size_a=s,
            overwrite=True,
        )
    if "particles" in paths:
        sp = setup.specimen
        cols = particle_columns(
            centers_a=sp.particle_centers_a,
            rotations=sp.particle_rotations,
            pixel_size_a=s,
            class_numbers=setup.class_numbers,
            image_name=paths["image"],
            with_z=spec.kind == "tilt_series",
            tomogram=spec.kind == "tilt_series",
        )
        write_star(out / paths["particles"], {"particles": cols}, overwrite=True)
    if "potential" in paths:
        volume = potential_volume_v(setup.specimen, setup.potential)
        tio.write_mrc(
            out / paths["potential"],
            volume.float().cpu().numpy(),
            voxel_size_a=s,
            overwrite=True,
            volume=True,
        )
    record = {
        "index": index,
        "name": item_name(index),
        "settings_hash": settings_hash(spec, params),
        "parameters": params,
        "n_particles": setup.specimen.n_particles,
        "n_atoms": len(setup.specimen.atoms),
        "detector_dqe": float(setup.detector.dqe),
        "image_data_sha256": data_sha256(image),
        "files": {
            role: {"path": rel, "sha256": sha256_of(out / rel)} for role, rel in paths.items()
        },
        "run": {
            "seconds": round(time.perf_counter() - t0, 3),
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "pid": os.getpid(),
        },
    }
    if not write_record:
        return record
    (out / "records").mkdir(exist_ok=True)
    _write_json(out / "records" / f"{item_name(index)}.json", record)
    return record


def record_is_current(spec: DatasetSpec, index: int, out: Path) -> dict[str, Any] | None:
    """The item's record when it matches the current settings and every file is intact."""
    path = Path(out) / "records" / f"{item_name(index)}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("settings_hash") != settings_hash(spec, item_parameters(spec, index)):
        return None
    files = record.get("files", {})
    if set(files) != set(item_paths(spec, index)):
        return None
    for entry in files.values():
        f = Path(out) / entry["path"]
        if not f.is_file() or sha256_of(f) != entry["sha256"]:
            return None
    return record
