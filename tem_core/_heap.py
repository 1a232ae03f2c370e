"""How much free memory the C heap holds, and a release bounded by it (helper of
:mod:`tem_core.memory`'s releases; no physics stage imported).

:func:`tem_core.memory.release_free_memory` (glibc ``malloc_trim``) returns the heap's free
pages to the system; the arrays of the next image then fault fresh pages in. Between the
images of a series of small grids that costs more than the release saves: the next image
would reuse the same free blocks. :func:`release_beyond` releases only when the heap holds
more than a bound of free memory, so the resident set stays bounded (flat over a series)
without a release after every image.
"""

from __future__ import annotations

import ctypes
import sys

from tem_core import memory

#: Free C-heap bytes kept between the images of a series of small grids before they are
#: returned (a 400² TMV tilt of ``benchmarks/vs_temsim.py``: 71 → 55 ms CPU per tilt with the
#: release per tilt replaced by this bound, resident set flat over the 61 tilts).
RETAINED_FREE_HEAP_BYTES = 64 * 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


_MALLINFO2: list = []  # glibc's mallinfo2 (restype set), looked up once; [None] where absent


def free_heap_bytes() -> int | None:
    """Free bytes the C heap holds (glibc ``mallinfo2``: free chunks and fastbins of all
    arenas) [bytes], or ``None`` where the C library has no ``mallinfo2`` (glibc < 2.33,
    musl, macOS, Windows)."""
    if not _MALLINFO2:
        function = None
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None).mallinfo2
                function.restype = _MallInfo2
            except (OSError, AttributeError):  # not glibc, or an old one
                function = None
        _MALLINFO2.append(function)
    if _MALLINFO2[0] is None:
        return None
    info = _MALLINFO2[0]()
    return int(info.fordblks) + int(info.fsmblks)


def release_beyond(retained_bytes: int = RETAINED_FREE_HEAP_BYTES) -> bool:
    """:func:`tem_core.memory.release_at_boundary` when the C heap holds more than
    ``retained_bytes`` free [bytes] (or cannot say), else nothing. Returns whether pages
    were released."""
    free = free_heap_bytes()
    if free is not None and free <= retained_bytes:
        return False
    return memory.release_at_boundary()
