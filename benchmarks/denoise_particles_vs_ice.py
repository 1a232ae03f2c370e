"""Where the denoising network gains: on the particles or on the ice, per total count.

Held-out simulated scenes (:func:`tem_core.denoise.learned.random_scene`, seed 777: 16 TMV
segments scenes, 4 human apoferritin, 2 horse apoferritin, 2 Zika; never the benchmark's
scene or its tuning image), exact counts ``S ~ Poisson(N · I)`` at summed electrons per
pixel ``N`` (one draw per scene, seed 5). For the Wiener pilot, the network (1 and 2
symmetries), the default SURE blend and the blends with the oracle weight (per image,
minimising the error on the whole image or on the particles), the gain over the Wiener
pilot in dB of the mean squared error after the MTF, on the particles (7 × 7 mean of
``|I − 1|`` above 20 % of its maximum, dilated 4 px: ~8 % of the pixels) and on the whole
image; and the mean blend weights (SURE's, the two oracles').

    PYTHONPATH=$PWD .venv/bin/python benchmarks/denoise_particles_vs_ice.py \
        [--weights FILE] [--scenes 16] [--cache DIR] [--out JSON]

One thread; ~5 min on 2 loaded cores. The scenes are cached in ``--cache`` if given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from train_denoiser import cached_stack  # benchmarks/ on sys.path (run as a script)

from tem_core._fft import fft2, ifft2
from tem_core.denoise.blend import sure_blend
from tem_core.denoise.learned import load_denoiser, network_denoise, random_scene, wiener_pilot
from tem_core.denoise.scene import TMV_DETECTOR

ROOT = Path(__file__).resolve().parents[1]
SCENES = (("2om3.pdb.gz", 16), ("6z6u.pdb.gz", 4), ("4v1w.cif.gz", 2), ("5ire.pdb.gz", 2))
ELECTRONS = (50, 100, 250, 500, 750, 1000, 1500, 2500, 5000, 10000, 25000)


def scenes(cache: str | None) -> torch.Tensor:
    def build() -> torch.Tensor:
        g = torch.Generator().manual_seed(777)
        return torch.stack(
            [
                random_scene(ROOT / "data" / name, generator=g)
                for name, k in SCENES
                for _ in range(k)
            ]
        )

    return cached_stack(Path(cache) / "val_24_777.pt" if cache else None, build)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="network weights (default: the shipped ones)")
    parser.add_argument("--scenes", type=int, default=16, help="first K of the 24 scenes")
    parser.add_argument("--cache", help="folder caching the 24 noise-free scenes (minutes)")
    parser.add_argument("--out", help="JSON file for the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)  # the pixel-size warning (none given)
    imgs = scenes(args.cache).float()[: args.scenes]
    model = load_denoiser(args.weights)
    mtf = TMV_DETECTOR.mtf(tuple(imgs.shape[-2:]), dtype=torch.float32)

    def blur(x):
        return ifft2(fft2(x) * mtf).real

    local = F.avg_pool2d((imgs - 1).abs()[:, None], 7, 1, 3)[:, 0]
    mask = local > 0.2 * local.amax(dim=(-2, -1), keepdim=True)
    mask = (F.max_pool2d(mask[:, None].float(), 9, 1, 4)[:, 0] > 0).float()
    g = torch.Generator().manual_seed(5)
    rows = []
    for n_e in ELECTRONS:
        t0 = time.perf_counter()
        rate = imgs * n_e
        counts = torch.poisson(rate.double(), generator=g).float()
        truth = blur(rate)
        est = {
            "wiener": wiener_pilot(counts),
            "network_sym1": network_denoise(counts, model=model, symmetries=1),
            "network_sym2": network_denoise(counts, model=model, symmetries=2),
        }
        est["blend"], a_sure = sure_blend(
            counts,
            lambda s: network_denoise(s, model=model, symmetries=2),
            wiener_pilot,
            mtf=mtf,
            generator=torch.Generator().manual_seed(0),
        )
        d, r = blur(est["network_sym2"] - est["wiener"]), blur(est["wiener"]) - truth
        weights = {
            "oracle_particles": (-(d * r * mask).sum((-2, -1)) / (d * d * mask).sum((-2, -1))),
            "oracle_image": (-(d * r).sum((-2, -1)) / (d * d).sum((-2, -1))),
        }
        for name, a in weights.items():
            w = a.clamp(0, 1)[:, None, None]
            est[f"blend_{name}"] = w * est["network_sym2"] + (1 - w) * est["wiener"]
        err = {}
        for name, e in est.items():
            sq = (blur(e) - truth) ** 2
            err[name] = (float((sq * mask).sum() / mask.sum()), float(sq.mean()))
        base = err["wiener"]
        row = {
            "electrons_per_px": n_e,
            "gain_particles_db": {
                k: 10 * math.log10(base[0] / v[0]) for k, v in err.items() if k != "wiener"
            },
            "gain_image_db": {
                k: 10 * math.log10(base[1] / v[1]) for k, v in err.items() if k != "wiener"
            },
            "weight_sure": float(a_sure.mean()),
            **{f"weight_{k}": float(a.clamp(0, 1).mean()) for k, a in weights.items()},
        }
        rows.append(row)
        print(
            f"N {n_e:>6} e/px ({time.perf_counter() - t0:.0f} s): weights SURE "
            f"{row['weight_sure']:.2f}, oracle particles {row['weight_oracle_particles']:.2f}, "
            f"image {row['weight_oracle_image']:.2f} | gain over Wiener particles/image [dB] "
            + " ".join(
                f"{k} {row['gain_particles_db'][k]:+.2f}/{row['gain_image_db'][k]:+.2f}"
                for k in row["gain_particles_db"]
            ),
            flush=True,
        )
    if args.out:
        out = {
            "command": " ".join(sys.argv),
            "weights": args.weights or "shipped (tem_core/data/denoise_unet.pt)",
            "scenes": args.scenes,
            "particle_fraction": float(mask.mean()),
            "load": os.getloadavg()[0],
            "rows": rows,
        }
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
