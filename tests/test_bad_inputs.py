"""Catalogue of bad inputs and faults (issue #13): every case asserts the error (or warning)
type and the words of its message, so an unattended batch run never gets a silent wrong
result or a raw error from deep inside torch, Taichi or mrcfile.

Sections: files (MRC, IMOD angles, SerialEM .mdoc, PDB), parameters (dtype and device rules,
grids, optics, specimen vs grid), outputs, faults (kill and resume at every stage of a
write, resume with other settings, Taichi's floating-point state).
"""

from __future__ import annotations

import dataclasses
import io
import math
import subprocess
import sys
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from conftest import DATA_DIR, REPO_ROOT

from tem_core import io as tio
from tem_core import memory, simulate
from tem_core.detector import Detector
from tem_core.io import manifest as io_manifest
from tem_core.optics import Microscope, ctf
from tem_core.potential import PotentialSettings, iter_slice_potentials, slice_potential
from tem_core.propagate import (
    SamplingWarning,
    check_ctf_sampling,
    estimate_wave_memory_bytes,
    fresnel_propagator,
    multislice,
    plane_wave,
)
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import AtomicModel, read_structure
from tem_core.validation import require_float_dtype, require_integer, require_static_float

DEG = math.pi / 180
E300 = 300e3


# --- helpers -----------------------------------------------------------------------------------


def _mrc_bytes(shape=(8, 8)) -> bytes:
    """A minimal float32 MRC2014 file in memory (for truncated copies)."""
    buffer = io.BytesIO()
    header = np.zeros(256, dtype=np.int32)
    header[0:3] = (shape[1], shape[0], 1)
    header[3] = 2  # mode: float32
    header[7:10] = (shape[1], shape[0], 1)
    raw = bytearray(header.tobytes())
    cell = np.array([shape[1], shape[0], 1], dtype=np.float32).tobytes()
    raw[40:52] = cell
    raw[64:76] = np.array([1, 2, 3], dtype=np.int32).tobytes()
    raw[208:212] = b"MAP "
    raw[212:216] = bytes([0x44, 0x44, 0, 0])
    buffer.write(bytes(raw))
    buffer.write(np.zeros(shape, dtype=np.float32).tobytes())
    return buffer.getvalue()


def _write_mrc_variant(tmp_path: Path, kind: str) -> Path:
    good = tmp_path / "good.mrc"
    tio.write_mrc(good, np.ones((8, 8), dtype=np.float32), voxel_size_a=1.5)
    data = good.read_bytes()
    path = tmp_path / f"{kind}.mrc"
    if kind == "unknown_mode":
        raw = bytearray(data)
        raw[12:16] = (99).to_bytes(4, "little")
        path.write_bytes(bytes(raw))
    elif kind == "truncated":
        path.write_bytes(data[:-10])
    elif kind == "header_only":
        path.write_bytes(data[:1024])
    elif kind == "short_header":
        path.write_bytes(data[:100])
    elif kind == "text":
        path.write_text("this is not an MRC file\n" * 60)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "nan":
        with mrcfile.new(str(path), overwrite=True) as mrc:
            mrc.set_data(np.full((4, 4), np.nan, dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def tiny_specimen():
    """One crambin in 40 Å of ice on a 32 x 32 grid at 2 Å (field 64 Å)."""
    model = read_structure(DATA_DIR / "1crn.pdb.gz").centered()
    return build_specimen(
        model,
        1,
        extent_a=(64.0, 64.0),
        ice=IceSlab(thickness_a=40.0),
        generator=torch.Generator().manual_seed(2),
    )


TINY = PotentialSettings(shape=(32, 32), sampling_a=2.0, slice_thickness_a=20.0)
SCOPE = Microscope(energy_ev=E300)


def _scheme(defocus_a: float = 5000.0) -> simulate.TiltScheme:
    return simulate.tilt_scheme(
        "dose-symmetric",
        min_angle_rad=-20 * DEG,
        max_angle_rad=20 * DEG,
        step_rad=20 * DEG,
        total_dose_e_per_a2=30.0,
        defocus_a=defocus_a,
    )


def _series(specimen, seed=5, **kw):
    args = dict(
        scheme=_scheme(),
        potential=TINY,
        microscope=SCOPE,
        detector=Detector(),
        method="projection",
        progress=False,
    )
    args.update(kw)
    return simulate.tilt_series(specimen, generator=torch.Generator().manual_seed(seed), **args)


@pytest.fixture(scope="module")
def reference_series(tiny_specimen):
    return _series(tiny_specimen)


# --- files: MRC --------------------------------------------------------------------------------

MRC_CASES = [
    ("unknown_mode", ValueError, r"unknown_mode\.mrc is not a readable MRC file.*mode '99'"),
    ("truncated", ValueError, r"truncated\.mrc is not a readable MRC file.*data block"),
    ("header_only", ValueError, r"header_only\.mrc is not a readable MRC file.*data block"),
    ("short_header", ValueError, r"short_header\.mrc is not a readable MRC file.*header"),
    ("text", ValueError, r"text\.mrc is not a readable MRC file"),
    ("empty", ValueError, r"empty\.mrc is not a readable MRC file \(0 bytes\)"),
    ("nan", ValueError, r"nan\.mrc holds non-finite values"),
]


@pytest.mark.parametrize(("kind", "error", "match"), MRC_CASES, ids=[c[0] for c in MRC_CASES])
def test_read_mrc_rejects_malformed_files(tmp_path, kind, error, match) -> None:
    path = _write_mrc_variant(tmp_path, kind)
    with pytest.raises(error, match=match):
        tio.read_mrc(path)


def test_read_mrc_missing_and_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MRC file .*nothere\.mrc does not exist"):
        tio.read_mrc(tmp_path / "nothere.mrc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tio.read_mrc(tmp_path)


def test_read_mrc_old_file_without_map_id_needs_permissive(tmp_path) -> None:
    good = tmp_path / "g.mrc"
    tio.write_mrc(good, np.arange(16, dtype=np.float32).reshape(4, 4), voxel_size_a=2.0)
    raw = bytearray(good.read_bytes())
    raw[208:212] = b"\0\0\0\0"  # IMOD < 4 wrote no MAP ID
    old = tmp_path / "old.mrc"
    old.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"old\.mrc is not a readable MRC file .*Map ID string"):
        tio.read_mrc(old)
    with pytest.warns(UserWarning, match=r"old\.mrc read permissively: Map ID string not found"):
        data, voxel = tio.read_mrc(old, permissive=True)
    assert data.shape == (4, 4) and voxel == pytest.approx(2.0)


@pytest.mark.parametrize("kind", ["unknown_mode", "truncated", "header_only"])
def test_read_mrc_permissive_still_refuses_unreadable_data(tmp_path, kind) -> None:
    path = _write_mrc_variant(tmp_path, kind)
    with pytest.raises(ValueError, match=rf"{kind}\.mrc is not a readable MRC file"):
        tio.read_mrc(path, permissive=True)


# --- files: IMOD tilt angles -------------------------------------------------------------------

TLT_CASES = [
    ("text", "0.0\nabc\n", r"bad\.tlt, line 2: tilt angle must be a number in degrees, got 'abc'"),
    ("two_numbers", "1.0 2.0\n", r"bad\.tlt, line 1: expected one tilt angle in degrees"),
    ("empty", "", r"bad\.tlt holds no tilt angles \(empty file\)"),
    ("blank_lines", "\n\n  \n", r"bad\.tlt holds no tilt angles"),
    ("nan", "1.0\nnan\n", r"bad\.tlt, line 2: tilt angle must be finite.*got nan"),
    ("inf", "-inf\n", r"bad\.tlt, line 1: tilt angle must be finite.*got -inf"),
    ("huge", "3.0\n1e9\n", r"bad\.tlt, line 2: .*\(-90, 90\) degrees, got 1e9"),
    ("ninety", "90\n", r"bad\.tlt, line 1: .*\(-90, 90\) degrees, got 90"),
    ("comma", "1,5\n", r"bad\.tlt, line 1: tilt angle must be a number in degrees, got '1,5'"),
]


@pytest.mark.parametrize(("kind", "text", "match"), TLT_CASES, ids=[c[0] for c in TLT_CASES])
def test_read_tilt_angles_is_strict(tmp_path, kind, text, match) -> None:
    path = tmp_path / "bad.tlt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        tio.read_tilt_angles(path)


def test_read_tilt_angles_binary_and_missing(tmp_path) -> None:
    path = tmp_path / "bin.rawtlt"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match=r"bin\.rawtlt is not a text file of tilt angles"):
        tio.read_tilt_angles(path)
    with pytest.raises(FileNotFoundError, match=r"tilt-angle file .*none\.tlt does not exist"):
        tio.read_tilt_angles(tmp_path / "none.tlt")


def test_read_tilt_angles_real_file_still_reads() -> None:
    angles = tio.read_tilt_angles(DATA_DIR / "HAADF.rawtlt")
    assert angles.numel() == 77 and bool((angles.abs() < math.pi / 2).all())
    # the file: -76.00, -74.00, ..., 76.00 degrees in 2° steps, read in radians
    expected = torch.arange(-76.0, 76.5, 2.0, dtype=torch.float64) * math.pi / 180
    torch.testing.assert_close(angles.double(), expected, rtol=0, atol=1e-7)


# --- files: SerialEM .mdoc ---------------------------------------------------------------------

MDOC_GOOD = "PixelSpacing = 2.5\n\n[ZValue = 0]\nTiltAngle = 0.0\nExposureDose = 2.0\n"
MDOC_CASES = [
    ("garbage_line", MDOC_GOOD + "this line is garbage\n", r"t\.mdoc:6: malformed line"),
    ("text_angle", "[ZValue = 0]\nTiltAngle = abc\n", r"t\.mdoc:2: TiltAngle must be a finite"),
    ("nan_angle", "[ZValue = 0]\nTiltAngle = nan\n", r"t\.mdoc:2: TiltAngle must be a finite"),
    ("absurd_angle", "[ZValue = 0]\nTiltAngle = 1e9\n", r"t\.mdoc:2: TiltAngle must lie in"),
    ("text_defocus", MDOC_GOOD + "Defocus = x\n", r"t\.mdoc:6: Defocus must be a finite number"),
    ("negative_dose", "[ZValue = 0]\nTiltAngle = 1\nExposureDose = -2\n", r":3: ExposureDose"),
    ("bad_zvalue", "[ZValue = one]\nTiltAngle = 0\n", r"t\.mdoc:1: bad ZValue 'one'"),
    ("no_sections", "PixelSpacing = 1\n", r"t\.mdoc holds no \[ZValue = n\] sections"),
    ("duplicate", "[ZValue = 0]\nTiltAngle = 0\n[ZValue = 0]\nTiltAngle = 1\n", r"duplicate"),
    ("no_angle", "[ZValue = 0]\nExposureDose = 1\n", r"every \[ZValue\] section needs a TiltAn"),
]


@pytest.mark.parametrize(("kind", "text", "match"), MDOC_CASES, ids=[c[0] for c in MDOC_CASES])
def test_read_mdoc_is_strict(tmp_path, kind, text, match) -> None:
    path = tmp_path / "t.mdoc"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        tio.read_mdoc(path)


def test_scheme_from_malformed_mdoc_names_the_line(tmp_path) -> None:
    path = tmp_path / "t.mdoc"
    path.write_text("[ZValue = 0]\nTiltAngle = 95\nExposureDose = 1\nDefocus = -2\n")
    with pytest.raises(ValueError, match=r"t\.mdoc:2: TiltAngle must lie in \(-90, 90\)"):
        simulate.tilt_scheme_from_mdoc(path)


# --- files: PDB --------------------------------------------------------------------------------

PDB_OK = "ATOM      1  N   GLY A   1      11.104   6.134  -6.504  1.00 20.00           N  \n"
PDB_BLANK_OCC = "ATOM      2  CA  GLY A   1      11.639   6.071  -5.147       20.00           C  \n"


def test_pdb_blank_occupancy_reads_as_one_with_a_warning(tmp_path) -> None:
    path = tmp_path / "blank.pdb"
    path.write_text(PDB_OK + PDB_BLANK_OCC + "END\n")
    with pytest.warns(UserWarning, match=r"1 ATOM/HETATM record\(s\) have a blank occupancy"):
        model = read_structure(path)
    assert model.occupancies.tolist() == [1.0, 1.0]


PDB_CASES = [
    ("bad_x", PDB_OK.replace("11.104", "11.1x4"), r"line 1: malformed x field '11.1x4'"),
    ("truncated", PDB_OK[:40] + "\n", r"line 1: truncated ATOM/HETATM record"),
    ("occ_gt_one", PDB_OK.replace(" 1.00 20.00", " 1.50 20.00"), r"occupancy must lie in \[0, 1\]"),
    ("negative_b", PDB_OK.replace(" 1.00 20.00", " 1.00-20.00"), r"B-factor must be finite and"),
    ("bad_occ", PDB_OK.replace(" 1.00 20.00", " 1.x0 20.00"), r"malformed occupancy field '1.x0'"),
]


@pytest.mark.parametrize(("kind", "text", "match"), PDB_CASES, ids=[c[0] for c in PDB_CASES])
def test_read_structure_rejects_malformed_records(tmp_path, kind, text, match) -> None:
    path = tmp_path / "bad.pdb"
    path.write_text(text + "END\n")
    with pytest.raises(ValueError, match=match):
        read_structure(path)


def test_read_structure_corrupt_gzip_and_missing(tmp_path) -> None:
    path = tmp_path / "x.pdb.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match=r"x\.pdb\.gz: truncated or corrupt gzip file"):
        read_structure(path)
    with pytest.raises(FileNotFoundError, match=r"structure file not found: .*y\.pdb"):
        read_structure(tmp_path / "y.pdb")


# --- parameters: dtype and device rules ---------------------------------------------------------


def _atoms(dtype=torch.float64, xy=(5.0, 5.0)):
    return AtomicModel(
        atomic_numbers=torch.tensor([6]),
        positions_a=torch.tensor([[xy[0], xy[1], 1.0]], dtype=dtype),
        b_factors_a2=torch.zeros(1, dtype=dtype),
        occupancies=torch.ones(1, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_refused(dtype) -> None:
    with pytest.raises(TypeError, match=rf"positions_a must be float32 or float64, got {dtype}"):
        _atoms(dtype)
    with pytest.raises(TypeError, match=r"half precision is not supported"):
        _atoms().to(dtype=dtype)
    with pytest.raises(TypeError, match=r"positions_a must be float32 or float64"):
        slice_potential(
            torch.tensor([6]),
            torch.zeros(1, 3, dtype=dtype),
            torch.zeros(1, dtype=dtype),
            torch.ones(1, dtype=dtype),
            z0_a=-1.0,
            z1_a=1.0,
            shape=(16, 16),
            sampling_a=1.0,
        )


def test_integer_dtype_refused_by_the_rule() -> None:
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, got torch.int64"):
        require_float_dtype("dtype", torch.int64)


def test_energy_as_a_tensor_is_the_same_as_a_float() -> None:
    as_tensor = Microscope(energy_ev=torch.tensor(E300))
    assert isinstance(as_tensor.energy_ev, float) and as_tensor == SCOPE
    h1 = ctf((16, 16), sampling_a=1.0, microscope=as_tensor, defocus_a=1000.0)
    h2 = ctf((16, 16), sampling_a=1.0, microscope=SCOPE, defocus_a=1000.0)
    assert torch.equal(h1, h2)
    wave = multislice(
        [torch.zeros(16, 16)], sampling_a=1.0, slice_thickness_a=1.0, energy_ev=torch.tensor(E300)
    )
    assert wave.dtype == torch.complex64
    settings = PotentialSettings(
        shape=(8, 8), sampling_a=1.0, slice_thickness_a=1.0, energy_ev=torch.tensor(E300)
    )
    assert settings.energy_ev == E300


STATIC_CASES = [
    ("ctf", lambda s: ctf((16, 16), sampling_a=s, microscope=SCOPE, defocus_a=1e3)),
    ("settings", lambda s: PotentialSettings(shape=(8, 8), sampling_a=s, slice_thickness_a=1.0)),
    (
        "slice_potential",
        lambda s: slice_potential(
            torch.tensor([6]),
            torch.zeros(1, 3),
            torch.zeros(1),
            torch.ones(1),
            z0_a=-1.0,
            z1_a=1.0,
            shape=(16, 16),
            sampling_a=s,
        ),
    ),
    (
        "multislice",
        lambda s: multislice(
            [torch.zeros(16, 16)], sampling_a=s, slice_thickness_a=1.0, energy_ev=E300
        ),
    ),
]


@pytest.mark.parametrize(("where", "call"), STATIC_CASES, ids=[c[0] for c in STATIC_CASES])
def test_sampling_requiring_grad_is_refused(where, call) -> None:
    with pytest.raises(TypeError, match=r"sampling_a \[Å\] is a static setting and cannot be diff"):
        call(torch.tensor(1.0, requires_grad=True))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("300", TypeError, r"energy_ev must be a real number \[eV\], got '300'"),
        (True, TypeError, r"energy_ev must be a real number \[eV\], got True"),
        (torch.ones(2), TypeError, r"energy_ev must be a real number \[eV\], got a tensor of"),
        (-3.0, ValueError, r"energy_ev must be > 0, got -3.0 eV"),
        (math.nan, ValueError, r"energy_ev must be finite, got nan eV"),
        (300.0, ValueError, r"energy_ev must lie in \[1000, 1e\+07\] eV .*got 300 eV: a unit slip"),
        (3e8, ValueError, r"energy_ev must lie in .*got 3e\+08 eV"),
    ],
    ids=["string", "bool", "vector", "negative", "nan", "kV-as-eV", "too-high"],
)
def test_bad_energies(value, error, match) -> None:
    with pytest.raises(error, match=match):
        Microscope(energy_ev=value)


def test_static_float_accepts_numpy_scalars() -> None:
    assert require_static_float("sampling_a", np.float32(1.5), "Å") == 1.5
    assert require_integer("n", torch.tensor(3), minimum=1) == 3


def test_numpy_integer_grid_sizes_are_accepted() -> None:
    n = np.int64(16)
    settings = PotentialSettings(shape=(n, n), sampling_a=1.0, slice_thickness_a=1.0)
    assert settings.shape == (16, 16) and type(settings.shape[0]) is int
    assert ctf((n, n), sampling_a=1.0, microscope=SCOPE, defocus_a=1e3).shape == (16, 16)
    assert Detector().mtf((n, np.int32(8))).shape == (16, 8)
    assert fresnel_propagator((n, n), sampling_a=1.0, thickness_a=1.0, energy_ev=E300).shape == (
        16,
        16,
    )
    assert estimate_wave_memory_bytes((n, n)) == (7 * 8 + 1) * 16 * 16


GRID_CASES = [
    ("settings", lambda s: PotentialSettings(shape=s, sampling_a=1.0, slice_thickness_a=1.0)),
    ("ctf", lambda s: ctf(s, sampling_a=1.0, microscope=SCOPE, defocus_a=1e3)),
    ("plane_wave", lambda s: plane_wave(s)),
    ("mtf", lambda s: Detector().mtf(s)),
    ("memory", lambda s: estimate_wave_memory_bytes(s)),
]


@pytest.mark.parametrize(("where", "call"), GRID_CASES, ids=[c[0] for c in GRID_CASES])
def test_fractional_grid_size_is_refused_not_truncated(where, call) -> None:
    with pytest.raises(ValueError, match=r"must be a positive integer.*got 64\.7"):
        call((64.7, 64))


@pytest.mark.parametrize("bad", [(0, 8), (8, -1), (True, 8), (8,), "64x64"])
def test_bad_grid_shapes(bad) -> None:
    with pytest.raises(ValueError, match=r"shape.*(positive integer|pair \(ny, nx\))"):
        PotentialSettings(shape=bad, sampling_a=1.0, slice_thickness_a=1.0)


# --- parameters: optics ------------------------------------------------------------------------


def test_tiny_objective_aperture_is_refused() -> None:
    scope = Microscope(energy_ev=E300, objective_aperture_rad=1e-9)
    with pytest.raises(ValueError, match=r"objective_aperture_rad must pass at least one Fourier"):
        ctf((64, 64), sampling_a=2.0, microscope=scope, defocus_a=1e4)


def test_aperture_of_one_fourier_pixel_keeps_the_unscattered_beam() -> None:
    step = 1.0 / (64 * 2.0)
    alpha = step * SCOPE.wavelength_a
    scope = Microscope(energy_ev=E300, objective_aperture_rad=alpha)
    h = ctf((64, 64), sampling_a=2.0, microscope=scope, defocus_a=1e4, dtype=torch.complex128)
    assert float(h[0, 0].abs()) == 1.0  # the image mean is kept exactly


@pytest.mark.parametrize("value", [0.0, -1e-3, math.inf])
def test_bad_aperture_values(value) -> None:
    with pytest.raises(ValueError, match=r"objective_aperture_rad must (be > 0|be finite)"):
        Microscope(energy_ev=E300, objective_aperture_rad=value)


def test_ctf_aliasing_warns_for_the_issue_case() -> None:
    """64 px at 2 Å and 5 µm defocus: about 8 rad of CTF phase per Fourier pixel."""
    with pytest.warns(SamplingWarning, match=r"CTF aliased: .* changes by 8\.\d+ rad per Fourier"):
        check_ctf_sampling((64, 64), sampling_a=2.0, energy_ev=E300, defocus_a=5e4, cs_a=2.7e7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_ctf_sampling((512, 512), sampling_a=2.0, energy_ev=E300, defocus_a=1e4) == []


def test_micrograph_reaches_the_ctf_sampling_check(tiny_specimen) -> None:
    imaging = simulate.Imaging(defocus_a=5e4, dose_e_per_a2=10.0, method="projection")
    with pytest.warns(SamplingWarning, match=r"CTF aliased: at defocus_a=50000.0 Å"):
        simulate.micrograph(
            tiny_specimen, potential=TINY, microscope=SCOPE, detector=Detector(), imaging=imaging
        )


# --- parameters: specimen vs grid, atoms outside the field --------------------------------------


def test_specimen_extent_must_match_the_grid(tiny_specimen) -> None:
    wrong = dataclasses.replace(TINY, shape=(32, 64))  # 128 Å wide grid, 64 Å specimen
    imaging = simulate.Imaging(defocus_a=5e3, dose_e_per_a2=10.0)
    with pytest.raises(ValueError, match=r"specimen.extent_a \(x\) must equal the grid's 64 px"):
        simulate.micrograph(
            tiny_specimen, potential=wrong, microscope=SCOPE, detector=Detector(), imaging=imaging
        )
    with pytest.raises(ValueError, match=r"specimen.extent_a \(x\) must equal"):
        next(iter_slice_potentials(tiny_specimen, wrong))


def test_specimen_extent_subpixel_mismatch_warns(tiny_specimen) -> None:
    shifted = dataclasses.replace(tiny_specimen, extent_a=(64.4, 64.0))
    with pytest.warns(UserWarning, match=r"extent_a \(x\) = 64.4 Å differs from the grid's"):
        next(iter_slice_potentials(shifted, TINY))


@pytest.mark.parametrize(
    ("periodic", "fate"),
    [(True, r"folded back into the field"), (False, r"dropped \(periodic=False\)")],
)
def test_atom_far_outside_the_field_warns(periodic, fate) -> None:
    atoms = _atoms(xy=(500.0, 5.0))
    with pytest.warns(UserWarning, match=rf"1 of 1 atoms lie outside the field of view.*{fate}"):
        slice_potential(
            atoms.atomic_numbers,
            atoms.positions_a,
            atoms.b_factors_a2,
            atoms.occupancies,
            z0_a=0.0,
            z1_a=2.0,
            shape=(16, 16),
            sampling_a=1.0,
            periodic=periodic,
            backend="torch",
        )


def test_atom_inside_the_field_does_not_warn() -> None:
    atoms = _atoms(xy=(5.0, 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slice_potential(
            atoms.atomic_numbers,
            atoms.positions_a,
            atoms.b_factors_a2,
            atoms.occupancies,
            z0_a=0.0,
            z1_a=2.0,
            shape=(16, 16),
            sampling_a=1.0,
            backend="torch",
        )


# --- parameters: imaging, schemes, tilt series arguments -----------------------------------------

IMAGING_CASES = [
    (dict(defocus_a=math.nan, dose_e_per_a2=1.0), ValueError, r"defocus_a must be finite, got nan"),
    (dict(defocus_a=1e4, dose_e_per_a2=0.0), ValueError, r"dose_e_per_a2 must be > 0, got 0.0"),
    (dict(defocus_a=1e4, dose_e_per_a2=1.0, astigmatism_a=-5.0), ValueError, r"astigmatism_a must"),
    (dict(defocus_a=1e4, dose_e_per_a2=1.0, method="fft"), ValueError, r"method must be one of"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), IMAGING_CASES)
def test_bad_imaging(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        simulate.Imaging(**kwargs)


SCHEME_CASES = [
    (dict(angles_rad=(), dose_e_per_a2=(), defocus_a=()), r"at least one tilt, got 0"),
    (dict(angles_rad=(0.0,), dose_e_per_a2=(1.0, 1.0), defocus_a=(1.0,)), r"one value per tilt"),
    (dict(angles_rad=(2.0,), dose_e_per_a2=(1.0,), defocus_a=(1.0,)), r"\(-pi/2, pi/2\)"),
    (dict(angles_rad=(math.nan,), dose_e_per_a2=(1.0,), defocus_a=(1.0,)), r"must be finite"),
    (dict(angles_rad=(0.0,), dose_e_per_a2=(-1.0,), defocus_a=(1.0,)), r"must be > 0"),
]


@pytest.mark.parametrize(("kwargs", "match"), SCHEME_CASES)
def test_bad_tilt_schemes(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        simulate.TiltScheme(**kwargs)


def test_tilt_series_argument_types(tiny_specimen) -> None:
    with pytest.raises(TypeError, match=r"scheme must be a TiltScheme, got list"):
        _series(tiny_specimen, scheme=[0.0])
    with pytest.raises(TypeError, match=r"overwrite must be a bool, got 'yes'"):
        _series(tiny_specimen, overwrite="yes")
    with pytest.raises(TypeError, match=r"potential must be a PotentialSettings, got dict"):
        _series(tiny_specimen, potential={})
    with pytest.raises(TypeError, match=r"callback must be callable"):
        _series(tiny_specimen, callback=3)
    with pytest.raises(ValueError, match=r"method must be one of"):
        _series(tiny_specimen, method="fast")
    with pytest.raises(TypeError, match=r"specimen must be a Specimen, got AtomicModel"):
        _series(tiny_specimen.atoms)


# --- outputs -----------------------------------------------------------------------------------

OUTPUT_CASES = [
    (lambda p: tio.write_mrc(p / "a.mrc", np.zeros(4), voxel_size_a=1.0), ValueError, "2-D"),
    (lambda p: tio.write_mrc(p / "a.mrc", np.zeros((0, 4)), voxel_size_a=1.0), ValueError, "empty"),
    (
        lambda p: tio.write_mrc(p / "a.mrc", np.full((2, 2), np.nan), voxel_size_a=1.0),
        ValueError,
        "finite",
    ),
    (
        lambda p: tio.write_mrc(p / "a.mrc", np.zeros((2, 2)), voxel_size_a=0.0),
        ValueError,
        r"voxel_size_a must be > 0",
    ),
    (
        lambda p: tio.write_mrc(
            p / "a.mrc", torch.zeros(2, 2, dtype=torch.complex64), voxel_size_a=1
        ),
        TypeError,
        "must be real",
    ),
    (
        lambda p: tio.write_mrc(p / "no" / "a.mrc", np.zeros((2, 2)), voxel_size_a=1.0),
        FileNotFoundError,
        "does not exist",
    ),
    (lambda p: tio.write_tilt_angles(p / "t", [math.nan]), ValueError, "angles_rad must be finite"),
    (lambda p: tio.write_tilt_angles(p / "t", []), ValueError, "non-empty 1-D"),
    (
        lambda p: tio.write_png_preview(p / "a.png", np.zeros((4, 4)), percentiles=(50, 10)),
        ValueError,
        "percentiles must satisfy",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), OUTPUT_CASES)
def test_bad_outputs(tmp_path, call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(tmp_path)


def test_existing_output_is_not_replaced(tmp_path, tiny_specimen) -> None:
    (tmp_path / "s.mrc").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match=r"s\.mrc exists; pass overwrite=True"):
        _series(tiny_specimen, output=tmp_path / "s")
    assert (tmp_path / "s.mrc").read_bytes() == b"keep"


def test_uncreatable_output_directory(tmp_path, tiny_specimen) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"output directory .*s\.tilts cannot be created"):
        _series(tiny_specimen, output=tmp_path / "file" / "s")


# --- faults: kill and resume at every stage of a write ------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL/KeyboardInterrupt: not an Exception, so nothing catches it."""


def _kill_on_call(monkeypatch, target, attribute, n):
    """Make the n-th call of ``target.attribute`` raise :class:`Killed` (1-based)."""
    original = getattr(target, attribute)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, wrapper)
    return calls


def _leftover_temp(workdir: Path, name: str = "tilt_001.mrc") -> Path:
    """A temporary file as ``atomic_write`` leaves it when the process is killed mid-write."""
    workdir.mkdir(exist_ok=True)
    tmp = workdir / f".{name}.k1ll3d.tmp"
    tmp.write_bytes(_mrc_bytes()[:300])
    return tmp


STAGES = [
    "manifest",  # killed while writing the manifest, before any tilt
    "first_tilt_write",  # killed while the first tilt's MRC is written (temp file left)
    "after_first_tilt",  # killed in the callback after the first tilt is on disk
    "last_tilt_write",  # killed while the last tilt is written
    "angle_files",  # killed while writing .rawtlt/.tlt
    "stack_write",  # killed while writing the final stack
]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_and_resume_is_bitwise_identical(
    stage, tmp_path, monkeypatch, tiny_specimen, reference_series
) -> None:
    stem = tmp_path / "series"
    workdir = tmp_path / "series.tilts"
    callback = None
    with monkeypatch.context() as patch:
        if stage == "manifest":
            _kill_on_call(patch, io_manifest, "atomic_write", 1)
        elif stage == "first_tilt_write":
            _kill_on_call(patch, tio.mrc, "_write_mrc_file", 1)
        elif stage == "after_first_tilt":

            def callback(k, image):
                raise Killed

        elif stage == "last_tilt_write":
            _kill_on_call(patch, tio.mrc, "_write_mrc_file", 3)
        elif stage == "angle_files":
            _kill_on_call(patch, tio, "write_tilt_angles", 1)
        elif stage == "stack_write":
            _kill_on_call(patch, tio.mrc, "_write_mrc_file", 4)
        with pytest.raises(Killed):
            _series(tiny_specimen, output=stem, callback=callback)
    assert not stem.with_suffix(".mrc").exists()
    tmp = _leftover_temp(workdir)  # as if the kill had come mid-write (atomic_write's temp)
    result = _series(tiny_specimen, output=stem)
    assert torch.equal(result.stack, reference_series.stack)
    data, voxel = tio.read_mrc(stem.with_suffix(".mrc"))
    assert np.array_equal(data, reference_series.stack.numpy()) and voxel == pytest.approx(2.0)
    assert not workdir.exists() and not tmp.exists()
    assert tio.read_tilt_angles(stem.with_suffix(".tlt")).numel() == 3


def test_resume_skips_tilts_on_disk(tmp_path, tiny_specimen, reference_series) -> None:
    stem = tmp_path / "series"

    def stop(k, image):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        _series(tiny_specimen, output=stem, callback=stop)
    seen = []
    result = _series(tiny_specimen, output=stem, callback=lambda k, image: seen.append(k))
    assert seen == [2] and torch.equal(result.stack, reference_series.stack)


def _partial(tmp_path, specimen, **kw) -> Path:
    stem = tmp_path / "series"

    def stop(k, image):
        raise Killed

    with pytest.raises(Killed):
        _series(specimen, output=stem, callback=stop, **kw)
    return stem


RESUME_MISMATCHES = [
    ("pixel_size", dict(potential=dataclasses.replace(TINY, sampling_a=2.0 + 1e-3)), "sampling_a"),
    ("seed", dict(seed=6), r"seed was \d+, now \d+"),
    ("defocus", dict(scheme=_scheme(defocus_a=6000.0)), r"settings differ \(scheme\)"),
    ("detector", dict(detector=Detector(dqe=0.5)), r"settings differ \(detector\)"),
    ("microscope", dict(microscope=Microscope(energy_ev=E300, cs_a=1e7)), r"\(microscope\)"),
    ("method", dict(method="multislice"), r"settings differ \(method\)"),
]


@pytest.mark.filterwarnings("ignore:specimen.extent_a")
@pytest.mark.parametrize(
    ("kind", "changes", "match"), RESUME_MISMATCHES, ids=[c[0] for c in RESUME_MISMATCHES]
)
def test_resume_with_other_settings_is_a_clear_error(
    tmp_path, tiny_specimen, kind, changes, match
) -> None:
    stem = _partial(tmp_path, tiny_specimen)
    with pytest.raises(ValueError, match=rf"cannot resume from .*series\.tilts.*{match}"):
        _series(tiny_specimen, output=stem, **changes)
    with pytest.raises(ValueError, match=r"pass resume=False to start afresh"):
        _series(tiny_specimen, output=stem, **changes)


def test_resume_with_another_specimen_is_an_error(tmp_path, tiny_specimen) -> None:
    stem = _partial(tmp_path, tiny_specimen)
    moved = dataclasses.replace(
        tiny_specimen,
        atoms=tiny_specimen.atoms._replace_positions(tiny_specimen.atoms.positions_a + 0.1),
    )
    with pytest.raises(ValueError, match=r"settings differ \(specimen_sha256\)"):
        _series(moved, output=stem)


def test_resume_false_starts_afresh(tmp_path, tiny_specimen) -> None:
    stem = _partial(tmp_path, tiny_specimen)
    fresh = _series(tiny_specimen, output=stem, seed=6, resume=False)
    again = _series(tiny_specimen, seed=6)
    assert torch.equal(fresh.stack, again.stack)


def test_tilts_without_manifest_are_refused(tmp_path, tiny_specimen) -> None:
    workdir = tmp_path / "series.tilts"
    workdir.mkdir()
    tio.write_mrc(workdir / "tilt_000.mrc", np.zeros((32, 32)), voxel_size_a=2.0)
    match = r"holds 1 partial output file\(s\) \(tilt_\*\.mrc\) but no manifest\.json"
    with pytest.raises(ValueError, match=match):
        _series(tiny_specimen, output=tmp_path / "series")


def test_tilt_of_another_shape_fails_before_simulating(
    tmp_path, tiny_specimen, monkeypatch
) -> None:
    stem = _partial(tmp_path, tiny_specimen)
    workdir = tmp_path / "series.tilts"
    tio.write_mrc(workdir / "tilt_000.mrc", np.zeros((16, 16)), voxel_size_a=2.0, overwrite=True)
    calls = _kill_on_call(monkeypatch, simulate, "micrograph", 10**6)
    with pytest.raises(
        ValueError, match=r"tilt_000\.mrc has shape \(16, 16\), expected \(32, 32\)"
    ):
        _series(tiny_specimen, output=stem)
    assert calls["n"] == 0  # nothing was simulated first


def test_tilt_of_another_pixel_size_is_refused(tmp_path, tiny_specimen) -> None:
    stem = _partial(tmp_path, tiny_specimen)
    workdir = tmp_path / "series.tilts"
    tio.write_mrc(workdir / "tilt_000.mrc", np.zeros((32, 32)), voxel_size_a=3.0, overwrite=True)
    with pytest.raises(ValueError, match=r"pixel size 3\.0 Å, expected sampling_a=2\.0 Å"):
        _series(tiny_specimen, output=stem)


def test_corrupt_tilt_and_corrupt_manifest(tmp_path, tiny_specimen) -> None:
    stem = _partial(tmp_path, tiny_specimen)
    workdir = tmp_path / "series.tilts"
    (workdir / "tilt_000.mrc").write_bytes(_mrc_bytes()[:500])
    with pytest.raises(ValueError, match=r"tilt_000\.mrc is not a readable MRC file"):
        _series(tiny_specimen, output=stem)
    (workdir / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json is not a readable resume manifest"):
        _series(tiny_specimen, output=stem)


def test_foreign_files_in_the_work_directory_are_left(tmp_path, tiny_specimen) -> None:
    workdir = tmp_path / "series.tilts"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match=r"series\.tilts holds files this package did not write"):
        _series(tiny_specimen, output=tmp_path / "series")
    assert (workdir / "notes.txt").read_text() == "mine"


# --- faults: no process-wide floating-point side effects ----------------------------------------

FTZ_PROBE = """
import numpy as np, torch
def flushed():
    a = (np.array([1e-310]) * 1.0)[0] == 0.0
    b = float((torch.full((4,), 1e-40, dtype=torch.float32) * 1.0)[0]) == 0.0
    c = float((torch.full((1 << 16,), 1e-310, dtype=torch.float64) * 1.0).min()) == 0.0
    return a or b or c
before = flushed()
from tem_core._taichi import get_taichi, taichi_available
from tem_core.potential import slice_potential
if taichi_available():
    get_taichi()
    slice_potential(torch.tensor([6]), torch.tensor([[4.0, 4.0, 0.0]]), torch.zeros(1),
                    torch.ones(1), z0_a=-1.0, z1_a=1.0, shape=(8, 8), sampling_a=1.0,
                    backend="taichi")
print(before, flushed(), taichi_available())
"""


def test_taichi_leaves_subnormals_alone() -> None:
    """ti.init sets flush-to-zero; tem_core restores the state before returning."""
    out = subprocess.run(
        [sys.executable, "-c", FTZ_PROBE],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        check=True,
    ).stdout.split()[-3:]
    assert out[:2] == ["False", "False"], out


def test_user_flush_to_zero_choice_is_kept() -> None:
    code = "import torch\ntorch.set_flush_denormal(True)\n" + FTZ_PROBE
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    ).stdout.split()[-3:]
    assert out[:2] == ["True", "True"], out


# --- faults: memory preflight -----------------------------------------------------------------

HUGE = (400_000, 400_000)


def test_available_memory_is_not_the_total() -> None:
    import os as _os

    total = _os.sysconf("SC_PHYS_PAGES") * _os.sysconf("SC_PAGE_SIZE")
    assert 0 < memory.available_memory_bytes() <= total


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ctf(HUGE, sampling_a=1.0, microscope=SCOPE, defocus_a=1e3), r"torch.float32 CTF"),
        (lambda: Detector().mtf(HUGE), r"400000 x 400000 torch.float32 MTF needs about"),
        (
            lambda: slice_potential(
                torch.tensor([6]),
                torch.zeros(1, 3, dtype=torch.float64),
                torch.zeros(1, dtype=torch.float64),
                torch.ones(1, dtype=torch.float64),
                z0_a=-1.0,
                z1_a=1.0,
                shape=HUGE,
                sampling_a=1.0,
            ),
            r"torch.float64 slice of 1 atoms needs about",
        ),
    ],
    ids=["ctf", "mtf", "slice_potential"],
)
def test_stage_preflights_refuse_impossible_grids(call, match) -> None:
    with pytest.raises(memory.MemoryPreflightError, match=rf"{match}.*GB available"):
        call()


def test_micrograph_preflight_counts_the_graph(tiny_specimen) -> None:
    positions = tiny_specimen.atoms.positions_a.clone().requires_grad_(True)
    specimen = dataclasses.replace(
        tiny_specimen, atoms=tiny_specimen.atoms._replace_positions(positions)
    )
    huge = dataclasses.replace(TINY, shape=(80_000, 80_000))
    imaging = simulate.Imaging(defocus_a=5e3, dose_e_per_a2=10.0)
    with pytest.raises(ValueError, match=r"micrograph with gradients over \d+ slices needs"):
        simulate.micrograph(
            specimen, potential=huge, microscope=SCOPE, detector=Detector(), imaging=imaging
        )
    grad = memory.micrograph_bytes((512, 512), torch.float64, n_slices=5, requires_grad=True)
    plain = memory.micrograph_bytes((512, 512), torch.float64)
    assert grad > plain > memory.micrograph_bytes((512, 512), torch.float32)
