"""Direct volume rendering speed: a 512² image of a 256³ volume (target ≤ 1 s on 2 CPU cores).

    .venv/bin/python benchmarks/render.py [--quick] [--torch] [--json PATH]

The volume is smoothed random noise (a cloud of blobs at every scale, about a third of the
rays saturating), rendered with emission-absorption (orthographic and perspective, a
threshold at 0, early ray termination at T < 1e-3, one sample per voxel) and as a
maximum-intensity projection, by the Taichi kernel; ``--torch`` also times the
differentiable torch twin. Reported: wall and process CPU time (all threads) of each
render after one warm-up (kernel compilation), the machine load and torch/Taichi threads.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tem_core.render import Camera, render, transfer_function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128² image of a 64³ volume")
    parser.add_argument("--torch", action="store_true", help="also time the torch twin")
    parser.add_argument(
        "--grad",
        action="store_true",
        help="also time forward + backward (volume and transfer tables), Taichi vs torch twin",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    n, px = (64, 128) if args.quick else (256, 512)
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand((1, 1, n, n, n), generator=gen)
    vol = torch.nn.functional.avg_pool3d(noise, 9, 1, 4)[0, 0]
    vol = (vol - vol.mean()) / vol.std()
    tf = transfer_function((-2.0, 4.0), max_opacity=0.05)
    cases = [  # (mode, projection, zoom): zoom 1 fits the bounding sphere, 1.5 fills the frame
        ("emission-absorption", "orthographic", 1.0),
        ("emission-absorption", "orthographic", 1.5),
        ("emission-absorption", "perspective", 1.0),
        ("mip", "orthographic", 1.0),
        ("mip", "orthographic", 1.5),
    ]
    backends = ["taichi", "torch"] if args.torch else ["taichi"]
    rows = []
    for backend in backends:
        for mode, projection, zoom in cases:
            cam = Camera(
                image_shape=(px, px),
                azimuth_rad=0.5,
                elevation_rad=0.3,
                projection=projection,
                zoom=zoom,
            )
            kw = dict(mode=mode, threshold=0.0, backend=backend)
            render(vol, Camera(image_shape=(8, 8), projection=projection), tf, **kw)  # compile
            walls, cpus = [], []
            for _ in range(args.repeats if backend == "taichi" else 1):
                w0, c0 = time.perf_counter(), time.process_time()
                image = render(vol, cam, tf, **kw)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            rows.append(
                dict(
                    backend=backend,
                    mode=mode,
                    projection=projection,
                    zoom=zoom,
                    wall_s=min(walls),
                    cpu_s=min(cpus),
                    mean_alpha=float(image[..., 3].detach().mean()),
                )
            )
    if args.grad:
        cam = Camera(image_shape=(px, px), azimuth_rad=0.5, elevation_rad=0.3)
        for backend in ("taichi", "torch"):
            walls, cpus = [], []
            for _ in range(args.repeats if backend == "taichi" else 1):
                leaf = vol.clone().requires_grad_(True)
                tf_g = transfer_function((-2.0, 4.0), max_opacity=0.05)
                tf_g.opacity.requires_grad_(True)
                tf_g.color.requires_grad_(True)
                w0, c0 = time.perf_counter(), time.process_time()
                image = render(leaf, cam, tf_g, threshold=0.0, backend=backend)
                image.sum().backward()
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            rows.append(
                dict(
                    backend=backend,
                    mode="EA fwd+grad",
                    projection="orthographic",
                    zoom=1.0,
                    wall_s=min(walls),
                    cpu_s=min(cpus),
                    mean_alpha=float(image[..., 3].detach().mean()),
                )
            )
    load = os.getloadavg()
    print(
        f"{px}² image of a {n}³ volume; torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"{'backend':>7} {'mode':>20} {'camera':>12} {'zoom':>5} {'wall [s]':>9} {'CPU [s]':>8} "
        f"{'CPU/2 [s]':>9}"
    )
    for r in rows:
        print(
            f"{r['backend']:>7} {r['mode']:>20} {r['projection']:>12} {r['zoom']:5.1f} "
            f"{r['wall_s']:9.3f} {r['cpu_s']:8.3f} {r['cpu_s'] / 2:9.3f}"
        )
    print("CPU/2: the wall time on 2 idle cores if both are kept busy (compare with load).")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                dict(
                    command="benchmarks/render.py"
                    + (" --quick" if args.quick else "")
                    + (" --grad" if args.grad else ""),
                    volume=n,
                    image=px,
                    load_average=list(load),
                    cpus=os.cpu_count(),
                    rows=rows,
                ),
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
