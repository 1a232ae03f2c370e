"""Private file handling for :mod:`tem_core.structure`: text reading, validation, download.

Kept apart from the stage module so that each stays short. Errors name the file and,
where the record can be found, the line.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path

RCSB_DOWNLOAD_URL = "https://files.rcsb.org/download/{id}.{ext}.gz"


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"structure path is a directory, not a file: {path}")
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({exc})") from exc
    return data.decode("utf-8", errors="replace")


def _file_format(path: Path, text: str) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".cif", ".mmcif"):
        return "cif"
    if last in (".pdb", ".ent"):
        return "pdb"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "cif" if first.lower().startswith("data_") else "pdb"


def _fill_blank_occupancies(path: Path, lines: list[str]) -> list[str]:
    """Blank occupancy columns (55-60) of ATOM/HETATM records read as 1.00, with one warning.

    gemmi (like the fixed-column format itself) would read a blank occupancy as 0, which
    makes the atom invisible; programs writing such files (modelling tools, format
    converters) mean "fully occupied", the PDB format's default for a single conformer.
    A blank B-factor column reads as 0 Å² (documented; B = 0 is a legal value).
    """
    out, blank = [], []
    for number, line in enumerate(lines, start=1):
        if line.startswith(("ATOM  ", "HETATM")) and not line[54:60].strip():
            line = line.ljust(60)
            line = line[:54] + "  1.00" + line[60:]
            blank.append(number)
        out.append(line)
    if blank:
        first = ", ".join(str(n) for n in blank[:3]) + (", ..." if len(blank) > 3 else "")
        warnings.warn(
            f"{path}: {len(blank)} ATOM/HETATM record(s) have a blank occupancy column "
            f"(line {first}); read as occupancy 1.0",
            stacklevel=4,
        )
    return out


def _check_pdb_records(path: Path, lines: list[str]) -> None:
    """Check that every ATOM/HETATM record has numeric coordinates, occupancy and B."""
    for number, line in enumerate(lines, start=1):
        if not line.startswith(("ATOM  ", "HETATM")):
            continue
        if len(line.rstrip()) < 54:
            raise ValueError(
                f"{path}, line {number}: truncated ATOM/HETATM record (coordinates end at "
                f"column 54): {line.rstrip()!r}"
            )
        fields = [("x", 30, 38), ("y", 38, 46), ("z", 46, 54), ("occupancy", 54, 60), ("B", 60, 66)]
        for label, start, stop in fields:
            text = line[start:stop].strip()
            if not text and label in ("occupancy", "B"):
                continue
            try:
                float(text)
            except ValueError:
                raise ValueError(
                    f"{path}, line {number}: malformed {label} field {text!r} "
                    f"in record {line.rstrip()!r}"
                ) from None


def _load(path: str | os.PathLike) -> tuple[object, Path, list[str], str]:
    import gemmi

    path = Path(path)
    text = _read_text(path)
    fmt = _file_format(path, text)
    lines = text.splitlines()
    if fmt == "pdb":
        _check_pdb_records(path, lines)
        filled = _fill_blank_occupancies(path, lines)
        if filled != lines:
            lines = filled
            text = "\n".join(lines) + "\n"
        try:
            structure = gemmi.read_pdb_string(text)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed PDB file: {exc}") from exc
    else:
        try:
            document = gemmi.cif.read_string(text)
            block = document.sole_block()
            structure = gemmi.make_structure_from_block(block)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: malformed or truncated mmCIF file: {exc}") from exc
        _warn_missing_cif_values(path, block)
    return structure, path, lines, fmt


#: What gemmi reads for a missing (``?``, ``.``) or absent mmCIF column.
CIF_MISSING_DEFAULTS = {"occupancy": ("occupancy", 1.0, ""), "B_iso_or_equiv": ("B", 20.0, " Å²")}


def _warn_missing_cif_values(path: Path, block) -> None:
    """One warning per ``_atom_site`` column (occupancy, B) with missing values.

    gemmi reads a missing occupancy as 1.0 (as the PDB reader here reads a blank one) and a
    missing B-factor as 20 Å²; both are silent in gemmi, so they are said here.
    """
    n_atoms = len(block.find_values("_atom_site.id"))
    for tag, (label, value, unit) in CIF_MISSING_DEFAULTS.items():
        values = list(block.find_values(f"_atom_site.{tag}"))
        missing = n_atoms if not values else sum(v in ("?", ".") for v in values)
        if n_atoms and missing:
            where = "no _atom_site." + tag + " column" if not values else f"'?' or '.' as {tag}"
            warnings.warn(
                f"{path}: {missing} of {n_atoms} atoms have no {label} ({where}); read as "
                f"{label} {value:g}{unit}",
                stacklevel=4,
            )


#: Largest coordinate accepted [Å] (100 µm: no specimen for a TEM is larger).
MAX_COORDINATE_A = 1e6
#: Smallest median nearest-neighbour distance of a structure's atoms [Å]: covalent bonds
#: are 0.96-1.5 Å (H-H in H₂, the shortest, 0.74 Å); ~0.1-0.15 Å means nanometres.
MIN_MEDIAN_NEIGHBOUR_A = 0.5


def _check_coordinates(path: Path, xyz: list[tuple[float, float, float]]) -> None:
    """Refuse absurd coordinates and coordinates that look like nanometres (not Å)."""
    import numpy as np

    pos = np.asarray(xyz, dtype=np.float64)
    worst = float(np.abs(pos).max())
    if worst > MAX_COORDINATE_A:
        raise ValueError(
            f"{path}: coordinates must lie within ±{MAX_COORDINATE_A:g} Å, got {worst:.4g} Å"
        )
    sample = np.unique(pos[:500], axis=0)  # in file order: bonded neighbours are near
    if len(sample) < 8:
        return
    d2 = ((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    median = float(np.median(np.sqrt(d2.min(axis=1))))
    if median < MIN_MEDIAN_NEIGHBOUR_A:
        raise ValueError(
            f"{path}: the median distance between neighbouring atoms is {median:.3g} Å, "
            f"below {MIN_MEDIAN_NEIGHBOUR_A} Å (bonds are 1-1.5 Å): are the coordinates in "
            "nanometres? Structure files hold Å; multiply by units.NM_TO_A first"
        )


def _locate(lines: list[str], fmt: str, serial: int) -> str:
    """' (line N)' for the ATOM/HETATM record with this serial number, or ''."""
    for number, line in enumerate(lines, start=1):
        if not line.startswith(("ATOM", "HETATM")):
            continue
        if fmt == "pdb":
            field = line[6:11].strip()
        else:
            parts = line.split()
            field = parts[1] if len(parts) > 1 else ""
        if field == str(serial):
            return f" (line {number})"
    return ""


def _describe(atom, residue, chain) -> str:
    return (
        f"atom {atom.name!r} (serial {atom.serial}) of residue {residue.name} "
        f"{residue.seqid.num} in chain {chain.name!r}"
    )


def _where(atom, residue, chain, lines: list[str], fmt: str) -> str:
    return _describe(atom, residue, chain) + _locate(lines, fmt, atom.serial)


def _select_conformers(residue) -> list:
    """Atoms of a residue with alternate conformers resolved (see module docstring)."""
    best: dict[str, object] = {}
    total: dict[str, float] = {}
    order: list[tuple[str, object]] = []
    for atom in residue:
        if atom.altloc == "\0":
            order.append(("", atom))
            continue
        key = atom.name
        total[key] = total.get(key, 0.0) + atom.occ
        if key not in best:
            best[key] = atom
            order.append((key, None))
        elif atom.occ > best[key].occ:
            best[key] = atom
    out = []
    for key, atom in order:
        if key:
            chosen = best[key]
            out.append((chosen, min(1.0, total[key])))
        else:
            out.append((atom, atom.occ))
    return out


def fetch_pdb(pdb_id: str, *, cache_dir: str | os.PathLike, file_format: str = "cif") -> Path:
    """Path of an entry from the RCSB PDB, downloaded once into ``cache_dir``.

    A cached file is returned without any network access. Downloads go through a
    temporary file and an atomic rename, so an interrupted download leaves no partial file.

    Parameters
    ----------
    pdb_id
        Four-character PDB id starting with a digit (e.g. ``"5ire"``; case-insensitive).
    cache_dir
        Directory for the cached ``{id}.{format}.gz`` files (created if missing).
    file_format
        ``"cif"`` (mmCIF, every entry) or ``"pdb"`` (legacy format, not for very large entries).
    """
    if not isinstance(pdb_id, str) or not re.fullmatch(r"[0-9][A-Za-z0-9]{3}", pdb_id):
        raise ValueError(
            "pdb_id must be 4 alphanumeric characters starting with a digit (e.g. '5ire'), "
            f"got {pdb_id!r}"
        )
    if file_format not in ("cif", "pdb"):
        raise ValueError(f"file_format must be 'cif' or 'pdb', got {file_format!r}")
    cache = Path(cache_dir)
    target = cache / f"{pdb_id.lower()}.{file_format}.gz"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = RCSB_DOWNLOAD_URL.format(id=pdb_id.upper(), ext=file_format)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (fixed https URL)
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise OSError(f"could not download {url} into {cache}: {exc}") from exc
    if not data.startswith(b"\x1f\x8b"):
        raise ValueError(f"download from {url} is not a gzip file ({len(data)} bytes)")
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{pdb_id.lower()}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
