"""Direct volume rendering: Taichi kernel vs torch twin, gradients, cameras, invariants, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import requires_cuda

from tem_core.render import Camera, TransferFunction, orthoslices, render, transfer_function


def _blobs(n: int = 12, dtype=torch.float32) -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=dtype) - (n - 1) / 2,) * 3, indexing="ij")
    return torch.exp(-((x - 2) ** 2 + y**2 + (z + 1) ** 2) / 8) + 0.5 * torch.exp(
        -((x + 3) ** 2 + (y - 2) ** 2 + z**2) / 4
    )


@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
@pytest.mark.parametrize("mode", ["emission-absorption", "mip"])
def test_taichi_matches_torch_twin(projection, mode):
    vol = _blobs()
    tf = transfer_function((0.0, 1.0), max_opacity=0.8)
    cam = Camera(image_shape=(20, 24), azimuth_rad=0.4, elevation_rad=0.3, projection=projection)
    kw = dict(mode=mode, threshold=0.1)
    fast = render(vol, cam, tf, backend="taichi", **kw)
    ref = render(vol, cam, tf, backend="torch", **kw)
    torch.testing.assert_close(fast, ref, rtol=0, atol=2e-6)  # measured 2.4e-7 (float32)


@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
@pytest.mark.parametrize("mode", ["emission-absorption", "mip"])
@pytest.mark.parametrize("scale", [1.0, 8.0])  # 8: dense, rays stop early (transmittance)
def test_taichi_adjoint_matches_torch_twin_gradients(projection, mode, scale):
    """The adjoint kernel's gradients (volume, opacity and colour tables) equal autograd
    through the torch twin, with thresholding and early ray termination."""
    gen = torch.Generator().manual_seed(1)
    cam = Camera(image_shape=(20, 24), azimuth_rad=0.4, elevation_rad=0.3, projection=projection)
    weights = torch.rand(20, 24, 4, generator=gen)
    grads = []
    for backend in ("taichi", "torch"):
        vol = (0.2 + _blobs()).requires_grad_(True)
        opacity = (scale * torch.tensor([0.05, 0.3, 0.2, 0.6, 0.4])).requires_grad_(True)
        color = torch.rand(5, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        tf = TransferFunction(opacity=opacity, color=color, value_range=(0.0, 1.5))
        image = render(vol, cam, tf, mode=mode, threshold=0.25, backend=backend)
        (image * weights).sum().backward()
        grads.append([vol.grad] + ([opacity.grad, color.grad] if mode != "mip" else []))
    for fast, ref in zip(*grads, strict=True):
        assert float(ref.abs().max()) > 0
        # measured <= 1.6e-6 of the largest entry (float32)
        torch.testing.assert_close(fast, ref, rtol=0, atol=2e-5 * float(ref.abs().max()))


def test_gradcheck_volume_and_transfer_function():
    vol = (0.2 + _blobs(5, torch.float64)).requires_grad_(True)
    opacity = torch.tensor([0.1, 0.6, 0.3, 0.9], dtype=torch.float64, requires_grad=True)
    color = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    color.requires_grad_(True)
    cam = Camera(image_shape=(3, 4), azimuth_rad=0.3, elevation_rad=0.2)

    def image(v, o, c):
        tf = TransferFunction(opacity=o, color=c, value_range=(0.0, 1.5))
        return render(v, cam, tf, min_transmittance=0.0)

    assert torch.autograd.gradcheck(image, (vol, opacity, color))
    mip = Camera(image_shape=(3, 3), azimuth_rad=0.7, projection="perspective")
    assert torch.autograd.gradcheck(lambda v: render(v, mip, mode="mip"), (vol,))


def test_empty_and_opaque_limits():
    """Zero extinction shows the background; a dense opaque volume its colour, alpha -> 1."""
    vol = torch.full((8, 8, 8), 0.5)
    cam = Camera(image_shape=(6, 6), zoom=3.0)  # every ray crosses the whole cube
    clear = TransferFunction(
        opacity=torch.zeros(2), color=torch.zeros(2, 3), value_range=(0.0, 1.0)
    )
    torch.testing.assert_close(render(vol, cam, clear)[..., :3], torch.ones(6, 6, 3))
    red = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    opaque = TransferFunction(opacity=torch.full((2,), 5.0), color=red, value_range=(0.0, 1.0))
    out = render(vol, cam, opaque, min_transmittance=0.0)
    torch.testing.assert_close(out[..., 0], torch.ones(6, 6))
    assert float(out[..., 3].min()) > 1 - 1e-6


def test_emission_absorption_of_a_uniform_slab_is_beer_lambert():
    """Along z through 8 voxels of extinction σ: opacity 1 - exp(-8σ) (step 1)."""
    sigma = 0.1
    vol = torch.full((8, 4, 4), 0.5)
    tf = TransferFunction(
        opacity=torch.full((2,), sigma), color=torch.ones(2, 3), value_range=(0.0, 1.0)
    )
    out = render(vol, Camera(image_shape=(1, 1), zoom=10.0), tf, min_transmittance=0.0)
    assert float(out[0, 0, 3]) == pytest.approx(1 - math.exp(-8 * sigma), rel=1e-5)


def test_mip_along_z_is_the_maximum_projection():
    vol = torch.rand(6, 5, 7, generator=torch.Generator().manual_seed(1))
    # orthographic along +z; one pixel per voxel column: width 7 px spans 2 * radius / zoom
    radius = 0.5 * math.sqrt(6**2 + 5**2 + 7**2)
    cam = Camera(image_shape=(5, 7), zoom=2 * radius / 7)
    # the box starts half a voxel before the first centre: unit steps sample the centres
    out = render(vol, cam, mode="mip", step_voxels=1.0)
    torch.testing.assert_close(out[..., 0], vol.amax(dim=0), rtol=0, atol=1e-6)


def test_threshold_hides_low_values():
    vol = _blobs()
    tf = transfer_function((0.0, 1.0), max_opacity=1.0)
    cam = Camera(image_shape=(10, 10))
    assert float(render(vol, cam, tf, threshold=2.0)[..., 3].max()) == 0.0
    assert float(render(vol, cam, tf, threshold=0.0)[..., 3].max()) > 0.1


def test_orthoslices_shapes():
    vol = torch.arange(4 * 5 * 6.0).reshape(4, 5, 6)
    xy, xz, zy = orthoslices(vol)
    assert xy.shape == (5, 6) and xz.shape == (4, 6) and zy.shape == (5, 4)
    torch.testing.assert_close(xy, vol[2])
    with pytest.raises(ValueError, match="index z must lie in"):
        orthoslices(vol, (9, 0, 0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(elevation_rad=2.0), "elevation_rad must lie in"),
        (dict(projection="fisheye"), "projection must be one of"),
        (dict(distance=0.5), "distance must be > 1"),
        (dict(image_shape=(0, 4)), "image_shape must be"),
        (dict(zoom=0.0), "zoom must be > 0"),
    ],
)
def test_camera_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Camera(**kwargs)


def test_render_errors():
    vol = _blobs(4)
    cam = Camera(image_shape=(2, 2))
    with pytest.raises(ValueError, match="transfer must be a TransferFunction"):
        render(vol, cam)
    with pytest.raises(ValueError, match="mode must be one of"):
        render(vol, cam, mode="xray")
    with pytest.raises(ValueError, match="volume must be a"):
        render(vol[0], cam, mode="mip")
    bad = vol.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="volume must be finite"):
        render(bad, cam, mode="mip")
    with pytest.raises(ValueError, match="color must be"):
        TransferFunction(opacity=torch.ones(3), color=torch.ones(2, 3), value_range=(0, 1))
    with pytest.raises(ValueError, match="opacity must be >= 0"):
        TransferFunction(opacity=-torch.ones(2), color=torch.ones(2, 3), value_range=(0, 1))
    with pytest.raises(ValueError, match="value_range must be"):
        transfer_function((1.0, 1.0))


@pytest.mark.cuda
@requires_cuda
def test_cuda_matches_cpu():
    vol = _blobs()
    tf = transfer_function((0.0, 1.0), max_opacity=0.8)
    cam = Camera(image_shape=(16, 16), azimuth_rad=0.5, projection="perspective")
    cpu = render(vol, cam, tf, backend="torch")
    vol_gpu = vol.cuda().requires_grad_(True)
    gpu = render(vol_gpu, cam, transfer_function((0.0, 1.0), max_opacity=0.8, device="cuda"))
    torch.testing.assert_close(gpu.detach().cpu(), cpu, rtol=0, atol=1e-5)
    gpu.sum().backward()  # the adjoint kernel on CUDA against the torch twin on the CPU
    vol_cpu = vol.clone().requires_grad_(True)
    render(vol_cpu, cam, tf, backend="torch").sum().backward()
    scale = float(vol_cpu.grad.abs().max())
    torch.testing.assert_close(vol_gpu.grad.cpu(), vol_cpu.grad, rtol=0, atol=2e-5 * scale)
