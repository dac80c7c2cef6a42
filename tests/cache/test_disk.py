"""The disk backend: files on disk, corrupt files, an unusable folder, options."""

from __future__ import annotations

import logging
import os
import pickle
import re

import pytest

from scalekit.cache import Cache, DiskBackend, open_backend
from scalekit.core.errors import CacheUnavailable, ConfigError

SECRET = "cache-secret-" + "x" * 32


class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


@pytest.fixture
def cache(tmp_path):
    opened = Cache("shop", disk=f"file://{tmp_path}/cache")
    yield opened
    opened.close()


def files(folder) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


def test_one_file_per_key_named_by_hash_and_no_stats_file(cache, tmp_path):
    for n in range(5):
        cache.disk(f"key {n}", lambda n=n: n * 10, 60)
        cache.disk(f"key {n}", lambda: None, 60)
    cache.disk.increment("counter")
    names = files(tmp_path / "cache")
    entries = [name for name in names if re.fullmatch(r"shop/[0-9a-f]{2}/[0-9a-f]{40}", name)]
    assert len(entries) == 6
    assert all(name in entries or name.endswith("/.locks") for name in names)
    assert cache.disk.stats()["server"]["entries"] == 6


def test_the_file_holds_the_key_and_the_value(cache, tmp_path):
    cache.disk.set("user:7", {"name": "Ann"}, 60)
    (path,) = [n for n in files(tmp_path / "cache") if not n.endswith(".locks")]
    raw = (tmp_path / "cache" / path).read_bytes()
    assert raw.startswith(b"SKC1 j ")
    assert raw.endswith(b'user:7{"name":"Ann"}')


def test_a_corrupt_file_is_a_miss_with_a_warning(cache, tmp_path, caplog):
    cache.disk.set("k", "good", 60)
    (path,) = [n for n in files(tmp_path / "cache") if not n.endswith(".locks")]
    (tmp_path / "cache" / path).write_bytes(b"SKC1 j garbage")
    with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
        assert cache.disk("k", lambda: "recomputed", 60) == "recomputed"
    assert "corrupt disk cache file" in caplog.text
    assert cache.disk.get("k") == "recomputed"  # the next write replaced it


def test_a_pickle_is_never_unpickled_unless_opted_in(tmp_path, caplog):
    url = f"file://{tmp_path}/cache"
    unsafe = open_backend(url + "?serializer=pickle", app_name="shop", secret=SECRET)
    unsafe.set("k", Point(3), 60)
    assert unsafe.get("k").value == Point(3)
    with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
        assert open_backend(url, app_name="shop").get("k") is None
    assert "does not unpickle" in caplog.text


def test_an_unwritable_folder_fails_open_by_default(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    cache = Cache("shop", disk=f"file://{blocker}/cache")
    with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
        assert cache.disk("k", lambda: "computed", 60) == "computed"
        assert cache.disk("k", lambda: "again", 60) == "again"
        cache.disk.set("k", "v", 60)
        assert cache.disk.get("k") is None
    assert len(caplog.records) == 1  # logged once per interval
    assert "not-a-folder is a file, not a folder" in caplog.text
    assert cache.disk.stats()["errors"] >= 4
    with pytest.raises(CacheUnavailable):
        cache.disk.increment("n")  # no value to invent


def test_an_unwritable_folder_fails_closed_when_asked(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cache = Cache("shop", disk=f"file://{blocker}/cache", on_error="fail_closed")
    calls = []
    with pytest.raises(CacheUnavailable, match="not-a-folder"):
        cache.disk("k", lambda: calls.append(1), 60)
    assert calls == []
    with pytest.raises(CacheUnavailable):
        cache.disk.set("k", "v", 60)


def test_an_exception_in_f_leaves_no_file_behind(cache, tmp_path):
    def broken():
        raise ValueError("boom")

    for _ in range(2):
        with pytest.raises(ValueError):
            cache.disk("k", broken, 60)
    assert [n for n in files(tmp_path / "cache") if not n.endswith(".locks")] == []


def test_url_options(tmp_path):
    backend = open_backend(
        f"file://{tmp_path}/c?serializer=pickle&fsync=true", app_name="shop", secret=SECRET
    )
    assert isinstance(backend, DiskBackend)
    assert (backend.serializer, backend.fsync) == ("pickle", True)
    assert backend.folder == str(tmp_path / "c" / "shop")
    with pytest.raises(ConfigError, match="unknown option"):
        open_backend(f"file://{tmp_path}/c?colour=red")
    with pytest.raises(ConfigError, match="serializer"):
        open_backend(f"file://{tmp_path}/c?serializer=yaml")


def test_pickle_serializer_stores_any_picklable_value(tmp_path):
    disk = open_backend(f"file://{tmp_path}/c?serializer=pickle", app_name="shop", secret=SECRET)
    cache = Cache("shop", disk=disk)
    assert cache.disk("k", lambda: Point(1), 60) == Point(1)
    assert cache.disk("k", lambda: Point(2), 60) == Point(1)
    assert pickle.loads(pickle.dumps(Point(1))) == Point(1)
