"""CPU band splat (``tem_core.potential.band_kernels``): adjoint, layout, per-structure cache.

The band kernel is what ``project_gaussians`` runs on the CPU with Taichi; its torch twin is
the bucketed ``splat_torch`` path (``backend="torch"``), compared in test_potential.py too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tem_core import potential as pot
from tem_core._taichi import taichi_available
from tem_core.potential import band_kernels, kernels, streaming

requires_taichi = pytest.mark.skipif(
    not taichi_available() or torch.cuda.is_available(),
    reason="needs Taichi on the CPU (the band kernels are the CPU path)",
)
F64 = torch.float64


def _atoms(n, *, seed, box, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=F64) * torch.tensor(box, dtype=F64)
    z = torch.randint(1, 99, (n,), generator=g)
    b = torch.rand(n, generator=g, dtype=F64) * 40.0
    occ = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=F64)
    return z, pos.to(dtype), b.to(dtype), occ.to(dtype)


def _inputs(n, *, seed, box, sampling_a):
    z, pos, b, occ = _atoms(n, seed=seed, box=box)
    amp, wid, rad = streaming._atom_gaussians(z, b, occ, F64, 1e-4)
    scale = (2.0 * math.pi) * torch.rsqrt(wid)
    win_max = int(kernels.window_size_px(rad.max(), sampling_a))
    return pos, amp, scale, rad, win_max


@requires_taichi
@pytest.mark.parametrize("periodic", [True, False])
def test_gradcheck_band_splat_float64(periodic):
    # 5 x 6 grid: windows (up to 9 px here) wider than the field, folded over several tiles
    pos, amp, scale, rad, win_max = _inputs(4, seed=1, box=(4.0, 5.0, 3.0), sampling_a=0.8)
    pos, amp, scale = (t.clone().requires_grad_(True) for t in (pos, amp, scale))

    def f(p, a, s):
        return band_kernels.BandSplatFunction.apply(
            p, a, s, rad, 0.5, 2.5, 5, 6, 0.8, periodic, win_max, 2
        )

    # the tolerances of the torch twin's gradcheck (amplitudes ~ 10-100 V·Å³: finite-difference
    # noise ~1e-7 measured)
    assert torch.autograd.gradcheck(f, (pos, amp, scale), eps=1e-6, atol=1e-7, rtol=1e-5)


@requires_taichi
@pytest.mark.parametrize("periodic", [True, False])
def test_band_layout_does_not_change_the_image(periodic):
    # bands of win_max rows (the least), 16 (the default), 40 rows
    pos, amp, scale, rad, win_max = _inputs(500, seed=2, box=(30.0, 26.0, 8.0), sampling_a=0.9)
    twin = kernels._project_gaussians(
        pos, amp, scale.pow(-2) * (2 * math.pi) ** 2, rad, 1.0, 7.0, (29, 33), 0.9, periodic,
        False,
    )  # fmt: skip
    images = [
        band_kernels.BandSplatFunction.apply(
            pos, amp, scale, rad, 1.0, 7.0, 29, 33, 0.9, periodic, win_max, rows
        )
        for rows in (1, 16, 40)
    ]
    for image in images:
        # float64 rounding of sums of ~100 terms of size <= max: measured 3e-16 of the max
        assert float((image - twin).abs().max()) < 1e-14 * float(twin.abs().max())
    again = band_kernels.BandSplatFunction.apply(
        pos, amp, scale, rad, 1.0, 7.0, 29, 33, 0.9, periodic, win_max
    )
    assert torch.equal(again, images[1])  # fixed order of additions: bitwise reproducible


@requires_taichi
def test_band_height_covers_a_window_and_ignores_threads():
    assert band_kernels.band_height(win_max=20) == 20
    assert band_kernels.band_height(win_max=14) == band_kernels.BAND_ROWS == 16


@requires_taichi
def test_image_does_not_depend_on_taichi_threads(tmp_path):
    # the dataset workers resume killed items in other processes: bitwise the same image
    import subprocess
    import sys

    code = (
        "import torch, numpy as np; from tem_core import potential as pot\n"
        "g = torch.Generator().manual_seed(5)\n"
        "pos = torch.rand(3000, 3, generator=g) * torch.tensor([60.0, 60.0, 10.0])\n"
        "z = torch.randint(1, 30, (3000,), generator=g); b = torch.rand(3000, generator=g) * 30\n"
        "v = pot.slice_potential(z, pos, b, torch.ones(3000), z0_a=0.0, z1_a=10.0,\n"
        "                        shape=(64, 64), sampling_a=1.0, backend='taichi')\n"
        "np.save(__import__('sys').argv[1], v.numpy())\n"
    )
    images = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"v{threads}.npy"
        env = dict(__import__("os").environ, TI_CPU_MAX_NUM_THREADS=threads)
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env)
        images.append(np.load(out))
    assert all(np.array_equal(images[0], image) for image in images[1:])


def test_atom_coefficients_cache_hits_misses_and_bypass():
    z, pos, b, occ = _atoms(50, seed=3, box=(20.0, 20.0, 6.0))
    common = dict(z0_a=0.0, z1_a=6.0, shape=(20, 20), sampling_a=1.0, backend="torch")
    cache = streaming.ATOM_GAUSSIANS_CACHE
    first = pot.slice_potential(z, pos, b, occ, **common)
    hit = cache.get(z, b, occ, F64, 1e-4)
    assert hit is not None
    assert cache.get(z, b.clone(), occ, F64, 1e-4) is None  # another tensor: a miss
    assert cache.get(z, b, occ, torch.float32, 1e-4) is None  # other dtype: a miss
    assert torch.equal(pot.slice_potential(z, pos, b, occ, **common), first)
    b.mul_(2.0)  # in place: the version changes, the coefficients are recomputed
    assert cache.get(z, b, occ, F64, 1e-4) is None
    changed = pot.slice_potential(z, pos, b, occ, **common)
    fresh = pot.slice_potential(z, pos, b.clone(), occ.clone(), **common)
    assert torch.equal(changed, fresh)
    assert not torch.equal(changed, first)
    bg = b.clone().requires_grad_(True)  # B-factors with gradients bypass the cache
    pot.slice_potential(z, pos, bg, occ, **common).sum().backward()
    assert cache.get(z, bg, occ, F64, 1e-4) is None
    assert bg.grad is not None and float(bg.grad.abs().sum()) > 0.0


def test_cached_atoms_still_check_positions():
    z, pos, b, occ = _atoms(10, seed=4, box=(10.0, 10.0, 4.0))
    common = dict(z0_a=0.0, z1_a=4.0, shape=(10, 10), sampling_a=1.0, backend="torch")
    pot.slice_potential(z, pos, b, occ, **common)
    bad = pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="positions_a must be finite, got nan Å"):
        pot.slice_potential(z, bad, b, occ, **common)


def _taylor_erf_values(dtype, x):
    from tem_core._taichi import get_taichi
    from tem_core.potential.splat_kernels import erf_table, taylor_erf

    ti = get_taichi()
    fp = ti.f64 if dtype == torch.float64 else ti.f32
    erf, erf_gauss = taylor_erf(ti, fp)
    arr = ti.types.ndarray(dtype=fp, ndim=1)

    def evaluate(x, tab, c, e, e2, g):
        for i in range(x.shape[0]):
            e[i] = erf(x[i], tab)
            e2[i], g[i] = erf_gauss(x[i], tab, c)

    # this file's annotations are strings (__future__): Taichi needs the types themselves
    tab_t = ti.types.ndarray(dtype=fp, ndim=2)
    evaluate.__annotations__ = dict(x=arr, tab=tab_t, c=fp, e=arr, e2=arr, g=arr)
    evaluate = ti.kernel(evaluate)

    x = x.to(dtype).contiguous()
    e, e2, g = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    evaluate(x, erf_table(x.device, dtype), 2.0 / math.sqrt(math.pi), e, e2, g)
    return e, e2, g


@requires_taichi
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_taylor_erf_matches_erf_and_saturates_exactly(dtype):
    # the one erf of every splat kernel: float64 to 1e-15, float32 to its rounding; in float32
    # the early exit at |x| = 4 returns what the series gives there (exactly ±1)
    x = torch.linspace(-7.0, 7.0, 200_001, dtype=F64)
    e, e2, g = _taylor_erf_values(dtype, x)
    exact = torch.special.erf(x)
    gauss = 2.0 / math.sqrt(math.pi) * torch.exp(-x * x)
    tol = 1e-15 if dtype == F64 else 1.2e-7
    assert float((e.double() - exact).abs().max()) < tol
    assert float((e2.double() - exact).abs().max()) < tol
    inside = x.abs() < 6.0  # the derivative is 0 past the table (2/√π e^{-36} ~ 3e-16)
    assert float((g.double() - gauss)[inside].abs().max()) < (1e-15 if dtype == F64 else 2.4e-7)
    if dtype == torch.float32:
        far = x.abs() >= 3.92
        assert torch.equal(e[far], torch.sign(x[far]).float())
        assert torch.equal(e2[far], e[far])  # no early exit there: the series gives ±1 too


@requires_taichi
@pytest.mark.parametrize("periodic", [True, False])
def test_position_gradient_alone_equals_the_full_adjoint(periodic):
    # fixed atoms (amplitudes and widths without grad) take the adjoint without the width and
    # amplitude sums: the position gradient is the full adjoint's, to float64 rounding
    pos, amp, scale, rad, win_max = _inputs(300, seed=5, box=(20.0, 18.0, 6.0), sampling_a=0.9)
    weight = torch.rand(21, 23, generator=torch.Generator().manual_seed(6), dtype=F64)
    grads = []
    for shape_grads in (True, False):
        p = pos.clone().requires_grad_(True)
        a, s = (t.clone().requires_grad_(shape_grads) for t in (amp, scale))
        out = band_kernels.BandSplatFunction.apply(
            p, a, s, rad, 1.0, 5.0, 21, 23, 0.9, periodic, win_max
        )
        (out * weight).sum().backward()
        grads.append(p.grad)
        assert (a.grad is not None) == shape_grads
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-13 * float(grads[0].abs().max())
