"""Tests of tem_core.io: MRC, IMOD tilt angles, SerialEM mdoc, PNG previews, atomic writes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from tem_core.io import files as io_files
from tem_core.io import mrc as io_mrc
from tem_core.io import (
    read_mdoc,
    read_mrc,
    read_tilt_angles,
    write_mrc,
    write_png_preview,
    write_tilt_angles,
)

DATA = Path(__file__).parents[1] / "data"


# --- SerialEM mdoc -----------------------------------------------------------------------------


def test_read_real_mdoc():
    ts = read_mdoc(DATA / "TS_017.mdoc")
    # shared/data/README.md: 60 tilts, -52..+66 deg in 2 deg steps, 1.971 A/px, 2.24 e/A2, 300 kV
    assert len(ts) == 60
    assert torch.equal(ts.z_values, torch.arange(60))
    degrees = ts.angles_rad * 180 / math.pi
    assert degrees[0].item() == pytest.approx(-52.0, abs=0.05)
    assert degrees[-1].item() == pytest.approx(66.0, abs=0.05)
    torch.testing.assert_close(
        torch.diff(degrees), torch.full((59,), 2.0, dtype=torch.float64), atol=0.03, rtol=0
    )
    assert ts.pixel_size_a == pytest.approx(1.971)
    assert ts.energy_ev == pytest.approx(300e3)
    torch.testing.assert_close(ts.dose_e_per_a2, torch.full((60,), 2.23843, dtype=torch.float64))
    assert ts.tilt_axis_angle_rad == pytest.approx(82.9 * math.pi / 180)
    # dose-symmetric scheme starting at +8 deg: first exposure has ~no prior dose
    recorded = ts.indices_in_acquisition_order
    first = recorded[0].item()
    assert degrees[first].item() == pytest.approx(8.0, abs=0.05)
    assert ts.acquisition_order[first].item() == 0
    assert torch.equal(ts.acquisition_order[recorded], torch.arange(60))
    # dose-symmetric: +8, +10, +12, +6, +4, +14, +16, +2, 0, ...
    torch.testing.assert_close(
        degrees[recorded[:9]].round(),
        torch.tensor([8.0, 10, 12, 6, 4, 14, 16, 2, 0], dtype=torch.float64),
    )
    prior_in_order = ts.prior_dose_e_per_a2[recorded]
    assert torch.all(torch.diff(prior_in_order) > 0)
    # the clock agrees with the PriorRecordDose order
    times = [ts.date_times[i] for i in recorded.tolist()]
    assert all(t0 <= t1 for t0, t1 in zip(times[:-1], times[1:], strict=True))
    # each exposure adds 2.238 e/A2, except one doubled step between +66 and -50 deg: one exposure
    # (the +68 deg tilt, by the dose-symmetric pattern) was recorded but is not in the stack
    steps = torch.diff(prior_in_order) / 2.23843
    assert torch.isclose(steps, torch.round(steps), atol=2e-3).all()
    assert steps.round().tolist().count(2.0) == 1 and steps.round().sum().item() == 60
    # Defocus (+2.2..+3.6 um) has the opposite sign to TargetDefocus (-3 um, SerialEM's sign):
    # "auto" reads it as positive underfocus
    assert ts.defocus_convention == "positive_underfocus"
    torch.testing.assert_close(ts.target_defocus_a, torch.full((60,), 3e4, dtype=torch.float64))
    assert ts.defocus_a[0].item() == pytest.approx(2.25002e4)
    assert torch.all((ts.defocus_a > 2e4) & (ts.defocus_a < 4e4))
    forced = read_mdoc(DATA / "TS_017.mdoc", defocus_convention="serialem")
    torch.testing.assert_close(forced.defocus_a, -ts.defocus_a)
    assert ts.header["ImageFile"] == "TS_017.mrc"
    assert ts.sections[0]["SubFramePath"] == "017_01.mrc"


MDOC = """PixelSpacing = 2.5
Voltage = 200
ImageFile = x.mrc

[T = SerialEM: test scope]

[ZValue = 1]
TiltAngle = 3.0
Defocus = -2.5
TargetDefocus = -2.5
ExposureDose = 1.5
DateTime = 01-Jan-24  10:00:30

[ZValue = 0]
TiltAngle = -3.0
Defocus = -2.4
TargetDefocus = -2.5
ExposureDose = 1.5
RotationAngle = 85.0
DateTime = 01-Jan-24  10:00:00

[FrameSet = 0]
TiltAngle = 99
"""


def test_read_synthetic_mdoc_sorted_by_zvalue(tmp_path):
    path = tmp_path / "t.mdoc"
    path.write_text(MDOC)
    ts = read_mdoc(path)
    assert len(ts) == 2
    assert torch.equal(ts.z_values, torch.tensor([0, 1]))
    torch.testing.assert_close(
        ts.angles_rad, torch.tensor([-3.0, 3.0], dtype=torch.float64) * math.pi / 180
    )
    # SerialEM sign: negative Defocus is underfocus -> positive defocus_a
    assert ts.defocus_convention == "serialem"
    torch.testing.assert_close(ts.defocus_a, torch.tensor([2.4e4, 2.5e4], dtype=torch.float64))
    # no PriorRecordDose: acquisition order from DateTime
    assert torch.isnan(ts.prior_dose_e_per_a2).all()
    assert ts.acquisition_order.tolist() == [0, 1]
    empty = tmp_path / "bare.mdoc"
    empty.write_text("[ZValue = 0]\nTiltAngle = 0.0\n")
    bare = read_mdoc(empty)
    assert bare.pixel_size_a is None and bare.energy_ev is None and bare.tilt_axis_angle_rad is None
    assert torch.isnan(bare.defocus_a).all() and bare.defocus_convention == "serialem"
    assert ts.energy_ev == pytest.approx(200e3) and ts.pixel_size_a == pytest.approx(2.5)
    assert ts.tilt_axis_angle_rad == pytest.approx(85.0 * math.pi / 180)  # from RotationAngle


def test_mdoc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mdoc"):
        read_mdoc(tmp_path / "nothere.mdoc")
    empty = tmp_path / "e.mdoc"
    empty.write_text("PixelSpacing = 1\n")
    with pytest.raises(ValueError, match=r"no \[ZValue = n\] sections"):
        read_mdoc(empty)
    with pytest.raises(ValueError, match="defocus_convention must be one of"):
        read_mdoc(DATA / "TS_017.mdoc", defocus_convention="imod")


# --- MRC ----------------------------------------------------------------------------------------


def test_mrc_round_trip_image_and_tilt_stack(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 10))
    p = write_mrc(tmp_path / "img.mrc", torch.from_numpy(image), voxel_size_a=1.971)
    data, voxel = read_mrc(p)
    assert data.dtype == np.float32 and data.shape == (12, 10)
    np.testing.assert_array_equal(data, image.astype(np.float32))
    assert voxel == pytest.approx(1.971, rel=1e-6)

    stack = rng.normal(size=(7, 12, 10)).astype(np.float32)
    p = write_mrc(tmp_path / "ts.mrc", stack, voxel_size_a=2.5)
    with mrcfile.open(p) as mrc:
        header = mrc.header
        assert int(header.mode) == 2 and int(header.ispg) == 0  # float32 image stack
        assert (int(header.nx), int(header.ny), int(header.nz), int(header.mz)) == (10, 12, 7, 1)
        assert mrc.is_image_stack()
        assert float(mrc.voxel_size.x) == pytest.approx(2.5) and float(
            mrc.voxel_size.z
        ) == pytest.approx(2.5)
        assert float(header.dmean) == pytest.approx(float(stack.mean()), rel=1e-4, abs=1e-6)
    data, voxel = read_mrc(p)
    np.testing.assert_array_equal(data, stack)
    assert voxel == pytest.approx(2.5)

    p = write_mrc(tmp_path / "vol.mrc", stack, voxel_size_a=3.0, volume=True)
    with mrcfile.open(p) as mrc:
        assert int(mrc.header.ispg) == 1 and int(mrc.header.mz) == 7 and mrc.is_volume()


def test_real_micrograph():
    # mrcfile test data (K2 counting, 300 kV): 0.8538 A/px, ~101 counts/e, tile variance/mean ~ 106
    data, voxel = read_mrc(DATA / "fei-extended_crop2048.mrc")
    assert data.shape == (2048, 2048) and data.dtype == np.uint16
    assert voxel == pytest.approx(0.8538, abs=1e-3)
    tiles = data.astype(np.float64).reshape(16, 128, 16, 128).transpose(0, 2, 1, 3).reshape(256, -1)
    ratio = np.median(tiles.var(axis=1) / tiles.mean(axis=1))
    assert 100.0 < ratio < 110.0
    assert data.mean() == pytest.approx(3523, rel=0.01)


def test_atomic_write_leaves_no_file_when_the_writer_fails(tmp_path, monkeypatch):
    def broken(tmp, array, voxel, volume):
        Path(tmp).write_bytes(b"half an MRC header")
        raise RuntimeError("disk full")

    monkeypatch.setattr(io_mrc, "_write_mrc_file", broken)
    target = tmp_path / "x.mrc"
    with pytest.raises(RuntimeError, match="disk full"):
        write_mrc(target, np.zeros((4, 4)), voxel_size_a=1.0)
    assert list(tmp_path.iterdir()) == []  # neither the file nor the temporary file
    # an existing file survives a failed overwrite unchanged
    monkeypatch.undo()
    write_mrc(target, np.ones((4, 4)), voxel_size_a=1.0)
    before = target.read_bytes()
    monkeypatch.setattr(io_mrc, "_write_mrc_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mrc(target, np.zeros((4, 4)), voxel_size_a=1.0, overwrite=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.mrc"]


def test_unwritable_path_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"cannot write .*file/out\.mrc"):
        write_mrc(blocker / "out.mrc", np.zeros((2, 2)), voxel_size_a=1.0)
    with pytest.raises(FileNotFoundError, match=r"cannot write .*missing/out\.mrc"):
        write_mrc(tmp_path / "missing" / "out.mrc", np.zeros((2, 2)), voxel_size_a=1.0)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_mrc(tmp_path, np.zeros((2, 2)), voxel_size_a=1.0, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_permission_error_names_the_path(tmp_path, monkeypatch):
    # simulated read-only directory (root ignores chmod): mkstemp fails
    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io_files.tempfile, "mkstemp", deny)
    with pytest.raises(PermissionError, match=r"cannot write .*out\.mrc: Permission denied"):
        write_mrc(tmp_path / "out.mrc", np.zeros((2, 2)), voxel_size_a=1.0)
    monkeypatch.undo()

    # a failing final rename also leaves nothing behind
    def no_replace(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(io_files.os, "replace", no_replace)
    with pytest.raises(OSError, match="cross-device"):
        write_tilt_angles(tmp_path / "TS", [0.0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"cannot write .*ro/out\.mrc"):
            write_mrc(ro / "out.mrc", np.zeros((2, 2)), voxel_size_a=1.0)
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


def test_unwritable_directory_names_the_file_even_as_root(tmp_path, monkeypatch):
    """What the read-only test checks, without relying on permissions (root ignores them)."""

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io_files.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"cannot write .*out\.mrc: Permission denied"):
        write_mrc(tmp_path / "out.mrc", np.zeros((2, 2)), voxel_size_a=1.0)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_refusal(tmp_path):
    target = tmp_path / "a.mrc"
    write_mrc(target, np.zeros((3, 3)), voxel_size_a=1.0)
    with pytest.raises(FileExistsError, match=r"a\.mrc already exists; pass overwrite=True"):
        write_mrc(target, np.ones((3, 3)), voxel_size_a=1.0)
    np.testing.assert_array_equal(read_mrc(target)[0], np.zeros((3, 3)))
    write_mrc(target, np.ones((3, 3)), voxel_size_a=1.0, overwrite=True)
    np.testing.assert_array_equal(read_mrc(target)[0], np.ones((3, 3)))


def test_mrc_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="voxel_size_a must be > 0, got -1.0 Å"):
        write_mrc(tmp_path / "a.mrc", np.zeros((2, 2)), voxel_size_a=-1.0)
    with pytest.raises(ValueError, match="must be finite"):
        write_mrc(tmp_path / "a.mrc", np.full((2, 2), np.nan), voxel_size_a=1.0)
    with pytest.raises(ValueError, match="2-D .* or 3-D"):
        write_mrc(tmp_path / "a.mrc", np.zeros((2, 2, 2, 2)), voxel_size_a=1.0)
    with pytest.raises(TypeError, match="real"):
        write_mrc(tmp_path / "a.mrc", torch.zeros(2, 2, dtype=torch.complex64), voxel_size_a=1.0)
    with pytest.raises(FileNotFoundError, match="nope.mrc"):
        read_mrc(tmp_path / "nope.mrc")
    assert list(tmp_path.iterdir()) == []


# --- tilt angles, previews -----------------------------------------------------------------------


def test_tilt_angle_files(tmp_path):
    degrees = np.arange(-60.0, 61.0, 3.0) + 0.004
    raw, tlt = write_tilt_angles(tmp_path / "TS_01.rawtlt", torch.from_numpy(np.deg2rad(degrees)))
    assert (raw.name, tlt.name) == ("TS_01.rawtlt", "TS_01.tlt")
    lines = tlt.read_text().splitlines()
    assert len(lines) == len(degrees) and lines[0] == "-60.00" and lines[20] == "0.00"
    assert all(len(line.split()) == 1 for line in lines)  # IMOD: one angle per line
    assert raw.read_text() == tlt.read_text()
    back = read_tilt_angles(tlt) * 180 / math.pi
    np.testing.assert_allclose(back.numpy(), degrees, atol=0.005 + 1e-9)
    with pytest.raises(FileExistsError, match="TS_01.rawtlt already exists"):
        write_tilt_angles(tmp_path / "TS_01", [0.0])
    write_tilt_angles(tmp_path / "TS_01", [0.1], overwrite=True)
    assert tlt.read_text() == "5.73\n"
    with pytest.raises(ValueError, match="angles_rad must be finite"):
        write_tilt_angles(tmp_path / "TS_02", [float("nan")])


def test_png_preview(tmp_path):
    from matplotlib import image as mpl_image

    data, _ = read_mrc(DATA / "fei-extended_crop2048.mrc")
    p = write_png_preview(tmp_path / "prev.png", data[:200, :300])
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgba = mpl_image.imread(p)
    assert rgba.shape[:2] == (200, 300)
    assert rgba[..., 0].min() == 0.0 and rgba[..., 0].max() == 1.0  # percentile stretch
    with pytest.raises(FileExistsError):
        write_png_preview(p, data[:10, :10])
    with pytest.raises(ValueError, match="2-D"):
        write_png_preview(tmp_path / "x.png", np.zeros((2, 3, 3)))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["prev.png"]


def test_io_imports_no_physics_stage():
    import ast

    modules: set[str] = set()
    for path in Path(io_files.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "tem_core.io.files" in modules  # the files were read
    physics = {"structure", "specimen", "potential", "propagate", "optics", "detector", "simulate"}
    assert not {m for m in modules if m.startswith("tem_core.") and m.split(".")[1] in physics}


def test_read_mrc_permissive_reads_a_vendor_header(data_dir):
    """The real HAADF stack (FEI header without the MAP ID) needs permissive mode."""
    import warnings

    with pytest.raises(ValueError, match="Map ID string not found"):
        read_mrc(data_dir / "HAADF.mrc.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, voxel = read_mrc(data_dir / "HAADF.mrc.gz", permissive=True)
    assert data.shape == (77, 256, 256) and data.dtype == np.int16
    assert voxel == 1.0  # a placeholder: the real pixel size (3.36 nm) is in the log
