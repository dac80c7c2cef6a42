"""Deprecated path: this module moved to :mod:`scalekit.core.signing`; the old path goes in the
next release."""

import sys
import warnings

from scalekit.core import signing as moved

warnings.warn(
    "scalekit.signing moved to scalekit.core.signing; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = moved
