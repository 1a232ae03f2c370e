"""Edge-fraction buffers reused along a stream of slices (kernels.SplatScratch)."""

from __future__ import annotations

import pytest
import torch

from tem_core._taichi import taichi_available
from tem_core.potential import kernels, streaming

requires_taichi = pytest.mark.skipif(
    not taichi_available() or torch.cuda.is_available(),
    reason="needs Taichi on the CPU",
)


def _atoms(n, *, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, 3, generator=g, dtype=torch.float64)
           * torch.tensor([60.0, 66.0, 30.0], dtype=torch.float64)).to(dtype)  # fmt: skip
    z = torch.randint(1, 99, (n,), generator=g)
    b = (torch.rand(n, generator=g, dtype=torch.float64) * 40.0).to(dtype)
    occ = torch.ones(n, dtype=dtype)
    amp, wid, rad = streaming._atom_gaussians(z, b, occ, dtype, 1e-4)
    return pos, amp, wid, rad


def _project(pos, amp, wid, rad, z0, z1, scratch, periodic=True):
    return kernels.project_gaussians(
        pos, amp, wid, rad, z0_a=z0, z1_a=z1, shape=(64, 72), sampling_a=1.0,
        periodic=periodic, use_taichi=True, scratch=scratch,
    )  # fmt: skip


@requires_taichi
@pytest.mark.parametrize("periodic", [True, False])
def test_scratch_gives_the_same_slices_bitwise(periodic):
    pos, amp, wid, rad = _atoms(300, seed=3, dtype=torch.float32)
    scratch = kernels.SplatScratch()
    # < 0.1 atoms per pixel: the bucketed kernel (the band kernel takes no scratch); slices
    # of different atom counts take the buffers larger and smaller in turn
    assert pos.shape[0] < kernels.BAND_MIN_ATOMS_PER_PIXEL * 64 * 72
    for z0, z1 in [(0.0, 30.0), (10.0, 12.0), (0.0, 30.0), (5.0, 20.0)]:
        near = (pos[:, 2] + rad > z0) & (pos[:, 2] - rad < z1)
        args = (pos[near], amp[near], wid[near], rad[near], z0, z1)
        assert torch.equal(_project(*args, scratch, periodic), _project(*args, None, periodic))
    assert scratch.nbytes > 0


@requires_taichi
def test_scratch_is_not_used_when_a_gradient_is_needed():
    pos, amp, wid, rad = _atoms(50, seed=4, dtype=torch.float64)
    scratch = kernels.SplatScratch()
    pos_g = pos.clone().requires_grad_(True)
    out = _project(pos_g, amp, wid, rad, 0.0, 30.0, scratch)
    assert scratch.nbytes == 0  # the edge fractions are kept for backward, not reused
    (grad,) = torch.autograd.grad(out.square().sum(), pos_g)
    pos_r = pos.clone().requires_grad_(True)
    ref = _project(pos_r, amp, wid, rad, 0.0, 30.0, None)
    (grad_ref,) = torch.autograd.grad(ref.square().sum(), pos_r)
    assert torch.equal(grad, grad_ref)


def test_scratch_views_share_one_growing_buffer():
    scratch = kernels.SplatScratch()
    a = scratch.take("dx", (10, 5, 4), torch.float32, "cpu")
    b = scratch.take("dx", (8, 5, 4), torch.float32, "cpu")
    assert a.is_contiguous() and b.is_contiguous()
    assert a.data_ptr() == b.data_ptr()  # a smaller request reuses the buffer
    c = scratch.take("dx", (100, 5, 4), torch.float32, "cpu")
    assert c.shape == (100, 5, 4) and scratch.nbytes == (2000 + 500) * 4  # 25 % headroom
