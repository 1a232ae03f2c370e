"""Shared pytest fixtures and configuration for tem_core tests."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see tem_core/__init__.py
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def data_dir() -> Path:
    """The repository's data/ folder (small public inputs with provenance)."""
    return DATA_DIR


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator: same seed, same result."""
    return torch.Generator().manual_seed(1234)
