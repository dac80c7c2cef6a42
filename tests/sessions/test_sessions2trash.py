"""sessions2trash on every store: what goes, what stays, the CLI, and outages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from scalekit.core.errors import StoreUnavailable
from scalekit.sessions import open_store
from scalekit.sessions.stores.base import ANY
from tests.servers import RedisServer, free_port
from tests.sessions.conftest import store_url_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-m", "scalekit", "sessions2trash"]
CLEANABLE = ["file", "sqlite", "postgres", "mysql", "redis"]


def sid(n: int) -> str:
    return f"Session{n:017d}"


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, cwd=ROOT,
                          env=env or dict(os.environ), timeout=timeout)  # fmt: skip


@pytest.fixture(params=CLEANABLE)
def filled(request, tmp_path, app_name):
    """A store with 5 sessions whose TTL has passed, 5 live ones and 2 without expiry."""
    url = store_url_for(request.param, request, tmp_path)
    store = open_store(url, app_name=app_name)
    for n in range(5):
        store.save(sid(n), b"expired", 1, None)
    time.sleep(2.2)
    for n in range(5, 10):
        store.save(sid(n), b"live", 3600, None)
    for n in range(10, 12):
        store.save(sid(n), b"no expiry", None, None)
    yield url, store
    store.close()


def remaining(store) -> list[int]:
    return [n for n in range(12) if store.load(sid(n)) is not None]


def test_only_expired_sessions_go(filled, app_name):
    url, store = filled
    done = run_cli("--store", url, "--app", app_name, "-o", "-v")
    assert done.returncode == 0, done.stderr
    assert remaining(store) == list(range(5, 12))  # -x 3600: no-expiry ones are recent
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("sessions2trash: ") and f"(app {app_name})" in summary
    assert "sessions/s" in summary


def test_quiet_without_verbose(filled, app_name):
    url, _ = filled
    done = run_cli("--store", url, "--app", app_name, "-o")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_dry_run_deletes_nothing_and_counts(filled, app_name):
    url, store = filled
    done = run_cli("--store", url, "--app", app_name, "-o", "-v", "--dry-run", "-f", "-x", "0")
    assert done.returncode == 0, done.stderr
    assert "would delete 12" in done.stdout
    # file and database stores still hold the expired records; Redis already expired them
    assert remaining(store) == list(range(5, 12))


def test_force_with_zero_expiration_empties_the_store(filled, app_name):
    url, store = filled
    done = run_cli("--store", url, "--app", app_name, "-o", "-f", "-x", "0")
    assert done.returncode == 0, done.stderr
    assert remaining(store) == []


def test_force_uses_the_expiration_not_the_stored_expiry(filled, app_name):
    url, store = filled
    time.sleep(3.5)
    store.touch(sid(6), 3600)  # used just now: stays even with -f -x 3
    # (3 s leave the CLI time to start on a loaded machine: its cutoff is its now - 3)
    done = run_cli("--store", url, "--app", app_name, "-o", "-f", "-x", "3")
    assert done.returncode == 0, done.stderr
    assert remaining(store) == [6]


def test_the_environment_names_the_store(filled, app_name):
    url, store = filled
    env = dict(os.environ, SCALEKIT_SESSION_STORE=url, SCALEKIT_APP=app_name)
    assert run_cli("-o", "-f", "-x", "0", env=env).returncode == 0
    assert remaining(store) == []


def test_the_cron_script_wrapper(filled, app_name):
    url, store = filled
    done = subprocess.run([sys.executable, "scripts/sessions2trash.py", "--store", url,
                           "--app", app_name, "-o", "-f", "-x", "0"], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert remaining(store) == []


def test_memcache_says_it_needs_no_cleanup(memcache_url):
    done = run_cli("--store", memcache_url, "-o")
    assert done.returncode == 0
    assert "memcached expires sessions by itself" in done.stdout


@pytest.mark.parametrize(
    "args, code, message",
    [
        ([], 2, "give the store's URL with --store"),
        (["--store", "ftp://nowhere"], 2, "unknown scheme 'ftp'"),
        (["--store", "redis://:hunter2@127.0.0.1:{port}/0"], 1, "failed to clean up sessions"),
        (["--store", "redis://127.0.0.1/0", "-x", "-5"], 2, "is negative"),
        (["--store", "redis://127.0.0.1/0", "--batch", "many"], 2, "invalid int value"),
    ],
)
def test_bad_usage_and_unreachable_stores_exit_with_a_clear_message(args, code, message):
    env = {k: v for k, v in os.environ.items() if k != "SCALEKIT_SESSION_STORE"}
    args = [a.format(port=free_port()) for a in args]
    done = run_cli(*args, "-o", env=env)
    assert done.returncode == code
    assert message in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


# -- a typo in --app or in the path: exit 1 naming what is missing, nothing created --------
def tree(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("kind", ["file", "sqlite", "postgres", "mysql"])
def test_a_mistyped_app_exits_1_naming_it_and_creates_nothing(kind, request, tmp_path, app_name):
    from tests.sessions.test_database_store import columns

    url = store_url_for(kind, request, tmp_path)
    store = open_store(url, app_name=app_name)
    store.save(sid(1), b"x", 60, None)
    store.close()
    before = tree(tmp_path)
    typo = app_name + "x"
    done = run_cli("--store", url, "--app", typo, "-o", "-f", "-x", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("scalekit sessions2trash: ") and typo in done.stderr
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    assert tree(tmp_path) == before
    if kind != "file":
        assert columns(url, f"web2py_session_{typo}") == set()
        assert columns(url, f"scalekit_session_lock_{typo}") == set()


@pytest.mark.parametrize("url", ["file://{tmp}/sesions", "sqlite://{tmp}/sesions.sqlite",
                                 "sqlite://{tmp}/no-folder/sessions.sqlite"])  # fmt: skip
def test_a_mistyped_path_exits_1_naming_it_and_creates_nothing(url, tmp_path, app_name):
    url = url.format(tmp=tmp_path)
    done = run_cli("--store", url, "--app", app_name, "-o")
    assert done.returncode == 1, done.stdout + done.stderr
    missing = url.partition("://")[2]
    assert f"{missing} does not exist" in done.stderr and "Traceback" not in done.stderr
    assert tree(tmp_path) == []


def test_redis_reports_an_app_without_sessions_and_exits_0(redis_url, app_name):
    store = open_store(redis_url, app_name=app_name)
    store.save(sid(1), b"live", 3600, None)  # not due: the pass examines nothing
    done = run_cli("--store", redis_url, "--app", app_name, "-o")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    done = run_cli("--store", redis_url, "--app", app_name + "x", "-o")
    assert done.returncode == 0, done.stderr
    assert f"no session of app {app_name}x is stored; is the app name right?" in done.stdout
    assert store.load(sid(1)) is not None
    store.close()


# -- Redis specifics: the index, touches during the run, outages --------------------------
@pytest.fixture
def private_redis():
    with RedisServer().running() as server:
        yield server


def fill_redis(url, app, count, used_ms, ttl=None):
    """``count`` sessions last used at ``used_ms``, without TTL unless given."""
    store = open_store(url, app_name=app)
    client = redis.Redis.from_url(url)
    for n in range(count):
        store.save(sid(n), b"x", ttl, None)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.hset(f"scalekit:s:{app}:{sid(n)}", "t", used_ms)
        due = used_ms if ttl is None else used_ms + ttl * 1000  # the store's index score
        pipe.zadd(f"scalekit:s:{app}:due", {sid(n): due})
    pipe.execute()
    return store, client


def test_redis_a_session_touched_during_the_run_stays(private_redis, app_name):
    old = int((time.time() - 7200) * 1000)
    store, client = fill_redis(private_redis.url, app_name, 50, old)
    touched = []

    def touch_the_last(stats):
        if not touched:
            store.touch(sid(49), None)  # a request uses it while the cleanup runs
            touched.append(stats.examined)

    stats = store.cleanup(time.time() - 3600, batch=10, progress=touch_the_last)
    assert touched == [10] and stats.deleted == 49
    assert [n for n in range(50) if store.load(sid(n))] == [49]
    assert client.zrange(f"scalekit:s:{app_name}:due", 0, -1) == [sid(49).encode()]


def test_redis_natively_expired_sessions_leave_the_index(private_redis, app_name):
    store = open_store(private_redis.url, app_name=app_name)
    for n in range(20):
        store.save(sid(n), b"x", 1, None)
    store.save(sid(99), b"live", 3600, None)
    time.sleep(2.2)
    client = redis.Redis.from_url(private_redis.url)
    assert client.zcard(f"scalekit:s:{app_name}:due") == 21
    stats = store.cleanup(time.time())  # -x 0 without -f: the live one keeps its TTL
    assert client.zrange(f"scalekit:s:{app_name}:due", 0, -1) == [sid(99).encode()]
    assert (stats.examined, stats.deleted) == (20, 20)  # the live one is not even looked at
    assert store.load(sid(99)).data == b"live"


def test_redis_a_session_saved_during_the_run_stays(private_redis, app_name):
    old = int((time.time() - 7200) * 1000)
    store, _ = fill_redis(private_redis.url, app_name, 50, old)

    def save_the_last(stats):
        if stats.examined == 10:
            assert store.save(sid(49), b"saved meanwhile", None, ANY)

    stats = store.cleanup(time.time() - 3600, batch=10, progress=save_the_last)
    assert stats.deleted == 49
    assert store.load(sid(49)).data == b"saved meanwhile"


def test_redis_force_takes_sessions_whose_ttl_still_runs_only_if_unused(private_redis, app_name):
    old = int((time.time() - 7200) * 1000)
    store, client = fill_redis(private_redis.url, app_name, 5, old, ttl=86400)
    for n in range(5, 8):
        store.save(sid(n), b"used now", 86400, None)
    assert store.cleanup(time.time() - 3600).deleted == 0  # their stored expiry holds
    dry = store.cleanup(time.time() - 3600, force=True, dry_run=True)
    assert dry.deleted == 5 and client.zcard(f"scalekit:s:{app_name}:due") == 8
    assert store.cleanup(time.time() - 3600, force=True).deleted == 5
    assert [n for n in range(8) if store.load(sid(n))] == [5, 6, 7]
    assert store.cleanup(time.time() + 1, force=True).deleted == 3  # -x 0 -f: all go
    assert client.zcard(f"scalekit:s:{app_name}:due") == 0


def test_redis_stopped_mid_run_reports_and_loses_nothing_that_should_stay(private_redis, app_name):
    old = int((time.time() - 7200) * 1000)
    store, _ = fill_redis(private_redis.url, app_name, 300, old)
    for n in range(300, 310):
        store.save(sid(n), b"live", 3600, None)

    def stop_after_two_batches(stats):
        if stats.examined == 100:
            private_redis.freeze()

    try:
        with pytest.raises(StoreUnavailable, match="failed to clean up sessions"):
            store.cleanup(time.time() - 3600, batch=50, progress=stop_after_two_batches)
    finally:
        private_redis.thaw()
    assert all(store.load(sid(n)) for n in range(300, 310))
    store.cleanup(time.time() - 3600)
    assert [n for n in range(310) if store.load(sid(n))] == list(range(300, 310))


def test_the_loop_survives_an_outage_and_cleans_on_the_next_pass(private_redis, app_name):
    loop = subprocess.Popen(
        [*CLI, "--store", private_redis.url, "--app", app_name, "-s", "0.3", "-f", "-x", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        with private_redis.frozen():
            time.sleep(2.5)
        old = int((time.time() - 7200) * 1000)
        store, _ = fill_redis(private_redis.url, app_name, 20, old)
        deadline = time.monotonic() + 10
        while any(store.load(sid(n)) for n in range(20)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loop.poll() is None  # still running
        assert not any(store.load(sid(n)) for n in range(20))
    finally:
        loop.send_signal(signal.SIGINT)
        _, stderr = loop.communicate(timeout=10)
    assert "retrying in 0.3 s" in stderr and "failed to clean up sessions" in stderr


def test_the_loop_goes_on_after_a_pass_that_removed_lock_files(tmp_path, app_name):
    url = f"file://{tmp_path}"
    store = open_store(url, app_name=app_name)
    assert store.try_lease(sid(1), "token", 0.1)
    time.sleep(0.3)  # the lock file has expired: the first pass removes it
    loop = subprocess.Popen([*CLI, "--store", url, "--app", app_name, "-s", "0.2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = loop.stdout.readline()
        assert "examined 0, deleted 0; removed 1 expired lock file(s)" in first
        time.sleep(1)
        assert loop.poll() is None  # a note is no reason to stop
    finally:
        loop.send_signal(signal.SIGTERM)
        _, stderr = loop.communicate(timeout=10)
    assert (loop.returncode, stderr) == (0, "")
