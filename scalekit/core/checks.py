"""The checks every piece makes on names and durations it is given, one rule each."""

from __future__ import annotations

import re
from typing import Any

from scalekit.core.errors import ConfigError

__all__ = ["MAX_TTL", "check_app_name", "check_lease", "check_ttl"]

#: The longest TTL any store accepts: memcached reads a longer relative TTL as a date.
MAX_TTL = 30 * 24 * 3600

_APP_NAME = re.compile(r"[A-Za-z0-9_]{1,64}\Z")


def check_app_name(app_name: str) -> str:
    """App names become key prefixes, file and table names: keep them to ``[A-Za-z0-9_]``."""
    if not isinstance(app_name, str) or not _APP_NAME.match(app_name):
        raise ConfigError(f"app name {app_name!r} must be 1-64 letters, digits or underscores")
    return app_name


def check_ttl(ttl: Any, what: str = "TTL") -> float | None:
    """A TTL in seconds: ``None`` (no expiry) or more than 0 and at most 30 days.

    Raises :class:`ConfigError` (also a ``ValueError``) naming ``what`` the TTL is for.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
        raise ConfigError(f"{what} {ttl!r} must be more than 0 seconds and at most 30 days")
    return float(ttl)


def check_lease(token: Any, ttl: Any) -> float:
    """A lease's (a lock's) owner token, 1-128 printable characters, and its TTL in seconds,
    more than 0 (stores that cannot keep it longer cut it to 30 days)."""
    if not isinstance(token, str) or not 0 < len(token) <= 128 or not token.isprintable():
        raise ConfigError(
            f"a lease (lock token) must be 1-128 printable characters, got {token!r:.40}"
        )
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ConfigError(f"a lease TTL must be a positive number of seconds, got {ttl!r}")
    return float(ttl)
