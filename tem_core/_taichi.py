"""Lazy, once-per-process Taichi initialisation.

``ti.init(arch=ti.gpu)`` segfaults on CPU-only machines with Mesa EGL, so the
architecture is chosen explicitly: CUDA when torch sees a GPU, else the CPU
(x64/arm64) backend. Taichi can only run on one architecture per process, so
kernels whose tensors live on another device fall back to their torch twin
(see :func:`taichi_device_matches`).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading

import torch

_lock = threading.Lock()
_state: dict[str, object] = {"initialised": False, "arch": None, "ti": None}


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
            with contextlib.redirect_stdout(io.StringIO()):
                ti.init(arch=arch, default_fp=ti.f32, offline_cache=True)
            _state.update(initialised=True, arch="cuda" if arch == ti.cuda else "cpu", ti=ti)
        return _state["ti"]


def taichi_device_matches(tensor: torch.Tensor) -> bool:
    """True when Taichi (initialised lazily) runs on ``tensor``'s device type."""
    if not taichi_available():
        return False
    get_taichi()
    return tensor.device.type == _state["arch"]
