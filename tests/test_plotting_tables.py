"""Text tables of stored benchmark results (tem_core._plotting_tables, used by chapter 09)."""

from __future__ import annotations

import json

import numpy as np
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


def test_method_margins_per_dose_and_n_with_nan_where_missing() -> None:
    from tem_core.plotting import method_margins

    rows = [
        {"dose_e_per_nm2": d, "n": n, "method": m, "psnr_particles": v}
        for d, n, m, v in [
            (100, 2, "ours", 20.0), (100, 2, "topaz", 18.5), (100, 5, "ours", 21.0),
            (200, 2, "ours", 22.0), (200, 2, "topaz", 20.0), (200, 5, "ours", 23.5),
            (200, 5, "topaz", 22.0),
        ]
    ]  # fmt: skip
    doses, ns, margins = method_margins(rows, "ours", "topaz")
    assert doses == [100, 200] and ns == [2, 5]
    assert margins[0, 0] == 1.5 and margins[1, 0] == 2.0 and margins[1, 1] == 1.5
    assert np.isnan(margins[0, 1])  # Topaz missing at (100, 5)


def test_margin_table_means_over_n_and_counts_settings() -> None:
    import pytest

    from tem_core.plotting import margin_table

    rows = [
        {"dose_e_per_nm2": d, "n": n, "method": m, "psnr_particles": v}
        for d, n, m, v in [
            (100, 2, "ours", 20.0), (100, 2, "topaz", 18.5), (100, 5, "ours", 21.0),
            (100, 5, "topaz", 20.5), (200, 2, "ours", 22.0), (200, 2, "topaz", 20.0),
            (200, 5, "ours", 23.5), (200, 5, "topaz", 22.0),
        ]
    ]  # fmt: skip
    lines = margin_table(rows, {"ours": "network"}).splitlines()
    assert lines[0].startswith("minus Topaz [dB]")
    assert lines[1].split() == ["100", "200"]
    assert lines[2].split() == ["network", "1.00", "1.75", "3/4"]
    with pytest.raises(ValueError, match="labels must be a non-empty dict"):
        margin_table(rows, {})
    with pytest.raises(ValueError, match="rows must hold at least one row"):
        margin_table([], {"ours": "network"})
