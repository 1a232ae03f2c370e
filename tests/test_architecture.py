"""House rules checked on the source: one-way data flow between stages, module size, no asserts."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "tem_core"
# Forward stages in data-flow order; a stage may import only stages to its left.
FORWARD = [
    "units",
    "structure",
    "specimen",
    "potential",
    "propagate",
    "optics",
    "detector",
    "io",
    "simulate",
]
# plotting draws results of every stage, inverse ones included, and nothing imports it.
INVERSE = ["mtf_fit", "denoise", "reconstruct", "render", "estimators", "plotting"]
MAX_LINES = 550  # "modules under ~500 lines"


def _modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imported_stages(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "tem_core":
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tem_core" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _stage_of(module: str) -> str:
    """Private helper modules (_potential_kernels) belong to the stage they serve."""
    name = module.lstrip("_")
    for stage in FORWARD + INVERSE:
        if name == stage or name.startswith(stage + "_"):
            return stage
    return module


@pytest.mark.parametrize("module", _modules())
def test_imports_flow_one_way(module: str) -> None:
    stage = _stage_of(module)
    imported = {_stage_of(m) for m in _imported_stages(PACKAGE / f"{module}.py")}
    if stage in FORWARD:
        allowed = set(FORWARD[: FORWARD.index(stage) + 1])
        bad = {m for m in imported if m in FORWARD + INVERSE and m not in allowed}
        assert not bad, f"forward stage {module} imports stages to its right: {sorted(bad)}"
    elif stage in INVERSE:
        pass  # inverse stages may import any forward stage
    else:
        bad = {m for m in imported if m in FORWARD[1:] + INVERSE}
        assert not bad, f"helper module {module} imports physics stages: {sorted(bad)}"


@pytest.mark.parametrize("module", _modules())
def test_module_size_and_no_asserts(module: str) -> None:
    source = (PACKAGE / f"{module}.py").read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{module}.py is over {MAX_LINES} lines"
    tree = ast.parse(source)
    asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not asserts, f"{module}.py uses assert (vanishes under -O) at lines {asserts}"
