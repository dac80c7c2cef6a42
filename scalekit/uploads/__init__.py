"""Uploads every server can read: a shared folder, the database, or an S3-compatible store.

``store = open_store("s3://bucket/uploads?endpoint_url=...")``, then
``Field("image", "upload", **store.field_options())`` in the model, :class:`BodyLimit` (or
``limit_body``) and :func:`receive` on the way in, and a :class:`Downloads` app (or the
``download`` decorator) to serve them. ``scalekit uploads migrate`` and ``scalekit uploads
gc`` (:mod:`scalekit.uploads.migrate`, :mod:`scalekit.uploads.gc`) operate on stores.
"""

from __future__ import annotations

from scalekit.uploads.downloads import Downloads, download
from scalekit.uploads.errors import BadUpload, UploadCorrupt, UploadNotFound, UploadTooLarge
from scalekit.uploads.names import new_name, original_filename, parse_name
from scalekit.uploads.receive import BodyLimit, Received, limit_body, receive
from scalekit.uploads.stores import UploadInfo, UploadStore, open_store

__all__ = [
    "BadUpload",
    "BodyLimit",
    "Downloads",
    "Received",
    "UploadCorrupt",
    "UploadInfo",
    "UploadNotFound",
    "UploadStore",
    "UploadTooLarge",
    "download",
    "limit_body",
    "new_name",
    "open_store",
    "original_filename",
    "parse_name",
    "receive",
]
