"""Every linear operator of tem_core, listed once, for tests/test_operators.py (deepinv style).

An entry is one call, ``register("name", factory)``, where ``factory(device)`` returns a
:class:`LinearOperator` on a tiny grid in float64 / complex128. ``adjoint=None`` means the
operator's own backward (a hand-written adjoint kernel behind ``torch.autograd.Function``) is
the adjoint under test; otherwise ``adjoint`` is an independent formula and the tests also
check that autograd's vector-Jacobian product agrees with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tem_core import units
from tem_core._fft import fft2, ifft2
from tem_core.detector import Detector, apply_mtf
from tem_core.optics import Microscope, apply_ctf, ctf
from tem_core.propagate import apply_bandlimit, bandlimit_mask, fresnel_propagator, multislice_step

F64, C128 = torch.float64, torch.complex128


@dataclass(frozen=True)
class LinearOperator:
    """``forward: x -> A x`` on inputs of ``in_shape`` / ``in_dtype``; ``adjoint: y -> Aᴴ y``."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    in_shape: tuple[int, ...]
    in_dtype: torch.dtype
    adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None


REGISTRY: dict[str, Callable[[torch.device], LinearOperator]] = {}


def register(name: str, factory: Callable[[torch.device], LinearOperator]) -> None:
    """Add an operator (one line per operator; names are unique)."""
    if name in REGISTRY:
        raise ValueError(f"operator {name!r} is registered twice")
    REGISTRY[name] = factory


SHAPE = (6, 7)  # odd and even sizes: Nyquist bins and asymmetric grids both occur
SAMPLING_A = 1.3
ENERGY_EV = 300.0 * units.KV_TO_EV


def _mtf(device: torch.device) -> LinearOperator:
    mtf = Detector(a=0.6, b=0.3, c=0.1, alpha=8.0, beta=30.0).mtf(SHAPE, device=device, dtype=F64)
    op = lambda x: apply_mtf(x, mtf)  # noqa: E731
    return LinearOperator(op, (2, *SHAPE), F64, adjoint=op)  # real and even: self-adjoint


def _ctf(device: torch.device) -> LinearOperator:
    kw = dict(
        sampling_a=SAMPLING_A,
        microscope=Microscope(
            energy_ev=ENERGY_EV, objective_aperture_rad=5e-3, illumination_semiangle_rad=1e-4
        ),
        defocus_a=1.2e4,
        astigmatism_a=800.0,
        astigmatism_angle_rad=0.4,
    )
    h = ctf(SHAPE, device=device, dtype=C128, **kw)
    return LinearOperator(
        lambda x: apply_ctf(x, **kw),
        SHAPE,
        C128,
        adjoint=lambda y: ifft2(fft2(y) * h.conj()),
    )


def _fresnel(device: torch.device) -> LinearOperator:
    def prop(dz):
        p = fresnel_propagator(
            SHAPE, sampling_a=SAMPLING_A, thickness_a=dz, energy_ev=ENERGY_EV, device=device,
            dtype=C128,
        )  # fmt: skip
        return lambda x: ifft2(fft2(x) * p)

    # propagating by -dz undoes +dz inside the aperture: the adjoint of a unitary map
    return LinearOperator(prop(25.0), SHAPE, C128, adjoint=prop(-25.0))


def _bandlimit(device: torch.device) -> LinearOperator:
    mask = bandlimit_mask(SHAPE, bandlimit_fraction=2.0 / 3.0, device=device)
    op = lambda x: apply_bandlimit(x, mask)  # noqa: E731
    return LinearOperator(op, SHAPE, C128, adjoint=op)


def _multislice_step(device: torch.device) -> LinearOperator:
    g = torch.Generator().manual_seed(11)
    phase = torch.rand(SHAPE, generator=g, dtype=F64).to(device)
    t = torch.polar(torch.ones_like(phase), phase)
    p = fresnel_propagator(
        SHAPE, sampling_a=SAMPLING_A, thickness_a=10.0, energy_ev=ENERGY_EV, device=device,
        dtype=C128,
    )  # fmt: skip
    return LinearOperator(
        lambda x: multislice_step(x, t, p),
        SHAPE,
        C128,
        adjoint=lambda y: t.conj() * ifft2(fft2(y) * p.conj()),
    )


def _splat(backend: str) -> Callable[[torch.device], LinearOperator]:
    """The potential splat, linear in the per-atom Gaussian weights ``w`` (N, K)."""

    def factory(device: torch.device) -> LinearOperator:
        from tem_core.potential.kernels import splat_taichi, splat_torch

        g = torch.Generator().manual_seed(12)
        n, k, win = 5, 3, 4
        dx = torch.rand(n, k, win, generator=g, dtype=F64)
        dy = torch.rand(n, k, win, generator=g, dtype=F64)
        kx0 = torch.randint(0, SHAPE[1], (n,), generator=g)
        ky0 = torch.randint(0, SHAPE[0], (n,), generator=g)
        wins = torch.randint(1, win + 1, (n,), generator=g)
        offsets = torch.arange(win)
        inside = (offsets[None, :] < wins[:, None]).to(F64)[:, None, :]
        dx, dy = dx * inside, dy * inside  # zero beyond each window, as project_gaussians makes
        fixed = [t.to(device) for t in (dx, dy, kx0, ky0, wins)]
        splat = splat_taichi if backend == "taichi" else splat_torch
        return LinearOperator(lambda w: splat(w, *fixed, *SHAPE), (n, k), F64)

    return factory


def _tomography(axis_rad: float, *, transpose: bool = False):
    """The strip-kernel tilt-series projector (volume -> stack) or its back-projector."""

    def factory(device: torch.device) -> LinearOperator:
        from tem_core.reconstruct import TiltGeometry, TomographyOperator

        g = TiltGeometry(
            angles_rad=(-0.9, -0.2, 0.4, 1.0), detector_shape=(5, 5), pixel_size_a=2.0,
            thickness_a=6.0, tilt_axis_angle_rad=axis_rad,
        )  # fmt: skip
        op = TomographyOperator(g, device=device, dtype=F64, chunk_slices=2)
        if transpose:
            return LinearOperator(op.T, (g.n_tilts, *g.detector_shape), F64)
        return LinearOperator(op, g.volume_shape, F64)

    return factory


register("mtf", _mtf)
register("ctf", _ctf)
register("fresnel_propagator", _fresnel)
register("bandlimit", _bandlimit)
register("multislice_step", _multislice_step)
register("splat_torch", _splat("torch"))
register("splat_taichi", _splat("taichi"))
register("tomography_projector", _tomography(0.5 * math.pi))
register("tomography_projector_rotated", _tomography(0.4))
register("tomography_backprojector", _tomography(0.4, transpose=True))

# Measured (float64, this grid): adjointness gaps <= 1.2e-16 relative (multislice_step),
# linearity and vjp-vs-adjoint errors of the same order. 1e-14 is ~100x that: a real error (a
# wrong sign, factor, conjugate or index) is many orders of magnitude larger.
RELATIVE_TOLERANCE = 1e-14
