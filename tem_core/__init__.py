"""tem_core: fast, differentiable transmission electron microscopy simulation.

Stages (data flows one way):
``units -> structure -> specimen -> potential -> propagate -> optics -> detector -> simulate``,
then the inverse stages ``mtf_fit``, ``denoise``, ``reconstruct``.
"""

import os as _os

# Taichi prints a version banner on import; keep it out of notebooks and logs.
_os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")
# ... and an info line ("Graphical python shell detected") in Jupyter kernels.
_os.environ.setdefault("TI_LOG_LEVEL", "warn")
# torch's OpenMP threads spin-wait and starve Taichi's thread pool on small machines; this only
# takes effect when tem_core is imported before torch (the Makefile and runner also set it).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tem_core import units  # noqa: E402

__all__ = ["units"]
__version__ = "0.1.0"
