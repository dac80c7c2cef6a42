"""The request's logs through real logging handlers: the id on every record, the highest
level, the access line (JSON and logfmt, hostile values escaped)."""

from __future__ import annotations

import calendar
import contextlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from logging.handlers import MemoryHandler

import pytest

from scalekit.core import context
from scalekit.core.errors import InvalidArgument
from scalekit.frontend.logs import (
    PATH_LIMIT,
    AccessLog,
    LogWatch,
    RequestIdFilter,
    install_log_records,
)

FIELDS = ["time", "id", "method", "path", "status", "bytes", "duration", "client", "node",
          "version", "level"]  # fmt: skip


class Captured:
    """Real handlers: a MemoryHandler keeping the records, a StreamHandler writing
    ``%(request_id)s %(message)s`` lines."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.memory = MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        self.stream = io.StringIO()
        text = logging.StreamHandler(self.stream)
        text.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
        self.handlers = (self.memory, text)

    @property
    def records(self) -> list[logging.LogRecord]:
        return self.memory.buffer

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@contextlib.contextmanager
def capturing(*loggers: logging.Logger) -> Iterator[Captured]:
    """What ``loggers`` log (at INFO, not propagating, meanwhile), captured."""
    capture, saved = Captured(loggers[0]), [(one.level, one.propagate) for one in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in capture.handlers:
            logger.addHandler(handler)
    try:
        yield capture
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            for handler in capture.handlers:
                logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


@pytest.fixture(autouse=True)
def outside_a_request() -> Iterator[None]:
    """Each test starts outside any request, whatever an earlier test left in this thread."""
    token = context.request_id.set(None)
    yield
    context.request_id.reset(token)


@pytest.fixture
def captured(request) -> Iterator[Captured]:
    """The records of the logger ``test.<test name>``."""
    install_log_records()
    with capturing(logging.getLogger(f"test.{request.node.name}")) as capture:
        yield capture


def test_install_is_idempotent():
    install_log_records()
    factory = logging.getLogRecordFactory()
    install_log_records()
    assert logging.getLogRecordFactory() is factory


def test_every_record_carries_the_request_id_inside_and_outside_a_request(captured):
    log, other = captured.logger, logging.getLogger("test.other.logger")

    def in_task(request_id: str, message: str) -> None:
        token = context.request_id.set(request_id)
        try:
            log.info(message)
        finally:
            context.request_id.reset(token)

    log.info("before")
    watch = LogWatch.start("req-1")
    try:
        log.info("inside")
        made = other.makeRecord(other.name, logging.INFO, __file__, 1, "other", None, None)
        captured.memory.handle(made)  # a record of any logger
        in_task("req-inline", "a task run inside")  # the context variable names the work
    finally:
        watch.stop()
    log.info("after")
    in_task("req-task", "in a task")  # a worker, or TicketMiddleware alone
    assert [(r.getMessage(), r.request_id) for r in captured.records] == [
        ("before", "-"), ("inside", "req-1"), ("other", "req-1"),
        ("a task run inside", "req-inline"), ("after", "-"), ("in a task", "req-task"),
    ]  # fmt: skip
    assert captured.lines[:2] == ["- before", "req-1 inside"]


def test_highest_is_the_highest_level_logged_during_the_request(captured):
    log = captured.logger
    watch = LogWatch.start("req-2")
    try:
        assert watch.highest is None
        log.debug("below the logger's level: not logged, not counted")
        assert watch.highest is None
        log.info("info")
        log.warning("warning")
        log.info("info again")
        assert watch.highest == logging.WARNING
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        assert watch.highest == logging.ERROR
        logging.makeLogRecord({"msg": "a record received from elsewhere"})  # level None
        assert watch.highest == logging.ERROR
    finally:
        watch.stop()
    log.critical("after the request")
    assert watch.highest == logging.ERROR


def test_two_threads_serving_two_requests_do_not_mix(captured):
    log = captured.logger
    steps = threading.Barrier(2)
    highest = {}

    def serve(request_id: str, level: int) -> None:
        watch = LogWatch.start(request_id)
        try:
            for step in range(3):
                steps.wait(timeout=10)
                log.log(level if step == 1 else logging.INFO, "%s step %d", request_id, step)
            steps.wait(timeout=10)
            highest[request_id] = watch.highest
        finally:
            watch.stop()

    threads = [
        threading.Thread(target=serve, args=("req-a", logging.ERROR)),
        threading.Thread(target=serve, args=("req-b", logging.WARNING)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert highest == {"req-a": logging.ERROR, "req-b": logging.WARNING}
    assert len(captured.records) == 6
    for record in captured.records:
        assert record.getMessage().startswith(record.request_id + " step")


def test_a_watch_stopped_on_another_thread_ends_the_request_here_too(captured):
    watch = LogWatch.start("req-3")
    captured.logger.info("inside")
    closer = threading.Thread(target=watch.stop)  # a server closing the body elsewhere
    closer.start()
    closer.join(timeout=10)
    captured.logger.warning("after the response was closed")
    watch.stop()
    assert [r.request_id for r in captured.records] == ["req-3", "-"]
    assert watch.highest == logging.INFO
    LogWatch.start("req-next").stop()  # the next request on this thread replaces it


def test_the_filter_gives_records_made_without_the_factory_an_id():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("record",), None)
    handler.handle(plain)
    token = context.request_id.set("req-4")
    try:
        handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "inside", None, None))
        own = logging.LogRecord("x", logging.INFO, __file__, 1, "its own id", None, None)
        own.request_id = "req-own"
        handler.handle(own)
    finally:
        context.request_id.reset(token)
    assert stream.getvalue().splitlines() == [
        "- plain record",
        "req-4 inside",
        "req-own its own id",
    ]


def write(access: AccessLog, **changes) -> None:
    values = {
        "request_id": "req-6", "method": "GET", "path": "/guestbook/sign", "status": 200,
        "bytes": 1234, "duration": 0.0123456, "client": "10.0.0.7", "node": "web-1",
        "version": "1.4.2", "level": logging.WARNING,
    }  # fmt: skip
    access.write(**{**values, **changes})


def logfmt(line: str) -> dict[str, str]:
    """A small logfmt parser: ``key=bare`` or ``key="JSON-escaped"``, one space apart;
    anything else fails the test."""
    pairs = re.findall(r'([a-z]+)=("(?:[^"\\]|\\.)*"|[^ "=]+)(?: |\Z)', line)
    rebuilt = " ".join(f"{key}={value}" for key, value in pairs)
    assert rebuilt == line, f"not logfmt: {line!r}"
    return {key: json.loads(value) if value[0] == '"' else value for key, value in pairs}


def test_the_json_access_line(captured):
    started = time.time()
    write(AccessLog("json", logger=captured.logger.name))
    [record] = captured.records
    assert record.levelno == logging.INFO and record.request_id == "req-6"
    line = record.getMessage()
    assert line.isascii() and " " not in line  # compact
    fields = json.loads(line)
    assert list(fields) == FIELDS
    assert fields | {"time": None} == {
        "time": None, "id": "req-6", "method": "GET", "path": "/guestbook/sign",
        "status": 200, "bytes": 1234, "duration": 12.346, "client": "10.0.0.7",
        "node": "web-1", "version": "1.4.2", "level": "WARNING",
    }  # fmt: skip
    at = calendar.timegm(time.strptime(fields["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])
    assert started - 1 <= at <= time.time()
    assert captured.lines == ["req-6 " + line]


def test_the_logfmt_access_line(captured):
    write(AccessLog("logfmt", logger=captured.logger.name), level=None, version="")
    [line] = captured.lines
    assert line.startswith("req-6 time=")
    fields = logfmt(line.removeprefix("req-6 "))
    assert list(fields) == FIELDS
    assert fields | {"time": None} == {
        "time": None, "id": "req-6", "method": "GET", "path": "/guestbook/sign",
        "status": "200", "bytes": "1234", "duration": "12.346", "client": "10.0.0.7",
        "node": "web-1", "version": "", "level": "-",
    }  # fmt: skip


HOSTILE = [
    "/a\nid=forged status=200",
    '/a" status=500 x="',
    '/a\r\n{"id": "forged"}',
    "/a=b c=d",
    "/\x00\x1b[31mred\x7f\t",
    '/a\\" b',
    "/line\u2028separator\u0085",
    "/%s %(name)s {}",
]


@pytest.mark.parametrize("format", ["json", "logfmt"])
@pytest.mark.parametrize("path", HOSTILE)
def test_a_hostile_path_stays_one_line_and_reads_back_as_sent(captured, format, path):
    access = AccessLog(format, logger=captured.logger.name)
    wsgi_path = path.encode().decode("latin-1")  # as a WSGI server gives it
    write(access, path=wsgi_path, method="GE T\n", client='1.2.3.4"', node="web\r1")
    [record] = captured.records
    line = record.getMessage()
    assert line.isascii() and len(captured.lines) == 1
    fields = json.loads(line) if format == "json" else logfmt(line)
    assert (fields["path"], fields["method"], fields["client"], fields["node"]) == (
        path, "GE T\n", '1.2.3.4"', "web\r1"
    )  # fmt: skip
    assert fields["id"] == "req-6"


@pytest.mark.parametrize("format", ["json", "logfmt"])
def test_a_non_ascii_path_is_logged_as_the_client_s_utf8_and_a_long_one_is_cut(captured, format):
    access = AccessLog(format, logger=captured.logger.name)
    wsgi_path = "/caf\u00e9/\u2603".encode().decode("latin-1")  # as a WSGI server gives it
    write(access, path=wsgi_path)
    write(access, path="/\xff\xfe broken utf-8")
    write(access, path="/" + "a\n" * 5000)  # 10 kB
    parse = json.loads if format == "json" else logfmt
    paths = [parse(record.getMessage())["path"] for record in captured.records]
    assert paths[:2] == ["/caf\u00e9/\u2603", "/\\xff\\xfe broken utf-8"]
    assert paths[2] == ("/" + "a\n" * 5000)[:PATH_LIMIT] + "..."
    assert len(captured.lines) == 3


def test_nothing_is_done_when_the_access_logger_is_off(captured):
    captured.logger.setLevel(logging.WARNING)
    write(AccessLog("json", logger=captured.logger.name))
    assert captured.records == [] and captured.lines == []


def test_an_unknown_format_is_refused():
    with pytest.raises(InvalidArgument, match="'xml': use 'json' or 'logfmt'"):
        AccessLog("xml")
