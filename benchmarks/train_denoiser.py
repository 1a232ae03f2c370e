"""Reproduce the denoising network's weights (``tem_core/data/denoise_unet.pt``).

1. Noise-free training images from the package's own simulator
   (:func:`tem_core.denoise.learned.random_scene`): random numbers, positions and
   orientations of TMV segments (2OM3), human and horse apoferritin (6Z6U, 4V1W) and Zika
   virions (5IRE) in ice 30-80 nm thick at 3-7 µm underfocus, 200 kV, 5 Å pixels, 192² px
   each. The benchmark's scene (three TMV segments at the paper's fixed poses, 5 µm, 50 nm)
   is never used: its layout is held out. Cached in ``--cache`` (they take minutes).
2. :func:`tem_core.denoise.learned.train_denoiser` (seeded, one thread): crops, exact
   Poisson counts at a random total dose on the fly, MSE after the MTF.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/train_denoiser.py \
        --cache /work/cache/denoise_train --out tem_core/data/denoise_unet.pt

Deterministic for a given seed and thread count (``--threads``, default 1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import torch

from tem_core.denoise.learned import TrainSettings, random_scene, train_denoiser
from tem_core.denoise.scene import TMV_DETECTOR

ROOT = Path(__file__).resolve().parents[1]
#: structures and how many training images of each
STRUCTURES = (
    ("2om3.pdb.gz", 0.5),
    ("6z6u.pdb.gz", 0.2),
    ("4v1w.cif.gz", 0.15),
    ("5ire.pdb.gz", 0.15),
)


def cached_stack(path: Path | None, build) -> torch.Tensor:
    """The image stack saved at ``path`` if it exists, else ``build()`` (saved there if given)."""
    if path is not None and path.exists():
        return torch.load(path)
    stack = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(stack, path)
    return stack


def training_images(n_images: int, seed: int, cache: str | None) -> torch.Tensor:
    def build() -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        images = []
        t0 = time.perf_counter()
        for name, share in STRUCTURES:
            for _ in range(round(share * n_images)):
                images.append(random_scene(ROOT / "data" / name, generator=g))
                print(f"{len(images)} scenes, {time.perf_counter() - t0:.0f} s", flush=True)
        return torch.stack(images)

    return cached_stack(Path(cache) / f"scenes_{n_images}_{seed}.pt" if cache else None, build)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--steps", type=int, default=TrainSettings().steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pilot", action="store_true", help="network without the Wiener input")
    parser.add_argument(
        "--particle-weight",
        type=float,
        default=TrainSettings().particle_weight,
        help="extra loss weight on the particles (TrainSettings.particle_weight)",
    )
    parser.add_argument(
        "--focus-electrons",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="summed electrons per pixel [e/px] drawn by a share of the crops "
        "(TrainSettings.focus_electrons)",
    )
    parser.add_argument(
        "--focus-share",
        type=float,
        default=TrainSettings().focus_share,
        help="share of the crops drawing from --focus-electrons (TrainSettings.focus_share)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", help="folder for the noise-free training images")
    parser.add_argument("--out", help="weights file to write")
    parser.add_argument("--scenes-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = training_images(args.images, args.seed, args.cache)
    if args.scenes_only:
        return
    settings = TrainSettings(
        steps=args.steps,
        seed=args.seed,
        pilot=not args.no_pilot,
        particle_weight=args.particle_weight,
        focus_electrons=tuple(args.focus_electrons) if args.focus_electrons else None,
        focus_share=args.focus_share,
    )
    t0 = time.perf_counter()

    recent: list[float] = []

    def report(step, loss, model):
        recent.append(loss)
        if (step + 1) % 100 == 0:
            print(
                f"step {step + 1}: mean loss {sum(recent[-100:]) / 100:.4f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        if args.out and (step + 1) % 500 == 0:  # a checkpoint to evaluate while training
            torch.save(
                {
                    "channels": list(settings.channels),
                    "in_channels": model.in_channels,
                    "state": model.state_dict(),
                },
                Path(args.out).with_suffix(f".step{step + 1}.pt"),
            )

    model, losses = train_denoiser(
        images.float(), detector=TMV_DETECTOR, settings=settings, callback=report
    )
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "channels": list(settings.channels),
        "in_channels": model.in_channels,
        "state": model.state_dict(),
        "settings": repr(settings),
        "images": args.images,
        "commit": commit,
        "final_loss_mean_100": sum(losses[-100:]) / min(len(losses), 100),
        "seconds": time.perf_counter() - t0,
        "threads": args.threads,
        "load": os.getloadavg()[0],
    }
    if args.out:
        torch.save(meta, args.out)
        print(
            f"wrote {args.out}: mean loss of the last 100 steps {meta['final_loss_mean_100']:.4f}"
        )


if __name__ == "__main__":
    main()
