"""An unknown option to any middleware or ``with_*`` decorator is a ConfigError naming it and
the options taken (the same rule as store URLs), never a TypeError: each piece on a real
store (Redis, sqlite, files)."""

from __future__ import annotations

import pytest

from scalekit.core.errors import ConfigError
from scalekit.db import DBMiddleware, with_db
from scalekit.maintenance import MaintenanceMiddleware, with_maintenance
from scalekit.sessions import SessionMiddleware, with_session
from scalekit.static import StaticFiles
from scalekit.tickets import TicketMiddleware, with_tickets

SECRET = "known-options-secret-0123456789abcdef"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def builders(tmp_path, redis_url):
    """Each middleware and decorator, called with correct arguments plus ``**extra``."""
    db = f"sqlite://{tmp_path}/storage.sqlite"
    flag = f"file://{tmp_path}/MAINTENANCE"
    tickets = f"file://{tmp_path}/errors"
    return {
        "SessionMiddleware": lambda **extra: SessionMiddleware(
            hello, redis_url, SECRET, app_name="known_options", **extra
        ),
        "with_session": lambda **extra: with_session(redis_url, SECRET, **extra)(hello),
        "DBMiddleware": lambda **extra: DBMiddleware(hello, db, retry_after=3, **extra),
        "with_db": lambda **extra: with_db(db, **extra)(hello),
        "MaintenanceMiddleware": lambda **extra: MaintenanceMiddleware(
            hello, flag, app_name="known_options", **extra
        ),
        "with_maintenance": lambda **extra: with_maintenance(flag, **extra)(hello),
        "TicketMiddleware": lambda **extra: TicketMiddleware(hello, tickets, **extra),
        "with_tickets": lambda **extra: with_tickets(tickets, **extra)(hello),
        "StaticFiles": lambda **extra: StaticFiles(hello, tmp_path, max_age=60, **extra),
    }


#: the class that names the error, and one option it takes, for each kind
CHECKED = {
    "SessionMiddleware": ("SessionMiddleware", "idle_timeout"),
    "with_session": ("with_session", "idle_timeout"),
    "DBMiddleware": ("DBMiddleware", "pin_seconds"),
    "with_db": ("with_db", "pin_seconds"),
    "MaintenanceMiddleware": ("MaintenanceMiddleware", "retry_after"),
    "with_maintenance": ("with_maintenance", "retry_after"),
    "TicketMiddleware": ("TicketMiddleware", "app_name"),
    "with_tickets": ("with_tickets", "app_name"),
    "StaticFiles": ("StaticFiles", "max_age"),
}


@pytest.mark.parametrize("kind", CHECKED)
def test_an_unknown_option_is_a_config_error_naming_it_and_the_known_ones(builders, kind):
    assert callable(builders[kind]())  # the right arguments build it
    with pytest.raises(ConfigError, match=r": unknown option retry_afer, tiemout; takes "):
        builders[kind](tiemout=5, retry_afer=1)
    owner, known = CHECKED[kind]
    with pytest.raises(ConfigError) as caught:
        builders[kind](tiemout=5)
    named, taken = str(caught.value).split(": unknown option tiemout; takes ")
    assert named == owner and known in taken.split(", ")


def test_options_passed_on_to_pydal_are_known(tmp_path):
    DBMiddleware(hello, f"sqlite://{tmp_path}/storage.sqlite", pool_size=1, lazy_tables=True)
    with pytest.raises(ConfigError, match=r"unknown option lazy_table; takes .*lazy_tables"):
        DBMiddleware(hello, f"sqlite://{tmp_path}/storage.sqlite", lazy_table=True)
