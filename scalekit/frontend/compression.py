"""Compression of dynamic responses: gzip, and brotli when the ``brotli`` package imports.

:class:`Compression` decides per response (``FrontendMiddleware`` calls it): the coding
comes from the request's ``Accept-Encoding`` q-values (``br`` before ``gzip`` on a tie);
only compressible types over ``min_size`` are compressed; ``Vary: Accept-Encoding`` goes on
every compressible response, compressed or not; a strong ``ETag`` becomes weak (the bytes
differ from the app's), and the weak tags a client sends back (``If-None-Match``,
``If-Match``) are made strong before the app sees them, so the app's own 304 still answers
and an update conditional on the tag is not refused. Nothing is done for ``HEAD``,
1xx/204/206/304, ranges, ``Cache-Control: no-transform`` or a response already encoded.

An :class:`Encoder` compresses one response: a finished body in one call (``whole``), a
streamed one chunk by chunk, each flushed (``chunk``), so a client decodes every chunk as it
arrives — ``text/event-stream`` included.

BREACH: every compressed response carries 0 to ``max_random_bytes - 1`` bytes of padding
(``max_random_bytes=100`` by default, as Django), its length drawn from :mod:`secrets` — in
gzip's file-name field (as Django does), in a brotli metadata block (skipped by decoders) —
so the length an attacker measures is noisy: more requests per guessed byte, not none. It
does not make secrets in a compressed page safe.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Iterable
from typing import Protocol

from scalekit.core.errors import ConfigError
from scalekit.wsgi.encodings import choose_encoding, gzip_header, gzip_trailer
from scalekit.wsgi.headers import add_vary
from scalekit.wsgi.http import parse_etags

try:
    import brotli
except ImportError:  # the ``all`` extra installs it; gzip alone without it
    brotli = None
try:  # libdeflate: a finished body in about 2/3 of zlib's time, and a little smaller
    from deflate import deflate_compress
except ImportError:  # the ``all`` extra installs it; zlib without it
    deflate_compress = None

__all__ = [
    "DEFAULT_TYPES",
    "BrotliEncoder",
    "Compression",
    "Encoder",
    "GzipEncoder",
    "available_encodings",
]

#: What is compressed by default: text, scripts, data formats and fonts that are not already
#: compressed. ``type/*`` names a whole top-level type, ``*+suffix`` a structured suffix.
DEFAULT_TYPES = (
    "text/*",
    "*+json",
    "*+xml",
    "application/json",
    "application/x-ndjson",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/wasm",
    "application/vnd.ms-fontobject",
    "font/ttf",
    "font/otf",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
)
_EVENT_STREAM = "text/event-stream"
_STATE_KEY = "scalekit.frontend.compression"  # (coding or None, an ETag list rewritten)
_CONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH")  # the ETag lists made strong again
_SKIPPED_STATUS = ("1", "204", "206", "304")
_MAX_PADDING = 256  # one byte of brotli metadata length: MSKIPLEN - 1 < 256
_CACHED = 512  # distinct Accept-Encoding / Content-Type values remembered per Compression


def available_encodings() -> tuple[str, ...]:
    """The codings this process can send, most preferred first."""
    return ("br", "gzip") if brotli is not None else ("gzip",)


class Encoder(Protocol):
    """One response being compressed: ``whole`` for a finished body, or ``chunk`` for each
    streamed chunk (each output decodes, flushed, to everything fed so far) then
    ``finish``."""

    def whole(self, data: bytes) -> bytes: ...

    def chunk(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def _brotli_padding(size: int) -> bytes:
    """A brotli metadata meta-block (RFC 7932 §9.2) of ``size`` bytes, for a byte-aligned
    stream position (after a flush): ISLAST=0, MNIBBLES=0, MSKIPBYTES=1, MSKIPLEN-1, zero
    fill to the byte, then the skipped bytes."""
    if not size:
        return b""
    return (0b010110 | (size - 1) << 6).to_bytes(2, "little") + b"\x00" * size


class GzipEncoder:
    """gzip through zlib's raw deflate: the header (with its padding) written here, the
    CRC and length trailer computed as the data passes."""

    def __init__(self, level: int, padding: int) -> None:
        self._level = level
        self._padding = padding
        self._deflate = None  # made by the first chunk
        self._crc = 0
        self._size = 0

    def whole(self, data: bytes) -> bytes:
        if deflate_compress is None:
            deflated = zlib.compress(data, self._level, -zlib.MAX_WBITS)
        else:
            deflated = deflate_compress(data, self._level)
        head = gzip_header(self._level, self._padding)
        return b"".join((head, deflated, gzip_trailer(zlib.crc32(data), len(data))))

    def chunk(self, data: bytes) -> bytes:
        head = b""
        if self._deflate is None:
            self._deflate = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS)
            head = gzip_header(self._level, self._padding)
        if not data:
            return head
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        return head + self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        head = self.chunk(b"")
        return head + self._deflate.flush() + gzip_trailer(self._crc, self._size)


class BrotliEncoder:
    """brotli at ``quality``; the padding is a metadata block after the first flush."""

    def __init__(self, quality: int, padding: int) -> None:
        self._quality = quality
        self._padding = padding
        self._compressor = None

    def whole(self, data: bytes) -> bytes:
        if not self._padding:
            return brotli.compress(data, quality=self._quality)
        return self.chunk(data) + self.finish()

    def chunk(self, data: bytes) -> bytes:
        if self._compressor is None:
            self._compressor = brotli.Compressor(quality=self._quality)
            out = self._compressor.process(data) + self._compressor.flush()
            return out + _brotli_padding(self._padding)
        if not data:
            return b""
        return self._compressor.process(data) + self._compressor.flush()

    def finish(self) -> bytes:
        return self.chunk(b"") + self._compressor.finish()


class Compression:
    """Which responses are compressed, and how (see the module's docstring).

    ``min_size`` is the least body, in bytes, worth compressing when its length is known (a
    ``Content-Length`` or a finished body); a streamed body of unknown length is always
    compressed. ``types`` are the compressible media types (``text/*``, ``*+json`` and exact
    names); ``encodings`` the codings offered, most preferred first (default: ``br`` when
    brotli is installed, ``gzip``); ``max_random_bytes`` bounds the BREACH padding (0: none).
    """

    def __init__(
        self,
        *,
        min_size: int = 512,
        types: Iterable[str] = DEFAULT_TYPES,
        gzip_level: int = 6,
        brotli_quality: int = 5,
        encodings: Iterable[str] | None = None,
        max_random_bytes: int = 100,
    ) -> None:
        self.encodings = available_encodings() if encodings is None else tuple(encodings)
        unknown = set(self.encodings) - set(available_encodings())
        if unknown or not self.encodings:
            raise ConfigError(
                f"compression encodings={self.encodings!r}: choose among "
                f"{available_encodings()!r} (brotli needs the brotli package)"
            )
        _check_range("min_size", min_size, 0, 1 << 62)
        _check_range("gzip_level", gzip_level, 1, 9)
        _check_range("brotli_quality", brotli_quality, 0, 11)
        _check_range("max_random_bytes", max_random_bytes, 0, _MAX_PADDING)
        self.min_size = min_size
        self.gzip_level = gzip_level
        self.brotli_quality = brotli_quality
        self.max_random_bytes = max_random_bytes
        types = [t.strip().lower() for t in ([types] if isinstance(types, str) else types)]
        self._exact = frozenset(t for t in types if "*" not in t)
        self._wholes = tuple(t[:-1] for t in types if t.endswith("/*"))
        self._suffixes = tuple(t[1:] for t in types if t.startswith("*+"))
        self._compressible: dict[str, bool] = {}
        self._chosen: dict[str, str | None] = {}

    def prepare(self, environ: dict) -> None:
        """Request side, before the app: choose the coding (none for ``HEAD`` or a
        ``Range``), and when there is one make the weak tags of ``If-None-Match`` and
        ``If-Match`` strong — the client holds our weakened ETag, the app knows its strong
        one (its 304 answers, and an ``If-Match`` update is not refused for our ``W/``)."""
        coding = None
        if environ.get("REQUEST_METHOD") != "HEAD" and "HTTP_RANGE" not in environ:
            coding = self._choose(environ.get("HTTP_ACCEPT_ENCODING"))
        rewritten = False
        if coding is not None:
            for key in _CONDITIONS:
                tags = parse_etags(environ.get(key) or "")
                if tags and any(tag.startswith("W/") for tag in tags):
                    environ[key] = ", ".join(tag.removeprefix("W/") for tag in tags)
                    rewritten = True
        environ[_STATE_KEY] = (coding, rewritten)

    def respond(
        self, environ: dict, status: str, headers: list[tuple[str, str]], length: int | None
    ) -> tuple[list[tuple[str, str]], Encoder | None]:
        """The headers to send and the encoder, or ``None`` when not compressing.
        ``length`` is the body's size when known (``Content-Length``, a finished body),
        ``None`` for a stream."""
        if _STATE_KEY not in environ:
            self.prepare(environ)
        coding, rewritten = environ[_STATE_KEY]
        if status.startswith(_SKIPPED_STATUS) or environ.get("REQUEST_METHOD") == "HEAD":
            if rewritten and status.startswith("304"):  # what the client's copy was sent with
                return add_vary([_weakened(h) for h in headers], "Accept-Encoding"), None
            return headers, None
        content_type = ""
        transform = True
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower in ("content-encoding", "content-range"):
                return headers, None
            elif lower == "cache-control" and "no-transform" in value.lower():
                transform = False
        media = content_type.split(";", 1)[0].strip().lower()
        if not self._is_compressible(media):
            return headers, None
        headers = add_vary(headers, "Accept-Encoding")
        small = length is not None and length < self.min_size and media != _EVENT_STREAM
        if coding is None or not transform or small:
            return headers, None
        headers = [_weakened(h) for h in headers if h[0].lower() != "content-length"]
        headers.append(("Content-Encoding", coding))
        padding = secrets.randbelow(self.max_random_bytes) if self.max_random_bytes else 0
        if coding == "br":
            return headers, BrotliEncoder(self.brotli_quality, padding)
        return headers, GzipEncoder(self.gzip_level, padding)

    def _choose(self, header: str | None) -> str | None:
        """``choose_encoding``, remembered per distinct header (browsers send a few)."""
        if not header:
            return None
        try:
            return self._chosen[header]
        except KeyError:
            coding = choose_encoding(header, self.encodings)
            if len(self._chosen) >= _CACHED:
                self._chosen.clear()  # hostile variety: bounded memory
            self._chosen[header] = coding
            return coding

    def _is_compressible(self, media: str) -> bool:
        try:
            return self._compressible[media]
        except KeyError:
            verdict = bool(media) and (
                media in self._exact
                or media.startswith(self._wholes)
                or (("+" in media) and media.endswith(self._suffixes))
            )
            if len(self._compressible) >= _CACHED:
                self._compressible.clear()
            self._compressible[media] = verdict
            return verdict


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"compression {name}={value!r}: an integer from {low} to {high}")


def _weakened(header: tuple[str, str]) -> tuple[str, str]:
    """An ``ETag`` header made weak (our bytes are not the app's); others unchanged."""
    name, value = header
    if name.lower() == "etag" and value.lstrip().startswith('"'):
        return name, "W/" + value.strip()
    return header
