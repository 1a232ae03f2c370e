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
    "dataset",  # many simulated items on Dask: a consumer of simulate
]
# plotting draws results of every stage, inverse ones included, and nothing imports it.
INVERSE = ["mtf_fit", "ctf_fit", "denoise", "reconstruct", "render", "estimators", "fitting"]
INVERSE += ["plotting"]
INVERSE += ["cli"]  # the command line drives any stage
MAX_LINES = 550  # "modules under ~500 lines"


def _modules() -> list[str]:
    """Every source file as a dotted name below tem_core (``detector.tables``, ``potential``)."""
    names = []
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names.append(".".join(parts))
    return sorted(names)


def _path(module: str):
    parts = module.split(".")
    package = PACKAGE.joinpath(*parts)
    return package / "__init__.py" if package.is_dir() else package.with_suffix(".py")


def _imported_modules(module: str) -> set[str]:
    """Dotted names below tem_core that ``module`` imports (relative imports resolved)."""
    path = _path(module)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = ["tem_core", *base, *(node.module.split(".") if node.module else [])]
            elif node.module:
                parts = node.module.split(".")
            else:
                continue
            if parts[0] != "tem_core":
                continue
            if len(parts) > 1:
                found.add(".".join(parts[1:]))
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tem_core" and len(parts) > 1:
                    found.add(".".join(parts[1:]))
    return found


def _stage_of(module: str) -> str:
    """The stage a module serves.

    A module inside a subpackage ``tem_core/<stage>/`` belongs to that stage, and so does an
    import of ``tem_core.<stage>.<sub>``; a private top-level helper named after a stage
    (``_mtf_fit_crops``) belongs to it too.
    """
    name = module.split(".")[0].lstrip("_")
    for stage in FORWARD + INVERSE:
        if name == stage or name.startswith(stage + "_"):
            return stage
    return module.split(".")[0]


@pytest.mark.parametrize("module", _modules())
def test_imports_flow_one_way(module: str) -> None:
    stage = _stage_of(module)
    imported = {_stage_of(m) for m in _imported_modules(module)}
    if stage in FORWARD:
        allowed = set(FORWARD[: FORWARD.index(stage) + 1])
        bad = {m for m in imported if m in FORWARD + INVERSE and m not in allowed}
        assert not bad, f"forward stage {module} imports stages to its right: {sorted(bad)}"
    elif stage in INVERSE:
        pass  # inverse stages may import any forward stage
    else:
        bad = {m for m in imported if m in FORWARD[1:] + INVERSE}
        assert not bad, f"helper module {module} imports physics stages: {sorted(bad)}"


@pytest.mark.parametrize("module", [m for m in _modules() if "." in m])
def test_submodules_do_not_import_their_public_face(module: str) -> None:
    """``tem_core/<stage>/x.py`` uses its siblings, never ``tem_core.<stage>`` (an import cycle)."""
    package = module.rsplit(".", 1)[0]
    assert package not in _imported_modules(module), f"{module} imports its own package {package}"


@pytest.mark.parametrize("module", _modules())
def test_module_size_and_no_asserts(module: str) -> None:
    source = _path(module).read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{_path(module)} is over {MAX_LINES} lines"
    tree = ast.parse(source)
    asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not asserts, f"{_path(module)} uses assert (vanishes under -O) at lines {asserts}"
