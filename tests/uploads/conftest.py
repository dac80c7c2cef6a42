"""Fixtures for the upload tests: one store per backend, each on its real server.

``store_url`` is the URL of an empty store of the backend under test, a place of the test's
own: a folder (file), a database file (sqlite), tables named for the test (``table=`` on
PostgreSQL and MariaDB), a key prefix of a bucket (moto's S3-compatible server).
``make_store()`` opens it (each call a new handle on the same place) and closes every handle
after the test. A backend whose module is not in the tree fails its tests, naming the module:
it is never skipped. Select some with ``-k``, e.g. ``-k 'file or sqlite'``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from scalekit.uploads import UploadStore, open_store
from tests.servers import S3Server

#: Every backend the conformance suite runs on.
STORE_KINDS = ["file", "sqlite", "postgres", "mariadb", "s3"]


def unique(prefix: str) -> str:
    """A name no other test uses (tables and key prefixes on the shared servers)."""
    return prefix + uuid.uuid4().hex[:12]


def store_url_for(kind: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of an empty store of ``kind`` for this test, starting its server if needed."""
    if kind == "file":
        return f"file://{tmp_path}/uploads"
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/uploads.sqlite"
    if kind == "postgres":
        return f"{request.getfixturevalue('postgres_url')}?table={unique('up_')}"
    if kind == "mariadb":
        return f"{request.getfixturevalue('mysql_url')}?table={unique('up_')}"
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        return server.url(request.getfixturevalue("s3_bucket"), unique("t"))
    raise AssertionError(kind)


@pytest.fixture(scope="session")
def s3_bucket(s3_server) -> str:
    """One bucket for the upload tests; each test keeps to a key prefix of its own."""
    return s3_server.create_bucket(unique("scalekit-uploads-"))


@pytest.fixture(params=STORE_KINDS)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def store_url(store_kind, request, tmp_path) -> str:
    return store_url_for(store_kind, request, tmp_path)


@pytest.fixture
def make_store(store_url) -> Iterator[Callable[[], UploadStore]]:
    """``make_store()``: a new handle on the test's store of the backend under test."""
    opened: list[UploadStore] = []

    def make() -> UploadStore:
        store = open_store(store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(scope="module")
def private_s3() -> Iterator[S3Server]:
    """An S3-compatible server of the test module's own, to freeze and kill (never the
    session's)."""
    with S3Server().running() as server:
        yield server
