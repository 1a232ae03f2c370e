"""Arrays of other libraries in and out of tem_core without copies (DLPack): cupy, NumPy.

A pipeline that keeps its images in cupy on the GPU (a training data loader, a cupy-based
reconstruction) can call the image-level functions of tem_core directly: the functions
decorated with :func:`accepts_arrays` (:func:`tem_core.optics.apply_ctf`,
:func:`tem_core.optics.image_intensity`, :func:`tem_core.detector.apply_mtf`,
:func:`tem_core.detector.expected_image`, :func:`tem_core.detector.detect`,
:func:`tem_core.detector.sample_counts`) take cupy or NumPy arrays where they take tensors,
view them as torch tensors through DLPack (the same memory, on the same device, no copy),
and return their results as arrays of the kind of the first array argument: a cupy array
for cupy input (``cupy.from_dlpack``, no copy), a NumPy array for NumPy input (a view of the
CPU result). Other DLPack producers (JAX, ...) are accepted and get torch tensors back.
Torch callers see no change. cupy itself is optional (the ``gpu`` extra) and imported only
when a cupy array arrives; without it nothing here needs it.

:func:`tem_core.io.write_mrc` and the other writers accept cupy arrays too (one device to
host copy, which writing a file needs anyway).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["accepts_arrays", "as_tensor", "is_foreign_array", "to_array"]

F = TypeVar("F", bound=Callable[..., Any])


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def is_foreign_array(x: Any) -> bool:
    """True for an array that is not a torch tensor but can become one (NumPy, DLPack)."""
    if isinstance(x, torch.Tensor):
        return False
    return isinstance(x, np.ndarray) or (hasattr(x, "__dlpack__") and not isinstance(x, type))


def as_tensor(x: Any) -> torch.Tensor:
    """A torch tensor viewing ``x``'s memory: a tensor as is, a NumPy array through
    ``torch.from_numpy`` (copied only when read-only), a cupy (or any DLPack) array through
    ``torch.from_dlpack`` on its own device."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x) if x.flags.writeable else torch.from_numpy(x.copy())
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    raise TypeError(f"expected a tensor or an array with __dlpack__, got {type(x).__name__}")


def to_array(tensor: torch.Tensor, like: Any) -> Any:
    """``tensor`` as an array of ``like``'s kind: cupy (``cupy.from_dlpack``, no copy), NumPy
    (a view of a CPU tensor; a GPU tensor is copied to the host), otherwise the tensor."""
    if not isinstance(tensor, torch.Tensor):
        return tensor
    if _is_cupy(like):
        import cupy

        return cupy.from_dlpack(tensor.detach())
    if isinstance(like, np.ndarray):
        return tensor.detach().cpu().numpy()
    return tensor


def _convert_back(result: Any, like: Any) -> Any:
    if isinstance(result, torch.Tensor):
        return to_array(result, like)
    if isinstance(result, tuple) and not hasattr(result, "_fields"):
        return tuple(_convert_back(r, like) for r in result)
    if isinstance(result, list):
        return [_convert_back(r, like) for r in result]
    return result


def accepts_arrays(func: F) -> F:
    """Decorator: array arguments (cupy, NumPy, DLPack) become tensors without copies, and
    tensor results come back as the first array argument's kind (module docstring)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        like = next(
            (a for a in (*args, *kwargs.values()) if is_foreign_array(a)),
            None,
        )
        if like is None:  # torch callers: untouched
            return func(*args, **kwargs)
        args = tuple(as_tensor(a) if is_foreign_array(a) else a for a in args)
        kwargs = {k: as_tensor(v) if is_foreign_array(v) else v for k, v in kwargs.items()}
        return _convert_back(func(*args, **kwargs), like)

    return wrapper  # type: ignore[return-value]
