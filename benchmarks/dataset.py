"""Dataset throughput: items per minute with a plain loop, and on a local Dask cluster.

The dataset is ``data/example_dataset.toml`` (crambins in thin ice, drawn voltages, defoci,
doses, cameras) at a larger grid and more items. Every case generates the same items into a
fresh folder, one after another in this run:

* ``loop``: :func:`tem_core.dataset.generate_dataset` with ``workers=0``: one process, torch
  and Taichi use every core;
* ``dask 1 worker``, ``dask 2 workers``: a :class:`distributed.LocalCluster` of worker
  processes with ``cores // workers`` threads each, started by ``generate_dataset`` (the wall
  time includes starting the cluster and each worker's imports and Taichi compilation, as a
  user running ``tem-book generate`` pays them);
* ``--device cuda``: the loop and one GPU worker instead.

Each case also reports its steady rate, items per minute between the first and the last
finished item (start-up excluded), and whether its metadata table (which holds every image's
data hash) equals the loop's: the same items bit for bit.

    .venv/bin/python benchmarks/dataset.py [--quick] [--items N] [--n-px N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example_dataset.toml"


def _spec(items: int, n_px: int, device: str):
    from tem_core.dataset import parse_dataset_spec

    raw = tomllib.loads(EXAMPLE.read_text())
    raw["dataset"].update(items=items, device=device)
    raw["grid"]["shape_px"] = [n_px, n_px]
    raw["specimen"]["ice_thickness_nm"] = {"uniform": [15.0, 25.0]}
    raw["structures"][0]["copies"] = {"int_uniform": [n_px // 32, n_px // 16]}
    return parse_dataset_spec(raw, source=EXAMPLE)


def _case(spec, out: Path, workers: int) -> dict:
    from tem_core.dataset import generate_dataset

    finished: list[float] = []  # when each item's record was written
    t0 = time.perf_counter()
    report = generate_dataset(spec, out, workers=workers, progress=False, log=lambda m: None)
    wall = time.perf_counter() - t0
    for rec in (out / "records").glob("*.json"):
        finished.append(rec.stat().st_mtime)
    finished.sort()
    steady = None
    if len(finished) > 2:
        steady = 60.0 * (len(finished) - 1) / max(finished[-1] - finished[0], 1e-9)
    return {
        "wall": wall,
        "rate": 60.0 * len(report.completed) / wall,
        "steady": steady,
        "failed": len(report.failed),
        "table": (out / "metadata.csv").read_text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 items of 96² px")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--n-px", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    items = args.items or (8 if args.quick else 24)
    n_px = args.n_px or (96 if args.quick else 192)
    spec = _spec(items, n_px, args.device)
    cases = [("loop", 0)]
    cases += (
        [("dask 1 GPU worker", 1)]
        if args.device == "cuda"
        else [("dask 1 worker", 1), ("dask 2 workers", 2)]
    )
    cores = len(os.sched_getaffinity(0))
    print(
        f"{items} items of {n_px}² px (data/example_dataset.toml, crambins in 15-25 nm ice), "
        f"{cores} cores, device {args.device}; load before: {os.getloadavg()[0]:.2f}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="tem-dataset-bench-") as tmp:
        for name, workers in cases:
            out = Path(tmp) / name.replace(" ", "_")
            results[name] = _case(spec, out, workers)
            shutil.rmtree(out)
    head = (
        f"{'case':<20} {'wall [s]':>9} {'items/min':>10} {'steady items/min':>17} "
        f"{'same items as loop':>19} {'failed':>6}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        steady = f"{r['steady']:.1f}" if r["steady"] is not None else "-"
        same = "yes" if r["table"] == results["loop"]["table"] else "NO"
        print(
            f"{name:<20} {r['wall']:>9.1f} {r['rate']:>10.1f} {steady:>17} {same:>19} "
            f"{r['failed']:>6}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average; other processes share the cores)")


if __name__ == "__main__":
    main()
