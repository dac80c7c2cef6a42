"""The request id: an incoming one (trusted, well formed), a W3C trace id, or a new one."""

from __future__ import annotations

import contextvars
import http.client
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from logging.handlers import MemoryHandler

import pytest

from scalekit.core import context
from scalekit.frontend import FrontendMiddleware
from scalekit.frontend.request_ids import current, request_id_of, trace_id
from scalekit.tasks import Tasks
from scalekit.tasks.worker import ACKED, execute
from scalekit.tickets import TicketMiddleware, open_store
from scalekit.tickets.ticket import request_id as tickets_request_id
from tests.gunicorn import gunicorn
from tests.wsgi import Client

NEW = re.compile(r"[0-9a-f]{32}\Z")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"

KEPT = [
    "0123456789abcdef0123456789abcdef",  # nginx $request_id
    "0b9c8a3e-4f1d-4c2a-9e7b-2d6f1a0c5e3b",  # a UUID
    "7F000001:D2A4_7F000001:1F90_65A1B2C3_0001:2F3D",  # haproxy's unique-id-format
    "req-7f3a",
    "svc.web@node1",
    "a",
    "x" * 128,
]
REFUSED = [
    "",
    "x" * 129,
    "two words",
    "abc,def",  # two X-Request-ID headers joined by the server
    "abc\r\nX-Admin: 1",
    "abc\n",
    "caf\u00e9",
    '"quoted"',
    "../../etc/passwd",
    "a;b",
    "<script>",
    "%0d%0a",
]


def environ(**headers: str) -> dict:
    return {"HTTP_" + name.upper(): value for name, value in headers.items()}


@pytest.mark.parametrize("given", KEPT)
def test_a_well_formed_incoming_id_is_kept_and_tickets_keep_it_too(given):
    assert request_id_of(environ(x_request_id=given), True) == given
    assert tickets_request_id(environ(x_request_id=given)) == given


@pytest.mark.parametrize("given", REFUSED)
def test_a_malformed_incoming_id_is_replaced_by_a_new_one(given):
    made = request_id_of(environ(x_request_id=given), True)
    assert NEW.match(made) and made != given


def test_an_untrusted_peer_s_ids_are_not_believed():
    made = request_id_of(environ(x_request_id="req-7f3a", traceparent=TRACEPARENT), False)
    assert NEW.match(made) and made not in ("req-7f3a", TRACE)


def test_a_traceparent_gives_its_trace_id_and_x_request_id_comes_first():
    assert request_id_of(environ(traceparent=TRACEPARENT), True) == TRACE
    both = environ(x_request_id="req-7f3a", traceparent=TRACEPARENT)
    assert request_id_of(both, True) == "req-7f3a"
    refused = environ(x_request_id="bad id", traceparent=TRACEPARENT)
    assert request_id_of(refused, True) == TRACE


@pytest.mark.parametrize(
    "header",
    [
        f"01-{TRACE}-00f067aa0ba902b7-01",  # a later version, same fields
        f"cc-{TRACE}-00f067aa0ba902b7-09-what-comes-next",  # a later version's extra field
        f"00-{TRACE}-00f067aa0ba902b7-00",  # not sampled: still the trace
    ],
)
def test_valid_traceparents(header):
    assert trace_id(header) == TRACE


@pytest.mark.parametrize(
    "header",
    [
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # uppercase hex
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # version ff is forbidden
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        f"01-{TRACE}-00f067aa0ba902b7-01extra",  # a later version's extra needs its dash
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",  # short trace id
        f"00-{TRACE}-00f067aa0ba902b7-1",  # short flags
        f"0-{TRACE}-00f067aa0ba902b7-01",
        f" 00-{TRACE}-00f067aa0ba902b7-01",
        f"00_{TRACE}_00f067aa0ba902b7_01",
        "",
        "garbage",
    ],
)
def test_invalid_traceparents_are_ignored(header):
    assert trace_id(header) is None
    made = request_id_of(environ(traceparent=header), True)
    assert NEW.match(made) and made != TRACE


def test_made_ids_are_128_random_bits_and_differ():
    made = {request_id_of({}, True) for _ in range(2000)}
    assert len(made) == 2000 and all(NEW.match(one) for one in made)


def test_current_is_the_context_s_request_id():
    def in_a_fresh_context() -> None:  # as a new thread starts
        assert current() is None
        token = context.request_id.set("req-7f3a")
        assert current() == "req-7f3a"
        context.request_id.reset(token)
        assert current() is None

    contextvars.Context().run(in_a_fresh_context)


# -- through the front end: one id in the response, the access line, the ticket, the
# -- deferred task and its logs

SECRET = "k" * 32
view_log = logging.getLogger("test.frontend.view")


def remember(name: str) -> None:
    """A task: logs, so its record shows the id of the request that deferred it."""
    view_log.info("remembering %s", name)


def app(tasks: Tasks):
    """A view logging a warning and deferring a task (its id is the body); ``/fail`` fails."""

    def view(environ: dict, start_response) -> list[bytes]:
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("the view failed")
        view_log.warning("signing")
        task = tasks.defer(remember, "ann")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [task.encode()]

    return view


@pytest.fixture
def tasks(tmp_path) -> Tasks:
    return Tasks(f"sqlite://{tmp_path}/tasks.sqlite", secret=SECRET)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The records of the view, its task and ``scalekit.access`` (at INFO meanwhile)."""
    handler = MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
    loggers = [view_log, logging.getLogger("scalekit.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield handler.buffer
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def access_line(records: list[logging.LogRecord]) -> dict:
    [line] = [r.getMessage() for r in records if r.name == "scalekit.access"]
    return json.loads(line)


@pytest.mark.parametrize(
    ("headers", "trusted_proxies", "expected"),
    [
        ({"X-Request-ID": "req-ann"}, (), "req-ann"),
        ({"traceparent": TRACEPARENT}, (), TRACE),
        ({"X-Request-ID": "bad id"}, (), None),
        ({"X-Request-ID": "req-ann"}, "10.0.0.1", None),  # the client is not the proxy
    ],
)
def test_the_access_line_a_deferred_task_and_its_logs_carry_the_request_s_id(
    tasks, records, headers, trusted_proxies, expected
):
    client = Client(FrontendMiddleware(app(tasks), trusted_proxies=trusted_proxies))
    response = client.request("/sign", headers=headers)
    assert response.status == 200
    given = response.header("X-Request-ID")
    assert given == expected if expected else NEW.match(given)
    line = access_line(records)
    assert (line["id"], line["path"], line["status"], line["level"]) == (
        given, "/sign", 200, "WARNING"
    )  # fmt: skip
    [claim] = tasks.engine.claim(["default"], "test")
    assert claim.task_id == response.text
    assert tasks.decode(claim.payload).request_id == given
    assert execute(tasks, claim) == ACKED  # the worker runs it under the request's id
    assert [(r.getMessage(), r.request_id) for r in records if r.name == view_log.name] == [
        ("signing", given), ("remembering ann", given)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "trusted_proxies", "expected"),
    [({"X-Request-ID": "req-bob"}, (), "req-bob"), ({"X-Request-ID": "req-bob"}, "10.0.0.1", None)],
)
def test_a_ticket_written_during_the_request_has_its_id(
    tasks, records, tmp_path, headers, trusted_proxies, expected
):
    store = f"file://{tmp_path}/errors"
    inner = TicketMiddleware(app(tasks), store=store)
    client = Client(FrontendMiddleware(inner, trusted_proxies=trusted_proxies))
    response = client.request("/fail", headers={**headers, "Accept": "application/json"})
    assert response.status == 500
    given = response.header("X-Request-ID")
    assert given == expected if expected else NEW.match(given)
    [entry] = open_store(store).entries()
    assert open_store(store).load(entry.ticket_id)["request_id"] == given
    assert json.loads(response.body)["request_id"] == given
    assert (access_line(records)["id"], access_line(records)["status"]) == (given, 500)


def test_a_failing_app_s_request_is_logged_and_ends(tasks, records):
    client = Client(FrontendMiddleware(app(tasks)))

    def in_a_fresh_context() -> None:  # as a new thread starts
        response = client.request("/fail", headers={"X-Request-ID": "req-8"})
        assert response.status == 500
        assert current() is None  # the request is over in this thread
        view_log.info("after the request")

    contextvars.Context().run(in_a_fresh_context)
    line = access_line(records)
    assert (line["id"], line["status"], line["level"]) == ("req-8", 500, "ERROR")
    assert records[-1].request_id == "-"


# -- under a real gunicorn: requests served at once by one worker's threads never mix ids --

#: The log file gunicorn's worker writes (this module is its app); unset in pytest itself.
LOG_FILE = "REQUEST_IDS_LOG"
if os.environ.get(LOG_FILE):
    logging.basicConfig(
        filename=os.environ[LOG_FILE], level=logging.INFO,
        format="%(request_id)s %(name)s %(message)s",
    )  # fmt: skip


def overlapping(environ: dict, start_response) -> list[bytes]:
    """Logs before and after a pause, so that the worker's threads serve requests at once."""
    view_log.warning("serving %s", environ["PATH_INFO"])
    time.sleep(0.3)
    view_log.info("served %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


application = FrontendMiddleware(overlapping, access_log="logfmt")


def test_threads_serving_requests_at_once_keep_each_request_s_id(tmp_path):
    log_file = tmp_path / "app.log"
    env = {LOG_FILE: str(log_file)}
    with gunicorn("tests.frontend.test_request_ids:application", env, workers=1, threads=4) as port:

        def get(n: int) -> tuple[str, str]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            given = {"X-Request-ID": f"req-{n}"} if n % 2 else {}
            connection.request("GET", f"/r/{n}", headers=given)
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
            return f"/r/{n}", response.getheader("X-Request-ID")

        with ThreadPoolExecutor(8) as pool:
            ids = dict(pool.map(get, range(8)))
    assert all(ids[f"/r/{n}"] == f"req-{n}" for n in range(1, 8, 2))
    assert len(set(ids.values())) == 8
    lines = log_file.read_text().splitlines()
    first_served = next(i for i, line in enumerate(lines) if " served " in line)
    assert first_served >= 2  # requests did overlap
    for path, given in ids.items():
        assert f"{given} test.frontend.view serving {path}" in lines
        assert f"{given} test.frontend.view served {path}" in lines
        [access] = [line for line in lines if line.startswith(f"{given} scalekit.access ")]
        assert f" id={given} method=GET path={path} status=200 " in access
        assert access.endswith(" level=WARNING")
    assert len(lines) == 3 * 8
