"""Cron expressions: every field form, names, shorthands, the day rule, next/previous in UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from scalekit.core.errors import ConfigError, InvalidArgument
from scalekit.tasks.cron import Cron

UTC = timezone.utc


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def times(expr: str, start: datetime, count: int, zone: str | None = None) -> list[datetime]:
    """The first ``count`` times of ``expr`` (in ``zone``) after ``start``, through next()."""
    cron, found = Cron(expr, timezone=zone), []
    for _ in range(count):
        start = cron.next(start)
        found.append(start)
    return found


@pytest.mark.parametrize(
    ("expr", "field", "values"),
    [
        ("* * * * *", "minutes", set(range(60))),
        ("7 * * * *", "minutes", {7}),
        ("1,15,30 * * * *", "minutes", {1, 15, 30}),
        ("10-13 * * * *", "minutes", {10, 11, 12, 13}),
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("10-30/10 * * * *", "minutes", {10, 20, 30}),
        ("50/4 * * * *", "minutes", {50, 54, 58}),
        ("0,5-7,*/20 * * * *", "minutes", {0, 5, 6, 7, 20, 40}),
        ("0 */6 * * *", "hours", {0, 6, 12, 18}),
        ("0 9-17/4 * * *", "hours", {9, 13, 17}),
        ("0 0 1,31 * *", "dom", {1, 31}),
        ("0 0 * jan,JUL-sep *", "months", {1, 7, 8, 9}),
        ("0 0 * */3 *", "months", {1, 4, 7, 10}),
        ("0 0 * * mon-fri", "dow", {1, 2, 3, 4, 5}),
        ("0 0 * * Sat,sun", "dow", {6, 0}),
        ("0 0 * * 7", "dow", {0}),
        ("0 0 * * 5-7", "dow", {5, 6, 0}),
        ("0 0 * * 0-7", "dow", set(range(7))),
    ],
)
def test_field_forms(expr: str, field: str, values: set[int]) -> None:
    assert getattr(Cron(expr), field) == values


@pytest.mark.parametrize(
    ("shorthand", "expr"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ],
)
def test_shorthands(shorthand: str, expr: str) -> None:
    assert Cron(shorthand) == Cron(expr)
    assert hash(Cron(shorthand)) == hash(Cron(expr))


def test_equal_expressions_written_differently() -> None:
    assert Cron("0,30 * * * *") == Cron("*/30  *  *  *  *")
    assert Cron("0 0 * * 7") == Cron("0 0 * * sun")
    assert Cron("* * * * *") != Cron("0 * * * *")
    assert repr(Cron("@daily")) == "Cron('@daily')"


def test_next_is_strictly_after_and_previous_at_or_before() -> None:
    cron = Cron("*/15 * * * *")
    assert cron.next(at(2026, 1, 1, 10, 15)) == at(2026, 1, 1, 10, 30)
    assert cron.next(at(2026, 1, 1, 10, 14, 59)) == at(2026, 1, 1, 10, 15)
    assert cron.previous(at(2026, 1, 1, 10, 15)) == at(2026, 1, 1, 10, 15)
    assert cron.previous(at(2026, 1, 1, 10, 29, 59, 999999)) == at(2026, 1, 1, 10, 15)
    assert cron.previous(at(2026, 1, 1, 0, 14)) == at(2026, 1, 1, 0, 0)
    assert cron.previous(at(2026, 1, 1, 0, 0, 1)) == at(2026, 1, 1, 0, 0)


def test_weekdays_in_working_hours() -> None:
    # 2026-12-04 is a Friday
    assert times("0 9-17/8 * * mon-fri", at(2026, 12, 4, 12), 4) == [
        at(2026, 12, 4, 17),
        at(2026, 12, 7, 9),
        at(2026, 12, 7, 17),
        at(2026, 12, 8, 9),
    ]
    assert Cron("0 9 * * mon-fri").previous(at(2026, 12, 6, 23)) == at(2026, 12, 4, 9)


def test_year_rollover() -> None:
    assert Cron("@yearly").next(at(2026, 12, 31, 23, 59)) == at(2027, 1, 1)
    assert Cron("59 23 31 12 *").previous(at(2027, 1, 1, 0, 0, 30)) == at(2026, 12, 31, 23, 59)
    assert Cron("* * * * *").next(at(2026, 12, 31, 23, 59, 59)) == at(2027, 1, 1)


def test_month_ends() -> None:
    # the 31st skips the months without one
    assert times("0 0 31 * *", at(2026, 1, 31), 4) == [
        at(2026, 3, 31),
        at(2026, 5, 31),
        at(2026, 7, 31),
        at(2026, 8, 31),
    ]
    assert Cron("0 0 31 * *").previous(at(2026, 12, 30)) == at(2026, 10, 31)
    assert Cron("0 0 30 * *").next(at(2026, 1, 30)) == at(2026, 3, 30)
    assert Cron("30 23 28-31 * *").previous(at(2026, 3, 1)) == at(2026, 2, 28, 23, 30)
    assert Cron("@monthly").previous(at(2026, 3, 31, 23, 59)) == at(2026, 3, 1)


def test_february_29() -> None:
    cron = Cron("0 12 29 2 *")
    assert cron.next(at(2026, 1, 1)) == at(2028, 2, 29, 12)
    assert cron.previous(at(2028, 2, 29, 11, 59)) == at(2024, 2, 29, 12)
    # 2100 is not a leap year (divisible by 100, not by 400); 2000 was
    assert cron.next(at(2096, 3, 1)) == at(2104, 2, 29, 12)
    assert cron.previous(at(2104, 2, 28)) == at(2096, 2, 29, 12)
    assert cron.previous(at(2003, 1, 1)) == at(2000, 2, 29, 12)
    assert Cron("0 0 * 2 *").previous(at(2024, 3, 1)) == at(2024, 2, 29)
    assert Cron("0 0 * 2 *").previous(at(2026, 3, 1)) == at(2026, 2, 28)


def test_both_day_fields_restricted_match_either() -> None:
    # the 13th of every month, and every Friday (2026-11-13 is a Friday)
    assert times("0 0 13 * fri", at(2026, 11, 1), 6) == [
        at(2026, 11, 6),
        at(2026, 11, 13),
        at(2026, 11, 20),
        at(2026, 11, 27),
        at(2026, 12, 4),
        at(2026, 12, 11),
    ]
    assert Cron("0 0 13 * fri").next(at(2026, 12, 11)) == at(2026, 12, 13)  # a Sunday
    assert Cron("0 0 1,15 * mon").previous(at(2026, 12, 14, 1)) == at(2026, 12, 14)
    assert Cron("0 0 1,15 * mon").previous(at(2026, 12, 13)) == at(2026, 12, 7)


def test_a_starred_day_field_means_both_must_match() -> None:
    # Vixie cron: "*" or "*/n" in one day field -> both fields must match (here: just Fridays)
    assert times("0 0 * * fri", at(2026, 12, 1), 2) == [at(2026, 12, 4), at(2026, 12, 11)]
    assert times("0 0 13 * *", at(2026, 11, 1), 2) == [at(2026, 11, 13), at(2026, 12, 13)]
    # odd days that are also Fridays
    assert times("0 0 */2 * fri", at(2026, 12, 1), 3) == [
        at(2026, 12, 11),
        at(2026, 12, 25),
        at(2027, 1, 1),
    ]
    # Sundays that are the 29th of February: 2032 (its 29th is a Sunday)
    assert Cron("0 0 29 2 */7").next(at(2026, 1, 1)) == at(2032, 2, 29)


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/7 * * * *",
        "5 */5 * * *",
        "0 3 1,15 * *",
        "0 0 13 * fri",
        "0 0 */2 * fri",
        "30 12 28-31 feb,mar *",
        "0 0 * * sun",
        "59 23 29 feb *",
    ],
)
def test_next_and_previous_agree_with_a_minute_scan(expr: str) -> None:
    cron = Cron(expr)

    def scheduled(t: datetime) -> bool:  # the fields read directly, Vixie's day rule
        in_dom, in_dow = t.day in cron.dom, t.isoweekday() % 7 in cron.dow
        both = not expr.split()[2].startswith("*") and not expr.split()[4].startswith("*")
        day = (in_dom or in_dow) if both else (in_dom and in_dow)
        return t.minute in cron.minutes and t.hour in cron.hours and t.month in cron.months and day

    start = at(2028, 2, 25, 22, 30)
    minutes = [start + timedelta(minutes=n) for n in range(12 * 24 * 60)]
    times = [t for t in minutes if scheduled(t)]
    assert times, expr
    assert all(cron.matches(t) for t in times)
    for t in minutes[::53]:
        assert cron.matches(t) == (t in times)
        later = [s for s in times if s > t]
        if later:
            assert cron.next(t) == later[0]
            assert cron.next(t + timedelta(seconds=59)) == later[0]
        earlier = [s for s in times if s <= t]
        if earlier:
            assert cron.previous(t) == earlier[-1]
            assert cron.previous(t + timedelta(seconds=59)) == earlier[-1]


def test_times_in_and_out() -> None:
    cron = Cron("@hourly")
    # a Unix time, an aware datetime in another zone; out: aware UTC datetimes
    assert cron.next(0) == at(1970, 1, 1, 1)
    assert cron.previous(3600.5) == at(1970, 1, 1, 1)
    plus2 = timezone(timedelta(hours=2))
    assert cron.previous(datetime(2026, 6, 1, 1, 30, tzinfo=plus2)) == at(2026, 5, 31, 23)
    assert cron.next(at(2026, 6, 1)).tzinfo is UTC
    assert cron.matches(at(2026, 6, 1, 5, 0, 42))
    assert not cron.matches(at(2026, 6, 1, 5, 1))
    with pytest.raises(InvalidArgument, match="naive"):
        cron.next(datetime(2026, 6, 1))
    with pytest.raises(InvalidArgument, match="Unix time"):
        cron.previous("2026-06-01")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "5 fields .* got 4"),
        ("* * * * * *", "got 6"),
        ("", "got 0"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month: 32 is out of range 1-31"),
        ("* * * 13 *", "month: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week: 8 is out of range 0-7"),
        ("*/0 * * * *", "minute: the step in '\\*/0' must be a number from 1"),
        ("* */x * * *", "hour: the step"),
        ("5-1 * * * *", "minute: the range '5-1' goes down"),
        ("* * * * mon-sun", "day-of-week: the range 'mon-sun' goes down"),
        ("1,,2 * * * *", "minute: empty item"),
        ("-5 * * * *", "minute: '' is not a number"),
        ("1-2-3 * * * *", "minute: '2-3' is not a number"),
        ("foo * * * *", "minute: 'foo' is not a number or a name"),
        ("* * * jan-foo *", "month: 'foo' is not"),
        ("* * * * monday", "day-of-week: 'monday' is not"),
        ("* * * mon *", "month: 'mon' is not"),
        ("\u00b2 * * * *", "minute: '\u00b2' is not"),
        ("@reboot", "unknown shorthand"),
        ("0 0 30 2 *", "day-of-month: none of these days is in the months"),
        ("0 0 31 apr,jun,sep,nov *", "day-of-month: none"),
    ],
)
def test_bad_expressions_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Cron(expr)
    assert f"cron {expr!r}" in str(caught.value) or "unknown" in message
    assert isinstance(caught.value, ValueError)


def test_a_fixed_offset_zone() -> None:
    cron = Cron("0 9 * * mon-fri", timezone=timezone(timedelta(hours=-5)))
    assert cron.next(at(2026, 12, 4, 13)) == at(2026, 12, 4, 14)  # 09:00 at UTC-5
    assert cron.next(at(2026, 12, 4, 14)) == at(2026, 12, 7, 14)  # Friday, then Monday
    assert cron.previous(at(2026, 12, 7, 13, 59)) == at(2026, 12, 4, 14)
    assert cron != Cron("0 9 * * mon-fri")
    assert repr(cron) == "Cron('0 9 * * mon-fri', timezone='UTC-05:00')"


def test_a_spring_gap_runs_its_missing_times_once_when_it_ends() -> None:
    # Paris, 2026-03-29: the clocks go from 02:00 (UTC+1) to 03:00 (UTC+2), at 01:00 UTC
    paris = ZoneInfo("Europe/Paris")
    daily = Cron("30 2 * * *", timezone="Europe/Paris")
    assert daily.next(at(2026, 3, 28, 12)) == at(2026, 3, 29, 1)  # 03:00 local
    assert daily.next(at(2026, 3, 29, 1)) == at(2026, 3, 30, 0, 30)  # 02:30 local again
    assert daily.previous(at(2026, 3, 29, 1)) == at(2026, 3, 29, 1)
    assert daily.previous(at(2026, 3, 29, 0, 59)) == at(2026, 3, 28, 1, 30)
    assert daily.next(at(2026, 3, 28, 12)).tzinfo is UTC
    assert daily.next(at(2026, 3, 28, 12)).astimezone(paris).hour == 3
    # 02:00, 02:30 (missing) and 03:00 are one time: 03:00 local
    assert times("*/30 * * * *", at(2026, 3, 29, 0), 3, "Europe/Paris") == [
        at(2026, 3, 29, 0, 30),
        at(2026, 3, 29, 1),
        at(2026, 3, 29, 1, 30),
    ]


def test_a_repeated_autumn_hour_runs_once() -> None:
    # Paris, 2026-10-25: 03:00 (UTC+2) goes back to 02:00 (UTC+1), at 01:00 UTC
    daily = Cron("30 2 * * *", timezone="Europe/Paris")
    assert daily.next(at(2026, 10, 24, 12)) == at(2026, 10, 25, 0, 30)  # the first 02:30
    assert daily.next(at(2026, 10, 25, 0, 30)) == at(2026, 10, 26, 1, 30)  # not the second
    assert daily.previous(at(2026, 10, 25, 1, 45)) == at(2026, 10, 25, 0, 30)
    # the second 02:00-02:59 is not scheduled again: no run for that hour of real time
    assert times("*/30 * * * *", at(2026, 10, 24, 23, 59), 5, "Europe/Paris") == [
        at(2026, 10, 25, 0),
        at(2026, 10, 25, 0, 30),
        at(2026, 10, 25, 2),
        at(2026, 10, 25, 2, 30),
        at(2026, 10, 25, 3),
    ]
    assert Cron("*/30 * * * *", timezone="Europe/Paris").previous(at(2026, 10, 25, 1, 50)) == at(
        2026, 10, 25, 0, 30
    )


@pytest.mark.parametrize(
    ("expr", "zone"),
    [
        ("*/20 * * * *", "Europe/Paris"),
        ("0,30 1-3 * * *", "Europe/Paris"),
        ("15 2 * * *", "America/New_York"),
        ("45 1 * * sun", "America/New_York"),
    ],
)
def test_next_and_previous_are_consistent_across_daylight_saving(expr: str, zone: str) -> None:
    cron = Cron(expr, timezone=zone)
    for start in (
        at(2026, 3, 7, 22),
        at(2026, 3, 28, 22),
        at(2026, 10, 24, 22),
        at(2026, 10, 31, 22),
    ):
        for t in (start + timedelta(minutes=n) for n in range(0, 2 * 24 * 60, 7)):
            previous, following = cron.previous(t), cron.next(t)
            assert previous <= t < following
            assert cron.next(previous) == following
            assert cron.previous(following) == following
            assert cron.matches(previous) and cron.matches(following)


def test_an_unknown_time_zone() -> None:
    for zone in ("Nowhere/Atlantis", "../etc/passwd", 5):
        with pytest.raises(ConfigError, match=r"time zone .* is unknown"):
            Cron("@daily", timezone=zone)  # type: ignore[arg-type]


def test_not_a_string() -> None:
    with pytest.raises(ConfigError, match="a cron expression is a string"):
        Cron(None)  # type: ignore[arg-type]


def test_impossible_day_is_fine_when_the_weekday_field_allows_others() -> None:
    # both day fields restricted: "the 30th of February or any Monday of February"
    assert Cron("0 0 30 2 mon").next(at(2026, 1, 1)) == at(2026, 2, 2)
