"""Deprecated path: this module moved to :mod:`scalekit.core.urls`; the old path goes in the
next release."""

import sys
import warnings

from scalekit.core import urls as moved

warnings.warn(
    "scalekit.urls moved to scalekit.core.urls; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = moved
