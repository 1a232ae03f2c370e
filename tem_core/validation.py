"""Input validation shared by every stage.

Errors name the parameter, the value and its unit, e.g.
``ValueError: defocus_a must be finite, got nan Å``. Never ``assert`` on user
input (asserts vanish under ``python -O``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _fmt(value: Any, unit: str) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            value = value.detach().cpu().item()
        else:
            bad = value.detach()
            value = f"tensor of shape {tuple(bad.shape)}"
    return f"{value} {unit}".rstrip()


def _as_float_values(value: Any) -> list[float]:
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(-1).double().cpu().tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        out: list[float] = []
        for item in value:
            out.extend(_as_float_values(item))
        return out
    raise TypeError(f"expected a number or tensor, got {type(value).__name__}")


def require_finite(name: str, value: Any, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element of ``value`` is finite."""
    try:
        values = _as_float_values(value)
    except TypeError as exc:
        raise TypeError(f"{name} must be a number or tensor [{unit}], got {value!r}") from exc
    for v in values:
        if not math.isfinite(v):
            raise ValueError(
                f"{name} must be finite, got {_fmt(v if len(values) > 1 else value, unit)}"
            )


def require_positive(name: str, value: Any, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element is finite and > 0."""
    require_finite(name, value, unit)
    for v in _as_float_values(value):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {_fmt(v, unit)}")


def require_nonnegative(name: str, value: Any, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element is finite and >= 0."""
    require_finite(name, value, unit)
    for v in _as_float_values(value):
        if not v >= 0:
            raise ValueError(f"{name} must be >= 0, got {_fmt(v, unit)}")


def require_in_range(
    name: str, value: Any, low: float, high: float, unit: str = "", *, inclusive: bool = True
) -> None:
    """Raise ``ValueError`` unless every element lies in ``[low, high]`` (or the open interval)."""
    require_finite(name, value, unit)
    for v in _as_float_values(value):
        ok = low <= v <= high if inclusive else low < v < high
        if not ok:
            brackets = "[]" if inclusive else "()"
            raise ValueError(
                f"{name} must lie in {brackets[0]}{low}, {high}{brackets[1]} {unit}".rstrip()
                + f", got {_fmt(v, unit)}"
            )


def require_integer(name: str, value: Any, minimum: int | None = None, unit: str = "") -> int:
    """Check an integer (Python or NumPy; bools rejected), at least ``minimum`` if given.

    Raises ``TypeError`` for a non-integer when there is no ``minimum`` (an index), and
    ``ValueError`` naming the bound otherwise (a count or size). Returns ``int(value)``.
    """
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        if value.dtype != torch.bool and not value.is_complex():
            value, is_int = int(value.item()), True
    if minimum is None:
        if not is_int:
            raise TypeError(f"{name} must be an int, got {value!r}")
    elif not is_int or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{name} must be {kind} {unit}".rstrip() + f", got {value!r}")
    return int(value)


def require_positive_int(name: str, value: Any) -> None:
    """Raise unless ``value`` is an integer >= 1 (Python or NumPy integer; bools rejected)."""
    require_integer(name, value, minimum=1)


def require_bool(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a ``bool`` (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def require_grid_shape(shape: Any, name: str = "shape") -> tuple[int, int]:
    """Check an image grid shape ``(ny, nx)`` of positive integers and return it as ints."""
    if not isinstance(shape, tuple | list | torch.Size) or len(shape) != 2:
        raise ValueError(f"{name} must be a pair (ny, nx) of positive integers, got {shape!r}")
    for axis, n in zip(("ny", "nx"), shape, strict=True):
        require_positive_int(f"{name} ({axis})", n)
    return int(shape[0]), int(shape[1])


def require_shape(
    name: str, tensor: Any, shape: tuple[int | str | None, ...], note: str = ""
) -> None:
    """Raise unless ``tensor`` is a tensor of the given shape.

    An ``int`` entry must match exactly; a ``str`` (``"N"``) or ``None`` (printed ``*``)
    matches any size. ``note`` is appended to the message (``"to match positions_a"``).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    ok = tensor.ndim == len(shape) and all(
        not isinstance(s, int) or s == t for s, t in zip(shape, tensor.shape, strict=True)
    )
    if not ok:
        entries = ["*" if s is None else str(s) for s in shape]
        want = "(" + ", ".join(entries) + ("," if len(entries) == 1 else "") + ")"
        raise ValueError(
            f"{name} must have shape {want} {note}".rstrip() + f", got {tuple(tensor.shape)}"
        )


def require_generator(
    generator: Any, like: torch.Tensor | None = None, like_name: str = "the input"
) -> torch.Generator:
    """Check a ``torch.Generator`` (on the device type of ``like``, when given) and return it.

    Parameters
    ----------
    generator
        The value passed as ``generator``.
    like
        Tensor the random numbers are drawn for; the generator must be on its device type.
    like_name
        How the error message names ``like`` (its parameter name).
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if like is not None and generator.device.type != like.device.type:
        raise ValueError(
            f"generator is on {generator.device} but {like_name} is on {like.device}; "
            f"create it with torch.Generator(device={like_name}.device)"
        )
    return generator


# --- dtype and device rules ------------------------------------------------------------------
#: Floating dtypes every stage computes in (float32 default, float64 for tests and gradients).
#: Half precision (float16, bfloat16) is refused: the phase σ·V of one slice is a few rad and
#: the FFTs of a multislice lose all significant digits in 10 bits of mantissa.
SUPPORTED_FLOAT_DTYPES = (torch.float32, torch.float64)
SUPPORTED_COMPLEX_DTYPES = (torch.complex64, torch.complex128)

DTYPE_DEVICE_RULES = """\
Dtype and device rules (enforced at the public entry points):

* Static settings (grid sizes, sampling_a, energy_ev, slice thickness, apertures) are
  Python numbers. NumPy scalars and 0-d tensors without gradient are converted; a tensor
  that requires grad is refused (these settings are not differentiable). Grid sizes must be
  integers (int or NumPy integer); 64.7 is refused, never truncated.
* Optimisable quantities (positions, B-factors, occupancies, defocus, dose, detector
  parameters) are tensors; every stage follows the dtype and device of its tensor input.
* Supported dtypes: float32 (default) and float64 (tests, gradcheck), complex64 and
  complex128 for waves. float16 and bfloat16 are refused with a TypeError.
* Tensors combined in one call must share a device; a torch.Generator must be on the device
  type of the tensors it draws for.
"""


def require_float_dtype(name: str, value: Any) -> torch.dtype:
    """Raise ``TypeError`` unless ``value`` (a tensor or a dtype) is float32 or float64."""
    dtype = value.dtype if isinstance(value, torch.Tensor) else value
    if dtype not in SUPPORTED_FLOAT_DTYPES:
        hint = (
            " (half precision is not supported: use float32 or float64)"
            if dtype in (torch.float16, torch.bfloat16)
            else ""
        )
        raise TypeError(f"{name} must be float32 or float64, got {dtype}{hint}")
    return dtype


HALF_DTYPES = (torch.float16, torch.bfloat16, torch.complex32)


def refuse_half_precision(name: str, value: torch.Tensor) -> None:
    """Raise ``TypeError`` for a float16/bfloat16 (or complex32) tensor; other dtypes pass
    (for functions that also take integer counts)."""
    if value.dtype in HALF_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got {value.dtype} (half precision is not "
            "supported: use float32 or float64)"
        )


def require_same_device(name: str, value: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``value`` is on ``like``'s device (one call, one device).

    Checked before any value is read, so a tensor on another device (or the ``meta`` device)
    gets this message rather than an error from deep inside torch.
    """
    if value.device != like.device:
        raise ValueError(
            f"{name} is on {value.device} but {like_name} is on {like.device}; tensors "
            f"combined in one call must share a device (move it with "
            f"{name}.to({like_name}.device))"
        )


def require_static_float(name: str, value: Any, unit: str = "") -> float:
    """A static (non-differentiable) setting as a Python float.

    Accepts ``int``/``float``, NumPy scalars and 0-d tensors that do not require grad;
    refuses bools, strings, tensors with more than one element and tensors requiring grad
    (``TypeError`` naming the parameter and unit). Does not check the value's range.
    """
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise TypeError(
                f"{name} [{unit}] is a static setting and cannot be differentiated; pass a "
                f"float (got a tensor that requires grad)"
            )
        if value.numel() != 1 or value.is_complex():
            raise TypeError(
                f"{name} must be a real number [{unit}], got a tensor of shape "
                f"{tuple(value.shape)} and dtype {value.dtype}"
            )
        return float(value.detach().cpu().item())
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number [{unit}], got {value!r}")
    return float(value)


def static_positive(name: str, value: Any, unit: str = "") -> float:
    """:func:`require_static_float` then :func:`require_positive`; returns the float."""
    number = require_static_float(name, value, unit)
    require_positive(name, number, unit)
    return number


#: Beam energies accepted [eV]: 1 keV to 10 MeV (transmission microscopes run at 20 kV to
#: 3 MV); a value outside is almost always a unit slip (300 for 300 kV, or 300e6).
BEAM_ENERGY_RANGE_EV = (1e3, 1e7)


def beam_energy(name: str, value: Any) -> float:
    """:func:`static_positive` for a beam energy [eV], within :data:`BEAM_ENERGY_RANGE_EV`."""
    energy = static_positive(name, value, "eV")
    low, high = BEAM_ENERGY_RANGE_EV
    if not low <= energy <= high:
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}] eV (1 keV-10 MeV) for a transmission "
            f"microscope, got {energy:g} eV: a unit slip? 300 kV is 300e3 eV "
            "(tem_core.units.KV_TO_EV)"
        )
    return energy
