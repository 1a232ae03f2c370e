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
# # Differentiation: gradients through the whole simulator
#
# Every stage of `tem_core` is a torch function, so a micrograph is a differentiable
# function of everything that made it: defocus, astigmatism, dose, ice thickness, the
# detector's MTF, each atom's position. This chapter shows these derivatives, checks them
# against finite differences, and then uses them: it recovers known parameters from
# simulated noisy micrographs by gradient descent through the simulator (a CTF, an MTF,
# a particle's position and orientation), and compares two ways of differentiating
# through the shot noise itself (score-function and pathwise estimators).
#
# **Prerequisites:** chapters 1 and 2 (specimen, potential, multislice, CTF, detector).
# **Units:** Å, eV, rad, e/Å² inside the package; the parameter cell uses µm, nm, kV and
# degrees, converted with `tem_core.units`.

# %% tags=["parameters"]
voltage_kv = 300.0  # accelerating voltage [kV]
cs_mm = 2.7  # spherical aberration [mm]
defocus_um = 1.2  # true defocus [µm], > 0 underfocus
astigmatism_nm = 40.0  # true two-fold astigmatism [nm]
astigmatism_angle_deg = 30.0  # its azimuth [deg]
dose_e_per_a2 = 40.0  # dose of the CTF and MTF examples [e/Å²]
pose_dose_e_per_a2 = 200.0  # dose of the particle-pose example [e/Å²]
ice_thickness_nm = 10.0  # ice around the particle [nm]
mtf_alpha_px2 = 10.0  # true MTF widths α, β [pixel²]
mtf_beta_px2 = 40.0
field_px = 96  # particle field [pixels] at 1 Å
film_px = 160  # carbon-film field [pixels] at 1.5 Å
fit_steps = 80  # Adam steps of the CTF and MTF fits
pose_steps = 60  # Adam steps of the pose fit (each runs the whole simulator)
estimator_repeats = 40  # repeats of each gradient estimate
seed = 0
device = "auto"
quick = False

# %%
import math
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.autograd.forward_ad as fwad

import tem_core as tc
from tem_core import units

tc.use_book_style()
if quick:  # smaller fields, fewer steps and repeats
    field_px, film_px, fit_steps, pose_steps, estimator_repeats = 64, 128, 60, 20, 12

device = tc.resolve_device(device)
roots = (Path.cwd(), *Path.cwd().parents)
DATA = next(p / "data" for p in roots if (p / "data" / "1ubq.pdb.gz").exists())
generator = torch.Generator(device=device).manual_seed(seed)
energy_ev = voltage_kv * units.KV_TO_EV
microscope = tc.Microscope(
    energy_ev=energy_ev, cs_a=cs_mm * units.MM_TO_A, cc_a=2.7e7, energy_spread_ev=0.7
)
TRUTH = {
    "defocus_a": defocus_um * units.UM_TO_A,
    "astigmatism_a": astigmatism_nm * units.NM_TO_A,
    "astigmatism_angle_rad": math.radians(astigmatism_angle_deg),
    "alpha": mtf_alpha_px2,
    "beta": mtf_beta_px2,
}
print(f"device: {device}; λ = {microscope.wavelength_a:.5f} Å")
# The particle field is small and periodic: at this defocus the CTF's point-spread
# function is wider than half the field and wraps around. Harmless for checking and
# using gradients (the model and the "data" share the same periodic field), so the
# package's warning is shown once here and then silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for message in tc.check_ctf_sampling(
        (field_px, field_px),
        sampling_a=1.0,
        energy_ev=energy_ev,
        defocus_a=TRUTH["defocus_a"],
        cs_a=microscope.cs_a,
    ):
        print(textwrap.fill(f"Note (expected here): {message}", 88))
warnings.filterwarnings("ignore", category=tc.SamplingWarning)

# %% [markdown]
# ## A small test specimen
#
# Ubiquitin (1UBQ, 602 atoms without waters, 76 residues) in a 10 nm ice slab, imaged
# at 1 Å per pixel, in 3 nm slices. The slab lies in a wide hole of a 12 nm carbon film,
# outside the field: the film only fixes the top and bottom of the multislice grid, so that a
# change of the ice thickness changes the potential but not where the slices are cut
# (finite differences would otherwise see the slicing jump).
#
# The micrograph is a function $I(\theta)$ of all parameters $\theta$. Forward-mode
# automatic differentiation (`torch.autograd.forward_ad`) carries one tangent through
# the simulator with the image and returns a whole derivative image
# $\partial I / \partial \theta$ per scalar parameter, at about the cost of one more
# simulation. It runs here through the torch twin of the potential kernel
# (`backend="torch"`): the Taichi kernel has a hand-written reverse-mode adjoint only.

# %%
ubiquitin = tc.read_structure(DATA / "1ubq.pdb.gz", keep_waters=False)
extent_a = (float(field_px),) * 2
ice = tc.IceSlab(
    thickness_a=ice_thickness_nm * units.NM_TO_A,
    hole_diameter_a=10_000.0,
    support="carbon",
    support_thickness_a=120.0,
)
specimen = tc.build_specimen(
    ubiquitin.to(device=device),
    1,
    extent_a=extent_a,
    ice=ice,
    generator=torch.Generator().manual_seed(seed),
)
settings = tc.PotentialSettings(
    shape=(field_px, field_px),
    sampling_a=1.0,
    slice_thickness_a=30.0,
    energy_ev=energy_ev,
    backend="torch",
)


def simulate(theta: dict, *, backend: str = "torch") -> torch.Tensor:
    """Expected counts [counts] of the ubiquitin field for parameters ``theta``."""
    atoms = specimen.atoms
    if "shift_x_a" in theta:  # a rigid shift of the whole particle along x
        atoms = atoms.transformed(torch.eye(3, dtype=torch.float64), _shift_x(theta))
    thickness = theta.get("ice_thickness_a", ice.thickness_a)
    sample = replace(specimen, atoms=atoms, ice=replace(ice, thickness_a=thickness))
    return tc.micrograph(
        sample,
        potential=replace(settings, backend=backend),
        microscope=microscope,
        detector=tc.Detector(
            alpha=theta.get("alpha", mtf_alpha_px2), mtf_after_noise=False
        ),
        imaging=tc.Imaging(
            defocus_a=theta.get("defocus_a", TRUTH["defocus_a"]),
            dose_e_per_a2=theta.get("dose_e_per_a2", dose_e_per_a2),
        ),
    ).expected


def _shift_x(theta):
    zero = torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack([theta["shift_x_a"], zero, zero])


# %% [markdown]
# ## Derivative images, checked against finite differences
#
# For five parameters we compute $\partial I / \partial \theta$ by forward-mode AD and
# by a central difference $(I(\theta + h) - I(\theta - h)) / 2h$, in float64. The
# table gives the step $h$ and the largest pixel difference between the two, relative
# to the largest derivative: differences of order $h^2$ (the truncation error of the
# central difference) mean the autograd derivative is right.

# %%
PROBES = {  # name: (value, FD step h, label with unit)
    "defocus_a": (TRUTH["defocus_a"], 2.0, "defocus [Å]"),
    "dose_e_per_a2": (dose_e_per_a2, 0.5, "dose [e/Å²]"),
    "ice_thickness_a": (ice.thickness_a, 1.0, "ice thickness [Å]"),
    "alpha": (mtf_alpha_px2, 0.2, "MTF α [px²]"),
    "shift_x_a": (0.0, 0.01, "particle x shift [Å]"),
}
derivatives = {}
print(f"{'parameter':22} {'h':>6} {'max |AD|':>10} {'max |AD − FD| / max |AD|':>26}")
for name, (value, h, label) in PROBES.items():
    theta0 = torch.tensor(value, dtype=torch.float64, device=device)
    with fwad.dual_level():
        dual = fwad.make_dual(theta0, torch.ones_like(theta0))
        ad = fwad.unpack_dual(simulate({name: dual})).tangent.detach()
    fd = tc.central_difference(lambda t, n=name: simulate({n: t}), theta0, h)
    derivatives[name] = ad
    error = float((ad - fd).abs().max() / ad.abs().max())
    print(f"{label:22} {h:6g} {float(ad.abs().max()):10.3g} {error:26.1e}")
image0 = simulate({}).detach()

# %% tags=["hide-input"]
fig, axes = tc.book_figure(3, 2, height=5.0)
tc.show_image(axes[0, 0], image0, title="expected counts I", label="counts")
for ax, (name, image) in zip(axes.flat[1:], derivatives.items(), strict=True):
    title = f"∂I/∂({PROBES[name][2].split(' [')[0]})"
    mixed = bool(image.min() < -0.05 * image.abs().max())  # both signs: red/blue
    tc.show_image(
        ax, image, title=title, cmap="RdBu_r" if mixed else "gray", symmetric=mixed
    )
for ax in axes.flat:
    ax.set(xticks=[], yticks=[])
fig.suptitle(
    f"A micrograph and its derivatives (forward-mode AD; {field_px} Å field; "
    "red > 0 > blue)"
)
plt.show()

# %% [markdown]
# The derivative images read like physics: defocus changes the Fresnel fringes around the
# particle; the dose scales the whole image; thicker ice changes the background and,
# with opposite sign, the particle, whose volume displaces ice; the MTF width damps the
# finest fringes; a shift along x is the x-gradient of the particle's image. The field is
# small and periodic, so fringes from the particle wrap around its edges.
#
# ## Reverse mode: all atom coordinates in one pass
#
# Reverse mode (`loss.backward()`) gives the gradient of one scalar, here the Poisson
# negative log-likelihood of a noisy micrograph, with respect to *every* input at once:
# 3 × 602 atom coordinates for the price of about two simulations. It runs through the
# Taichi potential kernel and its hand-written adjoint (`backend="auto"`). The noisy
# image was simulated with the particle shifted by 1 Å along x. Each atom's gradient
# (the arrows, in the image plane) also carries the shot noise and the fringes around
# it, so single atoms are pulled in many directions; their sum, the gradient with
# respect to a rigid shift of the whole particle, points the particle towards +x. Four
# coordinates chosen at random are checked against central differences.

# %%
counts_shifted = tc.sample_counts(
    simulate({"shift_x_a": torch.tensor(1.0, dtype=torch.float64, device=device)}),
    generator=generator,
)
positions = specimen.atoms.positions_a.detach().clone().requires_grad_(True)


def nll_of_positions(pos: torch.Tensor) -> torch.Tensor:
    sample = replace(specimen, atoms=specimen.atoms._replace_positions(pos))
    expected = tc.micrograph(
        sample,
        potential=replace(settings, backend="auto"),
        microscope=microscope,
        detector=tc.Detector(alpha=mtf_alpha_px2, mtf_after_noise=False),
        imaging=tc.Imaging(defocus_a=TRUTH["defocus_a"], dose_e_per_a2=dose_e_per_a2),
    ).expected
    return tc.poisson_nll(counts_shifted, expected)


nll_of_positions(positions).backward()
grad = positions.grad.detach()
picks = torch.randperm(grad.numel(), generator=torch.Generator().manual_seed(seed))[:4]
print(f"{'atom':>5} {'axis':>4} {'autograd [1/Å]':>15} {'central diff. [1/Å]':>20}")
for flat in picks.tolist():
    atom, axis = divmod(flat, 3)

    def along(t, atom=atom, axis=axis):
        moved = positions.detach().clone()
        moved[atom, axis] = t
        return nll_of_positions(moved)

    fd = tc.central_difference(along, positions.detach()[atom, axis], 1e-3)
    print(
        f"{atom:5d} {'xyz'[axis]:>4} {float(grad[atom, axis]):15.4e} {float(fd):20.4e}"
    )
gx, gy = (float(grad[:, i].sum()) for i in (0, 1))
print(f"rigid-shift gradient (sum over atoms): x {gx:.2f} /Å, y {gy:.2f} /Å")
print("(negative along x: the likelihood grows when the particle moves +x)")

# %% tags=["hide-input"]
fig, axes = tc.book_figure(1, 1, height=4.6)
ax = axes[0, 0]
tc.show_image(ax, image0, sampling_a=1.0, unit="Å", title="−∂NLL/∂(x, y) of each atom")
xy = positions.detach()[:, :2].cpu().numpy()
ax.quiver(
    xy[:, 0], xy[:, 1], -grad[:, 0].cpu(), -grad[:, 1].cpu(), color="C1", width=0.004
)
plt.show()

# %% [markdown]
# ## Recovering parameters by gradient descent
#
# Three fits follow the same recipe with `tem_core.fitting.fit`: simulate a noisy
# micrograph with known parameters, start from wrong ones, and minimise the Poisson
# negative log-likelihood
# $\mathcal{L}(\theta) = \sum_p \lambda_p(\theta) - k_p \log \lambda_p(\theta)$
# of the counts $k$ given the expected counts $\lambda(\theta)$, with Adam. Each parameter
# is optimised in units of a typical error (1000 Å for defocus, 1 Å for a shift, ...), so
# that one learning rate fits all.
#
# ### Defocus and astigmatism from a carbon film
#
# As in CTF fitting, an amorphous carbon film (3 nm, 1.5 Å pixels) gives Thon rings at all
# frequencies. Its exit wave does not depend on the optics, so it is computed once; each
# step re-applies the CTF (defocus $\Delta f$, astigmatism magnitude and azimuth) and the
# detector. The astigmatism is optimised as the two components
# $(A\cos 2\phi, A\sin 2\phi)$, which avoids the singular azimuth at $A = 0$.

# %%
film_sampling_a = 1.5
film_l = film_px * film_sampling_a
film = tc.amorphous_film(
    extent_a=(film_l, film_l),
    thickness_a=30.0,
    generator=torch.Generator().manual_seed(seed),
).to(device=device)
film_wave = tc.phase_object_wave(
    tc.slice_potential(
        film.atomic_numbers,
        film.positions_a,
        film.b_factors_a2,
        film.occupancies,
        z0_a=-5.0,
        z1_a=35.0,
        shape=(film_px, film_px),
        sampling_a=film_sampling_a,
    ),
    energy_ev=energy_ev,
)


def film_counts(theta: dict) -> torch.Tensor:
    """Expected counts of the film for CTF components and MTF widths in ``theta``."""
    magnitude = torch.hypot(theta["astig_c_a"], theta["astig_s_a"])
    intensity = tc.image_plane_intensity(
        film_wave,
        sampling_a=film_sampling_a,
        microscope=microscope,
        defocus_a=theta["defocus_a"],
        astigmatism_a=magnitude,
        astigmatism_angle_rad=0.5 * torch.atan2(theta["astig_s_a"], theta["astig_c_a"]),
    )
    camera = tc.Detector(
        alpha=theta["alpha"], beta=theta["beta"], mtf_after_noise=False
    )
    return tc.expected_image(
        intensity,
        detector=camera,
        dose_e_per_a2=dose_e_per_a2,
        sampling_a=film_sampling_a,
    )


two_phi = 2.0 * TRUTH["astigmatism_angle_rad"]
film_truth = {
    "defocus_a": TRUTH["defocus_a"],
    "astig_c_a": TRUTH["astigmatism_a"] * math.cos(two_phi),
    "astig_s_a": TRUTH["astigmatism_a"] * math.sin(two_phi),
    "alpha": mtf_alpha_px2,
    "beta": mtf_beta_px2,
}
as_tensors = {k: torch.tensor(v, device=device) for k, v in film_truth.items()}
observed_film = tc.sample_counts(film_counts(as_tensors), generator=generator)
ctf_start = {
    "defocus_a": TRUTH["defocus_a"] + 800.0,
    "astig_c_a": 100.0,
    "astig_s_a": 0.0,
}
ctf_scales = {"defocus_a": 1000.0, "astig_c_a": 300.0, "astig_s_a": 300.0}
ctf_fit = tc.fit(
    lambda p: tc.poisson_nll(observed_film, film_counts({**as_tensors, **p})),
    {k: torch.tensor(v, device=device) for k, v in ctf_start.items()},
    scales=ctf_scales,
    steps=fit_steps,
    learning_rate=0.1,
)
final = ctf_fit.final()
recovered = {
    "defocus_a": float(final["defocus_a"]),
    "astigmatism_a": float(torch.hypot(final["astig_c_a"], final["astig_s_a"])),
    "astigmatism_angle_rad": 0.5 * math.atan2(final["astig_s_a"], final["astig_c_a"]),
}
print(f"{fit_steps} steps in {ctf_fit.seconds:.1f} s")
print(f"{'':26} {'truth':>9} {'start':>9} {'recovered':>10}")
for name, label, to_unit in (
    ("defocus_a", "defocus Δf [Å]", 1.0),
    ("astigmatism_a", "astigmatism A [Å]", 1.0),
    ("astigmatism_angle_rad", "astigmatism azimuth φ [°]", math.degrees(1.0)),
):
    start = {"defocus_a": ctf_start["defocus_a"], "astigmatism_a": 100.0}.get(name, 0.0)
    print(
        f"{label:26} {TRUTH[name] * to_unit:9.1f} {start * to_unit:9.1f} "
        f"{recovered[name] * to_unit:10.1f}"
    )

# %% tags=["hide-input"]
fig, axes = tc.book_figure(2, 1, height=3.2)
tc.convergence(
    axes[0],
    ctf_fit,
    truth=film_truth,
    labels={
        "defocus_a": "Δf [Å]",
        "astig_c_a": "A cos 2φ [Å]",
        "astig_s_a": "A sin 2φ [Å]",
    },
)
fig.suptitle("CTF fit on a noisy carbon-film micrograph")
plt.show()

# %% [markdown]
# The start is 800 Å off, about a quarter of a Thon-ring period at the highest
# frequencies that still carry signal; further away the likelihood has other minima (one
# per ring that can be matched with its neighbour), which is why CTF programs search on a
# grid first and refine by gradient afterwards.
#
# ### The detector's MTF
#
# With the CTF known, the same film image constrains the MTF: here a camera that blurs the
# expected image before counting (`mtf_after_noise=False`, like a counting detector), with
# the two Lorentzian widths α and β of `mtf_parametric` unknown. Shot noise is white, so
# only the *signal* carries the MTF: this works because the specimen is known. The MTF
# chapter shows that from noise alone, a counting camera's MTF is not identifiable.

# %%
mtf_start = {"alpha": 3.0, "beta": 100.0}
mtf_fit = tc.fit(
    lambda p: tc.poisson_nll(observed_film, film_counts({**as_tensors, **p})),
    {k: torch.tensor(v, device=device) for k, v in mtf_start.items()},
    scales={"alpha": mtf_alpha_px2, "beta": mtf_beta_px2},
    steps=fit_steps,
    learning_rate=0.1,
)
print(f"{'':10} {'truth':>7} {'start':>7} {'recovered':>10}")
for name, value in mtf_fit.final().items():
    print(
        f"{name + ' [px²]':10} {film_truth[name]:7.1f} {mtf_start[name]:7.1f} "
        f"{value:10.2f}"
    )

# %% tags=["hide-input"]
fig, axes = tc.book_figure(2, 1, height=3.2)
tc.convergence(
    axes[0], mtf_fit, truth=film_truth, labels={"alpha": "α [px²]", "beta": "β [px²]"}
)
fig.suptitle("MTF fit (known specimen and CTF)")
plt.show()

# %% [markdown]
# ### A particle's position and orientation
#
# Now the whole simulator runs at every step: the ubiquitin model is moved by a rotation
# (an axis-angle vector $\omega$, `tem_core.fitting.posed`) and an in-plane shift, its
# potential computed slice by slice by the Taichi kernel, propagated by multislice,
# imaged and detected; the gradient flows back through all of it to the six pose
# parameters. Ubiquitin is small (8.6 kDa), so a single image holds little information
# about its pose: this example uses a high dose, and starts 5° and 1.4 Å from the truth.
# From 10° and 3.6 Å away the same fit stalls in a local minimum: the high-frequency
# fringes of a defocused image make the likelihood oscillate with the shift, a reason
# why particle alignment programs search globally at low resolution first. The shift
# along the beam is held fixed (it only changes the defocus by a few Å).

# %%
pose_settings = replace(settings, backend="auto")
pose_truth = {
    "rotvec": torch.zeros(3, dtype=torch.float64, device=device),
    "shift_xy_a": torch.zeros(2, dtype=torch.float64, device=device),
}


def pose_counts(theta: dict) -> torch.Tensor:
    shift = torch.cat([theta["shift_xy_a"], theta["shift_xy_a"].new_zeros(1)])
    atoms = tc.posed(specimen.atoms, rotvec=theta["rotvec"], shift_a=shift)
    return tc.micrograph(
        replace(specimen, atoms=atoms),
        potential=pose_settings,
        microscope=microscope,
        detector=tc.Detector(alpha=mtf_alpha_px2, mtf_after_noise=False),
        imaging=tc.Imaging(
            defocus_a=TRUTH["defocus_a"], dose_e_per_a2=pose_dose_e_per_a2
        ),
    ).expected


observed_pose = tc.sample_counts(pose_counts(pose_truth), generator=generator)
pose_start = {
    "rotvec": torch.tensor([0.05, -0.04, 0.06], dtype=torch.float64, device=device),
    "shift_xy_a": torch.tensor([1.2, -0.8], dtype=torch.float64, device=device),
}
pose_fit = tc.fit(
    lambda p: tc.poisson_nll(observed_pose, pose_counts(p)),
    pose_start,
    scales={"rotvec": 0.1, "shift_xy_a": 2.0},
    steps=pose_steps,
    learning_rate=0.05,
)
final = pose_fit.final()
print(f"{pose_steps} steps of the full simulator in {pose_fit.seconds:.1f} s")
for label, rotvec, shift in (
    ("start", pose_start["rotvec"], pose_start["shift_xy_a"]),
    ("recovered", final["rotvec"], final["shift_xy_a"]),
):
    angle_deg = math.degrees(float(torch.linalg.vector_norm(rotvec)))
    offset_a = float(torch.linalg.vector_norm(shift))
    print(
        f"{label:>9}: rotation error {angle_deg:5.2f}°, shift error {offset_a:5.2f} Å"
    )

# %% tags=["hide-input"]
fig, axes = tc.book_figure(2, 1, height=3.2)
tc.convergence(
    axes[0],
    pose_fit,
    truth={k: v.cpu() for k, v in pose_truth.items()},
    labels={"rotvec": "|ω − ω₀| [0.1 rad]", "shift_xy_a": "|t − t₀| [Å]"},
    scales={"rotvec": 0.1},
)
fig.suptitle(f"Pose fit through the whole simulator ({pose_dose_e_per_a2:g} e/Å²)")
plt.show()

# %% [markdown]
# ## Differentiating through the shot noise: two estimators
#
# The fits above differentiate the *expected* image $\lambda(\theta)$ and compare it with
# fixed counts. A training loss on *simulated noisy* images, $E[f(k)]$ with
# $k \sim \mathrm{Poisson}(\lambda(\theta))$, needs the gradient of an expectation over
# the noise, and a Poisson sample is not differentiable. `tem_core.estimators` offers two
# estimators (see its docstring):
#
# * **score function**: $\nabla_\theta E[f] = E[(f(k) - b)\,\nabla_\theta \log p(k;
#   \lambda)]$, unbiased for any $f$, with a leave-one-out baseline $b$;
# * **pathwise**: $k \approx \lambda + \sqrt{\lambda}\,\varepsilon$ with
#   $\varepsilon \sim N(0, 1)$, then $\nabla_\theta f$; unbiased for losses quadratic
#   in $k$, such as the one here.
#
# We estimate $\partial E[f] / \partial \Delta f$ for the mean squared difference
# $f(k) = \overline{(k - k_{obs})^2}$ between a noisy film image at defocus
# $\Delta f$ and the observed one, where the exact answer is known in closed form:
# $E[f] = \overline{(\lambda - k_{obs})^2 + \lambda}$. Each estimate uses $S$ noisy
# samples and is repeated to measure its spread.

# %%
defocus = torch.tensor(TRUTH["defocus_a"] + 200.0, device=device, requires_grad=True)
lam = film_counts({**as_tensors, "defocus_a": defocus})
target = observed_film.to(lam.dtype)
exact_loss = ((lam - target) ** 2 + lam).mean()
(exact,) = torch.autograd.grad(exact_loss, defocus, retain_graph=True)
rows = []
for n_samples in (2, 8, 32):
    for method in ("score function", "pathwise"):
        estimates = []
        for _ in range(estimator_repeats):
            if method == "pathwise":
                k = tc.pathwise_poisson_sample(
                    lam.expand(n_samples, -1, -1), generator=generator
                )
                loss = ((k - target) ** 2).mean()
            else:
                k = tc.sample_counts(lam.expand(n_samples, -1, -1), generator=generator)
                f = ((k - target) ** 2).mean(dim=(1, 2))
                loss = tc.score_function_surrogate(f, k, lam, baseline="mean")
            (g,) = torch.autograd.grad(loss, defocus, retain_graph=True)
            estimates.append(float(g))
        est = np.array(estimates)
        rows.append((method, n_samples, est.mean(), est.std(ddof=1)))
print(
    f"exact ∂E[f]/∂Δf = {float(exact):.4f} counts²/Å ({estimator_repeats} repeats each)"
)
print(f"{'estimator':>15} {'S':>3} {'mean':>9} {'std':>9} {'std/|exact|':>12}")
for method, n_samples, mean, std in rows:
    print(
        f"{method:>15} {n_samples:3d} {mean:9.4f} {std:9.4f} "
        f"{std / abs(float(exact)):12.3g}"
    )

# %% tags=["hide-input"]
fig, axes = tc.book_figure(1, 1, height=3.4)
ax = axes[0, 0]
for method, marker in (("score function", "o"), ("pathwise", "s")):
    s = [r[1] for r in rows if r[0] == method]
    rel = [r[3] / abs(float(exact)) for r in rows if r[0] == method]
    ax.loglog(s, rel, marker + "-", label=method)
ax.set(
    xlabel="noisy samples S per estimate",
    ylabel="std / |exact gradient|",
    title=f"Spread of ∂E[f]/∂Δf estimates ({film_px}² pixels)",
)
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()

# %% [markdown]
# Both estimators are unbiased here (their means agree with the exact gradient within
# their spread), but the score-function estimator multiplies the loss by the score
# summed over every pixel, so its spread is orders of magnitude larger, even with a
# baseline; both shrink as $1/\sqrt{S}$. The pathwise relaxation is the practical choice
# for losses that are smooth in the counts; the score function remains the only unbiased
# option for losses that are not differentiable in $k$ (thresholds, counts of detections).
#
# ## Summary
#
# * Forward-mode AD gives derivative images $\partial I/\partial\theta$ for defocus,
#   dose, ice thickness, the MTF and a particle shift; they agree with central
#   differences to the differences' own truncation error (table above).
# * Reverse mode gives the gradient wrt all 1,806 atom coordinates in one backward pass
#   through the Taichi adjoint, checked coordinate by coordinate.
# * Gradient descent on the Poisson likelihood recovers defocus and astigmatism (from
#   800 Å off), the MTF widths and a small particle's pose from single noisy images;
#   each fit starts inside the basin of the true minimum, which a global search would
#   have to provide in practice.
# * Through the noise itself, the pathwise estimator's spread is far below the score
#   function's for a smooth loss; both are unbiased here.
