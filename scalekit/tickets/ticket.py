"""What a ticket holds: the request and the exception, secrets scrubbed, as a JSON-ready dict.

``build(exc, environ, app_name=..., request_id=...)`` returns the ticket; ``entry(ticket)``
the few fields that lists and summaries show (and that a store indexes). Scrubbing
(:class:`Scrubber`): by name, the values of request headers, query parameters, locals and
dict keys with secret-looking names (Cookie, Authorization, ``*token*``, ``*key*``...), of
such ``name=value``, ``"name": value`` and ``('name', value)`` pairs in any text or repr
(JSON, dataclasses, namedtuples, dict subclasses, ``os.environ``), ``Bearer``/``Basic``
credentials and URL passwords; by value, every masked string wherever else it appears.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import os
import re
import reprlib
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode

from scalekit.core.compat import renamed_keyword
from scalekit.core.context import new_request_id, well_formed_request_id
from scalekit.core.errors import CorruptData
from scalekit.core.instance import app_version, node_name
from scalekit.core.scrub import MASK, SECRET_NAME, scrub_text
from scalekit.wsgi.environ import PEER_KEY

SCHEMA_VERSION = 1
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_NAME = re.compile(r"[\w.-]+")
#: A masked value this short is not searched for elsewhere in the ticket.
MIN_SECRET_VALUE = 6
MAX_FRAMES = 40
CONTEXT_LINES = 2  # lines of code shown before and after each frame's line
MAX_LOCALS = 40


def new_ticket_id() -> str:
    """A random URL-safe id of 128 bits (22 characters), never starting with "-" (which a
    command line would take for an option)."""
    while (ticket_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return ticket_id


def utc_text(at: float) -> str:
    """A Unix time as the ticket's ``created``: ISO 8601 UTC with microseconds."""
    seconds = int(at)
    micro = min(int((at - seconds) * 1e6), 999_999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}Z"


def request_id(environ: Mapping[str, Any]) -> str:
    """The incoming ``X-Request-ID`` if it is a sane token, else a new random one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if well_formed_request_id(given) else new_request_id()


class Scrubber:
    """Scrubs what one ticket records, by name and by value.

    By name: values under secret-looking names (headers, query parameters, locals, dict
    keys, ``name=value`` and ``"name": value`` pairs in any text or repr, URL passwords,
    ``Bearer``/``Basic`` credentials) become ***. By value: each masked string is
    remembered, and :meth:`finish` masks it wherever else it appears in the ticket.
    """

    def __init__(self) -> None:
        self.found: set[str] = set()
        self._repr = _ScrubbingRepr(self)

    def keep(self, value: Any) -> None:
        """Remember a masked value, to mask it everywhere (too short ones are not kept)."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and len(value := value.strip("'\" ")) >= MIN_SECRET_VALUE:
            self.found.add(value)

    def repr(self, name: str, value: Any) -> str:
        """The truncated, scrubbed repr of a local variable called ``name``."""
        if SECRET_NAME.search(name):
            self.keep(value)
            return MASK
        try:
            text = self._repr.repr(value)
        except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not spoil the ticket
            text = f"<repr failed with {type(exc).__name__}>"
        return scrub_text(text)

    def headers(self, environ: Mapping[str, Any]) -> dict[str, str]:
        """The request headers (``Title-Case`` names) with secret-looking values masked."""
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                name = key.replace("_", "-").title()
            else:
                continue
            text = str(value)
            if SECRET_NAME.search(name):
                self.keep(text)
                for part in re.split(r"[;,]", text):  # each cookie's value, each credential
                    cookie, equals, value = part.strip().partition("=")
                    words = part.split() or [""]
                    self.keep(value if equals and _NAME.fullmatch(cookie) else words[-1])
                headers[name] = MASK
            else:
                headers[name] = scrub_text(text)
        return headers

    def query(self, query: str) -> str:
        """The query string with the values of secret-looking parameters masked."""
        if not query or not SECRET_NAME.search(query):
            return query
        pairs = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if SECRET_NAME.search(key):
                self.keep(value)
                value = MASK
            pairs.append((key, value))
        return urlencode(pairs, safe="*")

    def finish(self, data: Any) -> Any:
        """``data`` (JSON-ready) with every remembered secret masked in every string."""
        if not self.found:
            return data
        found = re.compile("|".join(map(re.escape, sorted(self.found, key=len, reverse=True))))

        def walk(item: Any) -> Any:
            if isinstance(item, str):
                return found.sub(MASK, item)
            if isinstance(item, dict):
                return {key: walk(value) for key, value in item.items()}
            if isinstance(item, list):
                return [walk(value) for value in item]
            return item

        return walk(data)


class _Masked:
    def __repr__(self) -> str:
        return MASK


_MASKED = _Masked()


class _ScrubbingRepr(reprlib.Repr):
    """``reprlib`` truncation, after scrubbing: dict values under secret-looking keys
    masked, and strings and other objects' reprs scrubbed as text before they are cut
    (so a cut never separates a secret from the name that marks it)."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple = 3, 20, 20, 20
        self.maxset, self.maxfrozenset, self.maxstring, self.maxother = 20, 20, 200, 200
        self.maxlong = 100

    def repr_dict(self, x: dict, level: int) -> str:
        shown = itertools.islice(x.items(), self.maxdict + 1)  # one more: repr adds "..."
        masked = {}
        for key, value in shown:
            if isinstance(key, str) and SECRET_NAME.search(key):
                self.scrubber.keep(value)
                value = _MASKED
            masked[key] = value
        if len(x) > self.maxdict:
            return super().repr_dict(masked, level)[:-1] + ", ...}"
        return super().repr_dict(masked, level)

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(scrub_text(x), level)

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = scrub_text(repr(x))
        except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not spoil the ticket
            return f"<{type(x).__name__} object: repr failed with {type(exc).__name__}>"
        if len(text) <= self.maxother:
            return text
        head = max(0, (self.maxother - 3) // 2)
        return text[:head] + "..." + text[len(text) - (self.maxother - 3 - head) :]


@functools.cache
def versions() -> dict[str, Any]:
    """Python's version and every installed distribution's (read once per process)."""
    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name] = dist.version
    return {"python": sys.version.split()[0], "packages": dict(sorted(packages.items()))}


def _frames(tb: TracebackType | None, scrub: Scrubber) -> list[dict[str, Any]]:
    """File, line, function, code context and scrubbed locals of the innermost frames."""
    frames = []
    for frame, line in list(traceback.walk_tb(tb))[-MAX_FRAMES:]:
        code = frame.f_code
        first = max(1, line - CONTEXT_LINES)
        context = [
            scrub_text(linecache.getline(code.co_filename, n).rstrip("\n"))
            for n in range(first, line + CONTEXT_LINES + 1)
        ]
        while context and not context[-1]:
            context.pop()
        # copied in one go: the frame may be running in another thread (a deadline's
        # watchdog writes the stuck thread's ticket), changing its locals between reprs
        names = itertools.islice(dict(frame.f_locals).items(), MAX_LOCALS)
        frames.append(
            {
                "file": code.co_filename,
                "line": line,
                "function": code.co_name,
                "context": {"first_line": first, "lines": context},
                "locals": {name: scrub.repr(name, value) for name, value in names},
            }
        )
    return frames


def signature(exc: BaseException) -> tuple[str, str]:
    """What identical failures share: the exception's type and where it was raised (the
    ticket's ``error.type`` and ``error.location``)."""
    return error_type(exc), _location(exc.__traceback__)


def _location(tb: TracebackType | None) -> str:
    frames = list(traceback.walk_tb(tb))
    if not frames:
        return "unknown"
    frame, line = frames[-1]
    return f"{frame.f_code.co_filename}:{line} in {frame.f_code.co_name}"


def error_type(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``module.Name`` otherwise."""
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


@renamed_keyword("app", "app_name")
def build(
    exc: BaseException,
    environ: Mapping[str, Any],
    *,
    app_name: str,
    request_id: str,
    node: str | None = None,
    client: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The ticket of ``exc`` raised while serving ``environ`` on ``node`` (default
    :func:`~scalekit.core.instance.node_name`) for ``client`` (default ``REMOTE_ADDR``; ""
    if it cannot be told), the app at ``version`` (default
    :func:`~scalekit.core.instance.app_version`). The ``peer`` it keeps is the TCP peer: the
    front end's ``environ[PEER_KEY]`` when it corrected ``REMOTE_ADDR`` from a proxy's
    headers, else ``REMOTE_ADDR``."""
    remote = str(environ.get("REMOTE_ADDR", ""))
    peer = str(environ.get(PEER_KEY) or remote)
    scrub = Scrubber()
    frames = _frames(exc.__traceback__, scrub)
    kind, location = signature(exc)
    message = scrub_text(_message(exc))
    request = {
        "method": str(environ.get("REQUEST_METHOD", "")),
        "path": str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")),
        "query": scrub.query(str(environ.get("QUERY_STRING", ""))),
        "client": remote if client is None else client,
        "peer": peer,  # the proxy, when the client came through one
        "headers": scrub.headers(environ),
    }
    error = {
        "type": kind,
        "message": message,
        "location": location,
        "summary": f"{kind}: {message}"[:200],
        "traceback": scrub_text("".join(traceback.format_exception(exc))),
    }
    request, error, frames = scrub.finish([request, error, frames])
    return {
        "schema": SCHEMA_VERSION,
        "id": new_ticket_id(),
        "app": app_name,
        "created": utc_text(time.time()),
        "hostname": socket.gethostname(),
        "node": node or node_name(),
        "version": version or app_version(),
        "pid": os.getpid(),
        "request_id": request_id,
        "count": 1,  # how many identical failures this ticket stands for (see repeated)
        "request": request,
        "error": error,
        "frames": frames,
        "versions": versions(),
    }


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not spoil the ticket
        return "<str() of the exception failed>"


def repeated(ticket: dict[str, Any], at: float) -> None:
    """Count one more identical failure on ``ticket``, at the Unix time ``at``."""
    ticket["count"] = count_of(ticket) + 1
    ticket["last_seen"] = utc_text(at)


def count_of(ticket: dict[str, Any]) -> int:
    """How many failures ``ticket`` stands for: its ``count`` (added in 2026; a ticket
    written before has none and stands for one)."""
    count = ticket.get("count", 1)
    if type(count) is not int or count < 1:
        raise ValueError(f"count {count!r} is not a positive integer")
    return count


@dataclass(frozen=True)
class Entry:
    """What a list of tickets shows of one ticket."""

    ticket_id: str
    app: str
    created: str  # "YYYY-mm-dd HH:MM:SS" UTC
    hostname: str
    error_type: str
    location: str
    summary: str
    count: int = 1  # identical failures counted on this ticket
    node: str = ""  # the server's name in its cluster (older tickets: the host name)
    version: str = ""  # the app's deployed version ("" in tickets of older versions)


@dataclass(frozen=True)
class Group:
    """Tickets of one exception type raised at one location; ``count`` is the failures
    they stand for."""

    error_type: str
    location: str
    count: int
    first_seen: str
    last_seen: str


def entry(ticket: Any) -> Entry:
    """The list fields of a ticket; :class:`CorruptData` if it is not a valid ticket."""
    try:
        if not isinstance(ticket, dict) or ticket["schema"] != SCHEMA_VERSION:
            raise ValueError("not a ticket of schema version 1")
        error = ticket["error"]
        fields = (
            ticket["id"],
            ticket["app"],
            ticket["hostname"],
            error["type"],
            error["location"],
            error["summary"],
        )
        if not all(isinstance(field, str) for field in fields) or not ID_PATTERN.match(fields[0]):
            raise ValueError("a field has the wrong type or the id is malformed")
        created = time.strptime(ticket["created"], TIME_FORMAT)
        count = count_of(ticket)
        node = ticket.get("node") or fields[2]
        version = ticket.get("version") or ""
        if not isinstance(node, str) or not isinstance(version, str):
            raise TypeError("the node or the version is not a string")
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptData(f"not a valid ticket: {type(exc).__name__}: {exc}") from None
    when = time.strftime("%Y-%m-%d %H:%M:%S", created)
    return Entry(
        fields[0], fields[1], when, fields[2], fields[3], fields[4], fields[5], count, node, version
    )


def summarize(entries: list[Entry]) -> list[Group]:
    """Group entries by (error type, location), the most frequent first (a ticket counts
    as many failures as it stands for)."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for item in entries:
        groups.setdefault((item.error_type, item.location), []).append(item)
    result = [
        Group(
            kind,
            where,
            sum(i.count for i in items),
            min(i.created for i in items),
            max(i.created for i in items),
        )
        for (kind, where), items in groups.items()
    ]
    result.sort(key=lambda group: group.last_seen, reverse=True)
    return sorted(result, key=lambda group: group.count, reverse=True)
