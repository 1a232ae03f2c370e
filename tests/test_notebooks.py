"""Every book chapter executes headlessly with papermill in quick mode; failures are loud."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_book import MAX_LINE, NOT_YET_WRAPPED, long_output_lines

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
RUNNER = REPO_ROOT / "book" / "run_notebooks.py"


@pytest.mark.notebook
@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_quick(source, tmp_path) -> None:
    # a private temporary folder (other processes use the shared one), with a short path
    # (chapters print it)
    temporary = Path(tempfile.mkdtemp(prefix="nb"))
    result = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--notebooks",
            str(source.parent),
            "--out",
            str(tmp_path),
            "--quick",
            source.stem,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TMPDIR": str(temporary)},
    )
    assert result.returncode == 0, (
        f"{source.name} failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    )
    left = sorted(str(p) for p in temporary.glob("tem_core_*"))
    shutil.rmtree(temporary, ignore_errors=True)
    assert not left, f"{source.name} left temporary files behind: {left}"
    executed = (tmp_path / f"{source.stem}.ipynb").read_text()
    # figures must be stored in the executed notebook (inline backend, not Agg)
    assert '"image/png"' in executed, f"{source.name} stored no figure"
    # no Taichi log lines ("[I 11/28/26 ...] ...", "[W ...]") or tracebacks on the pages
    nb = json.loads(executed)
    streams = [
        "".join(out.get("text", ""))
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    ]
    noisy = [t for t in streams if re.search(r"^\[[IWE] \d", t, flags=re.M)]
    assert not noisy, f"{source.name} printed log lines: {noisy[0][:300]}"
    # printed lines fit the book's page (tests/test_book.py: MAX_LINE characters)
    long = [] if source.stem in NOT_YET_WRAPPED else long_output_lines(nb)
    assert not long, f"{source.name} printed lines over {MAX_LINE} characters: {long[0]!r}"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_parameters_cell(source) -> None:
    import jupytext

    nb = jupytext.read(source)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{source.name} needs exactly one cell tagged 'parameters'"
    text = tagged[0].source
    for name in ("seed", "device", "quick"):
        assert f"{name} =" in text, f"{source.name}: parameters cell lacks {name}"
    assert "quick = False" in text


def test_failing_notebook_fails_loudly(tmp_path) -> None:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "99_broken.py").write_text(
        "# %% tags=['parameters']\nquick = False\n\n# %%\nx = 1\n\n"
        "# %%\nraise RuntimeError('deliberate failure')\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--notebooks",
            str(nbdir),
            "--out",
            str(tmp_path / "out"),
            "--quick",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "99_broken.py" in result.stderr
    assert "RuntimeError" in result.stderr and "deliberate failure" in result.stderr
