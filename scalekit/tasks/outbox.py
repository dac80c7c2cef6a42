"""Transactional enqueue: a task deferred with ``_transactional=True`` is written to an
outbox table in the request's own database transaction, and reaches the engine only once
that transaction has committed.

    scalekit_task_outbox    one row per task waiting to be relayed
        app         string   the Tasks app that deferred it
        queue       string   its queue
        task_id     string   its id
        eta         double   when it should run (Unix time), NULL: at once
        payload     blob     the signed payload, as the engine will store it
        created     double   when it was written (Unix time)

:func:`write` inserts the row through :data:`scalekit.core.context.transaction` (the
request's ``scalekit.db`` scope; outside one it raises MissingContext) and registers the
relay with ``on_commit``: right after the commit the task is enqueued, then its row deleted.
A rollback removes the row with everything else: no task. A process that dies between the
commit and the relay leaves the row: :func:`relay` (``scalekit tasks relay``, from cron or
beside the workers) enqueues what is older than a few seconds.

Exactly once: a relay enqueues the task under the name ``outbox:<task id>`` (so the engine's
atomic name check refuses a second enqueue of it within ``name_ttl``), then deletes the row.
Two relays racing, or a crash after the enqueue and before the delete, find the name taken
(:class:`~scalekit.tasks.errors.TaskAlreadyExists`) and only delete the row. So a task of
the outbox cannot have a ``_name`` of its own: its name would be checked after the commit,
too late to tell ``defer()`` (App Engine refuses named transactional tasks too). A row left
behind for longer than ``name_ttl`` (no relay ran for a week after such a crash) could be
enqueued twice.

The table is created the first time a process needs it to write: on SQLite in the
request's transaction (another connection would wait for the request's write lock), on a
server through a connection of its own (a CREATE there would commit the request's
transaction), one process at a time (:func:`~scalekit.connect.sql.schema_lock`). A relay
creates nothing: without the table there is nothing to relay.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from pydal import DAL, Field
from pydal.objects import Table

from scalekit.connect import sql
from scalekit.core import context
from scalekit.core.errors import InvalidArgument, MissingContext
from scalekit.tasks.engines.base import Engine
from scalekit.tasks.errors import TaskAlreadyExists
from scalekit.tasks.task import Task

__all__ = ["RELAY_AFTER", "TABLE", "relay", "relay_name", "write"]

log = logging.getLogger("scalekit.tasks")

TABLE = "scalekit_task_outbox"
#: Seconds a row waits before :func:`relay` takes it: the relay after the commit comes first.
RELAY_AFTER = 5.0
_INDEXES: tuple[sql.Index, ...] = (("app_created", ("app", "created"), False),)
_ready: set[str] = set()  # the databases (pydal URI hashes) whose outbox table exists
_ready_lock = threading.Lock()


class TasksLike(Protocol):
    """What the outbox needs of a :class:`~scalekit.tasks.Tasks`."""

    engine: Engine
    app_name: str


def relay_name(task_id: str) -> str:
    """The name a task is enqueued under by a relay: the engine refuses it a second time."""
    return f"outbox:{task_id}"


def write(tasks: TasksLike, task: Task, payload: bytes) -> None:
    """Write ``task`` (encoded as ``payload``) to the outbox in the current request's
    transaction, and relay it once that transaction has committed."""
    if task.name is not None:
        raise InvalidArgument(
            f"task {task.function}: _name and _transactional=True together: the name would "
            "be checked after the commit, too late for defer() to raise TaskAlreadyExists"
        )
    try:
        transaction = context.transaction.get()
    except MissingContext as exc:
        raise MissingContext(f"defer(_transactional=True) of {task.function}: {exc}") from None
    db = transaction.writer
    table = _table(db, transaction)
    row_id = table.insert(
        app=tasks.app_name, queue=task.queue, task_id=task.id, eta=task.eta, payload=payload,
        created=time.time(),
    )  # fmt: skip
    engine = tasks.engine

    def relay_now() -> None:  # after the commit, in a transaction of its own
        _enqueue(engine, task.queue, task.id, payload, task.eta)
        writer = transaction.writer
        writer(_table(writer)._id == row_id).delete()

    try:
        transaction.on_commit(relay_now)
    except BaseException:  # refused (a manual view): the row must not outlive the task
        db(table._id == row_id).delete()
        raise


def relay(
    engine: Engine,
    db: DAL | str,
    *,
    app: str = "app",
    limit: int = 1000,
    min_age: float = RELAY_AFTER,
) -> int:
    """Enqueue into ``engine`` the outbox rows of ``app`` older than ``min_age`` seconds (up
    to ``limit``, oldest first) and delete them; how many tasks were enqueued (a task a
    relay enqueued before is only deleted); 0 without an outbox table (none is created).
    ``db``: a DAL, or the database's URL (a database that fails is then
    :class:`StoreUnavailable`, its URL masked). The payloads go as they are: no secret
    needed. An engine that fails stops the relay (raised); the rows enqueued until then
    are deleted."""
    if isinstance(db, str):
        return _relay_url(engine, db, app=app, limit=limit, min_age=min_age)
    if sql.columns(db, TABLE) is None:
        return 0
    table = sql.define_table(db, TABLE, _fields(), migrate=False)
    query = (table.app == app) & (table.created <= time.time() - min_age)
    rows = db(query).select(orderby=table.created | table._id, limitby=(0, limit))
    done, relayed = [], 0
    try:
        for row in rows:
            relayed += _enqueue(engine, row.queue, row.task_id, _bytes(row.payload), row.eta)
            done.append(row[table._id.name])
    finally:
        if done:
            db(table._id.belongs(done)).delete()
        db.commit()
    return relayed


def _relay_url(engine: Engine, url: str, **options: Any) -> int:
    """:func:`relay` from the database at ``url``, on a DAL of its own."""
    with sql.opened(url, "outbox database") as db:
        return relay(engine, db, **options)


def _enqueue(engine: Engine, queue: str, task_id: str, payload: bytes, eta: float | None) -> bool:
    """Enqueue one outbox task under its relay name; False if a relay did it before."""
    try:
        engine.enqueue(queue, task_id, payload, eta=eta, name=relay_name(task_id))
    except TaskAlreadyExists:
        log.info(
            "outbox task %s of queue %s was relayed before: not enqueued again", task_id, queue
        )
        return False
    return True


def _fields() -> list[Field]:
    return [
        Field("app", length=64),
        Field("queue", length=128),
        Field("task_id", length=64),
        Field("eta", "double"),
        Field("payload", "blob"),
        Field("created", "double"),
    ]


def _table(db: DAL, transaction: Any = None) -> Table:
    """The outbox table on ``db``; the first time in this process, also create it. On
    SQLite in ``db``'s transaction (DDL is transactional there; known to exist once
    ``transaction`` commits, else at once: the caller commits); on a server through a
    connection of its own (pydal commits after a CREATE, MySQL before and after)."""
    key = db._uri_hash
    if key in _ready and TABLE in db.tables:  # defined on this DAL already
        return db[TABLE]
    table = sql.define_table(db, TABLE, _fields(), migrate=False)
    if key in _ready:
        return table
    if db._adapter.dbengine != "sqlite":
        with _ready_lock:
            if key not in _ready:
                _create_apart(db)
                _ready.add(key)
        return table
    create = db._adapter.create_table(table, migrate=False)
    db.executesql(create.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
    for suffix, on, unique in _INDEXES:
        sql.create_index(db, table, sql.identifier(f"{TABLE}_{suffix}"), on, unique)
    if transaction is None:
        _ready.add(key)
    else:
        transaction.on_commit(lambda: _ready.add(key))
    return table


def _create_apart(db: DAL) -> None:
    """Create the outbox table through a connection of its own to ``db``'s database, one
    process at a time: two CREATEs at once fail on PostgreSQL (UniqueViolation). Its
    pydal ``.table`` files (a cache) go to the private folder: ``db``'s may not exist on
    an app server that never migrates."""
    options = {
        "uri": db._uri, "folder": None, "pool_size": 0, "driver_args": db._driver_args,
        "adapter_args": db._adapter_args, "decode_credentials": db._decode_credentials,
    }  # fmt: skip
    apart = sql.open_dal(options, f"outbox table {TABLE}")
    try:
        with sql.schema_lock(apart, f"tasks:{TABLE}"):
            try:
                sql.migrate_table(apart, TABLE, _fields, _INDEXES)
                apart.commit()
            except BaseException:
                apart.rollback()  # the lock is given back in a usable transaction
                raise
    finally:
        sql.close(apart, "rollback")


def _bytes(payload: bytes | str) -> bytes:
    """pydal hands back a blob that is valid UTF-8 as str."""
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
