"""Shared pytest fixtures and configuration for tem_core tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

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
