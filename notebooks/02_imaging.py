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
# # Imaging: from exit wave to detector counts
#
# This chapter follows the electrons from the specimen to the camera. A few human
# apoferritin 24-mers (6Z6U) in a thin slab of vitreous ice are turned into slice
# potentials and an **exit wave** (multislice); the objective lens then filters the wave
# with its **contrast transfer function** (CTF), whose zeros and coherence envelopes we
# check against analytic formulas and against the Thon rings of a thin amorphous carbon
# film; the **detector** finally counts electrons with shot noise, a DQE and a modulation
# transfer function (MTF). We end with micrographs at several defoci and doses, a
# simulated micrograph next to a real one recorded on a Gatan K2 camera, and an
# interactive explorer of the main parameters.
#
# **Prerequisites:** chapter 0 (wavelength, interaction parameter) and chapter 1 (atomic
# models, specimens, slice potentials). **Units:** Å, eV, rad, e/Å² and V·Å inside the
# package; the parameter cell uses field units (kV, mm, µm, nm, mrad), converted with the
# named constants of `tem_core.units`.

# %% tags=["parameters"]
voltage_kv = 300.0  # accelerating voltage [kV]
cs_mm = 2.7  # spherical aberration [mm]
cc_mm = 2.7  # chromatic aberration [mm]
energy_spread_ev = 0.7  # FWHM of the gun's energy spread [eV] (Schottky FEG)
illumination_semiangle_mrad = 0.01  # 1/e half-width of the illumination angles [mrad]
defocus_um = 1.5  # defocus of the main micrograph [µm], > 0 underfocus
defocus_series_um = [0.5, 1.5, 3.0]  # defocus series [µm] (figures of 3)
dose_e_per_a2 = 40.0  # dose of the main micrograph [e/Å²]
dose_series_e_per_a2 = [5.0, 20.0, 50.0]  # dose series [e/Å²]
mtf_alpha_px2 = 10.0  # width α of the detector MTF's first Lorentzian [pixel²]
n_particles = 4  # apoferritins in the field
convergence_px = 160  # field of the slice-thickness study [pixels]
convergence_slices_nm = [20.0, 10.0, 5.0, 2.5, 1.25, 0.625]  # slice thicknesses [nm]
field_nm = 64.0  # square field of view [nm]
ice_thickness_nm = 25.0  # ice slab [nm] (apoferritin is 12 nm across)
sampling_a = 1.0  # pixel size [Å]
slice_thickness_nm = 2.0  # multislice slice thickness [nm]
carbon_thickness_nm = 3.0  # amorphous carbon film for the Thon rings [nm]
# the real K2 micrograph (data/fei-extended_crop2048.mrc) and its acquisition
real_defocus_um = None  # its defocus [µm]; None: fitted from its Thon rings
real_dose_e_per_a2 = 47.6  # its total dose [e/Å²]
real_gain_counts_per_e = 101.0  # its counts per electron
real_ice_thickness_nm = 40.0  # ice assumed in the simulated counterpart [nm]
real_n_particles = 12  # apoferritins in the simulated counterpart
real_field_px = 1024  # simulated counterpart is real_field_px² at the real pixel size
seed = 0
device = "auto"
quick = False

# %%
import dataclasses
import textwrap
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import tem_core as tc
from tem_core import units

if quick:  # smaller fields, fewer particles, thicker slices
    field_nm, n_particles, sampling_a, slice_thickness_nm = 40.0, 2, 1.25, 4.0
    real_field_px, real_n_particles = 512, 4
    convergence_px, convergence_slices_nm = 112, [20.0, 5.0, 2.5]

tc.use_book_style()
device = tc.resolve_device(device)
roots = (Path.cwd(), *Path.cwd().parents)
DATA = next(p / "data" for p in roots if (p / "data" / "6z6u.pdb.gz").exists())
generator = torch.Generator(device=device).manual_seed(seed)
energy_ev = voltage_kv * units.KV_TO_EV
microscope = tc.Microscope(
    energy_ev=energy_ev,
    cs_a=cs_mm * units.MM_TO_A,
    cc_a=cc_mm * units.MM_TO_A,
    energy_spread_ev=energy_spread_ev,
    illumination_semiangle_rad=illumination_semiangle_mrad * units.MRAD_TO_RAD,
)
defocus_a = defocus_um * units.UM_TO_A
print(
    f"device: {device}; λ = {microscope.wavelength_a:.5f} Å, "
    f"focal spread Δ = {microscope.focal_spread_a:.1f} Å"
)


def note(message: str) -> None:
    """Print a warning about the parameters, wrapped to the page."""
    print(textwrap.fill("Note: " + message, 88))


def check_ctf(shape, sampling_a, defocus_um, max_frequency_per_a=None) -> None:
    """Print the package's CTF sampling warnings (wrap-around, aliased Thon rings)."""
    common = dict(
        sampling_a=sampling_a,
        defocus_a=defocus_um * units.UM_TO_A,
        cs_a=microscope.cs_a,
        energy_ev=energy_ev,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = tc.check_ctf_sampling(shape, bandlimit_fraction=None, **common)
        messages += tc.check_thon_ring_sampling(
            shape, max_frequency_per_a=max_frequency_per_a, **common
        )
    for message in messages:
        note(message)


if abs(voltage_kv - 300.0) > 1e-9:
    note(
        f"voltage_kv = {voltage_kv:g} kV: the real K2 micrograph compared with the "
        "simulation at the end of this chapter was recorded at 300 kV, and the K2 MTF "
        "table is a 300 kV measurement; that comparison is no longer like for like."
    )

# %% [markdown]
# ## The specimen and its exit wave
#
# 6Z6U deposits the whole 24-mer (32,618 atoms without waters, 13 nm across). We place a
# few copies at random orientations in an ice slab and simulate one micrograph with
# `tem_core.simulate.micrograph`: it streams the slice potentials into the multislice
# propagation, applies the CTF, and turns the image intensity into detector counts. The
# result keeps every intermediate, so the exit wave can be reused below for other
# defoci and doses without propagating again.

# %%
apoferritin = tc.read_structure(DATA / "6z6u.pdb.gz", keep_waters=False)
extent_a = (field_nm * units.NM_TO_A,) * 2
n_px = int(round(extent_a[0] / sampling_a))
specimen = tc.build_specimen(
    apoferritin.to(device=device),
    n_particles,
    extent_a=extent_a,
    ice=tc.IceSlab(thickness_a=ice_thickness_nm * units.NM_TO_A),
    generator=torch.Generator().manual_seed(seed),
    min_gap_a=10.0,
)
potential = tc.PotentialSettings(
    shape=(n_px, n_px),
    sampling_a=sampling_a,
    slice_thickness_a=slice_thickness_nm * units.NM_TO_A,
    energy_ev=energy_ev,
)
detector = tc.Detector(dqe=0.8, alpha=mtf_alpha_px2)
start = time.perf_counter()
result = tc.micrograph(
    specimen,
    potential=potential,
    microscope=microscope,
    detector=detector,
    imaging=tc.Imaging(defocus_a=defocus_a, dose_e_per_a2=dose_e_per_a2),
    generator=generator,
)
print(
    f"{len(specimen.atoms):,} atoms, {n_px}² pixels of {sampling_a} Å: micrograph in "
    f"{time.perf_counter() - start:.1f} s"
)
wave = result.exit_wave

# %% [markdown]
# The projected potential is the sum of the slice potentials (the ice adds a constant,
# minus the volume the protein displaces). Its phase shift σV_z, a fraction of a radian,
# reappears in the phase of the exit wave; the amplitude of the wave drops slightly where
# the beam crosses protein, because the potential has an absorptive (imaginary) part for
# inelastic scattering. In focus the image would show almost nothing: the intensity
# |ψ|² carries only the weak absorption contrast.

# %% tags=["hide-input"]
projected = tc.projected_potential(specimen, potential)
fig, axes = tc.book_figure(3, 1, height=2.9)
panels = (
    (projected.real, "projected potential", "$V_z$ [V·Å]"),
    (torch.angle(wave), "exit-wave phase", "arg ψ [rad]"),
    (wave.abs() ** 2, "intensity in focus", "|ψ|² [vacuum = 1]"),
)
for ax, (image, title, label) in zip(axes[0], panels, strict=True):
    tc.show_image(ax, image, sampling_a=sampling_a, title=title, label=label)
    ax.set(ylabel="")
plt.show()

# %% [markdown]
# ## Inside the multislice
#
# `micrograph` computed the exit wave with `tem_core.propagate.multislice`. The specimen
# is cut into slices of thickness $\Delta z$ along the beam. Each slice acts as a thin
# phase grating, the **transmission function**
# $t_n(\mathbf{r}) = \exp\big(i\sigma [V_n(\mathbf{r}) + iV'_n(\mathbf{r})]\big)$,
# with the slice's projected potential $V_n$ [V·Å], its absorptive part $V'_n$ and the
# interaction parameter $\sigma$ of chapter 0. Between slices the wave travels freely
# over $\Delta z$, which in Fourier space multiplies it by the **Fresnel propagator**
# $P(\mathbf{k}) = \exp(-i\pi\lambda\Delta z\,k^2)$. One step is
#
# $$\psi_{n+1} = \mathcal{F}^{-1}\big[P(\mathbf{k})\,A(\mathbf{k})\,
#   \mathcal{F}[t_n\,\psi_n]\big],$$
#
# starting from a plane wave $\psi_0 = 1$; the aperture $A$ cuts the frequencies above
# 2/3 of Nyquist, so that the products $t_n\psi_n$ cannot alias on the periodic grid.
# Below: the phase and amplitude of the transmission function of the slice through the
# particles' centres, and the phase of the propagator, whose rings are Fresnel zones.

# %%
slices = list(tc.iter_slice_potentials(specimen, potential))
middle = max(range(len(slices)), key=lambda i: float(slices[i].real.std()))
t_middle = tc.transmission_function(slices[middle], energy_ev=energy_ev)
propagator = tc.fresnel_propagator(
    potential.shape,
    sampling_a=sampling_a,
    thickness_a=potential.slice_thickness_a,
    energy_ev=energy_ev,
    device=device,
)
rebuilt = tc.multislice(
    iter(slices),
    sampling_a=sampling_a,
    slice_thickness_a=potential.slice_thickness_a,
    energy_ev=energy_ev,
)
print(
    f"{len(slices)} slices of {potential.slice_thickness_a:g} Å; slice {middle}: phase "
    f"{float(torch.angle(t_middle).min()):.3f} to "
    f"{float(torch.angle(t_middle).max()):.3f}"
    " rad"
)
difference = float((rebuilt - wave).abs().max())
print(
    "multislice of these slices = the micrograph's exit wave "
    f"(max diff {difference:.1e})"
)

# %% tags=["hide-input"]
fig, axes = tc.book_figure(3, 1, height=2.9)
tc.show_image(axes[0, 0], torch.angle(t_middle), sampling_a=sampling_a, label="rad")
axes[0, 0].set_title(f"arg $t_{{{middle}}}$")
tc.show_image(axes[0, 1], t_middle.abs(), sampling_a=sampling_a, label="|t|")
axes[0, 1].set_title(f"$|t_{{{middle}}}|$ (absorption)")
k_nyquist = 0.5 / sampling_a
axes[0, 2].imshow(
    torch.angle(torch.fft.fftshift(propagator)).cpu().numpy(),
    cmap="twilight",
    extent=(-k_nyquist, k_nyquist, -k_nyquist, k_nyquist),
    origin="lower",
)
axes[0, 2].set(
    title=f"arg P(k), Δz = {potential.slice_thickness_a / 10:g} nm",
    xlabel="$k_x$ [1/Å]",
    ylabel="$k_y$ [1/Å]",
)
for ax in axes[0, :2]:
    ax.set(ylabel="")
plt.show()

# %% [markdown]
# ### Slice thickness and the projection approximation
#
# Thinner slices follow the wave's spreading inside the specimen more closely, at the
# cost of more FFTs. The **projection approximation** (`method="projection"`) is the
# limit of one slice: the whole projected potential is applied at once,
# $\psi = \exp(i\sigma V_z)$, and propagation inside the specimen is neglected. We
# simulate one apoferritin in 20 nm of ice with slices from 20 nm down to
# `convergence_slices_nm[-1]` and measure each exit wave's distance from the thinnest-slice
# one, relative to the scattered part of the wave $\psi_{ref} - \langle\psi_{ref}\rangle$.
# The package warns (`check_sampling`) when a slice is thicker than the depth of field
# $1/(2\lambda k^2)$ at the band limit, about 230 Å at 300 kV and 1 Å pixels.

# %%
single = tc.build_specimen(
    apoferritin.to(device=device),
    1,
    extent_a=(convergence_px * sampling_a,) * 2,
    ice=tc.IceSlab(thickness_a=200.0),
    generator=torch.Generator().manual_seed(seed),
)
waves = {}
for dz_nm in convergence_slices_nm:
    settings_dz = tc.PotentialSettings(
        shape=(convergence_px, convergence_px),
        sampling_a=sampling_a,
        slice_thickness_a=dz_nm * units.NM_TO_A,
        energy_ev=energy_ev,
    )
    waves[dz_nm] = tc.exit_wave(single, settings_dz, energy_ev=energy_ev)
waves["projection"] = tc.exit_wave(
    single, settings_dz, energy_ev=energy_ev, method="projection"
)
reference = waves[convergence_slices_nm[-1]]
scattered = float((reference - reference.mean()).abs().norm())
errors = {k: float((w - reference).abs().norm()) / scattered for k, w in waves.items()}
print(f"{'slices':>12} {'relative error':>15}")
for key, error in errors.items():
    label = key if isinstance(key, str) else f"{key:g} nm"
    print(f"{label:>12} {error:15.4f}")

# %% tags=["hide-input"]
fig, axes = tc.book_figure(2, 1, height=3.2)
ax = axes[0, 0]
thick = [dz for dz in convergence_slices_nm[:-1]]
ax.loglog(thick, [errors[dz] for dz in thick], "o-", label="multislice")
ax.axhline(errors["projection"], color="C3", ls="--", label="projection")
ax.set(
    xlabel="slice thickness Δz [nm]",
    ylabel="relative error of ψ",
    title=f"vs Δz = {convergence_slices_nm[-1]:g} nm",
)
ax.grid(alpha=0.3, which="both")
ax.legend()
tc.show_image(
    axes[0, 1],
    (waves["projection"] - reference).abs(),
    sampling_a=sampling_a,
    title="|ψ(projection) − ψ(thin slices)|",
)
plt.show()

# %% [markdown]
# The error, measured on the scattered part of the wave (the weak signal that makes the
# image, not the unscattered beam), falls as the slices get thinner; the projection
# approximation, the thickest slice of all, misses the propagation inside the 13 nm
# particle and its 20 nm of ice, and its error is the largest: tens of percent of the
# scattered wave at 1 Å pixels, most of it at high frequencies. The thinnest slices are
# the reference here, so the table shows how much each coarser choice changes the
# result rather than an absolute error. Thick specimens (tomography of cells, 100-300 nm)
# need multislice with slices of a few nm.

# %% [markdown]
# ## The contrast transfer function
#
# The objective lens multiplies the wave's spectrum by $\exp(-i\chi(k))$ with the
# aberration phase $\chi(k) = \pi\lambda k^2(\tfrac12 C_s\lambda^2k^2 - \Delta f)$
# ($\Delta f > 0$ underfocus). For a weak phase object the image contrast is
# $2\sigma\hat V(k)\sin\chi(k)$: `ctf_1d` is this $\sin\chi$, damped by the temporal
# coherence envelope $E_t = \exp(-\tfrac12(\pi\lambda\Delta)^2k^4)$ (focal spread
# $\Delta$ from $C_c$ and the energy spread) and the spatial one
# $E_s = \exp(-(\alpha/2\lambda)^2|\nabla\chi|^2)$ (illumination angles $\alpha$). The
# zeros of $\sin\chi$ solve a quadratic in $k^2$, computed analytically by
# `ctf_zeros_per_a` (dots). The top panel stops at 0.2 1/Å: beyond it the oscillations
# at this defocus are too dense to draw, and the envelopes have damped them anyway.

# %%
k = torch.linspace(0.0, 0.5, 4000 if not quick else 1500, dtype=torch.float64)
coherent = tc.Microscope(
    energy_ev=energy_ev, cs_a=microscope.cs_a, energy_spread_ev=0.0
)
chi, gx, _ = tc.aberration_phase(
    k,
    torch.zeros_like(k),
    wavelength_a=microscope.wavelength_a,
    defocus_a=defocus_a,
    cs_a=microscope.cs_a,
)
e_t = tc.temporal_envelope(k, microscope=microscope)
e_s = tc.spatial_envelope(gx, torch.zeros_like(gx), microscope=microscope)
zeros = tc.ctf_zeros_per_a(
    12, defocus_a=defocus_a, cs_a=microscope.cs_a, energy_ev=energy_ev
)


# %% tags=["hide-input"]
fig, axes = tc.book_figure(1, 2, height=6.8)
axes = axes[:, 0]
ax = axes[0]
ax.plot(
    k,
    tc.ctf_1d(k, microscope=coherent, defocus_a=defocus_a),
    color="0.75",
    lw=0.8,
    label="sin χ (coherent)",
)
ax.plot(
    k,
    tc.ctf_1d(k, microscope=microscope, defocus_a=defocus_a),
    lw=1.0,
    label="CTF with envelopes",
)
ax.plot(k, e_t, "--", label="temporal envelope $E_t$")
ax.plot(k, e_s, ":", label="spatial envelope $E_s$")
ax.plot(k, e_t * e_s, "k-", lw=0.8, label="$E_t E_s$")
ax.plot(zeros, np.zeros(len(zeros)), "o", ms=4, color="C3", label="analytic zeros")
ax.set(
    xlabel="spatial frequency k [1/Å]",
    ylabel="phase-contrast transfer",
    title=f"CTF at Δf = {defocus_um} µm, $C_s$ = {cs_mm} mm, {voltage_kv:.0f} kV",
    xlim=(0, 0.2),
    ylim=(-1.05, 1.6),
)
ax.legend(loc="upper center", ncol=3, fontsize=8.5, framealpha=0.95)
ax = axes[1]
for dz_um in defocus_series_um:
    ax.plot(
        k,
        tc.ctf_1d(k, microscope=microscope, defocus_a=dz_um * units.UM_TO_A),
        lw=0.9,
        label=f"Δf = {dz_um} µm",
    )
ax.set(
    xlabel="spatial frequency k [1/Å]",
    ylabel="phase-contrast transfer",
    xlim=(0, 0.2),
    ylim=(-1.05, 1.6),
    title="more defocus: more low-frequency contrast, denser oscillations",
)
ax.legend(loc="upper center", ncol=len(defocus_series_um), fontsize=8.5)
plt.show()
print(f"first zeros at Δf = {defocus_um} µm:")
print("  k [1/Å]:", " ".join(f"{z:7.4f}" for z in zeros[:5].tolist()))
print("  1/k [Å]:", " ".join(f"{1 / z:7.1f}" for z in zeros[:5].tolist()))

# %% [markdown]
# ## Thon rings of a thin amorphous film
#
# An amorphous specimen scatters into all spatial frequencies with a smooth spectrum, so
# the power spectrum of its image shows the CTF directly: the **Thon rings**. We scatter
# carbon atoms at random in a film of density 2.0 g/cm³ (0.100 atoms/Å³, with
# `amorphous_film`), project them with `slice_potential`, form the phase-object exit wave
# and image it at the defocus above. The dashed circles and the vertical lines mark the
# analytic zeros of the CTF.

# %%
carbon_sampling_a, carbon_px = 2.0, 256
film_l = carbon_px * carbon_sampling_a
film = tc.amorphous_film(
    extent_a=(film_l, film_l),
    thickness_a=carbon_thickness_nm * units.NM_TO_A,
    generator=torch.Generator().manual_seed(seed),
).to(device=device)
carbon_potential = tc.slice_potential(
    film.atomic_numbers,
    film.positions_a,
    film.b_factors_a2,
    film.occupancies,
    z0_a=-5.0,
    z1_a=carbon_thickness_nm * units.NM_TO_A + 5.0,
    shape=(carbon_px, carbon_px),
    sampling_a=carbon_sampling_a,
)
carbon_wave = tc.phase_object_wave(carbon_potential, energy_ev=energy_ev)
carbon_intensity = tc.image_plane_intensity(
    carbon_wave,
    sampling_a=carbon_sampling_a,
    microscope=microscope,
    defocus_a=defocus_a,
)
thon = torch.fft.fft2(carbon_intensity - carbon_intensity.mean()).abs() ** 2
print(
    f"{len(film):,} carbon atoms in {film_l / 10:.0f} × {film_l / 10:.0f} × "
    f"{carbon_thickness_nm} nm; mean phase shift "
    f"{float(torch.angle(carbon_wave).mean()):.2f} rad"
)


# %% tags=["hide-input"]
check_ctf((carbon_px, carbon_px), carbon_sampling_a, defocus_um)
fig, axes = tc.book_figure(2, 1, height=3.6)
axes = axes[0]
tc.show_power_spectrum(
    axes[0],
    thon,
    sampling_a=carbon_sampling_a,
    title=f"Δf = {defocus_um} µm",
)
theta = np.linspace(0, np.pi / 2, 50)
# zeros drawn in one quadrant only, to leave the rings visible
for z in zeros[:8].numpy():
    axes[0].plot(z * np.cos(theta), z * np.sin(theta), "--", color="C3", lw=0.9)
f, p = tc.radial_average(thon, sampling_a=carbon_sampling_a, n_bins=128)
axes[1].semilogy(f, p, label="simulated (ring average)")
k_model = torch.linspace(0.005, 0.25, 800, dtype=torch.float64)
model = tc.ctf_1d(k_model, microscope=microscope, defocus_a=defocus_a) ** 2
axes[1].semilogy(
    k_model,
    model * p[f < 0.25].max() / model.max() * 0.3,
    lw=0.8,
    alpha=0.7,
    label="CTF² (scaled)",
)
for z in zeros.numpy():
    axes[1].axvline(z, color="C3", lw=0.6, ls="--")
axes[1].set(
    xlabel="spatial frequency k [1/Å]",
    ylabel="power [a.u.]",
    xlim=(0, 0.25),
    title="ring average; dashed: zeros",
)
axes[1].legend(loc="lower left")
plt.show()

# %% [markdown]
# The minima of the ring average fall on the analytic zeros: the CTF of the simulator and
# the closed-form zeros agree. The overall decay combines the carbon atoms' form factor
# (the Peng potential, blurred by B = 1 Å²) with the envelopes.
#
# ## The detector
#
# The camera adds three effects (TEM-simulator's model, `tem_core.detector`): shot noise
# (electrons arrive at random: Poisson counts with a variance raised by 1/DQE), the MTF
# (a blur from the spread of each electron's signal over neighbouring pixels) and a gain
# [counts/e]. The parametric MTF is a sum of two Lorentzians plus a constant; the
# tabulated curves are published measurements of real cameras at 300 kV, bundled in the
# package. The frequency axis is in cycles per pixel (Nyquist = 0.5).

# %%
omega = torch.linspace(0.0, 0.5, 200, dtype=torch.float64)
fig, axes = tc.book_figure(1, 1, height=4.0)
ax = axes[0, 0]
for alpha in sorted({2.0, mtf_alpha_px2, 40.0}):
    ax.plot(
        omega,
        tc.mtf_parametric(omega, a=0.7, b=0.2, c=0.1, alpha=alpha, beta=40.0),
        label=f"α = {alpha:g} px²",
    )
for camera in ("k2_300kv", "falcon3ec_300kv", "falcon4ec_300kv", "de20_300kv"):
    freq, values = tc.load_mtf_table(camera)
    ax.plot(freq, values, "--", label=camera.replace("_300kv", " (300 kV)"))
ax.set(
    xlabel="spatial frequency [cycles/pixel]",
    ylabel="MTF",
    xlim=(0, 0.5),
    ylim=(0, 1.02),
    title="MTFs: parametric (β = 40 px², solid), tabulated (dashed)",
)
ax.legend(ncol=2, fontsize=8.5)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ### Dose series
#
# The same field, the same exit wave and the same CTF, at three doses: the signal grows
# with the dose N, the shot noise only with √N, so the apoferritins emerge from the noise.
# The grey scale of each panel is in counts per pixel (gain 1 here).

# %%
intensity = result.intensity
n_doses = len(dose_series_e_per_a2)
fig, axes = tc.book_figure(3, -(-n_doses // 3), squeeze=False)
for ax in axes.flat[n_doses:]:
    ax.set_axis_off()
for ax, dose in zip(axes.flat, dose_series_e_per_a2, strict=False):
    counts = tc.detect(
        intensity,
        detector=detector,
        dose_e_per_a2=dose,
        sampling_a=sampling_a,
        generator=generator,
    )
    snr = float(counts.mean() / counts.std())
    tc.show_image(
        ax,
        counts,
        sampling_a=sampling_a,
        title=f"{dose:g} e/Å² (mean/std {snr:.1f})",
    )
plt.show()

# %% [markdown]
# ## A defocus series
#
# Imaging the one exit wave at several defoci (at the dose of the main micrograph) shows
# the trade-off that every cryo-EM session makes: close to focus the particles are hard to
# see but their high-resolution information is transferred with little damping; far from
# focus they stand out in strong low-frequency contrast, while the envelopes erase the
# high frequencies. The ice is a uniform potential here, so the power spectrum of these
# small fields holds almost no rings; the second row shows instead the power spectrum of
# the carbon film imaged at the same defocus (expected counts, without shot noise, up to
# 0.15 1/Å): the rings crowd together as the defocus grows. Each figure shows three
# defoci; the package's `check_ctf_sampling` and `check_thon_ring_sampling` warn when a
# defocus is too large for the film's 256-pixel grid (the rings would alias into false
# ones).


# %% tags=["hide-input"]
def defocus_row(axes, dz_um: float) -> None:
    """Micrograph (top) and film power spectrum (bottom) at defocus dz_um [µm]."""
    for row, (w, s) in enumerate(
        ((wave, sampling_a), (carbon_wave, carbon_sampling_a))
    ):
        image_i = tc.image_plane_intensity(
            w, sampling_a=s, microscope=microscope, defocus_a=dz_um * units.UM_TO_A
        )
        counts = tc.detect(
            image_i,
            detector=detector,
            dose_e_per_a2=dose_e_per_a2,
            sampling_a=s,
            generator=generator if row == 0 else None,  # the film: expected counts
        )
        if row == 0:
            tc.show_image(axes[0], counts, sampling_a=s, title=f"Δf = {dz_um} µm")
        else:
            spectrum = torch.fft.fft2(counts - counts.mean()).abs() ** 2
            tc.show_power_spectrum(
                axes[1], spectrum, sampling_a=s, max_frequency_per_a=0.15, title="film"
            )


for dz_um in defocus_series_um:
    check_ctf(
        (carbon_px, carbon_px), carbon_sampling_a, dz_um, max_frequency_per_a=0.15
    )
for first in range(0, len(defocus_series_um), 3):
    chunk = defocus_series_um[first : first + 3]
    fig, axes = tc.book_figure(3, 2, height=5.0)
    for ax in axes[:, len(chunk) :].flat:
        ax.set_axis_off()
    for j, dz_um in enumerate(chunk):
        defocus_row(axes[:, j], dz_um)
    plt.show()
# %% [markdown]
# ## Simulated and real: a K2 micrograph
#
# `data/fei-extended_crop2048.mrc` is a 2048² crop of a real micrograph (Titan Krios,
# 300 kV, Gatan K2 Summit in counting mode, 0.8538 Å/px, 47.6 e/Å², about 101 counts per
# electron). We simulate a field at the same pixel size, dose and gain, with apoferritins
# in 40 nm of ice at the defocus estimated for the real image, through the tabulated K2
# MTF. A counting camera's noise is nearly white (each electron is counted once, at one
# pixel), so here the MTF blurs the expected image before the noise
# (`mtf_after_noise=False`).

# %%
real, real_sampling_a = tc.read_mrc(DATA / "fei-extended_crop2048.mrc")
real = real.astype(np.float64)
# defocus, astigmatism and the additional phase shift (CTFFIND's "find additional phase
# shift"), searched over one period centred on 0
real_fit = tc.fit_ctf(torch.from_numpy(real), sampling_a=real_sampling_a,
                      microscope=microscope, find_phase_shift=True,
                      phase_shift_range_rad=(-np.pi / 2, np.pi / 2))  # fmt: skip
real_defocus_um = real_defocus_um or real_fit.defocus_a / units.UM_TO_A
real_l = real_field_px * real_sampling_a
real_specimen = tc.build_specimen(
    apoferritin.to(device=device),
    real_n_particles,
    extent_a=(real_l, real_l),
    ice=tc.IceSlab(thickness_a=real_ice_thickness_nm * units.NM_TO_A),
    generator=torch.Generator().manual_seed(seed + 1),
    min_gap_a=10.0,
)
real_potential = tc.PotentialSettings(
    shape=(real_field_px, real_field_px),
    sampling_a=real_sampling_a,
    energy_ev=energy_ev,
    slice_thickness_a=slice_thickness_nm * units.NM_TO_A,
)
k2 = tc.Detector(
    dqe=0.9,
    gain_counts_per_e=real_gain_counts_per_e,
    mtf_camera="k2_300kv",
    mtf_after_noise=False,
)
start = time.perf_counter()
simulated = (
    tc.micrograph(
        real_specimen,
        potential=real_potential,
        microscope=microscope,
        detector=k2,
        imaging=tc.Imaging(
            defocus_a=real_defocus_um * units.UM_TO_A, dose_e_per_a2=real_dose_e_per_a2
        ),
        generator=generator,
    )
    .counts.cpu()
    .double()
    .numpy()
)
print(f"simulated {real_field_px}² px in {time.perf_counter() - start:.1f} s")
print(f"{'':10} {'mean [counts]':>14} {'std [counts]':>13}")
for name, image in (("real", real), ("simulated", simulated)):
    print(f"{name:10} {image.mean():14.0f} {image.std():13.0f}")

# %%
tile = 256
spectra = {
    "real": tc.power_spectrum(real, tile=tile),
    "simulated": tc.power_spectrum(simulated, tile=tile),
}

# %% tags=["hide-input"]
crop = real[:real_field_px, :real_field_px]
fig, axes = tc.book_figure(2, 2, height=6.6)
for i, (name, image) in enumerate((("real K2", crop), ("simulated", simulated))):
    tc.show_image(
        axes[i, 0],
        image,
        sampling_a=real_sampling_a,
        title=f"{name} [counts]",
        percentiles=(1, 99),
    )
    tc.show_power_spectrum(
        axes[i, 1],
        spectra[name.split()[0]],
        sampling_a=real_sampling_a,
        title=f"{name}: power spectrum",
    )
plt.show()
fig, axes = tc.book_figure(1, 1, height=3.6)
ax = axes[0, 0]
for name, spectrum in spectra.items():
    f, p = tc.radial_average(spectrum, sampling_a=real_sampling_a, n_bins=tile // 2)
    ax.semilogy(f, p, label=name)
for z in tc.ctf_zeros_per_a(
    6,
    defocus_a=real_defocus_um * units.UM_TO_A,
    cs_a=microscope.cs_a,
    energy_ev=energy_ev,
).numpy():
    ax.axvline(z, color="C3", lw=0.6, ls="--")
ax.axvline(1 / 3.7, color="0.5", lw=0.8, ls=":", label="ice ring, 3.7 Å")
ax.set(
    xlabel="spatial frequency k [1/Å]",
    ylabel="power [counts² per bin]",
    title="ring averages (dashed: CTF zeros)",
    xlim=(0, 0.5 / real_sampling_a),
)
ax.legend()
plt.show()

# %% [markdown]
# The white noise floor (set by dose × gain² / DQE, with DQE = 0.9 here) matches the real
# camera's. Without an energy filter (the default) the electrons removed by the
# absorptive potential come back as a smooth inelastic background, so the simulated mean
# is dose × gain; the real K2 sat behind a filter (see the last section). The real image
# has two features the simulation lacks here: the ring at 3.7 Å is diffraction from the
# hydrogen-bond network of vitreous ice, which this counterpart models as a uniform mean
# inner potential (the last section adds the structure), and the real field has more
# low-frequency power (ice thickness gradients, contamination, particles crowding at
# different heights). Fitting the MTF and noise of the real camera from such images is
# the subject of the MTF-fitting chapter.
#
# ## An interactive explorer
#
# The function `explore` below images the apoferritin exit wave and the carbon film at a
# chosen defocus, $C_s$, dose and MTF width α. In JupyterLab (`make lab`), the sliders of
# the cell after next redraw it live, starting at the parameter cell's values. The built
# book cannot run Python, so it shows instead a static grid that varies one parameter at
# a time around those values: micrographs for the defocus and the dose, carbon-film power
# spectra for $C_s$ and the MTF.

# %%
crop_px = min(n_px, 256)  # a crop centred on the first particle
x0, y0 = (
    int(np.clip(float(c) / sampling_a - crop_px // 2, 0, n_px - crop_px))
    for c in specimen.particle_centers_a[0, :2]
)
wave_crop = wave[y0 : y0 + crop_px, x0 : x0 + crop_px]


def explore_images(defocus_um, cs_mm, dose_e_per_a2, mtf_alpha_px2):
    """Micrograph crop [counts] and carbon-film power spectrum at the given settings."""
    scope = tc.Microscope(
        energy_ev=energy_ev,
        cs_a=cs_mm * units.MM_TO_A,
        cc_a=microscope.cc_a,
        energy_spread_ev=energy_spread_ev,
        illumination_semiangle_rad=microscope.illumination_semiangle_rad,
    )
    camera = tc.Detector(dqe=0.8, alpha=mtf_alpha_px2)
    g = torch.Generator(device=device).manual_seed(seed)
    images = []
    for w, s in ((wave_crop, sampling_a), (carbon_wave, carbon_sampling_a)):
        i = tc.image_plane_intensity(
            w, sampling_a=s, microscope=scope, defocus_a=defocus_um * units.UM_TO_A
        )
        images.append(
            tc.detect(
                i,
                detector=camera,
                dose_e_per_a2=dose_e_per_a2,
                sampling_a=s,
                generator=g,
            )
        )
    return images[0], tc.power_spectrum(images[1], tile=128)


def explore(
    defocus_um=defocus_um,
    cs_mm=cs_mm,
    dose_e_per_a2=dose_e_per_a2,
    mtf_alpha_px2=mtf_alpha_px2,
):
    """Draw the micrograph crop and the film's power spectrum, with titles and units."""
    crop, spectrum = explore_images(defocus_um, cs_mm, dose_e_per_a2, mtf_alpha_px2)
    fig, axes = tc.book_figure(2, 1, height=3.5)
    tc.show_image(
        axes[0, 0],
        crop,
        sampling_a=sampling_a,
        title=f"Δf = {defocus_um:g} µm, {dose_e_per_a2:g} e/Å²",
        label="counts",
    )
    tc.show_power_spectrum(
        axes[0, 1],
        spectrum,
        sampling_a=carbon_sampling_a,
        title=f"film: $C_s$ = {cs_mm:g} mm, MTF α = {mtf_alpha_px2:g} px²",
    )
    plt.show()


# %% tags=["hide-input"]
variations = {  # parameter: (values, symbol, unit, show the micrograph or the spectrum)
    "defocus_um": ([0.5 * defocus_um, defocus_um, 2 * defocus_um], "Δf", "µm", 0),
    "dose_e_per_a2": (
        [dose_e_per_a2 / 4, dose_e_per_a2, 4 * dose_e_per_a2],
        "",
        "e/Å²",
        0,
    ),
    "cs_mm": ([0.0, cs_mm, 2.0 * cs_mm], "$C_s$", "mm", 1),
    "mtf_alpha_px2": ([0.0, mtf_alpha_px2, 10 * mtf_alpha_px2], "MTF α", "px²", 1),
}
fig, axes = tc.book_figure(3, len(variations), height=2.45 * len(variations))
base = dict(
    defocus_um=defocus_um,
    cs_mm=cs_mm,
    dose_e_per_a2=dose_e_per_a2,
    mtf_alpha_px2=mtf_alpha_px2,
)
for row, (name, (values, symbol, unit, which)) in enumerate(variations.items()):
    for col, value in enumerate(values):
        image = explore_images(**{**base, name: value})[which]
        ax = axes[row, col]
        if which == 0:
            tc.show_image(ax, image, sampling_a=sampling_a)
        else:
            tc.show_power_spectrum(ax, image, sampling_a=carbon_sampling_a)
        ax.set(xticks=[], yticks=[], xlabel="", ylabel="")
        ax.set_title(f"{symbol} = {value:g} {unit}".lstrip(" ="), fontsize=9.5)
fig.suptitle(
    "Static explorer: one parameter per row (rows 1-2: micrograph crops of "
    f"{crop_px * sampling_a / 10:.0f} nm;\nrows 3-4: carbon-film power spectra up to "
    f"{0.5 / carbon_sampling_a:g} 1/Å); the others at the parameter cell's values"
)
plt.show()

# %% tags=["remove-output"]
try:  # live sliders in JupyterLab; harmless without ipywidgets or a widget frontend
    import os

    import ipywidgets as widgets
    from IPython.display import display

    def _slider(value, low, high, step, description):
        return widgets.FloatSlider(
            value=value,
            min=low,
            max=high,
            step=step,
            description=description,
            continuous_update=False,
        )

    sliders = {
        "defocus_um": _slider(defocus_um, 0.2, 5.0, 0.1, "Δf [µm]"),
        "cs_mm": _slider(cs_mm, 0.0, 6.0, 0.1, "Cs [mm]"),
        "dose_e_per_a2": _slider(dose_e_per_a2, 1.0, 300.0, 1.0, "dose [e/Å²]"),
        "mtf_alpha_px2": _slider(mtf_alpha_px2, 0.0, 100.0, 1.0, "MTF α [px²]"),
    }
    explorer_output = widgets.Output()

    def _redraw(change=None):
        with explorer_output:
            explorer_output.clear_output(wait=True)
            explore(**{name: slider.value for name, slider in sliders.items()})

    for slider in sliders.values():
        slider.observe(_redraw, names="value")
    display(
        widgets.VBox(
            [
                widgets.HBox(list(sliders.values())[:2]),
                widgets.HBox(list(sliders.values())[2:]),
                explorer_output,
            ]
        )
    )
    # draw at once, at the parameter cell's values; not when run headless by
    # book/run_notebooks.py (no widget frontend: drawing into an Output widget there can
    # leave the executor waiting)
    if not os.environ.get("TEM_BOOK_HEADLESS"):
        _redraw()
except Exception as exc:  # noqa: BLE001 - any failure only disables the live explorer
    print(
        f"interactive explorer unavailable ({type(exc).__name__}: {exc}); "
        "see the grid above"
    )

# %% [markdown]
# Things to try: at $C_s = 0$ the rings keep their spacing in k² all the way out, while
# $C_s$ compresses them at high k; a larger MTF α damps the outer rings and the
# high-frequency noise together; at 10 e/Å² the rings drown in shot noise.
#
# ## Summary
#
# * `micrograph` runs the whole chain (slice potentials → multislice exit wave → CTF →
#   detector) and returns every intermediate; `image_plane_intensity` and `detect` reuse
#   an exit wave for other defoci, doses and cameras.
# * Multislice alternates the transmission function $t_n = \exp(i\sigma V_n)$ of each
#   slice with Fresnel propagation $P = \exp(-i\pi\lambda\Delta z k^2)$; its exit wave
#   converges as the slices get thinner, and the projection approximation is its
#   one-slice limit (errors measured above).
# * The CTF's zeros agree with the closed-form `ctf_zeros_per_a`, both in 1-D and in the
#   Thon rings of a simulated amorphous carbon film.
# * Detectors combine shot noise with a DQE, a parametric or tabulated MTF and a gain; the
#   simulated K2 micrograph matches the real one's noise floor and mean counts; its ice
#   ring needs the structured amorphous ice of the next section.

# %% [markdown]
# ## Realistic micrographs: structured ice, energy filter, radiation damage
#
# Vitreous ice is not a uniform potential: its water molecules sit at the distances of a
# disordered hydrogen-bond network, and their structure factor S(k) peaks at
# k ≈ 0.27 Å⁻¹ (the 3.7 Å ring). `IceStructure` adds these potential
# fluctuations, with power spectrum n |F_H₂O(k)|² S(k), as one seeded 3-D random field
# that tilts with the specimen and streams slice by slice. A projection through ice of
# thickness t only sees the field's waves with $|k_z| \lesssim 1/(2t)$, so most of them
# are drawn near the image planes of the views (weighted so that every direction stays
# unbiased): one micrograph's spectrum is then nearly as smooth as a real one's (more in
# `benchmarks/realism.py`). The fluctuations are the water's atoms about their mean, so
# they absorb like the protein's atoms (V'/V = 0.07): the rings, which come mostly from the
# ice (11-42× the particles' power at rings 1-3), then carry the amplitude contrast of
# about 0.07 measured for ice-embedded specimens (Toyoshima & Unwin 1988) instead of ~0.01
# (`benchmarks/realism_amplitude_contrast.py`). The real K2 sat behind a zero-loss energy
# filter, so its counterpart here uses `energy_filter=True`; radiation damage averaged over the
# 47.6 e/Å² exposure (Grant & Grigorieff 2015) fades the particles' high frequencies as
# in the real movie sum, while the ice, whose molecules move under the beam (about
# 1.1 Å² per e/Å², McMullan et al. 2015), is imaged as its average over the exposure
# (`IceStructure(exposure_e_per_a2=...)`, set from the dose when damage is on). The
# defocus, astigmatism and phase shift are the ones `fit_ctf` found in the real rings;
# the real rings sit at a CTF phase offset beyond the usual amplitude contrast of 0.07
# (weakly determined; `benchmarks/realism.py` tests physical causes), applied here as a
# phase shift of the scattered beams (`Microscope(phase_plate_rad=...)`).

# %%
print(
    f"real micrograph: fitted defocus {real_fit.defocus_a / units.UM_TO_A:.3f} "
    f"± {real_fit.defocus_error_a / units.UM_TO_A:.3f} µm, astigmatism "
    f"{real_fit.astigmatism_a:.0f} Å,\nphase shift {real_fit.phase_shift_rad:+.2f} "
    f"± {real_fit.phase_shift_error_rad:.2f} rad, score {real_fit.score:.2f}"
)
fitted_scope = dataclasses.replace(microscope, phase_plate_rad=real_fit.phase_shift_rad)
filtered = dataclasses.replace(fitted_scope, energy_filter=True)
real_imaging = tc.Imaging(
    defocus_a=real_fit.defocus_a,
    dose_e_per_a2=real_dose_e_per_a2,
    astigmatism_a=real_fit.astigmatism_a,
    astigmatism_angle_rad=real_fit.astigmatism_angle_rad,
    damage=tc.RadiationDamage(),
)
realistic = {}
for name, ice_model, scope in (
    ("uniform ice", None, filtered),
    ("structured ice", tc.IceStructure(seed=seed), filtered),
    ("structured, no filter", tc.IceStructure(seed=seed), fitted_scope),
):
    start = time.perf_counter()
    result = tc.micrograph(
        real_specimen,
        potential=dataclasses.replace(real_potential, ice_structure=ice_model),
        microscope=scope,
        detector=k2,
        imaging=real_imaging,
        generator=torch.Generator(device=device).manual_seed(seed + 2),
    )
    realistic[name] = result.counts.cpu().double().numpy()
    print(f"{name:>22}: {time.perf_counter() - start:5.1f} s")

# %% tags=["hide-input"]
fig = plt.figure(figsize=(7.5, 6.4), constrained_layout=True)
grid = fig.add_gridspec(2, 3)
views = (("real K2", crop), ("uniform ice", realistic["uniform ice"]),
         ("structured ice", realistic["structured ice"]))  # fmt: skip
for i, (name, image) in enumerate(views):
    tc.show_image(fig.add_subplot(grid[0, i]), image[:256, :256],
               sampling_a=real_sampling_a, title=name, label="counts",
               percentiles=(1, 99))  # fmt: skip
ax = fig.add_subplot(grid[1, :])
for name, image in (("real K2", real), *realistic.items()):
    spectrum = tc.power_spectrum(image, tile=tile)
    f, p = tc.radial_average(spectrum, sampling_a=real_sampling_a, n_bins=tile // 2)
    floor = p[f > 0.4].mean()
    ax.plot(f, p / floor, lw=1.0, label=name)
ax.axvline(1 / 3.7, color="0.5", lw=0.8, ls=":", label="3.7 Å")
ax.set(xlabel="spatial frequency k [1/Å]", ylabel="power / noise floor",
       xlim=(0.02, 0.5 / real_sampling_a), ylim=(0.8, 2.5))  # fmt: skip
ax.legend(fontsize=9)
plt.show()

# %%
print(f"{'image':>22} {'mean [counts]':>14} {'noise var/mean':>15} {'3.7 Å ring':>11}")
for name, image in (("real K2", real), *realistic.items()):
    spectrum = tc.power_spectrum(image, tile=tile)
    f, p = tc.radial_average(spectrum, sampling_a=real_sampling_a, n_bins=tile // 2)
    floor = p[f > 0.4].mean()
    ring = p[(f > 0.24) & (f < 0.29)].mean() / floor - 1
    print(f"{name:>22} {image.mean():14.0f} {floor / image.mean():15.1f} {ring:11.2f}")
dose_times_gain = real_dose_e_per_a2 * real_sampling_a**2 * real_gain_counts_per_e
print(f"dose × gain: {dose_times_gain:.0f} counts")

# %% [markdown]
# Only the structured ice gives the 3.7 Å ring; the uniform ice gives none. Without the
# filter the mean rises to dose × gain (the inelastic electrons are counted); with it,
# it falls by the zero-loss fraction exp(−t/Λ) of the ice. The real micrograph's
# mean equals dose × gain only because its gain of 101 counts/e was itself computed as
# mean / dose; its noise floor says about 105 counts/e, i.e. about 4 % of the electrons
# were filtered out. `benchmarks/realism.py` compares ring positions, ring depths, the
# ice ring and the noise in numbers.
#
# ## Summary: realism
#
# * `IceStructure` (3.7 Å ring, one 3-D object), `energy_filter` (inelastic background
#   or zero-loss), `RadiationDamage` (exposure-dependent fading) and meniscus-shaped
#   holes (`IceSlab(edge_thickness_a=...)`) bring the simulated fields closer to real
#   ones.
# * `fit_ctf` fits defocus and astigmatism from a micrograph's Thon rings, as CTFFIND
#   does, and optionally an additional phase shift with its jackknife error.
