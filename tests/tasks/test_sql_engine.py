"""The SQL task engine on a real SQLite file, PostgreSQL and MariaDB: what only SQL has to
prove (concurrent claimers, row locks skipped, lost leases, names raced by threads and
processes, a claimer killed mid-transaction, locked tables, options, the tables it makes).
The engine-independent behaviour is the conformance suite's (test_conformance.py)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator

import psycopg2
import pymysql
import pytest

from scalekit.core import urls
from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.tasks.engines import open_engine
from scalekit.tasks.engines._sql_tables import skips_locked
from scalekit.tasks.engines.sql import MAX_CLAIM, SQLEngine
from scalekit.tasks.errors import TaskAlreadyExists
from scalekit.testing import fresh_app_name, run_in_children
from tests.servers import free_port


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def engine_kind(request) -> str:
    """The SQL backends only (overrides the conftest's list)."""
    return request.param


#: Tests of row locks (``FOR UPDATE SKIP LOCKED``), which SQLite has not: one writer at a time.
servers_only = pytest.mark.parametrize("engine_kind", ["postgres", "mariadb"])


@contextlib.contextmanager
def connection(url: str) -> Iterator:
    """A plain DB-API connection of the engine's database, to hold locks the engine meets."""
    settings = urls.parse(url)
    if isinstance(settings, urls.SQLiteURL):
        conn = sqlite3.connect(settings.path, isolation_level=None)
    elif settings.dialect == "mysql":
        conn = pymysql.connect(
            host=settings.host, port=settings.port, user=settings.user,
            password=settings.password, database=settings.database,
        )  # fmt: skip
    else:
        conn = psycopg2.connect(
            host=settings.host, port=settings.port, user=settings.user, dbname=settings.database
        )
    try:
        yield conn
    finally:
        conn.close()


def fill(engine, count: int, queue: str = "default") -> list[str]:
    ids = [f"task-{n:04d}" for n in range(count)]
    for task_id in ids:
        engine.enqueue(queue, task_id, task_id.encode())
    return ids


def drain(engine, consumer: str) -> list[str]:
    """Claim and ack until the queue stays empty; the task ids this consumer ran."""
    ran = []
    while claims := engine.claim(["default"], consumer, count=3, wait=0.3):
        for claim in claims:
            ran.append(claim.task_id)
            engine.ack(claim)
    return ran


def test_four_processes_claiming_at_once_run_each_of_200_tasks_once(
    make_engine, engine_url, tmp_path
):
    app = fresh_app_name()
    fill(make_engine(app), 200)

    def claimer(index: int) -> None:
        engine = open_engine(engine_url, app_name=app)
        (tmp_path / f"ran-{index}").write_text("\n".join(drain(engine, f"worker-{index}")))

    assert run_in_children(4, claimer) == [0, 0, 0, 0]
    ran = [line for index in range(4) for line in (tmp_path / f"ran-{index}").read_text().split()]
    assert sorted(ran) == [f"task-{n:04d}" for n in range(200)]  # each once, none twice
    assert sum(make_engine(app).counts().get("default", {}).values()) == 0


def test_four_threads_of_one_engine_never_get_the_same_task(make_engine):
    engine = make_engine()
    fill(engine, 120)
    ran: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda n=n: ran[n].extend(drain(engine, f"w{n}"))) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [task_id for part in ran for task_id in part]
    assert sorted(everything) == [f"task-{n:04d}" for n in range(120)]


@servers_only
def test_skip_locked_a_claimer_takes_the_next_row_instead_of_waiting(make_engine, engine_url):
    engine = make_engine(statement_timeout=3)
    fill(engine, 2)
    with connection(engine_url) as other:
        cursor = other.cursor()
        cursor.execute(
            "SELECT id FROM scalekit_task WHERE app = %s AND task_id = 'task-0000' FOR UPDATE",
            (engine.app_name,),
        )  # another claimer's transaction, still open, holds the first task
        started = time.monotonic()
        claims = engine.claim(["default"], "w", count=2)
        assert time.monotonic() - started < 1
        assert [claim.task_id for claim in claims] == ["task-0001"]
        other.rollback()
    assert [claim.task_id for claim in engine.claim(["default"], "w")] == ["task-0000"]


def test_an_expired_lease_is_handed_out_again_and_its_first_holder_changes_nothing(make_engine):
    engine = make_engine(visibility_timeout=0.3)
    engine.enqueue("default", "t1", b"first")
    [first] = engine.claim(["default"], "w1")
    assert engine.claim(["default"], "w2") == []  # within the lease: nobody else gets it
    time.sleep(0.35)
    [second] = engine.claim(["default"], "w2")
    assert (second.task_id, second.deliveries, first.deliveries) == ("t1", 2, 1)
    assert second.receipt != first.receipt
    assert engine.retry(first, b"changed", time.time()) is False
    assert engine.bury(first, b"changed", "Traceback...") is False
    assert engine.extend([first, second]) == [first]
    info = engine.find("t1")
    assert (info.state, info.payload, info.deliveries) == ("running", b"first", 2)
    assert engine.retry(second, b"again", time.time() + 60) is True
    assert engine.find("t1").state == "delayed"


def test_a_retried_task_counts_its_deliveries_anew_and_runs_at_its_eta(make_engine):
    engine = make_engine()
    engine.enqueue("default", "t1", b"v1")
    [claim] = engine.claim(["default"], "w")
    assert engine.retry(claim, b"v2", time.time() + 0.3)
    assert engine.claim(["default"], "w") == []
    [again] = engine.claim(["default"], "w", wait=2)
    assert (again.payload, again.deliveries) == (b"v2", 1)


def test_two_threads_racing_with_one_name_enqueue_it_once(make_engine):
    engine = make_engine()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def enqueue(n: int) -> None:
        barrier.wait()
        try:
            engine.enqueue("default", f"t{n}", b"x", name="nightly-report")
            outcomes.append("enqueued")
        except TaskAlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["enqueued"] + ["exists"] * 7
    assert engine.counts()["default"]["waiting"] == 1


@servers_only
def test_processes_racing_with_the_same_names_enqueue_each_once(make_engine, engine_url, tmp_path):
    app = fresh_app_name()
    make_engine(app)  # the tables exist before the race

    def enqueuer(index: int) -> None:
        engine = open_engine(engine_url, app_name=app)
        won = []
        for n in range(25):
            try:
                engine.enqueue("default", f"t{index}-{n}", b"x", name=f"name-{n}")
                won.append(f"name-{n}")
            except TaskAlreadyExists:
                pass
        (tmp_path / f"won-{index}").write_text("\n".join(won))

    assert run_in_children(4, enqueuer) == [0, 0, 0, 0]
    won = [line for index in range(4) for line in (tmp_path / f"won-{index}").read_text().split()]
    assert sorted(won) == sorted(f"name-{n}" for n in range(25))
    assert make_engine(app).counts()["default"]["waiting"] == 25


def test_a_name_is_free_again_once_its_ttl_ended_even_when_its_task_waits(make_engine):
    engine = make_engine(name_ttl=0.3)
    engine.enqueue("default", "t1", b"x", name="once")
    with pytest.raises(TaskAlreadyExists, match="once"):
        engine.enqueue("default", "t2", b"x", name="once")
    engine.enqueue("other", "t3", b"x", name="once")  # names are per queue
    time.sleep(0.35)
    engine.enqueue("default", "t4", b"x", name="once")
    assert [info.task_id for info in engine.tasks("default", "waiting")] == ["t1", "t4"]


def test_a_rejected_name_leaves_no_task_and_a_stored_id_is_refused(make_engine):
    engine = make_engine()
    engine.enqueue("default", "t1", b"x", name="n")
    with pytest.raises(TaskAlreadyExists):
        engine.enqueue("default", "t2", b"x", name="n")
    assert engine.find("t2") is None
    with pytest.raises(TaskAlreadyExists, match="t1"):
        engine.enqueue("default", "t1", b"again")
    assert engine.find("t1").payload == b"x"


def test_order_within_a_queue_is_eta_then_insertion(make_engine):
    engine = make_engine()
    now = time.time()
    engine.enqueue("default", "b", b"")
    engine.enqueue("default", "c", b"")
    engine.enqueue("default", "a", b"", eta=now - 60)  # due a minute ago: first
    engine.enqueue("default", "d", b"", eta=now + 0.2)
    time.sleep(0.25)
    claimed = [claim.task_id for claim in engine.claim(["default"], "w", count=10)]
    assert claimed == ["a", "b", "c", "d"]


def test_a_claimer_killed_mid_transaction_loses_no_task(make_engine, engine_url):
    app = fresh_app_name()
    engine = make_engine(app, visibility_timeout=0.5)
    ids = fill(engine, 30)

    def churn(_index: int) -> None:  # claim and give back, as fast as it can
        churner = open_engine(engine_url, app_name=app, visibility_timeout=0.5)
        while True:
            for claim in churner.claim(["default"], "churner", count=2):
                churner.retry(claim, claim.payload, time.time())

    for _round in range(5):
        pid = os.fork()
        if pid == 0:
            try:
                churn(0)
            finally:
                os._exit(1)
        time.sleep(random.uniform(0.15, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    time.sleep(0.55)  # the leases the last churner held run out
    claims = engine.claim(["default"], "w", count=100)
    assert sorted((claim.task_id, claim.payload) for claim in claims) == [
        (task_id, task_id.encode()) for task_id in ids
    ]


@pytest.mark.parametrize("engine_kind", ["postgres"])
def test_postgres_a_claim_killed_between_its_select_and_update_leaves_the_task_claimable(
    make_engine, postgres_url
):
    app = fresh_app_name()
    engine = make_engine(app, statement_timeout=10)
    engine.enqueue("default", "t1", b"x")
    with connection(postgres_url) as blocker:
        cursor = blocker.cursor()
        # SHARE lets the claim lock its row (FOR UPDATE) but stops its UPDATE
        cursor.execute("LOCK TABLE scalekit_task IN SHARE MODE")
        pid = os.fork()
        if pid == 0:
            try:
                open_engine(postgres_url, app_name=app).claim(["default"], "doomed")
            finally:
                os._exit(1)
        try:
            deadline = time.monotonic() + 10
            while not _waiting_for_a_lock(postgres_url):
                assert time.monotonic() < deadline, "the claim never reached its UPDATE"
                time.sleep(0.02)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        blocker.rollback()
    [claim] = engine.claim(["default"], "w", wait=5)
    assert (claim.task_id, claim.deliveries) == ("t1", 1)


def _waiting_for_a_lock(url: str) -> bool:
    with connection(url) as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'UPDATE%'"
        )
        return cursor.fetchone()[0] > 0


def test_a_locked_table_fails_the_call_within_the_statement_timeout(make_engine, engine_url):
    engine = make_engine(statement_timeout=1, connect_timeout=1)
    engine.enqueue("default", "t1", b"x")
    with connection(engine_url) as other:
        cursor = other.cursor()
        cursor.execute(
            {
                "sqlite": "BEGIN EXCLUSIVE",
                "postgres": "LOCK TABLE scalekit_task IN ACCESS EXCLUSIVE MODE",
                "mysql": "LOCK TABLES scalekit_task WRITE",
            }[_kind(engine_url)]
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"task database .*: "):
            engine.claim(["default"], "w")
        assert time.monotonic() - started < 4
        other.rollback() if _kind(engine_url) != "mysql" else cursor.execute("UNLOCK TABLES")
    [claim] = engine.claim(["default"], "w")  # the engine reconnected
    assert claim.task_id == "t1"


def _kind(url: str) -> str:
    settings = urls.parse(url)
    return "sqlite" if isinstance(settings, urls.SQLiteURL) else settings.dialect


def test_an_unreachable_server_is_store_unavailable_without_the_password():
    url = f"mysql://scalekit:hush-hush@127.0.0.1:{free_port()}/scalekit_test"
    engine = open_engine(url, app_name="shop", connect_timeout=1)
    with pytest.raises(StoreUnavailable) as raised:
        engine.enqueue("default", "t1", b"x")
    assert "hush-hush" not in str(raised.value)
    assert "mysql://scalekit:***@127.0.0.1" in str(raised.value)


def test_create_false_creates_no_file_and_no_table(engine_kind, engine_url, tmp_path):
    url = f"sqlite://{tmp_path}/none/tasks.sqlite" if engine_kind == "sqlite" else engine_url
    engine = open_engine(url, app_name="shop", create=False, table="t_" + fresh_app_name())
    with pytest.raises(StoreNotFound):
        engine.counts()
    engine.close()
    assert not (tmp_path / "none").exists()
    made = open_engine(url, app_name="shop", table=engine.table)
    made.enqueue("default", "t1", b"x")  # the tables made: now create=False opens them
    assert open_engine(url, app_name="shop", create=False, table=engine.table).counts() == {
        "default": {"waiting": 1, "delayed": 0, "running": 0, "dead": 0}
    }


def test_options_come_from_the_url_query_and_keywords(engine_url, tmp_path):
    joiner = "&" if "?" in engine_url else "?"
    url = f"{engine_url}{joiner}visibility_timeout=2m&name_ttl=1d&table=jobs&poll_interval=0.05"
    engine = open_engine(url, app_name="shop", name_ttl=60)
    assert isinstance(engine, SQLEngine)
    assert (engine.visibility_timeout, engine.name_ttl, engine.poll_interval) == (120, 60, 0.05)
    assert (engine.table, engine.name_table, engine.lease_table, engine.queue_table) == (
        "jobs", "jobs_name", "jobs_lease", "jobs_queue",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="unknown option colour"):
        open_engine(engine_url, colour="red")
    with pytest.raises(ConfigError, match="visibility_timeout must be a positive"):
        open_engine(engine_url, visibility_timeout=0)
    with pytest.raises(ConfigError, match="table="):
        open_engine(engine_url, table="jobs; DROP TABLE x")


def test_apps_sharing_the_tables_never_see_each_others_tasks(make_engine):
    shop, blog = make_engine(), make_engine()
    shop.enqueue("default", "t1", b"shop")
    assert blog.claim(["default"], "w") == [] and blog.find("t1") is None
    assert blog.counts() == {}
    blog.enqueue("default", "t1", b"blog")  # the same id in another app
    assert [claim.payload for claim in shop.claim(["default"], "w")] == [b"shop"]


def test_a_waiting_claim_polls_until_a_task_comes(make_engine):
    engine = make_engine(poll_interval=0.05)
    timer = threading.Timer(0.3, engine.enqueue, ("default", "late", b"x"))
    timer.start()
    started = time.monotonic()
    [claim] = engine.claim(["default"], "w", wait=3)
    timer.join()
    assert claim.task_id == "late" and 0.25 < time.monotonic() - started < 1


def test_processes_racing_for_leases_and_names_from_a_fresh_database_never_fail(
    engine_url, tmp_path
):
    app = fresh_app_name()
    table = "t_" + fresh_app_name()  # new tables: the racers also race to create them

    def racer(index: int) -> None:  # (MariaDB deadlocked here: INSERT IGNORE then UPDATE)
        engine = open_engine(engine_url, app_name=app, name_ttl=0.01, table=table)
        held, deadline = 0, time.monotonic() + 1.5
        while time.monotonic() < deadline:
            held += engine.try_lease("scheduler", f"p{index}", 0.01)
            with contextlib.suppress(TaskAlreadyExists):
                engine.enqueue("default", f"{index}-{time.monotonic()}", b"x", name="hourly")
        (tmp_path / f"held-{index}").write_text(str(held))

    assert run_in_children(4, racer) == [0, 0, 0, 0]
    assert sum(int((tmp_path / f"held-{n}").read_text()) for n in range(4)) > 0


def test_the_rows_hold_what_the_module_documents(make_engine, engine_url):
    engine = make_engine()
    engine.enqueue("default", "t1", b"\x00\xffbinary", name="n1")
    engine.enqueue("default", "t2", b"later", eta=time.time() + 60)
    [claim] = engine.claim(["default"], "worker-1")
    select = (
        "SELECT task_id, name, payload, state, due, eta, consumer, token, deliveries, error "
        f"FROM scalekit_task WHERE app = '{engine.app_name}' ORDER BY task_id"
    )
    with connection(engine_url) as conn:
        running, delayed = fetch(conn, select)
        assert running[:4] == ("t1", "n1", b"\x00\xffbinary", "running")  # the bytes as given
        assert running[6:9] == ("worker-1", claim.receipt, 1)
        assert abs(running[4] - (time.time() + engine.visibility_timeout)) < 2  # lease end
        assert (delayed[3], delayed[4], delayed[7]) == ("queued", delayed[5], None)
        engine.bury(claim, b"dead", "Traceback (most recent call last): ...")
        dead = fetch(conn, select)[0]
        assert (dead[3], dead[4], dead[7], dead[9]) == (
            "dead", None, None, "Traceback (most recent call last): ...",
        )  # fmt: skip
        queues = f"SELECT queue FROM scalekit_task_queue WHERE app = '{engine.app_name}'"
        assert fetch(conn, queues) == [("default",)]


def fetch(conn, select: str) -> list[tuple]:
    """The rows of ``select`` as tuples, blobs as bytes (psycopg2 hands out memoryviews)."""
    cursor = conn.cursor()
    cursor.execute(select)
    rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor]
    conn.commit()
    return rows


@pytest.mark.parametrize(
    ("version", "skips"),
    [
        ("10.11.19-MariaDB-0+deb12u1", True),  # the test server's
        ("10.6.4-MariaDB", True),
        ("10.5.23-MariaDB-0+deb11u1", False),  # Debian 11: FOR UPDATE, claimers take turns
        ("8.0.36", True),
        ("5.7.44-log", False),
    ],
)
def test_skip_locked_is_used_on_the_servers_that_have_it(version, skips):
    assert skips_locked(version) is skips


def test_expired_names_are_swept_by_the_next_engine_that_takes_a_name(make_engine, engine_url):
    app = fresh_app_name()
    make_engine(app, name_ttl=0.05).enqueue("default", "t1", b"x", name="old")
    make_engine(app).enqueue("default", "t2", b"x", name="kept")  # not expired yet: kept
    time.sleep(0.1)
    make_engine(app).enqueue("default", "t3", b"x", name="new")  # sweeps "old" first
    with connection(engine_url) as conn:
        names = fetch(conn, f"SELECT name FROM scalekit_task_name WHERE app = '{app}'")
    assert sorted(names) == [("kept",), ("new",)]


def test_threads_opening_a_new_sqlite_file_at_once_all_work(tmp_path):
    failures = []
    for round_ in range(25):  # WAL mode is set as the first connections open the file
        engine = open_engine(f"sqlite://{tmp_path}/{round_}.sqlite", app_name="shop")
        barrier = threading.Barrier(8)

        def enqueue(n: int, engine=engine, barrier=barrier) -> None:
            barrier.wait()
            try:
                engine.enqueue("default", f"t{n}", b"x")
            except StoreUnavailable as exc:
                failures.append(str(exc))

        threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert engine.counts()["default"]["waiting"] == 8
        with connection(f"sqlite://{tmp_path}/{round_}.sqlite") as conn:
            assert fetch(conn, "PRAGMA journal_mode") == [("wal",)]


def test_one_claim_hands_out_at_most_max_claim_tasks(make_engine):
    engine = make_engine()
    fill(engine, MAX_CLAIM + 10)
    assert len(engine.claim(["default"], "w", count=10_000)) == MAX_CLAIM
    assert len(engine.claim(["default"], "w", count=10_000)) == 10
