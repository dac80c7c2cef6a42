"""Cron expressions, the five standard fields, in UTC: ``Cron("*/15 9-17 * * mon-fri")``.

``minute hour day-of-month month day-of-week``; each field is ``*``, a number, a range
``a-b``, a step ``*/s``, ``a-b/s`` or ``a/s`` (from ``a`` to the field's end), or a list of
those (``1,15,30-40``). Months take ``jan``-``dec``, days of the week ``sun``-``sat`` (0 and
7 are both Sunday). As in Vixie cron, when both day fields are restricted (neither starts
with ``*``) a day matches if either does: ``0 0 1,15 * fri`` runs on the 1st, the 15th and
every Friday. Shorthands: ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``,
``@monthly``, ``@yearly`` (``@annually``).

Times are UTC unless ``timezone=`` (a zoneinfo name or a ``tzinfo``) says where the fields'
wall clock hangs. In a zone with daylight saving a wall time that happens twice (autumn)
is scheduled once, at its first occurrence, and the wall times a spring gap skips are
scheduled once, when the gap ends: the same day's ``30 2 * * *`` runs at 03:00.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scalekit.core.errors import ConfigError, InvalidArgument

__all__ = ["Cron"]

_MINUTE = timedelta(minutes=1)

_SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# English names whatever the locale (calendar.month_abbr follows it)
_MONTHS = {
    name: n
    for n, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DAYS = {name: n for n, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}

#: (name, lowest, highest, names) of the five fields, in order
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)


def _parse_field(text: str, field: tuple) -> frozenset[int]:
    """The values one field allows; ConfigError (without the expression) saying why not."""
    name, low, high, names = field

    def value(word: str) -> int:
        number = names.get(word.lower()) if names else None
        if number is None:
            if not (word.isascii() and word.isdigit()):
                raise ConfigError(f"{name}: {word!r} is not a number or a name")
            number = int(word)
        if not low <= number <= high:
            raise ConfigError(f"{name}: {number} is out of range {low}-{high}")
        return number

    values: set[int] = set()
    for item in text.split(","):
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ConfigError(f"{name}: the step in {item!r} must be a number from 1")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = value(start), value(end)
            if first > last:
                raise ConfigError(f"{name}: the range {span!r} goes down (write {end}-{start}?)")
        elif span:
            first = value(span)
            last = high if slash else first
        else:
            raise ConfigError(f"{name}: empty item in {text!r}")
        values.update(range(first, last + 1, step))
    if name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def _zone(zone: str | tzinfo | None) -> tzinfo:
    """The time zone ``timezone=`` names (UTC when None)."""
    if zone is None or isinstance(zone, tzinfo):
        return timezone.utc if zone is None else zone
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(
            f"time zone {zone!r:.60} is unknown: an IANA name such as 'Europe/Paris'"
        ) from None


def _utc(at: datetime | float) -> datetime:
    """``at`` (an aware datetime or a Unix time) as a UTC datetime."""
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidArgument(
                f"a naive datetime ({at}) has no time zone: pass an aware one or a Unix time"
            )
        return at.astimezone(timezone.utc)
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise InvalidArgument(f"a time is a datetime or a Unix time, not {at!r:.40}")
    return datetime.fromtimestamp(at, timezone.utc)


class Cron:
    """A parsed cron expression; :meth:`next` and :meth:`previous` find its times, as UTC
    datetimes whatever the zone (two aware datetimes of one zone compare by wall time,
    wrongly in a repeated hour: ``.astimezone(zone)`` them only to show them).

    ``timezone``: where the fields' wall clock is (UTC by default). A bad expression is a
    :class:`~scalekit.core.errors.ConfigError` naming the field and why, as is one that can
    never match (``0 0 30 2 *``) and an unknown time zone.
    """

    __slots__ = ("_days_or", "dom", "dow", "expr", "hours", "minutes", "months", "timezone")

    def __init__(self, expr: str, *, timezone: str | tzinfo | None = None) -> None:
        if not isinstance(expr, str):
            raise ConfigError(f"a cron expression is a string, not {expr!r:.40}")
        self.expr = expr
        self.timezone = _zone(timezone)
        text = expr.strip()
        if text.startswith("@"):
            if text.lower() not in _SHORTHANDS:
                known = ", ".join(_SHORTHANDS)
                raise ConfigError(f"cron {expr!r}: unknown shorthand (known: {known})")
            text = _SHORTHANDS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise ConfigError(
                f"cron {expr!r}: 5 fields (minute hour day-of-month month day-of-week) "
                f"expected, got {len(parts)}"
            )
        try:
            fields = [_parse_field(part, field) for part, field in zip(parts, _FIELDS, strict=True)]
        except ConfigError as error:
            raise ConfigError(f"cron {expr!r}: {error}") from None
        self.minutes, self.hours, self.dom, self.months, self.dow = fields
        self._days_or = not parts[2].startswith("*") and not parts[4].startswith("*")
        if (
            not parts[2].startswith("*")
            and not self._days_or
            and not any(
                day <= calendar.monthrange(2000, month)[1]
                for day in self.dom
                for month in self.months
            )
        ):  # 2000: a leap year, February has its 29th
            raise ConfigError(f"cron {expr!r}: day-of-month: none of these days is in the months")

    def __repr__(self) -> str:
        if self.timezone is timezone.utc:
            return f"Cron({self.expr!r})"
        return f"Cron({self.expr!r}, timezone={str(self.timezone)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        fields = (self.minutes, self.hours, self.dom, self.months, self.dow, self._days_or)
        return (*fields, self.timezone)

    def _day_matches(self, t: datetime) -> bool:
        in_dom, in_dow = t.day in self.dom, t.isoweekday() % 7 in self.dow
        return (in_dom or in_dow) if self._days_or else (in_dom and in_dow)

    def matches(self, at: datetime | float) -> bool:
        """Whether the minute of ``at`` is a scheduled time."""
        return self.previous(at) == _utc(at).replace(second=0, microsecond=0)

    def next(self, at: datetime | float) -> datetime:
        """The first scheduled time strictly after ``at``, an aware datetime in UTC."""
        at = _utc(at)
        wall = at.astimezone(self.timezone).replace(second=0, microsecond=0, tzinfo=None)
        while True:  # wall times of a repeated hour may fall before ``at``: skipped
            wall = self._next_wall(wall + _MINUTE)
            instant = self._instant(wall)
            if instant > at:
                return instant

    def previous(self, at: datetime | float) -> datetime:
        """The latest scheduled time at or before ``at``, an aware datetime in UTC."""
        at = _utc(at)
        local = at.astimezone(self.timezone)
        wall = local.replace(second=0, microsecond=0, tzinfo=None)
        # in the second pass of a repeated hour, its later wall times' first pass is over
        wall += local.replace(fold=0).utcoffset() - local.utcoffset()
        while True:
            instant = self._instant(wall := self._previous_wall(wall))
            if instant <= at:
                return instant
            wall -= _MINUTE

    def _instant(self, wall: datetime) -> datetime:
        """When the zone's clock shows ``wall`` (first time), in UTC; in a gap, its end."""
        while True:
            instant = wall.replace(tzinfo=self.timezone).astimezone(timezone.utc)
            if instant.astimezone(self.timezone).replace(tzinfo=None) == wall:
                return instant
            wall += _MINUTE

    def _next_wall(self, t: datetime) -> datetime:
        """The first wall time at or after ``t`` the fields allow."""
        while True:
            if t.month not in self.months:
                t = t.replace(day=1, hour=0, minute=0) + timedelta(days=32)
                t = t.replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += _MINUTE
            else:
                return t

    def _previous_wall(self, t: datetime) -> datetime:
        """The last wall time at or before ``t`` the fields allow."""
        while True:
            if t.month not in self.months:
                t = t.replace(day=1, hour=0, minute=0) - _MINUTE
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) - _MINUTE
            elif t.hour not in self.hours:
                t = t.replace(minute=0) - _MINUTE
            elif t.minute not in self.minutes:
                t -= _MINUTE
            else:
                return t
