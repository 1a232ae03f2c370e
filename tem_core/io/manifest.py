"""Resume manifests: what a partial output was made with, stored next to it.

A long run that writes items one by one into a work directory (the tilts of
:func:`tem_core.simulate.tilt_series`) first writes ``manifest.json`` there, atomically:
shapes, pixel size, seed, package version and a SHA-256 of every setting. A later run
resumes only when its own manifest matches; otherwise :func:`check_manifest` raises a
``ValueError`` naming what differs and how to start afresh. Temporary files left by a kill
during an atomic write (``.<name>.<random>.tmp``) are removed by :func:`remove_temp_files`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tem_core.io.files import PathLike, atomic_write
from tem_core.io.mrc import read_mrc

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "tem_core resume manifest"


def plain(value: Any) -> Any:
    """Settings as JSON-able values: tensors as lists, dataclasses as dicts, tuples as lists."""
    if isinstance(value, torch.Tensor):
        return value.detach().double().cpu().tolist()
    if hasattr(value, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def sha256_of(*items: Any) -> str:
    """SHA-256 of tensors (their float64 or int64 bytes) and JSON-able values, in order."""
    digest = hashlib.sha256()
    for item in items:
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu()
            t = t if not t.is_floating_point() else t.double()
            digest.update(str(tuple(t.shape)).encode())
            digest.update(np.ascontiguousarray(t.numpy()).tobytes())
        else:
            digest.update(json.dumps(plain(item), sort_keys=True).encode())
    return digest.hexdigest()


def make_manifest(kind: str, *, version: str, parameters: dict[str, Any], **fields: Any) -> dict:
    """A manifest: ``kind``, ``version``, the plain ``fields`` and the SHA-256 of ``parameters``.

    ``fields`` (shape, sampling_a, seed, counts) are compared one by one on resume;
    ``parameters`` (every setting, as plain values) through ``settings_sha256``.
    """
    parameters = plain(parameters)
    return {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "tem_core_version": version,
        **plain(fields),
        "settings_sha256": sha256_of(parameters),
        "parameters": parameters,
    }


def write_manifest(directory: PathLike, manifest: dict) -> Path:
    """Write ``manifest.json`` into ``directory`` atomically (replacing an older one)."""
    text = json.dumps(manifest, indent=1, sort_keys=True)
    return atomic_write(
        Path(directory) / MANIFEST_NAME,
        lambda tmp: tmp.write_text(text, encoding="utf-8"),
        overwrite=True,
    )


def check_manifest(directory: PathLike, wanted: dict, *, item_pattern: str) -> None:
    """Raise unless ``directory``'s manifest matches ``wanted``.

    A directory with items (``item_pattern``, e.g. ``"tilt_*.mrc"``) but no manifest is an
    error too (their settings are unknown); one with neither is fine (a fresh start).
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    afresh = f"delete {directory} or pass resume=False to start afresh"
    if not path.exists():
        items = sorted(directory.glob(item_pattern))
        if items:
            raise ValueError(
                f"{directory} holds {len(items)} partial output file(s) ({item_pattern}) but no "
                f"{MANIFEST_NAME}: their settings are unknown and they cannot be resumed; {afresh}"
            )
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable resume manifest ({exc}); {afresh}") from exc
    if not isinstance(stored, dict) or stored.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a tem_core resume manifest; {afresh}")
    differences = []
    for key, value in wanted.items():
        if key == "parameters" or stored.get(key) == value:
            continue
        if key == "settings_sha256":
            old = stored.get("parameters", {})
            changed = [k for k, v in wanted["parameters"].items() if old.get(k) != v]
            differences.append(f"settings differ ({', '.join(changed) or 'settings'})")
        else:
            differences.append(f"{key} was {stored.get(key)!r}, now {value!r}")
    if differences:
        raise ValueError(
            f"cannot resume from {directory}: the partial output was made with other settings: "
            + "; ".join(differences)
            + f"; {afresh}"
        )


def remove_temp_files(directory: PathLike) -> None:
    """Remove temporary files of interrupted atomic writes (``.<name>.<random>.tmp``)."""
    for path in Path(directory).glob(".*.tmp"):
        path.unlink(missing_ok=True)


def clear_directory(directory: PathLike, patterns: Sequence[str]) -> None:
    """Remove the files matching ``patterns``, the manifest and temporary files."""
    directory = Path(directory)
    for pattern in (*patterns, MANIFEST_NAME):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
    remove_temp_files(directory)


def read_partial_image(path: PathLike, shape: Sequence[int], sampling_a: float) -> np.ndarray:
    """Read a stored item (MRC) as float32, checking its shape and pixel size [Å]."""
    path = Path(path)
    data, voxel = read_mrc(path)
    afresh = f"delete {path.parent} or pass resume=False to start afresh"
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"{path} has shape {tuple(data.shape)}, expected {tuple(shape)}; {afresh}")
    if not abs(voxel - sampling_a) <= 1e-4 * sampling_a:
        raise ValueError(
            f"{path} has pixel size {voxel} Å, expected sampling_a={sampling_a} Å; {afresh}"
        )
    return np.array(data, dtype=np.float32)
