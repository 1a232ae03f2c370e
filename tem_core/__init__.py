"""tem_core: fast, differentiable transmission electron microscopy simulation.

Stages (data flows one way):
``units -> structure -> specimen -> potential -> propagate -> optics -> detector -> io ->
simulate``, then the inverse stages ``mtf_fit``, ``denoise``, ``reconstruct``, ``render``.

The public names of every stage are available from the package itself, e.g.
``tem_core.micrograph`` or ``from tem_core import Detector, read_structure``, and each stage
stays importable as a module (``tem_core.detector``). Names are imported on first use
(PEP 562), so ``import tem_core`` is cheap and does not start Taichi.
"""

import importlib as _importlib
import os as _os

# Taichi prints a version banner on import; keep it out of notebooks and logs.
_os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")
# ... and an info line ("Graphical python shell detected") in Jupyter kernels.
_os.environ.setdefault("TI_LOG_LEVEL", "warn")
# torch's OpenMP threads spin-wait and starve Taichi's thread pool on small machines; this only
# takes effect when tem_core is imported before torch (the Makefile and runner also set it).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tem_core import units  # noqa: E402

# Public names by the stage that defines them: each stage's ``__all__``
# (tests/test_public_api.py checks that the two agree).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "structure": (
        "AtomicModel",
        "assembly_operators",
        "expand_assembly",
        "fetch_pdb",
        "helical_operators",
        "read_structure",
        "rotation_about_axis",
        "rotate_points",
        "compose_rotations",
    ),
    "specimen": (
        "IceSlab",
        "Specimen",
        "amorphous_film",
        "assembly_in_ice",
        "build_specimen",
        "place_particles",
        "random_ice_slab",
        "random_rotations",
        "tilt_specimen",
    ),
    "potential": (
        "AtomCoefficients",
        "PARTICLE_REPRESENTATIONS",
        "ParticleMaps",
        "CARBON_MEAN_INNER_POTENTIAL_V",
        "ICE_MEAN_INNER_POTENTIAL_V",
        "IceStructure",
        "check_specimen_grid",
        "PotentialSettings",
        "RadiationDamage",
        "absorptive_potential_v",
        "displaced_volumes_a3",
        "ice_mean_inner_potential_v",
        "inelastic_mean_free_path_a",
        "iter_slice_potentials",
        "mean_inner_potential_v",
        "peng_coefficients",
        "projected_potential",
        "slice_edges_a",
        "slice_potential",
    ),
    "propagate": (
        "SamplingWarning",
        "apply_bandlimit",
        "available_memory_bytes",
        "bandlimit_mask",
        "check_ctf_sampling",
        "check_sampling",
        "estimate_wave_memory_bytes",
        "fresnel_propagator",
        "multislice",
        "multislice_step",
        "phase_object_wave",
        "plane_wave",
        "transmission_function",
    ),
    "optics": (
        "BeamMotion",
        "FWHM_TO_RMS",
        "Microscope",
        "aberration_phase",
        "aperture",
        "apply_ctf",
        "check_thon_ring_sampling",
        "chromatic_factor",
        "ctf",
        "ctf_1d",
        "ctf_zeros_per_a",
        "defocus_from_uv",
        "defocus_to_uv",
        "image_intensity",
        "spatial_envelope",
        "temporal_envelope",
    ),
    "detector": (
        "NOISE_MODELS",
        "Detector",
        "apply_mtf",
        "available_cameras",
        "available_dqe_tables",
        "detect",
        "expected_and_detected",
        "expected_electrons",
        "expected_image",
        "load_dqe_table",
        "load_mtf_table",
        "mtf_parametric",
        "mtf_tabulated",
        "poisson_log_prob",
        "radial_frequency_cycles_per_px",
        "sample_counts",
        "sample_electrons",
    ),
    "interop": ("accepts_arrays", "as_tensor", "is_foreign_array", "to_array"),
    "io": (
        "MdocTiltSeries",
        "read_mdoc",
        "read_mrc",
        "read_tilt_angles",
        "write_mrc",
        "write_png_preview",
        "write_tilt_angles",
    ),
    "simulate": (
        "ExitWaveCache",
        "Imaging",
        "MicrographResult",
        "TiltScheme",
        "TiltSeriesResult",
        "exit_wave",
        "image_plane_intensity",
        "micrograph",
        "micrograph_memory_bytes",
        "atom_slice_range",
        "resolve_device",
        "tilt_scheme",
        "tilt_scheme_from_mdoc",
        "tilt_series",
    ),
    "dataset": (
        "DatasetReport",
        "DatasetSpec",
        "DatasetSpecError",
        "ParameterDistribution",
        "euler_zyz_from_matrices",
        "generate_dataset",
        "generate_item",
        "item_name",
        "item_parameters",
        "item_paths",
        "load_dataset_spec",
        "matrices_from_euler_zyz",
        "metadata_rows",
        "parse_dataset_spec",
        "particle_centers_a",
        "read_star",
        "record_is_current",
        "settings_hash",
        "write_star",
    ),
    "ctf_fit": ("CTFFitResult", "fit_ctf", "micrograph_power_spectrum", "ring_background"),
    "mtf_fit": (
        "NYQUIST_FRACTIONS",
        "PARAM_NAMES",
        "BackgroundCrops",
        "BootstrapReplicas",
        "MTFFit",
        "averaged_periodogram",
        "blurred_image_difference",
        "detect_particles_in_crops",
        "find_background_crops",
        "fit_mtf_ffl",
        "fit_mtf_whittle",
        "focal_frequency_loss",
        "mtf_relative_rms_error",
        "normalise_min_max",
        "radial_profile",
        "simulate_flat_background",
        "synthetic_background_crops",
        "EdgeMTF",
        "MTFNotIdentifiableError",
        "ModelChoice",
        "fit_mtf_edge",
        "knife_edge_image",
        "mtf_from_spec",
        "PoissonScale",
        "poisson_scale",
    ),
    "reconstruct": (
        "FILTERS",
        "TiltGeometry",
        "TomographyOperator",
        "angular_weights",
        "bin_stack",
        "correlation",
        "fourier_lowpass",
        "fourier_shell_correlation",
        "geometry_from_files",
        "geometry_from_tilt_series",
        "image_contrast",
        "potential_on_grid",
        "psnr_db",
        "ramp_kernel_response",
        "read_angles",
        "resolution_at",
        "sirt",
        "split_even_odd",
        "wbp",
        "wbp_filter",
    ),
    "estimators": ("RELAXATIONS", "pathwise_poisson_sample", "score_function_surrogate"),
    "fitting": (
        "FitHistory",
        "central_difference",
        "fit",
        "poisson_nll",
        "posed",
        "rotation_from_rotvec",
    ),
    "plotting": (
        "heatmap_table",
        "book_figure",
        "convergence",
        "image_tiles",
        "montage",
        "parameter_histograms",
        "power_spectrum",
        "radial_average",
        "show_fsc",
        "show_image",
        "show_missing_wedge",
        "show_orthoslices",
        "show_power_spectrum",
        "show_renderings",
        "volume_explorer",
        "use_book_style",
        "margin_table",
        "method_margins",
        "peer_results_text",
        "recorded_table",
        "scaling_text",
        "wrap_text",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# Modules reachable as attributes (``tem_core.detector``) without an explicit import.
# (``render`` is a module only: its main function shares the stage's name)
_MODULES = ("units", "grids", "validation", "render", *_EXPORTS)

__all__ = ["units", *_WHERE]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(_importlib.import_module(f"tem_core.{_WHERE[name]}"), name)
    elif name in _MODULES:
        value = _importlib.import_module(f"tem_core.{name}")
    else:
        raise AttributeError(f"module 'tem_core' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_MODULES))
