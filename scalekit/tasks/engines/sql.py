"""SQLEngine: deferred tasks in SQL tables through pydal (SQLite, PostgreSQL, MySQL/MariaDB).

Four tables, shared by every app (``table=`` names the first, default ``scalekit_task``;
the others add ``_name``, ``_lease`` and ``_queue``)::

    scalekit_task         one row per task; UNIQUE (app, task_id)
        app, queue, task_id, name          strings (name NULL when unnamed)
        payload           blob      the encoded task, as the facade made it
        state             string    queued, running or dead
        due               double    Unix time: when a queued task is ready (delayed until
                                    then, waiting after), when a running task's lease ends;
                                    NULL for a dead one
        eta               double    the eta it was enqueued or retried with; NULL: at once
        consumer, token   strings   the worker running it and the lease token it holds
        deliveries        integer   hand-outs of this payload
        created, updated  double    Unix times (a dead task: updated is when it was buried)
        error             text      a dead task's traceback
    scalekit_task_name    names taken: app, queue, name (UNIQUE), task_id, expires
    scalekit_task_lease   leases: app, lease_key (UNIQUE), holder, expires
    scalekit_task_queue   the queues that have or had tasks: app, queue (UNIQUE)

The schema and how SQL runs on it are in ``_sql_tables``. A claim is one transaction: the
first ``count`` rows of the queue with ``due <= now`` (queued ones come due, expired leases
run out: both are handed out by the same index, oldest first), locked with ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, MySQL 8.0+ and MariaDB 10.6+ (a claimer never waits for
another's rows; older MySQL/MariaDB: ``FOR UPDATE``), under ``BEGIN IMMEDIATE`` on SQLite
(one writer at a time, WAL mode so readers never wait), then marked ``running`` with a
fresh lease token and ``deliveries`` + 1: ``retry``, ``bury`` and ``extend`` match that
token, so a worker that lost its lease changes nothing. Times are the clients' clocks:
keep the servers' clocks in sync (NTP).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydal import DAL

from scalekit.connect import sql
from scalekit.core.checks import check_app_name, check_lease
from scalekit.core.errors import InvalidArgument, StoreUnavailable
from scalekit.core.options import as_bool, merge_options, parse_duration
from scalekit.core.urls import BackendURL
from scalekit.tasks.engines._sql_tables import LENGTHS, QUEUED, Tables, engine_tables
from scalekit.tasks.engines.base import (
    DEAD,
    DELAYED,
    STATES,
    WAITING,
    Claim,
    Engine,
    TaskInfo,
    check_state,
    positive_seconds,
)
from scalekit.tasks.errors import TaskAlreadyExists

__all__ = ["SQLEngine"]

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "visibility_timeout": parse_duration,
    "name_ttl": parse_duration,
    "table": str,
    "poll_interval": float,
    "folder": str,
    "pool_size": int,
    "connect_timeout": float,
    "statement_timeout": float,
    "migrate": as_bool,
    "create": as_bool,
}
#: Seconds between two sweeps of expired names by one engine.
_SWEEP_EVERY = 600.0
#: Most tasks one claim hands out (its UPDATE binds one parameter per task).
MAX_CLAIM = 500
_TASK_COLUMNS = (
    "app", "queue", "task_id", "name", "payload", "state", "due", "eta",
    "deliveries", "created", "updated",
)  # fmt: skip
_INFO = "queue, task_id, state, payload, eta, name, deliveries, error, due"


class SQLEngine(Engine):
    """Tasks in SQL tables (see the module). Options (keywords or URL query):
    ``visibility_timeout`` (seconds or a duration, default 30), ``name_ttl`` (default 7
    days), ``table`` (default ``scalekit_task``), ``poll_interval`` (seconds between two
    looks of a waiting :meth:`claim`, default 0.2), ``migrate`` (create and upgrade the
    tables, default true), ``create`` (false: open existing tables only, creating no file
    or table; a missing one is :class:`~scalekit.core.errors.StoreNotFound`), and for the
    connections ``folder``, ``pool_size``, ``connect_timeout`` (default 5 s; on SQLite how
    long to wait for the write lock) and ``statement_timeout`` (default 5 s), as
    :func:`scalekit.connect.sql.dal_options` reads them."""

    def __init__(
        self,
        settings: BackendURL,
        app_name: str = "app",
        *,
        visibility_timeout: float = 30.0,
        name_ttl: float = 7 * 86400.0,
        table: str = "scalekit_task",
        poll_interval: float = 0.2,
        folder: str | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        migrate: bool = True,
        create: bool = True,
    ):
        self.masked = settings.masked
        self.app_name = check_app_name(app_name)
        self.visibility_timeout = positive_seconds(
            visibility_timeout, f"{self.masked}: visibility_timeout"
        )
        self.name_ttl = positive_seconds(name_ttl, f"{self.masked}: name_ttl")
        self.poll_interval = positive_seconds(poll_interval, f"{self.masked}: poll_interval")
        self.table = sql.check_table_name(table, self.masked)
        self.name_table = sql.identifier(f"{table}_name")
        self.lease_table = sql.identifier(f"{table}_lease")
        self.queue_table = sql.identifier(f"{table}_queue")
        self.migrate, self.create = bool(migrate), bool(create)
        self._dal_options = sql.dal_options(
            settings,
            folder=folder,
            timeout=connect_timeout,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
        )
        self._statement_timeout = statement_timeout or sql.STATEMENT_TIMEOUT
        self._password = getattr(settings, "password", None)
        self._dals = sql.ThreadDAL(self._connect, self._prepare)
        self._next_sweep = 0.0
        self._known_queues: set[str] = set()  # listed in the queue table already

    @classmethod
    def from_url(cls, settings: Any, app_name: str = "app", **options: Any) -> SQLEngine:
        """Open ``sqlite://``, ``postgres://`` or ``mysql://`` URLs; see the class."""
        return cls(settings, app_name, **merge_options(settings, _OPTIONS, options))

    def __repr__(self) -> str:
        return f"<SQLEngine {self.masked} table={self.table} app={self.app_name}>"

    # -- the protocol -------------------------------------------------------------------
    def enqueue(
        self,
        queue: str,
        task_id: str,
        payload: bytes,
        *,
        eta: float | None = None,
        name: str | None = None,
    ) -> None:
        _check("queue", queue)
        _check("task id", task_id)
        if name is not None:
            _check("name", name)
        now = time.time()
        if name is not None and now >= self._next_sweep:
            self._sweep_names(now)
        row = (self.app_name, queue, task_id, name, bytes(payload), QUEUED,
               now if eta is None else eta, eta, 0, now, now)  # fmt: skip
        with self._transaction() as tables:
            if not sql.insert_new_rows(tables.db, tables.tasks, _TASK_COLUMNS, [row]):
                raise TaskAlreadyExists(f"task {task_id} is stored already ({self.masked})")
            if name is not None and not self._take_name(tables, queue, name, task_id, now):
                raise TaskAlreadyExists(
                    f"a task named {name!r} was enqueued in queue {queue!r} within "
                    f"name_ttl ({self.name_ttl:g} s)"
                )
            if queue not in self._known_queues:
                sql.insert_new(tables.db, tables.queues, app=self.app_name, queue=queue)
        self._known_queues.add(queue)

    def claim(
        self, queues: Sequence[str], consumer: str, *, count: int = 1, wait: float = 0.0
    ) -> list[Claim]:
        if isinstance(queues, str) or not queues:
            raise InvalidArgument(f"claim takes a list of queues, not {queues!r:.60}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count={count!r} must be a whole number of 1 or more")
        count, deadline = min(count, MAX_CLAIM), time.monotonic() + max(wait, 0.0)
        while True:
            claims = self._claim_now(queues, consumer, count)
            left = deadline - time.monotonic()
            if claims or left <= 0:
                return claims
            time.sleep(min(self.poll_interval, left))

    def extend(self, claims: Sequence[Claim]) -> list[Claim]:
        now, lost = time.time(), []
        with self._transaction() as tables:
            for claim in claims:
                renewed = tables.run(
                    "UPDATE {task} SET due = ?, updated = ? WHERE app = ? AND queue = ? "
                    "AND task_id = ? AND token = ? AND state = 'running';",
                    now + self.visibility_timeout, now, self.app_name, *_owner(claim),
                ).rowcount  # fmt: skip
                if renewed != 1:
                    lost.append(claim)
        return lost

    def ack(self, claim: Claim) -> None:
        with self._transaction() as tables:
            tables.run(
                "DELETE FROM {task} WHERE app = ? AND queue = ? AND task_id = ?;",
                self.app_name, claim.queue, claim.task_id,
            )  # fmt: skip

    def retry(self, claim: Claim, payload: bytes, eta: float) -> bool:
        now = time.time()
        with self._transaction() as tables:
            return tables.run(
                "UPDATE {task} SET state = 'queued', due = ?, eta = ?, payload = ?, "
                "consumer = NULL, token = NULL, deliveries = 0, updated = ? WHERE app = ? "
                "AND queue = ? AND task_id = ? AND token = ? AND state = 'running';",
                eta, eta, bytes(payload), now, self.app_name, *_owner(claim),
            ).rowcount == 1  # fmt: skip

    def bury(self, claim: Claim, payload: bytes, error: str) -> bool:
        now = time.time()
        with self._transaction() as tables:
            return tables.run(
                "UPDATE {task} SET state = 'dead', due = NULL, payload = ?, error = ?, "
                "consumer = NULL, token = NULL, updated = ? WHERE app = ? AND queue = ? "
                "AND task_id = ? AND token = ? AND state = 'running';",
                bytes(payload), error, now, self.app_name, *_owner(claim),
            ).rowcount == 1  # fmt: skip

    def revive(self, queue: str, task_id: str, payload: bytes | None = None) -> bool:
        now = time.time()
        where = "WHERE app = ? AND queue = ? AND task_id = ? AND state = 'dead';"
        revived = "UPDATE {task} SET state = 'queued', due = ?, eta = NULL, error = NULL, "
        revived += "deliveries = 0, updated = ?"
        with self._transaction() as tables:
            if payload is None:
                cursor = tables.run(f"{revived} {where}", now, now, self.app_name, queue, task_id)
            else:
                cursor = tables.run(
                    f"{revived}, payload = ? {where}",
                    now, now, bytes(payload), self.app_name, queue, task_id,
                )  # fmt: skip
            return cursor.rowcount == 1

    def find(self, task_id: str, queue: str | None = None) -> TaskInfo | None:
        select = f"SELECT {_INFO} FROM {{task}} WHERE app = ? AND task_id = ?"
        with self._transaction(write=False) as tables:
            if queue is None:
                rows = tables.run(f"{select};", self.app_name, task_id).fetchall()
            else:
                rows = tables.run(f"{select} AND queue = ?;", self.app_name, task_id, queue)
                rows = rows.fetchall()
        return _info(rows[0], time.time()) if rows else None

    def tasks(self, queue: str, state: str, limit: int = 50) -> list[TaskInfo]:
        now = time.time()
        where, params = _in_state(state, now)
        order = "updated DESC, id DESC" if state == DEAD else "due, id"
        statement = (
            f"SELECT {_INFO} FROM {{task}} WHERE app = ? AND queue = ? AND {where} "
            f"ORDER BY {order} LIMIT ?;"
        )
        with self._transaction(write=False) as tables:
            rows = tables.run(statement, self.app_name, queue, *params, int(limit)).fetchall()
        return [_info(row, now) for row in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        now = time.time()
        with self._transaction(write=False) as tables:
            rows = tables.run(
                "SELECT queue, CASE WHEN state = 'queued' AND due > ? THEN 'delayed' "
                "WHEN state = 'queued' THEN 'waiting' ELSE state END AS shown, COUNT(*) "
                "FROM {task} WHERE app = ? GROUP BY queue, shown;",
                now, self.app_name,
            ).fetchall()  # fmt: skip
            queues = tables.run("SELECT queue FROM {queue} WHERE app = ?;", self.app_name)
            counts = {queue: dict.fromkeys(STATES, 0) for (queue,) in queues.fetchall()}
        for queue, state, number in rows:
            counts.setdefault(queue, dict.fromkeys(STATES, 0))[state] = int(number)
        return counts

    def purge(self, queue: str, state: str | None = None) -> int:
        where, params = ("1 = 1", ()) if state is None else _in_state(state, time.time())
        statement = f"DELETE FROM {{task}} WHERE app = ? AND queue = ? AND {where};"
        with self._transaction() as tables:
            return max(tables.run(statement, self.app_name, queue, *params).rowcount, 0)

    def try_lease(self, key: str, holder: str, ttl: float) -> bool:
        _check("lease key", key)
        ttl, now = check_lease(holder, ttl), time.time()
        with self._transaction() as tables:  # UPDATE first: see _take_name
            if tables.run(
                "UPDATE {lease} SET holder = ?, expires = ? WHERE app = ? AND lease_key = ? "
                "AND (holder = ? OR expires <= ?);",
                holder, now + ttl, self.app_name, key, holder, now,
            ).rowcount == 1:  # fmt: skip
                return True
            values = {"app": self.app_name, "lease_key": key, "holder": holder}
            return sql.insert_new(tables.db, tables.leases, expires=now + ttl, **values)

    def release_lease(self, key: str, holder: str) -> None:
        with self._transaction() as tables:
            tables.run(
                "DELETE FROM {lease} WHERE app = ? AND lease_key = ? AND holder = ?;",
                self.app_name, key, holder,
            )  # fmt: skip

    def close(self) -> None:
        """Close this thread's connection; other threads reopen theirs on next use."""
        self._dals.close()

    # -- steps ----------------------------------------------------------------------------
    def _claim_now(self, queues: Sequence[str], consumer: str, count: int) -> list[Claim]:
        """One claim transaction: lock the first due rows of each queue, mark them running."""
        now, token, claims = time.time(), secrets.token_hex(16), []
        with self._transaction() as tables:
            for queue in queues:
                rows = tables.run(
                    "SELECT id, task_id, payload, deliveries FROM {task} WHERE app = ? AND "
                    "queue = ? AND due <= ? ORDER BY due, id LIMIT ?{lock};",
                    self.app_name, queue, now, count - len(claims),
                ).fetchall()  # fmt: skip
                if not rows:
                    continue
                marks = ", ".join("?" * len(rows))
                tables.run(
                    "UPDATE {task} SET state = 'running', due = ?, consumer = ?, token = ?, "
                    f"deliveries = deliveries + 1, updated = ? WHERE id IN ({marks});",
                    now + self.visibility_timeout, consumer, token, now,
                    *(row[0] for row in rows),
                )  # fmt: skip
                claims += [
                    Claim(queue, task_id, bytes(payload), (deliveries or 0) + 1, token)
                    for _, task_id, payload, deliveries in rows
                ]
                if len(claims) == count:
                    break
        return claims

    def _take_name(self, tables: Tables, queue: str, name: str, task_id: str, now: float) -> bool:
        """Take ``name`` in ``queue`` for ``name_ttl``: one that expired, or a new one.
        The UPDATE comes first: on MySQL an INSERT that meets a duplicate holds a shared
        lock on it, and two of them then both waiting to UPDATE it would deadlock."""
        if tables.run(
            "UPDATE {name} SET task_id = ?, expires = ? WHERE app = ? AND queue = ? AND "
            "name = ? AND expires <= ?;",
            task_id, now + self.name_ttl, self.app_name, queue, name, now,
        ).rowcount == 1:  # fmt: skip
            return True
        values = {"app": self.app_name, "queue": queue, "name": name, "task_id": task_id}
        return sql.insert_new(tables.db, tables.names, expires=now + self.name_ttl, **values)

    def _sweep_names(self, now: float) -> None:
        """Delete this app's expired names (at most every ``_SWEEP_EVERY`` seconds)."""
        self._next_sweep = now + _SWEEP_EVERY
        with self._transaction() as tables:
            tables.run("DELETE FROM {name} WHERE app = ? AND expires <= ?;", self.app_name, now)

    # -- connections --------------------------------------------------------------------
    def _transaction(self, write: bool = True) -> contextlib.AbstractContextManager[Tables]:
        """This thread's tables in one transaction (on SQLite, a write one takes the lock
        first), committed after the block; driver errors become :class:`StoreUnavailable`."""
        return self._dals.transaction(self._unavailable, write=write)

    def _connect(self) -> DAL:
        return sql.connect(
            self._dal_options, self._where, create=self.create, unavailable=self._unavailable
        )

    def _prepare(self, db: DAL) -> Tables:
        """``db`` with the engine's tables defined (created or upgraded first, once per
        process, with ``migrate``), and its session set up for queues."""
        try:
            sql.session_defaults(db, self._statement_timeout, wal=self.create)
            if not self.create:
                for table in (self.table, self.name_table, self.lease_table, self.queue_table):
                    sql.require_table(db, table, self._where)
            names = (self.table, self.name_table, self.lease_table, self.queue_table)
            tables = engine_tables(db, names, migrate=self.migrate, where=self.masked)
            db.commit()
        except db._adapter.driver.Error as exc:
            raise self._unavailable(exc) from exc
        return tables

    @property
    def _where(self) -> str:
        return f"task database {self.masked}"

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        fix = f"{sql.CHECK_SERVER} and table {self.table} is usable (migrate=true creates it)"
        return sql.unavailable(self._where, exc, self._password, fix)


def _check(what: str, value: Any) -> str:
    """A queue, name, task id or lease key: a non-empty string that fits its column."""
    if not isinstance(value, str) or not 0 < len(value) <= LENGTHS[what]:
        raise InvalidArgument(
            f"a task {what} is a string of 1 to {LENGTHS[what]} characters, not {value!r:.60}"
        )
    return value


def _in_state(state: str, now: float) -> tuple[str, tuple[float, ...]]:
    """The WHERE condition (and its parameters) of the tasks in ``state`` at ``now``."""
    check_state(state)
    if state == WAITING:
        return "state = 'queued' AND due <= ?", (now,)
    if state == DELAYED:
        return "state = 'queued' AND due > ?", (now,)
    return f"state = '{state}'", ()


def _owner(claim: Claim) -> tuple[str, str, str]:
    """The WHERE values (queue, task id, token) that match a claim's row while it holds it."""
    return claim.queue, claim.task_id, claim.receipt


def _info(row: tuple, now: float) -> TaskInfo:
    queue, task_id, state, payload, eta, name, deliveries, error, due = row
    if state == QUEUED:
        state = DELAYED if due > now else WAITING
    return TaskInfo(
        queue, task_id, state, bytes(payload), eta, name, int(deliveries or 0), error or None
    )
