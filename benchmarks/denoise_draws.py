"""How much of the denoising table is the noise draw: every setting over several noise draws.

``benchmarks/denoise.py`` scores each dose × n setting on one noise draw of the TMV scene
(seed ``1000 · dose + n``), and its targets are read from the mean over the five ``n`` per
dose. The particle-window PSNR of a denoised image is dominated by the residual
low-frequency noise inside three 48² px windows, which has few degrees of freedom: two
draws of the same setting can differ by more than 1 dB. This script repeats each setting
over ``--draws K`` noise draws (draw 0 is the benchmark's own seed, draw k > 0 the seed
``1000 · dose + n + 100003 · k``) for the methods the Topaz target concerns: the mean of
the projections, the Wiener prior alone, the default network (``denoise_poisson(
regulariser="network")``) and the pretrained Topaz U-Net on the mean (comparison venv), and
prints per dose the mean over n and draws of network − Topaz with its standard error over
draws, and per setting the draw-averaged gain.

    .venv/bin/python benchmarks/denoise_draws.py [--draws 6] [--doses 100,200,300]
        [--threads 1] [--topaz-python .venv-compare/bin/python]
        [--json benchmarks/results/denoise_draws.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from denoise import (
    DOSES,
    N_PROJ,
    ROOT,
    metrics,
    projections,
    run_topaz,
    scene,
)

from tem_core.denoise import PoissonSettings, denoise_poisson
from tem_core.denoise.scene import TMV_DETECTOR

#: seed offset between draws (a prime, so no draw repeats another setting's seed)
DRAW_STRIDE = 100_003
METHODS = {
    "wiener": PoissonSettings(regulariser="wiener"),
    "network": PoissonSettings(regulariser="network"),
}


def seed_of(dose: int, n: int, draw: int) -> int:
    """Noise seed of one draw; draw 0 is ``benchmarks/denoise.py``'s own seed."""
    return 1000 * dose + n + DRAW_STRIDE * draw


def run(doses, ns, draws: int, topaz_python: str | None) -> dict:
    truth_i = scene()
    scores, means = {}, {}
    for dose in doses:
        for n in ns:
            for k in range(draws):
                noisy, truth = projections(truth_i, dose, n, seed_of(dose, n, k))
                row = {"mean": metrics(noisy.mean(0), truth)["psnr_particles"]}
                for name, settings in METHODS.items():
                    out = denoise_poisson(noisy.float(), detector=TMV_DETECTOR, settings=settings)
                    row[name] = metrics(out.denoised.double(), truth)["psnr_particles"]
                scores[(dose, n, k)] = row
                means[f"{dose}_{n}_{k}"] = (noisy.mean(0), truth)
        print(f"dose {dose} e/nm²: {len(ns) * draws} noisy stacks denoised", flush=True)
    topaz = run_topaz({key: m for key, (m, _) in means.items()}, topaz_python)
    for key, (_, truth) in means.items():
        d, n, k = (int(v) for v in key.split("_"))
        scores[(d, n, k)]["topaz"] = (
            metrics(topaz[key], truth)["psnr_particles"] if key in topaz else float("nan")
        )
    return scores


def summarise(scores: dict, doses, ns, draws: int) -> dict:
    per_dose, per_setting = {}, {}
    for dose in doses:
        # per draw: the benchmark's statistic (mean over n of network − Topaz)
        by_draw = {
            m: np.array(
                [
                    np.mean([scores[(dose, n, k)][m] - scores[(dose, n, k)]["topaz"] for n in ns])
                    for k in range(draws)
                ]
            )
            for m in ("network", "wiener", "mean")
        }
        per_dose[dose] = {
            m: {
                "mean": float(v.mean()),
                "se": float(v.std(ddof=1) / np.sqrt(draws)) if draws > 1 else float("nan"),
                "per_draw": [float(x) for x in v],
            }
            for m, v in by_draw.items()
        }
        for n in ns:
            gains = [
                scores[(dose, n, k)]["network"] - scores[(dose, n, k)]["topaz"]
                for k in range(draws)
            ]
            above = [
                scores[(dose, n, k)]["network"] - scores[(dose, n, k)]["mean"] for k in range(draws)
            ]
            per_setting[f"{dose}_{n}"] = {
                "network_minus_topaz": float(np.mean(gains)),
                "sd_over_draws": float(np.std(gains, ddof=1)) if draws > 1 else float("nan"),
                "network_minus_mean_min": float(np.min(above)),
            }
    return {"per_dose": per_dose, "per_setting": per_setting}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=6, help="noise draws per setting")
    parser.add_argument(
        "--doses", default=",".join(str(d) for d in DOSES), help="e/nm², comma-separated"
    )
    parser.add_argument(
        "--ns", default=",".join(str(n) for n in N_PROJ), help="projections, comma-separated"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--topaz-python", default=str(ROOT / ".venv-compare" / "bin" / "python"))
    parser.add_argument("--json", help="write the scores and the summary here")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    torch.set_num_threads(args.threads)
    doses = [int(d) for d in args.doses.split(",")]
    ns = [int(n) for n in args.ns.split(",")]
    t0 = time.perf_counter()
    scores = run(doses, ns, args.draws, args.topaz_python)
    summary = summarise(scores, doses, ns, args.draws)
    print(
        "\nnetwork − Topaz, particle-window PSNR [dB]: mean over n, then over"
        f" {args.draws} draws ± SE"
    )
    print("dose e/nm² | network | Wiener | mean of projections | per draw (network)")
    for dose, s in summary["per_dose"].items():
        net, wie, mea = s["network"], s["wiener"], s["mean"]
        draws_txt = " ".join(f"{x:+.2f}" for x in net["per_draw"])
        print(
            f"{dose:>10} | {net['mean']:+.2f} ± {net['se']:.2f}"
            f" | {wie['mean']:+.2f} ± {wie['se']:.2f} | {mea['mean']:+.2f} | {draws_txt}"
        )
    print("\nper setting, draw-averaged network − Topaz [dB] (sd over draws):")
    for dose in doses:
        cells = [summary["per_setting"][f"{dose}_{n}"] for n in ns]
        print(
            f"{dose:>5}: "
            + "  ".join(
                f"{c['network_minus_topaz']:+.2f} ({c['sd_over_draws']:.2f})" for c in cells
            )
        )
    worst = min(c["network_minus_mean_min"] for c in summary["per_setting"].values())
    print(f"network − mean of projections, worst single draw: {worst:+.2f} dB")
    print(f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}")
    if args.json:
        record = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
            "command": "benchmarks/denoise_draws.py "
            + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json"
            ),
            "draw_stride": DRAW_STRIDE,
            "summary": summary,
            "scores": {f"{d}_{n}_{k}": v for (d, n, k), v in scores.items()},
        }
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
