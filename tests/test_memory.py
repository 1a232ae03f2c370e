"""Memory preflight: the estimates against measured peaks (tem_core.memory).

The estimates count the arrays each stage holds at its peak (``benchmarks/memory.py
--explain`` shows them). Measured here with glibc's mmap threshold fixed at 64 kB, so every
array is its own mapping and the rise of the resident set is the memory the arrays need
(the default allocator adds retained heap that varies from run to run; see the benchmark).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, requires_cuda

from tem_core import memory
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import IceStructure, PotentialSettings
from tem_core.propagate import estimate_wave_memory_bytes
from tem_core.simulate import Imaging, atom_slice_range, micrograph, micrograph_memory_bytes
from tem_core.simulate.checks import _atom_load
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import read_structure

# stage:shape:dtype:grad[:variant] as in benchmarks/memory.py; other shapes than the
# benchmark's table (non-square, 384), other configurations (hole, projection, vacuum)
CASES = (
    "micrograph:384x448:float32:0",
    "micrograph:384:float64:1",
    "micrograph:320x384:float32:0:hole",
    "micrograph:384:float32:0:projection",
    "micrograph:384:float32:1:vacuum",
    "mtf:384x320:float32:0:camera",
    "ctf:384:float64:0",
)


@pytest.mark.slow
def test_estimates_within_1_5x_of_the_measured_peak() -> None:
    """Measured: 0.85-1.09 at these sizes (2026-12-02); the target is [1/1.5, 1.5]."""
    done = subprocess.run(
        [sys.executable, "benchmarks/memory.py", "--case", ",".join(CASES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["case"] for r in rows] == list(CASES)
    ratios = {r["case"]: round(r["peak"] / r["estimate"], 3) for r in rows}
    assert all(1 / 1.5 <= v <= 1.5 for v in ratios.values()), ratios


@pytest.fixture(scope="module")
def specimen():
    model = read_structure(REPO_ROOT / "data" / "1crn.pdb.gz", dtype=torch.float64).centered()
    return build_specimen(
        model,
        1,
        extent_a=(64.0, 64.0),
        ice=IceSlab(thickness_a=200.0),
        generator=torch.Generator().manual_seed(3),
    )


SETTINGS = PotentialSettings(shape=(64, 64), sampling_a=1.0, slice_thickness_a=20.0)
SCOPE = Microscope(energy_ev=300e3)


def _with_grad(specimen):
    positions = specimen.atoms.positions_a.detach().clone().requires_grad_(True)
    return dataclasses.replace(specimen, atoms=specimen.atoms._replace_positions(positions))


def test_graph_counted_for_the_slices_holding_atoms(specimen) -> None:
    n, first, last = atom_slice_range(specimen, SETTINGS)
    assert n == 10 and 0 < first <= last < n - 1  # crambin (~30 Å) mid-ice
    px, (real, cplx) = 64 * 64, memory.itemsizes(specimen.atoms.positions_a.dtype)
    atoms, later = last - first + 1, n - 1 - last
    plain = micrograph_memory_bytes(specimen, potential=SETTINGS, microscope=SCOPE)
    grad = micrograph_memory_bytes(_with_grad(specimen), potential=SETTINGS, microscope=SCOPE)
    # the atoms' own arrays differ too (edge fractions kept per slice, their graph): taken out
    plain_atoms, _ = _atom_load(specimen, SETTINGS, "multislice", False, True)
    grad_atoms, _ = _atom_load(specimen, SETTINGS, "multislice", True, True)
    assert grad_atoms["graph"] > 0 and plain_atoms["graph"] == 0
    plain -= plain_atoms["slice"]
    grad -= grad_atoms["slice"] + grad_atoms["graph"]
    # without a graph the loop holds its reused step buffers instead (the slice phase is the
    # peak of both here)
    buffers = px * (
        (memory.BUFFERED_BETWEEN_STEPS_COMPLEX_GRIDS - memory.BETWEEN_STEPS_COMPLEX_GRIDS) * cplx
        + memory.BUFFERED_BETWEEN_STEPS_REAL_GRIDS * real
    )
    plain -= buffers
    # flat slab: the ice-only slices after the atoms are transmitted on one line, no graph
    assert grad == plain + px * atoms * (3 * cplx + 3 * real)
    holed = dataclasses.replace(specimen, ice=IceSlab(thickness_a=200.0, hole_diameter_a=40.0))
    plain = micrograph_memory_bytes(holed, potential=SETTINGS, microscope=SCOPE)
    grad = micrograph_memory_bytes(_with_grad(holed), potential=SETTINGS, microscope=SCOPE)
    plain -= _atom_load(holed, SETTINGS, "multislice", False, True)[0]["slice"]
    holed_atoms, _ = _atom_load(holed, SETTINGS, "multislice", True, True)
    grad -= holed_atoms["slice"] + holed_atoms["graph"]
    assert grad == plain - buffers + px * (atoms * (3 * cplx + 3 * real) + later * cplx)
    with torch.no_grad():  # grad mode off: no graph
        assert micrograph_memory_bytes(
            _with_grad(holed), potential=SETTINGS, microscope=SCOPE
        ) == micrograph_memory_bytes(holed, potential=SETTINGS, microscope=SCOPE)


def test_micrograph_settings_change_the_estimate(specimen) -> None:
    base = micrograph_memory_bytes(specimen, potential=SETTINGS, microscope=SCOPE)
    field = dataclasses.replace(SETTINGS, ice_structure=IceStructure())
    assert micrograph_memory_bytes(specimen, potential=field, microscope=SCOPE) > 10 * base
    filtered = Microscope(energy_ev=300e3, energy_filter=True)
    assert micrograph_memory_bytes(specimen, potential=SETTINGS, microscope=filtered) < base
    f32 = dataclasses.replace(specimen, atoms=specimen.atoms.to(dtype=torch.float32))
    assert micrograph_memory_bytes(f32, potential=SETTINGS, microscope=SCOPE) < base / 1.5


def test_multislice_estimate_is_the_micrograph_model() -> None:
    """One model: propagate's estimate is tem_core.memory.multislice_bytes."""
    for dtype in (torch.complex64, torch.complex128, torch.float32):
        for grad in (False, True):
            assert estimate_wave_memory_bytes(
                (96, 80), dtype, n_slices=7, requires_grad=grad
            ) == memory.multislice_bytes((96, 80), dtype, n_slices=7, requires_grad=grad)


def test_tilt_series_preflight_counts_the_stored_images(specimen) -> None:
    from tem_core import simulate

    scheme = simulate.tilt_scheme(
        "uniform", min_angle_rad=-0.5, max_angle_rad=0.5, step_rad=0.5, total_dose_e_per_a2=30.0,
        defocus_a=1e4,
    )  # fmt: skip
    huge = dataclasses.replace(SETTINGS, shape=(60_000, 60_000))
    with pytest.raises(memory.MemoryPreflightError, match=r"and 3 stored images needs about"):
        simulate.tilt_series(
            specimen, scheme=scheme, potential=huge, microscope=SCOPE, detector=Detector()
        )


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("grad", [False, True])
def test_cuda_peak_within_1_5x(specimen, grad: bool) -> None:
    """On CUDA the peak is torch.cuda.max_memory_allocated (the caching allocator)."""
    dev = torch.device("cuda")
    model = read_structure(REPO_ROOT / "data" / "1crn.pdb.gz").centered().to(device=dev)
    spec = build_specimen(
        model, 1, extent_a=(1024.0, 1024.0), ice=IceSlab(thickness_a=200.0),
        generator=torch.Generator(device=dev).manual_seed(1),
    )  # fmt: skip
    if grad:
        spec = _with_grad(spec)
    settings = dataclasses.replace(SETTINGS, shape=(1024, 1024), backend="torch")
    imaging = Imaging(defocus_a=1e4, dose_e_per_a2=40.0)
    micrograph(spec, potential=settings, microscope=SCOPE, detector=Detector(), imaging=imaging)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    out = micrograph(
        spec, potential=settings, microscope=SCOPE, detector=Detector(), imaging=imaging
    )
    if grad:
        out.expected.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(dev) - base
    estimate = micrograph_memory_bytes(spec, potential=settings, microscope=SCOPE)
    assert 1 / 1.5 <= peak / estimate <= 1.5, (peak, estimate)


def test_map_large_allocations_returns_freed_arrays_to_the_system() -> None:
    """In a subprocess (process-wide setting): after the call a freed 16 MB array leaves
    the resident set, also the second time (glibc's default would keep it in the heap)."""
    code = (
        "import torch\n"
        "from tem_core.memory import map_large_allocations\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'): return int(line.split()[1]) * 1024\n"
        "print(map_large_allocations())\n"
        "x = torch.ones(4 * 2**20); x.sum(); del x\n"  # warm-up: torch's lazy start-up
        "base = rss()\n"
        "for _ in range(3):\n"
        "    x = torch.ones(4 * 2**20); del x\n"
        "print(rss() - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    was_set, grown = done.stdout.split()
    if was_set != "True":
        pytest.skip("no glibc mallopt here")
    # the 16 MB array is back each time (measured after the warm-up: under 1 MB; without
    # it a fresh clone once grew 7 MB from torch's own start-up allocations)
    assert int(grown) < 4 * 2**20


def test_release_free_memory_returns_freed_heap_blocks_without_a_setting() -> None:
    """In a subprocess with glibc's defaults: once a freed 24 MB array has raised the
    dynamic mmap threshold, 16 MB arrays come from the heap and, freed below a block still
    in use, stay resident; the stages' release (malloc_trim) gives them back, and changes
    no allocator setting."""
    code = (
        "import torch\n"
        "from tem_core.memory import release_free_memory\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'): return int(line.split()[1]) * 1024\n"
        "x = torch.ones(6 * 2**20); x.sum(); del x\n"  # raises the threshold to 24 MB
        "base = rss()\n"
        "xs = [torch.ones(4 * 2**20) for _ in range(4)]\n"  # 4 x 16 MB from the heap
        "pin = torch.ones(2**18)\n"  # 1 MB above them: the heap's top stays in use
        "del xs\n"
        "kept = rss() - base\n"
        "released = release_free_memory()\n"
        "print(kept, released, rss() - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        env={k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO_ROOT)}.items()
             if not k.startswith("MALLOC_")},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept, released, after = done.stdout.split()
    if released != "True":
        pytest.skip("no glibc malloc_trim here")
    # measured: 64 MB kept by the heap, under 1 MB after the release
    assert int(kept) > 32 * 2**20
    assert int(after) < 4 * 2**20


def test_releasing_passes_items_and_gradients_through() -> None:
    """The stream wrapper yields the same tensors, and its backward hook (a release between
    the backward's steps) leaves the gradient bitwise unchanged."""
    items = [torch.ones(3), torch.zeros(2)]
    assert all(a is b for a, b in zip(memory.releasing(items), items, strict=True))
    x = torch.linspace(0.0, 1.0, 5, dtype=torch.float64, requires_grad=True)
    (sum(y * y for y in memory.releasing([x, 2 * x])) ** 2).sum().backward()
    plain = x.detach().clone().requires_grad_(True)
    (sum(y * y for y in [plain, 2 * plain]) ** 2).sum().backward()
    assert torch.equal(x.grad, plain.grad)


def test_backward_releases_between_multislice_steps(monkeypatch) -> None:
    """Backward returns heap pages at every multislice step (a hook on each step's wave and
    on its product with the transmission function), not only at the slices that require
    grad; gradients are unchanged."""
    from tem_core.propagate import multislice

    calls = []
    monkeypatch.setattr(memory, "RELEASE_AT_BOUNDARIES", True)  # map_large_allocations: off
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    g = torch.Generator().manual_seed(0)
    v = torch.rand(4, 16, 16, generator=g, dtype=torch.float64)
    v0 = v[0].clone().requires_grad_(True)  # only the first slice requires grad

    def wave_sum(first):
        slices = [first, *v[1:]]
        psi = multislice(slices, sampling_a=1.0, slice_thickness_a=10.0, energy_ev=3e5)
        return psi.abs().square().mul(torch.arange(256.0, dtype=torch.float64).view(16, 16))

    out = wave_sum(v0).sum()
    calls.clear()
    (grad,) = torch.autograd.grad(out, v0)
    assert len(calls) >= 2 * 4 - 1  # the product and the wave of every step
    monkeypatch.setattr(memory, "RELEASE_AT_BOUNDARIES", False)
    v1 = v[0].clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(wave_sum(v1).sum(), v1)
    assert torch.equal(grad, plain)


def test_atom_load_counts_the_atoms_each_slice_streams() -> None:
    """The preflight's atoms per slice (z ± each atom's window radius) are the atoms
    potential.iter_slice_potentials selects for each slice; with many atoms the estimate
    grows by the per-atom arrays, and the band kernel's slices carry no edge fractions."""
    from tem_core.potential import slice_edges_a
    from tem_core.potential.kernels import window_size_px
    from tem_core.potential.streaming import _Prepared

    g = torch.Generator().manual_seed(5)
    model = read_structure(REPO_ROOT / "data" / "1crn.pdb.gz", dtype=torch.float64).centered()
    spec = build_specimen(model, 4, extent_a=(96.0, 96.0), ice=IceSlab(thickness_a=150.0),
                          generator=g)  # fmt: skip
    settings = PotentialSettings(shape=(96, 96), sampling_a=1.0, slice_thickness_a=10.0)
    load, band = _atom_load(spec, settings, "multislice", False, True)
    prepared = _Prepared(spec, settings)
    edges = slice_edges_a(spec, settings).tolist()
    counts = [prepared.select(prepared.atoms, a, b)[0].shape[0]
              for a, b in zip(edges[:-1], edges[1:], strict=True)]  # fmt: skip
    n = len(spec.atoms)
    real = 8
    temporaries = memory.SLICE_REALS_PER_ATOM * real + memory.SLICE_BYTES_PER_ATOM
    assert load["stream"] == n * (
        (memory.STREAM_REALS_PER_ATOM + memory.STREAM_SOLVENT_REALS_PER_ATOM) * real
        + memory.STREAM_BYTES_PER_ATOM
    )
    # the largest slice: max(counts) atoms, below the band kernel's threshold, so splatted
    # with (N, 5, W) edge fractions (reused buffers with headroom, or kept with a graph)
    assert not band and max(counts) < 0.1 * 96 * 96
    window = window_size_px(float(prepared.atoms[3].max()), 1.0)
    edge_bytes = 2 * 5 * window * real
    assert load["slice"] == max(counts) * temporaries + int(
        memory.SCRATCH_HEADROOM * max(counts) * edge_bytes
    )
    grad_load, _ = _atom_load(spec, settings, "multislice", True, True)
    assert grad_load["graph"] == sum(counts) * (
        memory.GRAPH_REALS_PER_ATOM_SLICE * real + memory.GRAPH_BYTES_PER_ATOM_SLICE + edge_bytes
    )
    # the projection of all atoms at once: one call with every atom, band kernel when dense
    dense, band = _atom_load(spec, dataclasses.replace(settings, shape=(32, 32)), "projection",
                             False, True)  # fmt: skip
    assert band and dense["slice"] == n * (memory.PROJECTION_REALS_PER_ATOM * real
                                           + memory.PROJECTION_BYTES_PER_ATOM)  # fmt: skip
