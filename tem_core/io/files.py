"""Shared by every format: atomic writes and array conversion.

A writer calls :func:`atomic_write`: the data go to a temporary file in the destination
directory, which then replaces the destination with :func:`os.replace`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tem_core.interop import as_tensor, is_foreign_array
from tem_core.validation import require_bool

PathLike = str | os.PathLike


def to_numpy(data: Any, name: str = "data") -> np.ndarray:
    if is_foreign_array(data) and not isinstance(data, np.ndarray):
        data = as_tensor(data)  # a cupy (DLPack) array: viewed as a tensor, copied to the host
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor")
        data = data.detach().cpu().numpy()
    array = np.asarray(data)
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)):
        raise TypeError(f"{name} must be a real numeric array or tensor, got dtype {array.dtype}")
    return array


def check_destination(path: PathLike, overwrite: bool) -> Path:
    path = Path(path)
    require_bool("overwrite", overwrite)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def atomic_write(path: PathLike, writer: Callable[[Path], None], *, overwrite: bool) -> Path:
    """Call ``writer(temp_path)`` on a temporary file next to ``path``, then move it into place."""
    path = check_destination(path, overwrite)
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
