"""Strip-kernel projection matrix of one slice perpendicular to the tilt axis.

For single-axis parallel-beam tomography every slice perpendicular to the tilt axis sees the
same 2-D geometry, so one sparse matrix ``A`` (rows: tilt angle x detector bin, columns:
the slice's ``(nz, nx)`` pixels) serves all slices: projecting the volume is one sparse-dense
matrix product with the slices as columns.

Weights are the *strip* kernel (ASTRA's ``strip`` projector, Kak & Slaney ch. 7): the area
of the intersection between the unit-square pixel and the unit-wide strip of a detector bin,
i.e. the integral of the pixel's projected footprint over the bin. The footprint of a unit
square at angle θ is the convolution of two boxes of widths ``|cos θ|`` and ``|sin θ|``
(integral 1); its cumulative integral is piecewise quadratic and evaluated in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

_THIN = 1e-7  # a box narrower than this [px] is treated as a Dirac


def _ramp2(s: np.ndarray) -> np.ndarray:
    return np.square(np.maximum(s, 0.0))


def footprint_cdf(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """CDF of the sum of two centred uniform variables of widths ``a >= b`` [px] at ``t``."""
    if b < _THIN:
        return np.clip((t + 0.5 * a) / a, 0.0, 1.0)
    s = t + 0.5 * (a + b)
    cdf = (_ramp2(s) - _ramp2(s - a) - _ramp2(s - b) + _ramp2(s - a - b)) / (2.0 * a * b)
    return np.where(s >= a + b, 1.0, np.clip(cdf, 0.0, 1.0))


def strip_matrix(
    angles_rad: np.ndarray, *, nz: int, nx: int, n_det: int, dtype=np.float64
) -> sp.csr_matrix:
    """Sparse ``(n_angles * n_det, nz * nx)`` strip-kernel matrix of one slice.

    Pixel ``(k, i)`` has its centre at ``x = i - (nx - 1)/2``, ``z = k - (nz - 1)/2`` [px];
    a tilt ``θ`` maps it to the detector coordinate ``u = x cos θ + z sin θ`` (the specimen
    rotated right-handed about the tilt axis, as :func:`tem_core.specimen.tilt_specimen`
    does), bin ``m`` being centred at ``u = m - (n_det - 1)/2``.
    """
    zc = np.arange(nz, dtype=np.float64) - 0.5 * (nz - 1)
    xc = np.arange(nx, dtype=np.float64) - 0.5 * (nx - 1)
    zz, xx = np.meshgrid(zc, xc, indexing="ij")
    zz, xx = zz.ravel(), xx.ravel()
    cols_all = np.arange(nz * nx, dtype=np.int64)
    rows, cols, vals = [], [], []
    for index, theta in enumerate(np.asarray(angles_rad, dtype=np.float64)):
        c, s = math.cos(theta), math.sin(theta)
        a, b = max(abs(c), abs(s)), min(abs(c), abs(s))
        u = xx * c + zz * s + 0.5 * (n_det - 1)  # pixel centre in bin coordinates
        first = np.floor(u - 0.5 * (a + b) + 0.5).astype(np.int64)  # bin holding the left edge
        for offset in range(3):  # a + b <= sqrt(2): a footprint touches at most 3 bins
            m = first + offset
            lo = m - 0.5 - u
            w = footprint_cdf(lo + 1.0, a, b) - footprint_cdf(lo, a, b)
            keep = (m >= 0) & (m < n_det) & (w > 1e-12)
            rows.append(index * n_det + m[keep])
            cols.append(cols_all[keep])
            vals.append(w[keep])
    matrix = sp.csr_matrix(
        (np.concatenate(vals).astype(dtype), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(angles_rad) * n_det, nz * nx),
    )
    matrix.sum_duplicates()
    return matrix
