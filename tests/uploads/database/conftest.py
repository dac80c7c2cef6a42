"""The fixtures of the database upload store's tests: a URL of each engine (the
session-wide servers), a table name of the test's own, the store on it, and a connection of
the test's own to its database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from pydal import DAL

from scalekit.connect import sql
from scalekit.core.urls import parse
from scalekit.uploads import UploadStore, open_store
from tests.uploads.database.rows import SMALL


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def url(request, tmp_path) -> str:
    """A database URL of each engine (the session-wide servers)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/uploads.sqlite"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def table() -> str:
    return f"up_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(url, table) -> Iterator[UploadStore]:
    with contextlib.closing(open_store(url, table=table, chunk_size=SMALL)) as opened:
        yield opened


@pytest.fixture
def raw(url, tmp_path) -> Iterator[DAL]:
    """A connection of the test's own to the store's database."""
    options = sql.dal_options(parse(url), folder=str(tmp_path / "raw"), timeout=5)
    db = sql.open_dal(options, "test database")
    yield db
    sql.close_quietly(db)
