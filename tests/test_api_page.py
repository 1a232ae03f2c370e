"""The API reference page (book/api.md): complete, and built offline from the docstrings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

import tem_core

API_PAGE = REPO_ROOT / "book" / "api.md"


def test_api_page_documents_every_stage() -> None:
    text = API_PAGE.read_text()
    documented = set(re.findall(r"\.\. automodule:: tem_core\.(\w+)", text))
    wanted = set(tem_core._EXPORTS) | {"units", "grids", "validation"}
    assert wanted <= documented, f"add {sorted(wanted - documented)} to book/api.md"
    assert "file: api" in (REPO_ROOT / "book" / "_toc.yml").read_text()


@pytest.mark.slow
def test_api_page_builds_offline_with_every_public_name(tmp_path) -> None:
    """Jupyter Book (Sphinx autodoc + napoleon) renders every public name without warnings."""
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: Reference\n    chapters:\n"
        "      - file: design\n      - file: api\n      - file: references\n"
    )
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.exists():
        pytest.skip("jupyter-book is not installed (the book extra)")
    command = [
        str(jupyter_book), "build", str(REPO_ROOT / "book"),
        "--config", str(REPO_ROOT / "_config.yml"), "--toc", str(toc),
        "--path-output", str(tmp_path), "--keep-going",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert not warnings, "\n".join(warnings[:20])
    html = (tmp_path / "_build" / "html" / "api.html").read_text()
    anchors = set(re.findall(r'id="tem_core\.\w+\.(\w+)"', html))
    missing = sorted(name for name in tem_core.__all__ if name != "units" and name not in anchors)
    assert not missing, f"public names without an entry on the API page: {missing}"
