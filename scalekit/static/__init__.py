"""Static files: precompress a tree to ``.gz`` / ``.br`` at deploy time, serve it right.

``precompress(["static"], Options(brotli=True))`` (the ``scalekit zip-static`` command)
writes deterministic, incremental, atomic variants; ``StaticFiles`` serves a folder with
content negotiation, ETags, conditional and range requests.

The names are imported on first use, so the deploy command does not load the server's
modules (and a server does not load the compressors' pool machinery).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scalekit.static.files import StaticFiles
    from scalekit.static.precompress import Report, precompress
    from scalekit.static.variants import DEFAULT_SKIP, Options

__all__ = ["DEFAULT_SKIP", "Options", "Report", "StaticFiles", "precompress"]

_HOMES = {
    "StaticFiles": "files",
    "Report": "precompress",
    "precompress": "precompress",
    "DEFAULT_SKIP": "variants",
    "Options": "variants",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{home}")
    # all of the module's names at once: importing ``precompress`` the module also set the
    # package attribute ``precompress``, which must be the function
    for exported, where in _HOMES.items():
        if where == home:
            globals()[exported] = getattr(module, exported)
    return globals()[name]
