"""Deprecated path: this module moved to :mod:`scalekit.core.tagged_json`; the old path goes in the
next release."""

import sys
import warnings

from scalekit.core import tagged_json as moved

warnings.warn(
    "scalekit.tagged_json moved to scalekit.core.tagged_json; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = moved
