"""The session store protocol (:mod:`scalekit.testing.sessions`), run against every backend
on its real server, and against a third-party store as its authors would run it."""

from __future__ import annotations

import threading
import time

import pytest

from scalekit.core.checks import check_lease
from scalekit.core.errors import ConfigError
from scalekit.sessions.stores import ANY, Record, SessionStore, open_store
from scalekit.sessions.stores.base import CleanupStats, check_session_id, ttl_seconds
from scalekit.testing.sessions import SessionStoreSuite, SharedSessionStoreSuite
from tests.sessions.conftest import down_url_for


class TestStores(SharedSessionStoreSuite):
    """Every backend of ``STORE_KINDS`` (the ``store_kind`` fixture of the conftest)."""

    @pytest.fixture
    def make_store(self, store_url):
        return lambda app_name, **options: open_store(store_url, app_name=app_name, **options)

    @pytest.fixture
    def make_unreachable_store(self, store_kind, tmp_path):
        url = down_url_for(store_kind, tmp_path)
        return lambda app_name: open_store(url, app_name=app_name)


class DictStore(SessionStore):
    """The smallest third-party store: records in a dict of this process, never shared."""

    kind = "dict"

    def __init__(self, app_name: str = "app", **options):
        if options:
            raise ConfigError(f"unknown option {', '.join(options)}: a dict store takes none")
        super().__init__(app_name)
        self.records: dict[str, tuple[Record, float | None]] = {}  # sid: (record, expires)
        self.leases: dict[str, tuple[str, float]] = {}  # sid: (token, expires)
        self.guard = threading.Lock()

    @classmethod
    def from_url(cls, settings, app_name="app", **options):
        return cls(app_name, **options)

    def live(self, sid: str) -> tuple[Record, float | None] | None:
        stored = self.records.get(check_session_id(sid))
        if stored is None or (stored[1] is not None and stored[1] <= time.time()):
            return None
        return stored

    def load(self, sid):
        with self.guard:
            stored = self.live(sid)
            return None if stored is None else stored[0]

    def save(self, sid, data, ttl, expected):
        ttl = ttl_seconds(ttl)
        with self.guard:
            stored = self.live(sid)
            version = None if stored is None else stored[0].version
            if expected is not ANY and expected != version:
                return False
            record = Record(data, (version or 0) + 1, time.time())
            self.records[sid] = record, ttl and time.time() + ttl
            return True

    def touch(self, sid, ttl):
        ttl = ttl_seconds(ttl)
        with self.guard:
            stored = self.live(sid)
            if stored is not None:
                record = stored[0]._replace(touched_at=time.time())
                self.records[sid] = record, ttl and time.time() + ttl

    def delete(self, sid):
        with self.guard:
            self.records.pop(check_session_id(sid), None)

    def try_lease(self, sid, token, ttl):
        ttl = check_lease(token, ttl)
        with self.guard:
            holder = self.leases.get(check_session_id(sid))
            if holder is not None and holder[1] > time.time():
                return False
            self.leases[sid] = token, time.time() + ttl
            return True

    def release_lease(self, sid, token):
        with self.guard:
            if self.leases.get(check_session_id(sid), ("",))[0] == token:
                del self.leases[sid]

    def cleanup(self, cutoff, *, force=False, dry_run=False, batch=1000, progress=None):
        now = time.time()
        with self.guard:
            expired = [
                sid for sid, (record, expires) in self.records.items()
                if (expires is not None and expires <= now)
                or ((expires is None or force) and record.touched_at < cutoff)
            ]  # fmt: skip
            stats = CleanupStats(examined=len(self.records), deleted=len(expired))
            if not dry_run:
                for sid in expired:
                    del self.records[sid]
        if progress is not None:
            progress(stats)
        return stats


class TestADictStoreRunsTheSuite(SessionStoreSuite):
    """The reuse path itself, as the docstring of :mod:`scalekit.testing` shows it."""

    @pytest.fixture
    def make_store(self):
        return DictStore  # make_store(app, **options) opens one as your users do
