"""The file store beyond the conformance suite: web2py's layouts both ways (pydal writes,
the store reads, and the reverse), what someone who can write the folder can plant (symlinks
out of the root, FIFOs, misplaced files), a writer killed mid-write and the clean-up of what
it left, a full disk mid-write, a folder gone, and opening by URL."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import signal
import stat
import time

import pytest
from pydal import DAL, Field

from scalekit.connect.files import STALE_TEMP, TMP_INFIX
from scalekit.core.errors import ConfigError, NotAFolder, StoreNotFound, StoreUnavailable
from scalekit.testing import run_in_children
from scalekit.testing.uploads import generated, stalled_writer
from scalekit.uploads import UploadCorrupt, UploadNotFound, new_name, open_store
from scalekit.uploads.stores import CHUNK
from scalekit.uploads.stores.files import FileStore

#: A name whose shard folder is known: ``upload.file/ab/``.
NAME = "upload.file.ab" + "0" * 30 + ".eC50eHQ=.txt"


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "uploads")


@pytest.fixture
def store(root) -> FileStore:
    return FileStore(root)


def files_under(root: str) -> list[str]:
    """Every file and symlink under ``root``, relative, sorted."""
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, name), root) for name in names]
    return sorted(found)


def temp_files(root: str) -> list[str]:
    return [path for path in files_under(root) if TMP_INFIX in path]


# -- layout and web2py ---------------------------------------------------------------------
def test_uploadseparate_layout_private_files(store, root):
    name = store.save(b"hello", "photo.jpg", table="person", field="image")
    path = os.path.join(root, "person.image", name.split(".")[2][:2], name)
    assert store.local_path(name) == path
    assert files_under(root) == [os.path.relpath(path, root)]
    with open(path, "rb") as file:
        assert file.read() == b"hello"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert store.info(name).modified == os.stat(path).st_mtime
    assert store.info(name).sha256 is None


def test_pydal_reads_what_the_store_wrote_and_the_store_what_pydal_wrote(store, root):
    db = DAL("sqlite:memory")
    db.define_table(
        "person",
        Field("photo", "upload", uploadfolder=root, uploadseparate=True),
        Field("image", "upload", uploadfolder=root),  # web2py's flat layout
    )
    ours = store.save(b"ours", "é photo.png", table="person", field="photo")
    assert db.person.photo.retrieve(ours, nameonly=True)[0] == "é_photo.png"
    with contextlib.closing(db.person.photo.retrieve(ours)[1]) as file:
        assert file.read() == b"ours"
    separate = db.person.photo.store(io.BytesIO(b"separate"), "b.png")
    flat = db.person.image.store(io.BytesIO(b"flat"), "a.jpg")
    assert b"".join(store.read(separate)) == b"separate"
    assert b"".join(store.read(flat)) == b"flat"
    assert store.local_path(flat) == os.path.join(root, flat)
    assert {info.name: info.size for info in store.names()} == {ours: 4, separate: 8, flat: 4}
    assert {info.name for info in store.names("person.image.")} == {flat}
    assert store.delete(flat) and store.delete(separate)
    assert files_under(root) == [os.path.relpath(store.local_path(ours), root)]
    db.close()


def test_a_name_in_both_layouts_is_listed_once_and_deleted_from_both(store, root):
    store.put(NAME, b"new")
    shutil.copy(store.local_path(NAME), os.path.join(root, NAME))
    assert [info.name for info in store.names()] == [NAME]
    assert store.delete(NAME)
    assert files_under(root) == []


def test_a_file_in_a_folder_its_name_does_not_give_is_no_upload(store, root):
    store.put(NAME, b"right place")
    elsewhere = new_name("x.txt")  # its shard is not "zz"
    os.makedirs(os.path.join(root, "upload.file", "zz"))
    with open(os.path.join(root, "upload.file", "zz", elsewhere), "wb") as file:
        file.write(b"misplaced")
    assert [info.name for info in store.names()] == [NAME]
    with pytest.raises(UploadNotFound):
        store.info(elsewhere)


# -- what someone who can write the folder can plant --------------------------------------
@pytest.fixture
def outside(tmp_path) -> str:
    """A folder beside the root holding a file under :data:`NAME` (a secret)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / NAME).write_bytes(b"secret")
    return str(folder)


def assert_not_served(store: FileStore, name: str) -> None:
    with pytest.raises(UploadNotFound):
        store.info(name)
    with pytest.raises(UploadNotFound):
        store.read(name)
    assert store.local_path(name) is None
    assert list(store.names()) == []
    assert store.delete(name) is False


@pytest.mark.parametrize("planted", ["file", "shard", "table_field", "flat"])
def test_a_symlink_out_of_the_root_is_never_followed(store, root, outside, planted):
    target = os.path.join(outside, NAME)
    link = {
        "file": (os.path.join(root, "upload.file", "ab", NAME), target),
        "shard": (os.path.join(root, "upload.file", "ab"), outside),
        "table_field": (os.path.join(root, "upload.file"), os.path.dirname(outside)),
        "flat": (os.path.join(root, NAME), target),
    }[planted]
    if planted == "table_field":  # <outside's parent>/ab/<NAME>: a folder it could reach
        os.makedirs(os.path.join(link[1], "ab"))
        shutil.copy(target, os.path.join(link[1], "ab", NAME))
    os.makedirs(os.path.dirname(link[0]), exist_ok=True)
    os.symlink(link[1], link[0])
    assert_not_served(store, NAME)
    assert store.remove_leftovers(time.time() + STALE_TEMP) == 0
    with open(target, "rb") as file:
        assert file.read() == b"secret"  # untouched
    if planted in ("shard", "table_field"):  # a write does not go through it either
        with pytest.raises(StoreUnavailable, match="a symlink or a file: never followed"):
            store.put(NAME, b"through the link?")
        with open(target, "rb") as file:
            assert file.read() == b"secret"
        assert temp_files(outside) == []


def test_a_fifo_or_a_folder_under_a_name_is_no_upload(store, root):
    shard = os.path.join(root, "upload.file", "ab")
    os.makedirs(shard)
    os.mkfifo(os.path.join(shard, NAME))  # an open would hang without O_NONBLOCK
    assert_not_served(store, NAME)
    os.unlink(os.path.join(shard, NAME))
    os.mkdir(os.path.join(shard, NAME))
    assert_not_served(store, NAME)


# -- crashes and failures -----------------------------------------------------------------
def test_a_killed_writer_leaves_a_temp_file_that_remove_leftovers_removes(store, root):
    store.put(NAME, b"the old bytes")
    pid = stalled_writer(lambda: FileStore(root), NAME)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert b"".join(store.read(NAME)) == b"the old bytes"  # the replace never happened
    assert [info.name for info in store.names()] == [NAME]
    (leftover,) = temp_files(root)
    not_ours = ["a.tmp-old", "notes.tmp-0123456789ab"]
    for other in not_ours:  # a web2py folder's own files: never the store's to remove
        with open(os.path.join(root, other), "wb") as file:
            file.write(b"kept")
        os.utime(os.path.join(root, other), (0, 0))
    assert os.path.getsize(os.path.join(root, leftover)) == 3 * CHUNK
    assert store.remove_leftovers(time.time() - STALE_TEMP) == 0  # too recent to be stale
    hour_ago = time.time() - 3600
    os.utime(os.path.join(root, leftover), (hour_ago, hour_ago))
    assert store.remove_leftovers(time.time() - STALE_TEMP, dry_run=True) == 1
    assert temp_files(root) == sorted([leftover, *not_ours])
    assert store.remove_leftovers(time.time() - STALE_TEMP) == 1
    assert temp_files(root) == not_ours
    assert b"".join(store.read(NAME)) == b"the old bytes"


def test_a_full_disk_mid_write_is_unavailable_and_leaves_nothing(store, root):
    store.put(NAME, b"old")

    def write_past_the_limit(_: int) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (CHUNK, CHUNK))
        with pytest.raises(StoreUnavailable, match=f"upload folder {root}: cannot write"):
            store.put(NAME, generated(3 * CHUNK))
        with pytest.raises(StoreUnavailable):
            store.save(generated(3 * CHUNK), "new.bin")

    assert run_in_children(1, write_past_the_limit) == [0]
    assert temp_files(root) == []
    assert {info.name: info.size for info in store.names()} == {NAME: 3}


def test_a_file_cut_short_while_read_is_corrupt(store):
    store.put(NAME, generated(3 * CHUNK))
    chunks = store.read(NAME)
    os.truncate(store.local_path(NAME), CHUNK + 10)
    with pytest.raises(UploadCorrupt, match=NAME):
        list(chunks)


def test_a_folder_gone_after_opening_is_unavailable_not_empty(store, root):
    store.put(NAME, b"x")
    shutil.rmtree(root)  # an unmounted share
    for call in (lambda: store.info(NAME), lambda: list(store.names()),
                 lambda: store.save(b"x", "x.txt"), lambda: store.delete(NAME)):  # fmt: skip
        with pytest.raises(StoreUnavailable, match=f"upload folder {root}"):
            call()


# -- opening ------------------------------------------------------------------------------
def test_open_by_url_with_options(root, tmp_path):
    store = open_store(f"file://{root}?fsync=false")
    assert isinstance(store, FileStore) and store.fsync is False and os.path.isdir(root)
    assert store.url == f"file://{root}" and repr(store) == f"<FileStore file://{root}>"
    assert open_store(f"file://{root}", fsync=True).fsync is True
    with pytest.raises(StoreNotFound, match="missing"):
        open_store(f"file://{tmp_path}/missing?create=false")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotAFolder):
        open_store(f"file://{tmp_path}/a-file", create=False)
    with pytest.raises(StoreUnavailable, match="a-file is a file, not a folder"):
        open_store(f"file://{tmp_path}/a-file/uploads")
    with pytest.raises(ConfigError, match="fsync"):
        open_store(f"file://{root}?fsync=maybe")
    with pytest.raises(ConfigError, match="folder"):
        FileStore("")


def test_a_relative_url_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("file://data/uploads")
    assert store.root == str(tmp_path / "data" / "uploads")
