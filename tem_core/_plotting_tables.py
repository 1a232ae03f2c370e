"""Text tables of the benchmark results stored in ``benchmarks/results/`` (for the book).

Re-exported by :mod:`tem_core.plotting`. Each function reads the JSON a benchmark script wrote
with ``--json`` and returns the lines the performance chapter prints, so the chapter holds no
formatting loops. Nothing is measured here.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np

#: Result files of the side-by-side peer benchmarks, in the order the book shows them.
PEER_RESULT_FILES = ("forward_cpu.json", "vs_cryojax.json", "vs_temsim.json")


def wrap_text(text: str, width: int = 88) -> str:
    """``text`` wrapped to the book's page width (88 characters)."""
    return textwrap.fill(text, width)


def recorded_table(section: dict, formats: dict[str, str]) -> str:
    """Rows of a recorded section (``columns`` and ``rows``) as aligned text.

    ``formats`` maps the columns to show to their format specs (``"8.2f"``, ``"18"``);
    ``None`` cells print as ``-``.
    """
    rows = [dict(zip(section["columns"], row, strict=True)) for row in section["rows"]]
    widths = {name: len(format(0, f)) for name, f in formats.items()}
    text = {name: isinstance(rows[0][name], str) for name in formats}
    lines = ["  ".join(f"{n:{'<' if text[n] else '>'}{widths[n]}}" for n in formats)]
    for row in rows:
        cells = [
            f"{'-':>{widths[n]}}" if row[n] is None else format(row[n], f)
            for n, f in formats.items()
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _temsim_lines(run: dict, name: str) -> list[str]:
    lines = [wrap_text(f"{name}: {run['setup']}; {run['repeat']} interleaved run(s), median; "
                  f"load before/after {run['load_average_before_after']}")]  # fmt: skip
    ref = run["median_s"].get("TEM-simulator")
    ref_cpu = run["median_cpu_s"].get("TEM-simulator")
    for code, wall in run["median_s"].items():
        cpu = run["median_cpu_s"][code]
        vs = f", TEM-sim/code {ref / wall:4.2f}× (CPU {ref_cpu / cpu:4.2f}×)" if ref else ""
        lines.append(f"  {code:<20} {wall:6.1f} s wall, {cpu:6.1f} s CPU{vs}")
    return lines


def _forward_lines(run: dict) -> list[str]:
    lines = []
    for label, row in run["rows"].items():
        if "error" not in row:
            lines.append(f"  {label:<22} exit wave {row['t_exit_wave_s']:6.2f} s, "
                         f"peak RSS {row['maxrss_mib']:5.0f} MiB")  # fmt: skip
    lines += [f"  {label:<50} {ratio:5.2f}×" for label, ratio in run["ratios"].items()]
    return lines


def _cryojax_lines(run: dict) -> list[str]:
    lines = []
    for scene, row in run["results"].items():
        for code in ("tem_core", "cryojax"):
            if "error" not in row[code]:
                r = row[code]
                lines.append(f"  {scene:<13} {code:<9} forward {r['forward_s']:6.3f} s, "
                             f"gradient {r['gradient_s']:6.3f} s")  # fmt: skip
        if "speedup_forward" in row:
            fwd, grad = row["speedup_forward"], row["speedup_gradient"]
            lines.append(f"  {scene:<13} cryojax/tem_core: forward {fwd:.2f}×, "
                         f"gradient {grad:.2f}×")  # fmt: skip
            lines.append(f"  {'':<13} image correlation 1 - {1.0 - row['image_correlation']:.1e}")
    return lines


def peer_results_text(results_dir: str | Path) -> str:
    """The side-by-side peer benchmarks stored in ``results_dir`` as text.

    Reads :data:`PEER_RESULT_FILES` (``benchmarks/forward.py``, ``vs_cryojax.py`` and
    ``vs_temsim.py`` run with ``--json``); a file not recorded yet is named as such.
    """
    results_dir = Path(results_dir)
    lines: list[str] = []
    for name in PEER_RESULT_FILES:
        path = results_dir / name
        if not path.exists():
            lines.append(wrap_text(f"{name}: not recorded yet (run its benchmark with --json)"))
            continue
        run = json.loads(path.read_text())
        if name == "vs_temsim.json":
            lines += _temsim_lines(run, name)
            continue
        conditions = (
            f"{name}: {run['threads']} threads, {run['rounds']} rounds, load "
            f"average before {run['load_before']}, after {run['load_after']}"
        )
        lines.append(wrap_text(conditions))
        lines += _forward_lines(run) if name == "forward_cpu.json" else _cryojax_lines(run)
    return "\n".join(lines)


def scaling_text(scaling: dict) -> str:
    """A ``benchmarks/scaling.py`` result (its JSON as a dict) as text."""
    lines = [
        f"{scaling['benchmark']}, {scaling['date']}, {scaling['device']}, "
        f"{scaling['threads']} threads of {scaling['cpus']} CPUs",
        f"load average (1, 5, 15 min): {scaling['load_average_1_5_15']}",
        f"{'series':>6} {'grid':>6} {'particles':>9} {'atoms':>9} {'seconds':>8}",
    ]
    lines += [
        f"{r['series']:>6} {r['n_px']:>5}² {r['particles']:9d} {r['atoms']:9,d} "
        f"{r['seconds']:8.2f}"
        for r in scaling["rows"]
    ]
    return "\n".join(lines)


def method_margins(
    rows: list[dict], method: str, other: str, metric: str = "psnr_particles"
) -> tuple[list, list, np.ndarray]:
    """``(doses, ns, margins)`` of a denoising table's ``rows`` (``benchmarks/denoise.py``):
    ``method``'s ``metric`` minus ``other``'s [dB] per dose (rows) and number of projections
    (columns); NaN where either is missing."""
    by = {(r["dose_e_per_nm2"], r["n"], r["method"]): r.get(metric, math.nan) for r in rows}
    doses = sorted({r["dose_e_per_nm2"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    margins = [
        [by.get((d, n, method), math.nan) - by.get((d, n, other), math.nan) for n in ns]
        for d in doses
    ]
    return doses, ns, np.array(margins, dtype=float)


def margin_table(
    rows: list[dict], labels: dict[str, str], other: str = "topaz", other_label: str = "Topaz"
) -> str:
    """Each labelled method's particle-window PSNR minus ``other``'s [dB], mean over the
    numbers of projections per dose, and its count of single settings ≥ 1 dB."""
    if not rows:
        raise ValueError("rows must hold at least one row of a denoising table, got none")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"labels must be a non-empty dict of method -> label, got {labels!r}")
    doses = sorted({r["dose_e_per_nm2"] for r in rows})
    width = max(len(label) for label in labels.values())
    lines = [
        f"minus {other_label} [dB], particle windows, mean over n; settings with >= 1 dB",
        f"{'':>{width}} " + " ".join(f"{d:>5}" for d in doses),
    ]
    for method, label in labels.items():
        diff = method_margins(rows, method, other)[2]
        lines.append(
            f"{label:>{width}} "
            + " ".join(f"{v:5.2f}" for v in diff.mean(axis=1))
            + f"   {int(np.sum(diff >= 1.0))}/{diff.size}"
        )
    return "\n".join(lines)
