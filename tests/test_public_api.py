"""The public API: ``tem_core`` re-exports every stage's ``__all__``, lazily (PEP 562)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import tem_core


@pytest.mark.parametrize("module", sorted(tem_core._EXPORTS))
def test_exports_match_the_stage_all(module: str) -> None:
    stage = importlib.import_module(f"tem_core.{module}")
    exported = set(tem_core._EXPORTS[module])
    missing = sorted(set(stage.__all__) - exported)
    extra = sorted(exported - set(stage.__all__))
    assert not missing, f"add {missing} to _EXPORTS[{module!r}] in tem_core/__init__.py"
    assert not extra, f"_EXPORTS[{module!r}] names {extra}, absent from tem_core.{module}.__all__"
    for name in exported:
        assert getattr(tem_core, name) is getattr(stage, name), name


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'micrographs'"):
        _ = tem_core.micrographs


def test_import_is_lazy_and_does_not_start_taichi() -> None:
    """``import tem_core`` imports no stage; the first use of a name imports only its stage."""
    code = (
        "import sys, tem_core\n"
        "print(sorted(m for m in sys.modules if m.startswith('tem_core.')))\n"
        "print('taichi' in sys.modules)\n"
        "tem_core.read_mrc\n"
        "print('tem_core.io' in sys.modules, 'tem_core.simulate' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    modules, taichi, after = done.stdout.splitlines()
    assert modules == "['tem_core.units', 'tem_core.validation']"
    assert taichi == "False"
    assert after == "True False"


def test_dir_lists_the_public_names_and_stages() -> None:
    names = dir(tem_core)
    assert {"micrograph", "Detector", "detector", "grids", "validation"} <= set(names)
