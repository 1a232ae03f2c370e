"""Deprecated alias of :mod:`tem_core.validation`, kept while parallel branches still import it.

New code imports ``tem_core.validation``; this module is removed once no branch uses it.
"""

from tem_core.validation import (  # noqa: F401
    require_finite,
    require_in_range,
    require_nonnegative,
    require_positive,
    require_positive_int,
    require_shape,
)
