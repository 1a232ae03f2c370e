"""Datasets: TOML validation, per-item parameters from (seed, index), files, STAR, resuming.

The Dask runs (a worker killed mid-run, then resumed) are in ``test_dataset_dask.py``.
"""

from __future__ import annotations

import json
import math
import os
import tomllib

import numpy as np
import pytest
import torch
from conftest import DATA_DIR

from tem_core import io as tio
from tem_core.dataset import (
    DatasetSpecError,
    euler_zyz_from_matrices,
    generate_dataset,
    generate_item,
    item_parameters,
    load_dataset_spec,
    matrices_from_euler_zyz,
    parse_dataset_spec,
    particle_centers_a,
    read_star,
    record_is_current,
    settings_hash,
    write_star,
)
from tem_core.dataset.item import build_item, data_sha256
from tem_core.dataset.star import particle_columns
from tem_core.specimen import random_rotations

EXAMPLE = DATA_DIR / "example_dataset.toml"


def _raw() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def _spec(**changes) -> object:
    """The example description with ``{"section.key": value}`` changes."""
    raw = _raw()
    for path, value in changes.items():
        section, key = path.split(".")
        raw.setdefault(section, {})[key] = value
    return parse_dataset_spec(raw, source=EXAMPLE)


# --- description ------------------------------------------------------------------------


def test_example_description_loads() -> None:
    spec = load_dataset_spec(EXAMPLE)
    assert spec.n_items == 4 and spec.kind == "micrograph" and spec.seed == 20261201
    assert spec["grid.shape_px"] == (128, 128)
    assert spec["grid.pixel_size_a"].kind == "choice"
    assert spec["grid.pixel_size_a"].values == (1.5, 2.0)
    assert spec.structures[0].path == (DATA_DIR / "1crn.pdb.gz").resolve()
    assert spec.structures[0].copies.values == (2, 4)
    assert not any(k.startswith("tilt.") for k in spec.values)  # micrographs have no tilts


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"grid.pixle_size_a": 1.0}, r"example_dataset.toml: grid.pixle_size_a is not a known key"),
        ({"imaging.dose_e_per_a2": -1.0}, r"imaging.dose_e_per_a2 must be > 0 e/Å², got -1.0"),
        ({"imaging.defocus_um": {"gaussian": [1, 2]}}, r"imaging.defocus_um distribution must"),
        ({"imaging.defocus_um": {"uniform": [2.0, 1.0]}}, r"defocus_um uniform needs low <= high"),
        ({"specimen.ice_thickness_nm": {"uniform": [5.0]}}, r"needs \[low, high\] \[nm\]"),
        ({"grid.pixel_size_a": {"int_uniform": [1, 2]}}, r"grid.pixel_size_a cannot be drawn"),
        ({"grid.shape_px": [64, 0]}, r"grid.shape_px must be > 0 px, got 0"),
        ({"grid.shape_px": 64}, r"grid.shape_px must be a pair \[ny, nx\]"),
        ({"dataset.items": {"choice": [1, 2]}}, r"dataset.items is set once for the whole"),
        ({"dataset.items": 2.5}, r"dataset.items must be an integer, got 2.5"),
        ({"dataset.kind": "movie"}, r"dataset.kind must be one of \['micrograph', 'tilt_se"),
        ({"specimen.poses": {"choice": ["uniform", "random"]}}, r"specimen.poses must be one of"),
        ({"specimen.support": "carbon"}, r"specimen.support 'carbon' needs specimen.hole_dia"),
        ({"detector.camera": "k9"}, r"detector.camera must be one of \['parametric', 'de20"),
        ({"detector.dqe": 1.5}, r"detector.dqe must lie in \[1e-06, 1.0\]"),
        ({"microscope.voltage_kv": float("nan")}, r"microscope.voltage_kv must be finite"),
        ({"outputs.noise_free": "yes"}, r"outputs.noise_free must be true or false, got 'yes'"),
        ({"tilt.step_deg": 2.0}, r"tilt is only used when dataset.kind = 'tilt_series'"),
        ({"gird.shape_px": [1, 1]}, r"gird is not a known section"),
    ],
)
def test_bad_descriptions_name_file_key_value_unit(changes, match) -> None:
    with pytest.raises(DatasetSpecError, match=match):
        _spec(**changes)


def test_missing_keys_files_and_syntax(tmp_path) -> None:
    raw = _raw()
    del raw["dataset"]["seed"]
    with pytest.raises(DatasetSpecError, match=r"dataset.seed is required"):
        parse_dataset_spec(raw, source=EXAMPLE)
    raw = _raw()
    raw["structures"][0]["path"] = "missing.pdb"
    with pytest.raises(DatasetSpecError, match=r"structures\[0\].path must name an existing"):
        parse_dataset_spec(raw, source=EXAMPLE)
    raw = _raw()
    del raw["structures"]
    with pytest.raises(DatasetSpecError, match=r"structures is required"):
        parse_dataset_spec(raw, source=EXAMPLE)
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset]\nitems = = 3\n")
    with pytest.raises(DatasetSpecError, match=r"bad.toml: not valid TOML"):
        load_dataset_spec(bad)
    with pytest.raises(FileNotFoundError, match=r"nothere.toml does not exist"):
        load_dataset_spec(tmp_path / "nothere.toml")


def test_tilt_range_checked() -> None:
    raw = _raw()
    raw["dataset"]["kind"] = "tilt_series"
    raw["tilt"] = {"min_deg": 10.0, "max_deg": -10.0}
    with pytest.raises(DatasetSpecError, match=r"tilt.max_deg must be >= tilt.min_deg \(10.0 deg"):
        parse_dataset_spec(raw, source=EXAMPLE)
    raw["tilt"] = {"min_deg": -95.0}
    with pytest.raises(DatasetSpecError, match=r"tilt.min_deg must lie in \[-89.0, 89.0\] deg"):
        parse_dataset_spec(raw, source=EXAMPLE)


# --- per-item parameters ------------------------------------------------------------------


def test_item_parameters_depend_only_on_seed_index_and_key() -> None:
    spec = load_dataset_spec(EXAMPLE)
    p2 = item_parameters(spec, 2)
    assert p2 == item_parameters(spec, 2)
    assert p2 != item_parameters(spec, 1)
    # more items, or another distribution for one key, leave the other values of item 2 alone
    bigger = _spec(**{"dataset.items": 1000})
    assert item_parameters(bigger, 2) == p2
    other = item_parameters(_spec(**{"imaging.defocus_um": {"uniform": [3.0, 4.0]}}), 2)
    assert 3.0 <= other["imaging.defocus_um"] < 4.0
    assert {k: v for k, v in other.items() if k != "imaging.defocus_um"} == {
        k: v for k, v in p2.items() if k != "imaging.defocus_um"
    }
    # another master seed changes everything drawn
    reseeded = item_parameters(_spec(**{"dataset.seed": 1}), 2)
    assert reseeded["seed.noise"] != p2["seed.noise"]
    assert reseeded["imaging.defocus_um"] != p2["imaging.defocus_um"]
    with pytest.raises(ValueError, match=r"index must be an integer in \[0, 4\), got 4"):
        item_parameters(spec, 4)


def test_drawn_values_follow_their_distributions() -> None:
    spec = _spec(**{"dataset.items": 400})
    draws = [item_parameters(spec, i) for i in range(400)]
    defocus = np.array([d["imaging.defocus_um"] for d in draws])
    assert defocus.min() >= 0.5 and defocus.max() < 1.1
    # uniform on [0.5, 1.1): mean 0.8, sd 0.6 / √12 = 0.173; 400 draws: standard error 0.0087
    assert abs(defocus.mean() - 0.8) < 4 * 0.173 / math.sqrt(400)
    copies = {d["structures.0.copies"] for d in draws}
    assert copies == {2, 3, 4} and all(isinstance(c, int) for c in copies)
    assert {d["grid.pixel_size_a"] for d in draws} == {1.5, 2.0}


def test_settings_hash_tracks_what_decides_the_files() -> None:
    spec = load_dataset_spec(EXAMPLE)
    h = settings_hash(spec, item_parameters(spec, 1))
    assert h == settings_hash(_spec(**{"dataset.items": 9}), item_parameters(spec, 1))
    changed = _spec(**{"grid.slice_thickness_a": 20.0})
    assert settings_hash(changed, item_parameters(changed, 1)) != h
    changed = _spec(**{"outputs.potential_volume": True})
    assert settings_hash(changed, item_parameters(changed, 1)) != h


def test_settings_hash_tracks_the_particles_star_layout(monkeypatch) -> None:
    """Items written with another STAR layout (layout 1: continuous x / s coordinates) are
    not current: a resumed dataset regenerates them."""
    from tem_core.dataset import item

    spec = load_dataset_spec(EXAMPLE)
    h = settings_hash(spec, item_parameters(spec, 1))
    monkeypatch.setattr(item, "PARTICLES_STAR_LAYOUT", 1)
    assert settings_hash(spec, item_parameters(spec, 1)) != h


# --- items on disk ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop_dataset(tmp_path_factory):
    """The example dataset generated by a plain loop (no Dask)."""
    out = tmp_path_factory.mktemp("loop")
    report = generate_dataset(EXAMPLE, out, workers=0, progress=False)
    return out, report


def test_loop_dataset_files_and_tables(loop_dataset) -> None:
    out, report = loop_dataset
    assert report.completed == (0, 1, 2, 3) and not report.failed and report.skipped == ()
    spec = load_dataset_spec(EXAMPLE)
    rows = json.loads((out / "metadata.json").read_text())["items"]
    csv_lines = (out / "metadata.csv").read_text().splitlines()
    assert len(rows) == 4 and len(csv_lines) == 5
    header = csv_lines[0].split(",")
    for key in [*spec.sampled_keys(), "seed.specimen", "seed.noise", "image_data_sha256"]:
        assert key in header, key
    for row in rows:
        params = item_parameters(spec, row["index"])
        assert row["imaging.defocus_um"] == params["imaging.defocus_um"]
        image, pixel = tio.read_mrc(out / row["file.image"])
        assert image.shape == (128, 128) and pixel == pytest.approx(row["grid.pixel_size_a"])
        assert data_sha256(image) == row["image_data_sha256"]
        noise_free, _ = tio.read_mrc(out / row["file.noise_free"])
        # counts are Poisson-like around the noise-free image: mean dose per pixel agrees
        expected_mean = row["imaging.dose_e_per_a2"] * row["grid.pixel_size_a"] ** 2
        assert noise_free.mean() == pytest.approx(expected_mean, rel=0.05)
        assert image.mean() == pytest.approx(noise_free.mean(), rel=0.05)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["items"]) == [f"item_{i:06d}" for i in range(4)]


def test_any_item_regenerates_alone_bit_for_bit(loop_dataset, tmp_path) -> None:
    out, _ = loop_dataset
    spec = load_dataset_spec(EXAMPLE)
    record = generate_item(spec, 2, tmp_path)
    for role in ("image", "noise_free"):
        a, _ = tio.read_mrc(out / record["files"][role]["path"])
        b, _ = tio.read_mrc(tmp_path / record["files"][role]["path"])
        assert np.array_equal(a, b), role
    star = "particles/item_000002.star"
    assert (out / star).read_text() == (tmp_path / star).read_text()


def test_resume_checks_the_record_not_the_files(loop_dataset, tmp_path) -> None:
    import shutil

    src, _ = loop_dataset
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    spec = load_dataset_spec(EXAMPLE)
    assert all(record_is_current(spec, i, out) for i in range(4))
    # a changed file, a missing record, and a changed description are all redone
    image = out / "micrographs/item_000001.mrc"
    image.write_bytes(image.read_bytes()[:-4] + b"\0\0\0\0")
    (out / "records/item_000003.json").unlink()
    report = generate_dataset(EXAMPLE, out, workers=0, progress=False)
    assert report.completed == (1, 3) and report.skipped == (0, 2)
    for i in (1, 3):
        a, _ = tio.read_mrc(src / f"micrographs/item_{i:06d}.mrc")
        b, _ = tio.read_mrc(out / f"micrographs/item_{i:06d}.mrc")
        assert np.array_equal(a, b)
    assert (out / "metadata.csv").read_text() == (src / "metadata.csv").read_text()
    changed = _spec(**{"imaging.dose_e_per_a2": 30.0})
    assert record_is_current(changed, 0, out) is None


def test_failed_item_reported_with_traceback_and_parameters(tmp_path) -> None:
    # 400 crambins cannot fit in a 128 x 128 px field: those items fail, the others finish
    raw = _raw()
    raw["dataset"].update(items=3, seed=20261203)
    raw["structures"][0]["copies"] = {"choice": [1, 400]}
    spec = parse_dataset_spec(raw, source=EXAMPLE)
    copies = [item_parameters(spec, i)["structures.0.copies"] for i in range(3)]
    assert 1 in copies and 400 in copies  # this seed draws both
    messages: list[str] = []
    report = generate_dataset(spec, tmp_path, workers=0, progress=False, log=messages.append)
    bad = tuple(i for i, c in enumerate(copies) if c == 400)
    assert tuple(f["index"] for f in report.failed) == bad
    assert report.completed == tuple(i for i in range(3) if i not in bad)
    failures = json.loads((tmp_path / "failures.json").read_text())
    assert failures[0]["error"].startswith("ValueError: could place only")
    assert "place_particles" in failures[0]["traceback"]
    assert failures[0]["parameters"]["structures.0.copies"] == 400
    assert any("failed" in m for m in messages)


# --- STAR files and the Euler convention ----------------------------------------------


def _relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler_angles2matrix (src/euler.cpp), written out element by element."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )


def test_euler_angles_reproduce_the_specimen_rotations() -> None:
    rotations = random_rotations(200, generator=torch.Generator().manual_seed(3))
    angles = euler_zyz_from_matrices(rotations)
    assert bool((angles[:, 1] >= 0).all()) and bool((angles[:, 1] <= 180).all())
    for r, (rot, tilt, psi) in zip(rotations.numpy(), angles.numpy(), strict=True):
        np.testing.assert_allclose(_relion_matrix(rot, tilt, psi), r, atol=1e-12)
    back = matrices_from_euler_zyz(*angles.T)
    np.testing.assert_allclose(back.numpy(), rotations.numpy(), atol=1e-12)


def test_euler_angles_at_gimbal_lock() -> None:
    c, s = math.cos(0.5), math.sin(0.5)
    about_z = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # 180° about x
    for r in (torch.eye(3, dtype=torch.float64), about_z, flip @ about_z):
        angles = euler_zyz_from_matrices(r[None])[0]
        assert float(angles[0]) == 0.0  # rot set to 0 where only rot ± psi is defined
        np.testing.assert_allclose(_relion_matrix(*angles.tolist()), r.numpy(), atol=1e-12)


def test_particles_star_matches_the_specimen(loop_dataset) -> None:
    out, _ = loop_dataset
    spec = load_dataset_spec(EXAMPLE)
    params = item_parameters(spec, 1)
    setup = build_item(spec, params, torch.device("cpu"))
    block = read_star(out / "particles/item_000001.star")["particles"]
    s = params["grid.pixel_size_a"]
    x = np.array(block["rlnCoordinateX"], dtype=float)
    centres = setup.specimen.particle_centers_a.double().numpy()
    # RELION's frame: the index of the pixel holding the centre (pixel ix spans [ix, ix + 1)
    # here, RELION's pixel centres are integers), the rest in rlnOriginX/YAngst
    np.testing.assert_array_equal(x, np.floor(centres[:, 0] / s))
    origin_x = np.array(block["rlnOriginXAngst"], dtype=float)
    np.testing.assert_allclose(origin_x, (x + 0.5) * s - centres[:, 0], atol=5e-7)
    np.testing.assert_allclose(particle_centers_a(block, s).numpy(), centres[:, :2], atol=1e-6)
    for k, r in enumerate(setup.specimen.particle_rotations.double().numpy()):
        angles = [float(block[f"rlnAngle{n}"][k]) for n in ("Rot", "Tilt", "Psi")]
        np.testing.assert_allclose(_relion_matrix(*angles), r, atol=1e-6)  # 6 decimals [deg]
    assert block["rlnMicrographName"] == ["micrographs/item_000001.mrc"] * len(x)
    assert block["rlnClassNumber"] == ["1"] * len(x)


def test_particles_star_reads_with_an_independent_parser(loop_dataset) -> None:
    """The `starfile` package (teamtomo; pandas) reads every particles file as RELION
    would: one data block, numeric columns as numbers, the values we meant."""
    starfile = pytest.importorskip("starfile")  # the dev extra
    out, _ = loop_dataset
    spec = load_dataset_spec(EXAMPLE)
    for index in range(4):
        path = out / f"particles/item_{index:06d}.star"
        blocks = starfile.read(path, always_dict=True)
        assert list(blocks) == ["particles"]
        table = blocks["particles"]
        ours = read_star(path)["particles"]
        assert list(table.columns) == list(ours)
        params = item_parameters(spec, index)
        setup = build_item(spec, params, torch.device("cpu"))
        centres = setup.specimen.particle_centers_a.double().numpy()
        s = params["grid.pixel_size_a"]
        assert len(table) == len(centres) > 0
        # RELION's frame: position = coordinate - origin [px], pixel centres at integers;
        # origins written with 6 decimals [Å]
        for axis, i in (("X", 0), ("Y", 1)):
            position_px = table[f"rlnCoordinate{axis}"] - table[f"rlnOrigin{axis}Angst"] / s
            np.testing.assert_allclose((position_px + 0.5) * s, centres[:, i], atol=5e-7)
        angles = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float)
        for (rot, tilt, psi), r in zip(
            angles, setup.specimen.particle_rotations.double().numpy(), strict=True
        ):
            np.testing.assert_allclose(_relion_matrix(rot, tilt, psi), r, atol=1e-6)
        assert table["rlnClassNumber"].dtype.kind == "i"
        assert set(table["rlnMicrographName"]) == {f"micrographs/item_{index:06d}.mrc"}


def test_metadata_parquet_round_trip(loop_dataset, tmp_path, monkeypatch) -> None:
    """metadata.parquet (the parquet extra) holds the rows of metadata.json, every column
    in the CSV's order with its type; without pyarrow the CSV/JSON are written and a stale
    Parquet table is removed."""
    pq = pytest.importorskip("pyarrow.parquet")  # the dev extra
    out, report = loop_dataset
    assert report.tables["parquet"] == out / "metadata.parquet"
    table = pq.read_table(out / "metadata.parquet")
    rows = json.loads((out / "metadata.json").read_text())["items"]
    header = (out / "metadata.csv").read_text().splitlines()[0].split(",")
    assert table.column_names == header
    assert table.to_pylist() == rows  # ints, floats, strings and None unchanged
    assert str(table.schema.field("index").type) == "int64"
    assert str(table.schema.field("imaging.defocus_um").type) == "double"
    # a column of ints and floats (a drawn choice of both) is stored as float64
    from tem_core.dataset.run import _write_tables

    spec = load_dataset_spec(EXAMPLE)
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    records[0]["parameters"]["imaging.dose_e_per_a2"] = 3  # an int among floats
    paths = _write_tables(spec, tmp_path, records)
    mixed = pq.read_table(paths["parquet"])
    assert str(mixed.schema.field("imaging.dose_e_per_a2").type) == "double"
    assert mixed.column("imaging.dose_e_per_a2").to_pylist()[0] == 3.0
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # as if not installed
    paths = _write_tables(spec, tmp_path, records)
    assert sorted(paths) == ["csv", "json"] and not (tmp_path / "metadata.parquet").exists()


def test_particle_star_columns_are_in_relion_pixel_frame(tmp_path) -> None:
    """Coordinates are RELION pixel indices (pixel centres at integers) and the sub-pixel
    rest is rlnOriginX/Y/ZAngst = box centre - position [Å], as RELION's re-extraction
    writes them (preprocessing.cpp) and relion_reconstruct applies them (+origin shift).
    benchmarks/relion_star_check.py checks this with RELION 5.0.1 itself: the continuous
    x / s written before was half a pixel off in RELION's frame (FSC at 6.4 Å 0.79 with the
    origins as written, 0.53 with them half a pixel off)."""
    s = 2.0
    # pixel 10 spans [20, 22) Å here: its centre, its left edge, just before its right edge
    x = torch.tensor([21.0, 20.0, 21.998], dtype=torch.float64)
    centres = torch.stack([x, x.flip(0), torch.tensor([5.0, 0.5, 3.0]).double()], -1)
    cols = particle_columns(
        centers_a=centres,
        rotations=torch.eye(3, dtype=torch.float64).expand(3, 3, 3),
        pixel_size_a=s,
        class_numbers=[1, 1, 2],
        image_name="tilt_series/item_000000.mrc",
        with_z=True,
        tomogram=True,
    )
    assert list(cols)[:6] == [
        "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
        "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst",
    ]  # fmt: skip
    assert cols["rlnCoordinateX"] == [10.0, 10.0, 10.0]
    # RELION position (coordinate - origin / s): 10, 9.5, 10.499 px (pixel centres at integers)
    np.testing.assert_allclose(cols["rlnOriginXAngst"], [0.0, 1.0, -0.998], atol=1e-12)
    assert cols["rlnCoordinateZ"] == [2.0, 0.0, 1.0]
    np.testing.assert_allclose(cols["rlnOriginZAngst"], [0.0, 0.5, 0.0], atol=1e-12)
    assert all(-s / 2 < v <= s / 2 for k in "XYZ" for v in cols[f"rlnOrigin{k}Angst"])
    path = write_star(tmp_path / "p.star", {"particles": cols})
    back = particle_centers_a(read_star(path)["particles"], s)
    np.testing.assert_allclose(back.numpy(), centres.numpy(), atol=5e-7)  # 6 decimals [Å]
    # without origins a coordinate is a pixel centre
    np.testing.assert_allclose(
        particle_centers_a({"rlnCoordinateX": ["3"], "rlnCoordinateY": ["0"]}, s).numpy(),
        [[7.0, 1.0]],
    )
    with pytest.raises(ValueError, match=r"columns lack rlnCoordinateY"):
        particle_centers_a({"rlnCoordinateX": ["1"]}, s)
    with pytest.raises(ValueError, match=r"pixel_size_a must be > 0 Å, got 0"):
        particle_centers_a({"rlnCoordinateX": ["1"], "rlnCoordinateY": ["1"]}, 0)


def test_star_round_trip_and_errors(tmp_path) -> None:
    cols = {
        "rlnCoordinateX": [1.5, 2.25],
        "rlnClassNumber": [1, 2],
        "rlnMicrographName": ["a", "b"],
    }
    path = write_star(tmp_path / "p.star", {"particles": cols})
    assert read_star(path) == {
        "particles": {
            "rlnCoordinateX": ["1.500000", "2.250000"],
            "rlnClassNumber": ["1", "2"],
            "rlnMicrographName": ["a", "b"],
        }
    }
    with pytest.raises(FileExistsError, match="already exists"):
        write_star(path, {"particles": cols})
    with pytest.raises(ValueError, match=r"columns of block 'particles' differ in length"):
        write_star(tmp_path / "q.star", {"particles": {"rlnCoordinateX": [1.0], "rlnA": []}})
    with pytest.raises(ValueError, match=r"labels must look like rlnSomething, got 'x'"):
        write_star(tmp_path / "q.star", {"particles": {"x": [1.0]}})
    with pytest.raises(ValueError, match=r"STAR values must be non-empty words"):
        write_star(tmp_path / "q.star", {"particles": {"rlnMicrographName": ["a b"]}})


def test_camera_dqe_from_the_published_table_when_not_given() -> None:
    raw = _raw()
    raw["detector"] = {"camera": "k2_300kv"}
    spec = parse_dataset_spec(raw, source=EXAMPLE)
    params = item_parameters(spec, 0)
    assert params["detector.dqe"] is None
    detector = build_item(spec, params, torch.device("cpu")).detector
    from tem_core.detector import Detector

    assert detector.dqe == Detector.for_camera("k2_300kv").dqe and detector.mtf_camera == "k2_300kv"
    raw["detector"] = {"camera": "k2_200kv"}  # an MTF without a DQE table: DQE 1
    spec = parse_dataset_spec(raw, source=EXAMPLE)
    assert build_item(spec, item_parameters(spec, 0), torch.device("cpu")).detector.dqe == 1.0


def test_worker_threads_share_the_cores_of_a_host(monkeypatch) -> None:
    from types import SimpleNamespace

    from tem_core.dataset import run

    before = torch.get_num_threads()
    monkeypatch.setattr(run, "_cpu_count", lambda: 16)
    monkeypatch.setenv("TI_CPU_MAX_NUM_THREADS", "7")  # set by the user: kept
    worker = SimpleNamespace(address="tcp://10.0.0.5:4321", name="w", state=None)
    worker.state = SimpleNamespace(nthreads=2)
    try:
        # 4 workers of 2 threads on this host: 16 cores // 8 task threads
        run._ThreadLimits(None, {"10.0.0.5": 8}).setup(worker)
        assert torch.get_num_threads() == 2
        run._ThreadLimits(3, {"10.0.0.5": 8}).setup(worker)  # explicit --threads-per-worker
        assert torch.get_num_threads() == 3
        assert os.environ["TI_CPU_MAX_NUM_THREADS"] == "7"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"specimen.support": "gold"}, r"specimen.support 'gold' needs specimen.hole_diameter"),
        ({"specimen.edge_thickness_nm": 20.0}, r"edge_thickness_nm needs specimen.hole_diam"),
        (
            {"specimen.hole_diameter_um": 1.2, "specimen.edge_thickness_nm": 9.0},
            r"edge_thickness_nm must be >= specimen.ice_thickness_nm \(10.0 nm: a meniscus",
        ),
        ({"microscope.energy_filter": 1}, r"microscope.energy_filter must be true or false"),
    ],
)
def test_realism_options_are_checked(changes, match) -> None:
    with pytest.raises(DatasetSpecError, match=match):
        _spec(**changes)


def test_realism_options_reach_the_simulation() -> None:
    spec = _spec(
        **{
            "specimen.hole_diameter_um": 1.2,
            "specimen.support": "gold",
            "specimen.edge_thickness_nm": {"uniform": [12.0, 20.0]},
            "specimen.structured_ice": True,
            "microscope.energy_filter": {"choice": [True, False]},
            "imaging.radiation_damage": True,
        }
    )
    params = item_parameters(spec, 0)
    setup = build_item(spec, params, torch.device("cpu"))
    ice = setup.specimen.ice
    assert ice.support == "gold" and ice.hole_diameter_a == pytest.approx(1.2e4)
    assert ice.edge_thickness_a == pytest.approx(params["specimen.edge_thickness_nm"] * 10)
    assert setup.potential.ice_structure.seed == params["seed.ice"]
    assert setup.microscope.energy_filter is params["microscope.energy_filter"]
    assert setup.imaging.damage is not None
    # defaults: the package's (damage off for micrographs, on for tilt series; no filter)
    plain = build_item(
        load_dataset_spec(EXAMPLE),
        item_parameters(load_dataset_spec(EXAMPLE), 0),
        torch.device("cpu"),
    )
    assert plain.imaging.damage is None and plain.potential.ice_structure is None
    assert plain.microscope.energy_filter is False
