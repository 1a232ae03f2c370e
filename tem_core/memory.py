"""Memory preflight: estimate a stage's peak memory and compare it with what is available.

Helper module (no physics stage imported): the stages call :func:`require_memory` with their
own estimate before allocating, so an impossible grid fails at once with a message naming
the grid, the estimate and the available memory, instead of the operating system killing
the process (or CUDA raising) after minutes of work.

Estimates count the ``(ny, nx)`` arrays a stage holds at its peak, in the itemsize of the
dtype it computes in, with counts calibrated against the peak resident memory measured in a
fresh process by ``benchmarks/memory.py`` (table in ``book/design.md``). Available memory
is ``MemAvailable`` of ``/proc/meminfo`` (free plus reclaimable; also bounded by a cgroup
memory limit) on the CPU and the free memory of the device on CUDA, not the total.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

_GB = 1e9
# (ny, nx) arrays held at the peak, calibrated with benchmarks/memory.py (fresh processes,
# peak RSS on the CPU; torch.cuda.max_memory_allocated on CUDA)
CTF_REAL_GRIDS = 10  # k, k², k⁴, χ and its gradient, envelopes, aperture, temporaries
CTF_COMPLEX_GRIDS = 1  # exp(-iχ)
MTF_REAL_GRIDS = 9  # radial frequency, sinc, parametric terms, temporaries
SLICE_REAL_GRIDS = 4  # the slice, the splat canvas, temporaries
# micrograph: the wave, its spectrum, transmission, propagator, slice (complex), the CTF and
# detector arrays (real), and the solvent geometry which is float64 whatever the dtype
MICROGRAPH_COMPLEX_GRIDS = 5
MICROGRAPH_REAL_GRIDS = 0
MICROGRAPH_FLOAT64_GRIDS = 20
# autograd keeps the inputs of each slice's products and FFTs until backward
GRAPH_COMPLEX_GRIDS_PER_SLICE = 3
GRAPH_REAL_GRIDS = 16


def _cgroup_limit_bytes() -> int | None:
    for path, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(path).read_text().strip()
            used = int(Path(usage).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - used)
    return None


def available_memory_bytes(device: torch.device | str | None = None) -> int:
    """Memory a new allocation may use on ``device`` [bytes].

    CUDA: free device memory (``torch.cuda.mem_get_info``). CPU: ``MemAvailable`` from
    ``/proc/meminfo``, bounded by the cgroup limit minus its usage when there is one
    (containers); physical memory where neither can be read.
    """
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        available = None
    if available is None:
        try:
            available = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return 2**63 - 1
    limit = _cgroup_limit_bytes()
    return available if limit is None else min(available, limit)


def itemsizes(dtype: torch.dtype) -> tuple[int, int]:
    """``(real, complex)`` itemsizes of the precision of ``dtype`` [bytes]."""
    double = dtype in (torch.float64, torch.complex128)
    return (8, 16) if double else (4, 8)


def n_pixels(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def ctf_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    """Peak memory of :func:`tem_core.optics.ctf` on ``shape`` [bytes]."""
    real, cplx = itemsizes(dtype)
    return n_pixels(shape) * (CTF_REAL_GRIDS * real + CTF_COMPLEX_GRIDS * cplx)


def mtf_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    """Peak memory of :meth:`tem_core.detector.Detector.mtf` on ``shape`` [bytes]."""
    return n_pixels(shape) * MTF_REAL_GRIDS * itemsizes(dtype)[0]


def slice_potential_bytes(
    shape: Sequence[int], dtype: torch.dtype, n_atoms: int, window_px: int
) -> int:
    """Peak memory of :func:`tem_core.potential.slice_potential` [bytes].

    The slice and its canvas, plus per atom (in chunks of at most 32768) two ``(window,)``
    edge-fraction rows for each of the five Peng Gaussians.
    """
    real = itemsizes(dtype)[0]
    per_atom = 2 * 5 * window_px * real * 2
    return n_pixels(shape) * SLICE_REAL_GRIDS * real + min(n_atoms, 32768) * per_atom


def micrograph_bytes(
    shape: Sequence[int], dtype: torch.dtype, *, n_slices: int = 1, requires_grad: bool = False
) -> int:
    """Peak memory of :func:`tem_core.simulate.micrograph` [bytes].

    ``dtype`` is the atoms' floating dtype; with ``requires_grad`` the graph of every slice
    is kept until ``backward``.
    """
    real, cplx = itemsizes(dtype)
    per_pixel = (
        MICROGRAPH_COMPLEX_GRIDS * cplx
        + MICROGRAPH_REAL_GRIDS * real
        + MICROGRAPH_FLOAT64_GRIDS * 8
    )
    if requires_grad:
        per_pixel += GRAPH_COMPLEX_GRIDS_PER_SLICE * n_slices * cplx + GRAPH_REAL_GRIDS * real
    return n_pixels(shape) * per_pixel


class MemoryPreflightError(MemoryError, ValueError):
    """An estimated peak exceeds the available memory (raised before allocating)."""


def require_memory(
    what: str, needed: int, device: torch.device | str | None = None, hint: str = ""
) -> int:
    """Raise :class:`MemoryPreflightError` when ``needed`` exceeds the available memory.

    Returns ``needed``. The message names what is estimated, both sizes and the device.
    """
    available = available_memory_bytes(device)
    if needed > available:
        where = "cpu" if device is None else str(torch.device(device))
        raise MemoryPreflightError(
            f"{what} needs about {needed / _GB:.3g} GB but {where} has {available / _GB:.3g} GB "
            f"available{'; ' + hint if hint else ''}"
        )
    return needed
