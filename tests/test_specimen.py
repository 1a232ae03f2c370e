"""Tests for tem_core.specimen: ice slab, SO(3) sampling, packing, poses, tilt."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from scipy import stats

from tem_core.specimen import (
    IceSlab,
    Specimen,
    assembly_in_ice,
    build_specimen,
    place_particles,
    random_rotations,
    tilt_specimen,
)
from tem_core.structure import AtomicModel, read_structure

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def crambin() -> AtomicModel:
    return read_structure(DATA / "1crn.pdb.gz", dtype=torch.float64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- IceSlab


def test_ice_slab_validation():
    IceSlab(thickness_a=300.0, hole_diameter_a=1e4, support="vacuum", support_thickness_a=0.0)
    with pytest.raises(ValueError, match="thickness_a must be > 0, got -1.0 Å"):
        IceSlab(thickness_a=-1.0)
    with pytest.raises(ValueError, match="hole_diameter_a must be > 0"):
        IceSlab(thickness_a=300.0, hole_diameter_a=0.0)
    with pytest.raises(ValueError, match="support must be one of \\('carbon', 'gold', 'vacuum'\\)"):
        IceSlab(thickness_a=300.0, support="silver")
    with pytest.raises(ValueError, match="support_thickness_a must be >= 0"):
        IceSlab(thickness_a=300.0, support_thickness_a=-5.0)


# ----------------------------------------------------------------------------- SO(3)


def test_random_rotations_are_proper_and_deterministic():
    rot = random_rotations(100, generator=_gen(1))
    assert rot.shape == (100, 3, 3) and rot.dtype == torch.float64
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(100, dtype=torch.float64))
    assert torch.equal(rot, random_rotations(100, generator=_gen(1)))
    assert not torch.equal(rot, random_rotations(100, generator=_gen(2)))
    assert random_rotations(0, generator=_gen()).shape == (0, 3, 3)
    assert random_rotations(2, generator=_gen(), dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        random_rotations(-1, generator=_gen())


def test_random_rotations_are_haar_uniform():
    n = 20_000
    rot = random_rotations(n, generator=_gen(3))
    # Haar measure: E[R] = 0 (each entry has variance 1/3, so the s.e. of the mean is 0.004)
    assert rot.mean(dim=0).abs().max() < 0.02
    # rotation angle w = arccos((tr R - 1)/2) has density (1 - cos w)/pi on [0, pi],
    # CDF (w - sin w)/pi (e.g. Miles 1965, Biometrika 52:636)
    trace = rot.diagonal(dim1=1, dim2=2).sum(-1).clamp(-1.0, 3.0)
    angle = torch.arccos((trace - 1.0) / 2.0).numpy()
    result = stats.kstest(angle, lambda w: (w - torch.sin(torch.as_tensor(w)).numpy()) / math.pi)
    assert result.pvalue > 1e-3
    # E[tr R] = 0 and E[tr R^2] = 1 under Haar measure
    assert abs(float(trace.mean())) < 0.03
    assert abs(float((trace**2).mean()) - 1.0) < 0.05
    # a fixed unit vector is mapped uniformly onto the sphere: each coordinate ~ U(-1, 1)
    z = rot[:, :, 2].numpy()
    for coord in z.T:
        assert stats.kstest(coord, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3


# ----------------------------------------------------------------------------- placement


def _pairwise_gaps(centers, radii):
    dist = torch.cdist(centers, centers)
    gaps = dist - radii[:, None] - radii[None, :]
    gaps.fill_diagonal_(float("inf"))
    return gaps


def test_place_particles_no_overlap_inside_slab():
    radii = torch.tensor([30.0, 20.0, 20.0, 10.0, 10.0, 10.0, 40.0], dtype=torch.float64)
    centers = place_particles(
        radii, extent_a=(400.0, 300.0), thickness_a=100.0, generator=_gen(), min_gap_a=5.0
    )
    assert centers.shape == (7, 3)
    assert _pairwise_gaps(centers, radii).min() >= 5.0
    assert (centers[:, 0] - radii >= 0).all() and (centers[:, 0] + radii <= 400).all()
    assert (centers[:, 1] - radii >= 0).all() and (centers[:, 1] + radii <= 300).all()
    assert (centers[:, 2] - radii >= 0).all() and (centers[:, 2] + radii <= 100).all()
    again = place_particles(
        radii, extent_a=(400.0, 300.0), thickness_a=100.0, generator=_gen(), min_gap_a=5.0
    )
    assert torch.equal(centers, again)


def test_place_particles_in_hole():
    radii = torch.full((10,), 15.0, dtype=torch.float64)
    centers = place_particles(
        radii, extent_a=(600.0, 600.0), thickness_a=50.0, generator=_gen(), hole_diameter_a=300.0
    )
    rho = torch.hypot(centers[:, 0] - 300.0, centers[:, 1] - 300.0)
    assert (rho + radii <= 150.0 + 1e-9).all()


def test_place_particles_errors():
    with pytest.raises(ValueError, match=r"diameter 120.0 Å\) is thicker than the ice"):
        place_particles([60.0], extent_a=(500.0, 500.0), thickness_a=100.0, generator=_gen())
    with pytest.raises(ValueError, match="does not fit in the field"):
        place_particles([60.0], extent_a=(100.0, 500.0), thickness_a=200.0, generator=_gen())
    # 10 spheres of radius 20 in a 100 x 100 x 40 Å box: at most 4 fit in one layer
    with pytest.raises(ValueError, match=r"could place only [1-4] of 10 particles"):
        place_particles(
            [20.0] * 10,
            extent_a=(100.0, 100.0),
            thickness_a=40.0,
            generator=_gen(),
            min_gap_a=0.0,
            max_attempts=2000,
        )
    with pytest.raises(ValueError, match="radii_a must be >= 0"):
        place_particles([-1.0], extent_a=(100.0, 100.0), thickness_a=40.0, generator=_gen())


# ----------------------------------------------------------------------------- build


def test_build_specimen_deterministic_and_consistent(crambin):
    ice = IceSlab(thickness_a=120.0)
    spec = build_specimen(crambin, 5, extent_a=(300.0, 300.0), ice=ice, generator=_gen(7))
    again = build_specimen(crambin, 5, extent_a=(300.0, 300.0), ice=ice, generator=_gen(7))
    other = build_specimen(crambin, 5, extent_a=(300.0, 300.0), ice=ice, generator=_gen(8))
    assert torch.equal(spec.atoms.positions_a, again.atoms.positions_a)
    assert not torch.equal(spec.atoms.positions_a, other.atoms.positions_a)
    assert len(spec.atoms) == 5 * 327 and spec.n_particles == 5
    assert spec.atoms.positions_a.dtype == torch.float64
    # each copy is centred on its particle centre and keeps its internal distances
    per_copy = spec.atoms.positions_a.reshape(5, 327, 3)
    torch.testing.assert_close(per_copy.mean(1), spec.particle_centers_a)
    ref = torch.pdist(crambin.positions_a)
    for copy in per_copy:
        torch.testing.assert_close(torch.pdist(copy), ref)
    assert _pairwise_gaps(spec.particle_centers_a, spec.particle_radii_a).min() >= 5.0
    torch.testing.assert_close(
        spec.slab_center_a, torch.tensor([150.0, 150.0, 60.0], dtype=torch.float64)
    )
    assert spec.z_range_a() == (0.0, 120.0)
    torch.testing.assert_close(spec.hole_center_a, spec.slab_center_a)


def test_build_specimen_several_models(crambin):
    small = AtomicModel(
        atomic_numbers=torch.tensor([8]),
        positions_a=torch.zeros(1, 3, dtype=torch.float64),
        b_factors_a2=torch.zeros(1, dtype=torch.float64),
        occupancies=torch.ones(1, dtype=torch.float64),
        name="O",
    )
    spec = build_specimen(
        [crambin, small],
        [2, 3],
        extent_a=(300.0, 300.0),
        ice=IceSlab(thickness_a=100.0),
        generator=_gen(),
    )
    assert len(spec.atoms) == 2 * 327 + 3
    assert spec.particle_radii_a.tolist()[2:] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="got 2 models but 1 counts"):
        build_specimen(
            [crambin, small],
            [2],
            extent_a=(300.0, 300.0),
            ice=IceSlab(thickness_a=100.0),
            generator=_gen(),
        )
    empty = build_specimen(
        crambin, 0, extent_a=(100.0, 100.0), ice=IceSlab(thickness_a=50.0), generator=_gen()
    )
    assert len(empty.atoms) == 0 and empty.z_range_a() == (0.0, 50.0)


def test_build_specimen_float32(crambin):
    spec = build_specimen(
        crambin.to(dtype=torch.float32),
        1,
        extent_a=(100.0, 100.0),
        ice=IceSlab(thickness_a=80.0),
        generator=_gen(),
    )
    assert spec.atoms.positions_a.dtype == torch.float32


def test_build_specimen_explicit_poses(crambin):
    c = crambin.centered()
    rot = torch.stack(
        [
            torch.eye(3, dtype=torch.float64),
            torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64),
        ]
    )
    centers = torch.tensor([[50.0, 50.0, 50.0], [150.0, 60.0, 50.0]], dtype=torch.float64)
    spec = build_specimen(
        crambin,
        2,
        extent_a=(200.0, 120.0),
        ice=IceSlab(thickness_a=100.0),
        generator=_gen(),
        poses=(rot, centers),
    )
    torch.testing.assert_close(spec.atoms.positions_a[:327], c.positions_a + centers[0])
    torch.testing.assert_close(spec.atoms.positions_a[327:], c.positions_a @ rot[1].T + centers[1])
    close = torch.tensor([[50.0, 50.0, 50.0], [60.0, 50.0, 50.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="poses overlap: particles 0 and 1 are 10.0 Å apart"):
        build_specimen(
            crambin,
            2,
            extent_a=(200.0, 120.0),
            ice=IceSlab(thickness_a=100.0),
            generator=_gen(),
            poses=(rot, close),
        )
    with pytest.raises(ValueError, match="proper rotation"):
        build_specimen(
            crambin,
            2,
            extent_a=(200.0, 120.0),
            ice=IceSlab(thickness_a=100.0),
            generator=_gen(),
            poses=(-rot, centers),
        )
    with pytest.raises(ValueError, match=r"poses must be \(rotations \(K, 3, 3\)"):
        build_specimen(
            crambin,
            3,
            extent_a=(200.0, 120.0),
            ice=IceSlab(thickness_a=100.0),
            generator=_gen(),
            poses=(rot, centers),
        )
    with pytest.warns(UserWarning, match="stick out of the ice slab"):
        build_specimen(
            crambin,
            2,
            extent_a=(200.0, 120.0),
            ice=IceSlab(thickness_a=20.0),
            generator=_gen(),
            poses=(rot, centers),
        )


# ----------------------------------------------------------------------------- tilt


def test_tilt_preserves_distances_and_rotates_normal(crambin):
    ice = IceSlab(thickness_a=100.0, hole_diameter_a=250.0)
    spec = build_specimen(crambin, 4, extent_a=(300.0, 200.0), ice=ice, generator=_gen(5))
    theta = math.radians(40.0)
    tilted = tilt_specimen(spec, tilt_angle_rad=theta)
    torch.testing.assert_close(
        torch.pdist(tilted.atoms.positions_a), torch.pdist(spec.atoms.positions_a)
    )
    # +theta about +x (right-handed): z -> (0, -sin, cos)
    torch.testing.assert_close(
        tilted.slab_normal,
        torch.tensor([0.0, -math.sin(theta), math.cos(theta)], dtype=torch.float64),
    )
    torch.testing.assert_close(tilted.slab_center_a, spec.slab_center_a)
    assert tilted.tilt_angle_rad == pytest.approx(theta) and tilted.tilt_axis_angle_rad == 0.0
    # distances of atoms to the slab mid-plane are preserved
    d0 = (spec.atoms.positions_a - spec.slab_center_a) @ spec.slab_normal
    d1 = (tilted.atoms.positions_a - tilted.slab_center_a) @ tilted.slab_normal
    torch.testing.assert_close(d0, d1)
    # particle poses follow the atoms
    per_copy = tilted.atoms.positions_a.reshape(4, 327, 3).mean(1)
    torch.testing.assert_close(per_copy, tilted.particle_centers_a)
    # z range of the tilted slab: T / cos(theta) + Ly tan(theta), centred on the slab centre,
    # with T the thicker of ice (100 Å) and the carbon film around the hole (150 Å)
    z0, z1 = tilted.z_range_a()
    assert z1 - z0 == pytest.approx(150.0 / math.cos(theta) + 200.0 * math.tan(theta))
    assert (z0 + z1) / 2 == pytest.approx(50.0)


def test_tilt_axis_along_y_and_composition(crambin):
    spec = build_specimen(
        crambin, 1, extent_a=(100.0, 100.0), ice=IceSlab(thickness_a=80.0), generator=_gen()
    )
    theta = 0.3
    tilted = tilt_specimen(spec, tilt_angle_rad=theta, tilt_axis_angle_rad=math.pi / 2)
    torch.testing.assert_close(
        tilted.slab_normal,
        torch.tensor([math.sin(theta), 0.0, math.cos(theta)], dtype=torch.float64),
    )
    twice = tilt_specimen(tilted, tilt_angle_rad=theta, tilt_axis_angle_rad=math.pi / 2)
    once = tilt_specimen(spec, tilt_angle_rad=2 * theta, tilt_axis_angle_rad=math.pi / 2)
    assert twice.tilt_angle_rad == pytest.approx(2 * theta)
    torch.testing.assert_close(twice.atoms.positions_a, once.atoms.positions_a)
    with pytest.raises(ValueError, match="already tilted about the axis"):
        tilt_specimen(tilted, tilt_angle_rad=0.1, tilt_axis_angle_rad=0.0)
    with pytest.raises(ValueError, match=r"total tilt must lie in \(-pi/2, pi/2\)"):
        tilt_specimen(spec, tilt_angle_rad=math.pi / 2)
    with pytest.raises(ValueError, match="tilt_angle_rad must be finite"):
        tilt_specimen(spec, tilt_angle_rad=float("nan"))


def test_tilt_is_differentiable_in_angle():
    pos = torch.tensor([[10.0, 20.0, 30.0], [40.0, 5.0, 12.0]], dtype=torch.float64)
    one = torch.ones(2, dtype=torch.float64)
    model = AtomicModel(
        atomic_numbers=torch.tensor([6, 7]), positions_a=pos, b_factors_a2=one, occupancies=one
    )
    spec = build_specimen(
        model, 1, extent_a=(100.0, 100.0), ice=IceSlab(thickness_a=60.0), generator=_gen()
    )

    def positions(theta):
        return tilt_specimen(spec, tilt_angle_rad=theta).atoms.positions_a

    theta = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(positions, (theta,))


def test_specimen_validation(crambin):
    spec = build_specimen(
        crambin, 1, extent_a=(100.0, 100.0), ice=IceSlab(thickness_a=80.0), generator=_gen()
    )
    with pytest.raises(ValueError, match="slab_normal must be a unit vector"):
        Specimen(
            atoms=spec.atoms,
            extent_a=(100.0, 100.0),
            ice=spec.ice,
            slab_center_a=spec.slab_center_a,
            slab_normal=torch.tensor([0.0, 0.0, 2.0]),
            particle_centers_a=spec.particle_centers_a,
            particle_radii_a=spec.particle_radii_a,
            particle_rotations=spec.particle_rotations,
        )
    with pytest.raises(ValueError, match="extent_a must be > 0"):
        build_specimen(
            crambin, 1, extent_a=(100.0, -1.0), ice=IceSlab(thickness_a=80.0), generator=_gen()
        )
    with pytest.raises(ValueError, match="particle_centers_a, particle_radii_a"):
        Specimen(
            atoms=spec.atoms,
            extent_a=(100.0, 100.0),
            ice=spec.ice,
            slab_center_a=spec.slab_center_a,
            slab_normal=spec.slab_normal,
            particle_centers_a=spec.particle_centers_a,
            particle_radii_a=torch.zeros(2),
            particle_rotations=spec.particle_rotations,
        )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_build_and_tilt_on_cuda_match_cpu(crambin):
    ice = IceSlab(thickness_a=120.0, hole_diameter_a=280.0)
    cpu = build_specimen(crambin, 3, extent_a=(300.0, 300.0), ice=ice, generator=_gen(4))
    gpu = build_specimen(
        crambin.to(device="cuda"), 3, extent_a=(300.0, 300.0), ice=ice, generator=_gen(4)
    )
    assert gpu.atoms.positions_a.is_cuda and gpu.slab_center_a.is_cuda
    torch.testing.assert_close(gpu.atoms.positions_a.cpu(), cpu.atoms.positions_a)
    tilted = tilt_specimen(gpu, tilt_angle_rad=0.4)
    torch.testing.assert_close(
        tilted.atoms.positions_a.cpu(), tilt_specimen(cpu, tilt_angle_rad=0.4).atoms.positions_a
    )


def test_amorphous_film_density_bounds_and_seed() -> None:
    from tem_core.specimen import amorphous_film

    film = amorphous_film(
        extent_a=(100.0, 50.0),
        thickness_a=30.0,
        z0_a=10.0,
        generator=torch.Generator().manual_seed(1),
    )
    # 2.0 g/cm³ of carbon: 0.1003 atoms/Å³
    assert len(film) == round(0.100283 * 100 * 50 * 30)
    pos = film.positions_a
    assert float(pos[:, 0].min()) >= 0 and float(pos[:, 0].max()) < 100.0
    assert float(pos[:, 2].min()) >= 10.0 and float(pos[:, 2].max()) < 40.0
    assert set(film.atomic_numbers.tolist()) == {6}
    again = amorphous_film(
        extent_a=(100.0, 50.0),
        thickness_a=30.0,
        z0_a=10.0,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(again.positions_a, pos)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(thickness_a=-1.0), "thickness_a must be"),
        (dict(density_g_per_cm3=float("nan")), "density_g_per_cm3 must be"),
        (dict(atomic_number=7), "atomic_number must be one of"),
        (dict(extent_a=(10.0,)), "extent_a must be"),
    ],
)
def test_amorphous_film_errors(kwargs, match) -> None:
    from tem_core.specimen import amorphous_film

    args = dict(extent_a=(10.0, 10.0), thickness_a=5.0, generator=torch.Generator())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        amorphous_film(**args)


# --- assemblies at given poses (the book's TMV scenes) -----------------------------------------


def _rotation_y(angle_rad: float) -> torch.Tensor:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def test_assembly_in_ice_places_rotated_copies_at_the_offsets(data_dir: Path) -> None:
    """Two copies of 3 TMV subunits: atom count, centres, the rotation between the copies."""
    path = data_dir / "2om3.pdb.gz"
    rotations = torch.stack([torch.eye(3, dtype=torch.float64), _rotation_y(0.5 * math.pi)])
    offsets = torch.tensor([[-80.0, 10.0, 0.0], [80.0, -10.0, 5.0]], dtype=torch.float64)
    specimen = assembly_in_ice(
        path,
        extent_a=(400.0, 300.0),
        ice_thickness_a=200.0,
        rotations=rotations,
        offsets_a=offsets,
        n_subunits=3,
    )
    n_asu = len(read_structure(path))  # 1279 atoms in 2OM3's asymmetric unit
    assert len(specimen.atoms) == 2 * 3 * n_asu
    centre = torch.tensor([200.0, 150.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(specimen.particle_centers_a, centre + offsets, rtol=0, atol=0)
    assert specimen.ice.thickness_a == 200.0 and specimen.extent_a == (400.0, 300.0)
    first, second = specimen.atoms.positions_a.reshape(2, -1, 3)
    # each copy is centred on its geometric centre (float64 sums over 3837 atoms: 1e-13 Å)
    torch.testing.assert_close(first.mean(0), centre + offsets[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(second.mean(0), centre + offsets[1], rtol=0, atol=1e-9)
    # the second copy is the first rotated by +90° about y (x → −z, z → x)
    torch.testing.assert_close(
        (second - second.mean(0)),
        (first - first.mean(0)) @ _rotation_y(0.5 * math.pi).T,
        rtol=0,
        atol=1e-9,
    )
    one = assembly_in_ice(
        path, extent_a=(400.0, 300.0), ice_thickness_a=200.0, rotations=rotations[:1], n_subunits=1
    )
    assert len(one.atoms) == n_asu
    torch.testing.assert_close(one.particle_centers_a[0], centre, rtol=0, atol=0)


def test_assembly_in_ice_dtype_and_errors(data_dir: Path) -> None:
    path = data_dir / "2om3.pdb.gz"
    eye = torch.eye(3, dtype=torch.float64)[None]
    kwargs = dict(extent_a=(300.0, 300.0), ice_thickness_a=200.0, n_subunits=2)
    spec32 = assembly_in_ice(path, rotations=eye, dtype=torch.float32, **kwargs)
    assert spec32.atoms.positions_a.dtype == torch.float32
    with pytest.raises(ValueError, match=r"offsets_a must be \(K, 3\) = \(1, 3\)"):
        assembly_in_ice(path, rotations=eye, offsets_a=torch.zeros(2, 3), **kwargs)
    with pytest.raises(ValueError, match="n_subunits must be at most the assembly's 49"):
        assembly_in_ice(
            path, rotations=eye, extent_a=(300.0, 300.0), ice_thickness_a=200.0, n_subunits=50
        )
    with pytest.raises(ValueError, match="ice_thickness_a"):
        assembly_in_ice(path, rotations=eye, extent_a=(300.0, 300.0), ice_thickness_a=-1.0)
    with pytest.raises(ValueError, match=r"rotations must be a \(K, 3, 3\) tensor"):
        assembly_in_ice(path, rotations=torch.eye(3), **kwargs)
    with pytest.raises(ValueError, match="offsets_a must be finite"):
        assembly_in_ice(path, rotations=eye, offsets_a=torch.full((1, 3), math.nan), **kwargs)
    with pytest.raises(ValueError, match=r"extent_a must be a pair \(Lx, Ly\) \[Å\]"):
        assembly_in_ice(path, rotations=eye, extent_a=(300.0,), ice_thickness_a=200.0)
    two = torch.cat([eye, eye])
    with pytest.raises(ValueError, match="overlap"):  # two copies at the same place
        assembly_in_ice(path, rotations=two, **kwargs)
