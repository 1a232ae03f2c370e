"""Whether autograd follows a tensor: the one test behind the package's in-place paths.

Helper module (no physics stage imported). The paths that save grids by computing in place
(the buffered multislice step, the CTF and the parametric MTF built in place, the solvent
lengths) give the same bits as their expression forms, but ``out=`` and in-place operations
would cut a graph, drop a forward-mode tangent or fail under a torch.func transform, so each
takes its expression form where :func:`autograd_follows` is True.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwad


def autograd_follows(*values: object) -> bool:
    """Whether autograd follows any of ``values``: a tensor that requires grad (in grad
    mode), carries a forward-mode tangent (``torch.autograd.forward_ad``, whose tangents
    ``out=`` functions refuse) or is wrapped by a torch.func transform; ``None`` and other
    non-tensors do not count."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    for t in values:
        if not isinstance(t, torch.Tensor):
            continue
        if torch.is_grad_enabled() and t.requires_grad:
            return True
        if fwad.unpack_dual(t).tangent is not None:
            return True
        if wrapped is not None and wrapped(t):
            return True
    return False
