"""Maintenance mode: take every server down, or read-only, at once, and tell users so.

::

    from scalekit.maintenance import MaintenanceMiddleware
    application = MaintenanceMiddleware(application, flag="redis://cache:6379/0", app_name="shop")

Then ``scalekit maintenance on --mode read-only --for 30m --flag redis://cache:6379/0 --app shop``.
"""

from __future__ import annotations

import os

from scalekit.maintenance.bypass import Bypass, client_address
from scalekit.maintenance.flags import (
    FLAG_VARIABLE,
    FileFlag,
    Flag,
    Maintenance,
    RedisFlag,
    open_flag,
)
from scalekit.maintenance.middleware import (
    ENVIRON_KEY,
    MaintenanceMiddleware,
    _default,
    maintenance_check,
    shared,
)
from scalekit.maintenance.state import DOWN, MODES, READ_ONLY, State

__all__ = [
    "DOWN",
    "ENVIRON_KEY",
    "FLAG_VARIABLE",
    "MODES",
    "READ_ONLY",
    "Bypass",
    "FileFlag",
    "Flag",
    "Maintenance",
    "MaintenanceMiddleware",
    "RedisFlag",
    "State",
    "client_address",
    "maintenance_check",
    "open_flag",
    "shared",
    "writes_enabled_for",
]


def writes_enabled_for(seconds: float = 0.0, flag: Maintenance | Flag | str | None = None,
                       app: str | None = None) -> bool:  # fmt: skip
    """False when maintenance is on or a window starts within ``seconds``.

    Asks ``flag`` (a URL, with ``app``), else the flag of the last ``MaintenanceMiddleware``
    made in this process, else ``$SCALEKIT_MAINTENANCE_FLAG`` with the app ``$SCALEKIT_APP``.
    Cached like the middleware's check, so it is cheap to call often.
    """
    if flag is None and app is None and _default:
        maintenance = _default[0]
    else:
        maintenance = shared(flag, app or os.environ.get("SCALEKIT_APP", "app"))
    return maintenance.writes_enabled_for(seconds)
