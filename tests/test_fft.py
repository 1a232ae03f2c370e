"""The FFT wrappers match numpy at every shape, including torch's broken 2048² complex64 case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tem_core._fft import fft2, ifft2
from tem_core.detector import Detector, detect


@pytest.mark.parametrize("n", [64, 2048])
@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
def test_wrappers_match_numpy(n: int, norm: str) -> None:
    x = torch.randn(n, n, dtype=torch.complex64, generator=torch.Generator().manual_seed(n))
    ref_fwd = np.fft.fft2(x.numpy().astype(np.complex128), norm=norm)
    ref_inv = np.fft.ifft2(x.numpy().astype(np.complex128), norm=norm)
    for got, ref in ((fft2(x, norm=norm), ref_fwd), (ifft2(x, norm=norm), ref_inv)):
        err = np.abs(got.numpy() - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"n={n}, norm={norm}: relative error {err:.3g}"


def test_round_trip_and_gradient_at_2048() -> None:
    """The shape pytorch#169670 breaks: the round trip and its gradient are the identity."""
    x = torch.randn(2048, 2048, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    y = ifft2(fft2(x))
    assert torch.allclose(y.detach(), x.detach(), atol=1e-4)
    y.real.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x.grad), atol=1e-4)


def test_detector_mtf_keeps_the_mean_at_2048() -> None:
    """End to end: a flat 2048² image through the detector MTF keeps its mean."""
    flat = torch.ones(2048, 2048)
    counts = detect(flat, detector=Detector(), dose_e_per_a2=10.0, sampling_a=1.0)
    assert abs(float(counts.mean()) - 10.0) < 1e-3


def test_bad_norm_is_named() -> None:
    with pytest.raises(ValueError, match="norm must be one of"):
        fft2(torch.zeros(4, 4, dtype=torch.complex64), norm="unitary")
