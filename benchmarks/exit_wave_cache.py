"""One gradient step of an optics/detector fit, with and without the exit-wave cache.

Scene: one apoferritin (6Z6U) in 300 Å of ice, 256² at 1 Å, 300 kV, multislice with 20 Å
slices, float32. The step: expected counts for a defocus and an MTF width given as tensors,
a Poisson negative log-likelihood against fixed counts, ``backward()``. Without the cache
every step recomputes the exit wave; with :class:`tem_core.simulate.ExitWaveCache` only the
first does. Median of ``--repeats`` steps (after one warm-up step), both in this process;
the load average is printed with them.

Run::

    .venv/bin/python benchmarks/exit_wave_cache.py [--repeats 5] [--n-px 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from tem_core.detector import Detector
    from tem_core.fitting import poisson_nll
    from tem_core.optics import Microscope
    from tem_core.potential import PotentialSettings
    from tem_core.simulate import ExitWaveCache, Imaging, micrograph
    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import read_structure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-px", type=int, default=256)
    args = parser.parse_args()
    n = args.n_px
    model = read_structure(ROOT / "data" / "6z6u.pdb.gz", keep_waters=False)
    specimen = build_specimen(model, 1, extent_a=(float(n), float(n)),
                              ice=IceSlab(thickness_a=300.0),
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    settings = PotentialSettings(shape=(n, n), sampling_a=1.0, slice_thickness_a=20.0)
    scope = Microscope(energy_ev=300e3)

    def expected(defocus, alpha, cache):
        return micrograph(specimen, potential=settings, microscope=scope,
                          detector=Detector(alpha=alpha, mtf_after_noise=False),
                          imaging=Imaging(defocus_a=defocus, dose_e_per_a2=40.0),
                          exit_wave_cache=cache).expected  # fmt: skip

    with torch.no_grad():
        counts = torch.poisson(expected(15000.0, 0.05, None), torch.Generator().manual_seed(1))

    def step(cache):
        defocus = torch.tensor(14000.0, requires_grad=True)
        alpha = torch.tensor(0.04, requires_grad=True)
        poisson_nll(counts, expected(defocus, alpha, cache)).backward()
        return defocus.grad, alpha.grad

    rows = {}
    for label, cache in (("without cache", None), ("with ExitWaveCache", ExitWaveCache())):
        step(cache)  # warm-up (and, with the cache, the one exit wave it computes)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            grads = step(cache)
            times.append(time.perf_counter() - t0)
        rows[label] = (statistics.median(times), grads)
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"one apoferritin, {n}² at 1 Å, 300 Å ice, defocus + MTF gradient step; "
          f"{torch.get_num_threads()} threads, load average {load}")  # fmt: skip
    for label, (t, grads) in rows.items():
        print(f"  {label:<20} {t:7.3f} s   d/d defocus {float(grads[0]):+.4e}, "
              f"d/d alpha {float(grads[1]):+.4e}")  # fmt: skip
    speed = rows["without cache"][0] / rows["with ExitWaveCache"][0]
    print(f"  speed-up {speed:.1f}× (same gradients)")


if __name__ == "__main__":
    main()
