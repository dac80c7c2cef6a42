"""What uploads raise: each a :class:`~scalekit.core.errors.ScalekitError` naming the store,
the upload and the fix."""

from __future__ import annotations

from scalekit.core.errors import CorruptData, InvalidArgument, StoreNotFound

__all__ = ["BadUpload", "UploadCorrupt", "UploadNotFound", "UploadTooLarge"]


class UploadNotFound(StoreNotFound):
    """No upload of that name in the store (also for a name no store would ever make)."""


class UploadTooLarge(InvalidArgument):
    """More bytes than the limit: raised while reading, before the rest is read; nothing
    of the upload is left in the store."""

    def __init__(self, limit: int, what: str = "the upload"):
        super().__init__(f"{what} is larger than the limit of {limit} bytes")
        self.limit = limit


class BadUpload(InvalidArgument):
    """The client's request body is not an upload :func:`~scalekit.uploads.receive.receive`
    can store: malformed, cut short, empty, not a form, two files for one field. The client's
    fault: ``BodyLimit`` and ``limit_body`` answer it with a 400."""


class UploadCorrupt(CorruptData):
    """A stored upload whose bytes are not what was stored (a chunk missing, a size or a
    checksum that does not match)."""
