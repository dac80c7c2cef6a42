"""The Redis session store's key layout: byte for byte the previous one on a single Redis
(an upgrade logs nobody out), spread over buckets on a Cluster, where the session store
protocol passes too (with and without the client cache)."""

from __future__ import annotations

import contextlib
import time

import pytest
import redis

from scalekit.core.errors import ConfigError
from scalekit.sessions.stores import open_store
from scalekit.testing.sessions import OTHER, SID, SharedSessionStoreSuite
from tests.servers import free_port
from tests.sessions.test_sessions2trash import run_cli

#: A session id that is not :data:`SID` or :data:`OTHER`.
THIRD = "ThirdSessionId0000000003"


def test_a_session_written_by_the_previous_version_lives_on(redis_url, app_name):
    """Keys and fields exactly as the previous version wrote them: loaded, saved, touched,
    locked and cleaned up in place, and no key of another name appears."""
    prefix, used_ms = f"scalekit:s:{app_name}:", int((time.time() - 7200) * 1000)
    with (
        redis.Redis.from_url(redis_url) as raw,
        contextlib.closing(open_store(redis_url, app_name=app_name)) as store,
    ):
        # SID with a TTL, OTHER without one, unused for two hours, as the old code saved them
        raw.hset(prefix + SID, mapping={"d": b"signed in", "v": "0123456789abcdef01", "t": used_ms})
        raw.pexpire(prefix + SID, 3_600_000)
        raw.hset(prefix + OTHER, mapping={"d": b"idle", "v": "fedcba987654321001", "t": used_ms})
        raw.zadd(prefix + "due", {SID: used_ms + 3_600_000, OTHER: used_ms})

        record = store.load(SID)
        assert (record.data, record.version) == (b"signed in", b"0123456789abcdef01")
        assert record.touched_at == used_ms / 1000
        assert store.save(SID, b"still signed in", 3600, record.version)
        assert raw.hget(prefix + SID, "d") == b"still signed in"
        store.touch(SID, 7200)
        assert 7_100_000 < raw.pttl(prefix + SID) <= 7_200_000
        assert store.try_lease(SID, "owner", 10) and raw.get(prefix + "lock:" + SID) == b"owner"
        store.release_lease(SID, "owner")

        stats = store.cleanup(time.time() - 3600)  # OTHER was unused for two hours: it goes
        assert (stats.examined, stats.deleted) == (1, 1) and store.load(OTHER) is None
        assert store.load(SID).data == b"still signed in"
        store.save(THIRD, b"new", 60, None)
        store.delete(THIRD)
        assert sorted(raw.keys(prefix + "*")) == [(prefix + key).encode() for key in (SID, "due")]
        assert raw.zrange(prefix + "due", 0, -1) == [SID.encode()]


@pytest.mark.parametrize("option", ["min_replicas=-1", "replica_timeout=0"])
def test_bad_replication_options_are_config_errors(redis_url, option):
    with pytest.raises(ConfigError, match=option.split("=")[0]):
        open_store(f"{redis_url}?{option}")


# -- on a Redis Cluster ---------------------------------------------------------------------
@pytest.fixture
def cluster_url(redis_cluster) -> str:
    return "redis+cluster://" + ",".join(redis_cluster)


class TestClusterStore(SharedSessionStoreSuite):
    @pytest.fixture(params=["plain", "client_cache"])
    def make_store(self, cluster_url, request):
        options = {"client_cache": True} if request.param == "client_cache" else {}
        return lambda app_name, **given: open_store(
            cluster_url, app_name=app_name, **{**options, **given}
        )

    @pytest.fixture
    def make_unreachable_store(self):
        url = f"redis+cluster://:hunter2@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        return lambda app_name: open_store(url, app_name=app_name)


def test_one_apps_sessions_spread_over_every_primary(cluster_url, redis_cluster, app_name):
    with contextlib.closing(open_store(cluster_url, app_name=app_name)) as store:
        sids = [f"Spread{n:018d}" for n in range(500)]
        for sid in sids:
            assert store.save(sid, sid.encode(), 60, None)
        assert store.try_lease(sids[0], "owner", 10)
        counts = []
        for seed in redis_cluster:
            host, port = seed.split(":")
            with redis.Redis(host=host, port=int(port)) as node:
                if node.info("replication")["role"] != "master":
                    continue
                keys = list(node.scan_iter(f"scalekit:s:{{{app_name}:*", count=1000))
                counts.append(sum(b":due" not in key and b":lock:" not in key for key in keys))
                for key in keys:  # a session, its lock and its bucket's index share a slot
                    bucket = key.split(b"}")[0] + b"}"
                    assert node.cluster("keyslot", key) == node.cluster("keyslot", bucket)
        assert len(counts) == 3 and sum(counts) == 500 and min(counts) > 100, counts
        assert all(store.load(sid).data == sid.encode() for sid in sids)


def test_sessions2trash_walks_every_bucket(cluster_url, app_name):
    with contextlib.closing(open_store(cluster_url, app_name=app_name)) as store:
        for n in range(100):
            store.save(f"Trash{n:019d}", b"gone soon", 1, None)
        time.sleep(2.5)  # expired a second ago and more
        store.save(SID, b"stays", 3600, None)
        store.save(OTHER, b"no expiry", None, None)
        dry = run_cli("--store", cluster_url, "--app", app_name, "-o", "-v", "-x", "1", "--dry-run")
        assert "examined 100, would delete 100" in dry.stdout, dry.stdout + dry.stderr
        seen = []
        stats = store.cleanup(time.time() - 1, batch=10, progress=seen.append)
        assert (stats.examined, stats.deleted) == (100, 100) and seen[-1] is stats
        assert store.cleanup(time.time() - 1).examined == 0
        assert store.load(SID).data == b"stays" and store.load(OTHER).data == b"no expiry"
        forced = store.cleanup(time.time() + 1, force=True)
        assert forced.deleted == 2 and store.load(SID) is None and store.load(OTHER) is None
        assert store.cleanup(time.time()).note.startswith(f"no session of app {app_name}")
