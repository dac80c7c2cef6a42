"""The database upload store on SQLite, PostgreSQL and MariaDB: what is its own beside the
conformance suite. Chunk rows and ranges across them, web2py's single-blob layout read
through ``blobs=``, a write rolled back by a failing source, corruption (a chunk row missing
or cut), and private servers frozen (SIGSTOP) or killed mid-write and mid-read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from pydal import DAL, Field

from scalekit.connect import sql
from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.core.urls import parse
from scalekit.uploads import (
    UploadCorrupt,
    UploadNotFound,
    UploadTooLarge,
    new_name,
    open_store,
)
from scalekit.uploads.stores import CHUNK
from tests.servers import MariaDBServer, PostgresServer

#: A short statement bound for the private servers: a frozen one fails a call in ~2 s.
BOUND = 1
#: Longest wait for a call against a frozen server (a guard against a hang, not a timing).
GUARD = 30
SMALL = 1000  # chunk_size of most tests: many rows from a few kB


def _data(size: int, seed: str = "x") -> bytes:
    """``size`` deterministic, incompressible bytes."""
    count = -(-size // 32)
    return b"".join(hashlib.sha256(f"{seed}{n}".encode()).digest() for n in range(count))[:size]


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
def store(url, table) -> Iterator:
    with contextlib.closing(open_store(url, table=table, chunk_size=SMALL)) as opened:
        yield opened


@pytest.fixture
def raw(url, tmp_path) -> Iterator[DAL]:
    """A connection of the test's own to the store's database."""
    options = sql.dal_options(parse(url), folder=str(tmp_path / "raw"), timeout=5)
    db = sql.open_dal(options, "test database")
    yield db
    sql.close_quietly(db)


def run(db: DAL, statement: str, *params) -> list:
    """Run one statement (``?`` marks parameters) and commit; its rows, if any."""
    marker = "?" if db._adapter.driver.paramstyle == "qmark" else "%s"
    db._adapter.execute(statement.replace("?", marker), params)
    rows = db._adapter.cursor.fetchall() if db._adapter.cursor.description else []
    db.commit()
    return rows


def chunk_rows(db: DAL, table: str, name: str) -> list[tuple[int, int]]:
    """(seq, length) of the chunk rows of ``name``."""
    rows = run(db, f"SELECT seq, data FROM {table}_chunk WHERE name = ? ORDER BY seq;", name)
    return [(seq, len(data)) for seq, data in rows]


# -- chunks and ranges ----------------------------------------------------------------------
def test_an_upload_is_kept_in_rows_of_chunk_size(store, raw, table):
    data = _data(2 * SMALL + 500)
    name = store.save(data, "photo.jpg", table="person", field="image")
    assert chunk_rows(raw, table, name) == [(0, SMALL), (1, SMALL), (2, 500)]
    info = store.info(name)
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(store.read(name)) == data


def test_an_empty_upload_has_no_chunk_row(store, raw, table):
    name = store.save(b"", "empty.txt")
    assert chunk_rows(raw, table, name) == []
    assert (store.info(name).size, b"".join(store.read(name))) == (0, b"")


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 1), (999, 1001), (1000, 2000), (1, 4999), (2500, None), (4999, None), (4000, 9000),
     (5000, None), (6000, 7000), (3000, 3000)],
)  # fmt: skip
def test_ranges_across_chunks(store, start, end):
    data = _data(5000)
    name = store.save(data, "r.bin")
    assert b"".join(store.read(name, start, end)) == data[start:end]


def test_chunks_larger_than_a_read_are_yielded_in_pieces(tmp_path, table):
    data = _data(2 * CHUNK + 3)
    url = f"sqlite://{tmp_path}/big.sqlite"
    with contextlib.closing(open_store(url, table=table, chunk_size=2 * CHUNK)) as store:
        name = store.save(data, "big.bin")
        pieces = list(store.read(name, 1))
    assert max(map(len, pieces)) <= CHUNK and b"".join(pieces) == data[1:]


def test_an_upload_keeps_the_chunk_size_it_was_written_with(url, table):
    data = _data(7000)
    with contextlib.closing(open_store(url, table=table, chunk_size=SMALL)) as store:
        name = store.save(data, "a.bin")
    with contextlib.closing(open_store(url, table=table, chunk_size=4096)) as store:
        assert b"".join(store.read(name, 900, 6100)) == data[900:6100]
        other = store.save(data, "b.bin")
        assert b"".join(store.read(other)) == data


def test_a_name_differing_in_case_is_another_name(store):
    name = store.save(b"kept", "a.txt")
    parts = name.split(".")
    other = ".".join([*parts[:2], parts[2].upper(), *parts[3:]])
    assert other != name
    with pytest.raises(UploadNotFound):
        store.info(other)
    assert store.delete(other) is False
    assert b"".join(store.read(name)) == b"kept"


def test_a_read_can_feed_a_write_of_the_same_store(store):
    data = _data(5 * SMALL + 1)
    first = store.save(data, "a.bin")
    copy = new_name("a.bin")
    assert store.put(copy, store.read(first)).sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(store.read(copy)) == data


def test_sqlite_serves_a_read_while_an_upload_is_written(tmp_path, table):
    """WAL mode: the reader never waits for the writer's lock (held until it commits)."""
    url = f"sqlite://{tmp_path}/wal.sqlite"
    data = _data(3 * CHUNK)
    with contextlib.closing(open_store(url, table=table)) as store:
        kept = store.save(data, "kept.bin")
        paused, go_on = threading.Event(), threading.Event()

        def slow_source() -> Iterator[bytes]:
            yield data  # more than SQLite's page cache: the writer has spilled to the file
            paused.set()
            go_on.wait(GUARD)
            yield b"end"

        writer = threading.Thread(target=store.save, args=(slow_source(), "slow.bin"))
        writer.start()
        try:
            assert paused.wait(GUARD)
            with contextlib.closing(open_store(url, table=table, connect_timeout=0.5)) as other:
                assert b"".join(other.read(kept)) == data
                assert {info.name for info in other.names()} == {kept}
        finally:
            go_on.set()
            writer.join(GUARD)
        assert len(list(store.names())) == 2


def test_an_apps_table_is_never_taken_for_the_store(url, raw, table):
    raw.define_table(table, Field("name"), Field("email"), migrate=True)
    raw.commit()
    store = open_store(url, table=table)
    with contextlib.closing(store), pytest.raises(ConfigError, match="not an upload table"):
        store.save(b"x", "x.txt")
    assert sql.columns(raw, table) == {"id", "name", "email"}


# -- opening an existing store only ---------------------------------------------------------
def test_without_create_a_missing_sqlite_file_is_not_found(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/none.sqlite?create=false")
    with contextlib.closing(store), pytest.raises(StoreNotFound, match="does not exist"):
        store.info(new_name("a.txt"))
    assert not os.path.exists(tmp_path / "none.sqlite")


def test_without_create_missing_tables_are_not_found_and_not_made(url, table, raw):
    assert sql.columns(raw, table) is None  # the database (file) is there
    store = open_store(url, table=table, create=False)
    with contextlib.closing(store), pytest.raises(StoreNotFound, match=f"no tables {table}"):
        list(store.names())
    assert sql.columns(raw, table) is None and sql.columns(raw, f"{table}_chunk") is None


def test_without_create_an_existing_store_is_read(url, table):
    with contextlib.closing(open_store(url, table=table)) as store:
        name = store.save(b"kept", "k.txt")
    with contextlib.closing(open_store(url, table=table, create=False)) as store:
        assert b"".join(store.read(name)) == b"kept"
        assert store.delete(name)


# -- all or nothing ---------------------------------------------------------------------------
def _failing(data: bytes, after: int) -> Iterator[bytes]:
    yield data[:after]
    raise OSError("the client went away")


def test_a_failing_source_leaves_nothing(store, raw, table):
    name = new_name("half.bin")
    with pytest.raises(OSError, match="went away"):
        store.put(name, _failing(_data(10 * SMALL), 5 * SMALL))
    with pytest.raises(UploadNotFound):
        store.info(name)
    assert chunk_rows(raw, table, name) == []
    assert name not in {info.name for info in store.names()}


def test_a_failed_replace_keeps_the_old_upload(store, raw, table):
    """The old rows are deleted in the write's transaction: rolled back with it."""
    old = _data(3 * SMALL, "old")
    name = store.save(old, "kept.bin")
    with pytest.raises(OSError, match="went away"):
        store.put(name, _failing(_data(10 * SMALL), 4 * SMALL))
    assert b"".join(store.read(name)) == old
    assert [length for _, length in chunk_rows(raw, table, name)] == [SMALL] * 3


def test_the_size_limit_mid_stream_leaves_nothing(store, raw, table):
    with pytest.raises(UploadTooLarge):
        store.save(iter([_data(SMALL)] * 5), "big.bin", table="t", field="f", max_size=3 * SMALL)
    assert list(store.names("t.f.")) == []
    assert run(raw, f"SELECT COUNT(*) FROM {table}_chunk;")[0][0] == 0


# -- corruption -----------------------------------------------------------------------------
def test_a_missing_chunk_row_is_corrupt(store, raw, table):
    data = _data(5 * SMALL)
    name = store.save(data, "c.bin")
    run(raw, f"DELETE FROM {table}_chunk WHERE name = ? AND seq = 3;", name)
    assert b"".join(store.read(name, 0, 3 * SMALL)) == data[: 3 * SMALL]  # before the hole
    with pytest.raises(UploadCorrupt, match="chunk 3"):
        b"".join(store.read(name))
    with pytest.raises(UploadCorrupt, match="chunk 3"):
        b"".join(store.read(name, 3 * SMALL + 10))


def test_a_cut_chunk_row_is_corrupt(store, raw, table):
    name = store.save(_data(3 * SMALL), "c.bin")
    run(raw, f"UPDATE {table}_chunk SET data = ? WHERE name = ? AND seq = 1;", b"short", name)
    with pytest.raises(UploadCorrupt, match="chunk 1"):
        b"".join(store.read(name))


def test_a_forged_upload_row_is_corrupt_and_a_bad_name_never_listed(store, raw, table):
    name = store.save(_data(3 * SMALL), "c.bin")
    run(raw, f"UPDATE {table} SET chunk_size = 0 WHERE name = ?;", name)
    with pytest.raises(UploadCorrupt, match="chunk_size 0"):
        store.read(name)
    run(raw, f"UPDATE {table} SET size = NULL, chunk_size = NULL WHERE name = ?;", name)
    with pytest.raises(UploadCorrupt, match="size -1"):
        store.read(name)
    columns = "(name, size, sha256, chunk_size, created)"
    run(raw, f"INSERT INTO {table} {columns} VALUES (?, 1, '', 1, 0);", "../../etc/passwd")
    assert {info.name for info in store.names()} == {name}


def test_an_upload_deleted_while_read_is_not_found(store):
    name = store.save(_data(4 * CHUNK), "d.bin")
    reading = store.read(name)
    next(reading)
    assert store.delete(name)
    with pytest.raises(UploadNotFound, match="deleted while it was read"):
        b"".join(reading)


# -- web2py's single-blob layout --------------------------------------------------------------
@pytest.fixture
def web2py_app(raw, table) -> tuple[str, dict[str, bytes]]:
    """A web2py-style table ``<table>_person`` with ``Field("image", "upload",
    uploadfield="image_data")``, rows inserted through pydal; its name and {name: bytes}."""
    person = f"{table}_person"
    raw.define_table(
        person,
        Field("image", "upload", uploadfield="image_data"),
        Field("image_data", "blob"),
        migrate=True,
    )
    files = {
        new_name("a é.png", person, "image"): _data(3 * SMALL + 7, "a"),
        new_name("empty.txt", person, "image"): b"",
        new_name("b.png", person, "image"): b"\x00\xff=" * 11,
    }
    for name, data in files.items():
        raw[person].insert(image=name, image_data=data)
    raw[person].insert(image=new_name("gone.png", person, "image"), image_data=None)
    raw.commit()
    return person, files


def test_blobs_are_read_from_the_apps_table(url, table, web2py_app, raw):
    person, files = web2py_app
    blobs = f"{person}.image:image_data"
    with contextlib.closing(open_store(url, table=table, blobs=blobs)) as store:
        for name, data in files.items():
            assert store.info(name).size == len(data)
            assert b"".join(store.read(name)) == data
            assert b"".join(store.read(name, 5, 2000)) == data[5:2000]
            assert store.local_path(name) is None
        assert {info.name: info.size for info in store.names(f"{person}.")} == {
            name: len(data) for name, data in files.items()
        }
        assert list(store.names("other.")) == []
        first = next(iter(files))
        assert [info.name for info in store.names(first[:60])] == [first]
        assert store.delete(first) is False  # the app's row is the app's
        assert b"".join(store.read(first)) == files[first]
        gone = new_name("gone.png", person, "image")
        with pytest.raises(UploadNotFound):
            store.info(gone)


def test_a_blob_without_a_value_is_not_found(url, table, web2py_app, raw):
    person, _ = web2py_app
    (name,) = run(raw, f"SELECT image FROM {person} WHERE image_data IS NULL;")[0]
    blobs = f"{person}.image:image_data"
    with (
        contextlib.closing(open_store(url, table=table, blobs=blobs)) as s,
        pytest.raises(UploadNotFound),
    ):
        s.read(name)


def test_a_migrated_blob_is_listed_once_and_read_from_the_chunks(url, table, web2py_app, raw):
    person, files = web2py_app
    with contextlib.closing(open_store(url, table=table, blobs=f"{person}.image:image_data")) as s:
        name = next(iter(files))
        info = s.put(name, s.read(name))
        assert info.sha256 == hashlib.sha256(files[name]).hexdigest()
        listed = [each for each in s.names(f"{person}.") if each.name == name]
        assert listed == [info]
        assert s.delete(name) is True  # the copy; the app's blob stays
        assert b"".join(s.read(name)) == files[name]


def test_a_blob_that_is_not_base64_is_corrupt(url, table, web2py_app, raw):
    person, files = web2py_app
    name = next(iter(files))
    run(raw, f"UPDATE {person} SET image_data = ? WHERE image = ?;", b"not base 64!", name)
    blobs = f"{person}.image:image_data"
    with (
        contextlib.closing(open_store(url, table=table, blobs=blobs)) as s,
        pytest.raises(UploadCorrupt, match="base 64"),
    ):
        s.read(name)


def test_blobs_of_a_missing_table_or_column_are_a_config_error(url, table, web2py_app):
    person, files = web2py_app
    for blobs in (f"{person}.image:nothing", "nobody.image:image_data"):
        store = open_store(url, table=table, blobs=blobs)
        with contextlib.closing(store), pytest.raises(ConfigError, match="has no column"):
            store.info(next(iter(files)))


def test_without_create_blobs_are_read_with_no_tables_of_the_store(url, table, web2py_app, raw):
    person, files = web2py_app
    blobs = f"{person}.image:image_data"
    with contextlib.closing(open_store(url, table=table, blobs=blobs, create=False)) as store:
        assert {info.name for info in store.names()} == set(files)
        name = next(iter(files))
        assert b"".join(store.read(name)) == files[name]
        assert store.delete(name) is False
        with pytest.raises(StoreNotFound, match="create=true"):
            store.save(b"x", "x.txt")
    assert sql.columns(raw, table) is None


@pytest.mark.parametrize(
    "blobs", ["person.image", "person:image_data", "a.b:c;drop", "1a.b:c", "a.b.c:d"]
)
def test_bad_blobs_options_are_refused(tmp_path, blobs):
    with pytest.raises(ConfigError, match="blobs="):
        open_store(f"sqlite://{tmp_path}/x.sqlite", blobs=blobs)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"chunk_size": 0}, "chunk_size"), ({"chunk_size": 3 << 20}, "chunk_size"),
     ({"table": "a b"}, "table="), ({"colour": "red"}, "unknown option")],
)  # fmt: skip
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        open_store(f"sqlite://{tmp_path}/x.sqlite", **options)


def test_options_come_from_the_url(tmp_path):
    url = f"sqlite://{tmp_path}/x.sqlite?table=files&chunk_size=4096&blobs=a.b:c"
    store = open_store(url)
    assert (store.table, store.chunk_table, store.chunk_size) == ("files", "files_chunk", 4096)
    assert store.blobs.layouts == {("a", "b"): "c"}


# -- private servers stopped or killed --------------------------------------------------------
def _within(call):
    """``call()``'s result or exception, from a thread given :data:`GUARD` seconds."""
    outcome: list = []

    def target():
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert outcome, f"still waiting after {GUARD} s"
    return outcome[0]


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
        failure = _within(lambda: store.put(name, _interrupted(data, 300_000, stop)))
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
            failure = _within(lambda: b"".join(reading))
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
            failure = _within(lambda: b"".join(reading))
            assert isinstance(failure, StoreUnavailable), failure
            assert "maria-secret" not in str(failure)
        finally:
            private_mariadb.stop()
            private_mariadb.start()  # a new server for the tests after this one
