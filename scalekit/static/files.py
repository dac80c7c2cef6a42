"""``StaticFiles``: serve a folder of static files, with their ``.br`` / ``.gz`` variants.

As middleware, ``StaticFiles(app, "static", prefix="/shop/static/")`` serves that prefix
and passes every other request to ``app``, the first argument as in every scalekit
middleware; as an app, ``StaticFiles(None, "static")`` (or ``StaticFiles(root="static")``)
serves the whole URL space. A request picks the best variant the client accepts; a variant
older than its source is ignored (the source is sent), so a stale ``.gz`` never reaches a
client. ETags come from the content digest zip-static records in the tree's manifest (the
same on every server), else from the file's mtime; ``Last-Modified`` is the file's mtime.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from scalekit.core.errors import InvalidArgumentType, NotAFolder
from scalekit.core.options import known_options
from scalekit.static import manifest
from scalekit.wsgi.conditional import (
    Unsatisfiable,
    http_date,
    if_range_holds,
    not_modified,
    parse_range,
)
from scalekit.wsgi.encodings import choose_encoding
from scalekit.wsgi.pages import TEXT, page
from scalekit.wsgi.response import ClosingBody

ENCODINGS = {"br": ".br", "gzip": ".gz"}  # most preferred first
ONE_YEAR = 365 * 24 * 3600
#: web2py's version segment, ``/static/_1.2.3/...``: the URL changes with every release.
VERSION_SEGMENT = re.compile(r"_\d+(?:\.\d+)*")
#: Hashed file names (``app.3f2a9c1b.js``, ``main-5d41402a.css``) never change content: 8 or
#: more hex digits with at least one letter, so a date (``export-20240101.csv``) is not one.
HASHED_NAME = r"[.-](?=[0-9]*[a-fA-F])[0-9a-fA-F]{8,}\.\w+$"
#: A file compressed as a whole (a variant asked for by name, an archive) is sent as what it
#: is, never with its content's type: a client would take the compressed bytes as that.
_COMPRESSED_TYPES = {"gzip": "application/gzip", "br": "application/x-brotli"}
_TEXT_TYPES = {"application/javascript", "application/json", "image/svg+xml", "application/xml"}
_BLOCK = 64 * 1024

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass(frozen=True)
class _File:
    path: str  # the file sent: the source or a variant
    size: int
    mtime: int  # the source's mtime, whole seconds (Last-Modified)
    etag: str
    encoding: str | None
    vary: bool  # variants exist: the response depends on Accept-Encoding
    content_type: str


class StaticFiles:
    """A middleware serving the files under ``root`` and passing other paths to ``app``;
    with ``app=None``, an app that answers 404 there.

    ``max_age`` is the ``Cache-Control`` max-age of ordinary URLs; versioned URLs (web2py's
    ``_1.2.3`` segment, file names matching ``immutable`` — a regex, ``None`` to disable)
    are cached for a year with ``immutable``. Hidden files (``.name``) are not served.
    The former order ``StaticFiles(root, app)`` still works for one release, with a
    ``DeprecationWarning``.
    """

    @known_options()
    def __init__(
        self,
        app: WSGIApp | None = None,
        root: str | os.PathLike[str] | None = None,
        *,
        prefix: str = "/",
        max_age: int = 3600,
        immutable: str | None = HASHED_NAME,
        encodings: Iterable[str] = tuple(ENCODINGS),
    ) -> None:
        if isinstance(app, (str, os.PathLike)):  # the former order: StaticFiles(root, app)
            warnings.warn(
                "StaticFiles(root, app) is now StaticFiles(app, root), the wrapped app first "
                "as in every scalekit middleware (app may be None); the old order goes in "
                "the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            app, root = root, app
        if root is None:
            raise InvalidArgumentType("StaticFiles() needs root, the folder to serve")
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotAFolder(f"StaticFiles: {root} is not a folder")
        self.app = app
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self.max_age = max_age
        self.immutable = re.compile(immutable) if immutable else None
        self.encodings = [e for e in ENCODINGS if e in set(encodings)]
        self._manifest_path = os.path.join(self.root, manifest.MANIFEST_NAME)
        self._manifest: tuple[tuple | None, dict[str, manifest.Entry]] = (None, {})

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(self.prefix):
            if self.app is not None:
                return self.app(environ, start_response)
            return _error(start_response, "404 Not Found")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _error(start_response, "405 Method Not Allowed", [("Allow", "GET, HEAD")])
        found = self._resolve(path[len(self.prefix) :])
        if found is None:
            return _error(start_response, "404 Not Found")
        source, st, versioned = found
        return self._respond(environ, start_response, source, st, versioned)

    def _resolve(self, url_path: str) -> tuple[str, os.stat_result, bool] | None:
        """The real path and stat of a regular file under the root, and whether its URL is
        versioned; ``None`` (404) when there is none. A first segment like web2py's version
        (``_1.2.3``) is stripped only when the path as given names no file."""
        try:  # PATH_INFO carries the URL's bytes as latin-1 (PEP 3333)
            url_path = url_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return None
        parts = url_path.split("/")
        if any(not _safe_segment(part) for part in parts):
            return None
        found = self._file(parts)
        versioned = False
        if found is None and len(parts) > 1 and VERSION_SEGMENT.fullmatch(parts[0]):
            found, versioned = self._file(parts[1:]), True
        if found is None:
            return None
        versioned = versioned or bool(self.immutable and self.immutable.search(parts[-1]))
        return *found, versioned

    def _file(self, parts: list[str]) -> tuple[str, os.stat_result] | None:
        """The real path and stat of the regular file ``parts`` name under the root."""
        candidate = os.path.realpath(os.path.join(self.root, *parts))
        if not candidate.startswith(self.root + os.sep):
            return None  # a symlink that points out of the root
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            return None
        return (candidate, st) if stat.S_ISREG(st.st_mode) else None

    def _digest(self, source: str, st: os.stat_result) -> str | None:
        """The content digest zip-static recorded for ``source``, if the file is still the
        one it read (same size, mtime and inode); ``None`` otherwise. The manifest is read
        again when it changes (one ``stat`` per request)."""
        try:
            mst = os.stat(self._manifest_path)
        except OSError:
            return None
        seen = (mst.st_mtime_ns, mst.st_size, mst.st_ino)
        loaded = self._manifest
        if loaded[0] != seen:
            loaded = self._manifest = (seen, manifest.load(self.root))
        rel = source[len(self.root) + 1 :].replace(os.sep, "/")  # _file: under root + sep
        entry = loaded[1].get(rel)
        return entry.digest if entry is not None and entry.same_stat(st) else None

    def _select(
        self, source: str, st: os.stat_result, digest: str | None, accept: str | None
    ) -> _File:
        """The representation to send: the best fresh variant the client accepts, or the
        source. A variant must be a regular file (not a link) no older than its source."""
        fresh: dict[str, os.stat_result] = {}
        vary = False
        for coding in self.encodings:
            try:
                variant = os.lstat(source + ENCODINGS[coding])
            except OSError:
                continue
            if stat.S_ISREG(variant.st_mode):
                vary = True
                if variant.st_mtime_ns >= st.st_mtime_ns:
                    fresh[coding] = variant
        coding = choose_encoding(accept, list(fresh)) if fresh else None
        chosen = fresh[coding] if coding else st
        return _File(
            path=source + ENCODINGS[coding] if coding else source,
            size=chosen.st_size,
            mtime=int(st.st_mtime),
            etag=_etag(st, digest, chosen.st_size, coding),
            encoding=coding,
            vary=vary,
            content_type=_content_type(source),
        )

    def _respond(self, environ, start_response, source, st, versioned) -> Iterable[bytes]:
        digest = self._digest(source, st)
        range_header = environ.get("HTTP_RANGE")
        if range_header and not if_range_holds(
            environ, _etag(st, digest, st.st_size, None), int(st.st_mtime)
        ):
            range_header = None
        # A byte range applies to the identity representation: ask for no variant.
        accept = None if range_header else environ.get("HTTP_ACCEPT_ENCODING")
        file = self._select(source, st, digest, accept)
        headers = [
            ("Cache-Control", self._cache_control(versioned)),
            ("ETag", file.etag),
            ("Last-Modified", http_date(file.mtime)),
        ]
        if file.vary:
            headers.append(("Vary", "Accept-Encoding"))
        if not_modified(environ, file.etag, file.mtime):
            start_response("304 Not Modified", headers)
            return []
        status, first, length = "200 OK", 0, file.size
        if range_header:  # the identity representation was selected above
            try:
                span = parse_range(range_header, file.size)
            except Unsatisfiable:
                headers.append(("Content-Range", f"bytes */{file.size}"))
                return _error(start_response, "416 Range Not Satisfiable", headers)
            if span is not None:
                first, last = span
                status, length = "206 Partial Content", last - first + 1
                headers.append(("Content-Range", f"bytes {first}-{last}/{file.size}"))
        headers.append(("Content-Type", file.content_type))
        if file.encoding:
            headers.append(("Content-Encoding", file.encoding))
        else:
            headers.append(("Accept-Ranges", "bytes"))
        headers.append(("Content-Length", str(length)))
        if environ.get("REQUEST_METHOD") == "HEAD":
            start_response(status, headers)
            return []
        try:
            handle = open(file.path, "rb")  # noqa: SIM115 (the server closes it)
        except OSError:  # removed between the stat and the open
            return _error(start_response, "404 Not Found")
        start_response(status, headers)
        if first == 0 and length == file.size and "wsgi.file_wrapper" in environ:
            return environ["wsgi.file_wrapper"](handle, _BLOCK)
        handle.seek(first)
        return ClosingBody(_blocks(handle, length), handle.close)

    def _cache_control(self, versioned: bool) -> str:
        if versioned:
            return f"public, max-age={ONE_YEAR}, immutable"
        return f"public, max-age={self.max_age}"


def _safe_segment(part: str) -> bool:
    """A path segment that stays where it is: not empty (``//`` or an absolute path), not
    hidden nor ``..`` (also percent-encoded), no backslash, NUL or other control byte."""
    if not part or part.startswith(".") or part.lower().startswith("%2e"):
        return False
    return "\\" not in part and not any(ord(c) < 32 or c == "\x7f" for c in part)


def _etag(st: os.stat_result, digest: str | None, size: int, coding: str | None) -> str:
    """The ETag of one representation: from the content digest zip-static recorded, the
    same on every server with the same tree; else from the source's mtime (this server's)."""
    tag = digest or f"{st.st_mtime_ns:x}"
    return f'"{tag}-{size:x}' + (f"-{coding}" if coding else "") + '"'


def _content_type(path: str) -> str:
    kind, encoding = mimetypes.guess_type(path, strict=False)
    if encoding is not None:
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    kind = kind or "application/octet-stream"
    if kind.startswith("text/") or kind in _TEXT_TYPES:
        return kind + "; charset=utf-8"
    return kind


def _error(start_response: Callable, status: str, headers: Iterable = ()) -> list[bytes]:
    return page(status, TEXT, status.encode(), *headers).send(start_response)


def _blocks(handle: BinaryIO, length: int) -> Iterator[bytes]:
    """``length`` bytes of an open file, from where it stands, in blocks."""
    while length > 0:
        block = handle.read(min(_BLOCK, length))
        if not block:
            break
        length -= len(block)
        yield block
