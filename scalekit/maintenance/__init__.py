"""Maintenance mode: take every server down, or read-only, at once, and tell users so.

::

    from scalekit.maintenance import MaintenanceMiddleware
    application = MaintenanceMiddleware(application, flag="redis://cache:6379/0", app_name="shop")

Then ``scalekit maintenance on --mode read-only --for 30m --flag redis://cache:6379/0 --app shop``.
"""

from __future__ import annotations

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
    maintenance_check,
    shared,
    with_maintenance,
    writes_enabled_for,
)
from scalekit.maintenance.state import DOWN, MODES, READ_ONLY, State, format_time

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
    "format_time",
    "maintenance_check",
    "open_flag",
    "shared",
    "with_maintenance",
    "writes_enabled_for",
]
