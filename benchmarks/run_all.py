"""Run the benchmarks one after another and print each one's table (``make bench``).

Each benchmark is its own script with its own table; this driver runs them in order in
fresh processes, shows their output as it comes, and ends with a summary of what ran, how
long it took and what failed. Peers live in ``.venv-compare`` (``make compare-env``):
benchmarks that need it run there when it exists and are listed as skipped otherwise.
TEM-simulator is never built here; pass ``--temsim PATH`` to include ``vs_temsim.py``.

    .venv/bin/python benchmarks/run_all.py [--quick] [--device cpu|cuda] [--temsim PATH]
        [--only potential,forward,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARE_PYTHON = ROOT / ".venv-compare" / "bin" / "python"


def _plan(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(name, environment, arguments) per benchmark, cheapest first."""
    quick = ["--quick"] if args.quick else []
    plan = [
        ("estimator_variance", "main", ["--repeats", "500" if args.quick else "2000"]),
        ("potential", "main", [*quick, "--device", args.device]),
        ("mtf_experiments", "main", [*quick, "--methods", "whittle,whittle+gain,ffl a=1"]),
        ("mtf_standard_errors", "main", ["--repeats", "4" if args.quick else "30"]),
        ("real_micrograph", "main", ["--n-px", "512" if args.quick else "1024"]),
        ("forward", "main", [*quick, "--device", args.device]),
        ("dataset", "main", [*quick, "--device", args.device]),
        ("relion_star_check", "main", quick),  # skipped without RELION ($TEM_RELION_BIN, PATH)
        ("potential_vs_abtem", "compare", []),
        ("exit_wave_vs_abtem", "compare", quick),
        ("reconstruct", "compare", quick),
        ("reconstruct_denoised", "main", quick),  # its Topaz row uses .venv-compare if present
    ]
    if args.temsim:
        plan.append(("vs_temsim", "main", ["--temsim", args.temsim, *quick]))
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {name for name, _, _ in plan}
        if unknown:
            raise SystemExit(f"--only names unknown benchmarks: {sorted(unknown)}")
        plan = [entry for entry in plan if entry[0] in wanted]
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's small size")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--temsim", help="path of a TEM-simulator executable you built")
    parser.add_argument("--only", help="comma-separated benchmark names")
    args = parser.parse_args()

    summary = []
    for name, env, extra in _plan(args):
        python = sys.executable if env == "main" else str(COMPARE_PYTHON)
        if env == "compare" and not COMPARE_PYTHON.exists():
            summary.append((name, "skipped: no .venv-compare (make compare-env)", 0.0))
            continue
        cmd = [python, str(ROOT / "benchmarks" / f"{name}.py"), *extra]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT).returncode
        wall = time.perf_counter() - start
        summary.append((name, "ok" if code == 0 else f"FAILED (exit {code})", wall))

    print(f"\n{'benchmark':<22} {'wall [s]':>9}  status")
    for name, status, wall in summary:
        print(f"{name:<22} {wall:>9.1f}  {status}")
    return 0 if all(not s.startswith("FAILED") for _, s, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
