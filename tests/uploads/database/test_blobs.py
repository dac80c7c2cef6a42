"""The database upload store reading web2py's single-blob layout (``blobs=``): an app's
table whose upload field names the file and whose blob field holds it."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from pydal import Field

from scalekit.connect import sql
from scalekit.core.errors import ConfigError, StoreNotFound
from scalekit.uploads import UploadCorrupt, UploadNotFound, new_name, open_store
from tests.uploads.database.rows import SMALL, run
from tests.uploads.database.rows import data as _data


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
