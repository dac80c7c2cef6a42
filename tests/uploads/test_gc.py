"""``scalekit.uploads.gc``: the uploads no record holds, older than the grace, removed; the
referenced, the young and those whose table or field the database lacks kept; leftovers of
killed writes removed; the app's database on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydal import DAL, Field

from scalekit.connect import sql
from scalekit.connect.files import TMP_INFIX
from scalekit.core import urls
from scalekit.core.errors import StoreNotFound, StoreUnavailable
from scalekit.uploads import UploadStore, open_store
from scalekit.uploads.gc import DAY, collect

OLD = time.time() - 2 * DAY


@pytest.fixture
def store(tmp_path) -> UploadStore:
    opened = open_store(f"file://{tmp_path}/uploads", fsync=False)
    yield opened
    opened.close()


@pytest.fixture
def app_db(tmp_path) -> DAL:
    """The app's database: ``person.image``, an upload field, and ``person.name``."""
    db = DAL(f"sqlite://{tmp_path}/storage.sqlite", folder=str(tmp_path))
    db.define_table("person", Field("name"), Field("image", "upload"))
    yield db
    db.close()


def aged(store: UploadStore, name: str, when: float = OLD) -> str:
    """Make a folder store's upload look saved at ``when``."""
    os.utime(store.local_path(name), (when, when))
    return name


def saved(store: UploadStore, table: str = "person", field: str = "image", old=True) -> str:
    name = store.save(b"picture bytes", "me.png", table=table, field=field)
    return aged(store, name) if old else name


def names(store: UploadStore) -> set[str]:
    return {info.name for info in store.names()}


def test_old_unreferenced_uploads_are_removed_the_others_kept(store, app_db):
    held = saved(store)
    app_db.person.insert(name="held", image=held)
    app_db.commit()
    orphan = saved(store)
    young = saved(store, old=False)
    other_app = saved(store, table="invoice", field="pdf")
    renamed = saved(store, field="photo")
    done = collect(store, app_db)
    assert names(store) == {held, young, other_app, renamed}
    assert (done.examined, done.removed, done.referenced, done.young) == (5, 1, 1, 1)
    assert done.bytes == len(b"picture bytes")
    assert done.unchecked == {"invoice.pdf": 1, "person.photo": 1}
    summary = done.summary()
    assert "removed 1 (13 bytes)" in summary
    assert "not in the database: invoice.pdf (1), person.photo (1)" in summary
    assert orphan not in names(store)


def test_dry_run_counts_and_removes_nothing(store, app_db):
    orphans = {saved(store) for _ in range(3)}
    done = collect(store, app_db, dry_run=True)
    assert done.removed == 3 and names(store) == orphans
    assert "would remove 3" in done.summary(dry_run=True)


def test_batches_of_names_give_the_same_answer(store, app_db):
    made = [saved(store) for _ in range(7)]
    for name in made[::2]:
        app_db.person.insert(image=name)
    app_db.commit()
    done = collect(store, app_db, batch=2)
    assert (done.removed, done.referenced) == (3, 4)
    assert names(store) == set(made[::2])


def test_older_than_is_the_grace(store, app_db):
    orphan = aged(store, saved(store, old=False), time.time() - 3600)
    assert collect(store, app_db).removed == 0
    assert collect(store, app_db, older_than=1800).removed == 1
    assert orphan not in names(store)


def test_prefix_limits_the_names_examined(store, app_db):
    app_db.define_table("thing", Field("file", "upload"))
    person, thing = saved(store), saved(store, table="thing", field="file")
    done = collect(store, app_db, prefix="thing.file.")
    assert (done.examined, done.removed) == (1, 1)
    assert names(store) == {person}
    assert thing not in names(store)


def test_leftovers_of_killed_writes_are_removed_once_stale(store, app_db):
    kept = saved(store)
    app_db.person.insert(image=kept)
    app_db.commit()
    folder = os.path.dirname(store.local_path(kept))
    stale = os.path.join(folder, f"{uuid.uuid4().hex}{TMP_INFIX}0123456789ab")
    fresh = os.path.join(folder, f"{uuid.uuid4().hex}{TMP_INFIX}ba9876543210")
    for path in (stale, fresh):
        with open(path, "wb") as file:
            file.write(b"half an upl")
    os.utime(stale, (OLD, OLD))
    assert collect(store, app_db, dry_run=True).leftovers == 1
    assert os.path.exists(stale)
    done = collect(store, app_db)
    assert done.leftovers == 1 and done.removed == 0
    assert not os.path.exists(stale) and os.path.exists(fresh)
    assert names(store) == {kept}


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_the_app_database_on_a_server_and_its_store_too(server, request, tmp_path):
    """The cluster's setup: the uploads in chunk tables of the app's own database (on
    PostgreSQL, and on MariaDB whose identifiers are quoted otherwise)."""
    url = request.getfixturevalue(f"{server}_url")
    suffix = uuid.uuid4().hex[:10]
    table = f"gc_person_{suffix}"
    store = open_store(url, table=f"gc_uploads_{suffix}")
    uri, decode = sql.server_uri(urls.parse(url))
    db = DAL(uri, folder=str(tmp_path), decode_credentials=decode)
    try:
        db.define_table(table, Field("image", "upload"))
        held = store.save(b"x" * 1000, "a.png", table=table, field="image")
        orphan = store.save(b"y" * 2000, "b.png", table=table, field="image")
        db[table].insert(image=held)
        db.commit()
        assert collect(store, url).removed == 0  # both younger than a day
        done = collect(store, url, older_than=0)
        assert (done.removed, done.referenced, done.bytes) == (1, 1, 2000)
        assert {info.name for info in store.names(f"{table}.")} == {held}
        assert orphan not in {info.name for info in store.names()}
    finally:
        db[table].drop()
        db.commit()
        db.close()
        store.close()


def test_a_database_that_cannot_be_reached_removes_nothing(store):
    orphan = saved(store)
    with pytest.raises(StoreUnavailable) as failed:
        collect(store, "postgres://app:s3cret-pw@127.0.0.1:1/app")
    assert "postgres://app:***@127.0.0.1:1/app" in str(failed.value)
    assert "s3cret-pw" not in str(failed.value)
    assert names(store) == {orphan}


def test_a_missing_sqlite_database_is_not_created(store, tmp_path):
    saved(store)
    with pytest.raises(StoreNotFound):
        collect(store, f"sqlite://{tmp_path}/typo.sqlite")
    assert not (tmp_path / "typo.sqlite").exists()


def test_a_writer_sigkilled_mid_upload_leaves_a_temp_file_that_gc_removes(store, app_db):
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, store.root], env=ENVIRON)
    try:
        deadline = time.monotonic() + 30
        while not _temp_files(store.root) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _temp_files(store.root), "the writer never started"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert names(store) == set()  # nothing visible
    done = collect(store, app_db, older_than=0)
    assert done.leftovers == 1 and not _temp_files(store.root)


KILLED_WRITER = """
import itertools, sys
from scalekit.uploads import open_store
store = open_store("file://" + sys.argv[1])
store.save(itertools.repeat(b"x" * 65536), "endless.bin", table="person", field="image")
"""
ENVIRON = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _temp_files(root: str) -> list[str]:
    return [name for _, _, files in os.walk(root) for name in files if TMP_INFIX in name]


def test_an_unfinished_s3_multipart_upload_is_aborted(s3_server, s3_url, app_db):
    store = open_store(s3_url)
    client = s3_server.client()
    bucket = s3_url.partition("@")[2].partition("/")[0]
    started = client.create_multipart_upload(Bucket=bucket, Key="person.image.k1.eA==.bin")
    client.upload_part(Bucket=bucket, Key="person.image.k1.eA==.bin", PartNumber=1,
                       UploadId=started["UploadId"], Body=b"x" * 1024)  # fmt: skip
    try:
        assert collect(store, app_db, older_than=0, dry_run=True).leftovers == 1
        assert collect(store, app_db, older_than=0).leftovers == 1
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        store.close()
