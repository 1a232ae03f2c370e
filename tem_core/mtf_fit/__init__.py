"""Detector MTF from micrographs: noise-spectrum fits, the published FFL fit, knife edges.

* :func:`fit_mtf_whittle` fits ``s · MTF²(ω)``, the noise power spectrum (NPS) of
  Poisson noise blurred by the MTF (TEM-simulator's detector model,
  :func:`tem_core.detector.detect` with ``mtf_after_noise=True``), to background crops by
  the Whittle likelihood, chooses the model (white, ``p = q = 1``, shape exponents
  fitted, a monotone spline) by AIC, and reports standard errors from the Fisher
  information. The NPS scale (the gain) is confounded with the MTF below the lowest
  frequency bins; the whitened noise (:func:`poisson_scale`, Poisson statistics: the
  count lattice of :mod:`tem_core.mtf_fit.lattice`, cross-checked by the skewness)
  measures it independently and is combined with the spectrum.
  Counting cameras (K2, Falcon in counting mode) count each electron once in one pixel:
  their background noise is nearly white while their signal is blurred, so the NPS
  shows the noise transfer, not the MTF. The fit detects this (a white spectrum, or a
  noise transfer above the pixel-aperture limit sinc(0.5) = 2/π at Nyquist), warns, and
  flags the result as not identifiable.
* :func:`fit_mtf_edge` measures the MTF from the signal: the edge spread function of a
  straight, sharp edge (knife edge, beam stop, a support-film edge in focus), for
  cameras whose noise cannot show it.
* :func:`fit_mtf_ffl` reproduces the published method (DiffTEM, Nguyen et al.; code
  ``nanovis/diff-tem-release``): flat Poisson images simulated with the current MTF are
  compared with the crops by MSE + focal frequency loss and the parameters stepped by
  Adam. Simulated and observed noise are independent, so the expected loss
  ``σ²(|MTF_θ|² + |MTF|²)`` is smallest for ``MTF_θ → 0``; in
  ``benchmarks/mtf_experiments.py`` it ends 90-100% off for every loss variant. It is
  kept as a baseline and reported honestly.

Frequencies are in cycles per pixel (Nyquist 0.5). Background crops are selected with
:func:`find_background_crops` and checked by :func:`detect_particles_in_crops`.
"""

from tem_core.mtf_fit.bootstrap import BootstrapReplicas
from tem_core.mtf_fit.crops import (
    BackgroundCrops,
    detect_particles_in_crops,
    find_background_crops,
)
from tem_core.mtf_fit.edge import EdgeMTF, fit_mtf_edge, knife_edge_image
from tem_core.mtf_fit.ffl import fit_mtf_ffl, focal_frequency_loss, normalise_min_max
from tem_core.mtf_fit.periodogram import averaged_periodogram, radial_profile
from tem_core.mtf_fit.poisson import PoissonScale, poisson_scale
from tem_core.mtf_fit.result import (
    NYQUIST_FRACTIONS,
    PARAM_NAMES,
    ModelChoice,
    MTFFit,
    MTFNotIdentifiableError,
    blurred_image_difference,
    mtf_relative_rms_error,
)
from tem_core.mtf_fit.synthetic import (
    mtf_from_spec,
    simulate_flat_background,
    synthetic_background_crops,
)
from tem_core.mtf_fit.whittle import fit_mtf_whittle

__all__ = [
    "BackgroundCrops",
    "BootstrapReplicas",
    "EdgeMTF",
    "MTFFit",
    "MTFNotIdentifiableError",
    "ModelChoice",
    "NYQUIST_FRACTIONS",
    "PARAM_NAMES",
    "PoissonScale",
    "averaged_periodogram",
    "blurred_image_difference",
    "detect_particles_in_crops",
    "find_background_crops",
    "fit_mtf_edge",
    "fit_mtf_ffl",
    "fit_mtf_whittle",
    "focal_frequency_loss",
    "knife_edge_image",
    "mtf_from_spec",
    "mtf_relative_rms_error",
    "normalise_min_max",
    "poisson_scale",
    "radial_profile",
    "simulate_flat_background",
    "synthetic_background_crops",
]
