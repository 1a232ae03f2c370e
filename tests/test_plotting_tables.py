"""Text tables of stored benchmark results (tem_core._plotting_tables, used by chapter 09)."""

from __future__ import annotations

import json

from conftest import REPO_ROOT

from tem_core.plotting import peer_results_text, recorded_table, scaling_text

RESULTS = REPO_ROOT / "benchmarks" / "results"


def test_recorded_table_aligns_columns_and_marks_missing_cells():
    section = {"columns": ["case", "seconds"], "rows": [["a", 1.5], ["bb", None]]}
    text = recorded_table(section, {"case": "4", "seconds": "6.2f"})
    assert text.splitlines() == ["case  seconds", "a       1.50", "bb         -"]


def test_peer_results_name_missing_files(tmp_path):
    text = peer_results_text(tmp_path)
    for name in ("forward_cpu.json", "vs_cryojax.json", "vs_temsim.json"):
        assert f"{name}: not recorded yet" in text


def test_peer_results_read_the_stored_runs():
    text = peer_results_text(RESULTS)
    stored = {name: (RESULTS / name).exists()
              for name in ("forward_cpu.json", "vs_cryojax.json", "vs_temsim.json")}  # fmt: skip
    if stored["vs_cryojax.json"]:
        run = json.loads((RESULTS / "vs_cryojax.json").read_text())
        for row in run["results"].values():
            if "speedup_forward" in row:
                assert f"forward {row['speedup_forward']:.2f}×" in text
    if stored["vs_temsim.json"]:
        run = json.loads((RESULTS / "vs_temsim.json").read_text())
        ref = run["median_s"]["TEM-simulator"]
        for code, wall in run["median_s"].items():
            assert f"TEM-sim/code {ref / wall:4.2f}×" in text and code in text
    if stored["forward_cpu.json"]:
        run = json.loads((RESULTS / "forward_cpu.json").read_text())
        for label, ratio in run["ratios"].items():
            assert f"{label:<50} {ratio:5.2f}×" in text


def test_scaling_text_lists_every_row():
    scaling = {
        "benchmark": "scaling.py", "date": "2026-12-01", "device": "cpu", "threads": 2,
        "cpus": 2, "load_average_1_5_15": [0.5, 0.4, 0.3],
        "rows": [{"series": "grid", "n_px": 512, "particles": 1, "atoms": 32618,
                  "seconds": 0.25}],
    }  # fmt: skip
    lines = scaling_text(scaling).splitlines()
    assert lines[0] == "scaling.py, 2026-12-01, cpu, 2 threads of 2 CPUs"
    assert lines[-1].split() == ["grid", "512²", "1", "32,618", "0.25"]
