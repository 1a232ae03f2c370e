"""Denoising (an inverse stage): recover noise-free detector images from noisy projections.

* :func:`denoise_surrogate`: the published diff-tem method (surrogate loss through the
  Poisson noise), with its unbiased and pathwise forms;
* :func:`denoise_poisson`: exact counts from the known detector model, their sum (the
  sufficient statistic), Anscombe transform and total variation with a SURE-chosen weight
  (the better method; non-local means and :func:`local_wiener`, a two-stage local
  spectral Wiener filter, as alternative priors) and ``"network"``, a U-Net trained on the
  simulator's own images with the exact noise model (:mod:`tem_core.denoise.learned`:
  :func:`train_denoiser`, :func:`load_denoiser`, :func:`network_denoise`);
* baselines :func:`mean_of_projections`, :func:`gaussian_filter`; :func:`nlm_denoise` for
  images with Gaussian noise;
* real tilt series: :func:`neighbour_references` (the paper's Algorithm 2) built on
  :func:`register` / :func:`warp`;
* metrics in :mod:`tem_core.denoise.metrics` (PSNR, SSIM, MSE, FFL, FRC).

Imports forward stages (``detector``) and ``estimators``; nothing imports it back.
"""

from tem_core.denoise import metrics
from tem_core.denoise.learned import (
    TrainSettings,
    load_denoiser,
    network_denoise,
    random_scene,
    train_denoiser,
)
from tem_core.denoise.poisson import (
    NLMSettings,
    PoissonResult,
    PoissonSettings,
    anscombe,
    denoise_poisson,
    gaussian_filter,
    inverse_anscombe,
    mean_of_projections,
    nlm_denoise,
    recover_electrons,
    tv_denoise,
    tv_sure,
)
from tem_core.denoise.registration import estimate_rotation, estimate_shift, register, warp
from tem_core.denoise.surrogate import (
    DEFAULT_ITERATIONS,
    ESTIMATORS,
    SurrogateResult,
    SurrogateSettings,
    denoise_surrogate,
)
from tem_core.denoise.tilts import estimate_noise_std, neighbour_references
from tem_core.denoise.wiener import WienerSettings, local_wiener

__all__ = [
    "DEFAULT_ITERATIONS",
    "ESTIMATORS",
    "NLMSettings",
    "PoissonResult",
    "PoissonSettings",
    "SurrogateResult",
    "SurrogateSettings",
    "TrainSettings",
    "WienerSettings",
    "anscombe",
    "denoise_poisson",
    "denoise_surrogate",
    "estimate_noise_std",
    "estimate_rotation",
    "estimate_shift",
    "gaussian_filter",
    "inverse_anscombe",
    "load_denoiser",
    "local_wiener",
    "mean_of_projections",
    "metrics",
    "neighbour_references",
    "network_denoise",
    "nlm_denoise",
    "recover_electrons",
    "random_scene",
    "register",
    "train_denoiser",
    "tv_denoise",
    "tv_sure",
    "warp",
]
