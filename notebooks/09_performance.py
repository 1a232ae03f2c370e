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
# # Performance: recorded benchmarks
#
# How fast is `tem_core`, against what, and how does it scale? This chapter does **not**
# time anything while the book is built: on a shared machine such numbers would say more
# about the other processes than about the code. It reads the tables that the scripts in
# `benchmarks/` printed and stored in `benchmarks/results/`, each with its date, machine,
# load and command, and plots them. Rerun a benchmark (`make bench`, or one script with
# `--json benchmarks/results/NAME.json`) to add your own machine.
#
# **Prerequisites:** none. **Units:** seconds of wall time; atoms; pixels.

# %% tags=["parameters"]
results_dir = "benchmarks/results"  # folder of recorded benchmark tables (JSON)
seed = 0  # unused: nothing random here
device = "auto"  # unused: nothing is computed here
quick = False  # unused: reading the tables is instant

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tem_core.plotting import (
    book_figure,
    peer_results_text,
    recorded_table,
    scaling_text,
    use_book_style,
    wrap_text,
)

use_book_style()
roots = (Path.cwd(), *Path.cwd().parents)
RESULTS = next(p / results_dir for p in roots if (p / results_dir).is_dir())
recorded = json.loads((RESULTS / "recorded_2026-11-28.json").read_text())
scaling_files = sorted(RESULTS.glob("scaling_*.json"))
names = ", ".join(p.name for p in sorted(RESULTS.glob("*.json")))
print(wrap_text(f"tables in {RESULTS.name}/: {names}"))

print(wrap_text(f"recorded: {recorded['source']}; {recorded['conditions']}"))


# %% [markdown]
# ## Slice potentials: scaling with the number of atoms
#
# `benchmarks/potential.py` computes the slice potentials of three structures of very
# different size in the same 1024² field with 600 Å of ice: crambin (327 atoms),
# apoferritin (32,618) and the whole Zika virion (661,440 atoms, expanded from its
# icosahedral asymmetric unit). The Taichi kernel and its pure-torch twin are both
# timed; the H100 points come from an earlier session on a GPU machine.

# %%
potential = recorded["potential"]
print(wrap_text(potential["setup"]))
print(recorded_table(
    potential,
    {
        "case": "18",
        "atoms": "8,d",
        "backend": "7",
        "device": "12",
        "seconds": "8.2f",
        "atoms_per_s": "11.2e",
    },
))

# %% tags=["hide-input"]
fig, axes = book_figure(1, 1, height=3.6)
ax = axes[0, 0]
rows = [dict(zip(potential["columns"], r, strict=True)) for r in potential["rows"]]
for (backend, dev), marker in {
    ("taichi", "cpu"): "o-",
    ("torch", "cpu"): "s-",
    ("taichi", "cuda (H100)"): "o",
    ("torch", "cuda (H100)"): "s",
}.items():
    sel = [r for r in rows if r["backend"] == backend and r["device"] == dev]
    ax.loglog(
        [r["atoms"] for r in sel],
        [r["seconds"] for r in sel],
        marker,
        label=f"{backend}, {dev}",
    )
ax.set(
    xlabel="atoms",
    ylabel="wall time [s]",
    title="Slice potentials, 1024² px, 600 Å ice (2 CPU cores)",
)
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()

# %% [markdown]
# Below about 30,000 atoms the time is set by the ice and the grid (the 1024² slices),
# not by the atoms: crambin and apoferritin cost the same. The Zika virion, twenty times
# more atoms than apoferritin, takes about six times longer on two CPU cores (3.5e5
# atoms/s with Taichi); on the H100 the same virion took 0.4-0.6 s.
#
# ## Against the peers
#
# `benchmarks/forward.py` simulates the exit wave of 20 apoferritins (652,360 atoms) on
# 1024² pixels with `tem_core` and with abTEM, in the same run and on the same machine;
# `benchmarks/vs_temsim.py` runs TEM-simulator's own TMV tilt-series example with both
# simulators.

# %%
forward = recorded["forward_vs_abtem"]
print(wrap_text(forward["setup"]))
print(recorded_table(forward, {"what": "50", "tem_core_s": "10.2f", "abtem_s": "7.2f"}))
temsim = recorded["vs_temsim"]
print()
print(wrap_text(temsim["setup"]))
print(recorded_table(temsim, {"simulator": "28", "seconds": "8.1f"}))

# %% tags=["hide-input"]
fig, axes = book_figure(2, 1, height=3.0)
labels = ["tem_core\n(ice)", "tem_core\n(no ice)", "abTEM\n(no ice)"]
values = [forward["rows"][0][1], forward["rows"][1][1], forward["rows"][0][2]]
axes[0, 0].bar(labels, values, color=["C0", "C0", "C1"])
axes[0, 0].set(ylabel="wall time [s]", title="Exit wave, 652,360 atoms")
axes[0, 1].bar(["tem_core\n(multislice)", "TEM-simulator\n(projection)"], [22.6, 11.8])
axes[0, 1].set(ylabel="wall time [s]", title="TMV series, 61 tilts, 400²")
for ax in axes[0]:
    ax.grid(alpha=0.3, axis="y")
plt.show()

# %% [markdown]
# In these recorded tables (2026-11-28) `tem_core` computed an apoferritin field's exit
# wave 1.7 times faster than abTEM (2.1 times without ice, which abTEM does not model),
# using more memory (peak 942 MiB against 720 MiB); abTEM was warmed up only at a small
# size there, so part of its time was FFT planning. On TEM-simulator's example it was
# 1.9 times *slower*: TEM-simulator projects precomputed particle maps, while `tem_core`
# integrates every atom at every tilt. The side-by-side tables of the next section
# supersede both numbers. The results agree with the peers:

# %%
print(recorded_table(recorded["agreement"], {"quantity": "60", "relative_l2": "11.1e"}))

# %% [markdown]
# ## Side by side, warm and with the same threads
#
# Newer tables, if recorded: `benchmarks/forward.py --json .../forward_cpu.json` runs
# `tem_core` and abTEM (`infinite` and `finite` projections) on the apoferritin field,
# both warmed up at the full size and on the same number of threads, in interleaved
# rounds (medians); `benchmarks/vs_cryojax.py --json .../vs_cryojax.json` times the
# projection approximation and its gradient with respect to the atom positions against
# cryojax (JAX); `benchmarks/vs_temsim.py --temsim PATH --json .../vs_temsim.json` runs
# TEM-simulator (built by the user) and `tem_core` (projection and multislice) on the
# TMV example, interleaved. Ratios measured in one run are the numbers to read.

# %%
print(peer_results_text(RESULTS))

# %% [markdown]
# ## Scaling with the grid and the number of particles
#
# `benchmarks/scaling.py` times whole micrographs (potential, multislice, CTF, detector)
# of apoferritins in 300 Å of ice, in one run: one particle on growing grids, then more
# particles on a fixed grid. Its tables are stored with the load of the machine at the
# time; the newest is shown. The dotted line is proportional to the number of pixels.

# %%
if scaling_files:
    scaling = json.loads(scaling_files[-1].read_text())
    print(scaling_text(scaling))
else:
    scaling = None
    print("no scaling table recorded yet: run benchmarks/scaling.py --json ...")

# %% tags=["hide-input"]
if scaling is not None:
    fig, axes = book_figure(2, 1, height=3.2)
    grid = [r for r in scaling["rows"] if r["series"] == "grid"]
    atoms = [r for r in scaling["rows"] if r["series"] == "atoms"]
    px = np.array([r["n_px"] ** 2 for r in grid], dtype=float)
    t = np.array([r["seconds"] for r in grid])
    axes[0, 0].loglog(px, t, "o-", label="measured")
    axes[0, 0].loglog(px, t[-1] * px / px[-1], "k:", label="∝ pixels")
    axes[0, 0].set(xlabel="pixels", ylabel="wall time [s]", title="one apoferritin")
    axes[0, 1].plot([r["atoms"] for r in atoms], [r["seconds"] for r in atoms], "o-")
    axes[0, 1].set(
        xlabel="atoms",
        ylabel="wall time [s]",
        title=f"apoferritins on {atoms[0]['n_px']}² px",
    )
    axes[0, 0].legend()
    for ax in axes[0]:
        ax.grid(alpha=0.3, which="both")
    plt.show()

# %% [markdown]
# ## Summary
#
# * Numbers come from stored tables with their conditions, not from the book build;
#   the recorded ones were measured on an idle 2-core machine on 2026-11-28.
# * Slice potentials of the 661,440-atom Zika virion take 1.9 s on two CPU cores and
#   0.4-0.6 s on an H100; small proteins cost what their grid and ice cost.
# * Against the peers, read the side-by-side tables (warm, same threads, one run):
#   they give the ratios to abTEM, cryojax and TEM-simulator with the load at the time;
#   the 2026-11-28 tables (1.7× faster than abTEM, 1.9× slower than TEM-simulator) came
#   before the fused splat kernel, the one-pass projection and the per-series reuse.
# * Whole micrographs: at small sizes fixed costs dominate, so the time grows less than
#   the work; at the largest sizes it grows about in proportion (on 2026-12-01, 2048² px
#   took 4.1× the time of 1024², and 36 apoferritins 2.1× the time of 16). That table
#   was measured while other jobs loaded the 2 cores (load average 15-17): read its
#   ratios, not its absolute times.
