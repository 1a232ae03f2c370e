"""Thon-ring sampling check of the CTF on a finite grid (re-exported by :mod:`tem_core.optics`).

The aberration phase ``χ(k) = πλk²(½C_sλ²k² − Δf)`` oscillates faster and faster with the
spatial frequency ``k``; on an ``n``-pixel grid of pixel size ``s`` the Fourier pixels are
``Δk = 1/(n s)`` apart. The power spectrum shows ``sin²χ``, which oscillates twice as fast
as ``χ``, so its Thon rings are undersampled (moiré, false rings) once
``|dχ/dk| Δk > π/2``, with ``|dχ/dk| = 2πλk|C_sλ²k² − Δf|``. This is half the limit at
which the CTF itself wraps around the field (``> π``), which
:func:`tem_core.propagate.check_ctf_sampling` checks for simulations. Astigmatism adds
``A/2`` to the defocus along its major axis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from tem_core.propagate import SamplingWarning
from tem_core.units import electron_wavelength_a
from tem_core.validation import (
    require_finite,
    require_grid_shape,
    require_nonnegative,
    require_positive,
)


def check_thon_ring_sampling(
    shape: Sequence[int],
    *,
    sampling_a: float,
    defocus_a: float,
    cs_a: float,
    energy_ev: float,
    astigmatism_a: float = 0.0,
    max_frequency_per_a: float | None = None,
    stacklevel: int = 2,
) -> list[str]:
    """Warn (:class:`tem_core.propagate.SamplingWarning`) when Thon rings would alias.

    Parameters
    ----------
    shape
        ``(ny, nx)`` grid of the image whose power spectrum is shown [pixels].
    sampling_a
        Pixel size [Å].
    defocus_a
        Defocus [Å], > 0 underfocus.
    cs_a
        Spherical aberration [Å].
    energy_ev
        Beam energy [eV].
    astigmatism_a
        Two-fold astigmatism magnitude [Å].
    max_frequency_per_a
        Highest frequency shown [1/Å] (e.g. the edge of a displayed power spectrum);
        default Nyquist ``1/(2s)``.

    Returns
    -------
    list of str
        The warnings issued (empty when the rings are sampled well).
    """
    ny, nx = require_grid_shape(shape)
    require_positive("sampling_a", sampling_a, "Å")
    require_finite("defocus_a", defocus_a, "Å")
    require_nonnegative("cs_a", cs_a, "Å")
    require_positive("energy_ev", energy_ev, "eV")
    require_nonnegative("astigmatism_a", astigmatism_a, "Å")
    k_max = 0.5 / sampling_a
    if max_frequency_per_a is not None:
        require_positive("max_frequency_per_a", max_frequency_per_a, "1/Å")
        k_max = min(float(max_frequency_per_a), k_max)
    wavelength = electron_wavelength_a(energy_ev)
    dk = 1.0 / (min(ny, nx) * sampling_a)
    messages = []
    for df in (defocus_a + 0.5 * astigmatism_a, defocus_a - 0.5 * astigmatism_a):
        # |dχ/dk| ∝ k|C_sλ²k² − Δf|: largest at k_max or at its interior turning point
        ks = [k_max]
        if df > 0 and cs_a > 0:
            ks.append(min(k_max, math.sqrt(df / (3 * cs_a * wavelength**2))))
        slope = max(
            2 * math.pi * wavelength * k * abs(cs_a * wavelength**2 * k**2 - df) for k in ks
        )
        step = slope * dk  # change of χ between neighbouring Fourier pixels [rad]
        if step > math.pi / 2:
            messages.append(
                f"Thon rings at defocus_a={df:.4g} Å are undersampled near {k_max:.3g} 1/Å: "
                f"χ changes by {step:.2f} rad > π/2 between Fourier pixels of the {ny}x{nx} "
                f"grid (sampling_a={sampling_a} Å), so the power spectrum shows false rings; "
                "use a larger field, less defocus, or show lower frequencies"
            )
            break
    for message in messages:
        warnings.warn(message, SamplingWarning, stacklevel=stacklevel)
    return messages


def check_aperture(microscope, shape: tuple[int, int], sampling_a: float) -> None:
    """Raise when the objective aperture passes less than one Fourier pixel of the grid.

    The aperture edge is a ramp one Fourier pixel ``Δk = 1/(max(ny, nx)·sampling_a)`` wide
    centred on ``k_max = α/λ``; below ``k_max = Δk`` even the unscattered beam (k = 0) is
    attenuated, which silently changes the image mean. Such an aperture cannot be represented
    on this grid: use a larger field of view or a larger aperture.
    """
    alpha = microscope.objective_aperture_rad
    if alpha is None:
        return
    step = 1.0 / (max(shape) * sampling_a)
    k_max = alpha / microscope.wavelength_a
    if k_max < step:
        raise ValueError(
            f"objective_aperture_rad must pass at least one Fourier pixel of the grid, got "
            f"{alpha:.3g} rad: its cut-off α/λ = {k_max:.3g} 1/Å is below the frequency step "
            f"1/(N·sampling_a) = {step:.3g} 1/Å of a {shape[0]} x {shape[1]} grid at "
            f"{sampling_a} Å; use objective_aperture_rad >= {step * microscope.wavelength_a:.3g}"
            " rad or a larger field of view"
        )
