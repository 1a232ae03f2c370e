"""One test suite for every linear operator in tests/operator_registry.py.

Each operator ``A`` runs through the same checks, in float64 / complex128 on a tiny grid:
linearity, adjointness ``⟨A x, y⟩ = ⟨x, Aᴴ y⟩``, agreement of autograd's vector-Jacobian
product with the stated adjoint, ``gradcheck``, and CPU/CUDA parity (skipped without a GPU).
"""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda
from operator_registry import REGISTRY, RELATIVE_TOLERANCE, LinearOperator

from tem_core._taichi import taichi_available

CPU = torch.device("cpu")
NAMES = sorted(REGISTRY)


def _operator(name: str, device: torch.device = CPU) -> LinearOperator:
    if name.endswith("_taichi") and not taichi_available():
        pytest.skip("Taichi is not available")
    return REGISTRY[name](device)


def _random(shape, dtype, seed: int, device=CPU) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        real = torch.randn(shape, generator=g, dtype=torch.float64)
        return torch.complex(real, torch.randn(shape, generator=g, dtype=torch.float64)).to(device)
    return torch.randn(shape, generator=g, dtype=dtype).to(device)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ = Σ conj(a) b (real dot product for real tensors)."""
    return torch.vdot(a.reshape(-1), b.reshape(-1).to(a.dtype))


def _adjoint(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """The stated adjoint, or autograd's vector-Jacobian product (the hand-written backward)."""
    if op.adjoint is not None:
        return op.adjoint(y)
    x = torch.zeros(op.in_shape, dtype=op.in_dtype, device=y.device, requires_grad=True)
    (grad,) = torch.autograd.grad(op.forward(x), x, grad_outputs=y)
    return grad


def test_registry_lists_each_operator_family() -> None:
    families = {"mtf", "ctf", "fresnel_propagator", "bandlimit", "splat_taichi", "splat_torch"}
    assert families <= set(REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_linearity(name: str) -> None:
    op = _operator(name)
    x, y = (_random(op.in_shape, op.in_dtype, seed) for seed in (1, 2))
    a, b = (0.7 - 0.3j, -1.9 + 0.5j) if op.in_dtype.is_complex else (0.7, -1.9)
    left = op.forward(a * x + b * y)
    right = a * op.forward(x) + b * op.forward(y)
    error = torch.linalg.vector_norm(left - right) / torch.linalg.vector_norm(right)
    assert error.item() < RELATIVE_TOLERANCE
    assert torch.linalg.vector_norm(op.forward(x)).item() > 0  # not the zero operator


@pytest.mark.parametrize("name", NAMES)
def test_adjointness(name: str) -> None:
    op = _operator(name)
    x = _random(op.in_shape, op.in_dtype, 3)
    ax = op.forward(x)
    y = _random(tuple(ax.shape), ax.dtype, 4)
    left, right = _inner(ax, y), _inner(x, _adjoint(op, y))
    scale = torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y)
    assert (abs(left - right) / scale).item() < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_autograd_backward_is_the_adjoint(name: str) -> None:
    op = _operator(name)
    if op.adjoint is None:
        pytest.skip("the backward itself is the adjoint under test (test_adjointness)")
    x = _random(op.in_shape, op.in_dtype, 5).requires_grad_(True)
    out = op.forward(x)
    y = _random(tuple(out.shape), out.dtype, 6)
    (vjp,) = torch.autograd.grad(out, x, grad_outputs=y)
    expected = op.adjoint(y)
    error = torch.linalg.vector_norm(vjp - expected) / torch.linalg.vector_norm(expected)
    assert error.item() < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name: str) -> None:
    op = _operator(name)
    x = _random(op.in_shape, op.in_dtype, 7).requires_grad_(True)
    assert torch.autograd.gradcheck(op.forward, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu_and_gradchecks(name: str) -> None:
    cuda = torch.device("cuda")
    cpu_op, gpu_op = _operator(name), _operator(name, cuda)
    x = _random(cpu_op.in_shape, cpu_op.in_dtype, 8)
    cpu, gpu = cpu_op.forward(x), gpu_op.forward(x.to(cuda))
    assert gpu.device.type == "cuda"
    error = torch.linalg.vector_norm(gpu.cpu() - cpu) / torch.linalg.vector_norm(cpu)
    assert error.item() < RELATIVE_TOLERANCE
    y = _random(tuple(cpu.shape), cpu.dtype, 9)
    adj_cpu, adj_gpu = _adjoint(cpu_op, y), _adjoint(gpu_op, y.to(cuda))
    error = torch.linalg.vector_norm(adj_gpu.cpu() - adj_cpu) / torch.linalg.vector_norm(adj_cpu)
    assert error.item() < RELATIVE_TOLERANCE
    # the CUDA backward (Taichi's adjoint kernel for the splat) against finite differences
    xg = x.to(cuda).requires_grad_(True)
    assert torch.autograd.gradcheck(gpu_op.forward, (xg,), eps=1e-6, atol=1e-8, rtol=1e-6)
