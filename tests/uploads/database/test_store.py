"""The database upload store on SQLite, PostgreSQL and MariaDB: what is its own beside the
conformance suite. Chunk rows and ranges across them, a paused upload blocking no other,
a failing source or a killed writer leaving nothing visible (and the leftovers removed),
corruption (a chunk row missing or cut), options. Also: ``test_blobs.py`` (web2py's
single-blob layout), ``test_servers.py`` (private servers frozen or killed)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from pydal import Field

from scalekit.connect import sql
from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.testing.uploads import stalled_writer
from scalekit.uploads import UploadCorrupt, UploadNotFound, UploadTooLarge, new_name, open_store
from scalekit.uploads.stores import CHUNK
from tests.uploads.database.rows import GUARD, OF_UPLOAD, SMALL, all_chunk_rows, chunk_rows, run
from tests.uploads.database.rows import data as _data


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


def test_a_paused_upload_blocks_no_other_write_on_sqlite(tmp_path, table):
    """No transaction is held while the source is slow (a client sending its body): another
    handle saves, reads, lists and deletes on the same file meanwhile, its lock wait short."""
    url = f"sqlite://{tmp_path}/wal.sqlite"
    data = _data(3 * CHUNK)
    with contextlib.closing(open_store(url, table=table)) as store:
        kept = store.save(data, "kept.bin")
        paused, go_on = threading.Event(), threading.Event()

        def slow_source() -> Iterator[bytes]:
            yield data  # past a batch: some chunk rows are written before the pause
            paused.set()
            go_on.wait(GUARD)
            yield b"end"

        writer = threading.Thread(target=store.save, args=(slow_source(), "slow.bin"))
        writer.start()
        try:
            assert paused.wait(GUARD)
            with contextlib.closing(open_store(url, table=table, connect_timeout=0.5)) as other:
                assert b"".join(other.read(kept)) == data
                small = other.save(b"small", "x.txt")
                assert {info.name for info in other.names()} == {kept, small}
                assert other.delete(small)
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
def _failing(data: bytes, after: int, error: Exception | None = None) -> Iterator[bytes]:
    yield data[:after]
    raise error or OSError("the client went away")


@pytest.mark.parametrize(
    "error", [OSError("the client went away"), StoreUnavailable("the source store went away")]
)
def test_a_failing_source_leaves_nothing(store, raw, table, error):
    """Its first batches of chunk rows were committed (no upload's): it deletes them, also
    when the source is a store that stopped (this store's server answers)."""
    name = new_name("half.bin")
    with pytest.raises(type(error), match="went away"):
        store.put(name, _failing(_data(30 * SMALL), 20 * SMALL, error))
    with pytest.raises(UploadNotFound):
        store.info(name)
    assert all_chunk_rows(raw, table) == 0
    assert name not in {info.name for info in store.names()}


def test_a_failed_replace_keeps_the_old_upload(store, raw, table):
    """The old upload row is replaced only once the new upload is complete."""
    old = _data(3 * SMALL, "old")
    name = store.save(old, "kept.bin")
    with pytest.raises(OSError, match="went away"):
        store.put(name, _failing(_data(30 * SMALL), 20 * SMALL))
    assert b"".join(store.read(name)) == old
    assert [length for _, length in chunk_rows(raw, table, name)] == [SMALL] * 3
    assert all_chunk_rows(raw, table) == 3


def test_a_replace_and_a_delete_leave_no_chunk_rows_behind(store, raw, table):
    name = store.save(_data(20 * SMALL, "old"), "r.bin")
    store.put(name, _data(2 * SMALL, "new"))
    assert b"".join(store.read(name)) == _data(2 * SMALL, "new")
    assert all_chunk_rows(raw, table) == 2
    assert store.delete(name)
    assert all_chunk_rows(raw, table) == 0


def test_the_size_limit_mid_stream_leaves_nothing(store, raw, table):
    with pytest.raises(UploadTooLarge):
        source = iter([_data(SMALL)] * 30)
        store.save(source, "big.bin", table="t", field="f", max_size=20 * SMALL)
    assert list(store.names("t.f.")) == []
    assert all_chunk_rows(raw, table) == 0


# -- leftovers: the chunk rows of writes that never published ---------------------------------
def test_a_killed_writer_leaves_rows_that_remove_leftovers_removes(url, table, raw):
    make = lambda: open_store(url, table=table, chunk_size=SMALL)  # noqa: E731
    with contextlib.closing(make()) as store:
        kept = store.save(_data(3 * SMALL), "kept.bin")
        name = new_name("killed.bin")
        pid = stalled_writer(make, name, size=20 * SMALL)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with pytest.raises(UploadNotFound):
            store.info(name)
        assert [info.name for info in store.names()] == [kept]
        left = all_chunk_rows(raw, table) - 3
        assert left >= 8  # a batch or more was committed before the writer stalled
        assert store.remove_leftovers(time.time() - 3600) == 0  # it wrote just now
        assert store.remove_leftovers(time.time() + 1, dry_run=True) == 1
        assert all_chunk_rows(raw, table) == 3 + left
        assert store.remove_leftovers(time.time() + 1) == 1
        assert all_chunk_rows(raw, table) == 3
        assert b"".join(store.read(kept)) == _data(3 * SMALL)  # an upload's rows are kept


def test_a_write_whose_rows_were_removed_as_leftovers_is_not_stored(store, raw, table):
    """A source stalled past the cutoff of a gc run: its rows went, so it fails."""

    def stalled() -> Iterator[bytes]:
        yield _data(20 * SMALL)
        assert store.remove_leftovers(time.time() + 1) == 1

    name = new_name("stalled.bin")
    with pytest.raises(UploadCorrupt, match="removed before it was complete"):
        store.put(name, stalled())
    with pytest.raises(UploadNotFound):
        store.info(name)
    assert all_chunk_rows(raw, table) == 0


# -- corruption -----------------------------------------------------------------------------
def test_a_missing_chunk_row_is_corrupt(store, raw, table):
    data = _data(5 * SMALL)
    name = store.save(data, "c.bin")
    run(raw, f"DELETE FROM {table}_chunk WHERE seq = 3 AND {OF_UPLOAD.format(table)};", name)
    assert b"".join(store.read(name, 0, 3 * SMALL)) == data[: 3 * SMALL]  # before the hole
    with pytest.raises(UploadCorrupt, match="chunk 3"):
        b"".join(store.read(name))
    with pytest.raises(UploadCorrupt, match="chunk 3"):
        b"".join(store.read(name, 3 * SMALL + 10))


def test_a_cut_chunk_row_is_corrupt(store, raw, table):
    name = store.save(_data(3 * SMALL), "c.bin")
    cut = f"UPDATE {table}_chunk SET data = ? WHERE seq = 1 AND {OF_UPLOAD.format(table)};"
    run(raw, cut, b"short", name)
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
