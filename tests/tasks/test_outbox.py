"""Transactional enqueue through real requests: ``defer(_transactional=True)`` inside a
``scalekit.db`` request scope on SQLite and PostgreSQL, relayed into the real engines.

A crash between the commit and the relay is a child process killed with SIGKILL by an
on_commit callback that runs before the relay's (this module run as ``python -m``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from pydal import DAL, Field

from scalekit import db as scalekit_db
from scalekit.cli import main
from scalekit.connect import sql
from scalekit.core import context
from scalekit.core.errors import InvalidArgument, MissingContext
from scalekit.core.urls import parse
from scalekit.db import DBMiddleware, ReplicaSet
from scalekit.tasks import Tasks
from scalekit.tasks.outbox import TABLE, relay, relay_name
from scalekit.testing import fresh_app_name, run_in_children
from scalekit.tickets import TicketMiddleware
from tests.servers import free_port
from tests.tasks import jobs
from tests.wsgi import Client

SECRET = "o" * 32
ROOT = Path(__file__).resolve().parents[2]
#: (the app's database, the task engine): the SQL engine beside the app's tables, and Redis
PAIRS = [
    ("sqlite", "sqlite"), ("postgres", "postgres"), ("mysql", "mysql"),
    ("sqlite", "redis"), ("postgres", "redis"),
]  # fmt: skip


def send_mail(to: str) -> str:
    return f"sent to {to}"


class Boom(Exception):
    pass


def define(db: DAL) -> None:
    """The guest book's table, created from the live database if missing (tests share the
    PostgreSQL server, each with a pydal folder of its own)."""
    sql.migrate_table(db, "outbox_guest", lambda: [Field("name")], ())


def make_app(db_url: str, tasks: Tasks, folder: str, before=None) -> DBMiddleware:
    """A guest book: ``POST /sign/<name>`` inserts ``name`` and defers its mail
    transactionally (``/fail/<name>``: then raises); ``before(scope)`` runs first."""

    def view(environ, start_response):
        action, name = environ["PATH_INFO"].strip("/").split("/")
        scope = context.transaction.get()
        if before is not None:
            before(scope)
        scope.writer.outbox_guest.insert(name=name)
        task_id = tasks.defer(send_mail, name, _transactional=True)
        if action == "fail":
            raise Boom(name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [task_id.encode()]

    return DBMiddleware(view, ReplicaSet(db_url, folder=folder), define=define)


@pytest.fixture(params=PAIRS, ids=[f"{db}-db-{engine}-engine" for db, engine in PAIRS])
def pair(request, tmp_path) -> tuple[str, str]:
    db, engine = request.param
    urls = {"sqlite": f"sqlite://{tmp_path}/app.sqlite"}
    for kind in {db, engine} - {"sqlite"}:
        urls[kind] = request.getfixturevalue(f"{kind}_url")
    engine_url = f"sqlite://{tmp_path}/tasks.sqlite" if engine == "sqlite" else urls[engine]
    return urls[db], engine_url


@pytest.fixture
def db_url(pair) -> str:
    return pair[0]


@pytest.fixture
def tasks(pair):
    tasks = Tasks(pair[1], fresh_app_name(), secret=SECRET, visibility_timeout=5)
    yield tasks
    tasks.close()


@pytest.fixture
def client(db_url, tasks, tmp_path) -> Client:
    """The guest book under TicketMiddleware, as in a deploy (it sets the request id)."""
    return Client(TicketMiddleware(make_app(db_url, tasks, str(tmp_path)), f"file://{tmp_path}"))


def queued(tasks: Tasks) -> list[tuple[str, tuple]]:
    """The ids and arguments of the tasks a worker can claim now (claimed, then acked)."""
    claims = tasks.engine.claim(["default"], "test", count=10)
    for claim in claims:
        tasks.engine.ack(claim)
    return [(claim.task_id, tasks.decode(claim.payload).args) for claim in claims]


def outbox_rows(db_url: str, folder: str, app: str) -> int:
    """The outbox rows of ``app`` committed in the database at ``db_url``."""
    options = sql.dal_options(parse(db_url), folder=folder, timeout=None)
    db = sql.open_dal(options, "test")
    try:
        if sql.columns(db, TABLE) is None:
            return 0
        query = f"SELECT COUNT(*) FROM {TABLE} WHERE app = '{app}'"
        return int(db.executesql(query)[0][0])
    finally:
        sql.close(db, "rollback")


def test_a_commit_enqueues_the_task_once_and_leaves_no_row(client, tasks, db_url, tmp_path):
    response = client.request("/sign/ann", method="POST", headers={"X-Request-ID": "req-ann"})
    assert response.status == 200
    [claim] = tasks.engine.claim(["default"], "test")
    assert claim.task_id == response.text and claim.deliveries == 1
    task = tasks.decode(claim.payload)
    assert (task.args, task.request_id) == (("ann",), "req-ann")
    tasks.engine.ack(claim)
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=0) == 0
    assert queued(tasks) == []


def test_a_rollback_leaves_no_task_and_no_row(client, tasks, db_url, tmp_path):
    assert client.request("/fail/bob", method="POST").status == 500
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=0) == 0
    assert queued(tasks) == []


def test_an_autocommit_view_relays_at_once(db_url, tasks, tmp_path):
    client = Client(make_app(db_url, tasks, str(tmp_path), before=lambda scope: scope.autocommit()))
    task_id = client.request("/sign/cy", method="POST").text
    assert queued(tasks) == [(task_id, ("cy",))]
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0


def test_outside_a_request_or_with_a_name_it_is_refused(tasks):
    with pytest.raises(MissingContext, match=r"_transactional=True.*DBMiddleware or @with_db"):
        tasks.defer(send_mail, "dee", _transactional=True)
    with pytest.raises(InvalidArgument, match="_name and _transactional"):
        tasks.defer(send_mail, "dee", _transactional=True, _name="once")


def test_a_manual_view_is_refused_and_leaves_no_row(db_url, tasks, tmp_path):
    def view(environ, start_response):
        scope = scalekit_db.current()
        scope.manual()
        with pytest.raises(MissingContext, match="manual view"):
            tasks.defer(send_mail, "fay", _transactional=True)
        scope.writer.commit()
        start_response("200 OK", [])
        return [b"refused"]

    app = DBMiddleware(view, ReplicaSet(db_url, folder=str(tmp_path)), define=define)
    assert Client(app).request("/", method="POST").text == "refused"
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0
    assert queued(tasks) == []


def crash_after_commit(db_url: str, tasks: Tasks, folder: str) -> str:
    """Sign the guest book in a child process killed right after the commit, before the
    relay; the task's id (the child prints it before the request ends)."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.tasks.test_outbox", db_url, tasks.settings.url,
         tasks.app_name, folder],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    return child.stdout.strip()


def test_a_crash_between_commit_and_relay_is_relayed_once_later(tasks, db_url, tmp_path, capsys):
    task_id = crash_after_commit(db_url, tasks, str(tmp_path))
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 1
    assert queued(tasks) == []
    # too young: its own relay may be running
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=60) == 0
    command = ["tasks", "--store", tasks.settings.url, "--app", tasks.app_name]
    assert main([*command, "relay", "--db", db_url]) == 0
    assert capsys.readouterr().out == ""  # a cron job: quiet unless it fails or -v
    assert main([*command, "-v", "relay", "--db", db_url, "--min-age", "0"]) == 0
    assert "1 task(s) relayed from the outbox" in capsys.readouterr().out
    assert queued(tasks) == [(task_id, ("eve",))]
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=0) == 0
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0


def test_a_crash_after_the_enqueue_is_not_enqueued_twice(tasks, db_url, tmp_path):
    """The state a relay killed after its enqueue and before its delete leaves: the task
    enqueued under its relay name, the row still there."""
    task_id = crash_after_commit(db_url, tasks, str(tmp_path))
    payload = tasks.encode(tasks.task_for(send_mail, ("eve",), {}))
    tasks.engine.enqueue("default", task_id, payload, name=relay_name(task_id))
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=0) == 0
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0
    assert [task for task, _ in queued(tasks)] == [task_id]


def _killed_after_commit(db_url: str, engine_url: str, app: str, folder: str) -> None:
    """The child of :func:`crash_after_commit`."""
    tasks = Tasks(engine_url, app, secret=SECRET)

    def kill_first(scope) -> None:
        scope.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))

    original = tasks.defer

    def defer(*args, **kwargs):
        task_id = original(*args, **kwargs)
        print(task_id, flush=True)
        return task_id

    tasks.defer = defer
    Client(make_app(db_url, tasks, folder, before=kill_first)).request("/sign/eve", method="POST")
    raise SystemExit("the request ended: the kill did not happen")


def _killed_after_committing_a_job(
    db_url: str, engine_url: str, app: str, folder: str, runs: str
) -> None:
    """A guest book request that also defers :func:`jobs.done` (recording its run in
    ``runs``) transactionally, killed by SIGKILL after its commit, before its relay."""
    tasks = Tasks(engine_url, app, secret=SECRET)

    def before(scope) -> None:
        scope.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))  # before the relays
        tasks.defer(jobs.done, runs, "relayed", _transactional=True)

    Client(make_app(db_url, tasks, folder, before=before)).request("/sign/gus", method="POST")
    raise SystemExit("the request ended: the kill did not happen")


def test_a_task_left_by_a_crash_between_commit_and_relay_runs_once_on_a_worker(
    tasks, db_url, tmp_path
):
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCALEKIT_TASKS_SECRET": SECRET}
    code = "import sys; from tests.tasks.test_outbox import _killed_after_committing_a_job as c; "
    child = subprocess.run(
        [sys.executable, "-c", code + "c(*sys.argv[1:])", db_url, tasks.settings.url,
         tasks.app_name, str(tmp_path), str(runs)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 2  # the job and the mail
    assert sum(sum(states.values()) for states in tasks.engine.counts().values()) == 0
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=0) == 2
    command = [sys.executable, "-m", "scalekit", "tasks", "--store", tasks.settings.url,
               "--app", tasks.app_name, "worker", "--burst"]  # fmt: skip
    worker = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    [runner] = jobs.runs(str(runs), "relayed")  # ran once, in the worker process
    assert runner != os.getpid()
    assert relay(tasks.engine, db_url, app=tasks.app_name, min_age=0) == 0
    assert outbox_rows(db_url, str(tmp_path), tasks.app_name) == 0
    assert tasks.engine.counts() == {
        "default": {"waiting": 0, "delayed": 0, "running": 0, "dead": 0}
    }


def fresh_postgres_database(postgres_url: str) -> str:
    """The URL of a new, empty database on the test PostgreSQL server."""
    settings = parse(postgres_url)
    name = f"outbox_{uuid.uuid4().hex}"
    conn = psycopg2.connect(
        host=settings.host, port=settings.port, user=settings.user, dbname=settings.database
    )
    conn.autocommit = True
    try:
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return f"{postgres_url.rsplit('/', 1)[0]}/{name}"


@pytest.mark.parametrize("race", [1, 2, 3])
def test_processes_deferring_at_once_on_a_fresh_database_create_the_table_without_failing(
    race, postgres_url, redis_url, tmp_path
):
    """Four app processes' first transactional defers on a database without the outbox
    table: each makes it (without the schema lock, one race in two had a loser: a 500,
    UniqueViolation on pg_type or on the index). Three races, each on a database of its own."""
    db_url, app = fresh_postgres_database(postgres_url), fresh_app_name()
    options = sql.dal_options(parse(db_url), folder=str(tmp_path), timeout=None)
    db = sql.open_dal(options, "test")
    define(db)  # the guest book's table: only the outbox's is raced for
    sql.close(db, "commit")
    start = time.time() + 0.5

    def sign(index: int) -> None:
        tasks = Tasks(redis_url, app, secret=SECRET)
        folder = tmp_path / str(index)  # pydal's .table files, one folder per process
        folder.mkdir()
        client = Client(make_app(db_url, tasks, str(folder)))
        time.sleep(max(0.0, start - time.time()))
        assert client.request(f"/sign/p{index}", method="POST").status == 200

    assert run_in_children(4, sign) == [0, 0, 0, 0]
    tasks = Tasks(redis_url, app, secret=SECRET)
    assert tasks.engine.counts()["default"]["waiting"] == 4
    tasks.close()
    assert outbox_rows(db_url, str(tmp_path), app) == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_relay_on_a_database_without_the_outbox_creates_nothing(
    kind, redis_url, tmp_path, capsys, request
):
    tasks = Tasks(redis_url, fresh_app_name(), secret=SECRET)
    if kind == "sqlite":
        db_url = f"sqlite://{tmp_path}/other.sqlite"
    else:
        db_url = fresh_postgres_database(request.getfixturevalue("postgres_url"))
    options = sql.dal_options(parse(db_url), folder=str(tmp_path), timeout=None)
    db = sql.open_dal(options, "test")  # the app's database, its tables made by the app
    define(db)
    db.commit()
    try:
        assert relay(tasks.engine, db, app=tasks.app_name, min_age=0) == 0
        command = ["tasks", "--store", tasks.settings.url, "--app", tasks.app_name, "relay"]
        assert main([*command, "--db", db_url]) == 0
        assert capsys.readouterr().out == ""
        assert main(["tasks", "--store", tasks.settings.url, "-v", "relay", "--db", db_url]) == 0
        assert "0 task(s) relayed from the outbox" in capsys.readouterr().out
        assert sql.columns(db, TABLE) is None
    finally:
        sql.close(db, "rollback")
        tasks.close()


def test_a_relay_with_the_database_down_fails_in_one_line(redis_url, capsys):
    db_url = f"postgres://app:s3cret@127.0.0.1:{free_port()}/shop"
    command = ["tasks", "--store", redis_url, "relay", "--db", db_url]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("scalekit tasks: outbox database postgres://app:***@127.0.0.1:")
    assert "s3cret" not in line and "Traceback" not in line


if __name__ == "__main__":  # the module again under its own name: send_mail is found there
    from tests.tasks.test_outbox import _killed_after_commit as child

    child(*sys.argv[1:5])
