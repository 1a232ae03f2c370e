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
# # Building a specimen: atomic models in vitreous ice
#
# A simulated micrograph starts from atoms. This chapter reads deposited atomic models
# (crambin, 1CRN, and the mature Zika virion, 5IRE), expands the virion's icosahedral
# asymmetric unit into the full 661,440-atom capsid with the 60 operators of its
# biological assembly, embeds several virions at random orientations in a slab of
# vitreous ice spanning a hole in a carbon film, tilts the slab, and finally turns the
# atoms into the slice potentials [V·Å] that the multislice stage propagates through.
#
# **Prerequisites:** chapter 0 (units). **Units:** Å, rad and V·Å inside the package;
# the parameter cell uses nm and degrees, converted with `tem_core.units`.

# %% tags=["parameters"]
ice_thickness_nm = 70.0  # ice slab thickness [nm] (a Zika virion is ~50 nm across)
hole_diameter_nm = 150.0  # hole in the carbon film [nm]
field_nm = (240.0, 171.0)  # field of view (Lx, Ly) [nm], whole pixels
n_virions = 4  # virions placed in the ice
tilt_deg = 30.0  # tilt shown in the tilted phantom [deg]
sampling_a = 3.0  # pixel size of the potential [Å]
slice_thickness_nm = 5.0  # multislice slice thickness [nm]
seed = 0
device = "auto"
quick = False

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle, Rectangle

import tem_core as tc
from tem_core import units

if quick:  # a smaller field, two virions, coarse pixels and a few thick slices
    field_nm, hole_diameter_nm, n_virions = (180.0, 78.0), 160.0, 2
    sampling_a, slice_thickness_nm = 6.0, 10.0

tc.use_book_style()
device = tc.resolve_device(device)
roots = (Path.cwd(), *Path.cwd().parents)
DATA = next(p / "data" for p in roots if (p / "data" / "5ire.pdb.gz").exists())
generator = torch.Generator().manual_seed(seed)
print(f"device: {device}, data: {DATA}")

# %% [markdown]
# ## A small protein: crambin
#
# `read_structure` reads PDB or mmCIF (gzipped or not) with gemmi and returns an
# `AtomicModel`: atomic numbers Z, positions [Å], B-factors [Å²] and occupancies.
# Alternate conformations are resolved to the most occupied one; waters and hydrogens
# can be dropped. Deposited X-ray and cryo-EM models rarely contain hydrogens, although
# they carry about 18 % of a protein's integrated scattering potential (as many H as
# heavy atoms, each scattering a fifth as much as a carbon): `add_hydrogens=True` adds
# each residue's standard hydrogens at the position of the heavy atom they are bonded
# to, accurate enough at cryo-EM resolutions (> 2 Å), where the 1 Å bond is not resolved.

# %%
crambin = tc.read_structure(DATA / "1crn.pdb.gz")
crambin_h = tc.read_structure(DATA / "1crn.pdb.gz", add_hydrogens=True)
symbols = {1: "H", 6: "C", 7: "N", 8: "O", 16: "S"}
for label, model in (("deposited", crambin), ("with hydrogens", crambin_h)):
    z, counts = torch.unique(model.atomic_numbers, return_counts=True)
    composition = ", ".join(
        f"{symbols[int(k)]} {int(c)}" for k, c in zip(z, counts, strict=True)
    )
    print(f"1CRN {label:>15}: {len(model):4d} atoms ({composition})")
print(
    f"bounding radius {crambin.bounding_radius_a():.1f} Å, "
    f"mean B {float(crambin.b_factors_a2.mean()):.1f} Å²"
)

# %% [markdown]
# ## A virus: the Zika virion from its asymmetric unit
#
# 5IRE deposits one icosahedral asymmetric unit (three E and three M chains); REMARK 350
# of the file lists the 60 rotations of the icosahedral group that build the capsid.
# `assembly_operators` returns them as a `(60, 3, 4)` tensor `[R | t]` and
# `expand_assembly` applies them in one vectorised step.

# %%
asym_unit = tc.read_structure(DATA / "5ire.pdb.gz")
operators = tc.assembly_operators(DATA / "5ire.pdb.gz")
virion = tc.expand_assembly(asym_unit, operators)
print(
    f"5IRE asymmetric unit: {len(asym_unit):,} atoms; {operators.shape[0]} operators "
    f"-> virion {len(virion):,} atoms, radius {virion.bounding_radius_a() / 10:.1f} nm"
)

# %% tags=["hide-input"]
centred = virion.centered().positions_a.numpy()
fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.4))
for ax, (i, j, name) in zip(axes, ((0, 1, "xy"), (0, 2, "xz")), strict=True):
    counts, xe, ye = np.histogram2d(centred[:, i], centred[:, j], bins=200)
    im = ax.imshow(
        counts.T, origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), cmap="magma"
    )
    ax.set(
        xlabel=f"{name[0]} [Å]",
        ylabel=f"{name[1]} [Å]",
        title=f"Zika virion, {name} view",
    )
    fig.colorbar(im, ax=ax, label="atoms per bin")
plt.show()

# %% [markdown]
# ## Virions in a slab of ice
#
# `build_specimen` centres each copy on its geometric centre, turns it by a rotation
# drawn uniformly on SO(3) (normalised Gaussian quaternions), and places it where its
# bounding sphere lies inside the field, inside the ice, inside the hole and at least
# `min_gap_a` away from every other particle (random sequential addition). The random
# numbers come only from the explicit generator: the same seed gives the same specimen.
# The ice fills `0 ≤ z ≤ thickness`; around the hole lies the carbon film.

# %%
ice = tc.IceSlab(
    thickness_a=ice_thickness_nm * units.NM_TO_A,
    hole_diameter_a=hole_diameter_nm * units.NM_TO_A,
    support="carbon",
)
extent_a = (field_nm[0] * units.NM_TO_A, field_nm[1] * units.NM_TO_A)
specimen = tc.build_specimen(
    virion.to(device=device),
    n_virions,
    extent_a=extent_a,
    ice=ice,
    generator=generator,
    min_gap_a=20.0,
)
z_lo, z_hi = specimen.z_range_a()
print(
    f"{specimen.n_particles} virions, {len(specimen.atoms):,} atoms in a "
    f"{extent_a[0] / 10:.0f} × {extent_a[1] / 10:.0f} nm field; "
    f"z range {z_lo:.0f}..{z_hi:.0f} Å"
)
print(
    "particle centres [nm]:\n",
    np.round(specimen.particle_centers_a.cpu().numpy() / 10, 1),
)


# %% tags=["hide-input"]
def show_phantom(spec, title):
    """xy and xz histograms of the atoms with the field, hole and slab outlines."""
    pos = spec.atoms.positions_a.detach().cpu().numpy()
    lx, ly = spec.extent_a
    c = spec.slab_center_a.cpu().numpy()
    n = spec.slab_normal.cpu().numpy()
    half = spec.ice.thickness_a / 2
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.3))
    counts, xe, ye = np.histogram2d(
        pos[:, 0], pos[:, 1], bins=(240, int(240 * ly / lx)), range=((0, lx), (0, ly))
    )
    im = axes[0].imshow(counts.T, origin="lower", extent=(0, lx, 0, ly), cmap="magma")
    axes[0].add_patch(
        Circle(
            c[:2],
            spec.ice.hole_diameter_a / 2,
            fill=False,
            ec="c",
            ls="--",
            label="hole edge (projection)",
        )
    )
    axes[0].add_patch(Rectangle((0, 0), lx, ly, fill=False, ec="w"))
    axes[0].set(xlabel="x [Å]", ylabel="y [Å]", title=f"{title}: xy")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=axes[0], label="atoms per bin", shrink=0.6)
    z0, z1 = spec.z_range_a()
    z0, z1 = (
        z0 - 0.05 * (z1 - z0),
        z1 + 0.05 * (z1 - z0),
    )  # margin to show the ice faces
    counts, xe, ze = np.histogram2d(
        pos[:, 0],
        pos[:, 2],
        bins=(240, int(240 * (z1 - z0) / lx)),
        range=((0, lx), (z0, z1)),
    )
    im = axes[1].imshow(counts.T, origin="lower", extent=(0, lx, z0, z1), cmap="magma")
    x = np.array([0.0, lx])
    for s in (-half, half):  # slab faces in the plane y = y_centre
        axes[1].plot(x, c[2] + (s - (x - c[0]) * n[0]) / n[2], "c-", lw=1)
    axes[1].set(
        xlabel="x [Å]",
        ylabel="z [Å] (beam →)",
        title=f"{title}: xz, ice faces in cyan",
        ylim=(z0, z1),
    )
    fig.colorbar(im, ax=axes[1], label="atoms per bin", shrink=0.6)
    plt.show()


show_phantom(specimen, "untilted")

# %% [markdown]
# ## Tilting
#
# `tilt_specimen` rotates atoms, slab normal and particle poses about the slab centre by
# `+θ` about an in-plane axis (here the y axis, `tilt_axis_angle_rad = π/2`); the beam
# stays along z, so the electrons cross `thickness / cos θ` of ice.

# %%
tilted = tc.tilt_specimen(
    specimen, tilt_angle_rad=tilt_deg * units.DEG_TO_RAD, tilt_axis_angle_rad=np.pi / 2
)
print(
    f"slab normal after a {tilt_deg:.0f}° tilt: "
    f"{tilted.slab_normal.cpu().numpy().round(3) + 0}; "
    "ice path length "
    f"{ice.thickness_a / np.cos(tilt_deg * units.DEG_TO_RAD) / 10:.1f} nm"
)
show_phantom(tilted, f"tilted {tilt_deg:.0f}° about y")

# %% [markdown]
# ## From atoms to slice potentials
#
# The potential stage (`tem_core.potential`, next chapter) integrates the Peng
# five-Gaussian atomic potentials over each slice, adds the ice (mean inner potential,
# minus the volume the atoms displace) and the carbon film outside the hole, and streams
# the slices one by one, so memory does not grow with the number of slices. The real
# part is the projected potential V_z of the slice [V·Å]; the imaginary part models
# inelastic absorption.

# %%
shape = (int(round(extent_a[1] / sampling_a)), int(round(extent_a[0] / sampling_a)))
settings = tc.PotentialSettings(
    shape=shape,
    sampling_a=sampling_a,
    slice_thickness_a=slice_thickness_nm * units.NM_TO_A,
)
slices = [s.cpu() for s in tc.iter_slice_potentials(specimen, settings)]
projected = torch.stack(slices).sum(0)
print(
    f"grid {shape[1]} × {shape[0]} px at {sampling_a} Å, {len(slices)} slices of "
    f"{slice_thickness_nm} nm"
)

# %% [markdown]
# Below: the first slice (ice only inside the hole), the slice through the virions'
# centres (capsid cross-sections; the carbon film, brighter, lies outside the hole), and
# the sum of all slices. Grey levels span the 0.5-99.5 percentiles inside the hole.

# %% tags=["hide-input"]
centre_z = float(specimen.particle_centers_a[:, 2].mean())
k_mid = min(int((centre_z - z_lo) // settings.slice_thickness_a), len(slices) - 1)
yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
hole = (
    np.hypot(
        (xx + 0.5) * sampling_a - extent_a[0] / 2,
        (yy + 0.5) * sampling_a - extent_a[1] / 2,
    )
    < 0.95 * ice.hole_diameter_a / 2
)
panels = [
    (slices[0], "slice 0", "V_z [V·Å]"),
    (slices[k_mid], f"slice {k_mid} (virion centres)", "V_z [V·Å]"),
    (projected, "projected (sum of slices)", "projected potential [V·Å]"),
]
fig, axes = plt.subplots(len(panels), 1, figsize=(6.5, 2.9 * len(panels)))
for ax, (image, title, label) in zip(axes, panels, strict=True):
    values = image.real.numpy()
    lo, hi = np.percentile(values[hole], [0.5, 99.5])
    im = ax.imshow(
        values,
        origin="lower",
        extent=(0, extent_a[0], 0, extent_a[1]),
        cmap="gray",
        vmin=lo,
        vmax=hi,
    )
    ax.set(title=title, xlabel="x [Å]", ylabel="y [Å]")
    fig.colorbar(im, ax=ax, label=label)
plt.show()

# %% [markdown]
# The ice in the hole and the carbon around it set the background of each slice; the
# virions add their protein shells on top, minus the ice they displace. In projection
# the capsids (brighter at the rim, where the beam runs tangentially through the shell)
# stand out by a few hundred V·Å against a background of about `thickness × 4.5 V` of ice.
#
# ## Summary
#
# * `read_structure` reads PDB / mmCIF models (altlocs, waters, hydrogens handled and
#   documented); `assembly_operators` + `expand_assembly` build biological assemblies,
#   and `helical_operators` helical ones from rise and twist.
# * `build_specimen` places randomly oriented, non-overlapping particles in an ice slab
#   inside a hole of a carbon film, reproducibly from a seed; `tilt_specimen` tilts it.
# * `iter_slice_potentials` turns the specimen into slice potentials [V·Å] for multislice.
