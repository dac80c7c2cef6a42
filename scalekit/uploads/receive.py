"""Uploads in: a limit on the request body enforced while it is read, and a multipart form
streamed part by part into a store.

``BodyLimit(app, max_size)`` (or ``@limit_body(max_size)`` on one view) answers a body
announced larger than the limit with a 413 before reading a byte of it, and counts a body of
unknown length (chunked) as the app reads it: the read that passes the limit raises
:class:`~scalekit.uploads.errors.UploadTooLarge`, and whatever the app or its framework's
parser makes of that (an exception, a 400, an empty form), the client gets the 413 page. A
:class:`~scalekit.uploads.errors.BadUpload` the app lets out (a body :func:`receive` cannot
store: the client's fault) gets a 400 page.

``receive(environ, store, max_size=..., table=..., field=...)`` reads a
``multipart/form-data`` body with :class:`multipart.PushMultipartParser` and hands each file
part to the store as it arrives (never the whole file in memory, nor in a temp file); a raw
body (``PUT``, or a ``POST`` of a file's own type) is one upload. When the limit is passed,
the body is malformed or the client goes away, what this request stored is removed.
"""

from __future__ import annotations

import itertools
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from multipart import (
    MultipartError,
    MultipartSegment,
    PushMultipartParser,
    parse_content_disposition,
    parse_options_header,
)

from scalekit.core.errors import InvalidArgument
from scalekit.uploads.errors import BadUpload, UploadTooLarge
from scalekit.uploads.stores.base import UploadStore
from scalekit.wsgi.http import request_line
from scalekit.wsgi.pages import NO_STORE, TEXT, Page, page
from scalekit.wsgi.response import ClosingBody, HeldResponse, close_body
from scalekit.wsgi.views import per_view

__all__ = ["BodyLimit", "LimitedInput", "Received", "limit_body", "receive", "too_large"]

log = logging.getLogger("scalekit.uploads")

_BLOCK = 1 << 16  # bytes asked of the request body per read
_TEXT_LIMIT = 1 << 16  # the most bytes of one text field of a form
_MAX_PARTS = 256  # the most parts of one form
# RFC 8187's ext-value: charset'language'percent-encoded bytes
_EXTENDED_FILENAME = re.compile(
    r"filename\*\s*=\s*([\w!#$%&+^`{}~-]*)'[\w-]*'([^\s;]*)", re.IGNORECASE
)
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "application/x-url-encoded"})


def too_large(limit: int) -> Page:
    """The 413 page of a request body larger than ``limit`` bytes."""
    body = f"Content too large: the request is over a limit of {limit} bytes.\n".encode()
    return page("413 Content Too Large", TEXT, body, NO_STORE)


#: The 400 page of a body :func:`receive` cannot store: general terms, nothing of the client's.
_BAD_UPLOAD = page(
    "400 Bad Request",
    TEXT,
    b"Bad request: the upload's body is malformed or incomplete.\n",
    NO_STORE,
)


def content_length(environ: dict) -> int | None:
    """The body's announced length; ``None`` when unknown (chunked, absent, malformed)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


class LimitedInput:
    """A request body (``wsgi.input``) that raises :class:`UploadTooLarge` on the read
    that passes ``max_size`` bytes, after reading at most one byte past it; ``exceeded``
    says so afterwards (a framework may have caught the exception)."""

    def __init__(self, stream: BinaryIO, max_size: int):
        self._stream = stream
        self.max_size = max_size
        self.count = 0
        self.exceeded = False

    def _allowance(self, size: int | None) -> int:
        """How many bytes the next read may ask: up to one past the limit, to see it."""
        if self.exceeded:
            raise UploadTooLarge(self.max_size, "the request body")
        left = self.max_size - self.count + 1
        return left if size is None or size < 0 else min(size, left)

    def _counted(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.max_size:
            self.exceeded = True
            raise UploadTooLarge(self.max_size, "the request body")
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_BLOCK), b""))
        return self._counted(self._stream.read(self._allowance(size)))

    def readline(self, size: int | None = -1) -> bytes:
        return self._counted(self._stream.readline(self._allowance(size)))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        while line := self.readline():
            lines.append(line)
            if 0 < hint <= sum(map(len, lines)):
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class BodyLimit:
    """WSGI middleware: request bodies of at most ``max_size`` bytes; a larger one gets
    the 413 page, refused before it is read when its length is announced, else as soon as
    the app reads past the limit. An :class:`UploadTooLarge` the app lets out (a lower
    limit of its own: :func:`receive`'s, a field's ``max_size``) is a 413 too; a
    :class:`BadUpload` it lets out is a 400, if nothing of its answer went out yet."""

    def __init__(self, app: Callable, max_size: int):
        if not isinstance(max_size, int) or max_size < 0:
            raise InvalidArgument(f"max_size must be a number of bytes, not {max_size!r}")
        self.app = app
        self.max_size = max_size

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        length = content_length(environ)
        if length is not None and length > self.max_size:
            log.info("%s: 413, %d bytes announced, limit %d", request_line(environ),
                     length, self.max_size)  # fmt: skip
            return too_large(self.max_size).send(start_response)
        body = LimitedInput(environ["wsgi.input"], self.max_size)
        environ["wsgi.input"] = body
        response = HeldResponse(start_response)
        refuse = _Refusal(environ, start_response, body, response)
        try:
            result = self.app(environ, response)
        except Exception as exc:
            if not refuse.due(exc):
                raise
            return refuse.send()
        if refuse.due():
            close_body(result)
            return refuse.send()
        wrapper = environ.get("wsgi.file_wrapper")
        if type(result) is list or (wrapper is not None and type(result) is wrapper):
            response.send()  # a finished answer, passed on as it is (sendfile for a file)
            return result
        return _Body(result, response, refuse)


def limit_body(max_size: int) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view so its request body is limited, as :class:`BodyLimit` does."""
    return per_view(BodyLimit, max_size)


class _Refusal:
    """When a request's answer becomes a refusal, and sending it: the 413 page of a body over
    a limit, or the 400 page of one the app found is no upload (:class:`BadUpload`)."""

    def __init__(self, environ: dict, start_response: Callable, body: LimitedInput,
                 response: HeldResponse):  # fmt: skip
        self.environ, self.start_response = environ, start_response
        self.body, self.response = body, response
        self.limit = body.max_size
        self.bad: BadUpload | None = None  # the refusal is this 400, not the 413

    def due(self, exc: BaseException | None = None) -> bool:
        """True if nothing of the app's answer went out yet and the body passed the limit,
        or ``exc`` says a lower limit was passed (413) or the body is no upload (400)."""
        if self.response.sent:
            return False
        if isinstance(exc, UploadTooLarge):
            self.limit = min(self.limit, exc.limit)
            return True
        self.bad = exc if isinstance(exc, BadUpload) and not self.body.exceeded else None
        return self.bad is not None or self.body.exceeded

    def send(self) -> list[bytes]:
        """Log the refusal (a client's reason escaped: it cannot forge a line), send its page."""
        if self.bad is None:
            answer, reason = too_large(self.limit), f"body over the limit of {self.limit} bytes"
        else:
            answer, reason = _BAD_UPLOAD, repr(str(self.bad)[:200])
        log.info("%s: %s, %s", request_line(self.environ), answer.status[:3], reason)
        return answer.send(self.start_response)


class _Body(ClosingBody):
    """The app's streamed body, its held response sent with the first chunk; the refusal's
    page instead if the app read past the limit (or failed for it, or for a body that is no
    upload) before anything was sent."""

    def __init__(self, body: Iterable[bytes], response: HeldResponse, refuse: _Refusal):
        super().__init__(body)
        self.response, self.refuse = response, refuse

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.body:
                if self.refuse.due():
                    break
                self.response.send()
                yield chunk
            refused = self.refuse.due()
        except Exception as exc:
            refused = self.refuse.due(exc)
            if not refused:
                raise
        if refused:
            yield from self.refuse.send()
        else:
            self.response.send()


class Received(dict):
    """What :func:`receive` stored: form field -> upload name; ``form``: the form's text
    fields (the first value of each)."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str] = {}


def receive(
    environ: dict,
    store: UploadStore,
    *,
    max_size: int,
    fields: Sequence[str] | None = None,
    table: str = "upload",
    field: str | None = None,
) -> Received:
    """Store the files of this request's body: the file parts of a ``multipart/form-data``
    body (those named in ``fields``; ``None``: all), or a raw body as one upload under
    ``field`` (its file name from a ``Content-Disposition`` request header). Names are
    ``<table>.<field>...``; ``field=None``: each part's own form field name, then one of
    ``fields`` (the client never picks it). Returns form field -> upload name.

    :class:`UploadTooLarge` once the body passes ``max_size`` bytes (before reading it, when
    announced larger); :class:`BadUpload` for a malformed body, one that ends early (the
    client went away), an empty one, a urlencoded form or two files for one field.
    :class:`BodyLimit` answers the first with a 413, the second with a 400. Either way, and
    on any failure of the store, nothing this request stored is left."""
    if field is None and not fields:
        raise InvalidArgument("receive needs field= or fields=: the client never picks names")
    length = content_length(environ)
    if length is not None and length > max_size:
        raise UploadTooLarge(max_size, "the request body")
    chunks = _body_chunks(LimitedInput(environ["wsgi.input"], max_size), length)
    kind, options = parse_options_header(environ.get("CONTENT_TYPE", ""))

    def save(data: Iterable[bytes], filename: str, form_field: str) -> str:
        return store.save(data, filename, table=table, field=field or form_field,
                          max_size=max_size)  # fmt: skip

    received = Received()
    try:
        if kind == "multipart/form-data":
            _receive_form(_events(chunks, options.get("boundary", "")), fields, save, received)
        elif kind in _FORM_TYPES:
            raise BadUpload(f"a {kind} body holds no file: send multipart/form-data")
        else:
            first = next(chunks, b"")
            if not first:
                raise BadUpload("the request has no body: no file to store")
            key = field or fields[0]  # type: ignore[index]
            filename = _header_filename(environ.get("HTTP_CONTENT_DISPOSITION", ""))
            received[key] = save(itertools.chain([first], chunks), filename, key)
    except BaseException:
        _discard(store, received.values())
        raise
    return received


def _receive_form(events: Iterator[Any], fields: Sequence[str] | None,
                  save: Callable[[Iterable[bytes], str, str], str], received: Received
                  ) -> None:  # fmt: skip
    """Store each wanted file part of a multipart body as it comes (``save(chunks, file
    name, form field)``), keep its text fields."""
    for event in events:
        if not isinstance(event, MultipartSegment):
            continue
        payload = _payload(events)
        name = event.name or ""
        if event.filename is None:  # a text field
            text = b"".join(_capped(payload, _TEXT_LIMIT, name))
            received.form.setdefault(name, _decoded(text, event.charset))
        elif event.filename and (fields is None or name in fields):
            if name in received:
                raise BadUpload(f"more than one file for the form field {name!r:.80}")
            received[name] = save(payload, event.filename, name)
        else:  # no file chosen (an empty file name), or a field not asked for
            for _ in payload:
                pass


def _events(chunks: Iterator[bytes], boundary: str) -> Iterator[Any]:
    """The parser's events over the body: segments, their payload chunks, ``None`` at each
    segment's end; a malformed or incomplete body is a :class:`BadUpload`."""
    try:
        with PushMultipartParser(boundary, max_segment_count=_MAX_PARTS) as parser:
            for chunk in chunks:
                yield from parser.parse(chunk)
                if parser.closed:
                    return
    except MultipartError as exc:
        raise BadUpload(f"malformed multipart/form-data body: {exc}") from None


def _payload(events: Iterator[Any]) -> Iterator[bytes]:
    """The chunks of the current segment, up to its end."""
    for event in events:
        if event is None:
            return
        yield event


def _capped(chunks: Iterator[bytes], limit: int, name: str) -> Iterator[bytes]:
    """``chunks``, an :class:`UploadTooLarge` once they pass ``limit`` bytes."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(limit, f"the form field {name!r:.80}")
        yield chunk


def _decoded(data: bytes, charset: str | None) -> str:
    """A text field's value in its part's charset; UTF-8 when it names none (a browser)
    or one Python does not know."""
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _body_chunks(body: LimitedInput, length: int | None) -> Iterator[bytes]:
    """The request body in blocks: ``length`` bytes when announced (fewer: the client went
    away, a :class:`BadUpload`), else to its end."""
    left = length
    while left is None or left > 0:
        block = body.read(_BLOCK if left is None else min(_BLOCK, left))
        if not block:
            if left:
                raise BadUpload(f"the request body ended {left} bytes short of its length")
            return
        if left is not None:
            left -= len(block)
        yield block


def _header_filename(header: str) -> str:
    """The file name of a request's ``Content-Disposition: attachment; filename=...``
    (``filename*=UTF-8''...`` preferred, RFC 6266); ``""`` when none."""
    extended = _EXTENDED_FILENAME.search(header)
    if extended:
        charset, quoted = extended.groups()
        try:
            return urllib.parse.unquote(quoted, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    return (parse_content_disposition(header)[2] or "") if header else ""


def _discard(store: UploadStore, names: Iterable[str]) -> None:
    """Remove what a failed request stored; a store that fails to leaves it to gc (logged)."""
    for name in list(names):
        try:
            store.delete(name)
        except OSError as exc:  # StoreUnavailable among them
            log.warning("upload %s of a failed request not removed, left for gc: %s", name, exc)
