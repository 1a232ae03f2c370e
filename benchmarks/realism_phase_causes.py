"""Realism: what could give the real K2 micrograph its CTF phase offset? Paired tests.

The real micrograph's rings sit at a CTF phase offset beyond the amplitude contrast 0.07
(:func:`tem_core.ctf_fit.fit_ctf` with ``find_phase_shift=True``: +0.127 ± 0.077 rad,
``benchmarks/realism.py``). Each candidate cause is tested here by the phase shift that
``fit_ctf`` finds, on the same specimen with the cause switched on and off (noise-free
expected images, 1024² at 0.8538 Å, 6 apoferritins in 200 Å of structured ice, the real
fit's defocus and astigmatism, K2 MTF, exposure-averaged damage):

* elastic scattering outside an objective aperture (the grid holds up to 0.585 Å⁻¹; the
  apertures cut at 0.5 and 0.3 Å⁻¹, 9.8 and 5.9 mrad);
* the inelastic background of an unfiltered camera (``energy_filter=False``);
* the absorption of the ice structure's fluctuations
  (``PotentialSettings.ice_structure_absorption_fraction``): the atoms' ``V'/V = 0.07``
  (the default since the fluctuations are treated as the water's atoms), ``0.048`` (the mean
  ice's inelastic ratio) and ``0`` (the former model: absorption by the mean density only;
  ``benchmarks/realism_amplitude_contrast.py`` measures what that did to the rings);

and the estimator itself: ``fit_ctf`` on Gaussian fields with the real's background, ring
depths and CTF (phase known).

    .venv/bin/python benchmarks/realism_phase_causes.py [--fields 4]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tem_core.detector import Detector
from tem_core.io import read_mrc
from tem_core.optics import Microscope, aberration_phase
from tem_core.potential import IceStructure, PotentialSettings, RadiationDamage, slice_edges_a
from tem_core.simulate import Imaging, micrograph
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import read_structure

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realism as R  # noqa: E402

#: the real fit of benchmarks/results/realism.json (defocus, astigmatism, angle, phase)
REAL_FIT = (10493.66, 286.64, math.radians(113.68), 0.12716)


def _fit(image):
    return R.fit_like_real(image, Microscope(energy_ev=R.ENERGY_EV))  # fmt: skip


def paired_causes(n: int = 1024) -> None:
    extent = n * R.SAMPLING_A
    model = read_structure(R.ROOT / "data" / "6z6u.pdb.gz", dtype=torch.float32)
    specimen = build_specimen(model, 6, extent_a=(extent, extent), ice=IceSlab(thickness_a=200.0),
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    lam = Microscope(energy_ev=R.ENERGY_EV).wavelength_a
    cases = (
        ("base: structured ice (fluctuations V'/V 0.07), filter", {}),
        (f"objective aperture at 0.5 1/Å ({0.5 * lam * 1e3:.1f} mrad)", {"aperture": 0.5 * lam}),
        (f"objective aperture at 0.3 1/Å ({0.3 * lam * 1e3:.1f} mrad)", {"aperture": 0.3 * lam}),
        ("no energy filter (inelastic background)", {"filt": False}),
        ("ice fluctuations absorb V'/V 0.048 (mean ice's)", {"ice_f": 0.048}),
        ("ice fluctuations do not absorb (former model)", {"ice_f": 0.0}),
    )
    defocus, astig, angle, _ = REAL_FIT
    for label, case in cases:
        settings = PotentialSettings(
            shape=(n, n), sampling_a=R.SAMPLING_A, slice_thickness_a=20.0, energy_ev=R.ENERGY_EV,
            ice_structure=IceStructure(seed=0), ice_structure_absorption_fraction=case.get("ice_f"),
        )  # fmt: skip
        scope = Microscope(energy_ev=R.ENERGY_EV, energy_filter=case.get("filt", True),
                           objective_aperture_rad=case.get("aperture"))  # fmt: skip
        exit_to_mid = float(slice_edges_a(specimen, settings)[-1]) - float(
            specimen.slab_center_a[2])
        imaging = Imaging(defocus_a=defocus + exit_to_mid, dose_e_per_a2=R.DOSE_E_PER_A2,
                          astigmatism_a=astig, astigmatism_angle_rad=angle,
                          damage=RadiationDamage())  # fmt: skip
        t0 = time.perf_counter()
        with torch.no_grad():
            r = micrograph(specimen, potential=settings, microscope=scope,
                           detector=Detector(gain_counts_per_e=105.2, mtf_camera="k2_300kv",
                                             mtf_after_noise=False),
                           imaging=imaging, generator=None)  # fmt: skip
        image = r.expected.double()
        f = _fit(image)
        print(f"{label:<52} phase {f.phase_shift_rad:+.4f} ± {f.phase_shift_error_rad:.4f} rad "
              f"defocus {f.defocus_a:.0f} Å mean {float(image.mean()):.1f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


def estimator_on_known_phase(fields: int, n: int = 2048) -> None:
    """fit_ctf on Gaussian fields shaped like the real spectrum, phase shift known."""
    scope = Microscope(energy_ev=R.ENERGY_EV)
    real, _ = read_mrc(R.ROOT / "data" / "fei-extended_crop2048.mrc")

    class Fit:
        defocus_a, astigmatism_a, astigmatism_angle_rad, phase_shift_rad = REAL_FIT

    res = R.analyse(np.asarray(real, dtype=np.float64), Fit, scope)
    b_amp = R.background_of(np.sqrt(res["power"]), res["k"], Fit.defocus_a, scope)
    f = torch.fft.fftfreq(n, d=R.SAMPLING_A, dtype=torch.float64)
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    chi, _, _ = aberration_phase(kx, ky, wavelength_a=scope.wavelength_a,
                                 defocus_a=Fit.defocus_a, astigmatism_a=Fit.astigmatism_a,
                                 astigmatism_angle_rad=Fit.astigmatism_angle_rad,
                                 cs_a=float(scope.cs_a))  # fmt: skip
    k = torch.sqrt(kx**2 + ky**2).numpy()
    depth = 0.147 * np.exp(-((k / 0.114) ** 2))  # as estimator_truth_check in realism.py
    power = np.interp(k, res["k"], b_amp) ** 2 * (
        1 + depth * np.sin(chi.numpy() - R.offset(Fit)) ** 2) ** 2
    amp = torch.from_numpy(np.sqrt(power))
    g = torch.Generator().manual_seed(7)
    for i in range(fields):
        white = torch.randn(n, n, generator=g, dtype=torch.float64)
        r = _fit(torch.fft.ifft2(torch.fft.fft2(white) * amp).real)
        print(f"field {i}: phase {r.phase_shift_rad:+.4f} ± {r.phase_shift_error_rad:.4f} "
              f"(true {Fit.phase_shift_rad:.4f}), defocus {r.defocus_a:.0f} ± "
              f"{r.defocus_error_a:.0f} Å (true {Fit.defocus_a:.0f})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4, help="Gaussian fields for the estimator")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paired_causes()
    estimator_on_known_phase(args.fields)


if __name__ == "__main__":
    main()
