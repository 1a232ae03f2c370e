# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Denoising through the detector model
#
# Cryo-EM images are shot-noise limited: at a few tens of electrons per pixel the noise
# is as strong as the contrast of a protein. The seed paper's largest experiment
# recovers the noise-free image from a few noisy projections of the same view by
# optimising *through* the Poisson noise of the differentiable detector. This chapter
#
# * explains that published method and its surrogate loss, and runs it
#   (`tem_core.denoise.denoise_surrogate`), with an unbiased and a pathwise variant;
# * builds a better estimator from what the simulator knows: Poisson counts, blurred by
#   a known MTF with a known gain (`tem_core.denoise.denoise_poisson`), with a local
#   spectral Wiener filter as the prior;
# * compares them with simple baselines and the pretrained Topaz-Denoise U-Net on the
#   paper's scene over a grid of doses and numbers of projections
#   (`benchmarks/denoise.py`, whose stored table this chapter reads);
# * denoises a real tilt series with its neighbouring tilts (the paper's Algorithm 2).
#
# **Prerequisites:** the imaging chapter (detector: dose, gain, MTF, shot noise) and the
# differentiation chapter (score-function and pathwise gradients). Frequencies are in
# cycles per pixel (Nyquist 0.5).

# %% tags=["parameters"]
dose_low_e_per_nm2 = 100.0  # dose per projection of the low-dose examples [e/nm²]
dose_high_e_per_nm2 = 2000.0  # ... and of the high-dose examples [e/nm²]
dose_demo_e_per_nm2 = 700.0  # the release's setting for the convergence run [e/nm²]
n_projections = 2  # noisy projections per view in the examples
iterations = 150  # Adam steps of the published method
seed = 0
device = "auto"
quick = False

# %%
import json
import textwrap
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from tem_core import units
from tem_core.denoise import (
    PoissonSettings,
    SurrogateSettings,
    denoise_poisson,
    denoise_surrogate,
    estimate_noise_std,
    load_denoiser,
    local_wiener,
    neighbour_references,
    network_denoise,
    nlm_denoise,
)
from tem_core.denoise.metrics import fourier_ring_correlation, normalise_minmax, psnr
from tem_core.denoise.scene import TMV_DETECTOR, particle_windows, tmv_intensities
from tem_core.detector import Detector, detect
from tem_core.io import read_mrc, read_tilt_angles
from tem_core.plotting import (
    heatmap_table,
    margin_table,
    method_margins,
    montage,
    show_image,
)
from tem_core.simulate import resolve_device

device = resolve_device(device)
roots = [Path.cwd(), *Path.cwd().parents]
ROOT = next(p for p in roots if (p / "data" / "2om3.pdb.gz").exists())
pixel_a = 5.0
# the benchmark's evaluation strip (128 × 320 px, all three segments); quick: part of it
strip = (
    (slice(146, 274), slice(40, 360))
    if not quick
    else (slice(178, 242), slice(160, 320))
)
if quick:
    iterations = 15
print("device:", device)

# %% [markdown]
# ## The scene
#
# The paper's scene is TEM-simulator's TMV example: three 49-subunit segments of the
# tobacco mosaic virus (PDB 2OM3) in 50 nm of ice, one seen end-on and two side-on,
# imaged at 200 kV with 5 µm underfocus on 0.5 nm pixels; the detector has gain 10 and
# TEM-simulator's default MTF, with the Poisson noise before the blur. The truth of
# every experiment is the noise-free detector image (MTF and gain applied).
#
# The ice is a flat continuum: 99.8 % of the noise-free image's contrast energy lies in
# three 48 × 48 px windows (24 nm) around the 18-nm segments, 17 % of the strip. Scored
# over the whole field, a constant grey image is hard to beat (it reproduces the ice
# exactly and scores 26 dB); the benchmark therefore scores PSNR in the particle windows,
# placed from the known positions, where that constant drops to 18.5 dB: a method gets
# credit for the particles, not for flattening the ice.

# %%
intensity = tmv_intensities(
    ROOT / "data" / "2om3.pdb.gz", tilts_deg=(0.0,), device=device
)[0]
intensity = intensity[strip].double()


def noisy_views(dose_e_per_nm2, n, seed):
    dose = dose_e_per_nm2 * units.E_PER_NM2_TO_E_PER_A2
    g = torch.Generator(device=device).manual_seed(seed)
    stack = detect(
        intensity.expand(n, -1, -1),
        detector=TMV_DETECTOR,
        dose_e_per_a2=dose,
        sampling_a=pixel_a,
        generator=g,
    )
    truth = detect(
        intensity, detector=TMV_DETECTOR, dose_e_per_a2=dose, sampling_a=pixel_a
    )
    return stack, truth


windows = particle_windows(
    tuple(intensity.shape), origin_px=(strip[0].start, strip[1].start)
).to(device)


def psnr_particles(estimate, truth):
    """PSNR in counts inside the particle windows (data range: the truth's there)."""
    t = truth[windows]
    span = float(t.max() - t.min())
    return float(psnr(estimate[windows][None], t[None], data_range=span))


deviation = (intensity - intensity.median()) ** 2
print(
    f"strip {tuple(intensity.shape)} px, contrast range {float(intensity.min()):.3f}"
    f"-{float(intensity.max()):.3f} of vacuum;\n"
    f"windows: {float(windows.double().mean()):.0%} of the pixels, "
    f"{float(deviation[windows].sum() / deviation.sum()):.1%} of the contrast energy"
)

# %% [markdown]
# ## The published method and its surrogate loss
#
# The unknown is one image Ĩ of expected electrons per pixel (before the MTF), started
# uniform in [0, 30). Each Adam step (lr 1.0, betas 0.8 and 0.992) draws S = 50 samples
# k ~ Poisson(|Ĩ|), blurs them, I = gain · MTF ⊛ k, min-max normalises predictions
# and the n measured projections (tiled up to 50) with detached extremes, and forms per
# pixel
# se = (ref − pred)², a per-image baseline b = mean(se) and the surrogate loss
#
# L = mean over samples and pixels of (se − b) · log P(k | Ĩ).
#
# Its gradient, (se − b)(k/Ĩ − 1), is a score-function (REINFORCE) estimate: it never
# differentiates the sample. But it multiplies the error of pixel j by the
# log-probability of pixel j alone, while se_j also depends on the neighbours' counts
# (through the MTF) and on all counts (through the normalisation): the estimator is
# biased (`tests/test_denoise.py` measures the bias on a 2 × 2 image against an exact
# enumeration). The *unbiased* variant multiplies the whole-image loss of each sample by
# its summed log-probability with a leave-one-out baseline; the *pathwise* variant
# differentiates a Gaussian relaxation k = Ĩ + √Ĩ·ε. The output is gain · MTF ⊛ |Ĩ|.
#
# The iteration count is not published; the curve below (a live run at the release's
# setting) and the benchmark's longer curves set it.

# %%
stack, truth = noisy_views(dose_demo_e_per_nm2, n_projections, seed)
curves = {}
for name in ("published", "unbiased", "pathwise"):
    points = []

    def record(it, out, points=points):
        if (it + 1) % 5 == 0:
            t = normalise_minmax(truth)
            points.append(
                (it + 1, float(psnr(normalise_minmax(out.double()), t, data_range=1)))
            )

    denoise_surrogate(
        stack.float(),
        detector=TMV_DETECTOR,
        generator=torch.Generator(device=device).manual_seed(seed + 1),
        settings=SurrogateSettings(n_iterations=iterations, estimator=name),
        callback=record,
    )
    curves[name] = np.array(points)

# %% tags=["hide-input"]
stored_path = ROOT / "benchmarks" / "denoise_results.json"
stored = json.loads(stored_path.read_text()) if stored_path.exists() else None
fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0), constrained_layout=True)
for name, c in curves.items():
    axes[0].plot(c[:, 0], c[:, 1], label=name)
axes[0].set(xlabel="iteration", ylabel="PSNR [dB], min-max", title="this run")
axes[0].legend(fontsize=9)
if stored:
    for name, c in stored["convergence"].items():
        axes[1].plot(c["iteration"], c["psnr_counts"], label=name)
    axes[1].set(xlabel="iteration", ylabel="PSNR [dB], counts", title="benchmark run")
    axes[1].legend(fontsize=9)
plt.show()

# %% [markdown]
# ## A better method from the known detector
#
# `denoise_poisson` uses four facts of the detector model. (1) The MTF has no zeros, so
# dividing each projection's spectrum by gain · MTF returns the integer counts exactly:
# the blur only correlates the noise. (2) The sum S of the n count images is Poisson
# with mean n·λ and is a sufficient statistic: the maximum-likelihood estimate S/n,
# blurred again, *is* the mean of the projections, so any gain must come from a prior.
# (3) The Anscombe transform z = 2√(S + 3/8) makes the noise Gaussian with unit
# variance at every dose, so the prior's weight can be chosen from the data alone by
# Stein's unbiased risk estimate (SURE). (4) The prior is total variation: a particle in
# ice is a flat background with compact objects. The result is mapped back with the
# exact unbiased inverse Anscombe transform and blurred by the MTF. Nothing is tuned per
# image, and the same code runs on a GPU.
#
# TV favours flat patches, while a defocused particle is a set of CTF fringes. The
# local spectral Wiener prior (`regulariser="wiener"`) uses instead that the noise power
# is known (1 per pixel after Anscombe) and that the signal is compact in space and in
# frequency: in overlapping Hann-windowed 32 × 32 px patches it keeps the rings of
# radial frequency whose power, pooled over neighbouring patches, exceeds the noise
# (James–Stein shrinkage), and then applies the empirical Wiener gain |P|²/(|P|² + σ²)
# of that pilot P to the data, coefficient by coefficient (the second stage of BM3D
# without block matching). Ice patches lose all but their mean level; particle patches
# keep the CTF rings they hold. Its settings were chosen once on a separate image.
#
# A linear filter cannot know what a particle looks like. The network prior
# (`regulariser="network"`, `tem_core.denoise.learned`) learns it from the simulator: a
# small U-Net (0.4 M weights) takes the summed exact counts S as relative contrast, the
# known noise level 1/√mean(S) and the Wiener estimate, and predicts a correction of the
# Wiener estimate. It was trained once (`benchmarks/train_denoiser.py`, seed 0, one CPU
# thread, 1000 steps) with squared error after the MTF, relative to the Wiener estimate's
# own error, on exact Poisson draws over 25-50 000 electrons per pixel of 240 images
# that the package simulated: random numbers, positions and orientations of TMV
# segments, apoferritin and Zika virions in ice of random thickness at random defocus.
# The benchmark's scene is never shown to it, but its forward model is the one the
# benchmark uses: the scores below measure the method on its own simulator.

# %%
examples = {}
for dose in (dose_low_e_per_nm2, dose_high_e_per_nm2):
    stack, truth = noisy_views(dose, n_projections, seed + int(dose))
    out = denoise_surrogate(
        stack.float(),
        detector=TMV_DETECTOR,
        generator=torch.Generator(device=device).manual_seed(seed),
        settings=SurrogateSettings(n_iterations=iterations),
    ).denoised.double()
    examples[dose] = {
        "truth": truth,
        "one projection": stack[0],
        f"mean of {n_projections}": stack.mean(0),
        "published": out,
        "Poisson TV": denoise_poisson(
            stack.float(), detector=TMV_DETECTOR
        ).denoised.double(),
        "Poisson Wiener": denoise_poisson(
            stack.float(),
            detector=TMV_DETECTOR,
            settings=PoissonSettings(regulariser="wiener"),
        ).denoised.double(),
        "Poisson network": denoise_poisson(
            stack.float(),
            detector=TMV_DETECTOR,
            settings=PoissonSettings(regulariser="network"),
        ).denoised.double(),
    }
    examples[dose]["constant"] = torch.full_like(truth, float(stack.mean()))
    print(
        f"{dose:6.0f} e/nm²: PSNR in the particle windows [dB]\n    "
        + "\n    ".join(
            textwrap.wrap(
                ", ".join(
                    f"{k} {psnr_particles(v, truth):.1f}"
                    for k, v in examples[dose].items()
                    if k not in ("truth", "published", "one projection")
                ),
                80,
            )
        )
    )

# %% tags=["hide-input"]
for dose, images in examples.items():
    shown = {k: v for k, v in images.items() if k not in ("constant", "Poisson TV")}
    fig = montage(
        torch.stack([v.cpu() for v in shown.values()]),
        titles=[f"{k}" for k in shown],
        ncols=3,
        panel_size=2.3,
        common_scale=False,
    )
    fig.suptitle(f"{dose:.0f} e/nm² per projection, n = {n_projections}", fontsize=10)
    plt.show()

# %% [markdown]
# ## The benchmark: doses × projections
#
# `benchmarks/denoise.py` runs every method on the 128 × 320 px strip for doses of
# 100-2000 e/nm² per projection and n = 2-50 projections, with the pretrained Topaz
# U-Net on the mean of the projections in a separate environment. The primary score is
# PSNR in counts inside the particle windows (data range: the truth's range there); the
# whole-strip PSNR and the release's protocol (each image min-max normalised) are stored
# beside it. The first column is the constant image at the data's mean: 18.5 dB in the
# windows. The particles' contrast is weak (about 0.3 % of the background in 50 nm of
# ice, blurred by the MTF): at the lowest doses × n even the best estimate in squared
# error is close to that constant, and no method recovers the particles there. The heat
# maps show the gain of the local Wiener method over the mean of the projections and
# over Topaz (the target is at least 1 dB). The stored table's network rows are the
# network alone (`network_symmetries=1, network_blend=False`, the settings before the
# test-time augmentation and the SURE blend of the next section).

# %%
if stored:
    rows = stored["rows"]
    doses = sorted({r["dose_e_per_nm2"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    by = {(r["dose_e_per_nm2"], r["n"], r["method"]): r for r in rows}
    primary = "psnr_particles" if "psnr_particles" in rows[0] else "psnr_counts"
    ours = next(
        m
        for m in ("poisson_network", "poisson_wiener", "poisson")
        if (doses[0], ns[0], m) in by
    )
    names = ("constant", "mean", "published", "poisson_wiener", ours, "topaz")
    methods = list(dict.fromkeys(m for m in names if (doses[0], ns[0], m) in by))
    short = {
        "poisson": "TV",
        "poisson_wiener": "Wiener",
        "poisson_network": "network",
        "published": "publ.",
    }
    for metric, title in (
        (primary, "PSNR [dB], particle windows"),
        ("psnr", "PSNR [dB], min-max normalised (release protocol)"),
    ):
        for n in (ns[0], ns[-1]):
            print(f"{title}, n = {n}")
            print(
                f"{'dose':>5} " + " ".join(f"{short.get(m, m)[:8]:>8}" for m in methods)
            )
            for d in doses:
                cells = [
                    f"{by[(d, n, m)][metric]:>8.2f}" if (d, n, m) in by else f"{'-':>8}"
                    for m in methods
                ]
                print(f"{d:>5} " + " ".join(cells))

    gains = {
        name: method_margins(rows, ours, other, primary)[2]
        for name, other in (("mean", "mean"), ("Topaz", "topaz"))
    }
    met = int(np.sum(gains["Topaz"] >= 1.0))
    print(
        f"{ours} ≥ Topaz + 1 dB at {met}/{gains['Topaz'].size} settings;\n"
        f"mean margin per dose [dB]: "
        + ", ".join(f"{v:.1f}" for v in np.nanmean(gains["Topaz"], axis=1))
    )
else:
    print(f"no stored table at {stored_path}: run benchmarks/denoise.py --out it")

# %% tags=["hide-input"]
if stored:
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6), constrained_layout=True)
    for ax, (other, gain) in zip(axes, gains.items(), strict=True):
        heatmap_table(
            ax,
            gain,
            row_labels=[f"{d:.0f}" for d in doses],
            col_labels=ns,
            label=f"gain over {other} [dB]",
        )
        ax.set(xlabel="projections n", ylabel="dose [e/nm²]")
    plt.show()

# %% [markdown]
# ### Test-time augmentation and a SURE blend
#
# The network was trained on randomly turned and mirrored crops, and the noise model is
# invariant under those symmetries, but the network itself is not: averaging its
# estimate over transforms of the input (`PoissonSettings(network_symmetries=2, 4 or
# 8)`, the transform undone on each output) removes the part of its error that depends
# on the orientation. Its estimate can also be blended, per image, with the Wiener
# estimate it starts from, with the weight that minimises Stein's unbiased risk estimate
# after the MTF (`network_blend=True`, `tem_core.denoise.blend`): the noise level is
# known, so the risk of each blend is estimated from the data alone. Both defaults
# (2 symmetries, blend on) were chosen on the separate tuning image, never on the
# benchmark's scene. A run of the cheap methods and Topaz on a fresh noise draw
# (`benchmarks/results/denoise_tta_2026-12-02.json`; the published method's cached runs
# were not available, and the stored table's noise can no longer be reproduced exactly,
# so it is kept apart) compares them with the network alone:

# %%
tta_path = ROOT / "benchmarks" / "results" / "denoise_tta_2026-12-02.json"
if tta_path.exists():
    tta_rows = json.loads(tta_path.read_text())["rows"]
    labels = {
        "poisson_network_plain": "network alone",
        "poisson_network_tta": "2 symmetries",
        "poisson_network": "2 symm. + SURE blend",
        "poisson_wiener": "Wiener",
    }
    print(margin_table(tta_rows, labels))
else:
    print(f"no run at {tta_path}")

# %% [markdown]
# Together they add 0.01-0.13 dB per dose over the network alone (0.01 at 100 e/nm²).
# With those weights the margin over Topaz stayed below 1 dB at 100 e/nm² per
# projection: on held-out simulated scenes the network was worse than its Wiener pilot
# on the particles at 500-1500 electrons per pixel summed over the projections (it
# flattens the ice instead), which is where 100 e/nm² × 25 or 50 projections lie, and
# the blend, which minimises the risk over the whole image (mostly ice), kept it.
#
# ### The shipped weights: more training where the network was weak
#
# The weights shipped now were trained for 2500 instead of 1500 steps, half of the
# training crops drawing their summed count from 300-3000 electrons per pixel
# (`benchmarks/train_denoiser.py --steps 2500 --focus-electrons 300 3000 --focus-share
# 0.5`). They were chosen on the tuning image (mean particle-window PSNR over the 40
# settings 22.27 dB against 22.08 for the previous weights, every dose up), then run on
# the benchmark's scene with every cheap method and Topaz
# (`benchmarks/results/denoise_lowdose_2026-12-02c.json`; `network, before` is the
# previous weights in the same run):

# %%
new_path = ROOT / "benchmarks" / "results" / "denoise_lowdose_2026-12-02c.json"
if new_path.exists():
    new_rows = json.loads(new_path.read_text())["rows"]
    labels = {
        "poisson_network": "network (shipped)",
        "poisson_network_beta0": "network, before",
        "poisson_wiener": "Wiener",
    }
    print(margin_table(new_rows, labels))
    over_mean = method_margins(new_rows, "poisson_network", "mean")[2]
    print(
        f"shipped network above the mean of projections at "
        f"{int(np.sum(over_mean > 0))}/{over_mean.size} settings"
    )
else:
    print(f"no run at {new_path}")

# %% [markdown]
# The new weights are better than the previous ones at 39 of 40 settings (by 0.20 dB
# on average; the other within 0.01 dB), and the margin over Topaz is at least 1 dB at
# every dose above 100 e/nm² on average over n. At 100 e/nm² it is 0.96 dB: the target
# is still missed there, by 0.04 dB (a run before the forward model's last changes,
# `denoise_lowdose_2026-12-02b.json`, gave 1.01 dB with the same weights). At single
# settings the margin reaches 1 dB at 25 of 40: Topaz scores above the network at
# three (100 e/nm² × 25, 200 and 300 e/nm² × 10 projections, by 0.15-0.46 dB) and less
# than 1 dB below it at twelve more, ten of them with 2-10 projections. Each setting
# is one noise draw on three particles, so single settings scatter by tenths of a dB.
# The new weights change two things at once (more steps and the focus on the weak
# range); a run with more steps alone was not completed, so the gain is not split
# between them.
#
# ### How much of the table is the noise draw
#
# "Tenths of a dB" understates it: the particle-window PSNR of a denoised image is set
# by the residual low-frequency noise in three 48² px windows, which has few degrees of
# freedom. `benchmarks/denoise_draws.py` repeats every setting over six noise draws
# (draw 0 is the table's own seed and reproduces it) for the network, the Wiener prior
# and Topaz on the same noisy stacks:

# %%
draws_path = ROOT / "benchmarks" / "results" / "denoise_draws_2026-12-02.json"
if draws_path.exists():
    draws = json.loads(draws_path.read_text())["summary"]
    print("minus Topaz [dB], particle windows: mean over n, then over draws ± SE")
    print(f"{'dose e/nm²':>10}  {'network':>13}  {'Wiener':>13}  per draw (network)")
    for dose, s in draws["per_dose"].items():
        net, wie = s["network"], s["wiener"]
        print(
            f"{dose:>10}  {net['mean']:+6.2f} ± {net['se']:.2f}  {wie['mean']:+6.2f} ± "
            f"{wie['se']:.2f}  " + " ".join(f"{x:+.2f}" for x in net["per_draw"])
        )
    sd = np.array([c["sd_over_draws"] for c in draws["per_setting"].values()])
    print(f"sd of one setting: median {np.median(sd):.2f}, max {sd.max():.2f} dB")
else:
    print(f"no run at {draws_path}")

# %% [markdown]
# Averaged over draws, the shipped network beats Topaz by 1.32 ± 0.12 dB at 100 e/nm²
# and by more at every other dose; the table's own draw (0.96 dB) is the lowest of the
# six at 100 e/nm². One setting's margin moves by 0.16-0.88 dB (standard deviation,
# median 0.39) from one draw to the next, so the single-draw table above cannot tell
# 0.96 from 1.3 dB.

# %% [markdown]
# ## A real tilt series (Algorithm 2)
#
# A real series holds one exposure per view, so the references are the current tilt and
# its neighbours, each registered onto it (log-polar rotation, then phase correlation)
# and resampled: {P−, P, P+}. The data are nine tilts (−8° to 8°) of the NIST
# STEM-HAADF series of a needle in `data/HAADF.mrc.gz`, cropped to its tip. Its
# detector gain and MTF are unknown, so the Poisson/MTF model does not apply; the
# alternatives to Algorithm 2 here are non-local means and the local Wiener filter for
# Gaussian noise on the mean of the aligned references, with the noise level estimated
# from the data. (The benchmark also runs Algorithm 2 with the pretrained Topaz output
# of each aligned reference added to the references, the paper's option.) Same-parity
# neighbours (±2 tilts) keep the even and odd tilts independent, so the Fourier ring
# correlation (FRC) between a denoised even tilt and the denoised odd tilt next to it
# measures signal, not shared noise. Algorithm 2 starts its rates at 0-30 counts with
# steps of 1 count, as published, while these images hold 10³-10⁴ counts: within the
# iterations run here it stays far from the data's scale and keeps its sampling noise.

# %%
with warnings.catch_warnings():  # the FEI header has no MAP ID: read permissively
    warnings.simplefilter("ignore")
    data, _ = read_mrc(ROOT / "data" / "HAADF.mrc.gz", permissive=True)
all_angles = read_tilt_angles(ROOT / "data" / "HAADF.rawtlt")
zero = int(torch.argmin(all_angles.abs()))
nine = slice(zero - 4, zero + 5)  # the tilts −8°..8°, cropped to the needle's tip
tilts = torch.from_numpy(
    np.asarray(data[nine, 72:200, 96:224], dtype=np.float64) + 32768.0
)
tilts = tilts.to(device)
angles = all_angles[nine]
centre = 4
real = {}
for j in (centre, centre + 1):
    refs = neighbour_references(tilts, j, step=2)
    sigma = float(estimate_noise_std(refs).mean()) / refs.shape[0] ** 0.5
    alg2 = denoise_surrogate(
        refs.float(),
        detector=Detector(mtf_enabled=False),
        generator=torch.Generator(device=device).manual_seed(seed),
        settings=SurrogateSettings(n_iterations=iterations),
    ).denoised.double()
    real[j] = {
        "raw": tilts[j],
        "Algorithm 2": alg2,
        "NLM on aligned": nlm_denoise(refs.mean(0), sigma=sigma),
        "Wiener on aligned": local_wiener(refs.mean(0), noise_var=sigma**2),
    }
    # the simulator-trained network, the data mapped to equivalent Poisson counts
    level = float(refs.mean())
    counts = (level / sigma) ** 2
    with warnings.catch_warnings():  # 3.36 nm pixels, outside its training: it warns
        warnings.simplefilter("ignore", RuntimeWarning)
        real[j]["network on aligned"] = (
            network_denoise(
                refs.mean(0) / level * counts,
                model=load_denoiser(device=device, dtype=torch.float64),
            )
            / counts
            * level
        )
print(
    f"tilts {float(angles[centre]) * units.RAD_TO_DEG:.0f}° and "
    f"{float(angles[centre + 1]) * units.RAD_TO_DEG:.0f}°, "
    f"noise σ ≈ {sigma:.1f} counts ({counts:.3g} equivalent counts per pixel)"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7), constrained_layout=True)
shown = [k for k in real[centre] if k not in ("NLM on aligned", "network on aligned")]
for ax, name in zip(axes, shown, strict=True):
    image = real[centre][name]
    show_image(ax, image.cpu(), title=name)
    ax.set_axis_off()
plt.show()
fig, ax = plt.subplots(figsize=(5.5, 3.0), constrained_layout=True)
for name in real[centre]:
    f, c = fourier_ring_correlation(
        real[centre][name], real[centre + 1][name], n_rings=32
    )
    ax.plot(f.cpu(), c.cpu(), label=name)
ax.set(xlabel="spatial frequency [cycles/px]", ylabel="FRC even/odd tilt")
ax.legend(fontsize=9)
plt.show()

# %% [markdown]
# ## Summary
#
# * The published surrogate-loss method works without differentiating a Poisson sample,
#   but its per-pixel product is a biased gradient estimate and it needs an iteration
#   count chosen from a convergence curve (too many steps fit the noise); the unbiased
#   score-function variant is correct but much noisier at 10⁵ pixels.
# * Knowing the detector changes the problem: the counts can be recovered exactly, their
#   sum is sufficient, and after the Anscombe transform the noise level is known, so the
#   prior needs no per-image tuning. With the local spectral Wiener prior the method
#   beats the mean of the projections at every setting, the published method wherever
#   it ran, and the pretrained Topaz U-Net by at least 1 dB at 19 of 40 settings in the
#   particle windows (about 1 dB on average at 100-300 e/nm², 1.5-3.2 dB above). The
#   target of 1 dB at every setting is not met where the particles are barely above
#   the noise.
# * The network prior, trained on the simulator's own images, beats the Wiener prior at
#   25 of 40 settings (+0.2 dB on average: up to +1.1 dB at high doses × n, down to
#   −0.7 dB at low ones) and Topaz by at least 1 dB at 21 of 40. Where the particles are
#   at the noise level it does not help, and on the real HAADF series, far outside its
#   training, it is worse than the raw tilts. (Those are the stored table's first
#   weights without the symmetries and the blend; the shipped weights, with them, beat
#   Topaz by 0.96-4.26 dB per dose on average over n, at least 1 dB at 200 e/nm² and
#   above, and at 25 of 40 single settings:
#   `benchmarks/results/denoise_lowdose_2026-12-02c.json`.)
# * Where the signal is below the noise (low dose, few projections) the best estimate in
#   mean squared error is close to a flat image, and no method here recovers the
#   particles. Scoring over the whole field rewards that flat image (26 dB, more than
#   Topaz at most settings); scoring the particle windows does not (18.5 dB).
# * The benchmark's numbers, including where each method loses, are stored in
#   `benchmarks/denoise_results.json` (rerun: `benchmarks/denoise.py --real --out ...`).
