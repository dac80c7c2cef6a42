"""``Downloads``: uploads served to browsers, web2py's ``response.download`` made safe.

``Downloads(store)`` is a WSGI app answering ``GET``/``HEAD <prefix><name>``; the
``download(store)`` decorator serves the name a view returns. Both stream the upload (never
whole in memory: a range of it read from the store, or the whole file handed to the
server's ``wsgi.file_wrapper`` when the store keeps it on this machine), with ``Range``
(206/416), ``ETag`` (strong, from the name and the size: the bytes under a name never
change), ``Last-Modified``, ``If-None-Match``/``If-Modified-Since`` (304) and ``If-Range``.

What an upload may do in a browser is decided here, never by the bytes nor by the store: the
type comes from the name's extension, and only types a browser shows without running
anything (pictures, sound, video, plain text) are sent inline. HTML, XHTML, SVG, XML,
JavaScript, PDF and every unknown type are attachments, so an uploaded page is saved, not
opened on the site's origin (stored XSS). Every response also says
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox``.

Who may download: ``authorize(environ, name, record)`` (``record``: the row of ``db`` whose
``<table>.<field>`` holds the name, ``None`` without ``db``) and, with ``db``, pydal's own
``Field(..., authorize=)`` as web2py honours it; a signed, expiring link
(:meth:`Downloads.url` with ``expires_in``) is enough on its own.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import mimetypes
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import known_options
from scalekit.uploads.errors import UploadCorrupt, UploadNotFound
from scalekit.uploads.names import original_filename, parse_name
from scalekit.uploads.signed import SignedLinks, link_parameters
from scalekit.uploads.stores import UploadInfo, UploadStore, open_store
from scalekit.wsgi.conditional import (
    Unsatisfiable,
    content_disposition,
    http_date,
    if_range_holds,
    not_modified,
    parse_range,
)
from scalekit.wsgi.http import header_value, request_line
from scalekit.wsgi.pages import TEXT, Page, page, unavailable
from scalekit.wsgi.response import ClosingBody

__all__ = ["INLINE_TYPES", "SECURITY_HEADERS", "Downloads", "download"]

log = logging.getLogger("scalekit.uploads")

#: The types sent inline: a browser shows them and runs nothing in them. Any other type is
#: an attachment (``audio/*`` and ``video/*`` are inline too).
INLINE_TYPES = frozenset({
    "image/avif", "image/bmp", "image/gif", "image/jpeg", "image/png", "image/webp",
    "image/x-icon", "image/vnd.microsoft.icon", "text/plain",
})  # fmt: skip
#: Sent with every response: no type sniffing, and a document that does not run scripts,
#: load anything or reach its origin if a browser opens it after all.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'",
    ),
)
_FILE_BLOCK = 256 * 1024  # the block wsgi.file_wrapper reads when the server has no sendfile
_RETRY_AFTER = 5

Authorize = Callable[[dict, str, Any], bool]
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class Downloads:
    """A WSGI app serving the uploads of ``store`` (an :class:`UploadStore` or its URL) at
    ``prefix + name``.

    ``authorize(environ, name, record) -> bool`` decides who may download (False: 403);
    ``db``: the app's pydal DAL, to find the record holding the name (none: 404) and honour
    its field's ``authorize`` (a query that fails raises, as the app's own queries do, to
    the middleware that answers those); ``secret``: signs the links :meth:`url` makes with
    ``expires_in``; ``cache_control``: the header of every download (``private``: a shared
    cache must not hand one user's upload to another).
    """

    @known_options()
    def __init__(
        self,
        store: UploadStore | str,
        *,
        prefix: str = "/download/",
        authorize: Authorize | None = None,
        db: Any = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        cache_control: str = "private, max-age=3600",
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self.authorize = authorize
        self.db = db
        self.cache_control = header_value(cache_control, "cache_control")
        self._links = SignedLinks(secret) if secret is not None else None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(self.prefix):
            return _error(start_response, "404 Not Found")
        return self.respond(environ, start_response, path[len(self.prefix) :])

    def url(self, name: str, *, expires_in: float | None = None, base: str | None = None) -> str:
        """The path (after ``base``, e.g. ``https://example.com``) that downloads ``name``;
        with ``expires_in`` (seconds), a signed link anyone holding it may use until then."""
        if parse_name(name) is None:
            raise ValueError(f"not an upload name: {name!r:.80}")
        link = (base or "").rstrip("/") + self.prefix + name
        if expires_in is None:
            return link
        if self._links is None:
            raise ConfigError(
                "Downloads.url(expires_in=...) signs the link: give Downloads a secret"
            )
        return link + "?" + self._links.query(name, expires_in)

    def respond(
        self, environ: dict, start_response: Callable, name: str, *, filename: str | None = None
    ) -> Iterable[bytes]:
        """Answer a request for the upload ``name``, saved by the client as ``filename``
        (default: the file name the uploader gave, read from the name)."""
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _error(start_response, "405 Method Not Allowed", ("Allow", "GET, HEAD"))
        if parse_name(name) is None:
            return _error(start_response, "404 Not Found")
        refused = self._refused(environ, name)
        if refused:
            return _error(start_response, refused)
        try:
            return self._send(environ, start_response, self.store.info(name), filename)
        except UploadNotFound:
            return _error(start_response, "404 Not Found")
        except StoreUnavailable as exc:
            log.warning("%s: %s", request_line(environ), exc)
            busy = unavailable("the upload store", _RETRY_AFTER)
            return Page(busy.status, [*busy.headers, *SECURITY_HEADERS], busy.body).send(
                start_response
            )
        except UploadCorrupt as exc:
            log.error("%s: %s", request_line(environ), exc)
            return _error(start_response, "500 Internal Server Error")

    def _refused(self, environ: dict, name: str) -> str | None:
        """The status refusing this request (403; 404: no record holds the name), or None."""
        link = link_parameters(environ.get("QUERY_STRING", ""))
        if link is not None:  # a signed link: valid on its own, else refused
            valid = self._links is not None and self._links.valid(name, link)
            return None if valid else "403 Forbidden"
        record = None
        if self.db is not None:
            found = self._record(name)
            if found is None:
                return "404 Not Found"
            field, record = found
            if field.authorize and not field.authorize(record):
                return "403 Forbidden"
        if self.authorize is not None and not self.authorize(environ, name, record):
            return "403 Forbidden"
        return None

    def _record(self, name: str) -> tuple[Any, Any] | None:
        """The pydal field ``<table>.<field>`` of ``name`` and the first row of ``db`` that
        holds the name there; None when the table, the field or the row does not exist."""
        parsed = parse_name(name)
        if parsed is None or parsed.table not in self.db.tables:
            return None
        table = self.db[parsed.table]
        if parsed.field not in table.fields:
            return None
        field = table[parsed.field]
        row = self.db(field == name).select(limitby=(0, 1)).first()
        return (field, row) if row is not None else None

    def _send(
        self, environ: dict, start_response: Callable, info: UploadInfo, filename: str | None
    ) -> Iterable[bytes]:
        """The response for a found upload: 304, 416, or the file (whole or a range)."""
        etag, mtime = _etag(info), int(info.modified)
        headers = [
            ("Cache-Control", self.cache_control),
            ("ETag", etag),
            ("Last-Modified", http_date(mtime)),
            *SECURITY_HEADERS,
        ]
        if not_modified(environ, etag, mtime):
            start_response("304 Not Modified", headers)
            return []
        status, first, length = "200 OK", 0, info.size
        range_header = environ.get("HTTP_RANGE")
        if range_header and if_range_holds(environ, etag, mtime):
            try:
                span = parse_range(range_header, info.size)
            except Unsatisfiable:
                return _error(start_response, "416 Range Not Satisfiable",
                              ("Content-Range", f"bytes */{info.size}"))  # fmt: skip
            if span is not None:
                first, last = span
                status, length = "206 Partial Content", last - first + 1
                headers.append(("Content-Range", f"bytes {first}-{last}/{info.size}"))
        content_type, inline = _content_type(info.name)
        saved_as = filename or original_filename(info.name)
        headers += [
            ("Content-Type", content_type),
            ("Content-Disposition", content_disposition(saved_as, inline)),
            ("Accept-Ranges", "bytes"),
            ("Content-Length", str(length)),
        ]  # fmt: skip
        if environ.get("REQUEST_METHOD") == "HEAD":
            start_response(status, headers)
            return []
        body = self._body(environ, info, first, length)
        start_response(status, headers)
        return body

    def _body(self, environ: dict, info: UploadInfo, first: int, length: int) -> Iterable[bytes]:
        """The bytes to send: the store's file handed to the server (``sendfile``) when the
        whole of it is asked for and the store has one here, else a stream read from the
        store (UploadNotFound and StoreUnavailable raised before anything is sent)."""
        whole = first == 0 and length == info.size
        wrapper = environ.get("wsgi.file_wrapper")
        path = self.store.local_path(info.name) if whole and wrapper else None
        handle = _open_regular(path) if path is not None else None
        if handle is not None:
            if os.fstat(handle.fileno()).st_size == length:
                return wrapper(handle, _FILE_BLOCK)
            handle.close()  # replaced since info(): stream what the store reads
        chunks = self.store.read(info.name, first, first + length)
        # closed by the server also when it never iterates (a generator not started runs
        # no finally): the store's file or S3 response is given back either way
        return ClosingBody(self._stream(chunks, environ, info.name, length), _closer(chunks))

    def _stream(
        self, chunks: Iterator[bytes], environ: dict, name: str, length: int
    ) -> Iterator[bytes]:
        """``chunks`` passed on; a store failing half-way (or ending short) is logged and
        raised, so the server drops the connection and the client sees a truncated body."""
        sent = 0
        try:
            for chunk in chunks:
                sent += len(chunk)
                yield chunk
            if sent != length:
                raise UploadCorrupt(f"{self.store.url}: {name} ended at {sent} of {length} bytes")
        except Exception as exc:
            log.error("%s: download cut after %d of %d bytes: %s: %s",
                      request_line(environ), sent, length, type(exc).__name__, exc)  # fmt: skip
            raise
        finally:
            _closer(chunks)()


@known_options(Downloads)
def download(store: UploadStore | str, **options: Any) -> Callable[[WSGIApp], WSGIApp]:
    """A decorator for a WSGI view that returns the name of the upload to send (``None``:
    404), served as :class:`Downloads` (``options``: its keywords) serves it; a view that
    returns anything else answered the request itself (a redirect to the login page)."""
    downloads = Downloads(store, **options)

    def decorate(view: WSGIApp) -> WSGIApp:
        @functools.wraps(view)
        def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
            answer = view(environ, start_response)
            if answer is None:
                return _error(start_response, "404 Not Found")
            if isinstance(answer, str):
                return downloads.respond(environ, start_response, answer)
            return answer

        return serve

    return decorate


def _closer(chunks: Iterator[bytes]) -> Callable[[], None]:
    """What closes a store's read: its ``close()``, or nothing for a plain iterator."""
    return getattr(chunks, "close", None) or (lambda: None)


def _etag(info: UploadInfo) -> str:
    """Strong: a name's bytes never change, and the size tells a replaced upload apart."""
    return f'"{hashlib.sha256(info.name.encode()).hexdigest()[:24]}-{info.size:x}"'


def _content_type(name: str) -> tuple[str, bool]:
    """The type the name's extension says, and whether it is safe inline."""
    parsed = parse_name(name)
    extension = parsed.extension if parsed is not None else "bin"
    kind = mimetypes.guess_type("upload." + extension, strict=False)[0]
    kind = kind or "application/octet-stream"
    return kind, kind in INLINE_TYPES or kind.startswith(("audio/", "video/"))


def _open_regular(path: str) -> BinaryIO | None:
    """The regular file at ``path`` open for reading, not through a symlink swapped in since
    the store checked it (nor a FIFO: it is not waited on); ``None`` if it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # gone since info(): the store's read says what happened
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _error(start_response: Callable, status: str, *headers: tuple[str, str]) -> list[bytes]:
    body = status.encode() + b"\n"
    return page(status, TEXT, body, *headers, *SECURITY_HEADERS).send(start_response)
