"""Gradients flow from a loss on the final detector image to every continuous parameter.

The pipeline is the package's own: atoms → :func:`tem_core.potential.iter_slice_potentials`
→ :func:`tem_core.propagate.multislice` → :func:`tem_core.simulate.image_plane_intensity`
→ :func:`tem_core.detector.expected_image`, on a tiny float64 problem (16² pixels of 1 Å,
3 atoms, 2 slices). Each parameter group is checked with ``torch.autograd.gradcheck``
(central finite differences vs autograd) and its gradient must be non-zero. Parameters are
passed as ``value = scale · u`` with ``u`` of order one, so that finite differences in
``u`` probe physically meaningful steps (e.g. Cs in mm, defocus in µm).

The slice edges are fixed by the carbon support film (20 Å thick, hole much wider than the
field, so no carbon in view): moving atoms or changing the ice thickness does not move them,
and finite differences see the same discretisation as autograd.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from tem_core import units
from tem_core.detector import Detector, expected_electrons, expected_image, sample_electrons
from tem_core.estimators import score_function_surrogate
from tem_core.optics import Microscope
from tem_core.potential import PotentialSettings, iter_slice_potentials, slice_potential
from tem_core.propagate import multislice
from tem_core.simulate import Imaging, image_plane_intensity, micrograph
from tem_core.specimen import IceSlab, Specimen
from tem_core.structure import AtomicModel

DTYPE = torch.float64
SHAPE = (16, 16)
SAMPLING_A = 1.0
SLICE_A = 10.0
EXTENT_A = (16.0, 16.0)
ENERGY_EV = 300.0 * units.KV_TO_EV
Z = torch.tensor([6, 7, 8])
POSITIONS_A = [[6.0, 7.0, 4.0], [10.2, 9.1, 6.3], [7.7, 12.4, 8.8]]
SETTINGS = PotentialSettings(
    shape=SHAPE, sampling_a=SAMPLING_A, slice_thickness_a=SLICE_A, backend="torch"
)

# name: (value in internal units, scale of the O(1) variable u)
BASE = {
    "positions_a": (POSITIONS_A, 1.0),
    "b_factors_a2": ([20.0, 30.0, 25.0], 10.0),
    "ice_thickness_a": (8.0, 1.0),
    "pose_rotvec": ([0.1, -0.2, 0.3], 1.0),
    "pose_shift_a": ([0.3, -0.2, 0.1], 1.0),
    "defocus_a": (1.0 * units.UM_TO_A, units.UM_TO_A),
    "astigmatism_a": (500.0, 100.0),
    "astigmatism_angle_rad": (0.3, 1.0),
    "cs_a": (2.7 * units.MM_TO_A, units.MM_TO_A),
    "cc_a": (2.7 * units.MM_TO_A, units.MM_TO_A),
    "energy_spread_ev": (0.7, 1.0),
    "illumination_semiangle_rad": (0.1 * units.MRAD_TO_RAD, units.MRAD_TO_RAD),
    "phase_plate_rad": (0.5, 1.0),
    "dose_e_per_a2": (50.0, 10.0),
    "gain_counts_per_e": (1.5, 1.0),
    "a": (0.7, 1.0),
    "b": (0.2, 1.0),
    "c": (0.1, 1.0),
    "alpha": (10.0, 10.0),
    "beta": (40.0, 10.0),
    "p": (1.2, 1.0),
    "q": (0.9, 1.0),
}
MICROSCOPE_FIELDS = (
    "cs_a",
    "cc_a",
    "energy_spread_ev",
    "illumination_semiangle_rad",
    "phase_plate_rad",
)
IMAGING_FIELDS = ("defocus_a", "astigmatism_a", "astigmatism_angle_rad")
DETECTOR_FIELDS = ("gain_counts_per_e", "a", "b", "c", "alpha", "beta", "p", "q")
WEIGHTS = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0), dtype=DTYPE) - 0.5


def _value(name: str, overrides: dict[str, torch.Tensor]) -> torch.Tensor:
    if name in overrides:
        return overrides[name]
    return torch.as_tensor(BASE[name][0], dtype=DTYPE)


def rotation_from_rotvec(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``exp([ω]×)`` of an axis-angle vector ω [rad] (differentiable)."""
    zero = torch.zeros((), dtype=rotvec.dtype)
    wx, wy, wz = rotvec.unbind()
    skew = torch.stack(
        [torch.stack([zero, -wz, wy]), torch.stack([wz, zero, -wx]), torch.stack([-wy, wx, zero])]
    )
    return torch.linalg.matrix_exp(skew)


def build_specimen(overrides: dict[str, torch.Tensor]) -> Specimen:
    """Atoms (posed: x' = R(ω)(x − c) + c + t, c fixed) in an ice slab, all kept in the graph."""
    positions = _value("positions_a", overrides)
    model = AtomicModel(
        atomic_numbers=Z,
        positions_a=positions,
        b_factors_a2=_value("b_factors_a2", overrides),
        occupancies=torch.ones(3, dtype=DTYPE),
    )
    centre = torch.tensor(POSITIONS_A, dtype=DTYPE).mean(dim=0)
    rotation = rotation_from_rotvec(_value("pose_rotvec", overrides))
    model = model.transformed(
        rotation, centre - rotation @ centre + _value("pose_shift_a", overrides)
    )
    ice = IceSlab(
        thickness_a=_value("ice_thickness_a", overrides),
        hole_diameter_a=1000.0,
        support="carbon",
        support_thickness_a=20.0,
    )
    return Specimen(
        atoms=model,
        extent_a=EXTENT_A,
        ice=ice,
        slab_center_a=torch.tensor([8.0, 8.0, 6.5], dtype=DTYPE),
        slab_normal=torch.tensor([0.0, 0.0, 1.0], dtype=DTYPE),
        particle_centers_a=torch.zeros(0, 3, dtype=DTYPE),
        particle_radii_a=torch.zeros(0, dtype=DTYPE),
        particle_rotations=torch.zeros(0, 3, 3, dtype=DTYPE),
    )


def intensity_of(overrides: dict[str, torch.Tensor]) -> torch.Tensor:
    wave = multislice(
        iter_slice_potentials(build_specimen(overrides), SETTINGS),
        sampling_a=SAMPLING_A,
        slice_thickness_a=SLICE_A,
        energy_ev=ENERGY_EV,
    )
    microscope = Microscope(
        energy_ev=ENERGY_EV, **{k: _value(k, overrides) for k in MICROSCOPE_FIELDS}
    )
    return image_plane_intensity(
        wave,
        sampling_a=SAMPLING_A,
        microscope=microscope,
        **{k: _value(k, overrides) for k in IMAGING_FIELDS},
    )


def image_loss(overrides: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weighted sum of the expected detector image [counts], normalised by the dose."""
    detector = Detector(**{k: _value(k, overrides) for k in DETECTOR_FIELDS})
    dose = _value("dose_e_per_a2", overrides)
    image = expected_image(
        intensity_of(overrides), detector=detector, dose_e_per_a2=dose, sampling_a=SAMPLING_A
    )
    return (WEIGHTS * image).sum() / BASE["dose_e_per_a2"][0]


def check_group(names: tuple[str, ...]) -> None:
    """gradcheck of the image loss wrt ``names`` (in O(1) variables) and non-zero gradients."""
    units_vars = [
        (torch.as_tensor(BASE[n][0], dtype=DTYPE) / BASE[n][1]).requires_grad_(True) for n in names
    ]

    def loss(*us: torch.Tensor) -> torch.Tensor:
        return image_loss({n: u * BASE[n][1] for n, u in zip(names, us, strict=True)})

    assert torch.autograd.gradcheck(loss, tuple(units_vars), eps=1e-6, atol=1e-6, rtol=1e-4)
    grads = torch.autograd.grad(loss(*units_vars), units_vars)
    for name, g in zip(names, grads, strict=True):
        assert torch.isfinite(g).all(), name
        assert float(g.abs().max()) > 1e-6, f"no gradient reaches {name}: {g}"


def test_loss_is_nontrivial() -> None:
    intensity = intensity_of({})
    assert intensity.dtype == DTYPE and intensity.shape == SHAPE
    assert float(intensity.std()) > 1e-3  # the atoms give contrast


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(("a", "b", "c", "alpha", "beta", "p", "q"), id="mtf"),
        pytest.param(("gain_counts_per_e", "dose_e_per_a2"), id="gain-dose"),
        pytest.param(
            ("defocus_a", "astigmatism_a", "astigmatism_angle_rad", "cs_a"), id="aberrations"
        ),
        pytest.param(
            ("energy_spread_ev", "cc_a", "illumination_semiangle_rad", "phase_plate_rad"),
            id="envelopes",
        ),
        pytest.param(("ice_thickness_a",), id="ice"),
        pytest.param(("positions_a", "b_factors_a2"), id="atoms"),
        pytest.param(("pose_rotvec", "pose_shift_a"), id="pose"),
    ],
)
def test_gradcheck_parameter_group(names: tuple[str, ...]) -> None:
    check_group(names)


def test_atoms_gradcheck_with_the_default_backend(monkeypatch) -> None:
    # backend="auto": the Taichi kernel and its hand-written adjoint when Taichi runs here
    settings = PotentialSettings(shape=SHAPE, sampling_a=SAMPLING_A, slice_thickness_a=SLICE_A)
    monkeypatch.setattr(sys.modules[__name__], "SETTINGS", settings)
    check_group(("positions_a", "b_factors_a2"))


def test_slice_potential_gradcheck_direct() -> None:
    # the atoms' potential on its own, from atom tensors (no Specimen)
    pos = torch.tensor(POSITIONS_A, dtype=DTYPE, requires_grad=True)
    b = torch.tensor([20.0, 30.0, 25.0], dtype=DTYPE, requires_grad=True)
    occ = torch.tensor([0.9, 0.8, 0.6], dtype=DTYPE, requires_grad=True)

    def f(pos, b, occ):
        v = slice_potential(
            Z, pos, b, occ, z0_a=3.0, z1_a=7.0, shape=SHAPE, sampling_a=SAMPLING_A, backend="torch"
        )
        return (WEIGHTS * v).sum()

    assert torch.autograd.gradcheck(f, (pos, b, occ), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_dqe_does_not_enter_the_expected_image() -> None:
    # the DQE only changes the noise (variance N/DQE): expected_image ignores it
    intensity = intensity_of({}).detach()
    images = [
        expected_image(
            intensity, detector=Detector(dqe=dqe), dose_e_per_a2=50.0, sampling_a=SAMPLING_A
        )
        for dqe in (0.3, 1.0)
    ]
    torch.testing.assert_close(images[0], images[1])


def test_dqe_gradient_through_the_score_function() -> None:
    # scaled-Poisson noise: c = k/DQE, k ~ Poisson(DQE·N). For f = Σ c²,
    # E f = Σ N² + N/DQE, so dE f/dDQE = −Σ N/DQE². The surrogate carries both the pathwise
    # part (f depends on DQE through k/DQE) and the score part (k's law depends on DQE).
    intensity = intensity_of({}).detach()[:4, :4]
    n_e = expected_electrons(intensity, dose_e_per_a2=1.0, sampling_a=SAMPLING_A)
    dqe0 = 0.6
    truth = float(-(n_e / dqe0**2).sum())
    gen = torch.Generator().manual_seed(7)
    estimates = []
    for _ in range(300):
        dqe = torch.tensor(dqe0, dtype=DTYPE, requires_grad=True)
        electrons = sample_electrons(
            n_e.expand(16, -1, -1), dqe=dqe0, generator=gen, noise_model="scaled_poisson"
        )
        k = torch.round(electrons * dqe0)
        f = ((k / dqe) ** 2).sum(dim=(1, 2))
        surrogate = score_function_surrogate(f, k, dqe * n_e, baseline="mean")
        estimates.append(torch.autograd.grad(surrogate, dqe)[0])
    est = torch.stack(estimates)
    se = float(est.std()) / math.sqrt(est.numel())
    assert abs(float(est.mean()) - truth) < 3.0 * se, (float(est.mean()), se, truth)
    assert se < 0.3 * abs(truth)  # the test has power: the gradient is resolved


def _micrograph_loss(positions: torch.Tensor, defocus: torch.Tensor) -> torch.Tensor:
    """A weighted sum of the one-call pipeline's expected image (zero-loss filtered)."""
    microscope = Microscope(
        energy_ev=ENERGY_EV, energy_filter=True, **{k: _value(k, {}) for k in MICROSCOPE_FIELDS}
    )
    result = micrograph(
        build_specimen({"positions_a": positions, "defocus_a": defocus}),
        potential=SETTINGS,
        microscope=microscope,
        detector=Detector(**{k: _value(k, {}) for k in DETECTOR_FIELDS}),
        imaging=Imaging(
            defocus_a=defocus,
            dose_e_per_a2=BASE["dose_e_per_a2"][0],
            astigmatism_a=BASE["astigmatism_a"][0],
            astigmatism_angle_rad=BASE["astigmatism_angle_rad"][0],
        ),
    )
    return (WEIGHTS * result.expected).sum() / BASE["dose_e_per_a2"][0]


def test_micrograph_gradients_match_central_differences() -> None:
    # the one-call pipeline (not the stages composed by hand) against its own central
    # differences in float64: defocus and one coordinate of every atom
    positions = torch.tensor(POSITIONS_A, dtype=DTYPE, requires_grad=True)
    defocus = torch.tensor(BASE["defocus_a"][0], dtype=DTYPE, requires_grad=True)
    g_pos, g_def = torch.autograd.grad(_micrograph_loss(positions, defocus), (positions, defocus))
    with torch.no_grad():
        h = 0.5  # [Å]
        fd_def = (
            _micrograph_loss(positions, defocus + h) - _micrograph_loss(positions, defocus - h)
        ) / (2 * h)
        errors = [abs(float(fd_def - g_def)) / abs(float(g_def))]
        for atom in range(len(POSITIONS_A)):
            step = torch.zeros_like(positions)
            step[atom, 0] = 1e-3  # [Å]
            fd = (
                _micrograph_loss(positions + step, defocus)
                - _micrograph_loss(positions - step, defocus)
            ) / 2e-3
            errors.append(abs(float(fd - g_pos[atom, 0])) / float(g_pos.abs().max()))
    print("relative |AD - FD|:", errors)
    assert float(g_def.abs()) > 0 and float(g_pos.abs().max()) > 0
    assert max(errors) < 1e-5, errors
