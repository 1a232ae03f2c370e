"""Realism: the simulated Thon rings' amplitude contrast, and where it comes from.

The fitted CTF phase offset of the simulated fields of ``benchmarks/realism.py`` sat below the
real micrograph's and scattered from seed to seed (seeds 0-4: +0.152, +0.071, −0.008, −0.003,
+0.037 rad beyond A = 0.07, simulated with the real fit's +0.127 rad as a phase plate), which
moved their ring-1 zero by up to +2.2 %. Two measurements, on noise-free simulations of that
benchmark's field (6VXX spikes, 18.8 per 2048², 200 Å ice, 2048² at 0.8538 Å, 300 kV, the
real fit's defocus and astigmatism, exposure-averaged damage and ice motion):

* **the projected potential's own amplitude contrast** per band of |k|: ``A = Re⟨V V'*⟩ /
  ⟨|V|²⟩`` (``V``, ``V'`` the Fourier transforms of the real and imaginary projected
  potential; for a weak object the image's rings are ``|V|² (sin χ + A cos χ)²`` plus a
  ring-filling ``|V' − A V|²`` term), for the particles alone (uniform ice), and for the whole
  field; with the ice structure's fluctuations absorbing ``f = 0`` (the model before) and
  ``f = 0.07`` (now: ``PotentialSettings.ice_structure_absorption_fraction``, default the
  atoms' fraction). Also the ice fluctuations' power relative to the particles';
* **what fit_ctf returns** (``find_phase_shift``, 30-4 Å, as in ``realism.py``) on noise-free
  expected images, no phase plate, projection method (one pass; the slab is 200 Å): the fitted
  phase beyond A = 0.07, i.e. ``atan(A_fit) − atan(0.07)``, for particles + structured ice
  (f = 0 and 0.07), structured ice alone (f = 0 and 0.07) and particles in uniform ice.

    .venv/bin/python benchmarks/realism_amplitude_contrast.py [--seeds 0,1,2,3,4] [--n-px 2048]
        [--skip-fits] [--json benchmarks/results/realism_amplitude_contrast.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import (
    IceStructure,
    PotentialSettings,
    RadiationDamage,
    projected_potential,
)
from tem_core.potential.damage import attenuation_filter, ice_exposed
from tem_core.simulate import Imaging, micrograph
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import read_structure

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realism as R  # noqa: E402

BANDS = ((0.05, 0.08), (0.08, 0.11), (0.11, 0.16), (0.16, 0.22), (0.22, 0.30))


def _real_fit() -> dict:
    return json.loads((R.ROOT / "benchmarks" / "results" / "realism.json").read_text())["real_fit"]


def _specimen(n: int, seed: int, particles: bool):
    extent = n * R.SAMPLING_A
    if not particles:
        return build_specimen([], [], extent_a=(extent, extent), ice=IceSlab(thickness_a=200.0),
                              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    model = read_structure(R.ROOT / "data" / R.CONTENT[0], dtype=torch.float32)
    count = max(1, round(R.CONTENT[1] * (n / 2048) ** 2))
    return build_specimen(model, count, extent_a=(extent, extent), ice=IceSlab(thickness_a=200.0),
                          generator=torch.Generator().manual_seed(seed))  # fmt: skip


def _settings(n: int, seed: int, structured: bool, fraction: float | None) -> PotentialSettings:
    ice = IceStructure(seed=seed).for_views([0.0], 0.5 * math.pi) if structured else None
    return PotentialSettings(shape=(n, n), sampling_a=R.SAMPLING_A, slice_thickness_a=20.0,
                             energy_ev=R.ENERGY_EV, ice_structure=ice,
                             ice_structure_absorption_fraction=fraction)  # fmt: skip


def potential_contrast(n: int, seed: int) -> dict:
    """Band-wise amplitude contrast of the projected potential (module doc)."""
    f = torch.fft.fftfreq(n, d=R.SAMPLING_A, dtype=torch.float64)
    k = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    att = attenuation_filter((n, n), R.SAMPLING_A, RadiationDamage(), prior_dose_e_per_a2=0.0,
                             dose_e_per_a2=R.DOSE_E_PER_A2, energy_ev=R.ENERGY_EV)  # fmt: skip
    specimen = _specimen(n, seed, True)

    def project(structured, fraction):
        s = ice_exposed(_settings(n, seed, structured, fraction), R.DOSE_E_PER_A2, R.ENERGY_EV)
        p = projected_potential(specimen, s, attenuation=att)
        return torch.fft.fft2(p.real.double()), torch.fft.fft2(p.imag.double())

    parts_r, parts_i = project(False, None)
    out = {"bands": [list(b) for b in BANDS], "particles": [], "ice_over_particles": []}
    for lo, hi in BANDS:
        sel = (k >= lo) & (k < hi)
        out["particles"].append(float((parts_r * parts_i.conj()).real[sel].sum()
                                      / (parts_r.abs() ** 2)[sel].sum()))  # fmt: skip
    for fraction in (0.0, 0.07):
        vr, vi = project(True, fraction)
        field = vr - parts_r
        row = []
        for lo, hi in BANDS:
            sel = (k >= lo) & (k < hi)
            row.append(float((vr * vi.conj()).real[sel].sum() / (vr.abs() ** 2)[sel].sum()))
            if fraction == 0.0:
                ice_power = (field.abs() ** 2)[sel].sum()
                out["ice_over_particles"].append(float(ice_power
                                                       / (parts_r.abs() ** 2)[sel].sum()))
        out[f"all_f{fraction:g}"] = row
    return out


CASES = (
    ("particles + structured ice, f = 0 (before)", True, True, 0.0),
    ("particles + structured ice, f = 0.07 (now)", True, True, None),
    ("particles, uniform ice", True, False, None),
    ("structured ice alone, f = 0", False, True, 0.0),
    ("structured ice alone, f = 0.07", False, True, None),
)


def fitted_phase(n: int, seed: int, particles: bool, structured: bool, fraction) -> dict:
    """fit_ctf on the noise-free expected image of one case (module doc)."""
    real = _real_fit()
    specimen = _specimen(n, seed, particles)
    settings = _settings(n, seed, structured, fraction)
    scope = Microscope(energy_ev=R.ENERGY_EV, energy_filter=True)
    # projection: a thin object, its plane the one the defocus refers to (realism.py's
    # multislice adds the exit plane's distance to the slab's mid-plane instead)
    imaging = Imaging(defocus_a=real["defocus_a"], dose_e_per_a2=R.DOSE_E_PER_A2,
                      astigmatism_a=real["astigmatism_a"],
                      astigmatism_angle_rad=math.radians(real["astigmatism_angle_deg"]),
                      damage=RadiationDamage(), method="projection")  # fmt: skip
    detector = Detector(gain_counts_per_e=1.0, mtf_camera="k2_300kv", mtf_after_noise=False)
    with torch.no_grad():
        image = micrograph(specimen, potential=settings, microscope=scope, detector=detector,
                           imaging=imaging).expected.double()  # fmt: skip
    fit = R.fit_like_real(image, scope)  # fmt: skip
    return dict(phase_rad=fit.phase_shift_rad, phase_error_rad=fit.phase_shift_error_rad,
                defocus_a=fit.defocus_a, true_defocus_a=real["defocus_a"],
                amplitude_contrast=math.tan(R.PHASE + fit.phase_shift_rad))  # fmt: skip


def zero_jackknife(image: np.ndarray, n_zeros: int = 5) -> dict:
    """fit_ctf (as ``realism.py``) on ``image``, and the delete-a-group jackknife standard
    error of its CTF zeros [%]: the same jackknife as fit_ctf's defocus and phase errors
    (8 groups of tiles), each group's (Δf, φ) turned into zeros, so the correlation of the
    defocus and the phase (the rings' positions trade one for the other) is kept."""
    import tem_core.ctf_fit as cf
    from tem_core.optics import ctf_zeros_per_a

    plain = cf._jackknife
    kept = []

    def recording(sums, counts, spec, p, step, base, phase_range, microscope, period):
        values = []
        for g in range(sums.shape[0]):
            keep = torch.arange(sums.shape[0]) != g
            power = sums[keep].sum(0) / counts[keep].sum()
            sub = cf._Spectrum(power, 1.0 / (spec.dk * power.shape[-1]), spec.k_lo, spec.k_hi)
            norm, _, _ = sub.flatten(period)
            q, _ = cf._refine(sub.kx[sub.mask], sub.ky[sub.mask], norm[sub.mask], microscope, p,
                              step, base, True, phase_range, spec.dk, max_iter=30)  # fmt: skip
            values.append(q[[0, 3]])
        kept.append(torch.stack(values))
        return plain(sums, counts, spec, p, step, base, phase_range, microscope, period)

    scope = Microscope(energy_ev=R.ENERGY_EV)
    cf._jackknife = recording
    try:
        fit = R.fit_like_real(image, scope)  # fmt: skip
    finally:
        cf._jackknife = plain

    def zeros(defocus, phase):
        return ctf_zeros_per_a(n_zeros, defocus_a=float(defocus), cs_a=float(scope.cs_a),
                               energy_ev=R.ENERGY_EV, phase_shift_rad=R.PHASE + float(phase)
                               ).numpy()  # fmt: skip

    z = zeros(fit.defocus_a, fit.phase_shift_rad)
    groups = np.array([zeros(d, ph) for d, ph in kept[0].tolist()])
    g = groups.shape[0]
    se = np.sqrt((g - 1) / g * ((groups - groups.mean(0)) ** 2).sum(0)) / z * 100
    # the same phase error at fixed defocus (no defocus-phase correlation)
    fixed = (zeros(fit.defocus_a, fit.phase_shift_rad - fit.phase_shift_error_rad) / z - 1) * 100
    return dict(defocus_a=fit.defocus_a, defocus_error_a=fit.defocus_error_a,
                phase_rad=fit.phase_shift_rad, phase_error_rad=fit.phase_shift_error_rad,
                zeros=z.tolist(), zero_se_pct=se.tolist(),
                zero_shift_one_phase_error_fixed_defocus_pct=fixed.tolist())  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--n-px", type=int, default=2048)
    parser.add_argument("--skip-fits", action="store_true")
    parser.add_argument("--real-only", action="store_true",
                        help="only the real micrograph's zero uncertainty")  # fmt: skip
    parser.add_argument("--json", default=str(R.ROOT / "benchmarks" / "results"
                                              / "realism_amplitude_contrast.json"))  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    record = dict(command=" ".join(["benchmarks/realism_amplitude_contrast.py", *sys.argv[1:]]),
                  load_average=list(os.getloadavg()), n_px=args.n_px, seeds=seeds,
                  potential={}, fits={})  # fmt: skip
    from tem_core.io import read_mrc

    real_image, _ = read_mrc(R.ROOT / "data" / "fei-extended_crop2048.mrc")
    j = zero_jackknife(np.asarray(real_image, dtype=np.float64))
    record["real_zero_uncertainty"] = j
    print(f"real micrograph: phase {j['phase_rad']:+.3f} ± {j['phase_error_rad']:.3f} rad, "
          f"defocus {j['defocus_a']:.0f} ± {j['defocus_error_a']:.0f} Å; jackknife SE of its "
          "CTF zeros [%]: " + " ".join(f"{v:.2f}" for v in j["zero_se_pct"])
          + "; one phase SE at fixed defocus moves them by [%] "
          + " ".join(f"{v:+.2f}" for v in j["zero_shift_one_phase_error_fixed_defocus_pct"]))
    if args.real_only:  # add it to an existing record
        path = Path(args.json)
        if path.exists():
            previous = json.loads(path.read_text())
            previous["real_zero_uncertainty"] = j
            path.write_text(json.dumps(previous, indent=1) + "\n")
        return
    names = " ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in BANDS)
    print(f"projected potential: A = Re<V V'*>/<|V|²> per band ({names} 1/Å)")
    for seed in seeds:
        t0 = time.perf_counter()
        c = potential_contrast(args.n_px, seed)
        record["potential"][str(seed)] = c
        print(f"seed {seed} ({time.perf_counter() - t0:.0f} s)")
        for key, label in (("particles", "particles alone"), ("ice_over_particles",
                           "ice/particle power"), ("all_f0", "whole field, f = 0"),
                           ("all_f0.07", "whole field, f = 0.07")):  # fmt: skip
            print(f"  {label:<22} " + " ".join(f"{v:+8.4f}" for v in c[key]))
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    if args.skip_fits:
        return
    print("\nfit_ctf on noise-free images (phase beyond A = 0.07 [rad], and the fitted A):")
    for label, particles, structured, fraction in CASES:
        rows = []
        for seed in seeds:
            t0 = time.perf_counter()
            rows.append(fitted_phase(args.n_px, seed, particles, structured, fraction))
            r = rows[-1]
            print(f"  {label:<44} seed {seed}: {r['phase_rad']:+.4f} ± {r['phase_error_rad']:.4f}"
                  f" (A {r['amplitude_contrast']:.3f}), defocus {r['defocus_a']:.0f} Å "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        ph = np.array([r["phase_rad"] for r in rows])
        print(f"  {label:<44} mean {ph.mean():+.4f}, sd {ph.std(ddof=1) if ph.size > 1 else 0:.4f}")
        record["fits"][label] = rows
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
