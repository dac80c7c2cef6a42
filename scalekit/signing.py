"""Deprecated path of :mod:`scalekit.core.signing`; it goes in the next release."""

from scalekit.core.compat import moved_module

moved_module(__name__, "scalekit.core.signing")
