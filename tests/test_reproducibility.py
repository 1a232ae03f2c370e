"""Reproducibility: the same seed and thread count give the same bits.

Micrographs and tilt series with structured amorphous ice, a holed slab, Poisson noise and a
gradient, simulated twice in one process and in fresh processes with 1 and 2 torch threads
(the Taichi splat gathers per output pixel in a fixed order, and its backward owns each
atom's entries: no atomic additions whose order could vary). The full-size measurement is
``benchmarks/reproducibility.py``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import torch
from conftest import DATA_DIR, REPO_ROOT

from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import IceStructure, PotentialSettings
from tem_core.simulate import Imaging, TiltScheme, micrograph, tilt_series
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import read_structure

SCOPE = Microscope(energy_ev=300e3)


def _specimen(dtype=torch.float32, copies: int = 2):
    model = read_structure(DATA_DIR / "1crn.pdb.gz").centered().to(dtype=dtype)
    return build_specimen(
        model, copies, extent_a=(128.0, 128.0),
        ice=IceSlab(thickness_a=80.0, hole_diameter_a=110.0),
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip


SETTINGS = PotentialSettings(
    shape=(128, 128), sampling_a=1.0, slice_thickness_a=20.0, ice_structure=IceStructure(seed=4)
)


def _micrograph(specimen, method="multislice"):
    return micrograph(
        specimen, potential=SETTINGS, microscope=SCOPE, detector=Detector(),
        imaging=Imaging(defocus_a=1.5e4, dose_e_per_a2=40.0, method=method),
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip


def _gradient(specimen):
    positions = specimen.atoms.positions_a.detach().clone().requires_grad_(True)
    moved = dataclasses.replace(specimen, atoms=specimen.atoms._replace_positions(positions))
    (_micrograph(moved).expected ** 2).sum().backward()
    return positions.grad


def test_micrograph_and_gradient_are_bitwise_repeatable() -> None:
    for dtype in (torch.float32, torch.float64):
        specimen = _specimen(dtype)
        for method in ("multislice", "projection"):
            first, second = _micrograph(specimen, method), _micrograph(specimen, method)
            assert torch.equal(first.counts, second.counts)
            assert torch.equal(first.expected, second.expected)
        assert torch.equal(_gradient(specimen), _gradient(specimen))


def test_tilt_series_is_bitwise_repeatable() -> None:
    scheme = TiltScheme(
        angles_rad=(0.0, -0.5, 0.5), dose_e_per_a2=(10.0,) * 3, defocus_a=(2e4,) * 3
    )
    runs = [
        tilt_series(
            _specimen(), scheme=scheme, potential=SETTINGS, microscope=SCOPE,
            detector=Detector(), generator=torch.Generator().manual_seed(11), progress=False,
        ).stack
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(runs[0], runs[1])


def _hashes_with_threads(threads: int) -> str:
    code = (
        "import hashlib, torch, test_reproducibility as t\n"
        f"torch.set_num_threads({threads})\n"
        "s = t._specimen(torch.float64)\n"
        "r = t._micrograph(s)\n"
        "parts = [r.counts, r.expected, t._gradient(s)]\n"
        # float32 atoms rotated into copies and tilted: BLAS's float32 3 x 3 products round
        # differently with 1 and 2 threads on some CPUs (MKL, AVX-512 EPYC); rotate_points not
        "s32 = t._specimen(torch.float32, copies=3)\n"
        "from tem_core.specimen import tilt_specimen\n"
        "tilted = tilt_specimen(s32, tilt_angle_rad=0.5, tilt_axis_angle_rad=1.2)\n"
        "parts += [s32.atoms.positions_a, tilted.atoms.positions_a, tilted.particle_rotations,\n"
        "          tilted.particle_centers_a, t._micrograph(tilted).expected]\n"
        "print(hashlib.sha256(b''.join(p.numpy().tobytes() for p in parts)).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT / "tests", capture_output=True, text=True,
        env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


def test_one_and_two_threads_give_the_same_bits() -> None:
    """Fresh processes: measured identical at 128² here and at 512² (benchmark), float64
    micrographs and gradients, float32 specimens (copies rotated, tilted) and their images."""
    assert _hashes_with_threads(1) == _hashes_with_threads(2)


def test_tilt_series_unchanged_by_the_shared_mtf_and_releases_beyond_the_bound(monkeypatch):
    """The series (small grid: stage releases deferred; the detector's MTF shared by the
    expected image and the noise) gives the bits of the series whose detector runs
    expected_image and detect apart (the path before the sharing, same generator draws),
    and returns the heap's pages after a tilt only when the heap holds more than
    ``_heap.RETAINED_FREE_HEAP_BYTES`` free: once per tilt beyond, never within."""
    import tem_core.simulate as simulate
    from tem_core import _heap, memory
    from tem_core.detector import detect, expected_image

    scheme = TiltScheme(angles_rad=(0.0, 0.4), dose_e_per_a2=(10.0,) * 2, defocus_a=(2e4,) * 2)
    calls: list[int] = []
    monkeypatch.setattr(memory, "RELEASE_AT_BOUNDARIES", True)
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)

    def series(method):
        return tilt_series(
            _specimen(), scheme=scheme, potential=SETTINGS, microscope=SCOPE, method=method,
            detector=Detector(dqe=0.8), generator=torch.Generator().manual_seed(11),
            progress=False,
        ).stack  # fmt: skip

    def apart(intensity, *, generator=None, **kw):
        counts = None if generator is None else detect(intensity, generator=generator, **kw)
        return expected_image(intensity, **kw), counts

    for method in ("multislice", "projection"):
        calls.clear()
        monkeypatch.setattr(_heap, "free_heap_bytes", lambda: 2 * _heap.RETAINED_FREE_HEAP_BYTES)
        shared = series(method)
        assert len(calls) == len(scheme)
        calls.clear()
        monkeypatch.setattr(_heap, "free_heap_bytes", lambda: _heap.RETAINED_FREE_HEAP_BYTES)
        assert torch.equal(shared, series(method)) and not calls
        with monkeypatch.context() as patch:
            patch.setattr(simulate, "expected_and_detected", apart)
            assert torch.equal(shared, series(method))
