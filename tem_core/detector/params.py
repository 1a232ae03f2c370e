"""Detector parameters: scalars or tensors (one per image), and their checks."""

from __future__ import annotations

from typing import Any

import torch

from tem_core.validation import require_finite, require_nonnegative, require_positive

Scalar = float | torch.Tensor


def _as_tensor(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor on ``like``'s device and (real) dtype, keeping autograd history."""
    dtype = like.real.dtype if like.is_complex() else like.dtype
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    if isinstance(value, torch.Tensor):
        return value.to(device=like.device, dtype=dtype)
    return torch.as_tensor(float(value), device=like.device, dtype=dtype)


def _batch_shaped(value: torch.Tensor) -> torch.Tensor:
    """Reshape a per-image value ``(B...)`` to ``(B..., 1, 1)`` to broadcast over images."""
    return value.reshape(value.shape + (1, 1)) if value.ndim > 0 else value


def _check_mtf_params(a: Any, b: Any, c: Any, alpha: Any, beta: Any, p: Any, q: Any) -> None:
    for name, value in (("a", a), ("b", b), ("c", c)):
        require_nonnegative(name, value)
    total = sum(torch.as_tensor(v).detach().double().cpu() for v in (a, b, c))
    if not bool(torch.all(total > 0)):
        raise ValueError(f"a + b + c must be > 0 (the MTF is normalised by it), got {_show(total)}")
    require_nonnegative("alpha", alpha, "px²")
    require_nonnegative("beta", beta, "px²")
    require_positive("p", p)
    require_positive("q", q)


def _check_dqe(dqe: Any) -> None:
    require_finite("dqe", dqe)
    values = torch.as_tensor(dqe).detach().double().reshape(-1).cpu()
    bad = values[(values <= 0) | (values > 1)]
    if bad.numel():
        raise ValueError(f"dqe must lie in (0, 1], got {bad[0].item()}")


def _show(value: torch.Tensor) -> str:
    return str(value.item()) if value.numel() == 1 else f"tensor of shape {tuple(value.shape)}"
