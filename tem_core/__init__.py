"""tem_core: fast, differentiable transmission electron microscopy simulation.

Stages (data flows one way):
``units -> structure -> specimen -> potential -> propagate -> optics -> detector -> simulate``,
then the inverse stages ``mtf_fit``, ``denoise``, ``reconstruct``.
"""

from tem_core import units

__all__ = ["units"]
__version__ = "0.1.0"
