"""The database upload store on private PostgreSQL and MariaDB servers frozen (SIGSTOP)
or killed mid-write and mid-read: a clear StoreUnavailable, nothing partial visible."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from scalekit.core.errors import StoreUnavailable
from scalekit.uploads import UploadNotFound, new_name, open_store
from scalekit.uploads.stores import CHUNK
from tests.servers import MariaDBServer, PostgresServer
from tests.sessions.test_frozen_database import within
from tests.uploads.database.rows import GUARD
from tests.uploads.database.rows import data as _data

#: A short statement bound for the private servers: a frozen one fails a call in ~2 s.
BOUND = 1


# -- private servers stopped or killed --------------------------------------------------------
def _interrupted(data: bytes, after: int, stop) -> Iterator[bytes]:
    """``data`` in two blocks, ``stop()`` called between them."""
    yield data[:after]
    stop()
    yield data[after:]


def _crash_postgres(server: PostgresServer) -> None:
    """SIGKILL every client backend (the store's among them): PostgreSQL's crash, after
    which the postmaster ends every session and recovers from its log; wait for that."""
    with open(os.path.join(server.datadir, "postmaster.pid")) as pid_file:
        postmaster = int(pid_file.readline())
    with open(f"/proc/{postmaster}/task/{postmaster}/children") as children:
        for pid in map(int, children.read().split()):
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"127.0.0.1(" in cmdline.read():
                    os.kill(pid, signal.SIGKILL)


def _answering(server) -> None:
    """Wait until ``server`` answers again (after its crash recovery)."""
    for _ in range(GUARD * 10):
        with contextlib.suppress(Exception):
            if server.answers():
                return
        time.sleep(0.1)
    raise AssertionError(f"{server.name} does not answer after {GUARD} s")


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresServer]:
    with PostgresServer().running() as server:
        yield server


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[MariaDBServer]:
    with MariaDBServer().running() as server:
        yield server


@pytest.fixture(params=["postgres", "mysql"])
def private(request):
    """A private server of each kind, how to freeze it (a context manager), and a store
    on it with a short statement bound."""
    if request.param == "postgres":
        server = request.getfixturevalue("private_postgres")
    else:
        server = request.getfixturevalue("private_mariadb")
    freeze = server.frozen
    url = f"{server.url}?statement_timeout={BOUND}"
    store = open_store(url, table=f"up_{uuid.uuid4().hex[:12]}", chunk_size=64 * 1024)
    yield freeze, store
    store.close()


def _nothing_left(store, name: str) -> None:
    with pytest.raises(UploadNotFound):
        store.info(name)
    assert name not in {info.name for info in store.names()}


def test_a_server_frozen_mid_write_fails_it_and_keeps_nothing(private):
    freeze, store = private
    store.save(b"warm", "w.txt")  # the connection is open before the freeze
    name, data = new_name("frozen.bin"), _data(CHUNK)
    with contextlib.ExitStack() as stack:
        stop = lambda: stack.enter_context(freeze())  # noqa: E731 - thawed as the block ends
        failure = within(GUARD, lambda: store.put(name, _interrupted(data, 300_000, stop)))[0]
    assert isinstance(failure, StoreUnavailable), failure
    assert store.url in str(failure) and "secret" not in str(failure)
    _nothing_left(store, name)
    assert store.info(store.save(data, "again.bin")).size == len(data)  # it works again


def test_a_server_frozen_mid_read_fails_the_read(private):
    freeze, store = private
    data = _data(3 * CHUNK)
    name = store.save(data, "r.bin")
    with contextlib.closing(store.read(name)) as reading:
        first = next(reading)
        with freeze():
            failure = within(GUARD, lambda: b"".join(reading))[0]
    assert first == data[: len(first)]
    assert isinstance(failure, StoreUnavailable), failure
    assert b"".join(store.read(name)) == data


def test_a_postgres_crashed_mid_write_keeps_nothing(private_postgres):
    url = f"{private_postgres.url}?statement_timeout={BOUND}"
    with contextlib.closing(open_store(url, chunk_size=64 * 1024)) as store:
        store.save(b"warm", "w.txt")
        name, data = new_name("killed.bin"), _data(CHUNK)
        stop = lambda: _crash_postgres(private_postgres)  # noqa: E731
        with pytest.raises(StoreUnavailable, match="closed the connection"):
            store.put(name, _interrupted(data, 300_000, stop))  # this thread's connection
        _answering(private_postgres)  # recovered: what was committed, only
        _nothing_left(store, name)
        assert b"".join(store.read(store.save(data, "again.bin"))) == data


def test_a_mariadb_killed_mid_read_fails_the_read(private_mariadb):
    url = f"{private_mariadb.url}?statement_timeout={BOUND}"
    with contextlib.closing(open_store(url, chunk_size=64 * 1024)) as store:
        name = store.save(_data(3 * CHUNK), "k.bin")
        reading = store.read(name)
        next(reading)
        private_mariadb.kill()
        try:
            failure = within(GUARD, lambda: b"".join(reading))[0]
            assert isinstance(failure, StoreUnavailable), failure
            assert "maria-secret" not in str(failure)
        finally:
            private_mariadb.stop()
            private_mariadb.start()  # a new server for the tests after this one
