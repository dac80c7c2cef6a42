"""What uploads raise: each a :class:`~scalekit.core.errors.ScalekitError` naming the store,
the upload and the fix."""

from __future__ import annotations

from scalekit.core.errors import CorruptData, InvalidArgument, StoreNotFound

__all__ = ["UploadCorrupt", "UploadNotFound", "UploadTooLarge"]


class UploadNotFound(StoreNotFound):
    """No upload of that name in the store (also for a name no store would ever make)."""


class UploadTooLarge(InvalidArgument):
    """More bytes than the limit: raised while reading, before the rest is read; nothing
    of the upload is left in the store."""

    def __init__(self, limit: int, what: str = "the upload"):
        super().__init__(f"{what} is larger than the limit of {limit} bytes")
        self.limit = limit


class UploadCorrupt(CorruptData):
    """A stored upload whose bytes are not what was stored (a chunk missing, a size or a
    checksum that does not match)."""
