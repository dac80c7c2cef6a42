"""The engine contract (:mod:`scalekit.testing.tasks`), run against every engine on its real
server, and against a third-party engine as its authors would run it."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from scalekit.core.errors import ConfigError
from scalekit.tasks.engines import open_engine
from scalekit.tasks.engines.base import (
    DEAD,
    DELAYED,
    RUNNING,
    STATES,
    WAITING,
    Claim,
    Engine,
    TaskInfo,
)
from scalekit.tasks.errors import TaskAlreadyExists
from scalekit.testing import fresh_app_name
from scalekit.testing.tasks import SharedTaskEngineSuite, TaskEngineSuite


class TestEngines(SharedTaskEngineSuite):
    """Every engine of ``ENGINE_KINDS`` (the ``make_engine`` fixture of the conftest)."""

    def test_options_merge_with_the_url_query(self, engine_url):
        url = engine_url + ("&" if "?" in engine_url else "?") + "visibility_timeout=9&name_ttl=2"
        with contextlib.closing(open_engine(url, app_name=fresh_app_name())) as engine:
            assert (engine.visibility_timeout, engine.name_ttl) == (9, 2)
        given = open_engine(url, app_name=fresh_app_name(), visibility_timeout=0.5)
        with contextlib.closing(given) as engine:
            assert (engine.visibility_timeout, engine.name_ttl) == (0.5, 2)


@dataclass
class Row:
    """One task of a :class:`DictEngine`."""

    queue: str
    task_id: str
    payload: bytes
    eta: float | None
    name: str | None
    state: str
    ready: float  # when it became (waiting) or becomes (delayed) ready
    order: int  # ties of ``ready``; for dead ones, when buried
    deliveries: int = 0
    error: str | None = None
    receipt: str = ""
    expires: float = 0.0


@dataclass
class Shelf:
    """The tasks, names and leases of one app, shared by its engines in this process."""

    rows: dict[str, Row] = field(default_factory=dict)
    queues: set[str] = field(default_factory=set)
    names: dict[tuple[str, str], float] = field(default_factory=dict)
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    counter: itertools.count = field(default_factory=itertools.count)


class DictEngine(Engine):
    """The smallest third-party engine: tasks in dicts of this process, never shared."""

    shelves: dict[str, Shelf] = {}

    def __init__(self, app_name: str = "app", **options):
        unknown = sorted(set(options) - {"visibility_timeout", "name_ttl"})
        if unknown:
            raise ConfigError(f"unknown option {', '.join(unknown)}")
        self.visibility_timeout = float(options.get("visibility_timeout", 30))
        self.name_ttl = float(options.get("name_ttl", 7 * 86400))
        self.shelf = self.shelves.setdefault(app_name, Shelf())

    @classmethod
    def from_url(cls, settings, app_name="app", **options):
        return cls(app_name, **options)

    def enqueue(self, queue, task_id, payload, *, eta=None, name=None):
        shelf, now = self.shelf, time.time()
        with shelf.changed:
            if name is not None:
                if shelf.names.get((queue, name), 0) > now:
                    raise TaskAlreadyExists(f"{name!r} is taken in {queue!r}")
                shelf.names[queue, name] = now + self.name_ttl
            delayed = eta is not None and eta > now
            state, ready = (DELAYED, eta) if delayed else (WAITING, now)
            order = next(shelf.counter)
            shelf.rows[task_id] = Row(queue, task_id, payload, eta, name, state, ready, order)
            shelf.queues.add(queue)
            shelf.changed.notify_all()

    def claim(self, queues, consumer, *, count=1, wait=0.0):
        shelf, rank = self.shelf, {queue: index for index, queue in enumerate(queues)}
        deadline = time.monotonic() + wait
        with shelf.changed:
            while True:
                now = self.promote()
                for row in shelf.rows.values():
                    if row.state == RUNNING and row.expires <= now:
                        row.state = WAITING
                ready = [r for r in shelf.rows.values() if r.state == WAITING and r.queue in rank]
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    break
                due = [row.ready - now for row in shelf.rows.values() if row.state == DELAYED]
                shelf.changed.wait(min([left, *due]))
            ready.sort(key=lambda row: (rank[row.queue], row.ready, row.order))
            for row in ready[:count]:
                row.state, row.deliveries = RUNNING, row.deliveries + 1
                row.receipt, row.expires = uuid.uuid4().hex, now + self.visibility_timeout
            return [
                Claim(r.queue, r.task_id, r.payload, r.deliveries, r.receipt) for r in ready[:count]
            ]

    def promote(self) -> float:
        """Make the delayed tasks now due waiting (the lock held); the time it did it."""
        now = time.time()
        for row in self.shelf.rows.values():
            if row.state == DELAYED and row.ready <= now:
                row.state = WAITING
        return now

    def held(self, claim: Claim) -> Row | None:
        """The row of ``claim`` if its lease is still this claim's."""
        row = self.shelf.rows.get(claim.task_id)
        if row is None or row.state != RUNNING or row.receipt != claim.receipt:
            return None
        return row

    def extend(self, claims):
        with self.shelf.changed:
            held = [(claim, self.held(claim)) for claim in claims]
            for _, row in held:
                if row is not None:
                    row.expires = time.time() + self.visibility_timeout
            return [claim for claim, row in held if row is None]

    def ack(self, claim):
        with self.shelf.changed:
            row = self.shelf.rows.get(claim.task_id)
            if row is not None and row.queue == claim.queue:
                del self.shelf.rows[claim.task_id]

    def end(self, claim: Claim, payload: bytes, **changes) -> bool:
        """End the run of ``claim``, giving its row ``payload`` and ``changes``."""
        with self.shelf.changed:
            row = self.held(claim)
            if row is None:
                return False
            row.payload, row.deliveries, row.receipt = payload, 0, ""
            row.__dict__.update(changes)
            self.shelf.changed.notify_all()
            return True

    def retry(self, claim, payload, eta):
        return self.end(claim, payload, state=DELAYED, eta=eta, ready=eta)

    def bury(self, claim, payload, error):
        return self.end(claim, payload, state=DEAD, error=error, order=next(self.shelf.counter))

    def revive(self, queue, task_id, payload=None):
        with self.shelf.changed:
            row = self.shelf.rows.get(task_id)
            if row is None or row.queue != queue or row.state != DEAD:
                return False
            row.state, row.ready, row.error, row.deliveries = WAITING, time.time(), None, 0
            row.payload = row.payload if payload is None else payload
            self.shelf.changed.notify_all()
            return True

    @staticmethod
    def info(row: Row) -> TaskInfo:
        return TaskInfo(
            row.queue, row.task_id, row.state, row.payload, row.eta, row.name, row.deliveries,
            row.error,
        )  # fmt: skip

    def find(self, task_id, queue=None):
        with self.shelf.changed:
            self.promote()
            row = self.shelf.rows.get(task_id)
            return None if row is None or queue not in (None, row.queue) else self.info(row)

    def tasks(self, queue, state, limit=50):
        with self.shelf.changed:
            self.promote()
            rows = [r for r in self.shelf.rows.values() if (r.queue, r.state) == (queue, state)]
        if state == DEAD:
            rows.sort(key=lambda row: -row.order)
        else:
            rows.sort(key=lambda row: (row.ready, row.order))
        return [self.info(row) for row in rows[:limit]]

    def counts(self):
        with self.shelf.changed:
            self.promote()
            counts = {queue: dict.fromkeys(STATES, 0) for queue in self.shelf.queues}
            for row in self.shelf.rows.values():
                counts[row.queue][row.state] += 1
            return counts

    def purge(self, queue, state=None):
        with self.shelf.changed:
            self.promote()
            doomed = [
                row.task_id for row in self.shelf.rows.values()
                if row.queue == queue and state in (None, row.state)
            ]  # fmt: skip
            for task_id in doomed:
                del self.shelf.rows[task_id]
            return len(doomed)

    def try_lease(self, key, holder, ttl):
        with self.shelf.changed:
            now = time.time()
            owner, expires = self.shelf.leases.get(key, (holder, 0.0))
            if owner != holder and expires > now:
                return False
            self.shelf.leases[key] = holder, now + ttl
            return True

    def release_lease(self, key, holder):
        with self.shelf.changed:
            if self.shelf.leases.get(key, ("",))[0] == holder:
                del self.shelf.leases[key]


class TestADictEngineRunsTheSuite(TaskEngineSuite):
    """The reuse path itself, as the docstring of :mod:`scalekit.testing.tasks` shows it."""

    @pytest.fixture
    def make_engine(self):
        return lambda app_name=None, **options: DictEngine(app_name or fresh_app_name(), **options)
