"""Write the peers' reference arrays that tests compare with, without the peers installed.

Runs in the comparison environment only (abTEM, focal-frequency-loss)::

    .venv-compare/bin/python benchmarks/make_reference_data.py

and rewrites ``tests/reference_data/*.npz``. Each file stores the inputs, the peer's output,
the peer's version and the agreement measured here, from which tests/test_peer_parity.py
takes its tolerance. The script imports nothing from tem_core except to print that
agreement, so the stored numbers are the peers' own.

* ``abtem_multislice.npz``: abTEM 1.0.x plane-wave multislice (float64, anti-aliasing taper
  off, i.e. the same hard 2/3-Nyquist aperture as ``tem_core.propagate.multislice``)
  through abTEM's own Peng slice potentials of 40 crambin atoms (1CRN), 300 kV.
* ``ffl_loss.npz``: ``focal_frequency_loss.FocalFrequencyLoss`` on random images for the
  four combinations of ``log_matrix`` and ``batch_matrix``, three values of ``alpha``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "reference_data"


def abtem_multislice() -> None:
    import abtem
    import ase
    import gemmi

    st = gemmi.read_structure(str(ROOT / "data" / "1crn.pdb.gz"))
    st.remove_waters()
    atoms = [(a.element.name, a.pos.tolist()) for ch in st[0] for r in ch for a in r][:40]
    pos = np.array([p for _, p in atoms])
    pos -= pos.min(0)
    cell = np.array([16.0, 16.0, pos[:, 2].max() + 4.0])
    pos[:, :2] += (cell[:2] - pos[:, :2].max(0)) / 2
    pos[:, 2] += 2.0
    system = ase.Atoms([s for s, _ in atoms], positions=pos, cell=cell, pbc=True)
    energy_ev = 300e3
    abtem.config.set(
        {"precision": "float64", "antialias.taper": 0.0, "device": "cpu",
         "diagnostics.progress_bar": False}
    )  # fmt: skip
    potential = abtem.Potential(
        system, sampling=0.5, slice_thickness=1.0, parametrization="peng", projection="infinite"
    )
    slices = np.asarray(potential.build().compute().array)  # (n_slices, nx, ny) [V·Å]
    wave = np.asarray(abtem.PlaneWave(energy=energy_ev).multislice(potential).compute().array)
    thickness = np.asarray([float(t) for t in potential.slice_thickness])
    sampling = np.asarray(potential.sampling, dtype=np.float64)
    measured = np.nan
    try:  # the agreement today, stored for the test's tolerance
        from tem_core.propagate import multislice

        ours = multislice(
            (torch.from_numpy(s) for s in slices), sampling_a=float(sampling[0]),
            slice_thickness_a=torch.from_numpy(thickness), energy_ev=energy_ev,
        ).numpy()  # fmt: skip
        measured = float(np.linalg.norm(ours - wave) / np.linalg.norm(wave - 1.0))
    except ImportError:
        pass
    np.savez_compressed(
        OUT / "abtem_multislice.npz",
        slices_v_a=slices,
        wave=wave,
        sampling_a=sampling,
        slice_thickness_a=thickness,
        energy_ev=np.float64(energy_ev),
        peer_version=np.str_(f"abtem {abtem.__version__}"),
        measured_rel_l2_scattered=np.float64(measured),
    )
    print(f"abtem_multislice.npz: {slices.shape} slices, rel L2 (scattered) {measured:.2e}")


def ffl_loss() -> None:
    import focal_frequency_loss as ffl

    g = torch.Generator().manual_seed(3)
    pred = torch.rand(4, 1, 12, 12, generator=g, dtype=torch.float64)
    target = torch.rand(4, 1, 12, 12, generator=g, dtype=torch.float64)
    rows = []
    for alpha in (0.5, 1.0, 1.5):
        for log_matrix in (False, True):
            for batch_matrix in (False, True):
                loss = ffl.FocalFrequencyLoss(
                    alpha=alpha, log_matrix=log_matrix, batch_matrix=batch_matrix
                )(pred, target)
                rows.append((alpha, log_matrix, batch_matrix, float(loss)))
    measured = np.nan
    try:
        from tem_core.mtf_fit import focal_frequency_loss

        errors = [
            abs(float(focal_frequency_loss(pred, target, alpha=a, log_weight=lw, batch_max=bm)) - v)
            / v
            for a, lw, bm, v in rows
        ]
        measured = max(errors)
    except ImportError:
        pass
    np.savez_compressed(
        OUT / "ffl_loss.npz",
        pred=pred.numpy(),
        target=target.numpy(),
        alpha=np.array([r[0] for r in rows]),
        log_matrix=np.array([r[1] for r in rows]),
        batch_matrix=np.array([r[2] for r in rows]),
        loss=np.array([r[3] for r in rows]),
        peer_version=np.str_(f"focal-frequency-loss {getattr(ffl, '__version__', 'unknown')}"),
        measured_max_rel_error=np.float64(measured),
    )
    print(f"ffl_loss.npz: {len(rows)} losses, max relative error {measured:.2e}")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    abtem_multislice()
    ffl_loss()
