"""STAR files (RELION, Warp) and the ZYZ Euler-angle convention of particle poses.

Euler angles (RELION's convention, read by Warp/M as well)
----------------------------------------------------------
A pose is written as ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` (φ, θ, ψ) in
degrees. RELION builds the rotation matrix from them in ``Euler_angles2matrix``
(``src/euler.cpp``)::

    A = [[ cψ cθ cφ − sψ sφ,   cψ cθ sφ + sψ cφ,  −cψ sθ],
         [−sψ cθ cφ − cψ sφ,  −sψ cθ sφ + cψ cφ,   sψ sθ],
         [ sθ cφ,              sθ sφ,               cθ   ]]

i.e. ``A = Rz(−ψ) Ry(−θ) Rz(−φ)`` with right-handed (active) rotations ``R``: rotations about
z, then y, then z again (ZYZ). RELION's projector samples the map's Fourier transform at
``A⁻¹ k``, so the projection of a map at angles (φ, θ, ψ) is the projection along z of the
map rotated by ``A`` (a point ``x`` of the map moves to ``A x``). A particle of this package
placed with rotation ``R`` (:attr:`tem_core.specimen.Specimen.particle_rotations`, atoms at
``R x + c``) therefore has ``A = R``, and :func:`euler_zyz_from_matrices` returns the angles
whose ``A`` is ``R`` (tested against the specimen's matrices). θ lies in [0°, 180°],
φ and ψ in (−180°, 180°]; at θ = 0° or 180° only φ ± ψ is defined and φ = 0 is written.

Coordinates
-----------
Positions are written as RELION defines them: ``rlnCoordinateX/Y(/Z)`` are pixel indices with
pixel centres at integers, and ``rlnOriginX/Y(/Z)Angst`` is the box centre minus the
particle's position [Å] (RELION shifts each image by ``+origin`` before back-projection), so
the particle sits at ``coordinate − origin / s`` pixels. This package's pixel ``ix`` covers
``[ix·s, (ix+1)·s)`` (``book/design.md``; its value is the average over that area), i.e. its
centre is at ``(ix + ½)·s``; a particle centred at ``x`` [Å] is written as the index of the
pixel that holds it, ``X = floor(x / s)``, with the sub-pixel rest in the origin,
``rlnOriginXAngst = (X + ½)·s − x`` in ``(−s/2, s/2]`` (:func:`particle_centers_a` inverts
this). RELION's extraction (``Preprocessing::extractParticlesFromOneFrame``) truncates the
coordinate to an integer and centres the box on that pixel, and carries the origins and angles
into its particle table, so ``relion_preprocess --extract`` followed by ``relion_reconstruct``
uses the exact positions and poses (checked with RELION 5.0.1 by
``benchmarks/relion_star_check.py``: writing the continuous ``x / s`` instead, as earlier
versions did, is half a pixel off in RELION's frame). For tilt series the coordinates are
those of the untilted specimen, ``z`` measured from the lower ice surface with the same pixel
size (``rlnCoordinateZ``, ``rlnOriginZAngst``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tem_core.io.files import atomic_write

__all__ = [
    "euler_zyz_from_matrices",
    "matrices_from_euler_zyz",
    "particle_centers_a",
    "read_star",
    "write_star",
]

_GIMBAL = 1e-9

# layout of the particles STAR files, part of an item's settings hash (a dataset resumed
# after a change regenerates its items): 1 continuous ``x / s`` coordinates; 2 the pixel
# index with the sub-pixel rest in ``rlnOriginX/Y/ZAngst`` (module docstring)
PARTICLES_STAR_LAYOUT = 2


def matrices_from_euler_zyz(
    rot_deg: torch.Tensor, tilt_deg: torch.Tensor, psi_deg: torch.Tensor
) -> torch.Tensor:
    """RELION's ``Euler_angles2matrix``: ``(N,)`` angles [deg] -> ``(N, 3, 3)`` matrices ``A``."""
    a, b, g = (
        torch.as_tensor(t, dtype=torch.float64) * (math.pi / 180)
        for t in (rot_deg, tilt_deg, psi_deg)
    )
    ca, sa, cb, sb, cg, sg = a.cos(), a.sin(), b.cos(), b.sin(), g.cos(), g.sin()
    rows = [
        torch.stack([cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb], -1),
        torch.stack([-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb], -1),
        torch.stack([sb * ca, sb * sa, cb], -1),
    ]
    return torch.stack(rows, -2)


def euler_zyz_from_matrices(rotations: torch.Tensor) -> torch.Tensor:
    """ZYZ Euler angles (rot, tilt, psi) [deg] of ``(N, 3, 3)`` rotations, RELION convention.

    Returns an ``(N, 3)`` float64 tensor such that
    ``matrices_from_euler_zyz(*angles.T)`` equals ``rotations`` (module docstring).
    """
    r = torch.as_tensor(rotations).detach().to(device="cpu", dtype=torch.float64)
    if r.ndim != 3 or tuple(r.shape[1:]) != (3, 3):
        raise ValueError(f"rotations must have shape (N, 3, 3), got {tuple(r.shape)}")
    sin_tilt = torch.hypot(r[:, 2, 0], r[:, 2, 1])
    tilt = torch.atan2(sin_tilt, r[:, 2, 2])
    rot = torch.atan2(r[:, 2, 1], r[:, 2, 0])
    psi = torch.atan2(r[:, 1, 2], -r[:, 0, 2])
    flat = sin_tilt < _GIMBAL
    if bool(flat.any()):
        up = r[:, 2, 2] > 0  # θ = 0: A = Rz(−(φ+ψ)); θ = π: A[0,0] = −cos(ψ−φ)
        rot = torch.where(flat, torch.zeros_like(rot), rot)
        psi_flat = torch.where(
            up, torch.atan2(r[:, 0, 1], r[:, 0, 0]), torch.atan2(r[:, 0, 1], -r[:, 0, 0])
        )
        psi = torch.where(flat, psi_flat, psi)
    return torch.stack([rot, tilt, psi], -1) * (180 / math.pi)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6f}"
    text = str(value)
    if not text or any(c.isspace() for c in text) or text[0] in "#_;'\"" or text == "data_":
        raise ValueError(f"STAR values must be non-empty words without spaces, got {text!r}")
    return text


def star_text(blocks: Mapping[str, Mapping[str, Sequence[Any]]]) -> str:
    """STAR text of ``{block_name: {label: column}}`` (every block a ``loop_``)."""
    lines = ["", "# written by tem_core", ""]
    for name, columns in blocks.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(f"block name must be alphanumeric, got {name!r}")
        lengths = {label: len(values) for label, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns of block {name!r} differ in length: {lengths}")
        lines += [f"data_{name}", "", "loop_"]
        for i, label in enumerate(columns, 1):
            if not label.startswith("rln") or not label.isalnum():
                raise ValueError(f"labels must look like rlnSomething, got {label!r}")
            lines.append(f"_{label} #{i}")
        n = next(iter(lengths.values()), 0)
        for row in range(n):
            lines.append(" ".join(_format(columns[label][row]) for label in columns))
        lines.append("")
    return "\n".join(lines) + "\n"


def write_star(
    path: str | Path,
    blocks: Mapping[str, Mapping[str, Sequence[Any]]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a STAR file of ``loop_`` blocks atomically.

    Parameters
    ----------
    path
        Destination ``.star``.
    blocks
        ``{"particles": {"rlnCoordinateX": [...], ...}}``; floats written with 6 decimals.
    overwrite
        Replace an existing file.
    """
    text = star_text(blocks)
    return atomic_write(
        path, lambda tmp: tmp.write_text(text, encoding="ascii"), overwrite=overwrite
    )


def read_star(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read the ``loop_`` blocks of a STAR file as ``{block: {label: [strings]}}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STAR file {path} does not exist")
    blocks: dict[str, dict[str, list[str]]] = {}
    labels: list[str] = []
    current: dict[str, list[str]] | None = None
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("_") else raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            current = blocks.setdefault(line[5:], {})
            labels = []
        elif line == "loop_":
            labels = []
        elif line.startswith("_") and current is not None:
            label = line[1:].split()[0]
            labels.append(label)
            current[label] = []
        elif current is not None and labels:
            values = line.split()
            if len(values) != len(labels):
                raise ValueError(f"{path}:{lineno}: {len(values)} values for {len(labels)} labels")
            for label, value in zip(labels, values, strict=True):
                current[label].append(value)
    return blocks


def particle_columns(
    *,
    centers_a: torch.Tensor,
    rotations: torch.Tensor,
    pixel_size_a: float,
    class_numbers: Sequence[int],
    image_name: str,
    with_z: bool,
    tomogram: bool,
) -> dict[str, list[Any]]:
    """STAR columns of particles: the pixel holding each centre, the sub-pixel rest as
    RELION origins [Å] (module docstring), ZYZ angles [deg], class, image name."""
    c = torch.as_tensor(centers_a).detach().to("cpu", torch.float64)
    s = float(pixel_size_a)
    index = torch.floor(c / s)
    origin_a = (index + 0.5) * s - c
    angles = euler_zyz_from_matrices(rotations)
    axes = "XYZ" if with_z else "XY"
    cols: dict[str, list[Any]] = {}
    for i, axis in enumerate(axes):
        cols[f"rlnCoordinate{axis}"] = index[:, i].tolist()
    for i, axis in enumerate(axes):
        cols[f"rlnOrigin{axis}Angst"] = origin_a[:, i].tolist()
    cols["rlnAngleRot"] = angles[:, 0].tolist()
    cols["rlnAngleTilt"] = angles[:, 1].tolist()
    cols["rlnAnglePsi"] = angles[:, 2].tolist()
    cols["rlnClassNumber"] = [int(k) for k in class_numbers]
    cols["rlnTomoName" if tomogram else "rlnMicrographName"] = [image_name] * int(c.shape[0])
    return cols


def particle_centers_a(
    columns: Mapping[str, Sequence[Any]], pixel_size_a: float
) -> torch.Tensor:
    """Particle centres [Å] in this package's frame from RELION STAR columns.

    Parameters
    ----------
    columns
        A particles block as :func:`read_star` returns it (``{label: [values]}``), with
        ``rlnCoordinateX/Y`` [px] and optionally ``rlnCoordinateZ`` and
        ``rlnOriginX/Y/ZAngst`` [Å] (absent origins count as 0).
    pixel_size_a
        Pixel size of the image the coordinates refer to [Å].

    Returns
    -------
    torch.Tensor
        ``(K, 2)`` or ``(K, 3)`` float64 centres ``(coordinate + ½)·s − origin`` [Å]: the
        inverse of what :func:`tem_core.dataset.generate_item` writes.
    """
    if not isinstance(pixel_size_a, (int, float)) or not pixel_size_a > 0:
        raise ValueError(f"pixel_size_a must be > 0 Å, got {pixel_size_a!r}")
    axes = "XYZ" if "rlnCoordinateZ" in columns else "XY"
    out = []
    for axis in axes:
        label = f"rlnCoordinate{axis}"
        if label not in columns:
            raise ValueError(f"columns lack {label}; got {sorted(columns)}")
        coord = torch.tensor([float(v) for v in columns[label]], dtype=torch.float64)
        origin = columns.get(f"rlnOrigin{axis}Angst")
        shift = (
            torch.zeros_like(coord)
            if origin is None
            else torch.tensor([float(v) for v in origin], dtype=torch.float64)
        )
        out.append((coord + 0.5) * pixel_size_a - shift)
    return torch.stack(out, -1)
