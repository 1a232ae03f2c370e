"""Projection approximation, forward and gradient: tem_core versus cryojax, side by side.

cryojax (JAX, https://github.com/michael-0brien/cryojax) is the closest differentiable peer:
it projects Peng 1996 five-Gaussian atoms (``GaussianMixtureVolume``) onto a pixel grid with
erf pixel averages (``GaussianMixtureProjection(sampling_mode="average", n_spread=...)``),
the same model as :func:`tem_core.potential.slice_potential` over a slab holding every atom.
Both codes get the same atoms (positions, Peng ``a``, ``b`` + the PDB B-factor) in float32:

* ``one particle``: one apoferritin (6Z6U 24-mer, 32,618 atoms), 256² at 1 Å;
* ``field``: the apoferritin field of ``benchmarks/forward.py`` (20 copies, 652,360 atoms),
  1024² at 1 Å, atoms in vacuum, clipped at the field's edge (``periodic=False``).

Timed, after compilation / warm-up at the full size: the forward projection, and the gradient
of ``Σ weight · image`` with respect to all atom positions (forward + backward). cryojax:
``jax.jit`` of the projection and of ``jax.grad``, ``n_spread`` from its own
``suggest_n_spread`` (4 σ per Gaussian term, as our 1e-4 cutoff is about 4.1 σ of the widest
term). Each code runs in its own process (tem_core in the main environment, cryojax in the
comparison one, both on all cores); ``--rounds`` rounds interleave the two and each number is
the median over rounds of the median of 3 timed calls in a process. Images are compared by
their correlation (our grid's pixel ``i`` is centred at ``(i + ½) s``, cryojax's at
``(i − n/2) s``: positions are shifted by that much for cryojax).

Run (about 2 minutes on 2 cores)::

    .venv/bin/python benchmarks/vs_cryojax.py [--rounds 3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._envs import env_python  # noqa: E402


def _median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- scenes
def build_scenes(quick: bool, seed: int) -> dict:
    """Atoms (float32 numpy) of the one-particle and the field scene, with Peng a and b'."""
    import torch

    from benchmarks.forward import build_scene
    from tem_core.potential import peng_coefficients
    from tem_core.structure import read_structure

    a_tab, b_tab = peng_coefficients(dtype=torch.float64)
    model = read_structure(ROOT / "data" / "6z6u.pdb.gz", dtype=torch.float32)
    one = model.positions_a.double()
    n_one = 128 if quick else 256
    one = one - one.mean(0) + torch.tensor([n_one / 2, n_one / 2, 0.0], dtype=torch.float64)
    n_field, n_part = (384, 5) if quick else (1024, 20)
    field = build_scene(n_px=n_field, n_particles=n_part, sampling_a=1.0, ice_a=500.0,
                        seed=seed).atoms  # fmt: skip
    scenes = {}
    for name, z, pos, b, n in (
        ("one particle", model.atomic_numbers, one, model.b_factors_a2, n_one),
        ("field", field.atomic_numbers, field.positions_a.double(), field.b_factors_a2, n_field),
    ):
        scenes[name] = dict(
            z=z.numpy().astype(np.int64),
            pos=pos.numpy().astype(np.float32),
            b=b.double().numpy().astype(np.float32),
            a_peng=a_tab[z].numpy().astype(np.float32),
            b_peng=(b_tab[z] + b.double()[:, None]).numpy().astype(np.float32),
            n_px=n,
        )
    return scenes


# --------------------------------------------------------------------------- workers
def worker_ours(scene: dict, out: str, threads: int) -> dict:
    import torch

    from tem_core.potential import slice_potential

    torch.set_num_threads(threads)
    z = torch.from_numpy(scene["z"])
    pos = torch.from_numpy(scene["pos"])
    b = torch.from_numpy(scene["b"])
    occ = torch.ones_like(b)
    n = scene["n_px"]
    z0, z1 = float(pos[:, 2].min()) - 10.0, float(pos[:, 2].max()) + 10.0
    weight = torch.from_numpy(_weight(n))

    def project(p):
        return slice_potential(z, p, b, occ, z0_a=z0, z1_a=z1, shape=(n, n), sampling_a=1.0,
                               periodic=False)  # fmt: skip

    def forward():
        with torch.no_grad():
            return project(pos)

    def gradient():
        p = pos.clone().requires_grad_(True)
        (project(p) * weight).sum().backward()
        return p.grad

    image = forward()
    grad = gradient()  # warm-up at full size
    np.save(out + "_image.npy", image.numpy())
    np.save(out + "_grad.npy", grad.numpy())
    return dict(forward_s=_median_time(forward), gradient_s=_median_time(gradient))


def worker_cryojax(scene: dict, out: str, threads: int) -> dict:
    import jax
    import jax.numpy as jnp
    from cryojax.simulator import (
        BasicImageConfig,
        GaussianMixtureProjection,
        GaussianMixtureVolume,
        suggest_n_spread,
    )

    n = scene["n_px"]
    # our pixel i is centred at (i + 1/2) s, cryojax's at (i - n/2) s
    shift = np.array([n / 2 + 0.5, n / 2 + 0.5, 0.0], dtype=np.float32)
    pos = jnp.asarray(scene["pos"] - shift)
    amplitudes = jnp.asarray(scene["a_peng"])
    variances = jnp.asarray(scene["b_peng"] / (8.0 * math.pi**2))
    volume = GaussianMixtureVolume(pos, amplitudes, variances)
    n_spread = suggest_n_spread(volume, 1.0)
    integrator = GaussianMixtureProjection(sampling_mode="average", n_spread=n_spread)
    config = BasicImageConfig(shape=(n, n), pixel_size=1.0, voltage_in_kilovolts=300.0)
    weight = jnp.asarray(_weight(n))

    def project(p):
        vol = GaussianMixtureVolume(p, amplitudes, variances)
        return integrator.integrate(vol, config, outputs_real_space=True)

    fwd = jax.jit(project)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(project(p) * weight)))
    image = fwd(pos).block_until_ready()
    g = grad(pos).block_until_ready()  # compilation
    np.save(out + "_image.npy", np.asarray(image))
    np.save(out + "_grad.npy", np.asarray(g))
    return dict(
        forward_s=_median_time(lambda: fwd(pos).block_until_ready()),
        gradient_s=_median_time(lambda: grad(pos).block_until_ready()),
        n_spread=list(n_spread) if isinstance(n_spread, tuple) else n_spread,
        jax=jax.__version__,
    )


def _weight(n: int) -> np.ndarray:
    """A fixed smooth weight image, so the gradient is not that of a plain sum."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    return (1.0 + 0.5 * np.sin(2 * math.pi * 3 * x) * np.cos(2 * math.pi * 2 * y)).astype(
        np.float32
    )


# --------------------------------------------------------------------------- driver
def _run(python: str, code: str, scene_file: str, name: str, out: str, threads: int) -> dict:
    cfg = dict(code=code, scene=scene_file, name=name, out=out, threads=threads)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([python, __file__, "--worker", json.dumps(cfg)], capture_output=True,
                          text=True, cwd=ROOT, env=env)  # fmt: skip
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _uptime() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="128² one particle, 384² field")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-python", default=env_python(".venv"))
    parser.add_argument("--cryojax-python", default=env_python(".venv-compare"))
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        scene = dict(np.load(cfg["scene"]))
        scene["n_px"] = int(scene["n_px"])
        fn = worker_cryojax if cfg["code"] == "cryojax" else worker_ours
        print(json.dumps(fn(scene, cfg["out"], cfg["threads"])))
        return

    load_before = _uptime()
    scenes = build_scenes(args.quick, args.seed)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scene in scenes.items():
            scene_file = str(Path(tmp) / f"{name.replace(' ', '_')}.npz")
            np.savez(scene_file, **scene)
            runs = {"tem_core": [], "cryojax": []}
            for r in range(args.rounds):
                for code, python in (("tem_core", args.ours_python),
                                     ("cryojax", args.cryojax_python)):  # fmt: skip
                    out = str(Path(tmp) / f"{code}_{name.replace(' ', '_')}_{r}")
                    runs[code].append(_run(python, code, scene_file, name, out, args.threads))
                    print(f"  {name}, round {r + 1}, {code}: {runs[code][-1]}", flush=True)
            row = {}
            for code, rs in runs.items():
                ok = [x for x in rs if "error" not in x]
                if not ok:
                    row[code] = {"error": rs[-1]["error"]}
                    continue
                row[code] = dict(
                    forward_s=statistics.median(x["forward_s"] for x in ok),
                    gradient_s=statistics.median(x["gradient_s"] for x in ok),
                    rounds=[{k: x[k] for k in ("forward_s", "gradient_s")} for x in ok],
                )
                if code == "cryojax":
                    row[code]["n_spread"] = ok[0]["n_spread"]
            try:
                prefix = f"{name.replace(' ', '_')}_0"
                ours = np.load(Path(tmp) / f"tem_core_{prefix}_image.npy").astype(np.float64)
                theirs = np.load(Path(tmp) / f"cryojax_{prefix}_image.npy").astype(np.float64)
                g_ours = np.load(Path(tmp) / f"tem_core_{prefix}_grad.npy").astype(np.float64)
                g_theirs = np.load(Path(tmp) / f"cryojax_{prefix}_grad.npy").astype(np.float64)
                row["image_correlation"] = float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
                row["gradient_correlation"] = float(
                    np.corrcoef(g_ours.ravel(), g_theirs.ravel())[0, 1]
                )
            except (OSError, ValueError) as exc:
                row["image_correlation"] = f"not compared: {exc}"
            row["n_atoms"] = int(scene["z"].shape[0])
            row["n_px"] = int(scene["n_px"])
            results[name] = row

    load_after = _uptime()
    print(f"\nprojection approximation, float32, {args.threads} threads; load average "
          f"before {load_before}, after {load_after}")  # fmt: skip
    header = (f"{'scene':<14} {'atoms':>8} {'grid':>6} {'code':<9} {'forward [s]':>11} "
              f"{'gradient [s]':>12} {'grad/fwd':>8}")  # fmt: skip
    print(header + "\n" + "-" * len(header))
    for name, row in results.items():
        for code in ("tem_core", "cryojax"):
            r = row[code]
            if "error" in r:
                print(f"{name:<14} {code}: failed: {r['error']}")
                continue
            print(f"{name:<14} {row['n_atoms']:>8,} {row['n_px']:>5}² {code:<9} "
                  f"{r['forward_s']:>11.3f} {r['gradient_s']:>12.3f} "
                  f"{r['gradient_s'] / r['forward_s']:>8.2f}")  # fmt: skip
        if "error" not in row["tem_core"] and "error" not in row["cryojax"]:
            fwd = row["cryojax"]["forward_s"] / row["tem_core"]["forward_s"]
            grad = row["cryojax"]["gradient_s"] / row["tem_core"]["gradient_s"]
            row["speedup_forward"], row["speedup_gradient"] = fwd, grad
            print(f"{'':<14} cryojax / tem_core: forward {fwd:.2f}×, gradient {grad:.2f}×; "
                  f"image correlation {row['image_correlation']}, gradient correlation "
                  f"{row.get('gradient_correlation')}")  # fmt: skip
    if args.json:
        payload = dict(
            threads=args.threads,
            rounds=args.rounds,
            quick=args.quick,
            load_before=load_before,
            load_after=load_after,
            results=results,
        )
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
