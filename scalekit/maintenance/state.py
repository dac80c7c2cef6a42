"""What a maintenance flag holds: a mode, a message, an optional window and a Retry-After.

A :class:`State` is stored as one small JSON object (in a file or a Redis key)::

    {"mode": "read-only", "message": "Database upgrade", "start": 1760000000.0,
     "end": 1760001800.0, "retry_after": 600}

``start``/``end`` are Unix times (UTC); ``None`` means "since always" / "until switched off".
Also here: the parsers the CLI uses for ``--at`` (a UTC time) and ``--for`` (a duration).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from scalekit.core import options
from scalekit.core.errors import ConfigError, CorruptData

__all__ = ["DOWN", "MODES", "READ_ONLY", "State", "format_time", "parse_duration", "parse_time"]

DOWN, READ_ONLY = "down", "read-only"
MODES = (DOWN, READ_ONLY)
DEFAULT_MESSAGES = {
    DOWN: "This site is down for maintenance.",
    READ_ONLY: "This site is read-only for maintenance: changes cannot be saved right now.",
}


@dataclass(frozen=True)
class State:
    """One maintenance flag: ``mode`` is ``"down"`` or ``"read-only"``; times are Unix UTC."""

    mode: str = DOWN
    message: str = ""
    start: float | None = None
    end: float | None = None
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"maintenance mode {self.mode!r} is unknown; use down or read-only")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ConfigError("a maintenance window must end after it starts")
        if self.retry_after is not None and self.retry_after < 0:
            raise ConfigError("retry_after cannot be negative")

    def active(self, now: float | None = None) -> bool:
        """True while ``now`` (default: the current time) is inside the window."""
        now = time.time() if now is None else now
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def over(self, now: float | None = None) -> bool:
        """True once the window has ended: the flag no longer means anything."""
        return self.end is not None and (time.time() if now is None else now) >= self.end

    def next_change(self, now: float) -> float | None:
        """The next Unix time at which :meth:`active` flips, or ``None`` if it never does."""
        for moment in (self.start, self.end):
            if moment is not None and moment > now:
                return moment
        return None

    @property
    def text(self) -> str:
        """The message to show users: the operator's, or a default for the mode."""
        return self.message or DEFAULT_MESSAGES[self.mode]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, where: str) -> State:
        """Decode a stored flag; raises :class:`CorruptData` naming ``where`` when it is not one."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            unknown = set(data) - {"mode", "message", "start", "end", "retry_after"}
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
            for name in ("start", "end"):
                if data.get(name) is not None and not isinstance(data[name], (int, float)):
                    raise ValueError(f"{name} must be a number (Unix time)")
            if data.get("retry_after") is not None and type(data["retry_after"]) is not int:
                raise ValueError("retry_after must be an integer")
            if not isinstance(data.get("message", ""), str):
                raise TypeError("message must be a string")
            return cls(**data)
        except (ValueError, TypeError, ConfigError) as exc:  # JSONDecodeError is a ValueError
            raise CorruptData(
                f"{where}: not a maintenance flag ({exc}); fix it or rewrite it with "
                "`scalekit maintenance on|off`"
            ) from None

    def describe(self, now: float | None = None) -> str:
        """One line for people: mode, window and message."""
        now = time.time() if now is None else now
        if self.over(now):
            when = f"ended {format_time(self.end)}"
        elif self.active(now):
            when = "on" + (f" until {format_time(self.end)}" if self.end is not None else "")
        else:
            until = f" to {format_time(self.end)}" if self.end is not None else ""
            when = f"scheduled from {format_time(self.start)}{until}"
        retry = f", Retry-After {self.retry_after} s" if self.retry_after is not None else ""
        return f"{self.mode} {when}{retry}: {self.text}"


def format_time(moment: float | None) -> str:
    """``2025-06-01 02:00:00 UTC``."""
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_duration(text: str) -> float:
    """Seconds in a window's length: ``90``, ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``,
    ``2w`` (:func:`scalekit.core.options.parse_duration`), more than 0; ConfigError else."""
    seconds = options.parse_duration(text)
    if seconds <= 0:
        raise ConfigError(f"{text!r}: a duration must be more than 0")
    return seconds


def parse_time(text: str, now: float | None = None) -> float:
    """A Unix time from ``+10m`` (from now), ``now``, or an ISO time in UTC such as
    ``2025-06-01T02:00`` / ``2025-06-01 02:00Z`` / ``2025-06-01T04:00+02:00``."""
    now = time.time() if now is None else now
    text = text.strip()
    if text.lower() == "now":
        return now
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time; write UTC as YYYY-MM-DDTHH:MM (or end it with Z or an "
            "offset such as +02:00), or +30m for 30 minutes from now"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
