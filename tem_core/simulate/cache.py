"""Exit-wave cache: fit optics and detector parameters without recomputing the specimen.

When only the defocus, the astigmatism, the MTF, the gain or the dose (without radiation
damage) change between calls of :func:`tem_core.simulate.micrograph`, the exit wave (the
multislice through the specimen, by far the largest cost) is the same at every step.
An :class:`ExitWaveCache` passed as ``micrograph(..., exit_wave_cache=cache)`` keeps the
last exit wave with a fingerprint of everything it depends on and reuses it while that
fingerprint is unchanged:

* every tensor of the specimen by identity and version (``data_ptr``, ``_version``, shape,
  strides, dtype, device: an in-place change such as ``positions.add_(1)`` is a miss),
  every other field by value;
* the :class:`~tem_core.potential.PotentialSettings`, the beam energy, whether the energy
  filter is on (the inelastic model needs the absorbed part), the imaging method and, with
  radiation damage, the damage model and the doses.

Nothing is cached while autograd needs the exit wave: if any of these tensors requires a
gradient (fitting atom positions, B-factors, ice thickness as a tensor, the dose with
damage), every call recomputes it. The cached wave is detached, so gradients with respect
to the optics and detector parameters flow as without the cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch


def _fingerprint(obj, grads: list[bool]):
    """A comparable summary of ``obj``; appends to ``grads`` whether each tensor needs grad."""
    if isinstance(obj, torch.Tensor):
        grads.append(obj.requires_grad)
        return ("tensor", obj.data_ptr(), obj._version, tuple(obj.shape), obj.stride(),
                obj.dtype, obj.device)  # fmt: skip
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__,) + tuple(
            _fingerprint(getattr(obj, f.name), grads) for f in dataclasses.fields(obj)
        )
    if isinstance(obj, list | tuple):
        return tuple(_fingerprint(x, grads) for x in obj)
    return obj


class ExitWaveCache:
    """The last exit wave of :func:`~tem_core.simulate.micrograph` and what it depends on.

    Attributes
    ----------
    hits, misses : int
        Calls that reused the stored wave / computed it (``misses`` counts bypassed calls).
    """

    def __init__(self) -> None:
        self._key = None
        self._value: tuple[torch.Tensor, list] | None = None
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Forget the stored exit wave."""
        self._key, self._value = None, None

    def fetch(self, parts: tuple, compute: Callable[[], tuple[torch.Tensor, list]]):
        """``(wave, absorption_sink)`` for the inputs ``parts``: stored, or ``compute()``."""
        grads: list[bool] = []
        key = _fingerprint(parts, grads)
        if torch.is_grad_enabled() and any(grads):
            self.misses += 1
            return compute()  # autograd needs this wave's graph: never cached
        if self._value is not None and key == self._key:
            self.hits += 1
            return self._value
        self.misses += 1
        wave, sink = compute()
        self._key, self._value = key, (wave.detach(), [t.detach() for t in sink])
        return self._value
