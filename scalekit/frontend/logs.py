"""The request's logs: its id on every log record, its highest level, one access record.

- :func:`install_log_records` chains a LogRecord factory that gives every record, from any
  logger, a ``request_id`` attribute (``"-"`` outside a request or task) and tells the
  request's :class:`LogWatch` the record's level. Handlers can then format
  ``%(request_id)s``.
- :class:`RequestIdFilter` does the same for one handler, without the factory (also for
  records made before it was installed).
- :class:`LogWatch` is the request's highest level, kept in a context variable, so the
  threads (or asyncio tasks) serving other requests never mix theirs in.
- :class:`AccessLog` writes one line per request, JSON or logfmt, to ``scalekit.access``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from scalekit.core import context
from scalekit.core.errors import InvalidArgument

__all__ = ["AccessLog", "LogWatch", "RequestIdFilter", "install_log_records"]

#: The watch of the request this thread (or task) serves; None outside a request.
_watch: contextvars.ContextVar[LogWatch | None] = contextvars.ContextVar(
    "scalekit_log_watch", default=None
)
_install_lock = threading.Lock()
_installed = False


def install_log_records() -> None:
    """Chain a LogRecord factory onto the current one (once per process, whatever the number
    of calls): every record then carries ``request_id`` (:data:`scalekit.core.context.request_id`,
    else the id of the :class:`LogWatch` watching, else ``"-"``), and a record made during a
    watched request raises that request's :attr:`LogWatch.highest`.

    The record has the attribute from the start, so a logging call that passes
    ``extra={"request_id": ...}`` raises ``KeyError`` (the standard library refuses to
    overwrite an attribute); drop that ``extra``, the id is already there."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()
        watching = _watch.get
        request_id = context.request_id.get

        def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            made = previous(*args, **kwargs)
            current = request_id()
            watch = watching()
            if watch is not None and watch.active:
                current = current or watch.request_id
                level, highest = made.levelno, watch.highest
                if level is not None and (highest is None or level > highest):
                    watch.highest = level  # (logging.makeLogRecord makes one with None)
            made.request_id = current or "-"
            return made

        logging.setLogRecordFactory(record)
        _installed = True


class RequestIdFilter(logging.Filter):
    """Give each record a handler sees a ``request_id`` (the current request's, ``"-"``
    outside one) unless it has one: for a handler whose format names ``%(request_id)s``
    (``"filters": {"request_id": {"()": "scalekit.frontend.RequestIdFilter"}}`` in a
    ``dictConfig``). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = context.request_id.get() or "-"
        return True


class LogWatch:
    """The highest level logged during one request.

    ``LogWatch.start(request_id)`` at the start of the request (it installs the record
    factory if nobody has), ``.highest`` (a ``levelno``, None if nothing was logged) at the
    end, then ``.stop()``. Its records carry ``request_id`` unless the context variable
    :data:`scalekit.core.context.request_id` names one (a task run inside the request
    keeps its own)."""

    __slots__ = ("_token", "active", "highest", "request_id")

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.highest: int | None = None
        self.active = True
        self._token: contextvars.Token | None = None

    @classmethod
    def start(cls, request_id: str) -> LogWatch:
        """A watch of the current request, made current in this context."""
        if not _installed:
            install_log_records()
        watch = cls(request_id)
        watch._token = _watch.set(watch)
        return watch

    def stop(self) -> None:
        """Stop watching: later records are outside the request, also when a server closes
        the response on another thread (the watch then stays in the request's context,
        inactive, until the next request there replaces it)."""
        self.active = False
        token, self._token = self._token, None
        if token is None:
            return
        try:
            _watch.reset(token)
        except ValueError:  # made in another context: nothing to undo in this one
            return


#: The longest path an access line holds; a longer one is cut and ends with "...".
PATH_LIMIT = 2048
_FIELDS = ("time", "id", "method", "path", "status", "bytes", "duration", "client", "node",
           "version", "level")  # fmt: skip
_JSON = "{" + ",".join(f'"{name}":%s' for name in _FIELDS) + "}"
_LOGFMT = " ".join(f"{name}=%s" for name in _FIELDS)
#: Bare in logfmt: printable ASCII but space, '"', '=' and '\'.
_BARE = frozenset(map(chr, range(0x21, 0x7F))) - set('"=\\')


def _logfmt(value: str | None) -> str:
    """``value`` as a logfmt value: bare when it can be, else quoted with JSON escapes (an
    ASCII line: no CR/LF, control character or non-ASCII character survives unescaped)."""
    if value is None:
        return "-"
    if value and _BARE.issuperset(value):
        return value
    return _quote(value)


def _json(value: str | None) -> str:
    """``value`` as a JSON string (ASCII, escaped) or null."""
    return "null" if value is None else _quote(value)


class AccessLog:
    """One line per request (``format="json"`` or ``"logfmt"``) at INFO on the ``logger``
    named, with the fields ``time`` (UTC, ms), ``id``, ``method``, ``path`` (never the query
    string: tokens travel there), ``status``, ``bytes``, ``duration`` (ms), ``client``,
    ``node``, ``version`` and ``level`` (the name of the highest level the app logged,
    null / ``-`` if none). Every value is escaped: a hostile path cannot start a second
    line or break the JSON. When the logger does not log INFO, :meth:`write` returns at once.
    """

    def __init__(self, format: str = "json", logger: str = "scalekit.access"):
        if format not in ("json", "logfmt"):
            raise InvalidArgument(f"access log format {format!r:.40}: use 'json' or 'logfmt'")
        self.format = format
        self.logger = logging.getLogger(logger)
        self._line, self._value = (_JSON, _json) if format == "json" else (_LOGFMT, _logfmt)
        self._second = (-1, "")  # the last second written and its text, reused within it

    def write(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        status: int,
        bytes: int,
        duration: float,
        client: str,
        node: str,
        version: str,
        level: int | None,
    ) -> None:
        """Log the request's line (``path`` as in the WSGI environ, ``duration`` in seconds,
        ``level`` a ``levelno`` or None); the record's ``request_id`` is ``request_id``."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", None, None)
        record.request_id = request_id
        value = self._value
        record.msg = self._line % (
            value(self._time(record.created)), value(request_id), value(method),
            value(_readable(path)), int(status), int(bytes), f"{duration * 1000:.3f}",
            value(client), value(node), value(version),
            value(None if level is None else logging.getLevelName(level)),
        )  # fmt: skip
        logger.handle(record)

    def _time(self, at: float) -> str:
        """``at`` as ``2026-12-05T03:12:22.123Z``, the seconds formatted once per second."""
        second = int(at)
        last, text = self._second
        if second != last:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int((at - second) * 1000):03d}Z"


def _readable(path: str) -> str:
    """A WSGI path (bytes decoded as latin-1) as the UTF-8 text the client sent, cut at
    :data:`PATH_LIMIT` characters."""
    if not path.isascii():
        path = path.encode("latin-1", "replace").decode("utf-8", "backslashreplace")
    if len(path) > PATH_LIMIT:
        path = path[:PATH_LIMIT] + "..."
    return path
