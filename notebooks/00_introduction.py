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
# # Introduction: the electron as a probe
#
# This first chapter sets the scene for the rest of the book: it computes the two
# numbers every later stage needs from the beam energy, the relativistic electron
# wavelength λ and the interaction parameter σ that converts a projected potential
# [V·Å] into a phase shift [rad].
#
# **Prerequisites:** none beyond Python. **Units:** the package works internally in
# Å, eV, rad, e/Å² and V·Å; the parameter cell below uses field units (kV), converted
# with named constants from `tem_core.units`.

# %% tags=["parameters"]
voltages_kv = [
    80.0,
    100.0,
    120.0,
    200.0,
    300.0,
]  # accelerating voltages to tabulate [kV]
voltage_min_kv = 20.0  # plotted range [kV]
voltage_max_kv = 1000.0
seed = 0
device = "auto"
quick = False

# %%
import matplotlib.pyplot as plt
import numpy as np

import tem_core as tc
from tem_core import units

tc.use_book_style()

n_points = 50 if quick else 400

# %% [markdown]
# ## Wavelength and interaction parameter
#
# The relativistic wavelength is
# $\lambda = h / \sqrt{2 m_0 e E\,(1 + e E / 2 m_0 c^2)}$ and the interaction
# parameter $\sigma = 2\pi m e \lambda / h^2$, with the relativistic mass $m$. At the
# energies of cryo-EM (100-300 kV) relativity shortens λ by 5-20 %.

# %%
print(f"{'voltage [kV]':>12} {'λ [Å]':>10} {'σ [mrad/(V·Å)]':>16} {'v/c':>7}")
for kv in voltages_kv:
    energy_ev = kv * units.KV_TO_EV
    gamma = units.relativistic_mass_ratio(energy_ev)
    beta = np.sqrt(1.0 - 1.0 / gamma**2)
    print(
        f"{kv:12.0f} {units.electron_wavelength_a(energy_ev):10.6f} "
        f"{units.interaction_parameter(energy_ev) * 1e3:16.4f} {beta:7.3f}"
    )

# %%
voltages = np.geomspace(voltage_min_kv, voltage_max_kv, n_points)
energies_ev = voltages * units.KV_TO_EV
wavelength = np.array([units.electron_wavelength_a(e) for e in energies_ev])
sigma = np.array([units.interaction_parameter(e) for e in energies_ev])
# non-relativistic wavelength h / sqrt(2 m0 e E), for comparison
wavelength_classical = (
    units.PLANCK_J_S
    / np.sqrt(2 * units.ELECTRON_MASS_KG * units.ELEMENTARY_CHARGE_C * energies_ev)
    * units.M_TO_A
)

fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.3))
axes[0].loglog(voltages, wavelength, label="relativistic")
axes[0].loglog(voltages, wavelength_classical, "--", label="non-relativistic")
axes[0].set(xlabel="accelerating voltage [kV]", ylabel="wavelength λ [Å]")
axes[0].legend()
axes[1].semilogx(voltages, sigma * 1e3)
axes[1].set(xlabel="accelerating voltage [kV]", ylabel="σ [mrad / (V·Å)]")
for ax in axes:
    for kv in (100, 200, 300):
        ax.axvline(kv, color="0.8", lw=0.8, zorder=0)
    ax.grid(True, which="both", alpha=0.3)
fig.suptitle("Electron wavelength λ and interaction parameter σ versus voltage")
plt.show()

# %% [markdown]
# ## What this means for a protein
#
# A protein's projected potential through ~50 Å of material is of order
# 50 Å × ~7 V (its mean inner potential) ≈ 350 V·Å above vacuum, so the phase shift
# σ·V_z at 300 kV is about 0.2 rad: a *weak* phase object, whose contrast the
# microscope must create by defocus (the CTF chapter). Ice of similar density
# surrounds it, which is why cryo-EM contrast is so low.

# %%
energy_ev = 300 * units.KV_TO_EV
phase_rad = units.interaction_parameter(energy_ev) * 50.0 * 7.0
print(f"phase shift through 50 Å of protein at 300 kV: {phase_rad:.3f} rad")

# %% [markdown]
# ## Summary
#
# * λ = 0.0197 Å and σ = 6.53e-4 rad/(V·Å) at 300 kV; both come from
#   `tem_core.units`, tested against CODATA-derived reference values.
# * Later chapters build the specimen, its potential, the wave, the optics and the
#   detector, one module per stage.
