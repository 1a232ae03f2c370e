"""Tabulated detector curves shipped with tem_core (``tem_core/data/{mtf,dqe}_*.csv``).

Private helper of :mod:`tem_core.detector`, which re-exports the public names. Each CSV
file starts with a comment line citing the source measurement, then the header
``frequency_cycles_per_px,<quantity>``.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch


def _data_file(name: str):
    return resources.files("tem_core") / "data" / name


def _available(prefix: str) -> tuple[str, ...]:
    names = [f.name for f in (resources.files("tem_core") / "data").iterdir()]
    return tuple(
        sorted(n[len(prefix) : -4] for n in names if n.startswith(prefix) and n.endswith(".csv"))
    )


def available_cameras() -> tuple[str, ...]:
    """Names of the tabulated camera MTFs shipped in ``tem_core/data/mtf_*.csv``."""
    return _available("mtf_")


def available_dqe_tables() -> tuple[str, ...]:
    """Names of the tabulated DQE curves shipped in ``tem_core/data/dqe_*.csv``."""
    return _available("dqe_")


@functools.cache
def _read_table(prefix: str, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if not isinstance(name, str) or name not in _available(prefix):
        kind = "camera" if prefix == "mtf_" else "DQE table"
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(_available(prefix))}")
    text = _data_file(f"{prefix}{name}.csv").read_text(encoding="utf-8")
    lines = text.splitlines()
    source = lines[0].lstrip("# ").strip()
    table = np.loadtxt(lines[2:], delimiter=",", dtype=np.float64, ndmin=2)
    return table[:, 0], table[:, 1], source


def load_mtf_table(camera: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Published MTF of a real camera, as shipped in ``tem_core/data/mtf_<camera>.csv``.

    Cameras: ``k2_300kv``, ``k2_200kv``, ``falcon2_300kv``, ``de20_300kv``, ``falcon3ec_300kv``,
    ``falcon3ec_200kv``, ``falcon4ec_300kv``, ``falcon4ec_200kv`` (see
    :func:`available_cameras`). Curves as distributed with RELION (K2 300 kV, Falcon II and
    DE-20 measured by McMullan et al. 2014, Ultramicroscopy 147:156); each file's first line
    cites its source. The curve is divided by its zero-frequency value (the Falcon 4EC tables
    start at 0.9995), so ``MTF(0) = 1``.

    Returns
    -------
    (frequency_cycles_per_px, mtf)
        float64 tensors, frequencies increasing from 0 to about 0.5 [cycles/pixel].
    """
    freq, mtf, _ = _read_table("mtf_", camera)
    mtf = mtf / mtf[0] if freq[0] == 0.0 else mtf
    return torch.from_numpy(freq.copy()), torch.from_numpy(mtf.copy())


def load_dqe_table(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Published DQE(ω) curve, as shipped in ``tem_core/data/dqe_<name>.csv``.

    Names: ``k2_300kv``, ``falcon2_300kv``, ``de20_300kv``, ``film_300kv`` (McMullan et al.
    2014), ``falcon3ec_counting_300kv``, ``falcon3ec_linear_300kv`` (Kuijper et al. 2015, JSB
    192:179); digitised curves from the mtf-nps-dqe project (MIT licence). The simulator's
    :class:`~tem_core.detector.Detector` uses a frequency-independent DQE:
    :meth:`~tem_core.detector.Detector.for_camera` takes DQE(0) from these tables.

    Returns
    -------
    (frequency_cycles_per_px, dqe)
        float64 tensors [cycles/pixel], [dimensionless].
    """
    freq, dqe, _ = _read_table("dqe_", name)
    return torch.from_numpy(freq.copy()), torch.from_numpy(dqe.copy())


def _interp_table(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation; constant continuation beyond both ends."""
    xp = xp.to(device=x.device, dtype=x.dtype)
    fp = fp.to(device=x.device, dtype=x.dtype)
    xc = x.clamp(min=xp[0], max=xp[-1])
    idx = torch.searchsorted(xp, xc.contiguous(), right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    return f0 + (f1 - f0) * (xc - x0) / (x1 - x0)
