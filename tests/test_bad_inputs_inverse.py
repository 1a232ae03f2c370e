"""Bad inputs, second part: the mmCIF and dataset-TOML readers and the inverse stages.

Each case asserts the error type and the words of its message (parameter, value, unit), or
the warning for a value read in place of a missing one. The first part (MRC, IMOD, mdoc,
PDB, parameters, outputs, kill-and-resume, memory) is ``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import copy
import gzip
import math
import tomllib

import pytest
import torch
from conftest import DATA_DIR

from tem_core import denoise, mtf_fit, reconstruct, render
from tem_core.dataset import DatasetSpecError, load_dataset_spec, parse_dataset_spec
from tem_core.detector import Detector
from tem_core.potential import PotentialSettings
from tem_core.reconstruct import TiltGeometry, sirt, wbp
from tem_core.structure import read_structure

# --- files: mmCIF ------------------------------------------------------------------------------

CIF_HEADER = """data_test
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_entity_id
_atom_site.label_seq_id
_atom_site.pdbx_PDB_ins_code
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_comp_id
_atom_site.auth_asym_id
_atom_site.auth_atom_id
_atom_site.pdbx_PDB_model_num
"""


def _cif(tmp_path, *, x="1.0", occ="1.00", b="10.0", element="C", drop: str | None = None):
    """Two atoms 1.5 Å apart; ``drop`` removes a column (header and values)."""
    header = CIF_HEADER.splitlines()
    rows = [
        f"ATOM 1 {element} CA . ALA A 1 1 ? {x} 2.0 3.0 {occ} {b} 1 ALA A CA 1",
        f"ATOM 2 N N . ALA A 1 1 ? 2.5 2.0 3.0 {occ} {b} 1 ALA A N 1",
    ]
    if drop is not None:
        index = header.index(f"_atom_site.{drop}") - 2
        header.pop(index + 2)
        rows = [" ".join(v for i, v in enumerate(r.split()) if i != index) for r in rows]
    path = tmp_path / "model.cif"
    path.write_text("\n".join(header + rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("kwargs", "match", "occupancy", "b_factor"),
    [
        (
            dict(occ="?"),
            r"2 of 2 atoms have no occupancy \('\?' or '\.'.*read as occupancy 1",
            1,
            10,
        ),
        (dict(occ="."), r"2 of 2 atoms have no occupancy", 1.0, 10.0),
        (dict(drop="occupancy"), r"no _atom_site\.occupancy column\); read as occupancy 1", 1, 10),
        (dict(b="?"), r"2 of 2 atoms have no B .*read as B 20 Å²", 1.0, 20.0),
        (dict(drop="B_iso_or_equiv"), r"no _atom_site\.B_iso_or_equiv column.*B 20 Å²", 1, 20),
    ],
    ids=["occupancy-?", "occupancy-.", "no-occupancy-column", "B-?", "no-B-column"],
)
def test_cif_missing_values_are_read_with_a_warning(
    tmp_path, kwargs, match, occupancy, b_factor
) -> None:
    with pytest.warns(UserWarning, match=match):
        model = read_structure(_cif(tmp_path, **kwargs))
    assert model.occupancies.tolist() == [occupancy] * 2
    assert model.b_factors_a2.tolist() == [b_factor] * 2


CIF_CASES = [
    ("text-x", dict(x="abc"), r"non-finite coordinates \(nan, 2\.0, 3\.0\) Å for atom 'CA'"),
    ("huge-x", dict(x="1e30"), r"coordinates must lie within ±1e\+06 Å, got 1e\+30 Å"),
    ("occupancy", dict(occ="1.5"), r"occupancy must lie in \[0, 1\], got 1\.5 for atom 'CA'"),
    ("element", dict(element="Xx"), r"unknown or missing element symbol for atom 'CA'"),
]


@pytest.mark.parametrize(("kind", "kwargs", "match"), CIF_CASES, ids=[c[0] for c in CIF_CASES])
def test_cif_bad_values(tmp_path, kind, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        read_structure(_cif(tmp_path, **kwargs))


def test_cif_truncated_loop_and_empty_file(tmp_path) -> None:
    path = tmp_path / "cut.cif"
    path.write_text(CIF_HEADER + "ATOM 1 C CA . ALA A 1 1 ? 1.0\n")
    with pytest.raises(ValueError, match=r"cut\.cif: malformed or truncated mmCIF file"):
        read_structure(path)
    path.write_text("")
    with pytest.raises(ValueError, match=r"cut\.cif: malformed or truncated mmCIF"):
        read_structure(path)


def test_coordinates_in_nanometres_are_refused(tmp_path) -> None:
    """Crambin with its coordinates divided by 10 (a file written in nm)."""
    lines = []
    for line in gzip.open(DATA_DIR / "1crn.pdb.gz", "rt").read().splitlines():
        if line.startswith(("ATOM", "HETATM")):
            xyz = (float(line[c : c + 8]) / 10 for c in (30, 38, 46))
            line = line[:30] + "".join(f"{v:8.3f}" for v in xyz) + line[54:]
        lines.append(line)
    path = tmp_path / "crn_nm.pdb"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"median distance between neighbouring atoms is 0\.1"):
        read_structure(path)
    model = read_structure(DATA_DIR / "1crn.pdb.gz")  # the same file in Å reads
    assert len(model) == 327


# --- files: dataset descriptions (TOML) --------------------------------------------------------


def _spec_raw() -> dict:
    return tomllib.loads((DATA_DIR / "example_dataset.toml").read_text())


UNIT_SLIPS = [
    ("imaging", "defocus_um", 15000.0, r"imaging\.defocus_um must lie in \[-1000.0, 1000.0\] µm"),
    ("microscope", "voltage_kv", 300e3, r"microscope\.voltage_kv must lie in .* kV, got 300000"),
    ("microscope", "cs_mm", 2.7e7, r"microscope\.cs_mm must lie in \[-100.0, 100.0\] mm"),
    ("grid", "pixel_size_a", 1e-4, r"grid\.pixel_size_a must lie in \[0.01, 1000.0\] Å"),
    ("specimen", "ice_thickness_nm", 3e5, r"specimen\.ice_thickness_nm must lie in"),
]


@pytest.mark.parametrize(
    ("section", "key", "value", "match"), UNIT_SLIPS, ids=[c[1] for c in UNIT_SLIPS]
)
def test_dataset_values_in_another_unit_are_refused(section, key, value, match) -> None:
    raw = copy.deepcopy(_spec_raw())
    raw[section][key] = value
    with pytest.raises(DatasetSpecError, match=match):
        parse_dataset_spec(raw, source=DATA_DIR / "example_dataset.toml")


def test_dataset_nan_and_binary_files(tmp_path) -> None:
    text = (DATA_DIR / "example_dataset.toml").read_text()
    path = tmp_path / "nan.toml"
    path.write_text(text.replace("cs_mm = 2.7", "cs_mm = nan"))
    with pytest.raises(DatasetSpecError, match=r"microscope\.cs_mm must be finite, got nan mm"):
        load_dataset_spec(path)
    path.write_bytes(b"\xff\xfe[dataset]\n")
    with pytest.raises(DatasetSpecError, match=r"nan\.toml: not a UTF-8 text file \(byte 0"):
        load_dataset_spec(path)


def test_potential_settings_energy_unit_slip() -> None:
    with pytest.raises(ValueError, match=r"energy_ev must lie in .*got 200 eV: a unit slip"):
        PotentialSettings(shape=(8, 8), sampling_a=1.0, slice_thickness_a=1.0, energy_ev=200.0)


# --- inverse stages: NaN, empty and non-count inputs ---------------------------------------------


def _counts(shape, mean=20.0, seed=0):
    return torch.poisson(torch.full(shape, mean), generator=torch.Generator().manual_seed(seed))


def _with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[5] = math.nan
    return x


DENOISE_CASES = [
    ("nlm-nan", lambda: denoise.nlm_denoise(_with_nan(_counts((32, 32))), sigma=1.0),
     ValueError, r"image must be finite, got 1 pixels like nan"),
    ("gaussian-nan", lambda: denoise.gaussian_filter(_with_nan(_counts((8, 8))), sigma_px=1.0),
     ValueError, r"image must be finite"),
    ("gaussian-integer", lambda: denoise.gaussian_filter(torch.ones(8, 8, dtype=torch.int64),
                                                         sigma_px=1.0),
     TypeError, r"image must be a real floating tensor, got torch\.int64"),
    ("noise-std-nan", lambda: denoise.estimate_noise_std(_with_nan(_counts((8, 8)))),
     ValueError, r"image must be finite"),
    ("noise-std-empty", lambda: denoise.estimate_noise_std(torch.zeros(0, 0)),
     ValueError, r"image must be at least 3 x 3 pixels, got \(0, 0\)"),
    ("poisson-offset", lambda: denoise.denoise_poisson(_counts((3, 16, 16), 5.0) - 10.0,
                                                       detector=Detector()),
     ValueError, r"projections must be counts with a positive mean per image, got mean -"),
    ("surrogate-offset", lambda: denoise.denoise_surrogate(
        _counts((3, 16, 16), 5.0) - 10.0, detector=Detector(),
        generator=torch.Generator().manual_seed(0)),
     ValueError, r"projections must be counts with a positive mean"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "call", "error", "match"), DENOISE_CASES, ids=[c[0] for c in DENOISE_CASES]
)
def test_denoise_bad_images(kind, call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_edge_fit_refuses_an_image_without_edge() -> None:
    with pytest.raises(ValueError, match=r"image holds no edge: the edge-spread contrast is"):
        mtf_fit.fit_mtf_edge(_counts((256, 256)))
    edge = mtf_fit.knife_edge_image(
        (256, 256), mtf=dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0), angle_deg=5.0,
        mean_electrons_per_px=20.0, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert mtf_fit.fit_mtf_edge(edge).contrast_counts > 10  # a real edge at 20 e/px passes


def test_reconstruction_initial_volume_must_be_finite() -> None:
    angles = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64).tolist()
    geometry = TiltGeometry(
        angles_rad=angles, detector_shape=(16, 16), pixel_size_a=2.0, thickness_a=16.0
    )
    stack = torch.rand(7, 16, 16, dtype=torch.float64)
    initial = torch.zeros(geometry.volume_shape, dtype=torch.float64)
    initial[0, 0, 0] = math.inf
    with pytest.raises(ValueError, match=r"initial must be finite, got 1 non-finite voxels"):
        sirt(stack, geometry, n_iterations=1, initial=initial, progress=False)
    with pytest.raises(ValueError, match=r"stack must be finite, got 1 non-finite pixels"):
        wbp(_with_nan(stack), geometry, progress=False)


# --- inverse stages: the dtype and device rules (tem_core.validation.DTYPE_DEVICE_RULES) --------

HALF = r"must be float32 or float64, got torch\.(float16|bfloat16) \(half precision is not"
SAME_DEVICE = r"tensors combined in one call must share a device"


def _geometry() -> TiltGeometry:
    return TiltGeometry(
        angles_rad=[-0.5, 0.0, 0.5], detector_shape=(16, 16), pixel_size_a=2.0, thickness_a=16.0
    )


def _volume(dtype=torch.float64, device="cpu") -> torch.Tensor:
    return torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)


# every public entry point of denoise, mtf_fit, reconstruct and render with half precision
HALF_CASES = [
    ("nlm", lambda h: denoise.nlm_denoise(_counts((32, 32)).to(h), sigma=1.0)),
    ("gaussian", lambda h: denoise.gaussian_filter(_counts((8, 8)).to(h), sigma_px=1.0)),
    ("tv", lambda h: denoise.tv_denoise(_counts((8, 8)).to(h), weight=0.1, n_iterations=2)),
    ("tv-sure", lambda h: denoise.tv_sure(_counts((8, 8)).to(h), weights=(0.1,), n_iterations=2,
                                          generator=torch.Generator())),
    ("wiener", lambda h: denoise.local_wiener(_counts((32, 32)).to(h))),
    ("noise-std", lambda h: denoise.estimate_noise_std(_counts((8, 8)).to(h))),
    ("anscombe", lambda h: denoise.anscombe(_counts((8, 8)).to(h))),
    ("inverse-anscombe", lambda h: denoise.inverse_anscombe(_counts((8, 8)).to(h))),
    ("register", lambda h: denoise.register(_counts((16, 16)).to(h), _counts((16, 16)).to(h))),
    ("mean", lambda h: denoise.mean_of_projections(_counts((3, 8, 8)).to(h))),
    ("poisson", lambda h: denoise.denoise_poisson(_counts((3, 16, 16)).to(h),
                                                  detector=Detector())),
    ("surrogate", lambda h: denoise.denoise_surrogate(_counts((3, 16, 16)).to(h),
                                                      detector=Detector(),
                                                      generator=torch.Generator())),
    ("recover", lambda h: denoise.recover_electrons(_counts((3, 16, 16)).to(h),
                                                    detector=Detector())),
    ("ssim", lambda h: denoise.metrics.ssim(_counts((16, 16)).to(h), _counts((16, 16)).to(h),
                                            data_range=1.0)),
    ("whittle", lambda h: mtf_fit.fit_mtf_whittle(_counts((4, 32, 32)).to(h))),
    ("ffl", lambda h: mtf_fit.fit_mtf_ffl(_counts((4, 32, 32)).to(h),
                                          generator=torch.Generator(), n_steps=2)),
    ("edge", lambda h: mtf_fit.fit_mtf_edge(_counts((64, 64)).to(h))),
    ("periodogram", lambda h: mtf_fit.averaged_periodogram(_counts((4, 32, 32)).to(h))),
    ("background-crops", lambda h: mtf_fit.find_background_crops(_counts((64, 64)).to(h),
                                                                 crop_size=16)),
    ("radial", lambda h: mtf_fit.radial_profile(_counts((16, 16)).to(h))),
    ("ffl-loss", lambda h: mtf_fit.focal_frequency_loss(_counts((8, 8)).to(h),
                                                        _counts((8, 8)).to(h))),
    ("flat-mtf", lambda h: mtf_fit.simulate_flat_background(
        (16, 16), mean_electrons_per_px=10.0, mtf=torch.ones(16, 16, dtype=h),
        generator=torch.Generator())),
    ("flat-dtype", lambda h: mtf_fit.simulate_flat_background(
        (16, 16), mean_electrons_per_px=10.0, mtf=None, generator=torch.Generator(), dtype=h)),
    ("sirt", lambda h: sirt(_counts((3, 16, 16)).to(h), _geometry(), n_iterations=1,
                            progress=False)),
    ("wbp", lambda h: wbp(_counts((3, 16, 16)).to(h), _geometry(), progress=False)),
    ("fsc", lambda h: reconstruct.fourier_shell_correlation(_volume(h), _volume(h))),
    ("psnr", lambda h: reconstruct.psnr_db(_volume(h), _volume(h))),
    ("correlation", lambda h: reconstruct.correlation(_volume(h), _volume(h))),
    ("render", lambda h: render.render(_volume(h), render.Camera(),
                                       render.transfer_function((0.0, 1.0)))),
]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize(("kind", "call"), HALF_CASES, ids=[c[0] for c in HALF_CASES])
def test_inverse_stages_refuse_half_precision(kind, call, dtype) -> None:
    """Half precision was accepted silently by 13 of these (e.g. the Whittle fit returned an
    MTF from float16 crops) and crashed inside torch in the others ("Unsupported dtype")."""
    with pytest.raises(TypeError, match=HALF):
        call(dtype)


# a tensor on another device than the input it is combined with: the ``meta`` device stands
# for a second device where no GPU is present (the check comes before any value is read)
META = torch.device("meta")
DEVICE_CASES = [
    ("denoise-mtf", lambda: denoise.denoise_poisson(_counts((3, 16, 16)), detector=Detector(),
                                                    mtf=torch.ones(16, 16, device=META)),
     r"mtf is on meta but projections is on cpu; " + SAME_DEVICE),
    ("recover-mtf", lambda: denoise.recover_electrons(_counts((3, 16, 16)), detector=Detector(),
                                                      mtf=torch.ones(16, 16, device=META)),
     r"mtf is on meta but projections is on cpu"),
    ("register", lambda: denoise.estimate_shift(_counts((16, 16)),
                                                torch.ones(16, 16, device=META)),
     r"moving is on cpu but fixed is on meta"),
    ("ssim", lambda: denoise.metrics.ssim(torch.ones(16, 16, device=META), _counts((16, 16)),
                                          data_range=1.0),
     r"prediction is on meta but target is on cpu"),
    ("flat-mtf", lambda: mtf_fit.simulate_flat_background(
        (16, 16), mean_electrons_per_px=10.0, mtf=torch.ones(16, 16, device=META),
        generator=torch.Generator()),
     r"mtf is on meta but generator is on cpu: the images are drawn on the generator's"),
    ("ffl-loss", lambda: mtf_fit.focal_frequency_loss(_counts((8, 8)),
                                                      torch.ones(8, 8, device=META)),
     r"target is on meta but pred is on cpu"),
    ("sirt-initial", lambda: sirt(_counts((3, 16, 16)).double(), _geometry(), n_iterations=1,
                                  initial=torch.zeros(8, 16, 16, device=META), progress=False),
     r"initial is on meta but stack is on cpu"),
    ("fsc", lambda: reconstruct.fourier_shell_correlation(_volume(), _volume(device=META)),
     r"volume_b is on meta but volume_a is on cpu; " + SAME_DEVICE),
    ("psnr", lambda: reconstruct.psnr_db(_volume(), _volume(device=META)),
     r"truth is on meta but volume is on cpu"),
    ("render-transfer", lambda: render.render(_volume(device=META), render.Camera(),
                                              render.transfer_function((0.0, 1.0))),
     r"transfer\.opacity is on cpu but volume is on meta"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "call", "match"), DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_inverse_stages_refuse_a_device_mismatch(kind, call, match) -> None:
    """Each of these raised deep inside torch ("Tensor.item() cannot be called on meta
    tensors", "Cannot copy out of meta tensor") before the check."""
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generators_on_the_wrong_device() -> None:
    """A generator must be on the device type of what it draws for (a meta generator cannot
    be created, so this needs a GPU)."""
    gpu = torch.Generator(device="cuda").manual_seed(0)
    with pytest.raises(ValueError, match=r"generator is on cuda.* but the projections are on"):
        denoise.denoise_surrogate(_counts((3, 16, 16)), detector=Detector(), generator=gpu)
    with pytest.raises(ValueError, match=r"generator is on cuda.* but image is on cpu"):
        denoise.tv_sure(_counts((8, 8)), weights=(0.1,), n_iterations=2, generator=gpu)
    with pytest.raises(ValueError, match=r"generator must be a CPU torch\.Generator"):
        mtf_fit.fit_mtf_whittle(_counts((4, 32, 32)), generator=gpu, n_restarts=1)
