"""The ``tem-book`` command line: generate, simulate, errors and the console script."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import numpy as np
import pytest
from conftest import DATA_DIR, REPO_ROOT

from tem_core import io as tio
from tem_core.cli import main
from tem_core.dataset import read_star

EXAMPLE = DATA_DIR / "example_dataset.toml"


def test_console_script_is_declared() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["tem-book"] == "tem_core.cli:main"


def test_generate_then_resume_and_simulate_one_item_alone(tmp_path, capsys) -> None:
    out = tmp_path / "set"
    assert main(["generate", str(EXAMPLE), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert "4 items generated, 0 already done, 0 failed" in capsys.readouterr().out
    assert main(["generate", str(EXAMPLE), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert "0 items generated, 4 already done, 0 failed" in capsys.readouterr().out
    # `simulate --index 2` regenerates item 2 of the dataset bit for bit
    single = tmp_path / "one.mrc"
    assert main(["simulate", str(EXAMPLE), "--out", str(single), "--index", "2"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / n) for n in ("one.mrc", "one_noise_free.mrc", "one.star")]
    for mine, theirs in (("one.mrc", "micrographs"), ("one_noise_free.mrc", "noise_free")):
        a, pixel_a = tio.read_mrc(tmp_path / mine)
        b, pixel_b = tio.read_mrc(out / theirs / "item_000002.mrc")
        assert np.array_equal(a, b) and pixel_a == pixel_b
    ours = read_star(tmp_path / "one.star")["particles"]
    theirs = read_star(out / "particles/item_000002.star")["particles"]
    assert ours["rlnAnglePsi"] == theirs["rlnAnglePsi"]


def test_simulate_settings_without_items_or_seed(tmp_path, capsys) -> None:
    raw = EXAMPLE.read_text().replace("items = 4\n", "").replace("seed = 20261201\n", "")
    raw = raw.replace('path = "1crn.pdb.gz"', f'path = "{DATA_DIR / "1crn.pdb.gz"}"')
    raw = raw.replace('kind = "micrograph"', 'kind = "tilt_series"')
    raw += '\n[tilt]\nscheme = "uniform"\nmin_deg = -20.0\nmax_deg = 20.0\nstep_deg = 20.0\n'
    settings = tmp_path / "settings.toml"
    settings.write_text(raw)
    assert main(["simulate", str(settings), "--out", str(tmp_path / "ts")]) == 0
    stack, _ = tio.read_mrc(tmp_path / "ts.mrc")
    assert stack.shape == (3, 128, 128)
    assert tio.read_tilt_angles(tmp_path / "ts.tlt").numpy() == pytest.approx(
        np.radians([-20.0, 0.0, 20.0])
    )
    assert "rlnCoordinateZ" in read_star(tmp_path / "ts.star")["particles"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("dose_e_per_a2 = { uniform = [20.0, 40.0] }", "dose_e_per_a2 = -3"),
            "imaging.dose_e_per_a2 must be > 0 e/Å², got -3",
        ),
        (("cs_mm = 2.7", "cs_nm = 2.7"), "microscope.cs_nm is not a known key"),
    ],
)
def test_bad_input_exits_2_with_the_key(tmp_path, capsys, edit, message) -> None:
    text = EXAMPLE.read_text().replace(*edit)
    text = text.replace('path = "1crn.pdb.gz"', f'path = "{DATA_DIR / "1crn.pdb.gz"}"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["generate", str(bad), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tem-book generate: error: bad.toml: ") and message in err


def test_errors_for_paths_and_arguments(tmp_path, capsys) -> None:
    assert main(["simulate", str(EXAMPLE), "--out", str(tmp_path / "no" / "x.mrc")]) == 2
    assert "folder" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "none.toml"), "--out", str(tmp_path / "x")]) == 2
    assert "none.toml does not exist" in capsys.readouterr().err
    assert main(["simulate", str(EXAMPLE), "--out", str(tmp_path / "x"), "--index", "9"]) == 2
    assert "index must be an integer in [0, 4), got 9" in capsys.readouterr().err
    assert main(["generate", str(EXAMPLE), "--out", str(tmp_path), "--workers", "-1"]) == 2
    assert "workers must be a non-negative integer, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", str(EXAMPLE)])  # --out is required (argparse exits 2)


def test_module_entry_point_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tem_core.cli", "generate", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--scheduler" in done.stdout and "--workers" in done.stdout
