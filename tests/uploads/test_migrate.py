"""``scalekit.uploads.migrate``: every upload copied under its name and verified, from a
scalekit folder and from a web2py uploads folder, to SQLite, PostgreSQL and S3; re-runs
skip what is verified, repair what is not, and complete a migration that was SIGKILLed."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydal import DAL, Field

from scalekit.uploads import UploadStore, open_store, original_filename
from scalekit.uploads.migrate import migrate
from scalekit.uploads.stores import CHUNK
from tests.servers import S3Server
from tests.uploads.migrating import SIZES, contents, filled, payload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path) -> UploadStore:
    store = open_store(f"file://{tmp_path}/source", fsync=False)
    yield store
    store.close()


@pytest.fixture
def sqlite(tmp_path) -> UploadStore:
    store = open_store(f"sqlite://{tmp_path}/uploads.sqlite")
    yield store
    store.close()


def test_every_upload_is_copied_under_its_name_and_the_source_kept(folder, sqlite):
    before = filled(folder)
    done = migrate(folder, sqlite)
    assert done.ok, done.failures
    assert (done.copied, done.skipped, done.failed) == (len(SIZES), 0, 0)
    assert done.bytes == sum(SIZES.values())
    assert contents(sqlite) == before
    assert contents(folder) == before
    assert sorted(map(original_filename, before)) == sorted(n.replace(" ", "_") for n in SIZES)


def test_a_second_run_skips_the_verified_copies(folder, sqlite):
    filled(folder)
    migrate(folder, sqlite)
    again = migrate(folder, sqlite)
    assert (again.copied, again.skipped, again.failed, again.bytes) == (0, len(SIZES), 0, 0)


def test_prefix_copies_only_those_names(folder, sqlite):
    filled(folder)
    other = folder.save(b"other", "x.txt", table="thing", field="file")
    done = migrate(folder, sqlite, prefix="thing.file.")
    assert (done.copied, done.skipped) == (1, 0)
    assert list(contents(sqlite)) == [other]


def test_move_deletes_each_source_once_its_copy_is_verified(folder, sqlite):
    before = filled(folder)
    done = migrate(folder, sqlite, move=True)
    assert done.ok and done.deleted == len(SIZES)
    assert contents(folder) == {}
    assert contents(sqlite) == before


def test_move_after_a_copy_run_deletes_the_sources_already_copied(folder, sqlite):
    """The copies already there are read back (not taken on the checksum SQLite recorded),
    then their sources deleted."""
    before = filled(folder)
    migrate(folder, sqlite)
    done = migrate(folder, sqlite, move=True)
    assert (done.copied, done.skipped, done.deleted) == (0, len(SIZES), len(SIZES))
    assert contents(folder) == {} and contents(sqlite) == before


def test_move_reads_back_a_copy_damaged_since_and_copies_it_again(folder, sqlite):
    """A copy damaged after it was verified keeps the checksum its store recorded: a
    ``move`` re-run reads it back, finds it differs, copies it again and deletes its
    source only once that copy is read back and matched."""
    before = filled(folder)
    migrate(folder, sqlite)
    name = next(name for name, data in before.items() if len(data) == 3000)
    _flip_a_stored_byte(sqlite, name)
    assert sqlite.info(name).sha256 == hashlib.sha256(before[name]).hexdigest()
    done = migrate(folder, sqlite, move=True)
    assert done.ok and (done.copied, done.skipped) == (1, len(SIZES) - 1)
    assert done.deleted == len(SIZES) and done.bytes == 3000
    assert contents(sqlite) == before and contents(folder) == {}


def test_move_keeps_the_source_of_a_damaged_copy_it_cannot_copy_again(folder, sqlite):
    """The same, the destination now faulty (it stores other bytes than it is given): the
    damaged copy is not deleted on its recorded checksum, the copy made again fails its
    read back, and the source is kept; the sound copies' sources are deleted."""
    before = filled(folder)
    migrate(folder, sqlite)
    name = next(name for name, data in before.items() if len(data) == 3000)
    _flip_a_stored_byte(sqlite, name)
    _make_faulty(sqlite)
    done = migrate(folder, sqlite, move=True)
    assert not done.ok and (done.copied, done.skipped, done.failed) == (0, len(SIZES) - 1, 1)
    assert done.failures[0][0] == name and "the copy reads back as" in done.failures[0][1]
    assert done.deleted == len(SIZES) - 1
    assert contents(folder) == {name: before[name]}
    assert name not in contents(sqlite)


def test_a_web2py_uploads_folder_is_a_source(tmp_path, sqlite):
    """web2py's flat folder: ``<table>.<field>.<16 hex>.<base 16 file name>.<ext>``, and
    ``uploadseparate``'s ``<table>.<field>/<key[:2]>/`` beside it."""
    uploads = tmp_path / "web2py" / "applications" / "app" / "uploads"
    uploads.mkdir(parents=True)
    encoded = base64.b16encode("photo d'été.jpg".encode()).decode().lower()
    flat = f"person.image.a1b2c3d4e5f60718.{encoded}.jpg"
    (uploads / flat).write_bytes(payload(5000, "flat"))
    separate = f"doc.file.0123456789abcdef.{base64.b16encode(b'cv.pdf').decode().lower()}.pdf"
    (uploads / "doc.file" / "01").mkdir(parents=True)
    (uploads / "doc.file" / "01" / separate).write_bytes(payload(CHUNK * 2 + 7, "sep"))
    (uploads / "notes.txt").write_text("not an upload")  # no upload name: left alone
    source = open_store(f"file://{uploads}")
    done = migrate(source, sqlite)
    assert done.ok and done.copied == 2
    assert contents(sqlite) == {
        flat: payload(5000, "flat"),
        separate: payload(CHUNK * 2 + 7, "sep"),
    }
    assert original_filename(flat) == "photo_d_été.jpg"
    assert (uploads / "notes.txt").exists() and (uploads / flat).exists()


def test_a_copy_corrupted_at_the_destination_is_found_and_copied_again(folder, tmp_path):
    """A folder destination records no checksum: a re-run hashes its copies again."""
    before = filled(folder)
    destination = open_store(f"file://{tmp_path}/destination")
    migrate(folder, destination)
    name = next(name for name, data in before.items() if len(data) == CHUNK + 1)
    path = destination.local_path(name)
    with open(path, "r+b") as file:  # same size, one byte changed
        file.seek(CHUNK)
        file.write(bytes([before[name][CHUNK] ^ 0xFF]))
    again = migrate(folder, destination)
    assert again.ok and (again.copied, again.skipped) == (1, len(SIZES) - 1)
    assert contents(destination) == before


def test_rehash_finds_a_corrupt_copy_whose_recorded_checksum_still_matches(folder, sqlite):
    """SQLite records each upload's SHA-256: only ``rehash`` reads the bytes again."""
    before = filled(folder)
    migrate(folder, sqlite)
    name = next(name for name, data in before.items() if len(data) == 3000)
    _flip_a_stored_byte(sqlite, name)
    assert b"".join(sqlite.read(name)) != before[name]
    assert migrate(folder, sqlite).copied == 0  # the recorded checksum is trusted
    again = migrate(folder, sqlite, rehash=True)
    assert again.ok and (again.copied, again.skipped) == (1, len(SIZES) - 1)
    assert contents(sqlite) == before


def test_a_corrupt_source_is_not_copied_nor_moved(tmp_path, folder):
    """A source that recorded a checksum its bytes no longer match: counted as failed,
    nothing left at the destination, the source kept even with ``move``."""
    source = open_store(f"sqlite://{tmp_path}/source.sqlite")
    before = filled(source)
    name = next(name for name, data in before.items() if len(data) == 3000)
    _flip_a_stored_byte(source, name)
    done = migrate(source, folder, move=True)
    assert not done.ok and done.failed == 1 and done.failures[0][0] == name
    assert "SHA-256" in done.failures[0][1]
    assert name not in contents(folder)
    assert name in {info.name for info in source.names()}
    assert done.deleted == len(SIZES) - 1


def _flip_a_stored_byte(store: UploadStore, name: str) -> None:
    """Change one byte of an upload's first chunk row in a SQLite store, its size kept (its
    chunk rows keyed by its name, or by the id of its write)."""
    with sqlite3.connect(store.url.removeprefix("sqlite://")) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(scalekit_upload_chunk)")}
        key = "name" if "name" in columns else "write_id"
        (value,) = connection.execute(
            f"SELECT {key} FROM scalekit_upload WHERE name = ?", (name,)
        ).fetchone()
        rowid, data = connection.execute(
            f"SELECT rowid, data FROM scalekit_upload_chunk WHERE {key} = ? ORDER BY seq LIMIT 1",
            (value,),
        ).fetchone()
        connection.execute(
            "UPDATE scalekit_upload_chunk SET data = ? WHERE rowid = ?", (_flipped(data), rowid)
        )


def _flipped(data: bytes | str) -> bytes | str:
    """``data`` with its first byte changed (pydal may keep a blob base 64 encoded)."""
    if isinstance(data, str):
        raw = bytearray(base64.b64decode(data))
        raw[0] ^= 0xFF
        return base64.b64encode(bytes(raw)).decode()
    return bytes([data[0] ^ 0xFF]) + data[1:]


def test_a_sigkilled_migration_run_again_completes_every_upload_verified(folder, tmp_path):
    """The CLI killed after a few copies (mid-write of the next): what the destination shows
    is whole, and a second run copies the rest and exits 0."""
    sizes = {f"f{number}.bin": CHUNK * 2 + number for number in range(24)}
    before = filled(folder, sizes)
    destination = f"sqlite://{tmp_path}/destination.sqlite"
    command = [sys.executable, "-m", "scalekit", "uploads", "migrate", "-v",
               "--from", folder.url, "--to", destination]  # fmt: skip
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=environ, stderr=subprocess.PIPE, text=True)
    copied = 0
    for line in process.stderr:
        copied += " copied to " in line
        if copied == 5:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    store = open_store(destination)
    shown = contents(store)
    assert 5 <= len(shown) < len(sizes)
    assert all(before[name] == data for name, data in shown.items())
    again = subprocess.run(
        command, env=environ, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(sizes) - len(shown)} copied, {len(shown)} skipped" in again.stdout
    assert contents(store) == before
    store.close()


@pytest.fixture(params=["postgres", "mysql", "s3"])
def server_store(request) -> UploadStore:
    """A fresh store on a real server: chunk tables of their own, or a fresh bucket."""
    table = f"migrate_{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        store = open_store(request.getfixturevalue("s3_url"), part_size=5 * 1024 * 1024)
    else:
        store = open_store(request.getfixturevalue(f"{request.param}_url"), table=table)
    yield store
    store.close()


def test_a_folder_migrated_to_a_server_store(folder, server_store):
    """Also a file larger than an S3 part (a multipart upload), three uploads copied at a
    time; a ``move`` re-run reads each copy back (the server store's recorded checksum is
    not enough to delete a source) and deletes the sources."""
    before = filled(folder, {**SIZES, "big.bin": 5 * 1024 * 1024 + 3})
    done = migrate(folder, server_store, jobs=3)
    assert done.ok, done.failures
    assert done.copied == len(SIZES) + 1
    assert contents(server_store) == before
    again = migrate(folder, server_store, move=True)
    assert (again.copied, again.skipped, again.deleted) == (0, len(SIZES) + 1, len(SIZES) + 1)
    assert contents(folder) == {}


def test_web2py_single_blob_uploads_are_a_source(tmp_path, folder):
    """web2py's ``Field("image", "upload", uploadfield="image_data")``: the file in a blob
    of the record; read through ``blobs=``, copied to a folder, the record left alone."""
    path = tmp_path / "storage.sqlite"
    db = DAL(f"sqlite://{path}", folder=str(tmp_path))
    db.define_table("person", Field("image", "upload", uploadfield="image_data"),
                    Field("image_data", "blob"))  # fmt: skip
    name = f"person.image.a1b2c3d4e5f60718.{base64.b16encode(b'me.png').decode().lower()}.png"
    db.person.insert(image=name, image_data=payload(70_000, "blob"))
    db.commit()
    source = open_store(f"sqlite://{path}?blobs=person.image:image_data")
    done = migrate(source, folder, move=True)
    assert done.ok and done.copied == 1
    assert contents(folder) == {name: payload(70_000, "blob")}
    assert (done.deleted, done.undeleted) == (0, 1)  # the app's table is never changed
    assert "1 left at the source (it did not delete them)" in done.summary()
    assert db(db.person).count() == 1
    db.close()
    source.close()


def test_a_destination_killed_mid_run_stops_it_and_a_rerun_completes(folder):
    """A private S3 server killed after the second copy: the run stops (the sources of
    the verified copies moved, the rest kept), and once it is back a re-run completes."""
    before = filled(folder)
    with S3Server().running() as server:
        url = server.url(server.create_bucket("migrate-stop"), connect_timeout="2")
        destination = open_store(url)

        def kill_after_two(done):
            if done.copied == 2:
                server.kill()

        done = migrate(folder, destination, move=True, progress=kill_after_two)
        assert not done.ok and done.stopped is not None
        assert "s3://scalekit-test:***@migrate-stop" in done.stopped
        assert server.secret_key not in done.stopped
        assert (done.copied, done.deleted, done.failed) == (2, 2, 0)
        left = contents(folder)
        assert len(left) == len(SIZES) - 2 and left.items() <= before.items()
        server.restart()  # empty: moto keeps nothing
        server.create_bucket("migrate-stop")
        again = migrate(folder, destination, move=True)
        assert again.ok and again.copied == len(SIZES) - 2
        assert contents(destination) == left and contents(folder) == {}
        destination.close()


def test_uploads_deleted_from_the_source_meanwhile_are_gone_not_failed(tmp_path, folder):
    """The app deletes records (and their uploads) while the migration runs: nothing to
    copy, not a failure."""
    source = open_store(f"sqlite://{tmp_path}/source.sqlite")
    before = filled(source)

    def app_deletes_the_rest(done):
        if done.copied == 1:
            for name in before:
                if name not in contents(folder):
                    source.delete(name)

    done = migrate(source, folder, progress=app_deletes_the_rest)
    assert done.ok and (done.copied, done.vanished, done.failed) == (1, len(SIZES) - 1, 0)
    assert f"{len(SIZES) - 1} gone from the source" in done.summary()
    source.close()


def test_a_large_upload_is_streamed_not_held_in_memory(folder, sqlite):
    """128 MiB copied, read back and hashed twice: the process grows by less than half."""
    block = payload(CHUNK, "large")
    name = folder.save((block for _ in range(128)), "large.bin", table="doc", field="file")
    with open("/proc/self/clear_refs", "w") as refs:  # peak RSS = current RSS from now
        refs.write("5")
    before = _memory("VmRSS")
    done = migrate(folder, sqlite)
    growth_mib = (_memory("VmHWM") - before) / 1024
    assert done.ok and done.bytes == 128 * CHUNK
    assert growth_mib < 64, f"grew by {growth_mib:.0f} MiB"
    assert sqlite.info(name).sha256 == hashlib.sha256(block * 128).hexdigest()


def _memory(field: str) -> int:
    """A line of /proc/self/status in KiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def test_a_destination_that_stores_other_bytes_is_caught_by_the_read_back(folder, sqlite):
    """A faulty destination (a trigger replaces each chunk stored by random bytes of its
    length: the checksum it records is still the one written): every such copy fails its
    verification, is removed from the destination, and its source is kept under move."""
    before = filled(folder)
    sqlite.delete(sqlite.save(b"x", "x.txt"))  # the tables exist
    _make_faulty(sqlite)
    done = migrate(folder, sqlite, move=True)
    empty = next(name for name, data in before.items() if not data)
    assert (done.copied, done.failed, done.deleted) == (1, len(SIZES) - 1, 1)
    assert all("the copy reads back as" in why for _, why in done.failures)
    assert contents(sqlite) == {empty: b""}
    assert contents(folder) == {k: v for k, v in before.items() if k != empty}


def _make_faulty(store: UploadStore) -> None:
    """A trigger in a SQLite store replacing each chunk stored by random bytes of its
    length (the checksum recorded is still the one written)."""
    with sqlite3.connect(store.url.removeprefix("sqlite://")) as connection:
        connection.execute(
            "CREATE TRIGGER faulty AFTER INSERT ON scalekit_upload_chunk BEGIN UPDATE "
            "scalekit_upload_chunk SET data = randomblob(length(data)) WHERE rowid = NEW.rowid;"
            " END;"
        )
