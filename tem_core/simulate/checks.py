"""Checks and run settings of :mod:`tem_core.simulate`: the cheap preflight before any work
(energies, specimen vs grid, CTF sampling, memory) and the thread count of small grids."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from tem_core import memory
from tem_core.optics import Microscope
from tem_core.potential import PotentialSettings, check_specimen_grid, slice_edges_a
from tem_core.propagate import check_ctf_sampling
from tem_core.specimen import Specimen


def _plain_values(value: float | torch.Tensor) -> tuple[float, ...]:
    """A float or tensor parameter as plain floats (detached), for checks only."""
    if isinstance(value, torch.Tensor):
        return tuple(value.detach().double().reshape(-1).cpu().tolist()) or (0.0,)
    return (float(value),)


def _preflight(
    potential: PotentialSettings,
    device: torch.device,
    microscope: Microscope,
    specimen: Specimen | None = None,
    defocus_a: Sequence[float] = (),
    astigmatism_a: float = 0.0,
) -> None:
    """Cheap checks before any work: energies, specimen vs grid, CTF sampling, memory."""
    if not isinstance(potential, PotentialSettings):
        raise TypeError(f"potential must be a PotentialSettings, got {type(potential).__name__}")
    if not isinstance(microscope, Microscope):
        raise TypeError(f"microscope must be a Microscope, got {type(microscope).__name__}")
    potential.at_energy(microscope.energy_ev)  # before the memory check: a cheap mistake first
    if specimen is not None and not isinstance(specimen, Specimen):
        raise TypeError(f"specimen must be a Specimen, got {type(specimen).__name__}")
    if specimen is not None:
        atoms = specimen.atoms
        grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (atoms.positions_a, atoms.b_factors_a2, atoms.occupancies)
        )
        n_slices = len(slice_edges_a(specimen, potential)) - 1 if grad else 1
        ny, nx = potential.shape
        memory.require_memory(
            f"a {ny} x {nx} {atoms.positions_a.dtype} micrograph"
            + (f" with gradients over {n_slices} slices" if grad else ""),
            memory.micrograph_bytes(
                potential.shape, atoms.positions_a.dtype, n_slices=n_slices, requires_grad=grad
            ),
            device,
            "use a smaller grid, float32, or fewer slices per backward pass",
        )
        check_specimen_grid(specimen, potential.shape, potential.sampling_a)
    if defocus_a:
        worst = max(defocus_a, key=lambda d: abs(float(d)))
        check_ctf_sampling(
            potential.shape,
            sampling_a=potential.sampling_a,
            energy_ev=microscope.energy_ev,
            defocus_a=float(worst),
            cs_a=float(microscope.cs_a),
            astigmatism_a=float(astigmatism_a),
            stacklevel=4,
        )


#: Grids of at most this many pixels are imaged with one torch thread on CPU in a tilt
#: series: their FFTs and elementwise operations are too small to gain from a second thread,
#: and on a loaded 2-core machine the threads' contention made a 400² FFT 8× slower
#: (10.3 ms instead of 1.2 ms, ``benchmarks/vs_temsim.py`` notes); Taichi keeps its threads.
SINGLE_THREAD_MAX_PIXELS = 512 * 512


@contextlib.contextmanager
def _small_grid_threads(potential: PotentialSettings, device: torch.device | None):
    ny, nx = potential.shape
    small = ny * nx <= SINGLE_THREAD_MAX_PIXELS and (device is None or device.type == "cpu")
    previous = torch.get_num_threads()
    if not small or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
