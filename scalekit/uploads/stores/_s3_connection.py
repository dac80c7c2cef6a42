"""The boto3 side of the S3 upload store: its clients (per process, bounded), botocore's
errors as scalekit's, and a GET's body as chunks.

Kept apart from :mod:`scalekit.uploads.stores.s3`, which says what is stored where; this
module says how a call reaches the server and what its failures become: every message names
the masked URL and what to check, never the secret key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ReadTimeoutError

from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.core.process import PerProcess
from scalekit.core.urls import MASK, S3URL
from scalekit.uploads.errors import UploadNotFound
from scalekit.uploads.stores.base import CHUNK

__all__ = ["MISSING", "UNREACHABLE", "Chunks", "S3Connection", "error_code"]

#: error codes of an object (or a bucket, on HEAD) that is not there
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"})
#: what a connection that failed, timed out or was cut raises, beside botocore's own errors
UNREACHABLE = (BotoCoreError, urllib3.exceptions.HTTPError, OSError)


def error_code(error: ClientError) -> str:
    """The S3 error code of a refused call (``NoSuchKey``, ``InvalidRange``, ``404``...)."""
    return str(error.response.get("Error", {}).get("Code", ""))


class _Clients(NamedTuple):
    s3: Any
    once: Any

    def close(self) -> None:
        self.s3.close()
        self.once.close()


class S3Connection:
    """The boto3 clients of one store, made on first use in each process (a boto3 session
    of their own: thread-safe, and new after a fork): :attr:`client` for every call,
    :attr:`once` for one that must not retry (an abort after a failure that already waited
    its retries). ``create``: make the bucket with the first client."""

    def __init__(self, settings: S3URL, config: Config, *, create: bool = False):
        self.settings, self.config, self.create = settings, config, create
        self.url = settings.masked
        self._clients = PerProcess(self._make, close=_Clients.close)

    @property
    def client(self) -> Any:
        return self._clients.get().s3

    @property
    def once(self) -> Any:
        return self._clients.get().once

    def close(self) -> None:
        self._clients.reset()

    @property
    def part_checksum(self) -> dict[str, str]:
        """CRC32 checksums on a multipart upload's parts where boto3 adds them by default
        (as boto3's own transfers do); none when ``AWS_REQUEST_CHECKSUM_CALCULATION`` is
        ``when_required`` (a server that does not know them)."""
        if self.client.meta.config.request_checksum_calculation == "when_supported":
            return {"ChecksumAlgorithm": "CRC32"}
        return {}

    def _make(self) -> _Clients:
        settings = self.settings
        session = boto3.session.Session()
        one_attempt = self.config.merge(Config(retries={"total_max_attempts": 1}))
        s3, once = (
            session.client(
                "s3",
                endpoint_url=settings.endpoint_url,
                region_name=settings.region,
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                aws_session_token=settings.session_token,
                config=config,
            )
            for config in (self.config, one_attempt)
        )
        if self.create:
            self._create_bucket(s3)
        return _Clients(s3, once)

    def _create_bucket(self, client: Any) -> None:
        """Make the bucket if it is not there."""
        bucket, region = self.settings.bucket, self.settings.region
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if error_code(exc) not in MISSING:
                raise
        where = {}
        if region and region != "us-east-1":
            where = {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            client.create_bucket(Bucket=bucket, **where)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    @contextlib.contextmanager
    def failures(self, doing: str, name: str | None = None) -> Iterator[None]:
        """botocore's errors in the body as scalekit's, each naming the masked URL, what
        failed (``doing`` ``name``) and what to check."""
        what = f"{doing} {name}" if name else doing
        try:
            yield
        except ClientError as exc:
            code = error_code(exc)
            if code in MISSING and name is not None:
                raise UploadNotFound(f"{self.url}: no upload {name}") from None
            if code == "NoSuchBucket" or code in MISSING:
                problem = (
                    f"bucket {self.settings.bucket!r} does not exist; create it (or create=true)"
                )
                raise StoreNotFound(f"{self.url}: {problem}") from None
            if code in _REFUSED:
                problem = f"refused to {what} ({code}): check the key pair and the bucket policy"
                raise StoreUnavailable(f"{self.url}: the S3 server {problem}") from None
            problem = f"failed to {what}: {self.scrub(exc)}"
            raise StoreUnavailable(f"{self.url}: the S3 server {problem}") from None
        except NoCredentialsError:
            raise ConfigError(
                f"{self.url}: no S3 key pair: write s3://KEY:SECRET@bucket/..., or give boto3 "
                "one (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, a role)"
            ) from None
        except ReadTimeoutError:
            problem = f"cannot {what}: no answer within read_timeout={self.config.read_timeout}s"
            raise StoreUnavailable(
                f"{self.url}: {problem}; check that the S3 server is up and not overloaded"
            ) from None
        except UNREACHABLE as exc:
            problem = f"cannot {what}: {self.scrub(exc)}"
            raise StoreUnavailable(
                f"{self.url}: {problem}; check that the S3 server is up and reachable"
            ) from None

    def scrub(self, error: BaseException) -> str:
        """An error's text, cut, with the secret key and session token (if ever in it)
        hidden."""
        text = str(error)[:300]
        for secret in (self.settings.secret_key, self.settings.session_token):
            if secret:
                text = text.replace(secret, MASK)
        return text


class Chunks:
    """The chunks of a GET's body as an iterator whose ``close()`` ends the connection,
    also before the first chunk; a connection cut or stalled on the way is
    StoreUnavailable, never a short read passed off as the whole."""

    def __init__(self, connection: S3Connection, name: str, body: Any):
        self._connection, self._name, self._body = connection, name, body

    def __iter__(self) -> Chunks:
        return self

    def __next__(self) -> bytes:
        with self._connection.failures("read", self._name):
            chunk = self._body.read(CHUNK)  # at the end: checked against Content-Length
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._body.close()
