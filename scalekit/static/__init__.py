"""Static files: precompress a tree to ``.gz`` / ``.br`` at deploy time, serve it right.

``precompress(["static"], Options(brotli=True))`` (the ``scalekit zip-static`` command)
writes deterministic, incremental, atomic variants; ``StaticFiles`` serves a folder with
content negotiation, ETags, conditional and range requests.
"""

from scalekit.static.files import StaticFiles
from scalekit.static.precompress import Report, precompress
from scalekit.static.variants import DEFAULT_SKIP, Options

__all__ = ["DEFAULT_SKIP", "Options", "Report", "StaticFiles", "precompress"]
