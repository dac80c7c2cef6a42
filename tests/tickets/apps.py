"""A small WSGI app that fails in the ways the ticket tests need, with secrets in its locals."""

from __future__ import annotations

from collections.abc import Callable, Iterator

SECRETS = ("hunter2-password", "tok-123456", "dsn-password", "nested-secret")
CONFIG = {
    "password": SECRETS[0],
    "token": SECRETS[1],
    "dsn": f"postgres://app:{SECRETS[2]}@db.internal/shop",
    "settings": {"secret_key": SECRETS[3], "debug": True},
}


class Closing:
    """A body that yields one chunk, then raises; it records that it was closed."""

    closed = 0

    def __iter__(self) -> Iterator[bytes]:
        yield b"partial "
        raise RuntimeError("broke after the first chunk")

    def close(self) -> None:
        Closing.closed += 1


def boom(environ: dict) -> None:
    password = CONFIG["password"]  # noqa: F841 (what the ticket must scrub)
    api_token = CONFIG["token"]  # noqa: F841
    dsn = CONFIG["dsn"]  # noqa: F841
    settings = CONFIG["settings"]  # noqa: F841
    visible = "plain-value"  # noqa: F841
    raise ValueError(f"bad order {environ.get('QUERY_STRING', '')}")


def early() -> Iterator[bytes]:
    raise KeyError("before any byte")
    yield b""  # a generator


def app(environ: dict, start_response: Callable) -> list[bytes] | Iterator[bytes] | Closing:
    path = environ.get("PATH_INFO", "/")
    if path == "/boom":
        boom(environ)
    if path == "/late":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing()
    if path == "/early":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return early()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
