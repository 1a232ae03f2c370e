"""Parity with peers without the peers installed: arrays they produced, stored in the repo.

benchmarks/make_reference_data.py (run in .venv-compare) wrote tests/reference_data/*.npz
with the peer's output, its version and the agreement measured when it was made; the
tolerance here is 10x that measured agreement (FFT libraries differ in the last bits).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from tem_core.mtf_fit import focal_frequency_loss
from tem_core.propagate import multislice

DATA = REPO_ROOT / "tests" / "reference_data"


def test_multislice_matches_abtem_through_its_own_slices() -> None:
    ref = np.load(DATA / "abtem_multislice.npz")
    assert str(ref["peer_version"]).startswith("abtem 1.0")
    measured = float(ref["measured_rel_l2_scattered"])
    assert 0 < measured < 1e-7  # as recorded: round-off-level agreement with the taper off
    wave = multislice(
        (torch.from_numpy(s) for s in ref["slices_v_a"]),
        sampling_a=float(ref["sampling_a"][0]),
        slice_thickness_a=torch.from_numpy(ref["slice_thickness_a"]),
        energy_ev=float(ref["energy_ev"]),
    ).numpy()
    scattered = np.linalg.norm(ref["wave"] - 1.0)
    assert scattered > 0.02 * np.linalg.norm(ref["wave"])  # it scatters (3 % of the norm)
    assert np.linalg.norm(wave - ref["wave"]) / scattered < 10 * measured


def test_focal_frequency_loss_matches_the_reference_package() -> None:
    ref = np.load(DATA / "ffl_loss.npz")
    assert str(ref["peer_version"]).startswith("focal-frequency-loss")
    pred, target = torch.from_numpy(ref["pred"]), torch.from_numpy(ref["target"])
    tolerance = 10 * max(float(ref["measured_max_rel_error"]), np.finfo(np.float64).eps)
    for alpha, log_matrix, batch_matrix, loss in zip(
        ref["alpha"], ref["log_matrix"], ref["batch_matrix"], ref["loss"], strict=True
    ):
        ours = focal_frequency_loss(
            pred, target, alpha=float(alpha), log_weight=bool(log_matrix),
            batch_max=bool(batch_matrix),
        )  # fmt: skip
        assert float(ours) == pytest.approx(float(loss), rel=tolerance), (alpha, log_matrix)
    assert len(set(ref["loss"].tolist())) == len(ref["loss"])  # the settings matter
