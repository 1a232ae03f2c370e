"""Our dataset STAR files through RELION itself (``benchmarks/relion_star_check.py``).

The RELION test runs when ``relion_star_handler``, ``relion_preprocess`` and
``relion_reconstruct`` are found in ``$TEM_RELION_BIN`` or on PATH, and is skipped otherwise
(CI has no RELION). The thresholds are what a correct geometry must clear, not fits to one
run: a wrong Euler convention, a swapped axis or a half-pixel offset each fail one of them.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "relion_star_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("relion_star_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_skips_cleanly_without_relion(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no relion_* programs here
    monkeypatch.delenv("TEM_RELION_BIN", raising=False)
    check = _script()
    assert check.find_relion(tmp_path) is None
    assert check.main(["--json", str(tmp_path / "r.json")]) == 0
    assert "skipped: RELION programs" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "skipped"


@pytest.mark.slow
def test_relion_extracts_and_reconstructs_from_our_star_files(tmp_path) -> None:
    check = _script()
    if check.find_relion(None) is None:
        pytest.skip("RELION programs not found ($TEM_RELION_BIN or PATH)")
    assert check.main(["--quick", "--out", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    # relion_star_handler reads and re-writes every file (micrographs and tilt series);
    # RELION writes 6 decimals in a 12-character field: up to 5e-6 lost on long numbers
    files = result["star_handler"]
    assert any("tilt_series" in f for f in files) and len(files) == 3
    for name, r in files.items():
        assert r["problems"] == [] and r["max_abs_difference"] <= 1e-5, (name, r)
    case = result["extraction"]["noise_free"]
    assert case["extracted_particles"] == result["dataset"]["particles"]
    assert case["max_coordinate_mismatch_px"] == 0.0
    carried = case["carried_by_relion_max_abs_difference"]  # our angles and origins
    assert all(v is not None and v <= 1e-5 for v in carried.values()), carried
    for ref in ("tem_core_potential", "independent_gaussians"):
        recon = {name: m[ref] for name, m in case["reconstructions"].items()}
        good = recon["as_written"]
        assert good["correlation"] > 0.9 and good["fsc"]["9.8"] > 0.7
        assert max(abs(v) for v in good["shift_px_xyz"]) < 0.15
        assert good["correlation"] - good["correlation_mirrored_ref"] > 0.1  # handedness
        assert recon["transposed_angles"]["fsc"]["9.8"] < 0.4
        # sub-pixel origins: exact > none > half a pixel off (FSC at 6.4 Å)
        f = {name: m["fsc"]["6.4"] for name, m in recon.items()}
        assert f["as_written"] > f["without_origins"] > f["origins_half_px_off"]
        swapped = result["extraction"]["noise_free_xy_swapped"]["reconstructions"]
        assert swapped["as_written"][ref]["correlation"] < 0.3
