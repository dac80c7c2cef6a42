"""The deadline layer called in-process: the exception's kind, the configuration checks,
remaining() inside and after a request, streamed bodies under the deadline, and the ticket
or log of a late request. (Under real gunicorn: test_deadline_gunicorn.)"""

from __future__ import annotations

import io
import json
import logging
import math
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scalekit.core import context
from scalekit.core.errors import ConfigError
from scalekit.frontend import FrontendMiddleware
from scalekit.frontend.deadline import Deadline, DeadlineExceeded, remaining
from scalekit.frontend.watchdog import Request, Watchdog, page_of, watchdog
from scalekit.tickets import FolderStore, TicketMiddleware
from scalekit.wsgi.environ import REQUEST_ID_KEY


def call(app, path: str = "/", **environ) -> tuple[str, dict, bytes]:
    """Run one request through ``app`` on this thread: its status, headers and body."""
    got = {}

    def start_response(status, headers, exc_info=None):
        got.update(status=status, headers=dict(headers))
        return lambda data: None

    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": path, **environ}, start_response)
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return got["status"], got["headers"], data


def on_a_thread(app, path: str = "/", **environ) -> tuple[str, dict, bytes]:
    """:func:`call` on a thread of a pool, as a threaded server runs requests."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call, app, path, **environ).result(timeout=10)


def answer(text: str, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]


def busy(environ, start_response):
    while True:
        pass


def test_deadline_exceeded_passes_except_exception_and_is_caught_by_name():
    assert issubclass(DeadlineExceeded, BaseException)
    assert not issubclass(DeadlineExceeded, Exception)
    assert str(DeadlineExceeded()) == "the request ran past its deadline"


def test_a_deadline_that_cannot_end_before_the_server_timeout_is_refused():
    with pytest.raises(ConfigError, match="server's timeout of 30 s"):
        Deadline(busy, seconds=30, grace=1, server_timeout=30)
    Deadline(busy, seconds=20, grace=1, server_timeout=30)
    for seconds, grace in ((0, 1), (-1, 1), (10, -1)):
        with pytest.raises(ConfigError):
            Deadline(busy, seconds=seconds, grace=grace)


def test_remaining_counts_down_inside_a_request_and_is_infinite_after():
    seen = []

    def app(environ, start_response):
        seen.append(remaining())
        return answer("ok", start_response)

    assert call(Deadline(app, seconds=5))[2] == b"ok"
    assert 4 < seen[0] <= 5 and remaining() == math.inf


def test_a_streamed_body_stuck_before_its_first_chunk_gets_the_503_page():
    def stuck_body(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            while True:
                pass
            yield b"never"

        return body()

    status, headers, body = on_a_thread(Deadline(stuck_body, seconds=0.3, grace=0.2),
                                        HTTP_ACCEPT="application/json")  # fmt: skip
    assert status.startswith("503") and headers["Cache-Control"] == "no-store"
    assert json.loads(body)["error"] == "service unavailable"


def test_a_streamed_body_stuck_after_it_started_is_cut_short():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"first"
            while True:
                pass

        return body()

    with pytest.raises(ConnectionAbortedError, match="cut short"):
        on_a_thread(Deadline(app, seconds=0.3, grace=0.2))


def test_a_late_request_gets_a_ticket_holding_where_it_was_stuck(tmp_path):
    store = FolderStore(str(tmp_path))
    app = Deadline(TicketMiddleware(busy, f"file://{tmp_path}"), seconds=0.3, grace=0.2)
    status, headers, body = on_a_thread(app, HTTP_X_REQUEST_ID="late-request-1")
    assert status.startswith("503") and headers["X-Request-ID"] == "late-request-1"
    assert headers["X-Ticket-ID"].encode() in body and b"busy" not in body
    ticket = store.load(headers["X-Ticket-ID"])
    assert ticket["request_id"] == "late-request-1"
    assert ticket["frames"][-1]["function"] == "busy"


def test_without_a_ticket_middleware_the_stack_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="scalekit.frontend"):
        status, _, _ = on_a_thread(Deadline(busy, seconds=0.3, grace=0.2))
    assert status.startswith("503")
    stacks = [record for record in caplog.records if record.exc_info]
    assert "in busy" in caplog.text and stacks
    assert stacks[0].exc_info[0] is DeadlineExceeded


def test_an_answer_begun_with_write_is_cut_short_not_followed_by_a_503():
    written = []

    def start_response(status, headers, exc_info=None):
        written.append(status)
        return written.append

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"begun")
        while True:
            pass

    layer = Deadline(app, seconds=0.3, grace=0.2)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    with ThreadPoolExecutor(1) as pool, pytest.raises(ConnectionAbortedError, match="cut short"):
        pool.submit(lambda: list(layer(environ, start_response))).result(timeout=10)
    assert written == ["200 OK", b"begun"]


def test_under_load_only_the_late_requests_are_interrupted_and_nothing_escapes():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/late":
            ends = time.monotonic() + 2
            while time.monotonic() < ends:
                pass
        return answer("ok", start_response)

    layer = Deadline(app, seconds=0.3, grace=0.05)
    paths = ["/late" if n % 10 == 0 else "/fast" for n in range(200)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda path: call(layer, path)[0][:3], paths))
    assert results == ["503" if path == "/late" else "200" for path in paths]


def _open_request_state() -> tuple[object, int]:
    """The deadline current on this thread and the requests the watchdog still watches."""
    return context.deadline.get(), len(watchdog.get().requests)


def test_a_body_closed_without_being_iterated_still_ends_the_request():
    closed = []

    class Body:
        def __iter__(self):
            yield b"never read"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    before = len(watchdog.get().requests)
    body = Deadline(app, seconds=5)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
                                    lambda status, headers, exc_info=None: None)  # fmt: skip
    body.close()  # as a server does whose client went away
    assert closed == [True]
    assert _open_request_state() == (None, before)
    assert remaining() == math.inf


def test_the_deadline_is_current_during_each_step_of_a_body_only():
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            seen.append(remaining())
            yield b"one"
            seen.append(remaining())
            yield b"two"

        return body()

    body = Deadline(app, seconds=5)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
                                    lambda status, headers, exc_info=None: None)  # fmt: skip
    chunks = iter(body)
    assert next(chunks) == b"one" and remaining() == math.inf  # between steps: none
    assert next(chunks) == b"two" and remaining() == math.inf
    body.close()
    assert all(4 < left <= 5 for left in seen) and len(seen) == 2


def test_an_interrupt_raised_as_the_app_returns_gets_the_503_and_ends_the_request(monkeypatch):
    leave = Watchdog.leave
    returned = []

    def landing(self, request, claim, done):  # the interrupt lands as leave() is called
        if returned:
            returned.clear()
            with self.lock:
                request.pending = True  # as the watchdog's interrupt() leaves it
            raise DeadlineExceeded
        return leave(self, request, claim, done)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        returned.append(True)
        return [b"too late"]

    def request() -> tuple[tuple[str, dict, bytes], tuple[object, int]]:
        return call(Deadline(app, seconds=5), HTTP_ACCEPT="application/json"), _open_request_state()

    monkeypatch.setattr(Watchdog, "leave", landing)
    before = len(watchdog.get().requests)
    with ThreadPoolExecutor(1) as pool:
        (status, _, body), state = pool.submit(request).result(timeout=10)
    assert status.startswith("503") and json.loads(body)["error"] == "service unavailable"
    assert state == (None, before)


def test_a_request_ending_as_its_deadline_is_enforced_is_seen_finished(monkeypatch):
    dog = watchdog.get()
    request = Request(time.monotonic(), 0, {"REQUEST_METHOD": "GET"}, Deadline(busy), None)
    request.inside = False
    frames = sys._current_frames
    ends = threading.Thread(target=dog.leave, args=(request, False, True))

    def ending_meanwhile():  # the request's thread ends it while its stack is taken
        ends.start()
        ends.join(0.2)
        return frames()

    monkeypatch.setattr(sys, "_current_frames", ending_meanwhile)
    dog._expire(request)
    ends.join(5)
    assert request.done and request.finished.is_set()


def test_an_interrupt_withdrawn_leaves_no_pending_flag_that_hangs_a_traced_thread():
    script = (
        "import sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from tests.frontend.test_deadline import Deadline, call, context, watchdog, answer\n"
        "def app(environ, start_response):\n"
        "    request = context.deadline.get()\n"
        "    with watchdog.get().lock:\n"
        "        request.pending = True\n"  # interrupted, not raised yet: leave() withdraws
        "    return answer('ok', start_response)\n"
        "with ThreadPoolExecutor(1) as pool:\n"
        "    pool.submit(call, Deadline(app, seconds=5)).result()\n"
        "sys.settrace(lambda frame, event, arg: None)\n"
        "(lambda: None)()\n"
        "sys.settrace(None)\n"
        "print('traced')\n"
    )
    run = [sys.executable, "-c", script]
    done = subprocess.run(run, capture_output=True, text=True, timeout=10, check=False)
    assert done.stdout == "traced\n", done.stderr


def test_a_file_wrapper_passes_through_the_front_end_under_a_deadline_as_it_is():
    class FileWrapper:
        def __init__(self, file, block_size=8192):
            self.file = file

        def __iter__(self):
            return iter([self.file.read()])

        def close(self):
            self.file.close()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", "5")])  # fmt: skip
        return environ["wsgi.file_wrapper"](io.BytesIO(b"hello"))

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/f", "REMOTE_ADDR": "10.0.0.1",
               "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "80",
               "wsgi.file_wrapper": FileWrapper}  # fmt: skip
    before = len(watchdog.get().requests)
    layer = FrontendMiddleware(app, deadline=5, access_log=None)
    body = layer(environ, lambda status, headers, exc_info=None: None)
    assert type(body) is FileWrapper
    file = body.file
    assert b"".join(body) == b"hello"
    body.close()
    assert file.closed and _open_request_state() == (None, before)


def test_the_503_page_is_the_shared_error_page_with_its_ids_escaped():
    environ = {"REQUEST_METHOD": "GET", REQUEST_ID_KEY: "<b>id"}
    request = Request(0.0, 0, environ, Deadline(busy), None)
    request.ticket = "t<i>"
    content_type, body, _ = page_of(request)
    assert content_type.startswith("text/html") and b"Service unavailable" in body
    assert b"&lt;b&gt;id" in body and b"t&lt;i&gt;" in body and b"<b>" not in body
