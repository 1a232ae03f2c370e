"""Lazy, once-per-process Taichi initialisation.

``ti.init(arch=ti.gpu)`` segfaults on CPU-only machines with Mesa EGL, so the
architecture is chosen explicitly: CUDA when torch sees a GPU, else the CPU
(x64/arm64) backend. Taichi can only run on one architecture per process, so
kernels whose tensors live on another device fall back to their torch twin
(see :func:`taichi_device_matches`).

``ti.init`` switches the FPU to flush subnormal numbers to zero; :func:`get_taichi` restores
the caller's state, so importing or using Taichi has no process-wide side effect on numpy and
torch arithmetic (tested in tests/test_bad_inputs.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading

import torch

_lock = threading.Lock()
_state: dict[str, object] = {"initialised": False, "arch": None, "ti": None}


def denormals_flushed() -> bool:
    """True when this thread's floating-point unit flushes subnormal numbers to zero.

    Detected by a subnormal round trip in float64 (numpy) and float32 (torch); a change
    of this state is a process-wide side effect that :func:`get_taichi` undoes.
    """
    import numpy as np

    tiny64 = np.array([1e-310]) * np.float64(1.0)
    tiny32 = torch.full((1,), 1e-40, dtype=torch.float32) * 1.0
    return bool(tiny64[0] == 0.0 or float(tiny32[0]) == 0.0)


def taichi_available() -> bool:
    """True when ``taichi`` can be imported and is not disabled by TEM_CORE_NO_TAICHI=1."""
    if os.environ.get("TEM_CORE_NO_TAICHI", "0") == "1":
        return False
    try:
        import taichi  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def get_taichi():
    """Return the initialised ``taichi`` module (initialising it on first use)."""
    with _lock:
        if not _state["initialised"]:
            import taichi as ti

            arch = ti.cuda if torch.cuda.is_available() else ti.cpu
            # ti.init prints "[Taichi] Starting on arch=..." unconditionally: keep it out of pages
            # The log level comes from TI_LOG_LEVEL (tem_core/__init__ sets "warn" unless the user
            # chose another); passing log_level here as well makes Taichi warn about the clash.
            flushing = denormals_flushed()
            with contextlib.redirect_stdout(io.StringIO()):
                ti.init(arch=arch, default_fp=ti.f32, offline_cache=True)
            if denormals_flushed() != flushing:
                # ti.init sets flush-to-zero / denormals-are-zero in this thread's FPU control
                # word (MXCSR on x86): every later numpy and torch operation of the user's
                # process would round subnormal numbers to 0. Restore the caller's state.
                torch.set_flush_denormal(flushing)
            _state.update(initialised=True, arch="cuda" if arch == ti.cuda else "cpu", ti=ti)
        return _state["ti"]


def taichi_device_matches(tensor: torch.Tensor) -> bool:
    """True when Taichi (initialised lazily) runs on ``tensor``'s device type."""
    if not taichi_available():
        return False
    get_taichi()
    return tensor.device.type == _state["arch"]
