"""Why the NPS scale (the gain) is hard to get from the noise spectrum alone.

Noise-free analysis: for each camera table the exact NPS ``S(ω) = MTF²(ω)`` (scale
``s = 1``) is given to the Whittle likelihood at the frequency bins of 16 crops of
256² (``f_min = 1.5/256`` to Nyquist, as :func:`tem_core.mtf_fit.fit_mtf_whittle`), with
no noise and no leakage. Each model is fitted with ``s`` free. Printed: the fitted
``s − 1`` (the bias of the scale from the model's shape alone: what the model's
extrapolation below the first bins gives), the Cramér-Rao standard error of ``log s``
from the expected Fisher information at 16 crops of 256² (what the data can tell), and
the MTF error at 0.25 / 0.375 / 0.45 cycles/px. The Poisson-skewness measurement
(:mod:`tem_core.mtf_fit.poisson`) has a standard error of about 3.2% at 40 e/px for
comparison.

    .venv/bin/python benchmarks/mtf_scale_identifiability.py
"""

from __future__ import annotations

import math
import os

import torch

from tem_core.detector import available_cameras, radial_frequency_cycles_per_px
from tem_core.mtf_fit import mtf_from_spec
from tem_core.mtf_fit.likelihood import (
    WhittleProblem,
    fisher_covariance,
    newton,
    optimise,
    spline_start,
)

CHECK = torch.tensor([0.25, 0.375, 0.45], dtype=torch.float64)
N_CROPS, CROP = 16, 256


def problem_for(camera: str, model: str) -> WhittleProblem:
    radius = radial_frequency_cycles_per_px((CROP, CROP), dtype=torch.float64)
    half = radius[:, : CROP // 2 + 1]
    weight = torch.ones_like(half)
    weight[:, 0] = weight[:, -1] = 0.5
    mask = (half >= 1.5 / CROP) & (half <= 0.5)
    power = mtf_from_spec(camera, half) ** 2  # noise-free, s = 1
    return WhittleProblem.build(
        power,
        half,
        weight,
        mask,
        N_CROPS,
        model=model,
        width_bounds=(0.1, (CROP / 8.0) ** 2),
        shape_bounds=(0.2, 5.0),
    )


def main() -> None:
    torch.set_num_threads(1)
    print(f"# load {os.getloadavg()[0]:.1f}; {N_CROPS} crops of {CROP}², noise-free NPS")
    print(f"{'camera':16s} {'model':10s} {'s - 1':>8s} {'CR s.e.':>8s}   MTF error at checks")
    for camera in available_cameras():
        for model in ("lorentzian", "shaped", "spline"):
            problem = problem_for(camera, model)
            extra = [spline_start(problem)] if model == "spline" else []
            u, _ = optimise(problem, extra_starts=extra)
            u = newton(problem, u)
            params = {k: v.detach() for k, v in problem.natural(u).items()}
            cov, names = fisher_covariance(problem, params, 1.0)
            s = float(params["s"])
            se = (
                math.sqrt(float(cov[names.index("s"), names.index("s")])) / s
                if cov is not None
                else math.nan
            )
            error = problem.transfer(params, CHECK) / mtf_from_spec(camera, CHECK) - 1.0
            print(
                f"{camera:16s} {model:10s} {s - 1:+8.1%} {se:8.1%}   "
                + " ".join(f"{v:+6.1%}" for v in error.tolist()),
                flush=True,
            )


if __name__ == "__main__":
    main()
