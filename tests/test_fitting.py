"""tem_core.fitting: pose helpers, Poisson likelihood, finite differences and the Adam loop."""

from __future__ import annotations

import math

import pytest
import torch

from tem_core.fitting import (
    central_difference,
    fit,
    poisson_nll,
    posed,
    rotation_from_rotvec,
)
from tem_core.structure import AtomicModel

DTYPE = torch.float64


def test_rotation_from_rotvec_matches_rodrigues_about_z() -> None:
    angle = 0.7
    r = rotation_from_rotvec(torch.tensor([0.0, 0.0, angle], dtype=DTYPE))
    c, s = math.cos(angle), math.sin(angle)
    want = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=DTYPE)
    torch.testing.assert_close(r, want, rtol=0, atol=1e-12)


def test_rotation_from_rotvec_is_proper_and_identity_at_zero() -> None:
    w = torch.tensor([0.3, -1.1, 0.4], dtype=DTYPE)
    r = rotation_from_rotvec(w)
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=DTYPE), rtol=0, atol=1e-12)
    assert abs(float(torch.linalg.det(r)) - 1.0) < 1e-12
    torch.testing.assert_close(r @ w, w, rtol=0, atol=1e-12)  # the axis is fixed
    zero = rotation_from_rotvec(torch.zeros(3, dtype=DTYPE))
    torch.testing.assert_close(zero, torch.eye(3, dtype=DTYPE), rtol=0, atol=0)


def test_rotation_from_rotvec_gradcheck_including_zero() -> None:
    for w in (torch.tensor([0.2, -0.5, 0.9]), torch.zeros(3)):
        w = w.to(DTYPE).requires_grad_(True)
        assert torch.autograd.gradcheck(rotation_from_rotvec, (w,), eps=1e-6, atol=1e-8)


def test_rotation_from_rotvec_errors() -> None:
    with pytest.raises(ValueError, match=r"rotvec must have shape \(3,\), got \(2,\)"):
        rotation_from_rotvec(torch.zeros(2))
    with pytest.raises(TypeError, match="rotvec must be a torch.Tensor"):
        rotation_from_rotvec([0.0, 0.0, 0.0])


def _model() -> AtomicModel:
    pos = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 1.0]], dtype=DTYPE)
    return AtomicModel(
        atomic_numbers=torch.tensor([6, 7, 8]),
        positions_a=pos,
        b_factors_a2=torch.zeros(3, dtype=DTYPE),
        occupancies=torch.ones(3, dtype=DTYPE),
    )


def test_posed_rotates_about_the_centre_and_shifts() -> None:
    model = _model()
    centre = model.center_a()
    moved = posed(
        model,
        rotvec=torch.tensor([0.0, 0.0, math.pi / 2], dtype=DTYPE),
        shift_a=torch.tensor([1.0, 2.0, 3.0], dtype=DTYPE),
    )
    # the centre moves by the shift only; distances between atoms are kept
    torch.testing.assert_close(moved.center_a(), centre + torch.tensor([1.0, 2.0, 3.0]).double())
    torch.testing.assert_close(
        torch.cdist(moved.positions_a, moved.positions_a),
        torch.cdist(model.positions_a, model.positions_a),
    )
    # a quarter turn about z maps the offset (x, y) to (-y, x)
    offset = model.positions_a[1] - centre
    want = (
        centre
        + torch.stack([-offset[1], offset[0], offset[2]])
        + torch.tensor([1.0, 2.0, 3.0], dtype=DTYPE)
    )
    torch.testing.assert_close(moved.positions_a[1], want)
    with pytest.raises(ValueError, match=r"shift_a must have shape \(3,\)"):
        posed(model, rotvec=torch.zeros(3, dtype=DTYPE), shift_a=torch.zeros(2, dtype=DTYPE))


def test_poisson_nll_minimum_at_the_counts_and_gradient() -> None:
    counts = torch.tensor([3.0, 0.0, 7.0], dtype=DTYPE)
    lam = torch.tensor([2.0, 0.5, 9.0], dtype=DTYPE, requires_grad=True)
    loss = poisson_nll(counts, lam)
    want = float((lam - counts * torch.log(lam)).sum())
    assert abs(float(loss) - want) < 1e-12
    (g,) = torch.autograd.grad(loss, lam)
    torch.testing.assert_close(g, 1 - counts / lam.detach())  # d/dλ (λ − k log λ)
    with pytest.raises(ValueError, match="expected must be > 0 counts everywhere, got minimum 0"):
        poisson_nll(counts, torch.tensor([1.0, 0.0, 2.0], dtype=DTYPE))


def test_central_difference_is_exact_for_quadratics() -> None:
    d = central_difference(lambda t: 3 * t**2 + 2 * t, torch.tensor(1.5, dtype=DTYPE), 0.1)
    assert abs(float(d) - (6 * 1.5 + 2)) < 1e-12
    with pytest.raises(ValueError, match="step must be > 0, got 0"):
        central_difference(lambda t: t, torch.tensor(1.0), 0.0)
    with pytest.raises(ValueError, match=r"value must be a 0-d tensor, got shape \(2,\)"):
        central_difference(lambda t: t, torch.zeros(2), 0.1)


def test_fit_recovers_a_quadratic_minimum_in_its_own_units() -> None:
    # parameters on very different scales (Å and rad) reach the minimum with one rate
    truth = {"defocus_a": 12_345.0, "angle_rad": 0.3}
    scales = {"defocus_a": 1000.0, "angle_rad": 0.1}

    def loss(p):
        return sum(((p[k] - truth[k]) / scales[k]) ** 2 for k in truth)

    history = fit(
        loss,
        {"defocus_a": 10_000.0, "angle_rad": 0.0},
        scales=scales,
        steps=200,
        learning_rate=0.1,
    )
    final = history.final()
    # measured: errors 1.5e-3 scale units or less after 200 steps (Adam's last steps are
    # ~1e-3 of a scale as the cosine schedule ends); 3e-3 of each scale allowed
    assert abs(float(final["defocus_a"]) - truth["defocus_a"]) < 3e-3 * scales["defocus_a"]
    assert abs(float(final["angle_rad"]) - truth["angle_rad"]) < 3e-3 * scales["angle_rad"]
    assert len(history.loss) == 201 and history.trace("angle_rad").shape == (201,)
    assert history.loss[-1] < 2e-5 < 5.0 < history.loss[0]


def test_fit_errors() -> None:
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        fit(lambda p: p["x"] ** 2, {"x": 1.0}, scales={"x": 1.0}, steps=0)
    with pytest.raises(ValueError, match=r"scales must name the same parameters"):
        fit(lambda p: p["x"] ** 2, {"x": 1.0}, scales={"y": 1.0}, steps=1)
    with pytest.raises(ValueError, match=r"scales\['x'\] must be > 0, got -1"):
        fit(lambda p: p["x"] ** 2, {"x": 1.0}, scales={"x": -1.0}, steps=1)
    with pytest.raises(ValueError, match=r"loss_fn must return a 0-d tensor"):
        fit(lambda p: p["x"] * torch.ones(2), {"x": 1.0}, scales={"x": 1.0}, steps=1)
    with pytest.raises(KeyError, match="name must be one of"):
        fit(lambda p: p["x"] ** 2, {"x": 1.0}, scales={"x": 1.0}, steps=1).trace("y")
