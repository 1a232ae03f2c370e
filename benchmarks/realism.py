"""Realism: simulated versus the real K2 micrograph, structured ice seen from two tilts, memory.

Real data: ``data/fei-extended_crop2048.mrc`` (Gatan K2 Summit in counting mode **behind an
energy filter**, Titan Krios, 300 kV, 0.8538 Å/px, 47.6 e/Å² in one 10 s exposure). Its
defocus, astigmatism and additional phase shift are fitted here with
:func:`tem_core.ctf_fit.fit_ctf` (``find_phase_shift=True``, range ±π/2: one period centred
on none); the simulations use all three, the phase shift as a phase plate
(``Microscope(phase_plate_rad=...)``: the rule is "simulate at the fitted CTF", as for the
defocus; their own amplitude contrast comes from their absorptive potentials). Its gain is
measured from its own noise floor (a counting camera's noise is white: the periodogram
above 0.40 Å⁻¹ divided by the mean gives counts per electron, independently of the dose).

Simulation at the recorded settings: SARS-CoV-2 spike trimers (6VXX, irregular, about
100-150 Å) at the number density and size measured in the real field (``CONTENT``,
``benchmarks/realism_content.py``; apoferritin 6Z6U, the earlier content, with
``--model 6z6u.pdb.gz --particles 25``), in structured
amorphous ice (:class:`tem_core.potential.IceStructure`), multislice, fitted CTF (Cs
2.7 mm, 0.7 eV spread), radiation damage averaged over the exposure (the real image is the
sum of a 47.6 e/Å² movie: the protein's critical-exposure curve; the ice's structure
averaged over its beam-induced motion, McMullan et al. 2015, see
:class:`tem_core.potential.IceStructure`), zero-loss energy filter as in the real
acquisition (and, for the mean, without it), K2 300 kV MTF applied before counting noise,
the measured gain.

The field is 2048² px like the real one (same number of tiles, so the same spectral
noise), simulated for several seeds (particles, orientations, ice, noise). Compared after
the same processing (half-overlapping 512² tiles, Hann window, plane detrend; amplitude
spectrum minus its running mean over one ring period):

* Thon-ring zeros (first five) and ring modulation depths (first three), each with four
  estimators, near the zeros of the real fit's CTF (the background under the rings is
  fit_ctf's: one ring period centred in phase), of which (d), ``VERDICT``, decides:
  (a) the lowest bin of the radial average refined by a parabola over ±¼ ring period,
  depth = ring peak minus zero over the background; (b) the same on the *equiphase*
  average (CTFFIND's: every pixel binned at the |k| where the round CTF has its
  astigmatic phase, so the astigmatic rings stay sharp);
  (c) on the equiphase average, a least-squares fit of the CTF's sin² shape over the whole
  ring (maximum to maximum) with its zero free (±6 %), depth = fitted amplitude over the
  background; (d) the zeros of the CTF that :func:`fit_ctf` fits to each image (all rings
  30-4 Å at once, phase shift free) and, at them, the depth of (c) with the zero fixed
  (:func:`ring_depth`). (d) was chosen on simulated fields WITH particles against their
  true CTF (``benchmarks/realism_estimators.py``): the particles' spectrum under ring 1
  pulls (a)-(c) by 4-6 %. To show each estimator's own scatter: the real image's four
  1024² quadrants against its CTF fit, and every simulation against its true CTF zeros;
* the 3.7 Å ice ring: position of the maximum of the power profile (smoothed over
  0.02 Å⁻¹) in 0.20-0.35 Å⁻¹ and the centroid of the excess power in 0.22-0.32 Å⁻¹; its
  height above the noise floor (0.40-0.50 Å⁻¹), relative to that floor;
* mean counts; variance/mean of the noise (floor / mean) and of whole 64² tiles (median).

Also: the same ice seen at 0° and 10° tilt (projected potentials of one 3-D field,
low-passed, the 0° one stretched by cos 10° along x about the tilt axis, correlated with
the 10° one; control: another seed), and peak memory of a structured-ice micrograph for
ice 200 to 3200 Å thick (each in a fresh process).

    .venv/bin/python benchmarks/realism.py [--seeds 0,1,2] [--n-px 2048] [--ice 200] [--quick]

writes ``benchmarks/results/realism.json`` (all numbers) and ``benchmarks/out/realism.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tem_core.ctf_fit import fit_ctf, micrograph_power_spectrum, ring_background
from tem_core.detector import Detector
from tem_core.io import read_mrc
from tem_core.optics import Microscope, aberration_phase, ctf_zeros_per_a
from tem_core.potential import (
    IceStructure,
    PotentialSettings,
    RadiationDamage,
    projected_potential,
    slice_edges_a,
)
from tem_core.simulate import Imaging, micrograph
from tem_core.specimen import IceSlab, build_specimen, tilt_specimen
from tem_core.structure import read_structure
from tem_core.units import DEG_TO_RAD, KV_TO_EV, UM_TO_A

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SAMPLING_A = 0.8538
DOSE_E_PER_A2 = 47.6
ENERGY_EV = 300.0 * KV_TO_EV
TILE_PX = 512
#: particles counted by eye in the real 2048² field (dark blobs of ~100-120 Å)
REAL_PARTICLES_PER_2048 = 25
#: the simulated content (model file in data/, copies per 2048² field): see
#: benchmarks/realism_content.py for the measurement of the real field that chose it
#: measured: the real field's dark blobs of >= 70 Å number 36 per field, median 106 Å
#: (IQR 97-116); 25 spikes (6VXX) gave 48 of median 106 Å, 25 apoferritins (6Z6U) 25 of
#: 126 Å (a hollow shell whose form-factor minimum sits under Thon ring 1): the spike
#: trimer at 25 × 36/48 = 18.8 per field (apoferritin, the earlier content: --model)
CONTENT = ("6vxx.pdb.gz", 18.8)


def _chi(k: np.ndarray, defocus_a: float, microscope: Microscope) -> np.ndarray:
    """Isotropic aberration phase χ(k) [rad] (defocus > 0 underfocus, Cs)."""
    lam, cs = microscope.wavelength_a, float(microscope.cs_a)
    return math.pi * lam * defocus_a * k**2 - 0.5 * math.pi * cs * lam**3 * k**4


def equiphase_k(n: int, fit, microscope: Microscope) -> torch.Tensor:
    """Equiphase frequency of every pixel of an ``n``² FFT-order spectrum [1/Å].

    The |k| at which the *round* CTF of defocus ``fit.defocus_a`` has the phase that the
    astigmatic CTF of ``fit`` has at that pixel (CTFFIND's equiphase average): averaging in
    rings of this k keeps the zeros of an astigmatic spectrum sharp. Without astigmatism it
    is |k|.
    """
    f = torch.fft.fftfreq(n, d=SAMPLING_A, dtype=torch.float64)
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    chi, _, _ = aberration_phase(
        kx, ky, wavelength_a=microscope.wavelength_a, defocus_a=fit.defocus_a,
        astigmatism_a=fit.astigmatism_a, astigmatism_angle_rad=fit.astigmatism_angle_rad,
        cs_a=float(microscope.cs_a),
    )  # fmt: skip
    grid = np.linspace(0.0, 0.75, 60001)  # χ_round is monotonic far beyond 0.75 Å⁻¹ here
    # the package's χ has the opposite sign (χ = πλ(½Csλ²k⁴ − Δf k²))
    k_eq = np.interp(-chi.numpy(), _chi(grid, fit.defocus_a, microscope), grid)
    return torch.from_numpy(k_eq)


def radial(spectrum: torch.Tensor, k_eq: torch.Tensor | None = None):
    """Average of an FFT-order spectrum in one-pixel rings of |k| (or of ``k_eq``) [1/Å]."""
    n = spectrum.shape[-1]
    if k_eq is None:
        f = torch.fft.fftfreq(n, d=SAMPLING_A, dtype=torch.float64)
        k_eq = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    dk = 1.0 / (n * SAMPLING_A)
    b = torch.round(k_eq / dk).long().flatten()
    sums = torch.zeros(int(b.max()) + 1, dtype=torch.float64).index_add_(0, b, spectrum.flatten())
    cnt = torch.zeros_like(sums).index_add_(0, b, torch.ones_like(spectrum.flatten()))
    m = int(0.5 / SAMPLING_A / dk)
    return (torch.arange(m) * dk).numpy(), (sums[:m] / cnt[:m].clamp(min=1)).numpy()


def running_mean(values: np.ndarray, width: np.ndarray) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(values.size)
    lo = np.clip(i - width // 2, 0, values.size)
    hi = np.clip(i + width // 2 + 1, 0, values.size)
    return (c[hi] - c[lo]) / (hi - lo)


#: phase offset of amplitude contrast 0.07 (fit_ctf's default A); the real fit's additional
#: phase shift adds to it (``offset(fit)``)
PHASE = math.atan(0.07 / math.sqrt(1 - 0.07**2))
#: fit_ctf's search range of the additional phase shift: one full period (the rings repeat
#: with period π in the phase), centred on none, so that the range favours no sign
PHASE_RANGE_RAD = (-0.5 * math.pi, 0.5 * math.pi)


def fit_like_real(image, microscope: Microscope, *, phase_shift: bool = True):
    """:func:`fit_ctf` with the settings every fit of this benchmark uses (``TILE_PX`` tiles,
    30-4 Å, an additional phase shift within ``PHASE_RANGE_RAD`` unless ``phase_shift`` is
    off); ``image`` a tensor or a NumPy array."""
    extra = {}
    if phase_shift:
        extra = dict(find_phase_shift=True, phase_shift_range_rad=PHASE_RANGE_RAD)
    return fit_ctf(torch.as_tensor(image), sampling_a=SAMPLING_A, microscope=microscope,
                   tile_px=TILE_PX, resolution_range_a=(30.0, 4.0), **extra)  # fmt: skip


def offset(fit) -> float:
    """CTF phase offset [rad] of a fit: amplitude contrast 0.07 plus its phase shift."""
    return PHASE + fit.phase_shift_rad
#: bands [1/Å] of the Thon-ring modulation table (the last one holds the 3.7 Å ice ring)
BANDS = ((0.05, 0.10), (0.10, 0.16), (0.16, 0.22), (0.22, 0.30))


def ring_fit(k, rings, background, z, defocus_a, microscope, phase):
    """One ring's zero and depth from the whole ring, not its lowest bin.

    Over the ring around the CTF zero ``z`` (from the previous maximum to the next), the
    background-subtracted profile is regressed on ``sin²(χ(k z/z') − φ)``, the CTF shape
    with its zero moved to ``z'``; ``z'`` scans ±6 % of ``z`` and the best least-squares
    fit (positive amplitude) gives the zero. The depth is the fitted sin² amplitude (zero
    to peak) over the background at the zero. Uses every bin of the ring, so speckle in a
    few bins (few particles, shot noise) moves it less than the lowest bin.
    """
    best = (np.inf, z, 0.0)
    for scale in np.linspace(0.94, 1.06, 241):
        zp = z * scale
        chi = _chi(k * z / zp, defocus_a, microscope) + phase
        zero_phase = _chi(np.array([z]), defocus_a, microscope)[0] + phase
        sel = np.abs(chi - zero_phase) <= 0.5 * math.pi  # from maximum to maximum
        if sel.sum() < 5:
            continue
        t = np.sin(chi[sel]) ** 2
        a = np.stack([np.ones_like(t), t], 1)
        coef, *_ = np.linalg.lstsq(a, rings[sel], rcond=None)
        if coef[1] <= 0:
            continue
        resid = float(((a @ coef - rings[sel]) ** 2).mean())
        if resid < best[0]:
            best = (resid, zp, coef[1])
    _, zp, amp = best
    return float(zp), float(amp / np.interp(zp, k, background))


def ring_depth(k, rings, background, zero, defocus_a, microscope, phase):
    """One ring's depth with its zero fixed at ``zero`` [1/Å] (a fitted CTF's zero).

    Over the ring around ``zero`` (maximum to maximum of ``sin²(χ(k) − φ)``, ``χ`` of
    ``defocus_a``, ``φ`` = ``phase``) the background-subtracted profile is regressed on that
    sin²; the depth is the fitted amplitude (zero to peak) over the background at the zero
    (as :func:`ring_fit`, without its free zero). Fixing the zero at the CTF fitted over all
    rings keeps the particles' form-factor ripples from dragging it (they moved
    :func:`ring_fit`'s ring-1 zero to the edge of its scan on apoferritin fields).
    """
    chi = _chi(k, defocus_a, microscope) + phase
    zero_phase = _chi(np.array([zero]), defocus_a, microscope)[0] + phase
    sel = np.abs(chi - zero_phase) <= 0.5 * math.pi
    t = np.sin(chi[sel]) ** 2
    coef, *_ = np.linalg.lstsq(np.stack([np.ones_like(t), t], 1), rings[sel], rcond=None)
    return float(coef[1] / np.interp(zero, k, background))


def background_of(amp: np.ndarray, k: np.ndarray, defocus_a: float, microscope) -> np.ndarray:
    """fit_ctf's ring background: one ring period centred in phase, uniform in phase."""
    return ring_background(torch.from_numpy(amp), torch.from_numpy(k), defocus_a=defocus_a,
                           microscope=microscope).numpy()  # fmt: skip


def analyse(image: np.ndarray | None, fit, microscope: Microscope, power=None,
            own_fit=None) -> dict:
    """Ring zeros and depths, ice ring, mean and noise of one micrograph (module doc).

    ``fit``: the real micrograph's CTF fit, whose defocus and phase shift locate the rings
    and whose astigmatism defines the equiphase average, the same for every image.
    ``power``: a given spectrum instead of the image's (known-truth check; rings only).
    ``own_fit``: this image's own CTF fit (``defocus_a``, ``phase_shift_rad``), for the
    verdict estimator (:data:`VERDICT`): its zeros, and the ring depths at them.
    """
    defocus_a = fit.defocus_a
    phase = offset(fit)
    if power is None:
        power = micrograph_power_spectrum(torch.from_numpy(image), tile_px=TILE_PX)
    k, p = radial(power)
    _, p_eq = radial(power, equiphase_k(power.shape[-1], fit, microscope))
    dk = k[1]
    lam = microscope.wavelength_a
    zeros_model = ctf_zeros_per_a(6, defocus_a=defocus_a, cs_a=float(microscope.cs_a),
                                  energy_ev=ENERGY_EV, phase_shift_rad=phase).numpy()
    out = dict(k=k, power=p)
    for tag, profile in (("", p), ("_eq", p_eq)):
        amp = np.sqrt(profile)
        background = background_of(amp, k, defocus_a, microscope)
        rings = amp - background
        zeros, depths, fit_zeros, fit_depths = [], [], [], []
        for i, z in enumerate(zeros_model[:5]):
            half = 0.3 / (2 * lam * defocus_a * z)
            sel = np.nonzero((k > z - half) & (k < z + half))[0]
            j = sel[np.argmin(rings[sel])]
            # vertex of a parabola fitted over ±¼ ring period around the lowest bin
            quarter = max(2, int(round(0.25 / (2 * lam * defocus_a * z) / dk)))
            near = np.arange(max(j - quarter, 1), min(j + quarter + 1, k.size))
            c2, c1, _ = np.polyfit(k[near] - k[j], rings[near], 2)
            vertex = k[j] - c1 / (2 * c2) if c2 > 0 else k[j]
            zeros.append(float(np.clip(vertex, k[near[0]], k[near[-1]])))
            zf, df = ring_fit(k, rings, background, z, defocus_a, microscope, phase)
            fit_zeros.append(zf)
            if i < 3:  # ring peak between this zero and the next
                nxt = zeros_model[i + 1]
                sel = np.nonzero((k > z) & (k < nxt))[0]
                depths.append(float((rings[sel].max() - rings[j]) / background[j]))
                fit_depths.append(df)
        out.update({f"rings{tag}": rings / background, f"zeros{tag}": np.array(zeros),
                    f"depths{tag}": np.array(depths), f"fit_zeros{tag}": np.array(fit_zeros),
                    f"fit_depths{tag}": np.array(fit_depths)})  # fmt: skip
        if own_fit is not None and tag == "_eq":
            own_phase = offset(own_fit)
            own_zeros = ctf_zeros_per_a(5, defocus_a=own_fit.defocus_a,
                                        cs_a=float(microscope.cs_a), energy_ev=ENERGY_EV,
                                        phase_shift_rad=own_phase).numpy()  # fmt: skip
            out["ctf_zeros"] = own_zeros
            out["ctf_depths_eq"] = np.array([
                ring_depth(k, rings, background, z, own_fit.defocus_a, microscope, own_phase)
                for z in own_zeros[:3]])  # fmt: skip
    # Thon-ring modulation per band: regression of the equiphase rings on the CTF's sin²
    amp = np.sqrt(p_eq)
    background = background_of(amp, k, defocus_a, microscope)
    band_mod = []
    for lo, hi in BANDS:
        sel = (k >= lo) & (k < hi)
        t = np.sin(_chi(k[sel], defocus_a, microscope) + phase) ** 2
        coef, *_ = np.linalg.lstsq(np.stack([np.ones_like(t), t], 1),
                                   (amp - background)[sel], rcond=None)  # fmt: skip
        band_mod.append(float(coef[1] / background[sel].mean()))
    out["band_modulation"] = np.array(band_mod)
    if image is None:
        return out
    smooth = running_mean(p, np.full(k.size, max(3, int(round(0.02 / dk)) | 1)))
    floor_sel = (k >= 0.40) & (k <= 0.50)
    floor = float(p[floor_sel].mean())
    band = np.nonzero((k >= 0.20) & (k <= 0.35))[0]
    j = band[np.argmax(smooth[band])]
    # centroid of the excess power over the noise floor, 0.22-0.32 Å⁻¹ (less noisy)
    sel = (k >= 0.22) & (k <= 0.32)
    excess = np.clip(p[sel] / floor - 1, 0, None)
    centroid = float((k[sel] * excess).sum() / max(excess.sum(), 1e-300))
    mean = float(image.mean())
    t = image[: image.shape[0] // 64 * 64, : image.shape[1] // 64 * 64]
    t = t.reshape(t.shape[0] // 64, 64, t.shape[1] // 64, 64).swapaxes(1, 2).reshape(-1, 64, 64)
    out.update(
        ice_ring_k=float(k[j]), ice_ring_height=float(smooth[j] / floor - 1), mean=mean,
        ice_ring_centroid=centroid,
        noise_var_over_mean=floor / mean,
        tile_var_over_mean=float(np.median(t.var(axis=(1, 2)) / t.mean(axis=(1, 2)))),
    )  # fmt: skip
    return out


def estimator_truth_check(fit, microscope: Microscope, real: dict, n_draws: int = 8,
                          n: int = 2048, ripple=None, label: str = "") -> dict:
    """Bias and scatter of the three ring estimators on spectra with known rings.

    A stationary Gaussian field of ``n``² px whose power spectrum is ``B(k)² (1 + d(k)
    sin²(χ − φ))²``: ``B`` the real image's ring background, ``χ`` and ``φ`` the real fit's
    (astigmatism included), ``d(k) = 0.147 exp(−(k/0.114)²)`` ring depths like the real's
    (0.105 at ring 1, 0.05 at ring 3). Processed exactly as the micrographs (512² tiles).
    Each estimator's *noise-free* value is its value on the expected periodogram (the
    spectrum sampled at the tile's frequencies and smoothed by the Hann window's kernel);
    the draws give its bias (mean of noisy − noise-free) and scatter; the zeros are also
    compared with the exact CTF zeros.

    ``ripple``: ``(k [1/Å], r)``, a particle form factor's relative power ripple about its
    smooth trend (:func:`form_factor_ripple`); the CTF-modulated power (the signal, not the
    background) of the draws is multiplied by ``1 + r(|k|)``, as particles' signal is,
    while the noise-free reference stays ripple-free: the bias then includes what the
    form factor does to each estimator. The verdict estimator's CTF is fitted to every
    draw (:func:`fit_ctf`, as for the micrographs); its noise-free reference uses the
    exact CTF.
    """
    g = torch.Generator().manual_seed(12345)
    lam = microscope.wavelength_a
    k_r, p_r = real["k"], real["power"]
    b_amp = background_of(np.sqrt(p_r), k_r, fit.defocus_a, microscope)
    phase = offset(fit)

    def spectrum(m, rippled=False):
        f = torch.fft.fftfreq(m, d=SAMPLING_A, dtype=torch.float64)
        ky, kx = torch.meshgrid(f, f, indexing="ij")
        chi, _, _ = aberration_phase(
            kx, ky, wavelength_a=lam, defocus_a=fit.defocus_a, astigmatism_a=fit.astigmatism_a,
            astigmatism_angle_rad=fit.astigmatism_angle_rad, cs_a=float(microscope.cs_a),
        )  # fmt: skip
        k = torch.sqrt(kx**2 + ky**2).numpy()
        d = 0.147 * np.exp(-((k / 0.114) ** 2))
        b = np.interp(k, k_r, b_amp)
        signal = (1 + d * np.sin(chi.numpy() - phase) ** 2) ** 2 - 1
        if rippled and ripple is not None:
            signal = signal * (1 + np.interp(k, ripple[0], ripple[1]))
        return b**2 * (1 + signal)

    truth_fit = SimpleNamespace(defocus_a=fit.defocus_a, phase_shift_rad=fit.phase_shift_rad)
    expected = torch.from_numpy(spectrum(TILE_PX))
    w = torch.tensor([1 / 6, 2 / 3, 1 / 6], dtype=torch.float64)
    for axis in (0, 1):
        expected = sum(w[i] * torch.roll(expected, i - 1, axis) for i in range(3))
    clean = analyse(None, fit, microscope, power=expected, own_fit=truth_fit)
    amp = torch.from_numpy(np.sqrt(spectrum(n, rippled=True)))
    draws = []
    for _ in range(n_draws):
        white = torch.randn(n, n, generator=g, dtype=torch.float64)
        field = torch.fft.ifft2(torch.fft.fft2(white) * amp).real
        power = micrograph_power_spectrum(field, tile_px=TILE_PX)
        own = fit_like_real(field, microscope)  # fmt: skip
        draws.append(analyse(None, fit, microscope, power=power, own_fit=own))
    exact = ctf_zeros_per_a(5, defocus_a=fit.defocus_a, cs_a=float(microscope.cs_a),
                            energy_ev=ENERGY_EV, phase_shift_rad=phase).numpy()  # fmt: skip
    out = {}
    print(f"\nestimators on known rings ({n_draws} Gaussian fields of {n}² px with the real's "
          f"background, CTF and ring depths{label}):")
    for zkey, dkey, name in ESTIMATORS:
        z = np.array([d[zkey] for d in draws])
        dep = np.array([d[dkey] for d in draws])
        zc = (clean[zkey] / exact - 1) * 100
        zn = (z / exact - 1) * 100
        ratio = dep / clean[dkey]
        print(f"  {name}:")
        print("    zero Δ% noise-free " + " ".join(f"{v:+6.2f}" for v in zc))
        noisy = zip(zn.mean(0), zn.std(0), strict=True)
        print("    zero Δ% noisy      " + " ".join(f"{m:+5.2f}±{sd:4.2f}" for m, sd in noisy))
        print("    depth noise-free   " + " ".join(f"{v:.4f}" for v in clean[dkey])
              + "; noisy / noise-free " + " ".join(f"{m:.2f}±{sd:.2f}" for m, sd in
                                                   zip(ratio.mean(0), ratio.std(0),
                                                       strict=True)))  # fmt: skip
        out[name] = dict(zero_bias_noise_free_pct=zc.tolist(), zero_noisy_pct_mean=
                         zn.mean(0).tolist(), zero_noisy_pct_std=zn.std(0).tolist(),
                         depth_noise_free=clean[dkey].tolist(), depth_ratio_mean=
                         ratio.mean(0).tolist(), depth_ratio_std=ratio.std(0).tolist())  # fmt: skip
    return out


def simulate_field(args, fit, gain: float, *, structured: bool, energy_filter: bool):
    n = args.n_px
    extent = n * SAMPLING_A
    model = read_structure(ROOT / "data" / getattr(args, "model", "6z6u.pdb.gz"),
                           dtype=torch.float32)  # fmt: skip
    per_2048 = getattr(args, "particles", REAL_PARTICLES_PER_2048)
    count = max(1, round(per_2048 * (n / 2048) ** 2))
    specimen = build_specimen(model, count, extent_a=(extent, extent),
                              ice=IceSlab(thickness_a=args.ice),
                              generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    tilt = args.tilt_deg * DEG_TO_RAD  # experiment: a tilted field, defocus varying along x
    ice = IceStructure(seed=args.seed).for_views([tilt], 90 * DEG_TO_RAD) if structured else None
    if tilt:
        specimen = tilt_specimen(specimen, tilt_angle_rad=tilt, tilt_axis_angle_rad=90 * DEG_TO_RAD)
    settings = PotentialSettings(
        shape=(n, n), sampling_a=SAMPLING_A, slice_thickness_a=20.0, energy_ev=ENERGY_EV,
        ice_structure=ice,
    )  # fmt: skip
    # the real fit's additional phase shift, applied as it is fitted (a phase shift of the
    # scattered beams); the simulation's own amplitude contrast comes from its absorption
    scope = Microscope(energy_ev=ENERGY_EV, energy_filter=energy_filter,
                       phase_plate_rad=fit.phase_shift_rad)  # fmt: skip
    # the simulation's defocus refers to the exit plane; the fitted one to the specimen
    # (particles and ice around the slab's mid-plane, the centre of the field)
    exit_to_mid = float(slice_edges_a(specimen, settings)[-1]) - float(specimen.slab_center_a[2])
    imaging = Imaging(defocus_a=fit.defocus_a + exit_to_mid, dose_e_per_a2=DOSE_E_PER_A2,
                      astigmatism_a=fit.astigmatism_a,
                      astigmatism_angle_rad=fit.astigmatism_angle_rad,
                      damage=RadiationDamage())  # fmt: skip
    detector = Detector(gain_counts_per_e=gain, mtf_camera="k2_300kv", mtf_after_noise=False,
                        noise_model="scaled_poisson")  # fmt: skip
    with torch.no_grad():
        r = micrograph(specimen, potential=settings, microscope=scope, detector=detector,
                       imaging=imaging, generator=torch.Generator().manual_seed(args.seed + 1))
    return r.counts.double().numpy(), count


def form_factor_ripple(model_file: str, per_2048: float, seed: int, fit, microscope,
                       n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Relative power ripple ``r(k)`` of a particle field's form factor about its trend.

    The projected potential of ``per_2048`` copies of ``model_file`` per 2048² px (random
    poses, ``seed``) in 200 Å of uniform ice (the solvent they displace subtracted; no ice
    structure, no CTF): its radial power ``P`` against the square of :func:`background_of`
    of ``√P`` (one ring period of the fit's CTF, as for the micrographs' rings), ``r =
    (√P / B)² − 1``. What the particles' own spectrum adds to the rings' background-
    subtracted profile, for :func:`estimator_truth_check`.
    """
    extent = n * SAMPLING_A
    model = read_structure(ROOT / "data" / model_file, dtype=torch.float32)
    count = max(1, round(per_2048 * (n / 2048) ** 2))
    specimen = build_specimen(model, count, extent_a=(extent, extent),
                              ice=IceSlab(thickness_a=200.0),
                              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    settings = PotentialSettings(shape=(n, n), sampling_a=SAMPLING_A, slice_thickness_a=20.0,
                                 energy_ev=ENERGY_EV)  # fmt: skip
    with torch.no_grad():
        v = projected_potential(specimen, settings).real.double()
    power = micrograph_power_spectrum(v, tile_px=TILE_PX)
    k, p = radial(power)
    amp = np.sqrt(p)
    return k, (amp / background_of(amp, k, fit.defocus_a, microscope)) ** 2 - 1


def tilt_consistency(seed: int, n: int = 256, s: float = 1.0, tilt_deg: float = 10.0):
    """CC of low-passed projected ice at 0° and tilt (0° stretched by cos θ along x)."""
    slab = build_specimen([], [], extent_a=(n * s, n * s), ice=IceSlab(thickness_a=100.0),
                          generator=torch.Generator().manual_seed(0))  # fmt: skip

    def proj(structure_seed, tilt):
        # the two views of one series: the ice's modes go to both (as tilt_series does)
        ice = IceStructure(seed=structure_seed).for_views([0.0, tilt_deg * DEG_TO_RAD],
                                                          90 * DEG_TO_RAD)  # fmt: skip
        settings = PotentialSettings(shape=(n, n), sampling_a=s, slice_thickness_a=20.0,
                                     ice_structure=ice)
        spec = tilt_specimen(slab, tilt_angle_rad=tilt * DEG_TO_RAD, tilt_axis_angle_rad=90 *
                             DEG_TO_RAD)  # fmt: skip
        v = projected_potential(spec, settings).real.double()
        return v - v.mean()

    def lowpass(v, k_max=0.04):
        f = torch.fft.fftfreq(n, d=s, dtype=torch.float64)
        mask = (f[:, None] ** 2 + f[None, :] ** 2) <= k_max**2
        return torch.fft.ifft2(torch.fft.fft2(v) * mask).real

    a = lowpass(proj(seed, 0.0))
    b = lowpass(proj(seed, tilt_deg))
    c = lowpass(proj(seed + 1, tilt_deg))
    # tilt axis along y (φ = 90°): x' = c + cos θ (x − c) for a thin slab at the centre plane
    x = (torch.arange(n, dtype=torch.float64) + 0.5) * s
    src = n * s / 2 + (x - n * s / 2) / math.cos(tilt_deg * DEG_TO_RAD)
    grid_x = (2 * src / (n * s) - 1).expand(n, n)
    grid_y = (2 * x / (n * s) - 1)[:, None].expand(n, n)
    grid = torch.stack([grid_x, grid_y], dim=-1)[None]
    stretched = torch.nn.functional.grid_sample(a[None, None], grid, align_corners=False)[0, 0]
    inner = slice(n // 8, n - n // 8)

    def cc(u, v):
        u, v = u[inner, inner].flatten(), v[inner, inner].flatten()
        u, v = u - u.mean(), v - v.mean()
        return float((u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum()))

    return cc(stretched, b), cc(a, b), cc(stretched, c)


def _peak_rss_mib() -> float:
    """This process's peak resident memory [MiB]: ``VmHWM``, which (unlike ``ru_maxrss``,
    kept across ``exec`` on Linux) does not inherit the launching process's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def memory_child(thickness: float) -> None:
    n = 512
    slab = build_specimen([], [], extent_a=(n * 1.0, n * 1.0), ice=IceSlab(thickness_a=thickness),
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    settings = PotentialSettings(shape=(n, n), sampling_a=1.0, slice_thickness_a=20.0,
                                 ice_structure=IceStructure())
    before = _peak_rss_mib()
    t0 = time.perf_counter()
    with torch.no_grad():
        micrograph(slab, potential=settings, microscope=Microscope(energy_ev=ENERGY_EV),
                   detector=Detector(), imaging=Imaging(defocus_a=1e4, dose_e_per_a2=40.0))
    print(json.dumps(dict(before=before, peak=_peak_rss_mib(), s=time.perf_counter() - t0)))


ESTIMATORS = (
    ("zeros", "depths", "lowest bin, radial average (parabola vertex)"),
    ("zeros_eq", "depths_eq", "lowest bin, equiphase average"),
    ("fit_zeros_eq", "fit_depths_eq", "whole-ring fit, equiphase average"),
    ("ctf_zeros", "ctf_depths_eq", "fitted-CTF zeros, sin² depth at them (equiphase)"),
)
CONFIGS = (("sim, uniform ice", False, True), ("sim, structured ice", True, True),
           ("sim, no filter", True, False))  # fmt: skip
MAIN = "sim, structured ice"  # the configuration of the real acquisition
#: THE estimator of the verdict, for zeros and depths alike, chosen by the rule of
#: benchmarks/realism_estimators.py (fixed before it ran; results in
#: benchmarks/results/realism_estimators.json) on simulations WITH particles, before the
#: comparison with the real: each image's fitted-CTF zeros (fit_ctf over 30-4 Å, phase
#: shift free: all rings at once), and each ring's sin² depth with its zero fixed there
#: (equiphase profile, fit_ctf's background). On full simulations (3 seeds each, 2048²)
#: its zeros are within +0.50 ± 1.19 % (apoferritin) and +0.86 ± 0.54 % (spike) of the true
#: ones at ring 1, ≤ 0.42 % at rings 2-5; the free whole-ring fit's ring 1 is pulled to
#: -5.2 % and -4.0 %, the lowest bins' to -6.4 % and -4.2 % (the particles' spectrum
#: falls and ripples across ring 1). No estimator met the rule's depth part: with the
#: particles' form-factor ripple on the ring signal, every ring-1 depth departs from the
#: ripple-free one (this one 0.42 and 0.54 of it; rings 2-3 0.94-1.08), so ring-1 depths
#: compare the contents' form factors as much as the CTF envelopes. Until 2026-12-01 the
#: verdict was the free whole-ring fit (chosen on Gaussian fields without particles).
VERDICT = "fitted-CTF zeros, sin² depth at them (equiphase)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-px", type=int, default=2048, help="field size [px] (real: 2048)")
    parser.add_argument("--ice", type=float, default=200.0, help="ice thickness [Å]")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--model", default=CONTENT[0],
                        help="particle model in data/ (default: the content measured in the "
                             "real field, benchmarks/realism_content.py)")  # fmt: skip
    parser.add_argument("--particles", type=float, default=CONTENT[1],
                        help="particles per 2048² px field")
    parser.add_argument("--quick", action="store_true", help="1024² field, fewer checks")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory check")
    parser.add_argument("--main-only", action="store_true",
                        help=f"simulate only {MAIN!r} (the real acquisition's configuration)")
    parser.add_argument("--tilt-deg", type=float, default=0.0,
                        help="experiment: tilt the simulated field about y [deg]")  # fmt: skip
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "realism.json"))
    parser.add_argument("--only-memory", action="store_true",
                        help="run only the memory check and update its entry in --json")
    parser.add_argument("--memory-child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--summary", action="store_true",
                        help="print the over-seeds summary of the record in --json and stop")
    args = parser.parse_args()
    if args.summary:
        summary_from_json(args.json)
        return
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    if args.only_memory:
        record = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
        record["memory"] = _memory_check()
        record["memory_command"] = "benchmarks/realism.py --only-memory"
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        return
    if args.quick:
        args.n_px = 1024
    seeds = [int(v) for v in args.seeds.split(",")]
    torch.set_num_threads(1)  # shared machine; also pytorch#169670 at 2048² complex64
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores shared)")
    real, voxel = read_mrc(ROOT / "data" / "fei-extended_crop2048.mrc")
    real = np.asarray(real, dtype=np.float64)
    print(f"real micrograph: {real.shape[1]}×{real.shape[0]} px, voxel size from the MRC "
          f"header {float(voxel):.4f} Å (README: 0.8538 Å), 300 kV, Cs 2.7 mm")
    scope = Microscope(energy_ev=ENERGY_EV)
    t0 = time.perf_counter()
    fit0 = fit_like_real(real, scope, phase_shift=False)  # fmt: skip
    print(f"real micrograph CTF fit, no phase shift: defocus {fit0.defocus_a / UM_TO_A:.4f} µm, "
          f"astigmatism {fit0.astigmatism_a:.0f} Å at "
          f"{math.degrees(fit0.astigmatism_angle_rad):.0f}°, score {fit0.score:.3f}")
    t0 = time.perf_counter()
    fit = fit_like_real(real, scope)  # fmt: skip
    print(f"real micrograph CTF fit with phase shift ({time.perf_counter() - t0:.0f} s): "
          f"defocus {fit.defocus_a / UM_TO_A:.4f} ± {fit.defocus_error_a / UM_TO_A:.4f} µm, "
          f"astigmatism {fit.astigmatism_a:.0f} Å at "
          f"{math.degrees(fit.astigmatism_angle_rad):.0f}°, phase shift "
          f"{fit.phase_shift_rad:+.3f} ± {fit.phase_shift_error_rad:.3f} rad (beyond A = 0.07), "
          f"score {fit.score:.3f}, fit resolution {fit.fit_resolution_a:.1f} Å")
    truth = ctf_zeros_per_a(5, defocus_a=fit.defocus_a, cs_a=float(scope.cs_a),
                            energy_ev=ENERGY_EV, phase_shift_rad=offset(fit)).numpy()  # fmt: skip
    print("its CTF zeros [1/Å] (the simulations' true zeros): "
          + " ".join(f"{z:.4f}" for z in truth))
    res_real = analyse(real, fit, scope, own_fit=fit)
    res_real["fitted_defocus"] = fit.defocus_a
    res_real["fitted_phase"] = fit.phase_shift_rad
    res_real["fitted_phase_error"] = fit.phase_shift_error_rad
    gain = res_real["noise_var_over_mean"]  # white counting noise: floor / mean = gain
    print(f"gain from the real noise floor: {gain:.1f} counts/e (README: about 101)")
    quadrants = []
    for i in (0, 1024):
        for j in (0, 1024):
            quadrant = np.ascontiguousarray(real[i:i + 1024, j:j + 1024])
            own = fit_like_real(quadrant, scope)
            quadrants.append(analyse(quadrant, fit, scope, own_fit=own))
    record = dict(command=" ".join(["benchmarks/realism.py", *sys.argv[1:]]),
                  load_average=list(os.getloadavg()), n_px=args.n_px, ice_a=args.ice,
                  model=args.model, particles_per_2048=args.particles,
                  tilt_deg=args.tilt_deg,
                  seeds=seeds, real_fit=dict(defocus_a=fit.defocus_a,
                  astigmatism_a=fit.astigmatism_a,
                  astigmatism_angle_deg=math.degrees(fit.astigmatism_angle_rad),
                  score=fit.score, phase_shift_rad=fit.phase_shift_rad,
                  phase_shift_error_rad=fit.phase_shift_error_rad,
                  defocus_error_a=fit.defocus_error_a),
                  real_fit_no_phase=dict(defocus_a=fit0.defocus_a,
                  astigmatism_a=fit0.astigmatism_a, score=fit0.score),
                  true_zeros=truth.tolist(),
                  real=_numbers(res_real), real_quadrants=[_numbers(q) for q in quadrants],
                  sims={})  # fmt: skip
    record["estimator_truth"] = estimator_truth_check(fit, scope, res_real,
                                                      n_draws=2 if args.quick else 8)
    _estimator_table("real K2, its own zeros vs its CTF fit's", {"full 2048²": res_real,
                     **{f"quadrant {i}": q for i, q in enumerate(quadrants)}}, truth)  # fmt: skip
    images = {"real K2": real}
    runs_by_seed = {}
    for seed in seeds:
        args.seed = seed
        runs = {"real K2": res_real}
        for label, structured, filt in CONFIGS:
            if (args.quick and label == "sim, uniform ice") or (args.main_only and label != MAIN):
                continue
            t0 = time.perf_counter()
            img, count = simulate_field(args, fit, gain, structured=structured,
                                        energy_filter=filt)  # fmt: skip
            print(f"seed {seed}, {label}: {count} × {args.model} in {args.ice:.0f} Å ice, "
                  f"{args.n_px}² px: {time.perf_counter() - t0:.0f} s")
            sim_fit = fit_like_real(img, scope)  # fmt: skip
            runs[label] = analyse(img, fit, scope, own_fit=sim_fit)
            runs[label]["fitted_defocus"] = sim_fit.defocus_a
            runs[label]["fitted_phase"] = sim_fit.phase_shift_rad
            runs[label]["fitted_phase_error"] = sim_fit.phase_shift_error_rad
            if seed == seeds[0]:
                images[label] = img
        print(f"\n=== seed {seed} ===")
        _table(runs, fit)
        _estimator_table(f"seed {seed}: simulated zeros vs their true CTF zeros",
                         {k: v for k, v in runs.items() if k != "real K2"}, truth)  # fmt: skip
        runs_by_seed[seed] = runs
        record["sims"][str(seed)] = {k: _numbers(v) for k, v in runs.items() if k != "real K2"}
    _summary(runs_by_seed, res_real)
    if not args.quick:
        print("\nsame ice from two tilts (projected potential, 100 Å slab, 256² at 1 Å, "
              "low-passed to 25 Å):")
        same, raw, other = tilt_consistency(seeds[0])
        print(f"  CC(0° stretched, 10°) = {same:.3f}; unstretched {raw:.3f}; "
              f"another seed {other:.3f}")
        record["tilt_cc"] = dict(stretched=same, unstretched=raw, other_seed=other)
    if not args.quick and not args.no_memory:
        record["memory"] = _memory_check()
    elif not args.quick and Path(args.json).exists():  # keep the last measured one
        previous = json.loads(Path(args.json).read_text())
        if "memory" in previous:
            record["memory"] = previous["memory"]
            record["memory_command"] = previous.get("memory_command", previous["command"])
    _figure(images, runs_by_seed[seeds[0]], fit)
    if not args.quick:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"results: {args.json}")


def _memory_check() -> list[dict]:
    print("\npeak memory (VmHWM), 512² structured-ice micrograph (fresh process each):")
    print(f"  {'ice [Å]':>8} {'peak RSS [MiB]':>15} {'time [s]':>9}")
    rows = []
    for thickness in (200.0, 800.0, 3200.0):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(thickness)],
                             capture_output=True, text=True, check=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        print(f"  {thickness:>8.0f} {m['peak']:>15.0f} {m['s']:>9.1f}")
        rows.append(dict(ice_a=thickness, peak_mib=m["peak"], s=m["s"]))
    return rows


def _numbers(r: dict) -> dict:
    keys = [k for k in r if k.startswith(("zeros", "depths", "fit_", "band_", "ctf_")) or k in (
        "ice_ring_k", "ice_ring_centroid", "ice_ring_height", "mean", "noise_var_over_mean",
        "tile_var_over_mean", "fitted_defocus", "fitted_phase", "fitted_phase_error")]  # fmt: skip
    return {k: (r[k].tolist() if isinstance(r[k], np.ndarray) else r[k]) for k in keys}


def _estimator_table(title: str, runs: dict, truth: np.ndarray) -> None:
    print(f"\n{title} (Δ% per ring, first five):")
    for zkey, _, name in ESTIMATORS:
        print(f"  {name}:")
        for label, r in runs.items():
            rel = (r[zkey] / truth - 1) * 100
            print(f"    {label:<20} " + " ".join(f"{d:+6.2f}" for d in rel))


def _table(runs: dict, fit) -> None:
    real = runs["real K2"]
    for zkey, dkey, name in ESTIMATORS:
        print(f"\nThon-ring zeros [1/Å], {name} (Δ% to the real):")
        for label, r in runs.items():
            rel = (r[zkey] / real[zkey] - 1) * 100
            print(f"  {label:<20} " + " ".join(f"{z:.4f}" for z in r[zkey])
                  + ("" if label == "real K2" else "  Δ% " + " ".join(f"{d:+.2f}" for d in rel)))
        print(f"ring modulation depth, {name} (ratio sim/real):")
        for label, r in runs.items():
            ratio = " ".join(f"{x:.2f}" for x in r[dkey] / real[dkey])
            print(f"  {label:<20} " + " ".join(f"{d:.4f}" for d in r[dkey])
                  + ("" if label == "real K2" else f"  ratio {ratio}"))
    print("\nThon-ring modulation per band (equiphase; sin² amplitude / background), "
          + ", ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in BANDS) + " Å⁻¹:")
    for label, r in runs.items():
        print(f"  {label:<20} " + " ".join(f"{v:+.4f}" for v in r["band_modulation"]))
    print("\nfitted defocus and phase shift of each image (fit_ctf, 30-4 Å) and its CTF zeros "
          "vs the real fit:")
    for label, r in runs.items():
        z = ctf_zeros_per_a(5, defocus_a=r["fitted_defocus"], cs_a=2.7e7, energy_ev=ENERGY_EV,
                            phase_shift_rad=PHASE + r["fitted_phase"]).numpy()
        r["model_zeros"] = z
        rel = (z / real.get("model_zeros", z) - 1) * 100
        print(f"  {label:<20} {r['fitted_defocus'] / UM_TO_A:.4f} µm "
              f"{r['fitted_phase']:+.3f}±{r['fitted_phase_error']:.3f} rad  zeros "
              + " ".join(f"{v:.4f}" for v in z)
              + ("" if label == "real K2" else "   Δ% " + " ".join(f"{d:+.2f}" for d in rel)))
    head = (f"{'image':<20} {'ring k':>6} {'centr.':>6} {'height':>7} {'mean':>6} {'Δmean':>7} "
            f"{'noise var/mean':>14} {'Δ':>6} {'tile var/mean':>13}")
    print("\n" + head + "\n" + "-" * len(head))
    for label, r in runs.items():
        dm = (r["mean"] / real["mean"] - 1) * 100
        dv = (r["noise_var_over_mean"] / real["noise_var_over_mean"] - 1) * 100
        print(f"{label:<20} {r['ice_ring_k']:>6.3f} {r['ice_ring_centroid']:>6.3f} "
              f"{r['ice_ring_height']:>7.3f} {r['mean']:>6.0f} {dm:>+6.1f}% "
              f"{r['noise_var_over_mean']:>14.1f} {dv:>+5.1f}% "
              f"{r['tile_var_over_mean']:>13.1f}")


def _summary(runs_by_seed: dict, real: dict) -> None:
    """Structured ice with filter (the real acquisition) over all seeds: mean ± std."""
    n = len(runs_by_seed)
    print(f"\n=== {MAIN}, energy filter: over {n} seed(s) (mean ± std; worst) ===")
    for zkey, dkey, name in ESTIMATORS:
        if zkey not in real or dkey not in real:  # an older record
            continue
        rel = np.array([(r[MAIN][zkey] / real[zkey] - 1) * 100 for r in runs_by_seed.values()])
        ratio = np.array([r[MAIN][dkey] / real[dkey] for r in runs_by_seed.values()])
        print(f"  {name}:")
        zeros = " ".join(f"{m:+5.2f}±{sd:4.2f}" for m, sd in zip(rel.mean(0), rel.std(0),
                                                                   strict=True))  # fmt: skip
        depth = " ".join(f"{m:.2f}±{sd:.2f}" for m, sd in zip(ratio.mean(0), ratio.std(0),
                                                               strict=True))  # fmt: skip
        print(f"    zeros Δ%   {zeros}")
        print(f"    worst |Δ%| {np.abs(rel).max():.2f}; depth ratios {depth} "
              f"(range {ratio.min():.2f}-{ratio.max():.2f})")
    ring = np.array([r[MAIN]["ice_ring_k"] for r in runs_by_seed.values()])
    cen = np.array([r[MAIN]["ice_ring_centroid"] for r in runs_by_seed.values()])
    hgt = np.array([r[MAIN]["ice_ring_height"] for r in runs_by_seed.values()])
    print(f"  ice ring: maximum {ring.min():.3f}-{ring.max():.3f}, centroid "
          f"{cen.min():.3f}-{cen.max():.3f} Å⁻¹ (real {real['ice_ring_k']:.3f} / "
          f"{real['ice_ring_centroid']:.3f}); height ×{(hgt / real['ice_ring_height']).min():.2f}"
          f"-{(hgt / real['ice_ring_height']).max():.2f} of the real")
    ph = np.array([r[MAIN]["fitted_phase"] for r in runs_by_seed.values()])
    print(f"  fit_ctf phase shift of the simulations {ph.min():+.3f}..{ph.max():+.3f} rad "
          f"(real {real['fitted_phase']:+.3f} ± {real['fitted_phase_error']:.3f}, simulated "
          "with it as phase plate)")
    zkey, dkey = next((z, d) for z, d, name in ESTIMATORS if name == VERDICT)
    if zkey not in real or dkey not in real:
        print(f"  verdict ({VERDICT}): not in this record")
        return
    rel = np.array([(r[MAIN][zkey] / real[zkey] - 1) * 100 for r in runs_by_seed.values()])
    ratio = np.array([r[MAIN][dkey] / real[dkey] for r in runs_by_seed.values()])
    zeros_ok = (np.abs(rel) <= 2.0).all(axis=1)
    depth_ok = ((ratio >= 1 / 1.5) & (ratio <= 1.5)).all(axis=1)
    print(f"  verdict ({VERDICT}): zeros within 2 % at {zeros_ok.sum()} of {n} seeds, "
          f"depths within ×1.5 at {depth_ok.sum()} of {n} seeds")
    print(f"\n  every target per seed ({VERDICT}; the issue's tolerances):")
    print(f"  {'seed':>4} {'zeros Δ% (≤2)':>36} {'depth ratio (×1.5)':>20} {'ice max':>7} "
          f"{'centr.':>6} {'height ×(2)':>11} {'mean Δ%(3)':>10} {'var/mean Δ%(5)':>14}")
    for i, (seed, r) in enumerate(runs_by_seed.items()):
        m = r[MAIN]
        dm = (m["mean"] / real["mean"] - 1) * 100
        dv = (m["noise_var_over_mean"] / real["noise_var_over_mean"] - 1) * 100
        print(f"  {seed!s:>4} " + " ".join(f"{v:+6.2f}" for v in rel[i]) + "  "
              + " ".join(f"{v:5.2f}" for v in ratio[i])
              + f"  {m['ice_ring_k']:7.3f} {m['ice_ring_centroid']:6.3f} "
              f"{m['ice_ring_height'] / real['ice_ring_height']:11.2f} {dm:+10.2f} {dv:+14.2f}")


def summary_from_json(path: str) -> None:
    """The over-seeds summary (``_summary``) of a stored record, with today's VERDICT."""
    record = json.loads(Path(path).read_text())

    def arrays(d):
        return {k: np.array(v) if isinstance(v, list) else v for k, v in d.items()}

    real = arrays(record["real"])
    runs = {seed: {MAIN: arrays(v[MAIN])} for seed, v in record["sims"].items()}
    print(f"{record['command']} ({record.get('model', '6z6u.pdb.gz')}, "
          f"{record.get('particles_per_2048', REAL_PARTICLES_PER_2048)} per 2048² field)")
    _summary(runs, real)


def _figure(images: dict, runs: dict, fit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    wanted = ("real K2", "sim, uniform ice", "sim, structured ice")
    labels = [lab for lab in wanted if lab in images]
    fig = plt.figure(figsize=(7.5, 7.0), layout="constrained")
    for i, label in enumerate(labels):
        ax = fig.add_subplot(2, 3, i + 1)
        view = images[label][:512, :512].reshape(128, 4, 128, 4).mean(axis=(1, 3))
        lo, hi = np.percentile(view, [1, 99])
        ax.imshow(view, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(2, 1, 2)
    for label, r in runs.items():
        sel = (r["k"] > 0.03) & (r["k"] < 0.5)
        ax.plot(r["k"][sel], r["power"][sel] / r["power"][(r["k"] > 0.4)].mean(), lw=0.8,
                label=label)
    for z in runs["real K2"]["zeros"]:
        ax.axvline(z, color="k", ls=":", lw=0.6)
    ax.axvline(0.27, color="tab:red", ls="--", lw=0.6)
    ax.set_xlabel("spatial frequency [1/Å]", fontsize=9)
    ax.set_ylabel("power / noise floor", fontsize=9)
    ax.set_title(f"radial power spectra (dotted: real ring zeros; defocus fitted "
                 f"{fit.defocus_a / UM_TO_A:.3f} µm; dashed: 3.7 Å)", fontsize=9)
    ax.legend(fontsize=8)
    path = OUT / "realism.png"
    fig.savefig(path, dpi=100)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
