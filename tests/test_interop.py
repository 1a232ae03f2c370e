"""cupy / NumPy arrays through DLPack: no copies in, results back in the caller's kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from tem_core import io as tio
from tem_core.detector import Detector, apply_mtf, detect, expected_image, sample_counts
from tem_core.interop import accepts_arrays, as_tensor, is_foreign_array, to_array
from tem_core.optics import Microscope, apply_ctf, image_intensity

SCOPE = Microscope(energy_ev=300e3)


def _wave(shape=(32, 32), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    phase = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    return torch.polar(torch.ones_like(phase), phase)


def test_numpy_in_and_out_share_memory() -> None:
    array = np.arange(12.0).reshape(3, 4)
    tensor = as_tensor(array)
    tensor[0, 0] = -1.0  # a view, not a copy
    assert array[0, 0] == -1.0
    back = to_array(tensor, like=array)
    back[1, 1] = 42.0
    assert float(tensor[1, 1]) == 42.0
    frozen = np.arange(3.0)
    frozen.flags.writeable = False
    assert torch.equal(as_tensor(frozen), torch.arange(3.0, dtype=torch.float64))
    assert is_foreign_array(array) and not is_foreign_array(tensor)
    assert not is_foreign_array([1.0, 2.0]) and not is_foreign_array(np.ndarray)
    with pytest.raises(TypeError, match=r"expected a tensor or an array with __dlpack__, got list"):
        as_tensor([1.0])


def test_public_functions_take_and_return_numpy() -> None:
    wave = _wave()
    kw = dict(sampling_a=1.0, microscope=SCOPE, defocus_a=1e4)
    expected = apply_ctf(wave, **kw)
    got = apply_ctf(wave.numpy(), **kw)
    assert isinstance(got, np.ndarray) and np.array_equal(got, expected.numpy())
    intensity = image_intensity(expected)
    got_i = image_intensity(expected.numpy())
    assert isinstance(got_i, np.ndarray) and np.array_equal(got_i, intensity.numpy())
    detector = Detector()
    counts = expected_image(intensity, detector=detector, dose_e_per_a2=20.0, sampling_a=1.0)
    got_c = expected_image(intensity.numpy(), detector=detector, dose_e_per_a2=20.0, sampling_a=1.0)
    assert isinstance(got_c, np.ndarray) and np.array_equal(got_c, counts.numpy())
    mtf = detector.mtf((32, 32), dtype=torch.float64)
    assert np.array_equal(apply_mtf(counts.numpy(), mtf.numpy()), apply_mtf(counts, mtf).numpy())
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    noisy = detect(
        intensity.numpy(), detector=detector, dose_e_per_a2=20.0, sampling_a=1.0, generator=g1
    )
    reference = detect(
        intensity, detector=detector, dose_e_per_a2=20.0, sampling_a=1.0, generator=g2
    )
    assert isinstance(noisy, np.ndarray) and np.array_equal(noisy, reference.numpy())
    g1, g2 = (torch.Generator().manual_seed(6) for _ in range(2))
    assert np.array_equal(
        sample_counts(counts.numpy(), generator=g1), sample_counts(counts, generator=g2).numpy()
    )


def test_torch_callers_see_no_change() -> None:
    wave = _wave()
    out = image_intensity(wave)
    assert isinstance(out, torch.Tensor)
    with pytest.raises(TypeError, match=r"wave must be a torch.Tensor, got list"):
        image_intensity([1.0, 2.0])
    wave.requires_grad_(False)
    w = _wave().requires_grad_(True)
    image_intensity(w).sum().backward()  # autograd through the decorator
    # d Σ|w|² : torch's convention for a real loss of complex w gives 2w (exact)
    torch.testing.assert_close(w.grad, 2 * w.detach(), rtol=0, atol=0)


def test_decorator_converts_tuples_and_keyword_arrays() -> None:
    @accepts_arrays
    def split(x, *, y):
        return x + y, [x * y]

    a, (b,) = split(np.ones(2), y=np.full(2, 3.0))
    assert isinstance(a, np.ndarray) and a.tolist() == [4.0, 4.0] and b.tolist() == [3.0, 3.0]


def test_write_mrc_accepts_dlpack_arrays(tmp_path) -> None:
    class Producer:  # any DLPack producer other than numpy/cupy (e.g. JAX) goes through torch
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kwargs):
            return self.t.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    image = torch.arange(12.0).reshape(3, 4)
    path = tio.write_mrc(tmp_path / "a.mrc", Producer(image), voxel_size_a=1.5)
    data, pixel = tio.read_mrc(path)
    assert np.array_equal(data, image.numpy()) and pixel == pytest.approx(1.5)


@pytest.mark.cuda
@requires_cuda
def test_cupy_in_and_out_without_copies(tmp_path) -> None:
    cupy = pytest.importorskip("cupy")
    wave = _wave().cuda()
    cp_wave = cupy.from_dlpack(wave)
    viewed = as_tensor(cp_wave)
    assert viewed.data_ptr() == cp_wave.data.ptr and viewed.device.type == "cuda"
    kw = dict(sampling_a=1.0, microscope=SCOPE, defocus_a=1e4)
    got = apply_ctf(cp_wave, **kw)
    assert isinstance(got, cupy.ndarray)
    expected = apply_ctf(wave, **kw)
    assert torch.equal(torch.from_dlpack(got), expected)
    back = to_array(expected, like=cp_wave)
    assert back.data.ptr == expected.data_ptr()  # no copy on the way out either
    g1 = torch.Generator(device="cuda").manual_seed(1)
    g2 = torch.Generator(device="cuda").manual_seed(1)
    counts = image_intensity(got) * 20.0
    assert isinstance(counts, cupy.ndarray)
    noisy = sample_counts(counts, generator=g1)
    assert isinstance(noisy, cupy.ndarray)
    assert torch.equal(
        torch.from_dlpack(noisy), sample_counts(torch.from_dlpack(counts), generator=g2)
    )
    path = tio.write_mrc(tmp_path / "c.mrc", noisy.real.astype(cupy.float32), voxel_size_a=1.0)
    assert np.array_equal(tio.read_mrc(path)[0], cupy.asnumpy(noisy.real.astype(cupy.float32)))
