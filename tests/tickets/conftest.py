"""Real tickets for the ticket tests: built from real exceptions, kept in real stores."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from scalekit.tickets import build, open_store
from scalekit.tickets.ticket import utc_text

ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/orders",
    "QUERY_STRING": "page=2",
    "REMOTE_ADDR": "10.0.0.7",
    "HTTP_COOKIE": "sid=abc",
}


def raise_value_error() -> None:
    raise ValueError("bad <order> & more")


def raise_key_error() -> None:
    raise KeyError("missing")


def ticket_of(fail: Callable[[], None], at: float | None = None, app: str = "shop") -> dict:
    """The ticket of what ``fail`` raises, created at the Unix time ``at``."""
    try:
        fail()
    except Exception as exc:  # noqa: BLE001 - whatever the test's function raises
        ticket = build(exc, ENVIRON, app_name=app, request_id="req-1")
    else:
        raise AssertionError("did not raise")
    if at is not None:
        ticket["created"] = utc_text(at)
    return ticket


@pytest.fixture
def table() -> str:
    """A table of this test's own, so tests sharing the PostgreSQL server stay apart."""
    return f"t_{secrets.token_hex(6)}"


@pytest.fixture(params=["folder", "sqlite", "postgres", "mysql"])
def any_store(request, tmp_path, table) -> Iterator:
    """Each ticket store kind; yields (url, store)."""
    if request.param == "folder":
        url = f"file://{tmp_path}/errors"
    elif request.param == "sqlite":
        url = f"sqlite://{tmp_path}/tickets.sqlite"
    else:
        url = request.getfixturevalue(f"{request.param}_url") + f"?table={table}"
    store = open_store(url)
    yield url, store
    store.close()


def spread(store, now: float | None = None) -> list[dict]:
    """Five tickets an hour apart (oldest first): three ValueError, two KeyError."""
    now = now or time.time()
    kinds = [
        raise_value_error,
        raise_key_error,
        raise_value_error,
        raise_key_error,
        raise_value_error,
    ]
    tickets = [ticket_of(fail, now - 3600 * (5 - n)) for n, fail in enumerate(kinds)]
    for ticket in tickets:
        store.save(ticket)
    return tickets
