"""The guestbook's pictures: the store every node reads them from (``config.UPLOADS``),
which files count as a picture, and the app serving them at ``/download/<name>``.

A picture is kept by :mod:`scalekit.uploads` under a name the store makes (never the
client's file name), streamed in while the request is read and out with ``Range`` and
``ETag``. Only PNG, JPEG, GIF and WebP are taken, judged by the file's first bytes, not by
the name or type the browser sent: an SVG or an HTML page (which a browser would run) is
refused, and the downloads would serve one as an attachment anyway.
"""

from __future__ import annotations

import contextlib

import config

from scalekit import uploads

store = uploads.open_store(config.UPLOADS)

#: The picture types taken, by the extension of the stored name: their MIME type, and the
#: bytes such a file starts with (WebP: ``RIFF``, a size, then ``WEBP``).
TYPES = {
    "png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    "jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    "jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    "gif": ("image/gif", (b"GIF87a", b"GIF89a")),
    "webp": ("image/webp", (b"RIFF",)),
}
#: The form's ``accept``: what the browser's file chooser offers (a hint, not a check).
ACCEPT = ",".join(sorted({mime for mime, _ in TYPES.values()}))
#: The most bytes of a file read to tell its type.
_HEAD = 12

#: Where the pictures are served: ``PREFIX + name``.
PREFIX = "/download/"
#: GET /download/<name>. Every picture of the guestbook is public, and the bytes under a
#: name never change: browsers and shared caches may keep one for a year.
downloads = uploads.Downloads(
    store, prefix=PREFIX, cache_control="public, max-age=31536000, immutable"
)


def is_picture(name: str) -> bool:
    """Is the stored upload ``name`` a picture of a type in :data:`TYPES` (its name's
    extension one of them, its first bytes what such a file starts with)?"""
    parsed = uploads.parse_name(name)
    extension = parsed.extension.lower() if parsed else ""
    if extension not in TYPES:
        return False
    with contextlib.closing(store.read(name, 0, _HEAD)) as chunks:
        head = b"".join(chunks)
    _, starts = TYPES[extension]
    return head.startswith(starts) and (extension != "webp" or head[8:12] == b"WEBP")
