"""Uploads in an S3-compatible object store (AWS S3, MinIO, Ceph, R2...), one object each.

``s3://KEY:SECRET@bucket/prefix?endpoint_url=https://s3.example.com&region=eu-west-1``
keeps the upload ``<name>`` as the object ``<prefix>/<name>``. Without a key pair boto3
finds one itself (``AWS_ACCESS_KEY_ID``..., a profile, an instance role).

* **Writes stream.** An upload smaller than ``part_size`` is one PUT; a larger one a
  multipart upload of ``part_size`` parts, one part in memory at a time. S3 shows an object
  only once its upload completes, so a write that fails (its source raised, the limit was
  passed, the server stopped) leaves nothing visible; its parts are aborted at once, or by
  ``scalekit uploads gc`` (:meth:`S3Store.remove_leftovers`) when the server could not be
  reached then.
* **Checksums.** The SHA-256 of an upload is kept as the object's ``sha256`` metadata (one
  PUT) or, for a multipart upload (whose metadata is fixed before its first byte), as its
  ``sha256`` tag once complete.
* **Reads** are ranged GETs streamed in chunks of :data:`~scalekit.uploads.stores.base.CHUNK`.
* **Failures** are bounded: connect and read timeouts, a few attempts, then
  :class:`~scalekit.core.errors.StoreUnavailable` naming the masked URL (never the secret key).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import S3URL, BackendURL
from scalekit.uploads.errors import UploadNotFound, UploadTooLarge
from scalekit.uploads.names import parse_name
from scalekit.uploads.stores._s3_connection import (
    MISSING,
    UNREACHABLE,
    Chunks,
    S3Connection,
    error_code,
)
from scalekit.uploads.stores.base import Source, UploadInfo, UploadStore, blocks_of

__all__ = ["S3Store"]

log = logging.getLogger("scalekit.uploads")

#: S3's bounds on a multipart upload: parts of 5 MiB to 5 GiB (the last may be smaller),
#: at most 10 000 of them
MIN_PART, MAX_PART, MAX_PARTS = 5 << 20, 5 << 30, 10_000
DEFAULT_PART = 8 << 20
ADDRESSING_STYLES = ("auto", "path", "virtual")
_SHA256 = re.compile(r"[0-9a-f]{64}")

OPTIONS = {
    "part_size": int,
    "connect_timeout": float,
    "read_timeout": float,
    "retries": int,
    "create": as_bool,
    "addressing_style": str,
}


class S3Store(UploadStore):
    """One object per upload under a bucket's prefix; see the module's docstring."""

    kind = "s3"

    def __init__(
        self,
        settings: S3URL,
        *,
        part_size: int = DEFAULT_PART,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        retries: int = 2,
        create: bool = False,
        addressing_style: str | None = None,
    ):
        """``read_timeout``: the longest wait for one answer (also between two chunks of a
        read); ``retries``: attempts after the first (a stopped server fails a call after
        about ``(retries + 1) * read_timeout``, a write one ``read_timeout`` more for the
        abort); ``create``: make the bucket if missing (tests, dev); ``addressing_style``:
        ``path`` by default with an ``endpoint_url``, else boto3's choice."""
        super().__init__(settings.masked)
        self.settings = settings
        if isinstance(part_size, bool) or not isinstance(part_size, int):
            raise ConfigError(f"{self.url}: part_size must be an int, not {part_size!r:.40}")
        if not MIN_PART <= part_size <= MAX_PART:
            raise ConfigError(f"{self.url}: part_size must be {MIN_PART} to {MAX_PART} bytes")
        for what, seconds in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
                raise ConfigError(f"{self.url}: {what} must be 0 to 3600 seconds, not {seconds!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ConfigError(f"{self.url}: retries must be an int from 0 to 10, not {retries!r}")
        style = addressing_style or ("path" if settings.endpoint_url else "auto")
        if style not in ADDRESSING_STYLES:
            raise ConfigError(f"{self.url}: addressing_style must be one of {ADDRESSING_STYLES}")
        self.part_size, self.create = part_size, bool(create)
        self.bucket = settings.bucket
        #: what every key of this store starts with (``""``: the whole bucket)
        self.key_prefix = f"{settings.prefix}/" if settings.prefix else ""
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": retries + 1, "mode": "standard"},
            s3={"addressing_style": style},
        )
        self._connection = S3Connection(settings, config, create=self.create)

    @classmethod
    def from_url(cls, settings: BackendURL, **options: Any) -> S3Store:
        if not isinstance(settings, S3URL):
            raise ConfigError(f"{settings.masked}: an S3 upload store needs an s3:// URL")
        return cls(settings, **merge_options(settings, OPTIONS, options))

    # -- writes ---------------------------------------------------------------------------
    def _write(self, name: str, source: Source) -> UploadInfo:
        key = self._key(name)
        blocks = blocks_of(source, self.part_size)
        first = next(blocks, b"")
        if len(first) < self.part_size:  # the whole upload: one PUT
            with self._connection.failures("store", name):
                self._s3.put_object(
                    Bucket=self.bucket, Key=key, Body=first, Metadata={"sha256": source.sha256}
                )
        else:
            self._write_parts(name, key, itertools.chain([first], blocks), source)
        return UploadInfo(name, source.size, time.time(), source.sha256)

    def _write_parts(self, name: str, key: str, blocks: Iterator[bytes], source: Source) -> None:
        """A multipart upload of ``blocks``, completed (then tagged with its SHA-256) once
        all are stored, aborted on any failure."""
        checksum = self._connection.part_checksum
        with self._connection.failures("start storing", name):
            started = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, **checksum)
        upload = started["UploadId"]
        try:
            parts = []
            for number, block in enumerate(blocks, 1):
                if number > MAX_PARTS:
                    limit = MAX_PARTS * self.part_size
                    raise UploadTooLarge(limit, f"{self.url}: {name} (raise part_size)")
                with self._connection.failures("store", name):
                    stored = self._s3.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number,
                        Body=block, **checksum,
                    )  # fmt: skip
                part = {"ETag": stored["ETag"], "PartNumber": number}
                if "ChecksumCRC32" in stored:  # a server that checks it wants it back
                    part["ChecksumCRC32"] = stored["ChecksumCRC32"]
                parts.append(part)
            with self._connection.failures("complete storing", name):
                self._s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            self._abort(key, upload)
            raise
        self._tag_sha256(name, key, source.sha256)

    def _abort(self, key: str, upload: str) -> None:
        """Drop a multipart upload's parts, in one attempt (after a failure that already
        waited its retries); a server that cannot be reached now keeps them for
        :meth:`remove_leftovers` (logged, not raised: the write's own error is what the
        caller needs)."""
        try:
            self._connection.once.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload
            )
        except (ClientError, *UNREACHABLE) as exc:
            reason = self._connection.scrub(exc)
            log.warning(
                "%s: the unfinished upload of %s was not aborted (%s); "
                "`scalekit uploads gc` removes it",
                self.url, key, reason,
            )  # fmt: skip

    def _tag_sha256(self, name: str, key: str, sha256: str) -> None:
        """Record a completed multipart upload's SHA-256 as its tag; the upload is stored
        whatever happens, so a failure here is logged (its checksum then unknown)."""
        tags = {"TagSet": [{"Key": "sha256", "Value": sha256}]}
        try:
            self._s3.put_object_tagging(Bucket=self.bucket, Key=key, Tagging=tags)
        except (ClientError, *UNREACHABLE) as exc:
            reason = self._connection.scrub(exc)
            log.warning("%s: %s is stored, its sha256 not recorded (%s)", self.url, name, reason)

    def remove_leftovers(self, older_than: float, *, dry_run: bool = False) -> int:
        """Abort the multipart uploads under the prefix begun before ``older_than``
        (seconds since the epoch) that never completed (their writer was killed, or the
        server unreachable when it failed); how many (``dry_run``: counted only)."""
        removed = 0
        with self._connection.failures("list unfinished uploads"):
            pages = self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.key_prefix
            )
            stale = [
                upload
                for page in pages
                for upload in page.get("Uploads", ())
                if parse_name(upload["Key"][len(self.key_prefix) :])
                and upload["Initiated"].timestamp() < older_than
            ]
        for upload in stale:
            if not dry_run:
                with self._connection.failures("abort an unfinished upload"):
                    try:
                        self._s3.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if error_code(exc) != "NoSuchUpload":
                            raise
                        continue  # aborted meanwhile (by its writer, another gc)
            removed += 1
        return removed

    # -- reads ----------------------------------------------------------------------------
    def _info(self, name: str) -> UploadInfo:
        key = self._key(name)
        with self._connection.failures("look up", name):
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        sha256 = _checksum(head.get("Metadata", {}).get("sha256"))
        if sha256 is None and "-" in head.get("ETag", ""):  # a multipart upload: its tag
            sha256 = self._tagged_sha256(name, key)
        return UploadInfo(name, head["ContentLength"], head["LastModified"].timestamp(), sha256)

    def _tagged_sha256(self, name: str, key: str) -> str | None:
        with self._connection.failures("look up", name):
            try:
                tags = self._s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    raise
                return None  # a server without tags, or not allowed: unknown, not an error
        return _checksum(next((t["Value"] for t in tags if t["Key"] == "sha256"), None))

    def _read(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        if end is not None and end <= start:
            self._info(name)  # nothing to read, but UploadNotFound if it is not there
            return iter(())
        span = {}
        if start or end is not None:
            span["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._connection.failures("read", name):
            try:
                got = self._s3.get_object(Bucket=self.bucket, Key=self._key(name), **span)
            except ClientError as exc:
                if error_code(exc) != "InvalidRange":
                    raise
                self._info(name)  # a span past the end: nothing, if the upload is there
                return iter(())
        if span and not got.get("ContentRange", "").startswith(f"bytes {start}-"):
            got["Body"].close()  # a server (or a proxy) that ignored Range: not these bytes
            problem = f"answered {got.get('ContentRange') or 'the whole object'} to {span['Range']}"
            raise StoreUnavailable(f"{self.url}: cannot read {name}: the S3 server {problem}")
        return Chunks(self._connection, name, got["Body"])

    def names(self, prefix: str = "") -> Iterator[UploadInfo]:
        with self._connection.failures("list uploads"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key_prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(self.key_prefix) :]
                    if parse_name(name) is not None:  # not another app's object
                        yield UploadInfo(name, item["Size"], item["LastModified"].timestamp())

    # -- deletes and the client -----------------------------------------------------------
    def _delete(self, name: str) -> bool:
        key = self._key(name)
        try:
            with self._connection.failures("delete", name):
                self._s3.head_object(Bucket=self.bucket, Key=key)  # S3 deletes silently
        except UploadNotFound:
            return False
        with self._connection.failures("delete", name):
            self._s3.delete_object(Bucket=self.bucket, Key=key)
        return True

    def close(self) -> None:
        self._connection.close()

    @property
    def _s3(self) -> Any:
        """This process's boto3 client (made on first use, again after a fork)."""
        return self._connection.client

    def _key(self, name: str) -> str:
        return self.key_prefix + name


def _checksum(value: str | None) -> str | None:
    """A recorded SHA-256 if it is one (64 hex digits), else ``None``."""
    return value if value and _SHA256.fullmatch(value) else None
