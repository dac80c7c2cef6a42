"""The upload store protocol (:mod:`scalekit.testing.uploads`) run against every backend on
its real server: file, SQLite, PostgreSQL, MariaDB and moto's S3-compatible server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from scalekit.core.errors import ConfigError
from scalekit.testing.uploads import SharedUploadStoreSuite, UploadStoreSuite
from scalekit.uploads import UploadInfo, UploadNotFound, UploadStore, open_store
from scalekit.uploads.stores import CHUNK, Source


class TestStores(SharedUploadStoreSuite):
    """Every backend of ``STORE_KINDS`` (the ``make_store`` fixture of the conftest)."""

    def test_an_unknown_option_is_a_config_error_naming_it(self, store_url):
        url = store_url + ("&" if "?" in store_url else "?") + "colour=blue"
        with pytest.raises(ConfigError, match="colour"):
            open_store(url)
        with pytest.raises(ConfigError, match="shade"):
            open_store(store_url, shade="dark")

    def test_the_url_shows_no_secret(self, make_store, store_url):
        store = make_store()
        secret = urlsplit(store_url).password
        if secret:  # PostgreSQL's test server has none
            assert secret not in store.url and secret not in repr(store)


class DictStore(UploadStore):
    """The smallest third-party store: uploads in a dict of this process, never shared."""

    kind = "dict"

    def __init__(self) -> None:
        super().__init__("dict:")
        self.uploads: dict[str, tuple[bytes, float]] = {}
        self.guard = threading.Lock()

    @classmethod
    def from_url(cls, settings, **options):
        return cls()

    def _write(self, name: str, source: Source) -> UploadInfo:
        data = b"".join(source)  # whole in memory: a toy, not a store for big files
        with self.guard:
            self.uploads[name] = (data, time.time())
        return UploadInfo(name, len(data), self.uploads[name][1], source.sha256)

    def _info(self, name: str) -> UploadInfo:
        data, modified = self._get(name)
        return UploadInfo(name, len(data), modified)

    def _read(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        data = self._get(name)[0][start:end]
        return (data[at : at + CHUNK] for at in range(0, len(data), CHUNK))

    def _get(self, name: str) -> tuple[bytes, float]:
        with self.guard:
            if name not in self.uploads:
                raise UploadNotFound(f"{self.url}: no upload {name}")
            return self.uploads[name]

    def _delete(self, name: str) -> bool:
        with self.guard:
            return self.uploads.pop(name, None) is not None

    def names(self, prefix: str = "") -> Iterator[UploadInfo]:
        with self.guard:
            found = [name for name in self.uploads if name.startswith(prefix)]
        return (self._info(name) for name in found)

    def close(self) -> None:
        """Nothing to release."""


class TestADictStoreRunsTheSuite(UploadStoreSuite):
    """A third-party store runs the suite as its authors would; the big round trip is the
    one test a dict fails (it holds the whole upload), as the suite's memory check says."""

    @pytest.fixture
    def make_store(self):
        store = DictStore()
        return lambda: store  # every handle of a test: its one dict

    def test_big_round_trip_streams_in_bounded_memory(self, store):
        with pytest.raises(AssertionError, match=r"writing grew \d{3} MiB"):
            super().test_big_round_trip_streams_in_bounded_memory(store)
