"""Uploads every server can read: a shared folder, the database, or an S3-compatible store.

``store = open_store("s3://bucket/uploads?endpoint_url=...")``, then
``Field("image", "upload", **store.field_options())`` in the model, and a
:class:`Downloads` app (or the ``download`` decorator) to serve them.
"""

from __future__ import annotations

from scalekit.uploads.errors import UploadCorrupt, UploadNotFound, UploadTooLarge
from scalekit.uploads.names import new_name, original_filename, parse_name
from scalekit.uploads.stores import UploadInfo, UploadStore, open_store

__all__ = [
    "UploadCorrupt",
    "UploadInfo",
    "UploadNotFound",
    "UploadStore",
    "UploadTooLarge",
    "new_name",
    "open_store",
    "original_filename",
    "parse_name",
]
