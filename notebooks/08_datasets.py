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
# # Datasets: many micrographs from one description, on Dask
#
# Networks that pick particles, denoise micrographs or segment tomograms are trained on
# thousands of simulated images whose truth is known. This chapter generates such a
# dataset from one TOML description: every item's parameters (defocus, dose, ice,
# pixel size, voltage, camera, particle count and poses) are drawn from ranges in the
# file, from the master seed and the item index alone, so any item can be regenerated
# by itself bit for bit. The items run one task each on a Dask cluster (a local one
# here), and each writes an MRC image, its noise-free twin and a RELION STAR file of
# the particles' coordinates and poses. A metadata table lists every item's parameters
# and seeds.
#
# **Prerequisites:** chapter 2 (micrographs). **Units:** the description uses the field
# units named in its keys (`defocus_um`, `voltage_kv`, `ice_thickness_nm`); the package
# converts them with `tem_core.units`.

# %% tags=["parameters"]
dataset_file = ""  # dataset description (.toml); empty: data/example_dataset.toml
n_items = 12  # items to generate (replaces dataset.items of the file)
workers = 2  # local Dask worker processes
seed = 20261201  # master seed (replaces dataset.seed of the file)
output_dir = ""  # output folder; empty: a new temporary folder
device = "auto"
quick = False

# %%
import csv
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from distributed import LocalCluster

from tem_core.dataset import (
    generate_dataset,
    item_parameters,
    parse_dataset_spec,
    particle_centers_a,
    read_star,
)
from tem_core.io import read_mrc
from tem_core.plotting import montage, parameter_histograms

if quick:  # four items on one worker
    n_items, workers = 4, 1

roots = (Path.cwd(), *Path.cwd().parents)
DATA = next(p / "data" for p in roots if (p / "data" / "example_dataset.toml").exists())
source = Path(dataset_file) if dataset_file else DATA / "example_dataset.toml"
out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="tem_core_set_"))
print(f"description: {source.name}; output folder: {out}")

# %% [markdown]
# ## The description
#
# A dataset is a TOML file with one table per stage: the structures and how many
# copies of each, the grid, the specimen (ice thickness, support, pose randomisation),
# the microscope, the detector, the imaging (defocus, dose, astigmatism), for tilt
# series the tilt scheme, and the outputs wanted. A value is either fixed, or drawn
# per item from `{ choice = [...] }`, `{ uniform = [low, high] }` or
# `{ int_uniform = [low, high] }`.
# Here is the example shipped in `data/`:

# %%
print(source.read_text())

# %% [markdown]
# The file is validated strictly: an unknown key, a value out of range or a distribution
# that does not fit the key stops the run with a message naming the file, the key, the
# value and the unit, before anything is simulated. For example, a negative dose:

# %%
raw = tomllib.loads(source.read_text())
raw["imaging"]["dose_e_per_a2"] = -3.0
try:
    parse_dataset_spec(raw, source=source)
except ValueError as error:
    print(error)

# %% [markdown]
# ## Every item from the master seed and its index
#
# Each drawn key has its own random stream, seeded from (master seed, item index, key);
# two more streams seed the specimen (positions, poses) and the shot noise. An item's
# parameters therefore depend on nothing else: not on the number of items, not on the
# order the cluster runs them, not on the other keys. Drawing the parameters costs
# nothing, so the distributions of the whole description can be seen before simulating
# anything: 2000 indices below (500 in quick mode), the generated items marked in red.

# %%
raw = tomllib.loads(source.read_text())
n_preview = 500 if quick else 2000
raw["dataset"].update(items=max(n_items, n_preview), seed=seed, device=device)
preview = parse_dataset_spec(raw, source=source)
raw["dataset"]["items"] = n_items
spec = parse_dataset_spec(raw, source=source)
drawn = [item_parameters(preview, i) for i in range(preview.n_items)]
chosen = [item_parameters(spec, i) for i in range(spec.n_items)]
assert chosen == drawn[:n_items]  # the same items, whatever the dataset's size

keys = {
    "imaging.defocus_um": "defocus [µm]",
    "imaging.dose_e_per_a2": "dose [e/Å²]",
    "specimen.ice_thickness_nm": "ice thickness [nm]",
    "grid.pixel_size_a": "pixel size [Å]",
    "microscope.voltage_kv": "voltage [kV]",
    "structures.0.copies": "particles per image",
}

# %% tags=["hide-input"]
fig = parameter_histograms(drawn, list(keys), labels=list(keys.values()), marked=chosen)
plt.show()

# %% [markdown]
# ## Generating the items on a Dask cluster
#
# `generate_dataset` (and the command line `tem-book generate`) submits one task per
# item. Without a scheduler address it starts a local cluster of worker processes, one
# thread each, and sets torch's and Taichi's CPU threads in every worker to
# cores ÷ workers so the machine is not oversubscribed. Given the address of an
# existing scheduler it runs the same tasks there. Below a local cluster is started
# explicitly and its address passed, exactly as one would pass a remote cluster's.
# Workers write each item's files atomically, then a record with the item's settings
# hash and each file's SHA-256.

# %%
cluster = LocalCluster(
    n_workers=workers, threads_per_worker=1, dashboard_address=":0", silence_logs=40
)
address = cluster.scheduler_address
report = generate_dataset(spec, out, scheduler=address, progress=False)
print(
    f"{len(report.completed)} items in {report.seconds:.1f} s on {report.workers} "
    f"workers; failed: {len(report.failed)}"
)
for folder in sorted(p for p in out.iterdir() if p.is_dir()):
    files = sorted(f.name for f in folder.iterdir())
    print(f"{folder.name + '/':<13} {len(files):2d} files: {', '.join(files[:2])}, ...")
print("tables:", ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))

# %% [markdown]
# The first three micrographs (top) and their noise-free images (bottom), titled with
# their drawn defocus and dose. At these doses a single crambin (5 kDa) is invisible in
# the counts: the noise-free image is the ground truth a denoiser is trained against.
# Voltage, pixel size, ice thickness, DQE and the number of crambins vary as well.

# %%
with open(out / "metadata.csv") as handle:
    rows = list(csv.DictReader(handle))
shown = rows[:3]
counts = [read_mrc(out / row["file.image"])[0] for row in shown]
clean = [read_mrc(out / row["file.noise_free"])[0] for row in shown]
images = np.stack(counts + clean)
defocus_um = [float(r["imaging.defocus_um"]) for r in shown]
dose = [float(r["imaging.dose_e_per_a2"]) for r in shown]
titles = [f"{z:.1f} µm, {d:.0f} e/Å²" for z, d in zip(defocus_um, dose, strict=True)]
titles += ["noise-free"] * len(shown)

# %% tags=["hide-input"]
fig = montage(images, titles=titles, ncols=3, panel_size=2.2, common_scale=False)
plt.show()

# %% [markdown]
# Each micrograph comes with its noise-free image and a STAR file of its particles, in
# RELION's frame: `rlnCoordinateX/Y`, the pixel that holds the particle's centre (RELION's
# pixel centres are integers), the sub-pixel rest as `rlnOriginX/YAngst`, and the poses as
# ZYZ Euler angles `rlnAngleRot`, `rlnAngleTilt`, `rlnAnglePsi` in degrees, in RELION's
# convention (the angles whose rotation matrix is the particle's rotation in the specimen;
# tested in `tests/test_dataset.py`, and with RELION itself by
# `benchmarks/relion_star_check.py`: `relion_preprocess` extracts the particles from these
# files and `relion_reconstruct` rebuilds the structure from them).
# `particle_centers_a` turns the columns back into centres. The first item's noise-free
# image with its particles:

# %%
first = rows[0]
noise_free, pixel_a = read_mrc(out / first["file.noise_free"])
star = read_star(out / first["file.particles"])["particles"]
# centres in pixels, pixel ix spanning [ix, ix + 1)
centres_px = particle_centers_a(star, pixel_a).numpy() / pixel_a
for k in range(len(star["rlnCoordinateX"])):
    print(
        f"particle {k}: x {centres_px[k, 0]:6.1f} px, "
        f"y {centres_px[k, 1]:6.1f} px, rot/tilt/psi "
        + "/".join(star[f"rlnAngle{n}"][k] for n in ("Rot", "Tilt", "Psi"))
        + " deg"
    )

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(3.6, 3.6), constrained_layout=True)
ny, nx = noise_free.shape  # pixel ix spans [ix, ix + 1): imshow's extent matches
ax.imshow(noise_free, cmap="gray", origin="lower", extent=(0, nx, 0, ny))
ax.plot(
    centres_px[:, 0],
    centres_px[:, 1],
    "o",
    mfc="none",
    mec="C1",
    ms=18,
)
ax.set_title(f"{first['name']}: noise-free, particles", fontsize=9)
ax.set_axis_off()
plt.show()

# %% [markdown]
# ## Resuming, and one item alone
#
# Calling `generate_dataset` again on the same folder checks each item's record against
# the item's current settings hash and its files' checksums, and only redoes what does
# not match: a run stopped half-way (or a worker that died) resumes where it stopped,
# and an edited description redoes exactly the items it changes.

# %%
again = generate_dataset(spec, out, scheduler=address, progress=False)
print(f"second run: {len(again.completed)} generated, {len(again.skipped)} skipped")
cluster.close()

# %% [markdown]
# Any item can be regenerated alone with `tem-book simulate`, which writes one item of a
# description to a file; `--index 1` gives item 1 of the dataset, bit for bit:

# %%
single = out / "item1_again.mrc"
file_args = ["--out", str(single), "--index", "1", "--device", device]
command = [sys.executable, "-m", "tem_core.cli", "simulate", str(source), *file_args]
if raw["dataset"]["seed"] != tomllib.loads(source.read_text())["dataset"]["seed"]:
    print("(the seed differs from the file's: skipping the command-line check)")
else:
    subprocess.run(command, check=True, capture_output=True)
    again_image, _ = read_mrc(single)
    same = np.array_equal(again_image, read_mrc(out / rows[1]["file.image"])[0])
    print("item 1 regenerated alone is identical:", same)

# %% [markdown]
# ## The same file on a cluster
#
# On a cluster the description and the command do not change; only the address of a
# Dask scheduler is added. The workers must see the output folder and the structure
# files (a shared file system). With a scheduler and workers started by hand:
#
# ```bash
# dask scheduler                                  # on one node: tcp://node1:8786
# dask worker tcp://node1:8786 --nworkers 8 --nthreads 1     # on each compute node
# tem-book generate dataset.toml --out /shared/set --scheduler tcp://node1:8786
# ```
#
# On GPU nodes start one worker per GPU that advertises it,
# `dask worker tcp://node1:8786 --nthreads 1 --resources GPU=1` (or `dask-cuda-worker`,
# which pins one GPU per worker): with `device = "auto"` each item then runs on its
# worker's GPU, one item per GPU at a time. On a batch system, `dask-jobqueue` starts
# workers as jobs (for example `SLURMCluster`), and its client is passed the same way:
# `generate_dataset(spec, out, scheduler=client)`. Without `--scheduler`,
# `tem-book generate` starts a local cluster with one worker per core (per GPU on a GPU
# machine); `--workers 0` runs a plain loop in one process. Dask's dashboard, whose link
# the command prints, needs `bokeh` (the `dashboard` extra).
#
# ## Summary
#
# * One TOML file describes a dataset: fixed values and ranges or lists to draw from, in
#   field units; it is checked strictly before anything runs.
# * Every item follows from (master seed, item index): any item regenerates alone, and
#   the parameters do not depend on how many items there are or where they run.
# * `tem-book generate` runs one task per item on a local Dask cluster or an existing
#   one, resumes from the records, reports failed items with their traceback and
#   parameters, and writes MRC images, noise-free images, RELION STAR files of the
#   particles and one metadata table (CSV and JSON).

# %% tags=["remove-cell"]
# without output_dir the set went to a temporary folder: do not leave it behind
if not output_dir:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
