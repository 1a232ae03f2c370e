"""Tomographic reconstruction of single-axis tilt series: geometry, projector, SIRT, WBP.

Inverse stage: imports forward stages (``io`` for angle files, ``simulate`` for
:class:`~tem_core.simulate.TiltSeriesResult`), never the reverse.

* :class:`TiltGeometry` (angles from a list, :func:`geometry_from_files` for IMOD
  ``.tlt``/``.rawtlt`` and SerialEM ``.mdoc``, :func:`geometry_from_tilt_series` for a simulated
  series): parallel beam, one tilt axis at an in-plane angle, voxel size = pixel size,
  thickness chosen by the user.
* :class:`TomographyOperator`: the strip-kernel projector ``A`` and its exact adjoint ``A.T``
  (both differentiable, each the other's backward), applied slice by slice along the tilt
  axis as sparse matrix products.
* :func:`sirt` (IMOD's normalisation, relaxation, optional non-negativity) and :func:`wbp`
  (ramp or SIRT-like filter).
* :func:`correlation`, :func:`psnr_db`, :func:`fourier_shell_correlation` for evaluation;
  :func:`potential_on_grid` (the specimen's potential on the reconstruction grid: the
  truth of a simulation), :func:`split_even_odd`, :func:`image_contrast`, :func:`bin_stack`.
"""

from tem_core.reconstruct.algorithms import (
    FILTERS,
    angular_weights,
    ramp_kernel_response,
    sirt,
    wbp,
    wbp_filter,
)
from tem_core.reconstruct.evaluation import (
    bin_stack,
    image_contrast,
    potential_on_grid,
    split_even_odd,
)
from tem_core.reconstruct.geometry import (
    TiltGeometry,
    geometry_from_files,
    geometry_from_tilt_series,
    read_angles,
)
from tem_core.reconstruct.metrics import (
    correlation,
    fourier_lowpass,
    fourier_shell_correlation,
    psnr_db,
    resolution_at,
)
from tem_core.reconstruct.projector import TomographyOperator

__all__ = [
    "FILTERS",
    "TiltGeometry",
    "TomographyOperator",
    "angular_weights",
    "bin_stack",
    "correlation",
    "fourier_lowpass",
    "fourier_shell_correlation",
    "geometry_from_files",
    "geometry_from_tilt_series",
    "image_contrast",
    "potential_on_grid",
    "psnr_db",
    "ramp_kernel_response",
    "read_angles",
    "resolution_at",
    "sirt",
    "split_even_odd",
    "wbp",
    "wbp_filter",
]
