"""Reuse of CTFs whose parameters are plain numbers (a tilt series images every tilt with
the same CTF when its defocus does not change): a small cache keyed by grid, sampling,
microscope and aberrations; tensors (which may need gradients) are never cached."""

from __future__ import annotations

import torch

#: CTFs of plain-number parameters kept for reuse (grids up to CTF_CACHE_MAX_PIXELS).
CTF_CACHE_SIZE = 2
CTF_CACHE_MAX_PIXELS = 1024 * 1024
_CTF_CACHE: dict = {}


def _ctf_cache_key(shape, sampling_a, microscope, *params_and_where):
    """Key of a CTF whose parameters are plain numbers (no tensors: nothing to
    differentiate), or ``None``."""
    *params, device, dtype = params_and_where
    if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in params):
        return None
    if not all(isinstance(n, int) for n in shape) or len(shape) != 2:
        return None
    if shape[0] * shape[1] > CTF_CACHE_MAX_PIXELS or not isinstance(sampling_a, int | float):
        return None
    fields = getattr(microscope, "__dataclass_fields__", None)
    if fields is None or any(isinstance(getattr(microscope, f), torch.Tensor) for f in fields):
        return None  # tensors in the microscope may change in place or need gradients
    try:
        hash(microscope)
    except TypeError:
        return None
    where = str(torch.device(device)) if device is not None else None
    return (tuple(shape), float(sampling_a), microscope, tuple(map(float, params)), where, dtype)


def cached_ctf(key, make) -> tuple[torch.Tensor, bool]:
    """``(ctf, shared)``: the CTF of ``key`` kept from an earlier call (``shared``: the
    cache's own tensor, to be read only), or ``make()`` (kept when ``key`` is not None)."""
    if key is not None and key in _CTF_CACHE:
        return _CTF_CACHE[key], True
    h = make()
    if key is not None:
        _CTF_CACHE[key] = h.clone()
        while len(_CTF_CACHE) > CTF_CACHE_SIZE:
            _CTF_CACHE.pop(next(iter(_CTF_CACHE)))
    return h, False
