"""File formats: MRC images and stacks, IMOD tilt-angle files, SerialEM ``.mdoc``, PNG previews.

Imports no physics stage. Every writer is atomic: the data go to a temporary file in the
destination directory, which then replaces the destination with :func:`os.replace`, so an
interrupted run never leaves a half-written file. Writers refuse to replace an existing file
unless ``overwrite=True``, and an unwritable destination raises an ``OSError`` naming the path.

Conventions
-----------
* MRC data are written as float32 (mode 2) with the voxel size in Å in the header. A 2-D array
  is one image; a 3-D array ``(n, ny, nx)`` is an image stack (a tilt series: ``ispg = 0``,
  ``nz = n``, ``mz = 1`` as the MRC2014 convention for image stacks) unless ``volume=True``
  (``ispg = 1``, ``mz = nz``, e.g. a tomogram).
* Tilt angles are stored in degrees, one per line (IMOD ``.rawtlt`` / ``.tlt``, ``%.2f``),
  and handled in radians in memory.
* SerialEM metadata are converted to internal units (Å, eV, rad, e/Å²) and to this package's
  defocus sign (``defocus_a > 0`` is underfocus), see :func:`read_mdoc`.
"""

from __future__ import annotations

from tem_core.io.mdoc import MdocTiltSeries, read_mdoc
from tem_core.io.mrc import read_mrc, write_mrc
from tem_core.io.png import write_png_preview
from tem_core.io.tilt_angles import read_tilt_angles, write_tilt_angles

__all__ = [
    "MdocTiltSeries",
    "read_mdoc",
    "read_mrc",
    "read_tilt_angles",
    "write_mrc",
    "write_png_preview",
    "write_tilt_angles",
]
