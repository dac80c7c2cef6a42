"""``scalekit.uploads.migrate``'s checks around the copies: two URLs of one store refused
(a probe that leaves no trace), what a dry run says it did not check, and threads that
close the stores only once every copy is done."""

from __future__ import annotations

import os

import pytest
from pydal import DAL, Field

from scalekit.core.errors import ConfigError
from scalekit.uploads import UploadStore, open_store
from scalekit.uploads.gc import collect
from scalekit.uploads.migrate import migrate
from scalekit.uploads.stores import CHUNK
from scalekit.uploads.stores.files import FileStore
from tests.uploads.migrating import SIZES, contents, filled


@pytest.fixture
def folder(tmp_path) -> UploadStore:
    store = open_store(f"file://{tmp_path}/source", fsync=False)
    yield store
    store.close()


def test_the_same_store_is_refused(folder):
    with pytest.raises(ValueError, match="the same store"):
        migrate(folder, open_store(folder.url))


def test_the_same_store_probe_leaves_no_folder_of_its_own(folder, tmp_path):
    """The probe goes to the folder of the first upload's copy (and is gone); an empty
    source is not probed."""
    filled(folder)
    migrate(folder, open_store(f"file://{tmp_path}/destination"))
    folders = [path for path in (tmp_path / "destination").rglob("*") if path.is_dir()]
    assert {path.name for path in (tmp_path / "destination").iterdir()} == {"person.image"}
    assert all(any(path.iterdir()) for path in folders)
    (tmp_path / "empty").mkdir()
    migrate(open_store(f"file://{tmp_path}/empty"), open_store(f"file://{tmp_path}/b"))
    assert list((tmp_path / "b").iterdir()) == []


class _KeepsProbes(FileStore):
    """A folder whose deletes do nothing: the probe stays, as after a run SIGKILLed
    between writing it and deleting it."""

    def _delete(self, name: str) -> bool:
        return False


def test_a_probe_a_killed_run_left_is_never_migrated_and_gc_removes_it(folder, tmp_path):
    before = filled(folder)
    migrate(folder, _KeepsProbes(tmp_path / "destination", fsync=False))
    destination = open_store(f"file://{tmp_path}/destination")
    (probe,) = set(contents(destination)) - set(before)
    onward = open_store(f"sqlite://{tmp_path}/onward.sqlite")
    assert migrate(destination, onward).copied == len(SIZES)
    assert contents(onward) == before
    db = DAL(f"sqlite://{tmp_path}/app.sqlite", folder=str(tmp_path))
    db.define_table("person", Field("image", "upload"))
    os.utime(destination.local_path(probe), (0, 0))  # the copies are younger than the grace
    collected = collect(destination, db, older_than=3600)
    assert (collected.removed, collected.young, collected.unchecked) == (1, len(SIZES), {})
    assert contents(destination) == before
    db.close()
    onward.close()


class _Watched(FileStore):
    """A folder noting, in order, each write it finished and each close."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[str] = []

    def _write(self, name, source):
        info = super()._write(name, source)
        self.events.append("wrote")
        return info

    def close(self) -> None:
        self.events.append("closed")


def test_threads_close_the_stores_only_once_every_copy_is_done(folder, tmp_path):
    """An S3 store's close ends the clients every thread shares: no thread closes a store
    while another still copies."""
    filled(folder, {f"f{number}.bin": CHUNK + number for number in range(12)})
    destination = _Watched(tmp_path / "destination", fsync=False)
    assert migrate(folder, destination, jobs=3).copied == 12
    assert destination.events.count("wrote") == 13  # and the probe
    assert destination.events[-3:] == ["closed"] * 3


def test_one_folder_under_two_urls_is_refused_before_anything_is_moved(folder, tmp_path):
    """A dry run writes no probe: its summary says the check was not made (its every
    upload "already there" is no sign of a migration done)."""
    before = filled(folder)
    os.symlink(tmp_path / "source", tmp_path / "alias")
    alias = open_store(f"file://{tmp_path}/alias/")
    with pytest.raises(ConfigError, match="the same store"):
        migrate(folder, alias, move=True)
    assert contents(folder) == before
    dry = migrate(folder, alias, move=True, dry_run=True)
    assert dry.skipped == len(SIZES) and dry.deleted == 0
    assert "not checked that the two URLs are two stores" in dry.summary()
    assert contents(folder) == before


def test_a_dry_run_counts_what_would_be_copied_and_writes_nothing(folder, tmp_path):
    before = filled(folder)
    destination = open_store(f"file://{tmp_path}/destination")
    name = next(iter(before))
    destination.put(name, before[name])  # one already there
    done = migrate(folder, destination, move=True, dry_run=True)
    assert (done.copied, done.skipped, done.deleted) == (len(SIZES) - 1, 1, 0)
    assert done.bytes == sum(SIZES.values()) - len(before[name])
    assert f"{len(SIZES) - 1} would be copied, 1 skipped" in done.summary()
    assert "not checked that the two URLs are two stores" in done.summary()
    assert contents(destination) == {name: before[name]} and contents(folder) == before
