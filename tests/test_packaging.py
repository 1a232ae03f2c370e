"""Packaging: environment.yml mirrors pyproject.toml; Makefile and CI entry point as documented."""

from __future__ import annotations

import re
import tomllib

import pytest
from conftest import REPO_ROOT


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _environment_pip_specs() -> dict[str, str]:
    specs: dict[str, str] = {}
    in_pip = False
    for line in (REPO_ROOT / "environment.yml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("- pip:"):
            in_pip = True
            continue
        if in_pip and stripped.startswith("- "):
            spec = stripped[2:].strip()
            if spec.startswith("-e"):
                continue
            specs[_name(spec)] = spec.replace(" ", "")
    return specs


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("book", "dev"):
        wanted += project["optional-dependencies"][extra]
    expected = {_name(s): s.replace(" ", "") for s in wanted}
    found = _environment_pip_specs()
    assert found == expected, (
        "environment.yml and pyproject.toml disagree: "
        f"only in pyproject {sorted(set(expected) - set(found))}, "
        f"only in environment.yml {sorted(set(found) - set(expected))}, "
        f"different specs {[k for k in expected if k in found and found[k] != expected[k]]}"
    )


def test_required_extras_exist() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {"book", "dev", "gpu", "compare"} <= set(extras)
    core = {_name(s) for s in project["dependencies"]}
    assert {"torch", "taichi", "numpy", "scipy", "gemmi", "mrcfile", "matplotlib", "tqdm"} <= core
    assert any(s.startswith("jupyter-book") and "<2" in s for s in extras["book"])


def test_ci_runs_make_test() -> None:
    script = (REPO_ROOT / ".ci" / "run").read_text()
    commands = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "make test" in commands


def test_makefile_targets_and_torch_pin() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("book:", "test:", "lab:", "bench:"):
        assert re.search(rf"^{target}", makefile, re.M), target
    assert "TORCH_VERSION := 2.13.0" in makefile
    # torch is installed before the project so pip keeps the pinned wheel
    assert makefile.index("torch==$(TORCH_VERSION)") < makefile.index("-e '.[book,dev]'")


def test_ruff_is_clean() -> None:
    """``make lint`` as part of the suite, so CI keeps the style rules."""
    import subprocess
    import sys

    pytest.importorskip("ruff")
    paths = ["tem_core", "tests", "benchmarks", "notebooks", "book/run_notebooks.py"]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", *paths],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
