"""``scalekit sessions copy``: an app's sessions from one Redis session store into another of
any topology, create-only, with their data, remaining TTL and due score, the source only read."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest

from scalekit import sessions
from scalekit.sessions.stores import open_store
from tests.servers import free_port
from tests.sessions.apps import SECRET, read_all, route
from tests.sessions.test_sessions2trash import ROOT
from tests.wsgi import Client

CLI = [sys.executable, "-m", "scalekit", "sessions", "copy"]


def copy_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)  # fmt: skip


@pytest.fixture
def cluster_url(redis_cluster) -> str:
    return "redis+cluster://" + ",".join(redis_cluster)


@contextlib.contextmanager
def stores(source_url: str, target_url: str, app_name: str):
    with (
        contextlib.closing(open_store(source_url, app_name=app_name)) as source,
        contextlib.closing(open_store(target_url, app_name=app_name)) as target,
    ):
        yield source, target


def raw(store, command: str, sid: str, *args):
    """``command`` on session ``sid``'s key in ``store``'s layout (``due``: on its index)."""
    prefix = store.layout.prefix(sid)
    key = prefix + "due" if command == "ZSCORE" else prefix + sid
    return store._redis.call(command, key, *args, safe=True)


def fill(store, count: int, prefix: str = "Copy") -> list[str]:
    """``count`` sessions: every third without a TTL, the others with 1 or 2 hours."""
    sids = [f"{prefix}{n:020d}"[-24:] for n in range(count)]
    for n, sid in enumerate(sids):
        assert store.save(sid, b"data %d" % n, None if n % 3 == 0 else 3600 * (1 + n % 2), None)
    return sids


def assert_copied(source, target, sids: list[str]) -> None:
    """Same fields, same due score, the same TTL within a second (none if none)."""
    for sid in sids:
        assert target.load(sid) == source.load(sid), sid
        assert raw(target, "ZSCORE", sid, sid) == raw(source, "ZSCORE", sid, sid)
        source_ttl, target_ttl = raw(source, "PTTL", sid), raw(target, "PTTL", sid)
        if source_ttl == -1:
            assert target_ttl == -1, sid
        else:
            assert abs(source_ttl - target_ttl) < 1000 and target_ttl > 0, sid


def test_a_single_redis_into_a_cluster_keeps_everyone_signed_in(redis_url, cluster_url, app_name):
    def set_number(session, environ):
        session["n"] = int(environ["HTTP_X_N"])
        return "ok"

    actions = {"/set": set_number, "/read": read_all}
    old_apps = [
        sessions.SessionMiddleware(
            route(actions), redis_url, SECRET, app_name=app_name, idle_timeout=timeout
        )
        for timeout in (3600, None)
    ]
    users = [Client(old_apps[n % 2]) for n in range(1000)]
    for n, user in enumerate(users):
        assert user.request("/set", headers={"X-N": str(n)}).status == 200

    done = copy_cli("--from", redis_url, "--to", cluster_url, "--app", app_name, "--batch", "300",
                    "-v")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = "copied 1,000, skipped existing 0, gone 0"
    assert done.stdout.count("  copied ") == 4 and summary in done.stdout.splitlines()[-1]

    with stores(redis_url, cluster_url, app_name) as (source, target):
        new_app = sessions.SessionMiddleware(route(actions), target, SECRET, app_name=app_name,
                                             idle_timeout=3600)  # fmt: skip
        for n, user in enumerate(users):
            assert Client(new_app, dict(user.cookies)).get("/read").text == f'{{"n": {n}}}'
        sids = [
            m.decode() for m in source._redis.call("ZRANGE", f"scalekit:s:{app_name}:due", 0, -1)
        ]
        assert len(sids) == 1000
        assert_copied(source, target, sids)
        assert sum(raw(target, "PTTL", sid) == -1 for sid in sids) == 500
        assert target.cleanup(time.time() - 60, dry_run=True).examined == 0
        due = target.cleanup(time.time() + 3601, dry_run=True)  # every score is before that
        assert (due.examined, due.deleted) == (1000, 1000)

    again = copy_cli("--from", redis_url, "--to", cluster_url, "--app", app_name)
    assert again.returncode == 0 and "copied 0, skipped existing 1,000, gone 0" in again.stdout


def test_sentinel_into_cluster_and_cluster_into_a_single_redis(
    redis_sentinel, cluster_url, redis_url, app_name
):
    with stores(redis_sentinel.url, cluster_url, app_name) as (source, target):
        sids = fill(source, 300)
        stats = source.copy_to(target, batch=64)
        assert (stats.copied, stats.existing, stats.gone) == (300, 0, 0)
        assert_copied(source, target, sids)
    with stores(cluster_url, redis_url, app_name) as (source, target):
        seen = []
        stats = source.copy_to(target, batch=3, progress=lambda s: seen.append(s.copied))
        assert (stats.copied, stats.existing, stats.gone) == (300, 0, 0)
        assert (
            seen == sorted(seen) and seen[-1] == 300 and len(seen) > 64
        )  # buckets of 1 batch or more
        assert_copied(source, target, sids)


def test_create_only_keeps_a_newer_session_and_dry_run_writes_nothing(
    redis_url, cluster_url, app_name
):
    with stores(redis_url, cluster_url, app_name) as (source, target):
        sids = fill(source, 20)
        dry = source.copy_to(target, dry_run=True)
        assert (dry.copied, dry.existing, dry.gone) == (20, 0, 0)
        assert all(target.load(sid) is None for sid in sids)
        assert target.cleanup(time.time()).note.startswith(f"no session of app {app_name}")

        assert target.save(sids[4], b"newer, on the cluster", 60, None)  # an upgraded server
        newer = target.load(sids[4])
        done = copy_cli("--from", redis_url, "--to", cluster_url, "--app", app_name, "--dry-run")
        assert "would copy 19, skipped existing 1, gone 0" in done.stdout, done.stdout
        assert target.load(sids[0]) is None

        stats = source.copy_to(target)
        assert (stats.copied, stats.existing, stats.gone) == (19, 1, 0)
        assert target.load(sids[4]) == newer and 0 < raw(target, "PTTL", sids[4]) <= 60_000
        assert_copied(source, target, sids[:4] + sids[5:])


def test_sessions_that_go_mid_copy_are_skipped_and_none_is_missed(redis_url, cluster_url, app_name):
    """Between batches: one session not read yet expires, one is deleted (its index entry
    stays), and the entries already copied leave the index (sessions2trash on the old store);
    the walk by score still reads every other session once. The copy changes nothing there."""
    with stores(redis_url, cluster_url, app_name) as (source, target):
        sids = fill(source, 50)
        index = f"scalekit:s:{app_name}:due"
        tied = [f"Tied{n:020d}" for n in range(25)]  # 25 due at the same ms, over 3 batches
        for sid in tied:
            source._redis.call("HSET", f"scalekit:s:{app_name}:{sid}", "d", sid, "v", "1", "t", 1)
            source._redis.call("ZADD", index, 5, sid)
        last, deleted = sids[-1], sids[-2]  # read after the first batch

        def meanwhile(stats):
            if stats.copied == 10:
                raw(source, "PEXPIRE", last, 1)
                raw(source, "DEL", deleted)
                source._redis.call("ZREMRANGEBYRANK", index, 0, 9)
                time.sleep(0.01)

        stats = source.copy_to(target, batch=10, progress=meanwhile)
        assert (stats.copied, stats.existing, stats.gone) == (73, 0, 2)
        assert target.load(last) is None and target.load(deleted) is None
        assert all(target.load(sid).data == sid.encode() for sid in tied)
        assert source._redis.call("ZCARD", index) == 65  # 75 less what the test removed
        assert all(source.load(sid) is not None for sid in sids[:-2])


def test_an_unknown_app_has_nothing_to_copy(redis_url, cluster_url, app_name):
    done = copy_cli("--from", redis_url, "--to", cluster_url, "--app", app_name)
    assert done.returncode == 0, done.stderr
    assert "copied 0, skipped existing 0, gone 0" in done.stdout
    assert f"no session of app {app_name} is stored; is the app name right?" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "redis://127.0.0.1/0", "--to", "redis://127.0.0.1:6379/0"], "the same store"),
        (["--from", "redis://h/0", "--to", "redis://h:6379?socket_timeout=1"], "the same store"),
        (["--from", "redis://127.0.0.1/0", "--to", "memcache://127.0.0.1"], "is a memcache URL"),
        (["--from", "file:///tmp/sessions", "--to", "redis://127.0.0.1/0"], "is a file URL"),
        (["--from", "redis://127.0.0.1/0"], "the following arguments are required: --to"),
        (["--from", "redis://127.0.0.1/0", "--to", "redis://h/1", "--batch", "0"], "positive"),
    ],
)
def test_wrong_urls_are_usage_errors(args, message):
    done = copy_cli(*args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("down_end", ["--from", "--to"])
def test_an_unreachable_store_exits_1_without_its_password(down_end, redis_url, app_name):
    with contextlib.closing(open_store(redis_url, app_name=app_name)) as store:
        fill(store, 3)
    down = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    ends = {"--from": redis_url, "--to": redis_url, down_end: down}
    done = copy_cli(*(arg for end in ends.items() for arg in end), "--app", app_name)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("scalekit sessions: session store redis://:***@127.0.0.1:")
    action = "read sessions" if down_end == "--from" else "copy sessions"
    assert f"failed to {action}: ConnectionError" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr
