"""The deadline under a real gunicorn, sync and gthread workers: a handler sleeping, one in
a busy loop, one blocked on a Redis call (BLPOP with a 30 s socket timeout: only the
deadline bounds it) get the 503 page; one that catches DeadlineExceeded answers itself.
Each leaves a ticket whose frames name the line it was stuck on, and the worker serves on.
The same with the Deadline alone and inside FrontendMiddleware.

This module is also the app gunicorn serves (``app``, built from the environment)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import time

import pytest

from scalekit.connect.redis import open_redis
from scalekit.frontend import FrontendMiddleware
from scalekit.frontend.deadline import Deadline, DeadlineExceeded, remaining
from scalekit.tickets import FolderStore, TicketMiddleware
from tests.gunicorn import gunicorn

TICKETS, REDIS, SECONDS, LOG, FRONTEND = (f"SCALEKIT_TEST_DEADLINE_{name}"
    for name in ("TICKETS", "REDIS", "SECONDS", "LOG", "FRONTEND"))  # fmt: skip


def handlers(environ: dict, start_response) -> list[bytes]:
    path = environ["PATH_INFO"]
    body = str(os.getpid())
    if path == "/sleep":
        time.sleep(4)  # stuck: sleeping
    elif path == "/busy":
        spins = 0
        while spins >= 0:  # stuck: busy
            spins += 1  # stuck: busy
    elif path == "/redis":
        blocked.call("BLPOP", "scalekit-test-deadline-empty", 0)  # stuck: on Redis
    elif path == "/catch":
        try:
            for _ in range(400):
                time.sleep(0.01)  # stuck: short sleeps
        except DeadlineExceeded:
            body = f"caught, {remaining():.2f} s of grace left"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def _app() -> Deadline | FrontendMiddleware | None:
    if TICKETS not in os.environ:  # imported by pytest, not served
        return None
    handler = logging.FileHandler(os.environ[LOG])
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger("scalekit").addHandler(handler)
    tickets = TicketMiddleware(handlers, os.environ[TICKETS], repeat_window=0)
    seconds = float(os.environ.get(SECONDS, "1"))
    if os.environ.get(FRONTEND):
        return FrontendMiddleware(tickets, deadline=seconds, grace=0.5, access_log=None)
    return Deadline(tickets, seconds=seconds, grace=0.5)


app = _app()
blocked = open_redis(os.environ[REDIS]) if REDIS in os.environ else None


def serve(tmp_path_factory, redis_url: str, seconds: str = "1", frontend: bool = False,
          **options):  # fmt: skip
    folder = tmp_path_factory.mktemp("deadline")
    env = {TICKETS: f"file://{folder}/errors", REDIS: f"{redis_url}?socket_timeout=30",
           SECONDS: seconds, LOG: str(folder / "app.log"),
           FRONTEND: "1" if frontend else ""}  # fmt: skip
    served = gunicorn("tests.frontend.test_deadline_gunicorn:app", env, workers=1, **options)
    return served, FolderStore(str(folder / "errors")), folder / "app.log"


@pytest.fixture(scope="module", params=["sync", "gthread", "sync-frontend", "gthread-frontend"])
def server(request, tmp_path_factory, redis_url):
    threads = 1 if request.param.startswith("sync") else 4
    frontend = request.param.endswith("frontend")
    served, store, log = serve(tmp_path_factory, redis_url, frontend=frontend, threads=threads)
    with served as port:
        yield port, store, log


def get(port: int, path: str, request_id: str = "") -> tuple[int, dict, bytes, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {"Accept": "application/json", **({"X-Request-ID": request_id} if request_id else {})}
    started = time.monotonic()
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return (
            response.status,
            dict(response.getheaders()),
            response.read(),
            time.monotonic() - started,
        )
    finally:
        connection.close()


def ticket_of(store: FolderStore, request_id: str) -> dict:
    """The ticket of the request ``request_id`` (written by the watchdog: waited for)."""
    for _ in range(50):
        for path in store.pending():
            with open(path) as file:
                ticket = json.load(file)
            if ticket["request_id"] == request_id:
                return ticket
        time.sleep(0.1)
    raise AssertionError(f"no ticket for {request_id}")


def stuck_line(ticket: dict, marker: str) -> bool:
    """Whether the ticket's frames show the line marked ``# stuck: <marker>``."""
    return any(
        f"# stuck: {marker}"
        in frame["context"]["lines"][frame["line"] - frame["context"]["first_line"]]
        for frame in ticket["frames"]
    )


@pytest.mark.parametrize(
    ("path", "marker"),
    [("/sleep", "sleeping"), ("/busy", "busy"), ("/redis", "on Redis")],
)
def test_a_stuck_handler_gets_the_503_page_and_a_ticket_and_the_worker_serves_on(
    server, path, marker
):
    port, store, log = server
    _, _, pid, _ = get(port, "/pid")
    request_id = f"deadline{path.replace('/', '-')}-{time.monotonic_ns()}"
    status, headers, body, took = get(port, path, request_id)
    assert status == 503 and took < 3.5
    page = json.loads(body)
    assert page == {"error": "service unavailable", "request_id": request_id,
                    "ticket": headers["X-Ticket-ID"]}  # fmt: skip
    ticket = ticket_of(store, request_id)
    assert ticket["id"] == page["ticket"] and "DeadlineExceeded" in ticket["error"]["type"]
    assert stuck_line(ticket, marker)
    assert b"Traceback" not in body and b"stuck" not in body
    assert get(port, "/pid")[2] == pid  # the same worker answers the next request
    assert "WARNING" not in log.read_text()  # the page's headers pass the front end as they are


def test_a_handler_that_catches_the_deadline_answers_within_the_grace(server):
    port, store, _ = server
    request_id = f"deadline-catch-{time.monotonic_ns()}"
    status, _, body, took = get(port, "/catch", request_id)
    assert status == 200 and body.startswith(b"caught, 0.") and took < 3
    assert stuck_line(ticket_of(store, request_id), "short sleeps")


def test_under_a_short_sync_timeout_the_deadline_is_cut_to_end_before_it(
    tmp_path_factory, redis_url
):
    served, store, log = serve(tmp_path_factory, redis_url, seconds="60", threads=1, timeout=4)
    with served as port:
        _, _, pid, _ = get(port, "/pid")
        status, _, _, took = get(port, "/sleep", "deadline-cut")
        assert status == 503 and took < 4  # cut to 2.4 s: before the 4 s timeout
        assert stuck_line(ticket_of(store, "deadline-cut"), "sleeping")
        assert get(port, "/pid")[2] == pid  # not killed by gunicorn's timeout
    warnings = [line for line in log.read_text().splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "cut to 2.4 s" in warnings[0]
