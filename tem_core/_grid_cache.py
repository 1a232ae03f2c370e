"""Grids computed from plain numbers, kept for reuse (helper, no physics stage imported).

A tilt series images every tilt on the same grid with the same camera and the same inelastic
blur: the detector's MTF, the inelastic background's Gaussian filter and the slab's
pixel-centre grids do not change from tilt to tilt. Each is built once and kept in a small
cache keyed by the plain numbers it is made of (shape, sampling, parameters, dtype,
device); anything that is not a plain number (a tensor, which may need gradients or change
in place) gives no key and the grid is built afresh. The cached grids are shared: callers
read them, never write into them (public functions hand out copies).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

#: Grids kept per cache, and the largest grid kept [pixels] (larger ones are rebuilt).
GRID_CACHE_SIZE = 4
GRID_CACHE_MAX_PIXELS = 1024 * 1024

_PLAIN = (int, float, str, bool, type(None), torch.dtype)


def plain_key(*values) -> tuple | None:
    """``values`` as a hashable key when every one is a plain number (or string, dtype,
    ``None``, device, nested tuple of those), else ``None``."""
    out = []
    for value in values:
        if isinstance(value, tuple):
            inner = plain_key(*value)
            if inner is None:
                return None
            out.append(inner)
        elif isinstance(value, torch.device):
            out.append(str(value))
        elif isinstance(value, _PLAIN):
            out.append((type(value).__name__, value))
        else:
            return None
    return tuple(out)


class GridCache:
    """Least-recently-used grids by key (see the module docstring)."""

    def __init__(self, size: int = GRID_CACHE_SIZE) -> None:
        self.size = size
        self._grids: OrderedDict = OrderedDict()

    def get(self, key: tuple | None, pixels: int, make: Callable[[], object]):
        """The grid of ``key``, made by ``make()`` on a miss; ``key=None`` or more than
        :data:`GRID_CACHE_MAX_PIXELS` ``pixels``: made afresh, not kept."""
        if key is None or pixels > GRID_CACHE_MAX_PIXELS:
            return make()
        if key in self._grids:
            self._grids.move_to_end(key)
            return self._grids[key]
        value = make()
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return value  # a graph is never shared
        self._grids[key] = value
        while len(self._grids) > self.size:
            self._grids.popitem(last=False)
        return value

    def clear(self) -> None:
        self._grids.clear()

    def __len__(self) -> int:
        return len(self._grids)
