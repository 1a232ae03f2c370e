"""Per-particle potential maps: a representation computed once and reused by every copy and tilt.

``PotentialSettings(particle_representation="map")`` replaces, for the atoms that belong to a
particle of the specimen, the exact per-atom projection (every Gaussian integrated over pixel
and slice at every tilt) by maps computed ONCE per particle type, from the same atoms with the
same physics (Peng 1996 Gaussians, B-factors, occupancies, excluded-volume Gaussians), as
TEM-simulator does with its voxel maps. It is an approximation; its error against the exact
path is measured in ``tests/test_potential_maps.py`` and ``benchmarks/vs_temsim.py``.

Construction (per particle type, in the particle's own frame):

* The voxel-integrated potential ``M = (1/v²) ∫_voxel V`` [V·Å] of the atoms and of their
  excluded ice (``X``, the Gaussians of :mod:`tem_core.potential.solvent`) on a cube of voxel
  ``v = map_voxel_a``, computed with the exact splat (pixel = slice = ``v``), stored as the
  complex volume ``M_V + i M_X``; divided by the Kaiser-Bessel kernel's transform per axis
  (:mod:`tem_core.potential.kaiser_bessel`), zero-padded to ``N = 2n`` voxels and Fourier
  transformed (3-D FFT, once).
* A coarse copy (``v·f``, ``f = ⌊s / (2v)⌋``, sums of ``f³`` voxels) of both maps in real
  space, used only to split a particle's projection between slices.

Per pose (rotation ``Q``, centre ``c``; the copies of one type in one batch):

* Projection (Fourier slice theorem): the 2-D transform of the projection along the beam is
  the 3-D transform on the plane ``Q^T (k_x, k_y, 0)``, read by Kaiser-Bessel interpolation
  (4 taps per axis), times ``e^{−2πi k·c}``, with the voxel averaging divided out (``1/sinc``
  per map axis) and the pixel averaging of the exact path multiplied in
  (``sinc(k_x s) sinc(k_y s)``, its aliasing kept up to the map's Nyquist frequency
  ``1/(2v)``, zero beyond); the inverse FFT of the spectrum folded onto the pixel grid gives
  the pixel averages on a patch around the particle, added into the field (periodic).
* Slices (multislice): the fraction of each pixel's projected V and X inside each slice is
  read from the coarse maps resampled along the beam (trilinear, steps ``v·f``), so
  ``Σ_slices = projection`` exactly. The excluded ice is clamped (net ice ≥ 0) per slice,
  as with atoms. In the projection approximation of a plain slab (no hole, no ice
  structure) each copy's excluded ice is clamped once against the ice of the whole column:
  the same as the atoms' per-slice clamp when the slices are thicker than the particle,
  else weaker (crambin, 20 Å slices: 7-19 % of the image contrast; 40 Å: 0.4 %).

Where Taichi runs on the maps' device (``backend`` "auto" or "taichi"), the Kaiser-Bessel
gather (:func:`tem_core.potential.kaiser_bessel.kb_gather`) and the march along the beam of
the slice split (:func:`tem_core.potential.map_kernels.march_kernel`: the cumulative sums
kept only at the sample indices that the slice boundaries need, without the
``(2, n_z, m, m)`` samples) are single fused kernels; ``backend="torch"`` keeps the torch
twins (equal within rounding, tested).

Error against the exact atoms (measured, relative L2 of the contrast): TMV (B = 90 Å²) at
``v = s/2 = 2.5 Å``: projected potential 2.5e-3, images 2e-3; crambin (sharp atoms) at 2 Å
pixels: 2.4-2.9e-2 at ``v = s/2``, 1.5-1.8e-3 at ``v = s/4``; the mean potential is 8e-4 low
(the 4-tap kernel's leakage). Atoms outside every particle's bounding sphere
(``specimen.particle_centers_a`` / ``particle_radii_a``) are projected exactly. Gradients:
the maps are constants (no gradient wrt atom positions, B-factors or occupancies: asking
for one raises); everything after the potential (optics, detector) stays differentiable. Use
``particle_representation="atoms"`` (default) to fit atoms.
"""

from __future__ import annotations

import bisect
import math

import torch

from tem_core import memory
from tem_core.potential.checks import check_atoms
from tem_core.potential.kaiser_bessel import (
    KB_WIDTH,
    MAP_PADDING,
    kb_gather,
    kb_transform,
)
from tem_core.potential.kernels import project_gaussians
from tem_core.potential.map_kernels import busy_blocks, split_cumulative
from tem_core.structure import rotate_points

#: Step of the coarse map that splits a copy's projection between slices, in pixels (its
#: voxel is the largest multiple of ``map_voxel_a`` not above ``SPLIT_STEP * sampling_a``).
SPLIT_STEP = 0.5
#: Largest distance [Å] between two copies' atoms (in their particle frames) for them to share
#: one map; copies that differ more get their own map.
SAME_TYPE_TOLERANCE_A = 1e-2


def map_bytes(radius_a: float, voxel_a: float, dtype: torch.dtype) -> int:
    """Bytes of one particle type's padded Fourier map (radius incl. atom windows [Å])."""
    n = _box_voxels(radius_a, voxel_a)
    complex_bytes = 2 * torch.empty((), dtype=dtype).element_size()
    return (MAP_PADDING * n) ** 3 * complex_bytes


def _box_voxels(radius_a: float, voxel_a: float) -> int:
    return 2 * math.ceil(radius_a / voxel_a) + 2


class _ParticleType:
    """One particle type's maps (see the module docstring)."""

    def __init__(self, template, gaussians, excluded, voxel_a, coarse_factor, use_taichi):
        pos = template
        dtype, device = pos.dtype, pos.device
        amp, wid, rad = gaussians
        r_win = float(rad.max()) if rad.numel() else 0.0
        if excluded is not None and excluded[0].shape[0]:
            r_win = max(r_win, float(excluded[3].max()))
        radius = float(torch.linalg.vector_norm(pos, dim=1).max()) if pos.shape[0] else 0.0
        self.radius_a = radius + r_win  # every atom's window lies inside this sphere
        self.template, self.window_a = pos, rad  # for the atoms' z extent at a pose
        v = float(voxel_a)
        n = _box_voxels(self.radius_a, v)
        f = coarse_factor
        n += (-n) % (2 * f)  # the coarse map sums f³ voxels; n stays even
        self.n, self.voxel_a, self.coarse_factor = n, v, f
        self.use_taichi = bool(use_taichi)
        shift = (n // 2 + 0.5) * v  # voxel n/2 is centred on the particle centre
        real = self._voxel_map(pos + shift, amp, wid, rad, n, v, use_taichi)
        imag = torch.zeros_like(real)
        if excluded is not None:
            keep, amp_e, wid_e, rad_e = excluded
            imag = self._voxel_map(pos[keep] + shift, amp_e, wid_e, rad_e, n, v, use_taichi)
        # coarse real-space copies (V, X) for the slice fractions
        pool = torch.nn.functional.avg_pool3d
        # stored channels last (a (2, n, n, n) view): the march reads a sample's V and X
        # from one cache line
        coarse = pool(torch.stack([real, imag])[None], f)[0] * f**3
        self.coarse = coarse.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)
        self.busy = busy_blocks(self.coarse) if self.use_taichi else None  # zeros skipped
        # gridding correction, padding, FFT
        big = MAP_PADDING * n
        q = torch.arange(n, dtype=torch.float64, device=device) - n // 2
        corr = 1.0 / kb_transform(q / big)
        corr3 = (corr[:, None, None] * corr[None, :, None] * corr[None, None, :]).to(dtype)
        volume = torch.complex(real * corr3, imag * corr3)
        # zero-padded and rolled by -n/2 on every axis (voxel n/2 at the origin), written
        # octant by octant instead of padding then rolling (the same array, one copy less)
        padded = torch.zeros((big,) * 3, dtype=volume.dtype, device=device)
        h = n // 2
        halves = ((slice(h, n), slice(0, n - h)), (slice(0, h), slice(big - h, big)))
        for sz, dz in halves:
            for sy, dy in halves:
                for sx, dx in halves:
                    padded[dz, dy, dx] = volume[sz, sy, sx]
        spectrum = torch.fft.fftn(padded)
        # x runs of KB_WIDTH taps are contiguous: the first KB_WIDTH - 1 columns repeat
        spectrum = torch.cat([spectrum, spectrum[..., : KB_WIDTH - 1]], dim=-1)
        self.fourier = spectrum.reshape(-1)
        self.big = big

    @staticmethod
    def _voxel_map(pos, amp, wid, rad, n, v, use_taichi):
        """``(n, n, n)`` [z, y, x] voxel integrals ``(1/v²) ∫_voxel V`` [V·Å]."""
        out = torch.zeros((n, n, n), dtype=pos.dtype, device=pos.device)
        if pos.shape[0] == 0:
            return out
        order = torch.argsort(pos[:, 2])
        pos, amp, wid, rad = pos[order], amp[order], wid[order], rad[order]
        z = pos[:, 2].contiguous()
        r_max = float(rad.max())
        common = dict(shape=(n, n), sampling_a=v, periodic=True, use_taichi=use_taichi)
        for j in range(n):
            z0, z1 = j * v, (j + 1) * v
            lo = int(torch.searchsorted(z, torch.tensor(z0 - r_max, dtype=z.dtype)))
            hi = int(torch.searchsorted(z, torch.tensor(z1 + r_max, dtype=z.dtype)))
            sl = slice(lo, hi)
            near = ((z[sl] + rad[sl]) > z0) & ((z[sl] - rad[sl]) < z1)
            idx = torch.arange(lo, hi)[near]
            if idx.numel():
                out[j] = project_gaussians(
                    pos[idx], amp[idx], wid[idx], rad[idx], z0_a=z0, z1_a=z1, **common
                )
        return out

    def project(self, rotations, centres, sampling_a: float, shape) -> list[tuple]:
        """Pixel-averaged projections of copies at poses ``rotations`` ``(B, 3, 3)``,
        ``centres`` ``(B, 3)`` [Å]: per copy ``(patch, iy, ix, footprint)``.

        ``patch`` is complex ``(m, m)``: real part the atoms' projected potential [V·Å],
        imaginary part the excluded ice's; ``iy``, ``ix`` its pixel rows and columns in the
        field (periodic); ``footprint = (row0, col0, m)``.
        """
        s, v, big = sampling_a, self.voxel_a, self.big
        sub = max(1, math.ceil(s / v - 1e-9))
        u = s / sub
        m_px = 2 * math.ceil(self.radius_a / s) + 4
        m = m_px * sub
        device = self.coarse.device
        f64 = dict(dtype=torch.float64, device=device)
        freq = torch.fft.fftfreq(m, d=u, **f64)
        ky, kx = freq[None, :, None], freq[None, None, :]
        q = rotations.detach().to(**f64)[:, :, :, None, None]
        # template-frame frequencies k' = Q^T (kx, ky, 0), (B, m, m) each
        kxp, kyp, kzp = (q[:, 0, j] * kx + q[:, 1, j] * ky for j in range(3))
        nyq = 0.5 / v
        inside = (kxp.abs() < nyq) & (kyp.abs() < nyq) & (kzp.abs() < nyq)
        inside[:, m // 2, :] = False  # the patch's Nyquist row and column (not Hermitian)
        inside[:, :, m // 2] = False
        sel = torch.nonzero(inside.reshape(-1)).flatten()
        coords = [t.reshape(-1)[sel] * (big * v) for t in (kzp, kyp, kxp)]
        value = torch.zeros(inside.numel(), dtype=self.fourier.dtype, device=device)
        value[sel] = kb_gather(self.fourier, big, coords, self.use_taichi)
        filt = (torch.sinc(kx * s) * torch.sinc(ky * s)) / (
            torch.sinc(kxp * v) * torch.sinc(kyp * v) * torch.sinc(kzp * v)
        )
        filt = torch.where(inside, filt * (v * v / (u * u)), 0.0)
        c = centres.detach().to(torch.float64).cpu()
        i0 = torch.floor(c[:, :2] / s).long() - m_px // 2  # (B, 2): first column, row
        d = c[:, :2] - (i0.double() + 0.5) * s  # centre from the first pixel's centre
        d = d.to(device)
        arg = -2.0 * math.pi * (kx * d[:, 0, None, None] + ky * d[:, 1, None, None])
        spectrum = value.reshape(-1, m, m) * torch.polar(filt, arg).to(value.dtype)
        # every sub-th sample of the inverse FFT = inverse FFT of the folded spectrum
        folded = spectrum.reshape(-1, sub, m_px, sub, m_px).sum(dim=(1, 3)) / (sub * sub)
        patches = torch.fft.ifft2(folded)
        ny, nx = shape
        out = []
        span = torch.arange(m_px, device=device)
        for b in range(patches.shape[0]):
            i0x, i0y = int(i0[b, 0]), int(i0[b, 1])
            iy, ix = (i0y + span) % ny, (i0x + span) % nx
            out.append((patches[b], iy, ix, (i0y, i0x, m_px)))
        return out

    def column_fractions(self, rotation, centre, sampling_a, footprint, edges):
        """Fractions ``(n_slices_hit, 2, m, m)`` of each pixel's projected V and X inside the
        slices ``edges[first:last+1]`` and the index ``first`` (coarse map along the beam)."""
        s = sampling_a
        i0y, i0x, m_px = footprint
        h = self.voxel_a * self.coarse_factor
        cz = float(centre[2])
        z_lo, z_hi = cz - self.radius_a, cz + self.radius_a
        n_z = max(1, math.ceil((z_hi - z_lo) / h))
        device, dtype = self.coarse.device, self.coarse.dtype
        f64 = dict(dtype=torch.float64, device=device)
        c = centre.detach().to(torch.float64).cpu()
        q = rotation.detach().to(torch.float64).cpu()
        n_c = self.coarse.shape[-1]
        # grid_sample's normalised coordinate of template point t (coarse voxel A is centred
        # at (A f + (f-1)/2 - n/2) v):  g = (2 (t - off)/h + 1)/n_c - 1, affine in the
        # sample indices (z, y, x) since t = Q^T (r - c)
        off = ((self.coarse_factor - 1) / 2 - self.n // 2) * self.voxel_a
        scale = 2.0 / (h * n_c)
        r0 = torch.tensor([(i0x + 0.5) * s, (i0y + 0.5) * s, z_lo + 0.5 * h], dtype=torch.float64)
        g0 = ((r0 - c) @ q - off) * scale + (1.0 / n_c - 1.0)
        steps = [q[axis] * (step * scale) for axis, step in ((0, s), (1, s), (2, h))]
        e = edges
        first = max(0, bisect.bisect_right(e, z_lo) - 1)
        last = min(len(e) - 2, max(first, bisect.bisect_left(e, z_hi) - 1))
        bounds = torch.tensor(e[first : last + 2], **f64)
        pos = ((bounds - z_lo) / h).clamp(0.0, float(n_z))
        j = pos.floor().clamp(max=n_z - 1).long()
        w = (pos - j).to(dtype)
        at, total = split_cumulative(self.coarse, g0, steps, (m_px, n_z), j, w, self.use_taichi,
                                     self.busy)
        at[:, 0] = 0.0
        at[:, -1] = total[:, 0]
        part = at[:, 1:] - at[:, :-1]  # (2, n_hit, m, m)
        tiny = 1e-6 * total.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
        centre_slice = min(max(bisect.bisect_right(e, cz) - 1, first), last) - first
        fallback = torch.zeros_like(part)
        fallback[:, centre_slice] = 1.0
        frac = torch.where(total.abs() > tiny, part / torch.where(total == 0, 1.0, total),
                           fallback)  # fmt: skip
        return frac.permute(1, 0, 2, 3), first


def refuse_atom_gradients(specimen) -> None:
    """Raise ``ValueError`` when autograd is on and the atoms require gradients."""
    atoms = specimen.atoms
    wants = (atoms.positions_a, atoms.b_factors_a2, atoms.occupancies)
    if torch.is_grad_enabled() and any(t.requires_grad for t in wants):
        raise ValueError(
            "particle_representation='map' gives no gradient wrt the atoms (positions, "
            "B-factors or occupancies require grad); use particle_representation='atoms'"
        )


class ParticleMaps:
    """Maps of a specimen's particle types, computed once for all copies and tilts.

    Atoms are assigned to the particle whose bounding sphere (``specimen.particle_centers_a``,
    ``particle_radii_a``) holds them; copies whose atoms coincide in the particle frame
    (elements, B-factors, occupancies, and positions within :data:`SAME_TYPE_TOLERANCE_A`)
    share one map. Atoms in no particle stay atoms (projected exactly).

    Parameters
    ----------
    specimen
        :class:`tem_core.specimen.Specimen` (any tilt: maps are made in the particle frame).
    settings
        :class:`tem_core.potential.PotentialSettings` with ``particle_representation="map"``
        (``map_voxel_a``, cutoff tolerance, solvent switches, backend).
    """

    def __init__(self, specimen, settings) -> None:
        from tem_core.potential.streaming import (
            _atom_gaussians,
            _excluded_gaussians,
            _use_taichi,
        )

        atoms = specimen.atoms
        z_num, pos = atoms.atomic_numbers, atoms.positions_a.detach()
        check_atoms(z_num, pos, atoms.b_factors_a2, atoms.occupancies)
        refuse_atom_gradients(specimen)
        self.dtype, self.device = pos.dtype, pos.device
        self.sampling_a = float(settings.sampling_a)
        self.voxel_a = settings.map_voxel()
        self.key = _map_key(specimen, settings)
        use_taichi = _use_taichi(settings.backend, pos)
        n_atoms = pos.shape[0]
        k = specimen.n_particles
        owner = torch.full((n_atoms,), -1, dtype=torch.int64, device=pos.device)
        centres = specimen.particle_centers_a.detach().to(pos.dtype)
        radii = specimen.particle_radii_a.detach().to(pos.dtype)
        rotations = specimen.particle_rotations.detach().to(pos.dtype)
        for start in range(0, n_atoms, 262_144):  # nearest centre, in chunks
            chunk = pos[start : start + 262_144]
            if k == 0:
                break
            d = torch.cdist(chunk, centres)
            best, arg = d.min(dim=1)
            ok = best <= radii[arg] * (1 + 1e-5) + 1e-3
            owner[start : start + chunk.shape[0]] = torch.where(ok, arg, -1)
        self.loose = torch.nonzero(owner < 0).flatten()
        tol = settings.cutoff_tolerance
        ice_v = settings.ice_potential_v if settings.include_solvent else 0.0
        exclude = settings.include_solvent and settings.exclude_solvent and ice_v > 0
        self.excluded_v = bool(exclude)
        self.types: list[_ParticleType] = []
        self.particle_type: list[int] = []
        signatures: list[tuple] = []
        f = max(1, math.floor(SPLIT_STEP * self.sampling_a / self.voxel_a + 1e-9))
        for p in range(k):
            idx = torch.nonzero(owner == p).flatten()
            if idx.numel() == 0:
                self.particle_type.append(-1)
                continue
            template = rotate_points(rotations[p].T, pos[idx] - centres[p])
            zs, bs, occ = z_num[idx], atoms.b_factors_a2[idx], atoms.occupancies[idx]
            found = -1
            for t, (tz, tb, to, tpos) in enumerate(signatures):
                if (
                    tz.shape == zs.shape
                    and torch.equal(tz, zs)
                    and torch.allclose(tb, bs.detach(), rtol=0, atol=1e-6)
                    and torch.allclose(to, occ.detach(), rtol=0, atol=1e-6)
                    and float((tpos - template).abs().max()) <= SAME_TYPE_TOLERANCE_A
                ):
                    found = t
                    break
            if found < 0:
                with torch.no_grad():
                    gauss = _atom_gaussians(zs, bs, occ, pos.dtype, tol)
                    excl = _excluded_gaussians(zs, occ, pos.dtype, tol, ice_v) if exclude else None
                    radius = float(torch.linalg.vector_norm(template, dim=1).max())
                    r_win = float(gauss[2].max())
                    need = map_bytes(radius + r_win, self.voxel_a, pos.dtype)
                    memory.require_memory(
                        f"the padded Fourier map of a particle (radius {radius:.0f} Å) at "
                        f"map_voxel_a = {self.voxel_a} Å",
                        2 * need,
                        pos.device,
                        "use a larger map_voxel_a or particle_representation='atoms'",
                    )
                    self.types.append(
                        _ParticleType(template, gauss, excl, self.voxel_a, f, use_taichi)
                    )
                signatures.append((zs, bs.detach(), occ.detach(), template))
                found = len(self.types) - 1
            self.particle_type.append(found)
        #: the specimen without the atoms the maps stand for (poses, ice, loose atoms):
        #: tilt this one in a tilt series, it images the same as the full specimen
        self.light = self.loose_atoms(specimen)
        self.light_key = _map_key(self.light, settings)

    def check(self, specimen, settings) -> None:
        """Raise ``ValueError`` unless these maps were made for this specimen (or its
        :attr:`light` copy, any tilt) and settings."""
        key = _map_key(specimen, settings)
        if key != self.key and key != self.light_key:
            raise ValueError(
                "particle maps were computed for other atoms, particles or settings; compute "
                "ParticleMaps(specimen, settings) for this specimen"
            )

    def loose_atoms(self, specimen):
        """The specimen with only the atoms in no particle (projected exactly)."""
        import dataclasses

        atoms = specimen.atoms
        light = getattr(self, "light", None)
        if (
            light is not None
            and atoms.positions_a.shape[0] == self.loose.numel()
            and (atoms.atomic_numbers.data_ptr() == light.atoms.atomic_numbers.data_ptr())
        ):
            return specimen  # the light copy (tilted or not): all its atoms are loose
        idx = self.loose
        sub = type(atoms)(
            atomic_numbers=atoms.atomic_numbers[idx],
            positions_a=atoms.positions_a[idx],
            b_factors_a2=atoms.b_factors_a2[idx],
            occupancies=atoms.occupancies[idx],
            name=atoms.name,
        )
        return dataclasses.replace(specimen, atoms=sub)

    def pose(self, specimen, shape) -> _PosedMaps:
        """The maps placed at this specimen's (tilted) particle poses."""
        return _PosedMaps(self, specimen, shape)


def _map_key(specimen, settings) -> tuple:
    """:func:`~tem_core.potential.streaming._coefficient_key` (atoms and settings that shape
    the Gaussians) and what the maps also depend on."""
    from tem_core.potential.streaming import _coefficient_key

    return _coefficient_key(specimen, settings) + (
        specimen.n_particles,
        settings.map_voxel(),
        settings.sampling_a,
    )


class _PosedMaps:
    """Projections of every particle at one pose, and their split into slices."""

    def __init__(self, maps: ParticleMaps, specimen, shape) -> None:
        self.maps, self.shape = maps, tuple(shape)
        self.s = maps.sampling_a
        self.items = []
        centres = specimen.particle_centers_a.detach()
        rotations = specimen.particle_rotations.detach()
        for p, t in enumerate(maps.particle_type):
            if t >= 0:
                self.items.append((maps.types[t], rotations[p], centres[p].double().cpu()))
        self._projections = None
        self._fractions = None
        self._extent = None
        self._last: tuple | None = None
        self.edges: list[float] | None = None
        self.excluded_v = maps.excluded_v
        #: projection: each copy's excluded ice is clamped against the ice of the whole
        #: interval holding its centre (no split into slices); see :func:`projected_potential`
        self.whole_column = False

    def z_extent(self) -> tuple[float, float] | None:
        if not self.items:
            return None
        if self._extent is None:  # the atoms' z ± window radius, as the exact path
            lows, highs = [], []
            for kind in {id(t): t for t, _, _ in self.items}.values():
                which = [i for i, (t, _, _) in enumerate(self.items) if t is kind]
                r = torch.stack([self.items[i][1] for i in which]).to(kind.template.dtype)
                # z row of rotate_points, copies batched (the same products and sums)
                p = kind.template[None]
                z = (p[..., 0] * r[:, 2, 0, None] + p[..., 1] * r[:, 2, 1, None]
                     + p[..., 2] * r[:, 2, 2, None])  # fmt: skip
                low = (z - kind.window_a).amin(dim=1).tolist()
                high = (z + kind.window_a).amax(dim=1).tolist()
                for i, lo, hi in zip(which, low, high, strict=True):
                    cz = float(self.items[i][2][2])
                    lows.append(cz + lo)
                    highs.append(cz + hi)
            self._extent = (min(lows), max(highs))
        return self._extent

    def projections(self):
        if self._projections is None:  # the copies of each type in one batch
            out: list = [None] * len(self.items)
            for kind in {id(t): t for t, _, _ in self.items}.values():
                which = [i for i, (t, _, _) in enumerate(self.items) if t is kind]
                rotations = torch.stack([self.items[i][1] for i in which])
                centres = torch.stack([self.items[i][2] for i in which])
                done = kind.project(rotations, centres, self.s, self.shape)
                for i, result in zip(which, done, strict=True):
                    out[i] = result
            self._projections = out
        return self._projections

    def _place(self, parts, dtype, device):
        out = torch.zeros(self.shape, dtype=dtype, device=device)
        for values, iy, ix in parts:
            out.index_put_((iy[:, None], ix[None, :]), values.to(dtype), accumulate=True)
        return out

    def total(self, dtype, device):
        """``(V, X)`` projected through all z [V·Å], fields of ``shape``."""
        proj = self.projections()
        v = self._place([(p.real, iy, ix) for p, iy, ix, _ in proj], dtype, device)
        x = self._place([(p.imag, iy, ix) for p, iy, ix, _ in proj], dtype, device)
        return v, x

    def set_edges(self, edges: list[float]) -> None:
        self.edges = list(edges)
        self._fractions = None

    def _slice_parts(self):
        if self._fractions is None:
            by_slice: dict[int, list] = {}
            for (t, r, c), (patch, iy, ix, foot) in zip(
                self.items, self.projections(), strict=True
            ):
                frac, first = t.column_fractions(r, c, self.s, foot, self.edges)
                for j in range(frac.shape[0]):
                    v = patch.real * frac[j, 0]
                    x = patch.imag * frac[j, 1]
                    by_slice.setdefault(first + j, []).append((v, x, iy, ix))
            self._fractions = by_slice
        return self._fractions

    def _index(self, z0: float) -> int:
        return bisect.bisect_right(self.edges, z0 + 1e-9 * max(1.0, abs(z0))) - 1

    def touches(self, z0: float, z1: float) -> bool:
        """True when a particle's projection has a part in the slice ``[z0, z1)``."""
        if not self.items or self.whole_column:
            return False
        if self.edges is None or self._index(z0) < 0:
            lo_hi = self.z_extent()
            return lo_hi[0] < z1 and lo_hi[1] > z0
        return self._index(z0) in self._slice_parts()

    def slice(self, z0: float, z1: float, dtype, device):
        """``(V, X)`` of the particles in the slice ``[z0, z1)`` (one of ``edges``), or None."""
        if not self.items:
            return None
        if self.whole_column:  # the copies whose centre lies in [z0, z1), whole
            parts = [
                (p, iy, ix)
                for (_, _, c), (p, iy, ix, _) in zip(self.items, self.projections(), strict=True)
                if z0 <= float(c[2]) < z1
            ]
            if not parts:
                return None
            v = self._place([(p.real, iy, ix) for p, iy, ix in parts], dtype, device)
            x = self._place([(p.imag, iy, ix) for p, iy, ix in parts], dtype, device)
            return v, x
        index = self._index(z0)
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        parts = self._slice_parts().get(index)
        result = None
        if parts:
            v = self._place([(pv, iy, ix) for pv, _, iy, ix in parts], dtype, device)
            x = self._place([(px, iy, ix) for _, px, iy, ix in parts], dtype, device)
            result = (v, x)
        self._last = (index, result)
        return result
