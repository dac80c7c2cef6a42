"""Upload stores, opened by URL: ``open_store("s3://bucket/uploads?endpoint_url=...")``.

=========================================  ==============================================
URL                                        store
=========================================  ==============================================
``file:///shared/uploads``                 :class:`FileStore`: one file per upload in
                                           web2py's ``uploadseparate`` folders
``sqlite://storage.sqlite``,               :class:`DatabaseStore`: chunk rows in tables of
``postgres://``, ``mysql://``              its own, through pydal
``s3://bucket/prefix?endpoint_url=...``    :class:`S3Store`: one object per upload, through
                                           boto3 (multipart writes, ranged reads)
=========================================  ==============================================
"""

from __future__ import annotations

from typing import Any

from scalekit.core import urls
from scalekit.core.errors import ConfigError
from scalekit.core.registry import Backends
from scalekit.uploads.stores.base import CHUNK, Source, UploadInfo, UploadStore

__all__ = [
    "CHUNK",
    "DatabaseStore",
    "FileStore",
    "S3Store",
    "Source",
    "UploadInfo",
    "UploadStore",
    "open_store",
]

#: kind of URL -> (module, class), imported on first use
STORES = Backends({
    "file": ("scalekit.uploads.stores.files", "FileStore"),
    "sqlite": ("scalekit.uploads.stores.database", "DatabaseStore"),
    "database": ("scalekit.uploads.stores.database", "DatabaseStore"),
    "s3": ("scalekit.uploads.stores.s3", "S3Store"),
})  # fmt: skip


def open_store(url: str, **options: Any) -> UploadStore:
    """Open the upload store a URL names; ``options`` (also in the URL's query) go to the
    store's ``from_url``; an unknown one is a :class:`~scalekit.core.errors.ConfigError`."""
    if not isinstance(url, str):
        raise ConfigError(f"an upload store is a URL, not {url!r:.60}")
    settings = urls.parse(url, kinds=STORES.kinds)
    return STORES.for_kind(settings.kind).from_url(settings, **options)


__getattr__ = STORES.export
