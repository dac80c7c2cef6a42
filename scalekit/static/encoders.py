"""Streaming encoders for precompressed variants: deterministic gzip, zopfli and brotli.

Every encoder takes the source in chunks (``update``) and returns the compressed bytes
produced so far; ``finish`` returns the rest. All write the same gzip header, so only
the compressed stream differs between engines. Output depends on the content and the level
only (no file name, no timestamp), so every server behind a balancer writes the same bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

from scalekit.core.errors import ConfigError
from scalekit.wsgi.encodings import gzip_header, gzip_trailer


class Encoder(Protocol):
    """One variant being written: feed chunks in order, then finish."""

    def update(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class GzipEncoder:
    """gzip through zlib's deflate, streamed: memory stays constant whatever the file size."""

    def __init__(self, level: int = 9) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._header: bytes | None = gzip_header(level)
        self._crc = 0
        self._size = 0

    def update(self, chunk: bytes) -> bytes:
        self._crc = zlib.crc32(chunk, self._crc)
        self._size += len(chunk)
        out = self._deflate.compress(chunk)
        if self._header is not None:
            out, self._header = self._header + out, None
        return out

    def finish(self) -> bytes:
        head = self._header or b""
        trailer = gzip_trailer(self._crc, self._size)
        return head + self._deflate.flush() + trailer


class WholeEncoder:
    """gzip from a compressor that needs the whole input at once (libdeflate: as small as
    zlib's best at twice its speed; zopfli: smaller, many times slower). ``update`` only
    collects the chunks: callers use :class:`GzipEncoder` above a size limit."""

    def __init__(self, deflate: Callable[[bytes], bytes], level: int) -> None:
        self._deflate = deflate
        self._level = level
        self._chunks: list[bytes] = []

    def update(self, chunk: bytes) -> bytes:
        self._chunks.append(chunk)
        return b""

    def finish(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return (
            gzip_header(self._level)
            + self._deflate(data)
            + gzip_trailer(zlib.crc32(data), len(data))
        )


def libdeflate_encoder(level: int) -> WholeEncoder:
    deflate = require("deflate")
    return WholeEncoder(lambda data: deflate.deflate_compress(data, level), level)


def zopfli_encoder(iterations: int) -> WholeEncoder:
    zopfli = require("zopfli")
    # zopfli writes a zlib stream: 2 header bytes, raw deflate, 4 bytes of Adler-32.
    return WholeEncoder(lambda data: zopfli.compress(data, numiterations=iterations)[2:-4], 9)


class BrotliEncoder:
    """brotli through the streaming ``brotli.Compressor``."""

    def __init__(self, quality: int = 11) -> None:
        brotli = require("brotli")
        self._compressor = brotli.Compressor(quality=quality)

    def update(self, chunk: bytes) -> bytes:
        return self._compressor.process(chunk)

    def finish(self) -> bytes:
        return self._compressor.finish()


def require(package: str):
    """Import an optional compressor package, or say how to install it."""
    try:
        if package == "zopfli":
            import zopfli.zopfli as module
        elif package == "deflate":
            import deflate as module
        else:
            import brotli as module
    except ImportError:
        raise ConfigError(
            f"{package} is not installed: pip install 'scalekit-wsgi[{package}]' (or {package})"
        ) from None
    return module


def installed(package: str) -> bool:
    try:
        require(package)
    except ConfigError:
        return False
    return True
