"""Forward pipeline: micrographs, tilt schemes, tilt series on disk (MRC + IMOD angles), resume."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import DATA_DIR

from tem_core import io as tio
from tem_core import simulate
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import PotentialSettings, inelastic_mean_free_path_a
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import read_structure

DEG = math.pi / 180


@pytest.fixture(scope="module")
def small_specimen():
    model = read_structure(DATA_DIR / "1crn.pdb.gz", dtype=torch.float64).centered()
    g = torch.Generator().manual_seed(7)
    return build_specimen(
        model, 1, extent_a=(64.0, 64.0), ice=IceSlab(thickness_a=60.0), generator=g
    )


SETTINGS = PotentialSettings(shape=(64, 64), sampling_a=1.0, slice_thickness_a=15.0)
SCOPE = Microscope(energy_ev=300e3)


def test_dose_symmetric_order_hagen() -> None:
    scheme = simulate.tilt_scheme(
        "dose-symmetric",
        min_angle_rad=-6 * DEG,
        max_angle_rad=6 * DEG,
        step_rad=2 * DEG,
        total_dose_e_per_a2=70.0,
        defocus_a=3e4,
    )
    # Hagen et al. 2017: start at 0, then groups of two on alternating sides
    assert np.allclose(np.array(scheme.angles_rad) / DEG, [0, 2, 4, -2, -4, 6, -6])
    assert scheme.total_dose_e_per_a2 == pytest.approx(70.0)
    assert np.allclose(
        np.array(scheme.angles_rad)[scheme.sorted_by_angle()] / DEG, [-6, -4, -2, 0, 2, 4, 6]
    )


def test_uniform_and_bidirectional() -> None:
    kw = dict(
        min_angle_rad=-4 * DEG,
        max_angle_rad=4 * DEG,
        step_rad=2 * DEG,
        total_dose_e_per_a2=10.0,
        defocus_a=2e4,
    )
    assert np.allclose(
        np.array(simulate.tilt_scheme("uniform", **kw).angles_rad) / DEG, [-4, -2, 0, 2, 4]
    )
    bi = simulate.tilt_scheme("bidirectional", **kw)
    assert np.allclose(np.array(bi.angles_rad) / DEG, [0, 2, 4, -2, -4])
    assert all(d == pytest.approx(2.0) for d in bi.dose_e_per_a2)


def test_scheme_from_mdoc(data_dir) -> None:
    scheme = simulate.tilt_scheme_from_mdoc(data_dir / "TS_017.mdoc")
    assert len(scheme) == 60
    assert scheme.angles_rad[0] / DEG == pytest.approx(
        8.0, abs=0.05
    )  # first exposure (dose-symmetric)
    assert min(scheme.angles_rad) / DEG == pytest.approx(-52.0, abs=0.05)
    assert max(scheme.angles_rad) / DEG == pytest.approx(66.0, abs=0.05)
    assert np.median(scheme.dose_e_per_a2) == pytest.approx(2.24, abs=0.01)
    assert all(d > 0 for d in scheme.defocus_a)  # positive = underfocus


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(kind="spiral"), "kind must be"),
        (dict(step_rad=0.0), "step_rad must be > 0"),
        (dict(total_dose_e_per_a2=-1.0), "total_dose_e_per_a2 must be > 0"),
        (dict(max_angle_rad=-1.0), "max_angle_rad must be >= min_angle_rad"),
        (dict(max_angle_rad=100 * DEG), "angles_rad must lie in"),
    ],
)
def test_scheme_errors(kwargs, match) -> None:
    args = dict(
        kind="uniform",
        min_angle_rad=-0.5,
        max_angle_rad=0.5,
        step_rad=0.1,
        total_dose_e_per_a2=10.0,
        defocus_a=1e4,
    )
    args.update(kwargs)
    kind = args.pop("kind")
    with pytest.raises(ValueError, match=match):
        simulate.tilt_scheme(kind, **args)


def test_imaging_errors() -> None:
    with pytest.raises(ValueError, match="defocus_a must be finite, got nan"):
        simulate.Imaging(defocus_a=float("nan"), dose_e_per_a2=10.0)
    with pytest.raises(ValueError, match="dose_e_per_a2 must be > 0"):
        simulate.Imaging(defocus_a=1e4, dose_e_per_a2=-1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        simulate.Imaging(defocus_a=1e4, dose_e_per_a2=1.0, method="ray-tracing")


def test_micrograph_mean_and_determinism(small_specimen) -> None:
    imaging = simulate.Imaging(defocus_a=1.5e4, dose_e_per_a2=40.0)
    runs = [
        simulate.micrograph(
            small_specimen,
            potential=SETTINGS,
            microscope=dataclasses.replace(SCOPE, energy_filter=True),
            detector=Detector(),
            imaging=imaging,
            generator=torch.Generator().manual_seed(3),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].counts, runs[1].counts)
    # ice absorbs (energy filter): transmitted fraction exp(-t/Λ) with t = 60 Å, Λ = 3500 Å
    expected_mean = 40.0 * 1.0**2 * math.exp(-60.0 / 3500.0)
    assert runs[0].expected.mean().item() == pytest.approx(expected_mean, rel=0.01)
    assert runs[0].counts.mean().item() == pytest.approx(expected_mean, rel=0.02)


def test_unfiltered_mean_is_dose_times_gain(small_specimen) -> None:
    """Without an energy filter the absorbed electrons return as inelastic background."""
    imaging = simulate.Imaging(defocus_a=1500.0, dose_e_per_a2=40.0)
    result = simulate.micrograph(
        small_specimen, potential=SETTINGS, microscope=SCOPE,
        detector=Detector(gain_counts_per_e=3.0), imaging=imaging,
    )  # fmt: skip
    # absorbed 1 - exp(-60/3500) = 1.7% of the electrons, all back (η = 1): mean = dose × gain
    # up to the elastic scattering beyond the band limit (measured 2e-5 here)
    assert result.expected.mean().item() == pytest.approx(40.0 * 3.0, rel=1e-4)
    assert result.inelastic.mean().item() == pytest.approx(-math.expm1(-60 / 3500), rel=0.05)
    # the background is smooth: nothing above 1/(2π·30 Å) survives the 30 Å blur
    spectrum = torch.fft.fft2(result.inelastic - result.inelastic.mean()).abs()
    k = torch.fft.fftfreq(spectrum.shape[-1], d=SETTINGS.sampling_a)
    high = (k[:, None] ** 2 + k[None, :] ** 2).sqrt() > 0.05
    assert spectrum[high].max() < 1e-6 * spectrum.sum()
    filtered = dataclasses.replace(SCOPE, energy_filter=True)
    zero_loss = simulate.micrograph(
        small_specimen, potential=SETTINGS, microscope=filtered,
        detector=Detector(gain_counts_per_e=3.0), imaging=imaging,
    )  # fmt: skip
    assert zero_loss.inelastic is None
    torch.testing.assert_close(
        result.intensity - result.inelastic, zero_loss.intensity, rtol=0, atol=1e-6
    )


def test_projection_close_to_multislice_for_thin_specimen(small_specimen) -> None:
    waves = [
        simulate.exit_wave(small_specimen, SETTINGS, energy_ev=300e3, method=m)
        for m in simulate.METHODS
    ]
    diff = torch.linalg.vector_norm(waves[0] - waves[1]) / torch.linalg.vector_norm(waves[0] - 1)
    # The Fresnel phase neglected over half the 60 Å specimen is at most
    # π λ (t/2) k_bl² = π · 0.0197 · 30 · (1/3)² = 0.21 rad at the band limit; the scattered
    # wave's power sits at low k, and the measured difference is 0.0264 (deterministic, seed 7).
    assert 0.02 < diff.item() < 0.03


def test_potential_without_energy_takes_the_microscope_energy(small_specimen) -> None:
    """The energy is stated once (Microscope); the ice absorbs as at that energy."""
    result = simulate.micrograph(
        small_specimen,
        potential=SETTINGS,
        microscope=Microscope(energy_ev=200e3, energy_filter=True),  # zero-loss: ice absorbs
        detector=Detector(),
        imaging=simulate.Imaging(defocus_a=1.5e4, dose_e_per_a2=40.0),
    )
    mfp_a = inelastic_mean_free_path_a(SETTINGS.ice_mfp_300kv_a, 200e3)
    # Λ ∝ β² = 1 - 1/γ², γ = 1 + E/mc² (mc² = 510998.95 eV): β² = 0.483462 / 0.602992
    assert mfp_a == pytest.approx(SETTINGS.ice_mfp_300kv_a * 0.483462 / 0.602992, rel=1e-5)
    expected_mean = 40.0 * math.exp(-60.0 / mfp_a)
    assert result.expected.mean().item() == pytest.approx(expected_mean, rel=0.01)
    assert SETTINGS.at_energy(200e3).energy_ev == 200e3
    assert SETTINGS.energy_ev is None and SETTINGS.absorption_energy_ev == 300e3


def test_energy_mismatch_and_memory_preflight(small_specimen) -> None:
    imaging = simulate.Imaging(defocus_a=1e4, dose_e_per_a2=10.0)
    at_300kv = dataclasses.replace(SETTINGS, energy_ev=300e3)
    with pytest.raises(ValueError, match=r"potential.energy_ev \(300000.0 eV, used for absorption"):
        simulate.micrograph(
            small_specimen,
            potential=at_300kv,
            microscope=Microscope(energy_ev=200e3),
            detector=Detector(),
            imaging=imaging,
        )
    huge = PotentialSettings(shape=(400_000, 400_000), sampling_a=1.0, slice_thickness_a=10.0)
    with pytest.raises(ValueError, match="needs about"):
        simulate.micrograph(
            small_specimen, potential=huge, microscope=SCOPE, detector=Detector(), imaging=imaging
        )


def _three_tilts(kind: str) -> dict:
    """tilt_series arguments for three tilts at -20, 0, 20 degrees on the small grid."""
    scheme = simulate.tilt_scheme(
        kind,
        min_angle_rad=-20 * DEG,
        max_angle_rad=20 * DEG,
        step_rad=20 * DEG,
        total_dose_e_per_a2=30.0,
        defocus_a=2e4,
    )
    return dict(
        scheme=scheme, potential=SETTINGS, microscope=SCOPE, detector=Detector(), progress=False
    )


def test_tilt_series_files_and_resume(small_specimen, tmp_path, monkeypatch) -> None:
    kwargs = _three_tilts("dose-symmetric")
    scheme = kwargs["scheme"]
    reference = simulate.tilt_series(
        small_specimen, generator=torch.Generator().manual_seed(5), **kwargs
    )

    stem = tmp_path / "series"
    calls = {"n": 0}
    original = simulate.micrograph

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run dies after its first tilt
        return original(*args, **kw)

    monkeypatch.setattr(simulate, "micrograph", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate.tilt_series(
            small_specimen, generator=torch.Generator().manual_seed(5), output=stem, **kwargs
        )
    assert not stem.with_suffix(".mrc").exists()  # no partial stack
    assert len(list((tmp_path / "series.tilts").glob("tilt_*.mrc"))) == 1

    calls["n"] = 10  # from now on never interrupt; count the tilts actually simulated
    result = simulate.tilt_series(
        small_specimen, generator=torch.Generator().manual_seed(5), output=stem, **kwargs
    )
    assert calls["n"] == 10 + len(scheme) - 1  # the finished tilt was skipped
    torch.testing.assert_close(result.stack, reference.stack)  # resumed == uninterrupted

    data, voxel = tio.read_mrc(stem.with_suffix(".mrc"))
    assert data.shape == (3, 64, 64) and voxel == pytest.approx(1.0)
    angles = [float(x) for x in stem.with_suffix(".rawtlt").read_text().split()]
    assert angles == pytest.approx([-20.0, 0.0, 20.0], abs=0.01)
    assert not (tmp_path / "series.tilts").exists()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate.tilt_series(small_specimen, output=stem, **kwargs)


def test_tilt_series_callback_reports_and_can_stop(small_specimen, tmp_path) -> None:
    kwargs = _three_tilts("uniform")
    scheme = kwargs["scheme"]
    seen = []
    reference = simulate.tilt_series(
        small_specimen,
        generator=torch.Generator().manual_seed(3),
        callback=lambda k, image: seen.append((k, image.shape)),
        **kwargs,
    )
    assert seen == [(k, (64, 64)) for k in range(len(scheme))]

    def stop_after_two(k, image):
        if k == 1:
            raise KeyboardInterrupt

    stem = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        simulate.tilt_series(
            small_specimen,
            generator=torch.Generator().manual_seed(3),
            output=stem,
            callback=stop_after_two,
            **kwargs,
        )
    assert len(list((tmp_path / "stopped.tilts").glob("tilt_*.mrc"))) == 2
    seen.clear()
    resumed = simulate.tilt_series(
        small_specimen,
        generator=torch.Generator().manual_seed(3),
        output=stem,
        callback=lambda k, image: seen.append(k),
        **kwargs,
    )
    assert seen == [2]  # only the missing tilt was simulated
    torch.testing.assert_close(resumed.stack, reference.stack)
    with pytest.raises(TypeError, match="callback must be callable"):
        simulate.tilt_series(small_specimen, callback="print", **kwargs)


def test_resolve_device() -> None:
    assert simulate.resolve_device("cpu") == torch.device("cpu")
    assert simulate.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device must be available"):
            simulate.resolve_device("cuda")


@pytest.mark.parametrize("method", simulate.METHODS)
def test_tilt_series_equals_micrographs_of_the_tilted_specimen(small_specimen, method) -> None:
    # A tilt series computes the atoms' Gaussians once, runs small grids single-threaded and
    # streams ice-only slices through the one-line multislice path: the same images as
    # independent micrographs.
    from tem_core.specimen import tilt_specimen

    kwargs = _three_tilts("dose-symmetric")
    scheme = kwargs["scheme"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", simulate.SamplingWarning)  # 64² is small for 2 µm
        series = simulate.tilt_series(small_specimen, method=method, **kwargs)
    damage = simulate.RadiationDamage()
    for k in range(len(scheme)):
        tilted = tilt_specimen(small_specimen, tilt_angle_rad=scheme.angles_rad[k])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", simulate.SamplingWarning)
            single = simulate.micrograph(
                tilted,
                potential=SETTINGS,
                microscope=SCOPE,
                detector=Detector(),
                imaging=simulate.Imaging(
                    defocus_a=scheme.defocus_a[k],
                    dose_e_per_a2=scheme.dose_e_per_a2[k],
                    method=method,
                    damage=damage,
                    prior_dose_e_per_a2=float(sum(scheme.dose_e_per_a2[:k])),
                ),
            ).expected
        image = series.stack[series.acquisition_index.index(k)]
        # the stack is stored in float32: within one float32 rounding (measured 4.7e-8)
        rel = float((image.double() - single).abs().max()) / float(single.abs().max())
        assert rel <= 2.0**-23


def test_projection_exit_wave_is_the_damaged_sum_of_slices(small_specimen) -> None:
    # method="projection" projects the atoms once and filters the projection once (the
    # damage filter is linear): equal to filtering and summing every slice (measured 2e-16
    # on the wave, 6e-16 relative on the absorption).
    from tem_core._optics_inelastic import summing_imaginary
    from tem_core.potential import iter_slice_potentials
    from tem_core.potential.damage import attenuation_filter, damaged
    from tem_core.propagate import phase_object_wave

    settings = SETTINGS.at_energy(300e3)
    filt = attenuation_filter(
        SETTINGS.shape, SETTINGS.sampling_a, simulate.RadiationDamage(),
        prior_dose_e_per_a2=20.0, dose_e_per_a2=10.0, energy_ev=300e3,
        device=torch.device("cpu"), dtype=torch.float64,
    )  # fmt: skip
    sink, ref_sink = [], []
    wave = simulate.exit_wave(
        small_specimen, SETTINGS, energy_ev=300e3, method="projection",
        attenuation=filt, absorption_sink=sink,
    )  # fmt: skip
    slices = damaged(iter_slice_potentials(small_specimen, settings), filt)
    slices = summing_imaginary(slices, ref_sink)
    reference = phase_object_wave(sum(slices), energy_ev=300e3)
    assert float((wave - reference).abs().max()) < 1e-12
    assert float((sink[0] - ref_sink[0]).abs().max()) < 1e-9 * float(ref_sink[0].abs().max())


# ----------------------------------------------------------------------------- exit-wave cache
def test_exit_wave_cache_reuses_the_wave_only_while_the_specimen_is_unchanged(small_specimen):
    """Fitting optics/detector parameters: the exit wave is computed once."""
    settings = dataclasses.replace(SETTINGS, shape=(32, 32), sampling_a=2.0)
    cache = simulate.ExitWaveCache()

    def run(defocus, cache=None, specimen=small_specimen, alpha=0.0):
        return simulate.micrograph(
            specimen, potential=settings, microscope=SCOPE, detector=Detector(alpha=alpha),
            imaging=simulate.Imaging(defocus_a=defocus, dose_e_per_a2=40.0),
            exit_wave_cache=cache,
        )  # fmt: skip

    first = run(1500.0, cache)
    again = run(2500.0, cache, alpha=0.1)
    assert (cache.hits, cache.misses) == (1, 1)
    assert again.exit_wave is first.exit_wave
    fresh = run(2500.0, alpha=0.1)
    assert torch.equal(again.expected, fresh.expected)  # identical, not merely close
    # gradient wrt the defocus through the cached wave equals the uncached one
    grads = []
    for c in (cache, None):
        defocus = torch.tensor(2000.0, dtype=torch.float64, requires_grad=True)
        run(defocus, c).expected.sum().backward()
        grads.append(defocus.grad)
    assert cache.hits == 2 and torch.equal(grads[0], grads[1])
    # an in-place change of the atoms is a miss; atoms that need a gradient bypass the cache
    moved = dataclasses.replace(
        small_specimen, atoms=small_specimen.atoms._replace_positions(
            small_specimen.atoms.positions_a.clone()))  # fmt: skip
    run(1500.0, cache, specimen=moved)
    assert cache.misses == 2
    moved.atoms.positions_a.add_(0.5)
    shifted = run(1500.0, cache, specimen=moved)
    assert cache.misses == 3
    assert torch.equal(shifted.expected, run(1500.0, specimen=moved).expected)
    pos = moved.atoms.positions_a.clone().requires_grad_(True)
    graded = dataclasses.replace(moved, atoms=moved.atoms._replace_positions(pos))
    run(1500.0, cache, specimen=graded).expected.sum().backward()
    run(1500.0, cache, specimen=graded)
    assert cache.misses == 5 and pos.grad is not None and float(pos.grad.abs().sum()) > 0
