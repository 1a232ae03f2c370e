"""Memory preflight: estimated vs measured peak memory per stage, dtype and requires_grad.

Each case runs in a fresh Python process: a warm-up on a 64 x 64 grid (imports, Taichi,
tables), the case's specimen built (the stage's input, outside the measurement), then the
case. On the CPU the measured peak is the rise of the resident set
(VmHWM after the case minus VmRSS before it, reset through /proc/self/clear_refs); on CUDA
it is ``torch.cuda.max_memory_allocated``. The estimate is what the stage's preflight
(:mod:`tem_core.memory`) compares with the available memory. Target: measured / estimate
in [1/1.5, 1.5] for every case.

Two allocator settings are measured on the CPU, each in its own process:

* ``fixed``: ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc), so every array of 64 kB or more is
  its own mapping, returned to the system when freed: the resident set is then the memory
  the arrays need (it equals the peak of live torch allocations that ``--explain``
  reports, to within 1 %).
* ``default``: glibc's default, whose mmap threshold grows with each freed block up to
  32 MB; smaller arrays then come from the heap, which keeps freed blocks resident, so the
  peak also contains the allocator's retained memory (it varies between runs of the same
  case). Arrays of 32 MB or more (2048² complex128, 4096² float32) are always mapped.

``--explain STAGE:NY[xNX]:DTYPE:GRAD[:VARIANT]`` runs one case under the torch profiler and
prints the arrays alive at the peak with the line that allocated them: where the bytes go.

    .venv/bin/python benchmarks/memory.py [--quick] [--sizes 512,1024,2048] [--device cpu]
    .venv/bin/python benchmarks/memory.py --variants     # other configurations and shapes
    .venv/bin/python benchmarks/memory.py --explain micrograph:512:float64:0
    .venv/bin/python benchmarks/memory.py --cost micrograph:1024:float32:1,...  # release cost
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ctf", "mtf", "slice_potential", "micrograph")
# also "tilt_series" (three tilts at -0.6, 0, 0.6 rad, no output files) in --variants
# micrograph configurations: (ice thickness [Å], hole, solvent, energy filter, ice field,
# method, camera) -- "slab" is the main table's
VARIANTS = {
    "slab": dict(ice_a=100.0),
    "thick": dict(ice_a=600.0),
    "hole": dict(ice_a=200.0, hole=True),
    "meniscus": dict(ice_a=200.0, hole=True, meniscus=True),
    "vacuum": dict(ice_a=100.0, solvent=False, energy_filter=True),
    "field": dict(ice_a=100.0, ice_field=True),
    "projection": dict(ice_a=100.0, method="projection"),
    "camera": dict(ice_a=100.0, camera="k2_300kv"),
    "tilted": dict(ice_a=200.0, tilt_rad=0.9, axis_rad=0.3),
    # many atoms: 5 or 20 apoferritins (6Z6U, 32,618 atoms each) in 500 Å of ice
    "apo5": dict(ice_a=500.0, model="6z6u.pdb.gz", copies=5),
    "apo20": dict(ice_a=500.0, model="6z6u.pdb.gz", copies=20),
    "apo20proj": dict(ice_a=500.0, model="6z6u.pdb.gz", copies=20, method="projection"),
}
# (case, why) for --variants: other configurations, non-square and larger grids
VARIANT_CASES = [
    "micrograph:768x1280:float32:0:slab",
    "micrograph:1536:float32:0:slab",
    "micrograph:3072x2048:float32:0:slab",
    "micrograph:4096:float32:0:slab",
    "micrograph:1024:float32:1:thick",
    "micrograph:1024:float64:1:thick",
    "micrograph:1024:float32:0:hole",
    "micrograph:1024:float64:0:hole",
    "micrograph:1024:float32:1:hole",
    "micrograph:1024:float32:0:meniscus",
    "micrograph:1024:float32:0:vacuum",
    "micrograph:1024:float64:1:vacuum",
    "micrograph:1024:float32:0:field",
    "micrograph:1024:float64:0:field",
    "micrograph:1024:float32:0:projection",
    "micrograph:1024:float32:1:projection",
    "micrograph:1024:float32:0:camera",
    "mtf:1024:float32:0:camera",
    "ctf:768x1280:float64:0:slab",
    "mtf:3072x2048:float32:0:slab",
    "slice_potential:1536:float64:1:slab",
    "micrograph:1024:float32:0:tilted",
    "micrograph:1024:float32:1:tilted",
    "tilt_series:1024:float32:0:slab",
    "tilt_series:1024:float64:0:hole",
    "micrograph:1024:float32:0:apo20",
    "micrograph:1024:float64:0:apo5",
    "micrograph:1024:float32:1:apo5",
    "micrograph:1024:float32:0:apo20proj",
]
ALLOCATORS = {"fixed": {"MALLOC_MMAP_THRESHOLD_": "65536"}, "default": {}}


def _hold_free_heap() -> list:
    """Return the warm-up's free heap pages to the system and hold its free chunks.

    A Taichi kernel compiled in this process (offline-cache miss) leaves tens of MB of freed
    blocks in the main malloc arena; glibc would serve the case's arrays from them (the mmap
    threshold only applies when no free chunk fits), so the resident set would not follow the
    arrays. ``malloc_trim(0)`` un-maps the free pages; blocks of the free bytes are then
    allocated (never written, so not resident) and held until the case is done, so that the
    case's arrays are mapped afresh, as without the compilation. glibc only; else nothing.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)

        class _Info(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]  # fmt: skip

        libc.mallinfo2.restype = _Info
        libc.malloc.restype = ctypes.c_void_p
        held, size = [], 1 << 20
        while size >= 4096:
            free = libc.mallinfo2().fordblks
            while free >= size:
                ptr = libc.malloc(size - 64)
                if not ptr:
                    break
                held.append(ptr)
                after = libc.mallinfo2().fordblks
                if after >= free:  # came from a fresh mapping: the free chunks are too small
                    libc.free(ctypes.c_void_p(held.pop()))
                    break
                free = after
            size //= 2
        return [libc, held]
    except (OSError, AttributeError):
        return []


def _release(held: list) -> None:
    """Free the blocks of :func:`_hold_free_heap`."""
    import ctypes

    if held:
        libc, blocks = held
        for ptr in blocks:
            libc.free(ctypes.c_void_p(ptr))


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _parse(case: str):
    parts = case.split(":")
    stage, size, dtype, grad = parts[:4]
    variant = parts[4] if len(parts) > 4 else "slab"
    ny, _, nx = size.partition("x")
    return stage, (int(ny), int(nx or ny)), dtype, grad == "1", variant


def _runner(stage: str, dtype_name: str, grad: bool, device: str, variant: str):
    """``(run(shape) -> n_slices, estimate(shape, n_slices) -> bytes)`` for one case."""
    import torch

    from tem_core import memory
    from tem_core.detector import Detector
    from tem_core.optics import Microscope, ctf
    from tem_core.potential import (
        IceStructure,
        PotentialSettings,
        slice_edges_a,
        slice_potential,
    )
    from tem_core.simulate import (
        Imaging,
        TiltScheme,
        micrograph,
        micrograph_memory_bytes,
        tilt_series,
    )
    from tem_core.specimen import IceSlab, build_specimen, tilt_specimen
    from tem_core.structure import read_structure

    warnings.simplefilter("ignore")
    v = VARIANTS[variant]
    dtype = getattr(torch, dtype_name)
    dev = torch.device(device)
    crambin = read_structure(ROOT / "data" / "1crn.pdb.gz").centered().to(device=dev, dtype=dtype)
    model = crambin
    if "model" in v:
        model = read_structure(ROOT / "data" / v["model"]).centered().to(device=dev, dtype=dtype)
    scope = Microscope(energy_ev=300e3, energy_filter=v.get("energy_filter", False))
    detector = Detector(mtf_camera=v["camera"]) if v.get("camera") else Detector()
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    state = {}

    def setup(shape):
        ny, nx = shape
        hole = 0.6 * min(ny, nx) if v.get("hole") else None
        ice = IceSlab(
            thickness_a=v["ice_a"], hole_diameter_a=hole,
            edge_thickness_a=1.5 * v["ice_a"] if v.get("meniscus") else None,
        )  # fmt: skip
        warm_up = ny * nx <= 64 * 64  # _case's warm-up: one crambin (same code paths)
        specimen = build_specimen(
            crambin if warm_up else model, 1 if warm_up else v.get("copies", 1),
            extent_a=(float(nx), float(ny)), ice=ice,
            generator=torch.Generator(device=dev).manual_seed(1),
        )  # fmt: skip
        if v.get("tilt_rad"):
            specimen = tilt_specimen(
                specimen, tilt_angle_rad=v["tilt_rad"], tilt_axis_angle_rad=v["axis_rad"]
            )
        if grad:
            atoms = specimen.atoms
            positions = atoms.positions_a.detach().clone().requires_grad_(True)
            specimen = dataclasses.replace(specimen, atoms=atoms._replace_positions(positions))
        settings = PotentialSettings(
            shape=shape, sampling_a=1.0, slice_thickness_a=20.0,
            include_solvent=v.get("solvent", True),
            ice_structure=IceStructure() if v.get("ice_field") else None,
        )  # fmt: skip
        return specimen, settings

    def prepare(shape) -> None:
        """Build the case's specimen before the measurement (it is the caller's input: its
        arrays and the heap its construction leaves are not the stage's memory)."""
        if stage not in ("ctf", "mtf"):
            state[("prepared", tuple(shape))] = setup(shape)

    def run(shape) -> int:
        if stage == "ctf":
            ctf(shape, sampling_a=1.0, microscope=scope, defocus_a=1e4, device=dev, dtype=cdtype)
            return 1
        if stage == "mtf":
            detector.mtf(shape, device=dev, dtype=dtype)
            return 1
        prepared = state.pop(("prepared", tuple(shape)), None)
        specimen, settings = setup(shape) if prepared is None else prepared
        atoms = specimen.atoms
        with torch.set_grad_enabled(grad):
            if stage == "slice_potential":
                out = slice_potential(
                    atoms.atomic_numbers, atoms.positions_a, atoms.b_factors_a2,
                    atoms.occupancies, z0_a=0.0, z1_a=100.0, shape=shape,
                    sampling_a=1.0, backend="torch",
                )  # fmt: skip
                if grad:
                    out.sum().backward()
                state["n_atoms"] = len(model)
                return 1
            if stage == "tilt_series":
                scheme = TiltScheme(
                    angles_rad=(0.0, -0.6, 0.6), dose_e_per_a2=(10.0,) * 3,
                    defocus_a=(1e4,) * 3,
                )  # fmt: skip
                tilt_series(
                    specimen, scheme=scheme, potential=settings, microscope=scope,
                    detector=detector, progress=False,
                )  # fmt: skip
                state["estimate"] = memory.with_stored_images(
                    micrograph_memory_bytes(
                        specimen, potential=settings, microscope=scope, detector=detector,
                        damage=True,
                    ), shape, 3,
                )  # fmt: skip
                return len(slice_edges_a(specimen, settings)) - 1
            result = micrograph(
                specimen, potential=settings, microscope=scope, detector=detector,
                imaging=Imaging(defocus_a=1e4, dose_e_per_a2=40.0, method=v.get("method",
                                "multislice")),
            )  # fmt: skip
            if grad:
                result.expected.sum().backward()
            state["estimate"] = micrograph_memory_bytes(
                specimen, potential=settings, microscope=scope, detector=detector,
                method=v.get("method", "multislice"),
            )  # fmt: skip
        return len(slice_edges_a(specimen, settings)) - 1

    def estimate(shape, n_slices: int) -> int:
        if stage == "ctf":
            return memory.ctf_bytes(shape, dtype)
        if stage == "mtf":
            return memory.mtf_bytes(shape, dtype, tabulated=bool(v.get("camera")))
        if stage == "slice_potential":
            return memory.slice_potential_bytes(
                shape, dtype, state["n_atoms"], 12, requires_grad=grad
            )
        return state["estimate"]

    return run, estimate, prepare


def _case(case: str, device: str) -> dict:
    import torch

    stage, shape, dtype_name, grad, variant = _parse(case)
    run, estimate, prepare = _runner(stage, dtype_name, grad, device, variant)
    dev = torch.device(device)
    run((64, 64))
    prepare(shape)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        held = _hold_free_heap()
        Path("/proc/self/clear_refs").write_text("5")
        base = _status("VmRSS")
    n_slices = run(shape)
    if dev.type != "cuda":
        _release(held)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = _status("VmHWM") - base
    return dict(case=case, peak=peak, estimate=estimate(shape, n_slices), n_slices=n_slices)


def _timed(case: str, device: str, release: bool) -> dict:
    """Wall time of one case (after a warm-up of the same shape), with or without the
    stages' :func:`tem_core.memory.release_at_boundary` calls (glibc's ``malloc_trim``)."""
    import resource
    import time

    import torch

    from tem_core import memory

    memory.RELEASE_AT_BOUNDARIES = release
    stage, shape, dtype_name, grad, variant = _parse(case)
    run, _, _ = _runner(stage, dtype_name, grad, device, variant)
    run(shape)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    run(shape)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return dict(case=case, release=release, seconds=wall, cpu_seconds=cpu,
                faults=after.ru_minflt - before.ru_minflt)  # fmt: skip


def _cost(cases: list[str], device: str, rounds: int) -> None:
    """Time cost of releasing the heap's free pages: each case with and without, in fresh
    processes, interleaved (``rounds`` times), under glibc's default allocator."""
    print(f"load (1, 5, 15 min): {os.getloadavg()}; device {device}; {rounds} rounds")
    print("wall and CPU (user + system, all threads) seconds, least of the rounds")
    print(f"{'case':34s} {'wall w/o':>8s} {'with':>6s} {'ratio':>5s} {'CPU w/o':>8s} "
          f"{'with':>6s} {'ratio':>5s} {'faults w/o':>10s} {'with':>8s}")  # fmt: skip
    for case in cases:
        times: dict = {(r, k): [] for r in (True, False) for k in ("seconds", "cpu_seconds")}
        faults = {}
        for _ in range(rounds):
            for release in (False, True):
                done = subprocess.run(
                    [sys.executable, __file__, "--time-case", case, "--device", device]
                    + ([] if release else ["--no-release"]),
                    capture_output=True, text=True, cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )  # fmt: skip
                lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
                if done.returncode or not lines:
                    print(f"{case}: failed\n{done.stderr[-2000:]}")
                    return
                result = json.loads(lines[-1])
                for key in ("seconds", "cpu_seconds"):
                    times[release, key].append(result[key])
                faults[release] = result["faults"]
        cells = []
        for key in ("seconds", "cpu_seconds"):
            off, on = min(times[False, key]), min(times[True, key])
            cells.append(f"{off:8.2f} {on:6.2f} {on / off:5.2f}")
        print(f"{case:34s} {' '.join(cells)} {faults[False]:10d} {faults[True]:8d}", flush=True)
    print(f"load after: {os.getloadavg()}")


def _explain(case: str, device: str) -> None:
    """The arrays alive at the peak of live torch allocations, by allocating op and line."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    stage, shape, dtype_name, grad, variant = _parse(case)
    run, estimate, prepare = _runner(stage, dtype_name, grad, device, variant)
    run((64, 64))
    prepare(shape)
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        n_slices = run(shape)
    timeline = MemoryProfile(prof.profiler.kineto_results)
    live: dict = {}
    current = peak = peak_time = 0
    at_peak: dict = {}
    for time, action, (key, _version), size in timeline.timeline:
        if action in (Action.CREATE, Action.PREEXISTING) and key not in live:
            live[key] = size
            current += size
        elif action == Action.DESTROY:
            current -= live.pop(key, 0)
        if current > peak:
            peak, peak_time, at_peak = current, time, dict(live)
    creator = {}
    for node in timeline._data_flow_graph.flow_nodes:
        for key in node.outputs:
            if key in creator:
                continue
            where, parent = "?", node._event.parent
            while parent is not None:
                if "tem_core" in parent.name and ".py(" in parent.name:
                    where = parent.name.split("tem_core/")[-1]
                    break
                parent = parent.parent
            creator[key] = f"{node._event.name} @ {where}"
    n_px = shape[0] * shape[1]
    groups = collections.Counter()
    for key, size in at_peak.items():
        groups[(creator.get(key, "?"), size)] += 1
    est = estimate(shape, n_slices)
    print(f"{case}: {n_slices} slices; live torch peak {peak / 1e6:.1f} MB "
          f"({peak / n_px:.1f} B/px); estimate {est / 1e6:.1f} MB")  # fmt: skip
    for (op, size), count in sorted(groups.items(), key=lambda kv: -kv[0][1] * kv[1]):
        if size >= n_px // 2:
            print(f"  {count:3d} x {size / n_px:5.1f} B/px  {op}")

    def walk(event, depth=0):
        if event.start_time_ns <= peak_time <= event.end_time_ns:
            if "tem_core" in event.name:
                print("  " * depth + "  at " + event.name.split("tem_core/")[-1])
            for child in event.children:
                walk(child, depth + 1)

    for event in prof.profiler.kineto_results.experimental_event_tree():
        walk(event)


def _measure(case: str, device: str, allocator: str) -> dict | str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **ALLOCATORS[allocator]}
    done = subprocess.run(
        [sys.executable, __file__, "--case", case, "--device", device],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode or not lines:
        return done.stderr[-2000:]
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 and 512 only")
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--variants", action="store_true", help="other configurations, shapes")
    parser.add_argument("--explain", metavar="CASE")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--cost", metavar="CASES", help="time with/without releasing pages")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--time-case", help=argparse.SUPPRESS)
    parser.add_argument("--no-release", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # comma-separated cases, one after the other in this process
        for case in args.case.split(","):
            print(json.dumps(_case(case, args.device)), flush=True)
        return
    if args.time_case:
        print(json.dumps(_timed(args.time_case, args.device, not args.no_release)), flush=True)
        return
    if args.cost:
        _cost(args.cost.split(","), args.device, args.rounds)
        return
    if args.explain:
        _explain(args.explain, args.device)
        return
    if args.variants:
        cases = VARIANT_CASES
    else:
        sizes = [256, 512] if args.quick else [int(s) for s in args.sizes.split(",")]
        cases = [
            f"{stage}:{n}:{dtype}:{int(grad)}"
            for stage in args.stages.split(",")
            for n in sizes
            for dtype in ("float32", "float64")
            for grad in ((False, True) if stage in ("slice_potential", "micrograph") else (False,))
        ]
    allocators = ("fixed", "default") if args.device == "cpu" else ("fixed",)
    print(f"load (1, 5, 15 min): {os.getloadavg()}; device {args.device}")
    print(f"{'case':38s} {'slices':>6s} {'estimate MB':>11s} "
          + " ".join(f"{a + ' MB':>10s} {'ratio':>5s}" for a in allocators))  # fmt: skip
    rows, ratios = [], {a: [] for a in allocators}
    for case in cases:
        row = {"case": case}
        for allocator in allocators:
            r = _measure(case, args.device, allocator)
            if isinstance(r, str):
                print(f"{case}: failed ({allocator})\n{r}")
                break
            row.update(estimate=r["estimate"], n_slices=r["n_slices"])
            row[allocator] = r["peak"]
            ratios[allocator].append(r["peak"] / r["estimate"])
        else:
            rows.append(row)
            cells = " ".join(
                f"{row[a] / 1e6:10.1f} {row[a] / row['estimate']:5.2f}" for a in allocators
            )
            print(f"{case:38s} {row['n_slices']:6d} {row['estimate'] / 1e6:11.1f} {cells}",
                  flush=True)  # fmt: skip
    for allocator, values in ratios.items():
        if values:
            inside = sum(1 / 1.5 <= w <= 1.5 for w in values)
            print(f"{allocator}: measured/estimate from {min(values):.2f} to {max(values):.2f}; "
                  f"{inside} of {len(values)} cases within 1.5x")  # fmt: skip
    print(f"load after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
