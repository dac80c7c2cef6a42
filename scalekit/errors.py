"""Deprecated path: this module moved to :mod:`scalekit.core.errors`; the old path goes in the
next release."""

import sys
import warnings

from scalekit.core import errors as moved

warnings.warn(
    "scalekit.errors moved to scalekit.core.errors; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = moved
