"""The tables of :class:`~scalekit.tasks.engines.sql.SQLEngine` (their layout is in its
module's docstring): fields, indexes, created or upgraded once per process, and how the
engine runs its SQL on them (placeholders, table names, the row locks of a claim)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from pydal import DAL, Field
from pydal.objects import Table

from scalekit.connect import sql

log = logging.getLogger("scalekit.tasks")

#: The stored state of a task not yet run: ``delayed`` or ``waiting`` by its ``due``.
QUEUED = "queued"
#: Longest queue names, task names, task ids and lease keys (their column lengths).
LENGTHS = {"queue": 128, "name": 255, "task id": 128, "lease key": 255}


def task_fields() -> list[Field]:
    return [
        Field("app", length=64),
        Field("queue", length=LENGTHS["queue"]),
        Field("task_id", length=LENGTHS["task id"]),
        Field("name", length=LENGTHS["name"]),
        Field("payload", "blob"),
        Field("state", length=8),
        Field("due", "double"),
        Field("eta", "double"),
        Field("consumer", length=255),
        Field("token", length=32),
        Field("deliveries", "integer"),
        Field("created", "double"),
        Field("updated", "double"),
        Field("error", "text"),
    ]


def name_fields() -> list[Field]:
    return [
        Field("app", length=64),
        Field("queue", length=LENGTHS["queue"]),
        Field("name", length=LENGTHS["name"]),
        Field("task_id", length=LENGTHS["task id"]),
        Field("expires", "double"),
    ]


def queue_fields() -> list[Field]:
    return [Field("app", length=64), Field("queue", length=LENGTHS["queue"])]


def lease_fields() -> list[Field]:
    return [
        Field("app", length=64),
        Field("lease_key", length=LENGTHS["lease key"]),
        Field("holder", length=128),
        Field("expires", "double"),
    ]


#: ``ready`` serves claims and the waiting and delayed lists, ``state`` the others.
TASK_INDEXES: tuple[sql.Index, ...] = (
    ("task_id", ("app", "task_id"), True),
    ("ready", ("app", "queue", "due", "id"), False),
    ("state", ("app", "queue", "state", "updated"), False),
)
NAME_INDEXES: tuple[sql.Index, ...] = (
    ("name", ("app", "queue", "name"), True),
    ("expires", ("app", "expires"), False),
)
LEASE_INDEXES: tuple[sql.Index, ...] = (("lease_key", ("app", "lease_key"), True),)
QUEUE_INDEXES: tuple[sql.Index, ...] = (("queue", ("app", "queue"), True),)
#: The fields and indexes of the task, name, lease and queue tables, in that order.
SCHEMA = (
    (task_fields, TASK_INDEXES),
    (name_fields, NAME_INDEXES),
    (lease_fields, LEASE_INDEXES),
    (queue_fields, QUEUE_INDEXES),
)

_schema_lock = threading.Lock()
#: (pydal URI hash, task table) whose tables this process has created or upgraded.
_ready: set[tuple[str, str]] = set()


def row_locks(db: DAL) -> str:
    """The clause that locks a claim's rows: ``FOR UPDATE SKIP LOCKED`` where the server has
    it (PostgreSQL 9.5+, MySQL 8.0+, MariaDB 10.6+), else ``FOR UPDATE`` (claimers then wait
    for each other's claim transactions: short, but one at a time); none on SQLite, whose
    claims hold the database's write lock."""
    engine = db._adapter.dbengine
    if engine == "sqlite":
        return ""
    if engine == "mysql" and not skips_locked(db.executesql("SELECT VERSION();")[0][0]):
        return " FOR UPDATE"
    return " FOR UPDATE SKIP LOCKED"


def skips_locked(version: str) -> bool:
    """Whether a MySQL or MariaDB server of ``SELECT VERSION()`` has ``SKIP LOCKED``."""
    numbers = re.match(r"(\d+)\.(\d+)", version)
    release = (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)
    return release >= ((10, 6) if "mariadb" in version.lower() else (8, 0))


class Tables:
    """One thread's DAL, the engine's tables on it, and how to run SQL there."""

    def __init__(self, db: DAL, tasks: Table, names: Table, leases: Table, queues: Table):
        self.db, self.tasks, self.names, self.leases, self.queues = (
            db, tasks, names, leases, queues,
        )  # fmt: skip
        adapter = db._adapter
        self.sqlite = adapter.dbengine == "sqlite"
        self._marker = "?" if adapter.driver.paramstyle == "qmark" else "%s"
        self._lock = row_locks(db)
        self._names = {
            "task": tasks._rname, "name": names._rname, "lease": leases._rname,
            "queue": queues._rname,
        }  # fmt: skip
        self._statements: dict[str, str] = {}

    def run(self, statement: str, *params: Any) -> Any:
        """Run ``statement`` (``?`` marks its parameters, ``{task}``, ``{name}``, ``{lease}``,
        ``{queue}`` the tables, ``{lock}`` the row locks of a claim); the cursor."""
        text = self._statements.get(statement)
        if text is None:
            text = statement.format(lock=self._lock, **self._names).replace("?", self._marker)
            self._statements[statement] = text
        adapter = self.db._adapter
        adapter.execute(text, params)
        return adapter.cursor


def engine_tables(db: DAL, names: Sequence[str], *, migrate: bool, where: str) -> Tables:
    """Define the task, name, lease and queue tables ``names`` on ``db``; the first time in
    this process (with ``migrate``), also create or upgrade them, one process at a time
    (:func:`~scalekit.connect.sql.schema_lock`)."""
    specs = [(name, *schema) for name, schema in zip(names, SCHEMA, strict=True)]
    key = (db._uri_hash, names[0])
    if not migrate or key in _ready:
        defined = [sql.define_table(db, name, fields(), migrate=False) for name, fields, _ in specs]
        return Tables(db, *defined)
    with _schema_lock, sql.schema_lock(db, f"tasks:{names[0]}"):
        # on SQLite (no schema lock) each failure means another process made a table
        # first, or was writing its pydal .table file as this one read it
        attempts = 2 * len(specs)
        for attempt in range(1, attempts + 1):
            try:
                made = [sql.migrate_table(db, *spec) for spec in specs]
                db.commit()
                break
            except (db._adapter.driver.Error, RuntimeError) as exc:
                db.rollback()
                if attempt == attempts:
                    raise
                log.info("task tables of %s: retrying setup after %s", where, exc)
        _ready.add(key)
    return Tables(db, *made)
