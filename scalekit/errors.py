"""Deprecated path of :mod:`scalekit.core.errors`; it goes in the next release."""

from scalekit.core.compat import moved_module

moved_module(__name__, "scalekit.core.errors")
