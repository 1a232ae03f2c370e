"""Micrographs and tilt series: the forward pipeline from specimen to detector counts.

``specimen -> potential (slice by slice) -> multislice exit wave -> CTF -> intensity -> detector``.

The potential is streamed: :func:`tem_core.potential.iter_slice_potentials` yields one slice at
a time and :func:`tem_core.propagate.multislice` consumes it, so memory does not grow with the
specimen's thickness. Every continuous parameter (defocus, astigmatism, dose, detector
parameters, atom positions and B-factors through the potential) stays differentiable in
:func:`expected_micrograph`; :func:`micrograph` adds Poisson shot noise from an explicit
``torch.Generator``.

Tilt series rotate the specimen (not the beam) with :func:`tem_core.specimen.tilt_specimen`;
schemes (uniform, bidirectional, dose-symmetric after Hagen et al. 2017, or imported from a
SerialEM ``.mdoc``) are :class:`TiltScheme` objects. :func:`tilt_series` writes an MRC stack
with the pixel size and IMOD ``.rawtlt``/``.tlt`` files, atomically, and resumes an interrupted
run by skipping tilts already on disk.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tem_core import io as tio
from tem_core import memory
from tem_core._optics_inelastic import add_inelastic, summing_imaginary
from tem_core._optics_motion import apply_motion
from tem_core.detector import Detector, expected_and_detected
from tem_core.io import manifest
from tem_core.optics import BeamMotion, Microscope, apply_ctf, image_intensity
from tem_core.potential import (
    AtomCoefficients,
    ParticleMaps,
    PotentialSettings,
    iter_slice_potentials,
    projected_potential,
)
from tem_core.potential.damage import RadiationDamage, attenuation_filter, ice_exposed
from tem_core.propagate import SamplingWarning, check_sampling, multislice, phase_object_wave
from tem_core.simulate.cache import ExitWaveCache
from tem_core.simulate.checks import (
    _plain_values,
    _preflight,
    _release_between_tilts,
    _small_grid_threads,
    atom_slice_range,
    micrograph_memory_bytes,
)
from tem_core.simulate.schemes import TiltScheme, tilt_scheme, tilt_scheme_from_mdoc
from tem_core.specimen import Specimen, tilt_specimen
from tem_core.validation import (
    require_finite,
    require_nonnegative,
    require_positive,
)

METHODS = ("multislice", "projection")


__all__ = [
    "ExitWaveCache",
    "Imaging",
    "MicrographResult",
    "TiltScheme",
    "TiltSeriesResult",
    "atom_slice_range",
    "exit_wave",
    "image_plane_intensity",
    "micrograph",
    "micrograph_memory_bytes",
    "resolve_device",
    "tilt_scheme",
    "tilt_scheme_from_mdoc",
    "tilt_series",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device must be available, got {device!r} but torch sees no CUDA GPU")
    return dev


@dataclass(frozen=True, kw_only=True)
class Imaging:
    """Per-image acquisition settings.

    Parameters
    ----------
    defocus_a
        Defocus [Å], positive = underfocus.
    dose_e_per_a2
        Electron dose of this exposure [e/Å²].
    astigmatism_a
        Two-fold astigmatism magnitude [Å].
    astigmatism_angle_rad
        Azimuth of the astigmatism [rad].
    method
        ``"multislice"`` (default) or ``"projection"`` (phase-object approximation).
    damage
        :class:`RadiationDamage` curve: attenuate the potential by the exposure-averaged
        critical-exposure curve of this exposure, and average the ice structure's beam-induced
        motion over it (:class:`IceStructure`); ``None`` (single micrographs' default): neither.
    prior_dose_e_per_a2
        Dose the specimen received before this exposure [e/Å²] (tilt series: earlier tilts).
    motion
        :class:`BeamMotion` (drift, jitter): blur of the image over the exposure; ``None``.
    """

    defocus_a: float
    dose_e_per_a2: float
    astigmatism_a: float = 0.0
    astigmatism_angle_rad: float = 0.0
    method: str = "multislice"
    damage: RadiationDamage | None = None
    prior_dose_e_per_a2: float = 0.0
    motion: BeamMotion | None = None

    def __post_init__(self) -> None:
        require_finite("defocus_a", self.defocus_a, "Å")
        require_positive("dose_e_per_a2", self.dose_e_per_a2, "e/Å²")
        require_nonnegative("astigmatism_a", self.astigmatism_a, "Å")
        require_finite("astigmatism_angle_rad", self.astigmatism_angle_rad, "rad")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.damage is not None and not isinstance(self.damage, RadiationDamage):
            raise TypeError(f"damage must be a RadiationDamage or None, got {self.damage!r}")
        require_nonnegative("prior_dose_e_per_a2", self.prior_dose_e_per_a2, "e/Å²")
        if not isinstance(self.motion, BeamMotion | None):
            raise TypeError(f"motion must be a BeamMotion or None, got {self.motion!r}")


def exit_wave(
    specimen: Specimen,
    potential: PotentialSettings,
    *,
    energy_ev: float,
    method: str = "multislice",
    attenuation: torch.Tensor | None = None,
    absorption_sink: list | None = None,
    coefficients: AtomCoefficients | ParticleMaps | None = None,
) -> torch.Tensor:
    """Exit wave of a plane wave through ``specimen`` [complex, (ny, nx)], streamed by slice.

    ``potential.energy_ev=None`` takes ``energy_ev`` (see :meth:`PotentialSettings.at_energy`);
    ``attenuation`` (FFT order, real): radiation-damage filter of every slice (not of the ice
    structure's fluctuations, which average over the exposure themselves);
    ``absorption_sink``: a list that receives the projected imaginary potential [V·Å];
    ``coefficients``: the atoms' :class:`tem_core.potential.AtomCoefficients` (or, with
    ``potential.particle_representation="map"``, the :class:`tem_core.potential.ParticleMaps`),
    computed once when the same atoms are imaged many times (a tilt series). ``method="projection"``
    projects the atoms in one pass (:func:`tem_core.potential.projected_potential`) and
    applies the damage filter, which is linear, once to the projection.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    potential = potential.at_energy(energy_ev)
    if method == "projection":
        total = projected_potential(specimen, potential, coefficients=coefficients,
                                    attenuation=attenuation)  # fmt: skip
        total = next(memory.releasing([total]))  # the projection's temporaries
        if absorption_sink is not None:
            absorption_sink.append(total.imag)
        return phase_object_wave(total, energy_ev=energy_ev)
    slices = iter_slice_potentials(specimen, potential, coefficients=coefficients,
                                   attenuation=attenuation)  # fmt: skip
    if absorption_sink is not None:
        slices = summing_imaginary(slices, absorption_sink)
    return multislice(
        memory.releasing(slices),  # free heap pages back between steps (memory.releasing)
        sampling_a=potential.sampling_a,
        slice_thickness_a=potential.slice_thickness_a,
        energy_ev=energy_ev,
    )


def image_plane_intensity(
    wave: torch.Tensor,
    *,
    sampling_a: float,
    microscope: Microscope,
    defocus_a: float | torch.Tensor,
    astigmatism_a: float | torch.Tensor = 0.0,
    astigmatism_angle_rad: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Intensity ``|ψ ⊗ PSF|²`` in the image plane, normalised so vacuum gives 1 [dimensionless]."""
    imaged = apply_ctf(
        wave,
        sampling_a=sampling_a,
        microscope=microscope,
        defocus_a=defocus_a,
        astigmatism_a=astigmatism_a,
        astigmatism_angle_rad=astigmatism_angle_rad,
    )
    return image_intensity(imaged)


@dataclass(frozen=True, eq=False)
class MicrographResult:
    """A simulated micrograph: ``counts`` (noisy, None without generator), ``expected`` counts,
    the image-plane ``intensity`` and the ``exit_wave``."""

    counts: torch.Tensor | None
    expected: torch.Tensor
    intensity: torch.Tensor
    exit_wave: torch.Tensor
    sampling_a: float
    inelastic: torch.Tensor | None = None


def micrograph(
    specimen: Specimen,
    *,
    potential: PotentialSettings,
    microscope: Microscope,
    detector: Detector,
    imaging: Imaging,
    generator: torch.Generator | None = None,
    coefficients: AtomCoefficients | ParticleMaps | None = None,
    exit_wave_cache: ExitWaveCache | None = None,
) -> MicrographResult:
    """Simulate one micrograph of ``specimen``.

    Returns the expected (noise-free, differentiable) detector image and, when a
    ``generator`` is given, a Poisson-noise sample of it (noise before the MTF by default,
    as in TEM-simulator). Without an energy filter (``microscope.energy_filter=False``, the
    default) the intensity includes the inelastic background
    (:mod:`tem_core._optics_inelastic`, also returned as ``inelastic``); with
    ``imaging.damage`` the potential is attenuated by radiation damage. ``coefficients``:
    see :func:`exit_wave`. ``exit_wave_cache``: an :class:`ExitWaveCache` that reuses the
    exit wave while the specimen and potential are unchanged (fits of optics and detector).
    """
    device = specimen.atoms.positions_a.device
    if not isinstance(imaging, Imaging):
        raise TypeError(f"imaging must be an Imaging, got {type(imaging).__name__}")
    _preflight(
        potential,
        device,
        microscope,
        specimen,
        _plain_values(imaging.defocus_a),
        max(_plain_values(imaging.astigmatism_a), key=abs),
        detector=detector,
        method=imaging.method,
        damage=imaging.damage is not None,
    )
    attenuation = None
    if imaging.damage is not None:  # the moving ice averages over this exposure
        potential = ice_exposed(potential, imaging.dose_e_per_a2, microscope.energy_ev)
        attenuation = attenuation_filter(
            tuple(potential.shape), potential.sampling_a, imaging.damage,
            prior_dose_e_per_a2=imaging.prior_dose_e_per_a2, dose_e_per_a2=imaging.dose_e_per_a2,
            energy_ev=microscope.energy_ev, device=device, dtype=specimen.atoms.positions_a.dtype,
        )  # fmt: skip

    def compute():
        sink: list = []
        wave = exit_wave(
            specimen, potential, energy_ev=microscope.energy_ev, method=imaging.method,
            attenuation=attenuation, absorption_sink=None if microscope.energy_filter else sink,
            coefficients=coefficients,
        )  # fmt: skip
        return wave, sink

    damage = None if imaging.damage is None else (imaging.damage, imaging.prior_dose_e_per_a2,
                                                  imaging.dose_e_per_a2)  # fmt: skip
    key = (specimen, potential, microscope.energy_ev, microscope.energy_filter, imaging.method,
           damage)  # fmt: skip
    wave, sink = compute() if exit_wave_cache is None else exit_wave_cache.fetch(key, compute)
    memory.release_at_stage(wave)  # the multislice temporaries, before imaging (and backward)
    intensity = image_plane_intensity(
        wave,
        sampling_a=potential.sampling_a,
        microscope=microscope,
        defocus_a=imaging.defocus_a,
        astigmatism_a=imaging.astigmatism_a,
        astigmatism_angle_rad=imaging.astigmatism_angle_rad,
    )
    inelastic = None
    if not microscope.energy_filter:
        intensity, inelastic = add_inelastic(intensity, sink[0], microscope, potential.sampling_a)
    if imaging.motion is not None:  # blurs elastic and inelastic electrons alike
        intensity = apply_motion(intensity, potential.sampling_a, imaging.motion)
    memory.release_at_stage(intensity)  # the optics' temporaries, before the detector
    expected, counts = expected_and_detected(
        intensity,
        detector=detector,
        dose_e_per_a2=imaging.dose_e_per_a2,
        sampling_a=potential.sampling_a,
        generator=generator,
    )
    memory.release_at_boundary()
    return MicrographResult(counts, expected, intensity, wave, potential.sampling_a, inelastic)


# --- tilt series ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TiltSeriesResult:
    """A simulated tilt series, ordered by increasing tilt angle.

    ``stack`` is ``(n_tilts, ny, nx)`` detector counts (or expected counts without noise),
    ``angles_rad`` the matching angles, ``acquisition_index`` each image's position in the
    acquisition order and ``paths`` the files written (empty without ``output``).
    """

    stack: torch.Tensor
    angles_rad: tuple[float, ...]
    acquisition_index: tuple[int, ...]
    sampling_a: float
    paths: dict[str, Path]


def _tilt_path(workdir: Path, index: int) -> Path:
    return workdir / f"tilt_{index:03d}.mrc"


def _manifest(specimen, scheme, potential, microscope, detector, method, seed) -> dict:
    """Resume manifest of a tilt series (see :mod:`tem_core.io.manifest`)."""
    from tem_core import __version__

    atoms = specimen.atoms
    specimen_sha256 = manifest.sha256_of(
        atoms.atomic_numbers,
        atoms.positions_a,
        atoms.b_factors_a2,
        atoms.occupancies,
        specimen.slab_center_a,
        specimen.slab_normal,
        [specimen.extent_a, specimen.ice, specimen.tilt_angle_rad],
    )
    return manifest.make_manifest(
        "tilt_series",
        version=__version__,
        parameters=dict(
            specimen_sha256=specimen_sha256,
            scheme=scheme,
            potential=potential,
            microscope=microscope,
            detector=detector,
            method=method,
        ),
        n_tilts=len(scheme),
        shape=potential.shape,
        sampling_a=potential.sampling_a,
        seed=seed,
    )


def tilt_series(
    specimen: Specimen,
    *,
    scheme: TiltScheme,
    potential: PotentialSettings,
    microscope: Microscope,
    detector: Detector,
    generator: torch.Generator | None = None,
    method: str = "multislice",
    output: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    damage: RadiationDamage | None = RadiationDamage(),  # noqa: B008 (frozen, immutable)
) -> TiltSeriesResult:
    """Simulate a tilt series of ``specimen`` following ``scheme``.

    Parameters
    ----------
    generator
        Source of shot noise; ``None`` returns expected (noise-free) counts. Each tilt draws
        from its own generator seeded from this one, so a resumed run reproduces the same
        images as an uninterrupted one.
    output
        Path stem: writes ``<stem>.mrc`` (stack ordered by angle, pixel size in the header),
        ``<stem>.rawtlt`` and ``<stem>.tlt`` (IMOD, degrees), each atomically; per-tilt images
        go to ``<stem>.tilts/`` while running so that an interrupted run resumes there.
    resume
        Reuse tilts already in ``<stem>.tilts/``. That directory holds a ``manifest.json``
        (shape, pixel size, number of tilts, seed, tem_core version and a SHA-256 of every
        setting and of the specimen's atoms); a resume with other settings, a tilt image of
        another shape or pixel size, or tilt images without a manifest raise ``ValueError``
        saying how to start afresh. Temporary files left by a kill during a write are
        removed. ``resume=False`` clears the directory and starts afresh.
    callback
        Called as ``callback(index, image)`` after each simulated tilt (acquisition index,
        counts) once its image is on disk; for progress reports, live previews, or to stop
        a run (an exception raised there propagates, and a later call resumes).
    damage
        Radiation damage through the series (on by default): each tilt's potential is
        attenuated by the critical-exposure curve for the dose of the tilts acquired before
        it (acquisition order) plus its own exposure; ``None`` turns it off.
    """
    from tqdm.auto import tqdm

    if damage is not None and not isinstance(damage, RadiationDamage):
        raise TypeError(f"damage must be a RadiationDamage or None, got {damage!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(index, image), got {type(callback).__name__}")
    if not isinstance(scheme, TiltScheme):
        raise TypeError(f"scheme must be a TiltScheme, got {type(scheme).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, flag in (("overwrite", overwrite), ("resume", resume), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    device = specimen.atoms.positions_a.device if isinstance(specimen, Specimen) else None
    _preflight(
        potential, device, microscope, specimen, scheme.defocus_a, detector=detector,
        method=method, damage=damage is not None, n_images=len(scheme.angles_rad),
    )  # fmt: skip
    # structured ice: its modes concentrate on the series' views (still one 3-D object)
    potential = potential.for_views(scheme.angles_rad, scheme.tilt_axis_angle_rad)
    check_sampling(
        potential.shape,
        sampling_a=potential.sampling_a,
        slice_thickness_a=potential.slice_thickness_a,
        energy_ev=microscope.energy_ev,
        stacklevel=3,
    )
    base_seed = None
    if generator is not None:
        base_seed = int(
            torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item()
        )

    workdir = stem = None
    images: dict[int, torch.Tensor] = {}
    if output is not None:
        stem = Path(output)
        if stem.suffix in (".mrc", ".st"):
            stem = stem.with_suffix("")
        final = stem.with_suffix(".mrc")
        workdir = stem.parent / (stem.name + ".tilts")
        if final.exists() and not overwrite:
            extra = f" (the leftover {workdir} may be deleted)" if workdir.exists() else ""
            raise FileExistsError(
                f"output {final} exists; pass overwrite=True to replace it{extra}"
            )
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"output directory {workdir} cannot be created: {exc}") from exc
        wanted = _manifest(specimen, scheme, potential, microscope, detector, method, base_seed)
        manifest.remove_temp_files(workdir)  # a kill during a write leaves these
        if resume:
            manifest.check_manifest(workdir, wanted, item_pattern="tilt_*.mrc")
            for k in range(len(scheme)):  # read and check every stored tilt before simulating
                path = _tilt_path(workdir, k)
                if path.exists():
                    data = manifest.read_partial_image(path, potential.shape, potential.sampling_a)
                    images[k] = torch.from_numpy(data).to(device)
        else:
            manifest.clear_directory(workdir, ["tilt_*.mrc"])
        manifest.write_manifest(workdir, wanted)

    iterator = tqdm(range(len(scheme)), desc="tilts", disable=not progress, leave=False)
    coefficients = None
    if isinstance(specimen, Specimen) and len(images) < len(scheme):
        # elements, B-factors, occupancies do not change with tilt: their Gaussians once
        with torch.no_grad():  # every tilt runs without autograd
            if potential.particle_representation == "map":  # maps once for all tilts
                coefficients = ParticleMaps(specimen, potential)
            else:
                coefficients = AtomCoefficients(specimen, potential)
    # particle maps stand for the particles' atoms: tilt only the rest
    imaged = coefficients.light if isinstance(coefficients, ParticleMaps) else specimen
    for k in iterator:
        if k in images:
            continue
        tilted = tilt_specimen(
            imaged,
            tilt_angle_rad=scheme.angles_rad[k],
            tilt_axis_angle_rad=scheme.tilt_axis_angle_rad,
        )
        tilt_generator = None
        if base_seed is not None:
            tilt_generator = torch.Generator(device=device).manual_seed(base_seed + k)
        imaging = Imaging(
            defocus_a=scheme.defocus_a[k],
            dose_e_per_a2=scheme.dose_e_per_a2[k],
            method=method,
            damage=damage,
            prior_dose_e_per_a2=float(sum(scheme.dose_e_per_a2[:k])),
        )
        with torch.no_grad(), warnings.catch_warnings(), _small_grid_threads(potential, device):
            # checked once above for the whole series (largest defocus)
            warnings.simplefilter("ignore", SamplingWarning)
            result = micrograph(
                tilted,
                potential=potential,
                microscope=microscope,
                detector=detector,
                imaging=imaging,
                generator=tilt_generator,
                coefficients=coefficients,
            )
        # keep the image only: the exit wave and intensities would stay alive while the next
        # tilt runs (memory preflight: tem_core.memory.with_stored_images)
        images[k] = (result.counts if result.counts is not None else result.expected).float()
        del result
        _release_between_tilts(potential, device)  # small grids: only beyond a bound
        if workdir is not None:
            tio.write_mrc(
                _tilt_path(workdir, k),
                images[k].cpu().numpy(),
                voxel_size_a=potential.sampling_a,
                overwrite=True,
            )
        if callback is not None:
            callback(k, images[k])

    order = scheme.sorted_by_angle()
    stack = torch.stack([images[k] for k in order])
    angles = tuple(scheme.angles_rad[k] for k in order)
    paths: dict[str, Path] = {}
    if stem is not None and workdir is not None:
        # angle files first, the stack last: an existing stack means a complete series
        rawtlt, tlt = tio.write_tilt_angles(stem, angles, overwrite=True)
        paths["stack"] = tio.write_mrc(
            stem.with_suffix(".mrc"),
            stack.cpu().numpy(),
            voxel_size_a=potential.sampling_a,
            overwrite=overwrite,
        )
        paths.update(rawtlt=rawtlt, tlt=tlt)
        manifest.clear_directory(workdir, ["tilt_*.mrc"])
        try:
            workdir.rmdir()
        except OSError:
            warnings.warn(
                f"{workdir} holds files this package did not write; left in place",
                stacklevel=2,
            )
    return TiltSeriesResult(stack, angles, tuple(order), potential.sampling_a, paths)
