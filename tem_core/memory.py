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

import contextvars
import ctypes
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch

_GB = 1e9
T = TypeVar("T")
# Grid counts: the (ny, nx) arrays alive at each stage's peak, read off the torch profiler's
# live set (`benchmarks/memory.py --explain CASE` prints it, with the line allocating each
# array). They are counts of arrays in the code, not fitted factors: change the code and
# `--explain` shows the new count.
# ctf, one CTF without a graph, built in place (tem_core/_optics_phase.py): |k|, k² (then
# the radial term and ∂χ/∂k_y), k² cos 2(φ − φa) (then the envelopes), χ, ∂χ/∂k_x and the
# temporaries' buffer. With parameters that require grad or one CTF per image (expressions
# in optics.aberration_phase): k_x, k_y, k², |k|, χ and its two gradients, temporaries
CTF_REAL_GRIDS = 6
CTF_GRAPH_REAL_GRIDS = 10
# Detector.mtf, parametric, built in place (detector.mtf._mtf_of_omega2): ω² (the radial
# frequency squared in place), the first Lorentzian (then the sum), the second and its
# temporary. With parameters that require grad: the radial frequency, ω², two Lorentzians
# and their temporaries
MTF_REAL_GRIDS = 4
MTF_GRAPH_REAL_GRIDS = 7
# tabulated: radial frequency, |ω|, clamped, the four gathered table values, two
# differences and the product (real) and the table indices (int64)
MTF_TABLE_REAL_GRIDS = 10
MTF_TABLE_INDEX_GRIDS = 1
SLICE_REAL_GRIDS = 4  # the slice, the splat canvas, index_add's result, the output
# multislice, one step (propagate.multislice_step): propagator, wave, transmission, its
# band-limited copy, the transmitted wave, the unscaled inverse FFT and the next wave
# (complex) and the band-limit mask (bool, one byte)
MULTISLICE_COMPLEX_GRIDS = 7
MULTISLICE_MASK_BYTES = 1
# between two steps, while the next slice is computed: propagator, wave, the last
# transmission and the last slice (loop variables); projection: the running sum and the last
# slice
BETWEEN_STEPS_COMPLEX_GRIDS = 4
# without a graph the steps reuse buffers (propagate/workspace.py) held for the whole loop:
# the propagator and its scaled copy, the two-plane batch and its spectrum (the next slice's
# band limit shares one transform pair with the wave step), the transmitted wave and its
# spectrum and the scaled band-limit mask converted to complex once (complex); the phase,
# the amplitude and the scaled band-limit mask (real)
BUFFERED_BETWEEN_STEPS_COMPLEX_GRIDS = 9
BUFFERED_BETWEEN_STEPS_REAL_GRIDS = 3
# the CPU band splat (potential/band_kernels.py) while a slice's atoms are projected: its
# canvas (the field plus the windows' overhang), the canvas padded to whole tiles (up to
# 2 × 2 fields) and the folded sum (real)
BAND_SPLAT_REAL_GRIDS = 7
# or, below BAND_MIN_ATOMS_PER_PIXEL (potential.kernels; a multislice slice) and on CUDA, the
# bucketed kernel's canvas (the field plus the windows' overhang)
BUCKETED_SPLAT_REAL_GRIDS = 1
PROJECTION_COMPLEX_GRIDS = 2
# autograd keeps, per slice holding atoms that require grad, the transmission (exp saves its
# output), the band-limited transmission and the incoming wave (inputs of their product);
# per later slice only the band-limited transmission (the wave's factor), and nothing for an
# ice-only slice constant along x or y (propagate.multislice transmits it on one line)
GRAPH_COMPLEX_GRIDS_PER_SLICE = 3
GRAPH_COMPLEX_GRIDS_PER_LATER_SLICE = 1
# potential stream (potential.iter_slice_potentials): the yielded complex slice, and the
# real and imaginary parts alive in the suspended generator
STREAM_COMPLEX_GRIDS = 1
STREAM_REAL_GRIDS = 2
# with solvent: the ice path length and the excluded-volume ice in the generator too, and the
# slab geometry (specimen.SolventGeometry): x, y, in-plane distance and the ice interval's
# two ends, float64 whatever the dtype; a support film adds its interval's two ends
SOLVENT_REAL_GRIDS = 2
SOLVENT_FLOAT64_GRIDS = 5
SUPPORT_FLOAT64_GRIDS = 2
# SolventGeometry.lengths while it runs: the clamped interval ends and their difference
# (float64), and its copy in the atoms' dtype; with a hole also the distance to the hole's
# axis (evaluation height, its offset, the projection along the normal, the distance) and
# the support film's length, in float64 again
LENGTHS_FLOAT64_GRIDS = 3
# then _Solvent.parts (potential.streaming): the ice, the excluded ice, their difference, its
# clamp and the imaginary part (real); the slice's peak when its geometry is a line (no hole)
SOLVENT_PARTS_REAL_GRIDS = 5
HOLE_LENGTHS_FLOAT64_GRIDS = 9
# IceField (potential.ice, amorphous-ice fluctuations): per mode the (2·3 + 1)² spreading
# indices (int64) and weights, and their products with the mode's coefficients (real,
# complex); per pixel the oversampled (2 x 2) complex grid and its inverse FFT, the rows
# selected from it (2 x 1), the field (complex, real) and the gridding correction
ICE_FIELD_ENTRIES_PER_MODE = 49
ICE_FIELD_OVERSAMPLING = 2
# and autograd keeps per slice holding atoms its real part, imaginary part and the relu
# output of the excluded volume; without solvent the projected slice
GRAPH_SOLVENT_REAL_GRIDS_PER_SLICE = 3
GRAPH_REAL_GRIDS_PER_SLICE = 1
INELASTIC_REAL_GRIDS = 1  # the running sum of the imaginary potential (no energy filter)
# while the inelastic background is blurred: the exit wave, the kept CTF, the absorbed
# fraction's spectrum, its complex copy and the filtered spectrum (complex); the intensity,
# the absorbed fraction and the blur filter (real); projection: the projected potential
# (complex, its imaginary part is the absorption) instead of the running sum
INELASTIC_STAGE_COMPLEX_GRIDS = 5
INELASTIC_STAGE_REAL_GRIDS = 3
DAMAGE_REAL_GRIDS = 1  # the radiation-damage filter
# Per-atom arrays (counted in values per atom, like the grids; `--explain` on a case with
# many atoms, e.g. `micrograph:1024:float32:0:apo20`, lists them). Kept for the whole stream
# (potential.streaming._Prepared): the atoms sorted by z, positions, Peng amplitudes and
# widths, window radii and z (3 + 5 + 5 + 1 + 1); with ice also the excluded-volume
# Gaussians sorted with their positions and z (3 + 3 + 1); keep masks (bool) and int64 ranks
STREAM_REALS_PER_ATOM = 15
STREAM_SOLVENT_REALS_PER_ATOM = 7
STREAM_BYTES_PER_ATOM = 18  # with the preflight's window radii (float64, cached)
# while one slice's atoms are splatted: the selected copies (14), the erf arguments, slice
# fractions, weights and scales (4 × 5), the window offsets (2) and the copies sorted by
# window bucket (5 + 5 + 2); indices, windows, corners, buckets and their int32 copies
SLICE_REALS_PER_ATOM = 48
SLICE_BYTES_PER_ATOM = 80
# the one-pass projection of all atoms (potential.streaming._atoms_through_slices): slice
# fractions, scales and weights (3 × 5), the bounds of each atom's slices (2), the kernel's
# scales (5); the first and last slice indices (int64)
PROJECTION_REALS_PER_ATOM = 22
PROJECTION_BYTES_PER_ATOM = 16
# kept by autograd per atom and slice: the selected positions' gather index (int64), the erf
# inputs (2 × 5), the slice fractions and amplitudes of the weights (5 + 5), the widths'
# rsqrt output (5), the splat's weights, scales and offsets (5 + 5 + 2) and its int32
# corners and windows
GRAPH_REALS_PER_ATOM_SLICE = 37
GRAPH_BYTES_PER_ATOM_SLICE = 20
# the splat's edge fractions of a slice's atoms, (N, 5, W) for x and y, in reused buffers
# (potential.kernels.SplatScratch, 25 % headroom) without a graph and kept per slice with one
EDGE_FRACTION_GAUSSIANS = 5
SCRATCH_HEADROOM = 1.25


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


def ctf_bytes(shape: Sequence[int], dtype: torch.dtype, *, requires_grad: bool = False) -> int:
    """Peak memory of :func:`tem_core.optics.ctf` on ``shape`` [bytes]; ``requires_grad``:
    parameters that require grad, or one CTF per image (no longer built in place)."""
    grids = CTF_GRAPH_REAL_GRIDS if requires_grad else CTF_REAL_GRIDS
    return n_pixels(shape) * grids * itemsizes(dtype)[0]


def mtf_bytes(shape: Sequence[int], dtype: torch.dtype, *, tabulated: bool = False,
              requires_grad: bool = False) -> int:  # fmt: skip
    """Peak memory of :meth:`tem_core.detector.Detector.mtf` on ``shape`` [bytes]; ``tabulated``:
    a camera's measured MTF table (``Detector.mtf_camera``), not the parametric form;
    ``requires_grad``: parametric with parameters that require grad (not built in place)."""
    real = itemsizes(dtype)[0]
    if tabulated:
        return n_pixels(shape) * (MTF_TABLE_REAL_GRIDS * real + MTF_TABLE_INDEX_GRIDS * 8)
    grids = MTF_GRAPH_REAL_GRIDS if requires_grad else MTF_REAL_GRIDS
    return n_pixels(shape) * grids * real


def slice_potential_bytes(shape: Sequence[int], dtype: torch.dtype, n_atoms: int,
                          window_px: int, *, requires_grad: bool = False) -> int:  # fmt: skip
    """Peak memory of :func:`tem_core.potential.slice_potential` [bytes].

    The slice and its canvas, plus per atom (in chunks of at most 32768) two ``(window,)``
    edge-fraction rows for each of the five Peng Gaussians (kept for ``backward`` with
    ``requires_grad``; the gradient of the slice replaces the canvas, so the peak is the
    same).
    """
    real = itemsizes(dtype)[0]
    per_atom = 2 * 5 * window_px * real * 2
    return n_pixels(shape) * SLICE_REAL_GRIDS * real + min(n_atoms, 32768) * per_atom


def atom_bytes(
    n_atoms: int,
    dtype: torch.dtype,
    *,
    slice_atoms: int = 0,
    edge_atoms: int = 0,
    atom_slices: int = 0,
    edge_atom_slices: int = 0,
    edge_px: int = 0,
    solvent: bool = True,
    requires_grad: bool = False,
    projection: bool = False,
) -> dict[str, int]:
    """Memory of the atoms' own arrays while :func:`tem_core.simulate.micrograph` streams
    them [bytes].

    Returns ``"stream"`` (kept from the first slice to the exit wave), ``"slice"`` (the
    temporaries of the slice with the most
    atoms, ``slice_atoms``, or with the most atoms splatted with edge-fraction arrays,
    ``edge_atoms``) and ``"graph"`` (what autograd keeps over the ``atom_slices``
    atom-slice pairs, ``edge_atom_slices`` of them with edge fractions, with
    ``requires_grad``). ``edge_px``: the splat window ``W`` [px] of the bucketed kernel, whose
    edge fractions are ``(N, 5, W)`` arrays (the CPU band kernel computes them inside).
    ``dtype``: the atoms' floating dtype. ``projection``: all atoms projected in one pass
    (``slice_atoms`` is then every atom).
    """
    real = itemsizes(dtype)[0]
    per_atom = STREAM_REALS_PER_ATOM + STREAM_SOLVENT_REALS_PER_ATOM * solvent
    edges = 2 * EDGE_FRACTION_GAUSSIANS * int(edge_px) * real
    temporaries = SLICE_REALS_PER_ATOM * real + SLICE_BYTES_PER_ATOM
    if projection:
        temporaries = PROJECTION_REALS_PER_ATOM * real + PROJECTION_BYTES_PER_ATOM
    out = {
        "stream": n_atoms * (per_atom * real + STREAM_BYTES_PER_ATOM),
        "graph": 0,
    }
    if requires_grad:
        out["graph"] = (
            atom_slices * (GRAPH_REALS_PER_ATOM_SLICE * real + GRAPH_BYTES_PER_ATOM_SLICE)
            + edge_atom_slices * edges
        )
        edge_bytes = edge_atoms * edges
    else:
        edge_bytes = int(SCRATCH_HEADROOM * edge_atoms * edges)
    out["slice"] = max(slice_atoms * temporaries, edge_atoms * temporaries + edge_bytes)
    return out


def multislice_bytes(
    shape: Sequence[int],
    dtype: torch.dtype,
    *,
    n_slices: int = 1,
    requires_grad: bool = False,
    n_later_slices: int = 0,
) -> int:
    """Peak memory of :func:`tem_core.propagate.multislice` itself [bytes].

    The working set of one step (:data:`MULTISLICE_COMPLEX_GRIDS` complex arrays and the
    band-limit mask) and, with ``requires_grad``, the arrays autograd keeps for each of the
    ``n_slices`` slices whose potential requires grad and the ``n_later_slices`` after them
    (only the wave requires grad there). ``dtype`` is the wave's (or the slices') dtype,
    real or complex; the slices themselves are the caller's.
    """
    cplx = itemsizes(dtype)[1]
    per_pixel = MULTISLICE_COMPLEX_GRIDS * cplx + MULTISLICE_MASK_BYTES
    if requires_grad:
        per_pixel += GRAPH_COMPLEX_GRIDS_PER_SLICE * n_slices * cplx
        per_pixel += GRAPH_COMPLEX_GRIDS_PER_LATER_SLICE * n_later_slices * cplx
    return n_pixels(shape) * per_pixel


def micrograph_phases(
    shape: Sequence[int],
    dtype: torch.dtype,
    *,
    n_slices: int = 1,
    requires_grad: bool = False,
    n_later_slices: int = 0,
    method: str = "multislice",
    solvent: bool = True,
    support: bool = False,
    hole: bool = False,
    line: bool = False,
    ice_field_modes: int = 0,
    inelastic: bool = True,
    damage: bool = False,
    tabulated_mtf: bool = False,
    atoms: dict[str, int] | None = None,
    band_splat: bool = True,
) -> dict[str, int]:
    """Memory of :func:`tem_core.simulate.micrograph` in each of its phases [bytes].

    ``"slice"``: a slice of the potential is computed (solvent geometry, and the field of
    amorphous ice with ``ice_field_modes`` modes) while the multislice loop holds its wave,
    propagator and last slice; ``"multislice step"``: the step's working set with the
    streamed slice (``method="projection"``: none); ``"image"``: the exit wave and its
    spectrum while the CTF is built, then the detector's MTF. The peak is the largest phase.
    ``dtype`` is the atoms' floating dtype. ``solvent``: an ice slab (``support``: with a
    film around a ``hole``; ``line``: no hole, tilted about x or y or not at all, so its
    geometry is computed on one line); ``inelastic``: no energy filter; ``damage``: a
    radiation-damage filter. With ``requires_grad`` autograd keeps arrays of each of the
    ``n_slices`` slices holding atoms, and of the ``n_later_slices`` after them, until
    ``backward``: they are added to every phase. ``atoms``: the atoms' own arrays
    (:func:`atom_bytes`), added to the phases they live in; ``band_splat``: some slice is
    splatted by the CPU band kernel (its grids counted, else the bucketed kernel's canvas).
    """
    real, cplx = itemsizes(dtype)
    px = n_pixels(shape)
    kept = INELASTIC_REAL_GRIDS * inelastic + DAMAGE_REAL_GRIDS * damage  # whole run
    float64s = 0
    generator_reals = STREAM_REAL_GRIDS
    if solvent:
        float64s = (SOLVENT_FLOAT64_GRIDS + SUPPORT_FLOAT64_GRIDS * support) * (not line)
        generator_reals += SOLVENT_REAL_GRIDS
    graph = 0
    if requires_grad:
        per_slice = GRAPH_SOLVENT_REAL_GRIDS_PER_SLICE if solvent else GRAPH_REAL_GRIDS_PER_SLICE
        graph = px * n_slices * per_slice * real
        if method == "multislice":
            graph += multislice_bytes(
                shape, dtype, n_slices=n_slices, requires_grad=True,
                n_later_slices=n_later_slices,
            ) - multislice_bytes(shape, dtype)  # fmt: skip
    loop, loop_reals = PROJECTION_COMPLEX_GRIDS, 0
    if method == "multislice" and requires_grad:
        loop = BETWEEN_STEPS_COMPLEX_GRIDS
    elif method == "multislice":
        loop = BUFFERED_BETWEEN_STEPS_COMPLEX_GRIDS
        loop_reals = BUFFERED_BETWEEN_STEPS_REAL_GRIDS
    splat = BAND_SPLAT_REAL_GRIDS if band_splat else BUCKETED_SPLAT_REAL_GRIDS
    # slice: the loop's arrays, the generator's real and imaginary parts, lengths()
    slice_ = px * (
        loop * cplx
        + MULTISLICE_MASK_BYTES
        + (STREAM_REAL_GRIDS + kept + loop_reals + splat) * real
    )
    if solvent:
        lengths = (HOLE_LENGTHS_FLOAT64_GRIDS if hole else LENGTHS_FLOAT64_GRIDS * (not line)) * 8
        lengths += 0 if dtype == torch.float64 or line else (1 + support) * real  # the copies
        slice_ += px * (float64s * 8 + max(lengths, SOLVENT_PARTS_REAL_GRIDS * real))
    if ice_field_modes:
        per_mode = ICE_FIELD_ENTRIES_PER_MODE * (8 + 3 * real)
        r2 = ICE_FIELD_OVERSAMPLING**2
        slice_ += ice_field_modes * per_mode
        slice_ += px * ((2 * r2 + ICE_FIELD_OVERSAMPLING + 1) * cplx + 2 * real)
    step = px * (STREAM_COMPLEX_GRIDS * cplx + (generator_reals + kept) * real + float64s * 8)
    if method == "multislice":
        step += multislice_bytes(shape, dtype)
    else:
        step += px * PROJECTION_COMPLEX_GRIDS * cplx
    # image: exit wave, its spectrum, the inelastic sum and the CTF under construction; then
    # the detector's MTF with the intensity, the electrons and their spectrum
    image = px * (2 * cplx + INELASTIC_REAL_GRIDS * inelastic * real)
    image += max(ctf_bytes(shape, dtype), mtf_bytes(shape, dtype, tabulated=tabulated_mtf))
    image = max(image, px * inelastic * (INELASTIC_STAGE_COMPLEX_GRIDS * cplx + (cplx - real) * (
        method == "projection") + (INELASTIC_STAGE_REAL_GRIDS + kept) * real))  # fmt: skip
    if atoms is not None:
        graph += atoms["graph"]
        slice_ += atoms["stream"] + atoms["slice"]
        step += atoms["stream"]
    return {"slice": slice_ + graph, "multislice step": step + graph, "image": image + graph}


def micrograph_bytes(shape: Sequence[int], dtype: torch.dtype, **settings) -> int:
    """Peak memory of :func:`tem_core.simulate.micrograph` [bytes]: the largest of
    :func:`micrograph_phases` (same arguments)."""
    return max(micrograph_phases(shape, dtype, **settings).values())


def with_stored_images(peak: int, shape: Sequence[int], n_images: int) -> int:
    """Peak memory of a run that keeps ``n_images`` float32 images of ``shape`` while it
    simulates (peak ``peak`` [bytes]) and then stacks them (:func:`tem_core.simulate.tilt_series`)
    [bytes]."""
    images = n_images * n_pixels(shape) * 4
    return max(peak + images, 2 * images)


#: glibc's mmap threshold set by :func:`map_large_allocations` [bytes] (the benchmark's).
MMAP_THRESHOLD_BYTES = 65536
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


def map_large_allocations(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold: every allocation of ``threshold_bytes`` or more gets its
    own mapping, returned to the system when freed. Returns whether it was set.

    By default glibc raises the threshold with each freed block up to 32 MB, so arrays
    below that come from the heap, which keeps freed blocks resident: a 1024² micrograph
    with gradients through 30 slices measured 680-960 MB of resident memory for 199 MB of
    arrays (``benchmarks/memory.py``), beyond any preflight. With the threshold fixed the
    resident set follows the arrays (same wall time within the noise of that run).
    Process-wide, so it is never done on import: the ``tem-book`` command and the dataset
    workers, which own their processes, call it; a script may too. No-op (``False``) where
    the C library has no ``mallopt`` (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    global RELEASE_AT_BOUNDARIES
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    done = bool(mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(int(threshold_bytes))))
    if done:  # freed arrays go back to the system at once: nothing left to release
        RELEASE_AT_BOUNDARIES = False
    return done


_LIBC: dict = {}  # glibc's functions, looked up once (None where absent)


def _libc(name: str):
    if name not in _LIBC:
        _LIBC[name] = None
        if sys.platform.startswith("linux"):
            try:
                _LIBC[name] = getattr(ctypes.CDLL(None), name)
            except (OSError, AttributeError):  # not glibc (musl)
                pass
    return _LIBC[name]


#: Whether the stages return the C heap's free pages at their boundaries
#: (:func:`release_at_boundary`). Costs page faults: 1.1-1.3x the CPU time of a micrograph
#: whose arrays fit the heap (``benchmarks/memory.py --cost``); set ``False`` to trade
#: memory for that time. :func:`map_large_allocations` turns it off (nothing to release).
RELEASE_AT_BOUNDARIES = True
#: Set (a context variable) where the caller releases once after: small tilts of a series.
DEFER_RELEASES = contextvars.ContextVar("tem_core_defer_releases", default=False)


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``).

    glibc's dynamic mmap threshold rises to 32 MB as large blocks are freed, after which
    arrays below that come from the heap, whose freed blocks stay resident (and, fragmented,
    make it grow): a plain Python process's resident set reached 1.3-2.4x the arrays a
    micrograph holds. It only returns pages that are free, so it never changes a result;
    the cost is the page faults of touching them again. Returns whether pages were
    released; a no-op (``False``) where the C library has no ``malloc_trim`` (macOS,
    Windows, musl).
    """
    trim = _libc("malloc_trim")
    return bool(trim(ctypes.c_size_t(0))) if trim is not None else False


def release_at_boundary() -> bool:
    """:func:`release_free_memory` where the stages call it (between multislice steps, in
    their backward, after the exit wave and the micrograph, between tilts), unless
    :data:`RELEASE_AT_BOUNDARIES` or :data:`DEFER_RELEASES` (the caller releases after) says no."""
    return release_free_memory() if RELEASE_AT_BOUNDARIES and not DEFER_RELEASES.get() else False


def _release_in_backward(grad: torch.Tensor) -> None:
    release_at_boundary()


def release_in_backward(tensor: object) -> None:
    """Return the C heap's free pages (:func:`release_at_boundary`) when the backward pass
    reaches ``tensor`` (a hook that leaves its gradient unchanged); nothing when ``tensor``
    is not a tensor recorded by autograd.

    Backward frees the arrays saved for each step as it goes and allocates the step's
    gradients: without a release between steps the heap keeps the freed blocks and grows
    (a 1024² float64 micrograph through 30 slices of ice: the resident set rose by 130 MB
    during backward with releases only at the slices holding atoms).
    """
    if isinstance(tensor, torch.Tensor) and tensor.requires_grad and torch.is_grad_enabled():
        tensor.register_hook(_release_in_backward)


def release_at_stage(tensor: object) -> None:
    """A stage boundary after ``tensor`` was computed: :func:`release_at_boundary` now and
    :func:`release_in_backward` when the backward pass reaches ``tensor``."""
    release_at_boundary()
    release_in_backward(tensor)


def releasing(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items`` of a streamed loop, returning the C heap's free pages
    (:func:`release_at_boundary`) after each item is computed and after the step that
    consumed it, and between the steps of the backward pass (:func:`release_in_backward`
    on each item)."""
    for item in items:
        release_at_boundary()  # the item's temporaries
        release_in_backward(item)
        yield item
        release_at_boundary()  # the step's temporaries, before the next item


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
