"""sessions2trash's work on the file and database stores: ``store.cleanup`` on real folders,
SQLite files and PostgreSQL servers. Times are set in the past or future (file times,
stored datetimes) rather than waited for."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import itertools
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydal import DAL, Field

from scalekit.connect import sql
from scalekit.core import urls
from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.sessions.stores import _sql_cleanup, open_store
from scalekit.sessions.stores.base import CleanupStats
from scalekit.sessions.stores.database import DatabaseStore
from scalekit.sessions.stores.file import FileStore
from tests.servers import PostgresServer
from tests.sessions.test_database_store import WEB2PY_KEY, connection, query

HOUR = 3600
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def sid_of(number: int, shard: str | None = None) -> str:
    """A well-formed session id, spread over up to 248 shards; ``shard`` forces its
    first two characters."""
    prefix = shard or LETTERS[number % 62] + LETTERS[number // 62 % 4]
    return f"{prefix}{number:010d}xxxxxxxxxxxx"


# -- file store ----------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path, app_name) -> Iterator[FileStore]:
    store = open_store(f"file://{tmp_path}/sessions", app_name=app_name, fsync=False)
    yield store
    store.close()


def path_of(store: FileStore, sid: str) -> Path:
    return Path(store.folder, sid[:2], sid)


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def saved(store: FileStore, sid: str, ttl: int | None, seconds_ago: float = 0) -> Path:
    store.save(sid, b"data of " + sid.encode(), ttl, None)
    path = path_of(store, sid)
    age(path, seconds_ago)
    return path


def session_ids(store: FileStore) -> set[str]:
    return {p.name for p in Path(store.folder).glob("*/*") if "." not in p.name}


def test_file_cleanup_deletes_expired_sessions_only(files):
    expired_ttl = saved(files, sid_of(1), 60, seconds_ago=120)
    saved(files, sid_of(2), 60)  # live
    no_ttl_old = saved(files, sid_of(3), None, seconds_ago=2 * HOUR)
    saved(files, sid_of(4), None, seconds_ago=600)  # no TTL, used 10 min ago: live
    saved(files, sid_of(5), 4 * HOUR, seconds_ago=1.5 * HOUR)  # older than -x, TTL not up
    stats = files.cleanup(time.time() - HOUR)
    assert (stats.examined, stats.deleted) == (5, 2)
    assert not expired_ttl.exists() and not no_ttl_old.exists()
    assert session_ids(files) == {sid_of(2), sid_of(4), sid_of(5)}
    assert files.load(sid_of(5)).data == b"data of " + sid_of(5).encode()

    stats = files.cleanup(time.time() - HOUR, force=True)  # -f: the -x rule for all
    assert (stats.examined, stats.deleted) == (3, 1)
    assert session_ids(files) == {sid_of(2), sid_of(4)}

    stats = files.cleanup(time.time(), force=True)
    assert (stats.examined, stats.deleted) == (2, 2) and session_ids(files) == set()


def test_file_cleanup_with_nothing_to_do(files):
    assert files.cleanup(time.time(), force=True) == CleanupStats()  # no folder yet
    saved(files, sid_of(1), 60)
    assert files.cleanup(time.time() - HOUR) == CleanupStats(examined=1)


def test_file_dry_run_deletes_nothing_and_counts_what_would_go(files, tmp_path):
    for number in range(30):
        saved(files, sid_of(number), None, seconds_ago=2 * HOUR if number % 3 else 0)
    shard = path_of(files, sid_of(0)).parent
    (shard / f"{sid_of(0)}.lock").write_text(f"crashed\n{time.time() - 5!r}\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    seen: list[CleanupStats] = []
    stats = files.cleanup(time.time() - HOUR, dry_run=True, batch=7, progress=seen.append)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert (stats.examined, stats.deleted) == (30, 20)
    assert stats.note == "would remove 1 expired lock file(s) and 0 stale temp file(s)"
    assert seen and (seen[-1].examined, seen[-1].deleted) == (30, 20)
    assert files.cleanup(time.time() - HOUR).deleted == 20


def test_file_cleanup_reports_progress_per_batch(files):
    for number in range(50):
        saved(files, sid_of(number), None, seconds_ago=2 * HOUR)
    seen: list[CleanupStats] = []
    stats = files.cleanup(time.time() - HOUR, batch=10, progress=seen.append)
    assert (stats.examined, stats.deleted) == (50, 50)
    examined = [report.examined for report in seen]
    assert len(seen) >= 5 and examined == sorted(examined) and seen[-1] == stats
    assert all(later - earlier >= 10 for earlier, later in itertools.pairwise(examined[:-1]))
    with pytest.raises(ValueError, match="batch"):
        files.cleanup(time.time(), batch=0)


def test_file_sessions_touched_during_the_run_stay(files):
    sids = [sid_of(number) for number in range(200)]
    for sid in sids:
        saved(files, sid, None, seconds_ago=2 * HOUR)  # all expired by the -x rule
    touched: list[str] = []

    def touch_all(stats: CleanupStats) -> None:
        if touched:
            return
        for sid in sids:
            files.touch(sid, None)
            if files.load(sid) is not None:  # still there after the touch: it must stay
                touched.append(sid)

    stats = files.cleanup(time.time() - HOUR, batch=20, progress=touch_all)
    assert touched and set(touched) == session_ids(files)
    assert stats.deleted == len(sids) - len(touched)  # those gone before the touch came


def _waiting_on(path: Path) -> bool:
    """Whether some process waits for an flock on ``path`` (Linux's /proc/locks)."""
    inode = f":{path.stat().st_ino} "
    with open("/proc/locks") as locks:
        return any("->" in line and inode in line for line in locks)


def test_file_cleanup_rechecks_under_the_shard_mutex(files):
    kept, gone = sid_of(1, shard="Ab"), sid_of(2, shard="Ab")
    kept_path = saved(files, kept, None, seconds_ago=2 * HOUR)
    saved(files, gone, None, seconds_ago=2 * HOUR)
    mutex = kept_path.parent / ".mutex"
    holder = os.open(mutex, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another server is saving in this shard
    result: list[object] = []
    runner = threading.Thread(target=lambda: result.append(files.cleanup(time.time() - HOUR)))
    try:
        runner.start()
        deadline = time.monotonic() + 10
        while not _waiting_on(mutex):  # both were candidates; the cleanup waits to unlink
            assert time.monotonic() < deadline, "cleanup never waited for the shard mutex"
            time.sleep(0.01)
        os.utime(kept_path)  # what touch does, under the mutex
    finally:
        os.close(holder)
    runner.join(10)
    assert result[0].deleted == 1
    assert session_ids(files) == {kept}


def test_file_cleanup_removes_stale_temp_files_and_expired_locks(files):
    sid = sid_of(1)
    shard = saved(files, sid, 60).parent
    stale, fresh = shard / f"{sid}.tmp-0123456789ab", shard / f"{sid}.tmp-ba9876543210"
    for temp in (stale, fresh):
        temp.write_bytes(b"half a write")
    age(stale, 20 * 60)
    age(fresh, 60)
    assert files.try_lease(sid, "live holder", 60)
    other, damaged = sid_of(2, shard=sid[:2]), sid_of(3, shard=sid[:2])
    expired_lock, damaged_lock = shard / f"{other}.lock", shard / f"{damaged}.lock"
    expired_lock.write_text(f"crashed\n{time.time() - 1!r}\n")
    damaged_lock.write_bytes(b"\xff\xfe")
    stats = files.cleanup(time.time(), force=True)
    assert stats.note == "removed 2 expired lock file(s) and 1 stale temp file(s)"
    assert (stats.examined, stats.deleted) == (1, 1)
    assert sorted(p.name for p in shard.iterdir()) == sorted(
        [".mutex", fresh.name, f"{sid}.lock"]  # live locks stay, also with force
    )
    assert not files.try_lease(sid, "someone else", 5)


def test_file_cleanup_never_follows_symbolic_links(files, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / sid_of(9, shard="Zz")
    victim.write_bytes(b"SKS1 abc - 0 00000000\n")
    age(victim, 10 * HOUR)
    saved(files, sid_of(1), None, seconds_ago=2 * HOUR)
    (Path(files.folder) / "Zz").symlink_to(outside)  # a shard that is a link
    link = path_of(files, sid_of(2, shard=sid_of(1)[:2]))
    link.symlink_to(victim)  # a "session" that is a link
    stats = files.cleanup(time.time(), force=True)
    assert (stats.examined, stats.deleted) == (1, 1)
    assert victim.exists() and link.is_symlink()

    linked_app = open_store(f"file://{tmp_path}/other", app_name=files.app_name)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / files.app_name).symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        linked_app.cleanup(time.time(), force=True)
    assert victim.exists()


def test_file_cleanup_judges_damaged_files_by_their_time(files, caplog):
    old, new = path_of(files, sid_of(1)), path_of(files, sid_of(2))
    old.parent.mkdir(parents=True)
    new.parent.mkdir(parents=True, exist_ok=True)
    for path in (old, new):
        path.write_bytes(b"not a session file")
    age(old, 2 * HOUR)
    stats = files.cleanup(time.time() - HOUR)
    assert (stats.examined, stats.deleted) == (2, 1)
    assert not old.exists() and new.exists()


def test_file_cleanup_tolerates_files_vanishing_during_the_walk(files):
    sids = [sid_of(number) for number in range(1500)]
    for sid in sids:
        saved(files, sid, None, seconds_ago=2 * HOUR)
    live = [sid_of(number) for number in range(5000, 5020)]
    for sid in live:
        saved(files, sid, None)
    folder = Path(files.folder)
    victims = [path_of(files, sid) for sid in random.sample(sids, 700)]
    stop = threading.Event()

    def meddle() -> None:  # another sessions2trash, and someone renaming files
        for number, path in enumerate(victims):
            if stop.is_set():
                return
            with contextlib.suppress(OSError):
                if number % 2:
                    path.unlink()
                else:
                    path.rename(path.with_name(sid_of(900_000 + number, shard=path.name[:2])))

    meddler = threading.Thread(target=meddle)
    removed: list[str] = []

    def progress(stats: CleanupStats) -> None:
        if not removed:  # whole shards go too (sorted walk: the last ones are ahead)
            for shard in sorted(folder.iterdir())[-3:]:
                shutil.rmtree(shard, ignore_errors=True)
                removed.append(shard.name)

    meddler.start()
    try:
        stats = files.cleanup(time.time() - HOUR, batch=50, progress=progress)
    finally:
        stop.set()
        meddler.join()
    assert removed and stats.deleted > 0
    left = session_ids(files)
    assert {sid for sid in live if sid[:2] not in removed} <= left
    assert files.cleanup(time.time() - HOUR).deleted == len(left) - len(set(live) & left)


# -- database store ------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/storage.sqlite"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def rows(db_url, app_name) -> Iterator[DatabaseStore]:
    store = open_store(db_url, app_name=app_name)
    yield store
    store.close()


def stamp(seconds_from_now: float) -> str:
    """A SQL literal of the time ``seconds_from_now``, in naive UTC as the store writes."""
    return time.strftime("'%Y-%m-%d %H:%M:%S'", time.gmtime(time.time() + seconds_from_now))


def set_times(url: str, store: DatabaseStore, sid: str, modified: str, expires: str) -> None:
    query(
        url,
        f"UPDATE {store.table} SET modified_datetime = {modified}, expires_datetime = "
        f"{expires} WHERE unique_key = '{sid}'",
    )


def keys(url: str, store: DatabaseStore) -> set[str]:
    return {key for (key,) in query(url, f"SELECT unique_key FROM {store.table}")}


def test_db_cleanup_deletes_expired_rows_only(rows, db_url):
    for number in range(1, 6):
        rows.save(sid_of(number), b"x", 60, None)
    set_times(db_url, rows, sid_of(1), stamp(-120), stamp(-60))  # TTL passed
    set_times(db_url, rows, sid_of(3), stamp(-2 * HOUR), "NULL")  # no TTL, old
    set_times(db_url, rows, sid_of(4), stamp(-600), "NULL")  # no TTL, recent
    set_times(db_url, rows, sid_of(5), stamp(-1.5 * HOUR), stamp(HOUR))  # TTL not up
    stats = rows.cleanup(time.time() - HOUR)
    assert (stats.examined, stats.deleted) == (2, 2)
    assert keys(db_url, rows) == {sid_of(2), sid_of(4), sid_of(5)}
    assert rows.load(sid_of(5)).data == b"x"

    assert rows.cleanup(time.time() - HOUR, force=True).deleted == 1
    assert keys(db_url, rows) == {sid_of(2), sid_of(4)}
    assert rows.cleanup(time.time(), force=True).deleted == 2  # also those saved just now
    assert keys(db_url, rows) == set()
    with pytest.raises(ValueError, match="batch"):
        rows.cleanup(time.time(), batch=0)


def test_db_cleanup_in_batches_with_progress_and_dry_run(rows, db_url):
    for number in range(120):
        rows.save(sid_of(number), b"x", None if number % 4 else 60, None)
    query(db_url, f"UPDATE {rows.table} SET modified_datetime = {stamp(-2 * HOUR)}")
    seen: list[CleanupStats] = []
    dry = rows.cleanup(time.time() - HOUR, dry_run=True, progress=seen.append)
    assert (dry.examined, dry.deleted) == (90, 90) and seen[-1] == dry
    assert len(keys(db_url, rows)) == 120
    seen.clear()
    stats = rows.cleanup(time.time() - HOUR, batch=25, progress=seen.append)
    assert stats == dry
    assert seen[0].deleted == 25  # the first transaction: one batch; then sized by time
    assert len(seen) >= 2 and seen[-1] == stats
    assert {sid_of(number) for number in range(0, 120, 4)} == keys(db_url, rows)


def test_db_rows_touched_during_the_run_stay(rows, db_url):
    sids = [sid_of(number) for number in range(300)]
    for sid in sids:
        rows.save(sid, b"x", None, None)
    query(db_url, f"UPDATE {rows.table} SET modified_datetime = {stamp(-2 * HOUR)}")
    touched: list[str] = []

    def touch_all(stats: CleanupStats) -> None:
        if not touched:
            assert stats.deleted == 10  # the first transaction
            for sid in sids:
                rows.touch(sid, None)
                if rows.load(sid) is not None:
                    touched.append(sid)

    stats = rows.cleanup(time.time() - HOUR, batch=10, progress=touch_all)
    assert len(touched) == 290 and stats.deleted == 10
    assert keys(db_url, rows) == set(touched)


def test_db_a_row_being_written_meanwhile_is_skipped_not_waited_for(postgres_url, app_name):
    with contextlib.closing(open_store(postgres_url, app_name=app_name)) as store:
        for sid in (sid_of(1), sid_of(2)):
            store.save(sid, b"x", None, None)
        query(postgres_url, f"UPDATE {store.table} SET modified_datetime = {stamp(-2 * HOUR)}")
        with connection(postgres_url) as writer:  # a request touching sid 1, not committed
            writer.cursor().execute(
                f"UPDATE {store.table} SET modified_datetime = {stamp(0)} "
                f"WHERE unique_key = '{sid_of(1)}'"
            )
            started = time.monotonic()
            stats = store.cleanup(time.time() - HOUR)
            assert time.monotonic() - started < 2
            assert stats.deleted == 1
            writer.commit()
        assert keys(postgres_url, store) == {sid_of(1)}
        assert store.cleanup(time.time() - HOUR).deleted == 0


OLD, RECENT = "old".ljust(16, "x"), "recent".ljust(16, "x")


@pytest.fixture
def web2py_rows(db_url, app_name, tmp_path) -> Iterator[DatabaseStore]:
    """The store on a table web2py made, with its rows in web2py's local time."""
    web2py_table(db_url, app_name, tmp_path)
    store = open_store(db_url, app_name=app_name)
    yield store
    store.close()


def web2py_table(db_url: str, app_name: str, tmp_path: Path) -> None:
    """web2py's session table of ``app_name``, with rows used 2 h, 10 and 30 minutes ago
    in web2py's local time."""
    web2py = DAL(urls.parse(db_url).dal_uri, folder=str(tmp_path))
    table = web2py.define_table(
        f"web2py_session_{app_name}",
        Field("locked", "boolean", default=False),
        Field("client_ip", length=64),
        Field("created_datetime", "datetime"),
        Field("modified_datetime", "datetime"),
        Field("unique_key", length=64),
        Field("session_data", "blob"),
    )
    local_now = datetime.datetime.now()  # what web2py's request.now is
    for key, minutes in [(OLD, 120), (RECENT, 10), (WEB2PY_KEY, 30)]:
        moment = local_now - datetime.timedelta(minutes=minutes)
        table.insert(unique_key=key, modified_datetime=moment, session_data=b"{}")
    web2py.commit()
    web2py.close()


@pytest.fixture(params=["Asia/Kolkata", "America/New_York"])
def local_zone(request, monkeypatch) -> Iterator[str]:
    """Run with the local time zone ahead of (+05:30) or behind (-05:00/-04:00) UTC."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_db_web2py_rows_follow_the_x_rule_in_local_time(local_zone, web2py_rows, db_url):
    stats = web2py_rows.cleanup(time.time() - HOUR)  # used 2 h, 10 min and 30 min ago
    assert stats.deleted == 1
    assert keys(db_url, web2py_rows) == {RECENT, WEB2PY_KEY}
    web2py_rows.touch(WEB2PY_KEY, None)  # the store's own touch: UTC from now on
    table = web2py_rows.table
    [(version,)] = query(db_url, f"SELECT version FROM {table} WHERE unique_key = '{WEB2PY_KEY}'")
    assert version == 0
    assert web2py_rows.cleanup(time.time() - 5 * 60).deleted == 1  # RECENT; the touched stays
    assert keys(db_url, web2py_rows) == {WEB2PY_KEY}


def test_db_expired_lock_rows_go_and_live_ones_stay(rows, db_url):
    rows.save(sid_of(1), b"x", 60, None)
    assert rows.try_lease(sid_of(1), "live", 60)
    assert rows.try_lease(sid_of(2), "crashed", 60)
    assert rows.try_lease(sid_of(3), "crashed too", 60)
    query(
        db_url,
        f"UPDATE {rows.lock_table} SET expires_at = {time.time() - 1} "
        f"WHERE session_id <> '{sid_of(1)}'",
    )
    dry = rows.cleanup(time.time(), force=True, dry_run=True)
    assert dry.note == "would remove 2 expired lock row(s)"
    stats = rows.cleanup(time.time(), force=True)
    assert stats.note == "removed 2 expired lock row(s)" and stats.deleted == 1
    assert query(db_url, f"SELECT session_id FROM {rows.lock_table}") == [(sid_of(1),)]
    assert not rows.try_lease(sid_of(1), "someone else", 5)


def test_db_cleanup_on_the_apps_dal_commits_each_batch(db_url, app_name, tmp_path):
    app_db = DAL(urls.parse(db_url).dal_uri, folder=str(tmp_path))
    store = DatabaseStore(db=app_db, app_name=app_name, commit=False)
    for number in range(30):
        store.save(sid_of(number), b"x", None, None)
    app_db.commit()
    query(db_url, f"UPDATE {store.table} SET modified_datetime = {stamp(-2 * HOUR)}")
    store.save(sid_of(99), b"pending", None, None)  # the app's transaction is under way
    seen: list[int] = []

    def look(stats: CleanupStats) -> None:  # from another connection, mid-run
        seen.append(len(keys(db_url, store)))

    assert store.cleanup(time.time() - HOUR, batch=10, progress=look).deleted == 30
    assert seen[0] == 21 and seen[-1] == 1  # and the app's pending save was committed
    assert keys(db_url, store) == {sid_of(99)}
    app_db.close()


def test_db_cleanup_queries_use_the_indexes(rows, db_url):
    rows.save(sid_of(1), b"x", 60, None)
    table = rows.table
    if db_url.startswith("postgres"):  # enough rows that a sequential scan would cost more
        query(
            db_url,
            f"INSERT INTO {table} (unique_key, version, modified_datetime, expires_datetime) "
            "SELECT md5(g::text), CASE WHEN g % 7 = 0 THEN NULL ELSE 1 END, "
            "now() - g * interval '1 second', CASE WHEN g % 3 = 0 THEN NULL "
            "ELSE now() + (g - 25000) * interval '1 second' END "
            "FROM generate_series(1, 50000) g",
        )
        with connection(db_url) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"ANALYZE {table}")
    elif db_url.startswith("mysql"):  # the same on MariaDB, from its sequence engine
        query(
            db_url,
            f"INSERT INTO {table} (unique_key, version, modified_datetime, expires_datetime) "
            "SELECT MD5(seq), CASE WHEN seq % 7 = 0 THEN NULL ELSE 1 END, "
            "UTC_TIMESTAMP() - INTERVAL seq SECOND, CASE WHEN seq % 3 = 0 THEN NULL "
            "ELSE UTC_TIMESTAMP() + INTERVAL (CAST(seq AS SIGNED) - 25000) SECOND END "
            "FROM seq_1_to_50000",
        )
        query(db_url, f"ANALYZE TABLE {table}")
    db, sessions, _ = rows._tables()
    sqlite, mysql = db_url.startswith("sqlite"), db_url.startswith("mysql")
    for force in (False, True):
        for rule in _sql_cleanup.session_rules(sessions, time.time(), time.time() - HOUR, force):
            sql = _sql_cleanup.delete_sql(db, rule, 1000)
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            found = query(db_url, explain + sql)
            # MySQL: the access type and the key of each row; elsewhere the plan's text
            column = (lambda row: f"{row[3]} {row[5]}") if mysql else (lambda row: str(row[-1]))
            plan = "\n".join(column(row) for row in found)
            # the rows are picked through an index, then deleted by rowid / ctid
            assert f"{table}_expires_modified" in plan or f"{table}_modified_datetime" in plan
            if mysql:
                assert not plan.startswith("ALL "), plan  # no full table scan
            elif sqlite:
                assert plan.startswith(f"SEARCH {table} USING INTEGER PRIMARY KEY"), plan
                assert f"SCAN {table}" not in plan, plan
            else:  # by ctid (Tid Scan), or where a rule matches next to nothing, by index
                assert "Seq Scan" not in plan, plan


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, to stop and start."""
    with PostgresServer().running() as server:
        yield server


def test_db_a_server_stopped_mid_run_raises_and_loses_nothing_that_stays(own_postgres, app_name):
    url = own_postgres.url
    store = open_store(url, app_name=app_name)
    live = [sid_of(number) for number in range(10_000, 10_020)]
    for sid in live:
        store.save(sid, b"live", 3600, None)
    with connection(url) as conn:
        conn.cursor().execute(
            f"INSERT INTO {store.table} (unique_key, version, modified_datetime, "
            f"expires_datetime) SELECT 'E' || lpad(g::text, 20, '0'), 1, "
            f"{stamp(-2 * HOUR)}, {stamp(-HOUR)} FROM generate_series(1, 2000) g"
        )
        conn.commit()
    seen: list[CleanupStats] = []

    def stop_server(stats: CleanupStats) -> None:
        seen.append(stats)
        if len(seen) == 1:
            own_postgres.stop_cluster()

    try:
        with pytest.raises(StoreUnavailable, match="session database"):
            store.cleanup(time.time() - HOUR, batch=100, progress=stop_server)
    finally:
        own_postgres.start_cluster()
    assert len(seen) == 1 and seen[0].deleted == 100
    assert store.load(live[0]).data == b"live"  # reconnects
    [(count,)] = query(url, f"SELECT count(*) FROM {store.table} WHERE unique_key LIKE 'E%'")
    assert count == 1900
    assert store.cleanup(time.time() - HOUR).deleted == 1900
    assert keys(url, store) == set(live)
    store.close()


def test_db_opened_existing_only_upgrades_a_web2py_table_and_cleans_it(db_url, app_name, tmp_path):
    web2py_table(db_url, app_name, tmp_path)
    store = open_store(db_url, app_name=app_name, create=False)
    try:
        assert store.cleanup(time.time() - HOUR).deleted == 1  # the row used 2 h ago
        assert keys(db_url, store) == {RECENT, WEB2PY_KEY}
    finally:
        store.close()


def test_db_on_the_apps_dal_existing_only_creates_no_table(db_url, app_name, tmp_path):
    db = DAL(urls.parse(db_url).dal_uri, folder=str(tmp_path))
    try:
        with pytest.raises(StoreNotFound, match=f"table web2py_session_{app_name} does not"):
            DatabaseStore(db=db, app_name=app_name, create=False)
        assert sql.columns(db, f"web2py_session_{app_name}") is None
        assert sql.columns(db, f"scalekit_session_lock_{app_name}") is None
    finally:
        db.close()


def test_file_store_existing_only_needs_the_apps_folder(tmp_path, app_name):
    with pytest.raises(StoreNotFound, match=f"session folder {tmp_path}/sessions does not"):
        open_store(f"file://{tmp_path}/sessions", app_name=app_name, create=False)
    (tmp_path / "sessions").mkdir()
    with pytest.raises(StoreNotFound, match=f"of app {app_name} {tmp_path}/sessions/{app_name}"):
        open_store(f"file://{tmp_path}/sessions", app_name=app_name, create=False)
    assert [p.name for p in tmp_path.rglob("*")] == ["sessions"]
