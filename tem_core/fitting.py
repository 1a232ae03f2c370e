"""Small building blocks for fitting simulator parameters by gradient descent (inverse stage).

The simulator is differentiable end to end, so any continuous parameter can be recovered from
an image by minimising a loss with a first-order optimiser. This module holds the few pieces
that every such fit repeats:

* :func:`rotation_from_rotvec` and :func:`posed`: a particle's orientation and position as
  six unconstrained numbers (axis-angle vector [rad], shift [Å]), differentiable;
* :func:`poisson_nll`: the negative log-likelihood of detector counts given expected counts,
  the statistically right loss for shot noise;
* :func:`central_difference`: the finite-difference reference that autograd is checked
  against;
* :func:`fit`: an Adam loop over named parameters, each optimised in units of its own scale
  (so that a defocus in Å and an angle in rad take comparable steps), recording the loss and
  every parameter at each step.

Pure torch, following the device and dtype of the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from tem_core.structure import AtomicModel
from tem_core.validation import require_integer, require_positive

__all__ = [
    "FitHistory",
    "central_difference",
    "fit",
    "poisson_nll",
    "posed",
    "rotation_from_rotvec",
]


def rotation_from_rotvec(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``exp([ω]×)`` of an axis-angle vector ``ω`` [rad] (differentiable).

    The rotation is by ``|ω|`` [rad] about ``ω/|ω|``, right-handed; ``ω = 0`` is the identity
    (with a finite gradient there, unlike a Rodrigues formula that divides by ``|ω|``).

    Parameters
    ----------
    rotvec
        ``(3,)`` axis-angle vector [rad].

    Returns
    -------
    Tensor
        ``(3, 3)`` rotation matrix, same dtype and device as ``rotvec``.
    """
    if not isinstance(rotvec, torch.Tensor):
        raise TypeError(f"rotvec must be a torch.Tensor, got {type(rotvec).__name__}")
    if tuple(rotvec.shape) != (3,):
        raise ValueError(f"rotvec must have shape (3,), got {tuple(rotvec.shape)}")
    wx, wy, wz = rotvec.unbind()
    zero = torch.zeros_like(wx)
    skew = torch.stack(
        [torch.stack([zero, -wz, wy]), torch.stack([wz, zero, -wx]), torch.stack([-wy, wx, zero])]
    )
    return torch.linalg.matrix_exp(skew)


def posed(
    model: AtomicModel,
    *,
    rotvec: torch.Tensor,
    shift_a: torch.Tensor,
    center_a: torch.Tensor | None = None,
) -> AtomicModel:
    """``model`` rotated by ``rotvec`` about ``center_a`` and shifted: ``x' = R(x − c) + c + t``.

    Parameters
    ----------
    model
        Atomic model (positions [Å]).
    rotvec
        ``(3,)`` axis-angle rotation [rad] (:func:`rotation_from_rotvec`).
    shift_a
        ``(3,)`` translation [Å].
    center_a
        ``(3,)`` centre of rotation [Å]; default the model's geometric centre (detached, so
        that gradients wrt the atoms are those of a rigid motion about a fixed point).

    Returns
    -------
    AtomicModel
        The moved model, differentiable wrt ``rotvec``, ``shift_a`` and the positions.
    """
    pos = model.positions_a
    rotvec = torch.as_tensor(rotvec).to(device=pos.device, dtype=pos.dtype)
    shift = torch.as_tensor(shift_a).to(device=pos.device, dtype=pos.dtype)
    if tuple(shift.shape) != (3,):
        raise ValueError(f"shift_a must have shape (3,), got {tuple(shift.shape)}")
    centre = model.center_a().detach() if center_a is None else torch.as_tensor(center_a)
    centre = centre.to(device=pos.device, dtype=pos.dtype)
    rotation = rotation_from_rotvec(rotvec)
    return model.transformed(rotation, centre - rotation @ centre + shift)


def poisson_nll(counts: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Poisson negative log-likelihood ``Σ (λ − k log λ)`` without the constant ``log k!``.

    Parameters
    ----------
    counts
        Observed counts ``k`` [counts] (detached).
    expected
        Expected counts ``λ > 0`` [counts], broadcastable to ``counts``; carries the graph.

    Returns
    -------
    Tensor
        0-d loss [nats]; its minimum over ``λ`` is at ``λ = k``.
    """
    if not isinstance(expected, torch.Tensor) or not isinstance(counts, torch.Tensor):
        raise TypeError("counts and expected must be torch.Tensors")
    lowest = float(expected.detach().min()) if expected.numel() else 1.0
    if not lowest > 0:
        raise ValueError(f"expected must be > 0 counts everywhere, got minimum {lowest} counts")
    return (expected - counts.detach() * torch.log(expected)).sum()


def central_difference(
    function: Callable[[torch.Tensor], torch.Tensor], value: torch.Tensor, step: float
) -> torch.Tensor:
    """``(f(θ + h) − f(θ − h)) / 2h`` for a scalar parameter ``θ`` (any output shape).

    Parameters
    ----------
    function
        Maps a 0-d tensor ``θ`` to a tensor (a loss or a whole image).
    value
        ``θ`` (0-d tensor, in the unit ``function`` expects).
    step
        ``h`` > 0, same unit as ``value``; its truncation error is O(h²).
    """
    require_positive("step", step)
    value = torch.as_tensor(value).detach()
    if value.ndim != 0:
        raise ValueError(f"value must be a 0-d tensor, got shape {tuple(value.shape)}")
    with torch.no_grad():
        return (function(value + step) - function(value - step)) / (2.0 * step)


@dataclass
class FitHistory:
    """Loss and parameter values at every step of :func:`fit` (step 0 = initial values).

    ``values[name]`` is a list of detached CPU tensors (one per step); :meth:`final` returns
    the last ones.
    """

    loss: list[float] = field(default_factory=list)
    values: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    seconds: float = 0.0

    def final(self) -> dict[str, torch.Tensor]:
        """The parameter values after the last step."""
        return {name: trace[-1] for name, trace in self.values.items()}

    def trace(self, name: str) -> torch.Tensor:
        """``(steps + 1, ...)`` values of parameter ``name``."""
        if name not in self.values:
            raise KeyError(f"name must be one of {sorted(self.values)}, got {name!r}")
        return torch.stack(self.values[name])


def fit(
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    initial: Mapping[str, float | torch.Tensor],
    *,
    scales: Mapping[str, float],
    steps: int,
    learning_rate: float = 0.05,
    callback: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> FitHistory:
    """Minimise ``loss_fn(params)`` with Adam, each parameter in units of its scale.

    The optimiser works on ``u = θ / scale``, so ``learning_rate`` is the largest step per
    iteration as a fraction of each parameter's scale (Adam's steps are about
    ``learning_rate`` in ``u``). A cosine schedule lowers it to zero over ``steps``.

    Parameters
    ----------
    loss_fn
        Maps ``{name: θ}`` (tensors carrying the graph, in their physical units) to a 0-d
        loss.
    initial
        Starting values ``{name: θ0}`` (floats or tensors, physical units).
    scales
        ``{name: scale}`` > 0, a typical size of the error on each parameter (same unit).
    steps
        Number of Adam steps (≥ 1).
    learning_rate
        Adam's learning rate in units of the scales.
    callback
        Called as ``callback(step, params)`` after every step (e.g. to stop early by raising).

    Returns
    -------
    FitHistory
        Losses (``steps + 1`` values: the last one is evaluated at the final parameters) and
        parameter traces.
    """
    import time

    require_integer("steps", steps, minimum=1)
    require_positive("learning_rate", learning_rate)
    if set(scales) != set(initial):
        raise ValueError(
            f"scales must name the same parameters as initial ({sorted(initial)}), "
            f"got {sorted(scales)}"
        )
    for name, scale in scales.items():
        require_positive(f"scales[{name!r}]", scale)
    start = time.perf_counter()
    u = {
        name: (torch.as_tensor(value).detach().clone() / scales[name]).requires_grad_(True)
        for name, value in initial.items()
    }
    optimiser = torch.optim.Adam(list(u.values()), lr=learning_rate)
    history = FitHistory(values={name: [] for name in u})

    def params() -> dict[str, torch.Tensor]:
        return {name: u[name] * scales[name] for name in u}

    def record(loss: torch.Tensor, current: dict[str, torch.Tensor]) -> None:
        history.loss.append(float(loss.detach()))
        for name, value in current.items():
            history.values[name].append(value.detach().cpu().clone())

    for step in range(steps):
        lr = 0.5 * learning_rate * (1.0 + math.cos(math.pi * step / steps))
        for group in optimiser.param_groups:
            group["lr"] = lr
        optimiser.zero_grad()
        current = params()
        loss = loss_fn(current)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a 0-d tensor, got shape {tuple(loss.shape)}")
        record(loss, current)
        loss.backward()
        optimiser.step()
        if callback is not None:
            callback(step, {name: value.detach() for name, value in params().items()})
    with torch.no_grad():
        current = params()
        record(loss_fn(current), current)
    history.seconds = time.perf_counter() - start
    return history
