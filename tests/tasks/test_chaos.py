"""Chaos: 2,000 tasks run by 4 worker processes that are killed with SIGKILL at random.

On Redis (AOF, fsync at every write, the server itself killed once by SIGKILL mid-run and
started again from its AOF) and on PostgreSQL (the SQL engine). Every 0.5-1.5 s a killer
SIGKILLs a random worker supervisor (its child finishes its tasks and exits; a new
supervisor takes the slot) or a random child (its supervisor forks a new one). Each task
(:func:`tests.tasks.chaos_jobs.record`) records its run in a PostgreSQL table.

Checked: every task ran, no task is left behind (waiting, delayed, running and dead all 0),
each named task was enqueued once (every second defer of its name refused, also after the
run and the Redis crash). A task runs at least once: it runs again when its worker died
after the run and before the ack, so such duplicates are counted, and bounded by the
kills that can cause them. The counts are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg2
import pytest

from scalekit.core.errors import StoreUnavailable
from scalekit.tasks.errors import TaskAlreadyExists
from scalekit.testing import fresh_app_name
from tests.tasks import chaos_jobs
from tests.tasks.test_redis_engine import AofRedisServer

ROOT = Path(__file__).resolve().parents[2]
TASKS = 2000
WORKERS = 4
#: The Redis server is crashed once this share of the tasks has run.
CRASH_AT = 0.4
#: Seconds the whole run may take before the test fails with what is missing.
DEADLINE = 150.0
#: Seconds each task works before it records its run.
WORK = 0.03
VISIBILITY = chaos_jobs.VISIBILITY_TIMEOUT


@pytest.fixture(params=["redis", "postgres"])
def engine(request):
    """``(engine URL, the AOF redis-server or None)``."""
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_url"), None
        return
    with AofRedisServer().running() as server:
        yield server.url, server


def processes_of(app: str) -> dict[int, int]:
    """``{pid: parent pid}`` of the live worker processes of ``app`` (supervisors and their
    forked children share the command line naming it)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if app.encode() not in file.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as file:
                state, parent = file.read().rpartition(")")[2].split()[:2]
        except OSError:  # gone meanwhile
            continue
        if state != "Z":
            found[int(entry)] = int(parent)
    return found


class Workers:
    """``WORKERS`` worker supervisors (``python -m tests.tasks.chaos_jobs``), each with one
    child, and a killer thread."""

    def __init__(self, url: str, app: str, log: Path):
        self.url, self.app, self.log = url, app, log
        self.slots: list[subprocess.Popen] = []
        self.random = random.Random()
        self.killed: set[int] = set()  # the children killed
        self.supervisors_killed = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._kill_at_random, name="killer")

    def _launch(self) -> subprocess.Popen:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.tasks.chaos_jobs", self.url, self.app],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip

    def start(self) -> None:
        self.slots = [self._launch() for _ in range(WORKERS)]
        self.thread.start()

    def _kill_at_random(self) -> None:
        """Every 0.5-1.5 s, SIGKILL a random slot's child, or every third time (or when it
        has no child) its supervisor, which a new one replaces."""
        kills = 0
        while not self.stopping.wait(self.random.uniform(0.5, 1.5)):
            kills += 1
            slot = self.random.randrange(WORKERS)
            supervisor = self.slots[slot]
            children = [pid for pid, parent in processes_of(self.app).items()
                        if parent == supervisor.pid]  # fmt: skip
            if children and kills % 3:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(children[0], signal.SIGKILL)
                    self.killed.add(children[0])
                continue
            supervisor.kill()
            supervisor.wait()
            self.supervisors_killed += 1
            self.slots[slot] = self._launch()

    def children(self) -> list[int]:
        """The live children (orphaned ones too)."""
        supervisors = {supervisor.pid for supervisor in self.slots}
        return [pid for pid in processes_of(self.app) if pid not in supervisors]

    def stop_killing(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()

    def stop(self) -> None:
        """The killer stopped, the supervisors stopped by SIGTERM, every process gone."""
        self.stop_killing()
        for supervisor in self.slots:
            supervisor.terminate()
        for supervisor in self.slots:
            try:
                supervisor.wait(15)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.wait()
        deadline = time.monotonic() + 10  # orphaned children finish their tasks and exit
        while (left := processes_of(self.app)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        return "".join(self.log.read_text(errors="replace").splitlines(True)[-lines:])


def plan(number: int) -> tuple[str, dict]:
    """Task ``number``'s key and defer options: 3 in 5 plain, 1 delayed, 1 named (every
    other named one delayed too)."""
    key, kind = f"k{number:04d}", number % 5
    if kind == 3:
        return key, {"_countdown": round(random.uniform(0.1, 10.0), 2)}
    if kind == 4:
        delay = {"_countdown": round(random.uniform(0.1, 10.0), 2)} if number % 10 == 9 else {}
        return key, {"_name": f"chaos-{key}", **delay}
    return key, {}


def counts(tasks) -> dict[str, int]:
    """Every state's number of tasks, summed over the queues (None while the engine is
    down)."""
    try:
        per_queue = tasks.engine.counts()
    except StoreUnavailable:
        return None
    total = Counter()
    for states in per_queue.values():
        total.update(states)
    return dict(total)


def recorded(cursor, app: str) -> tuple[int, dict[str, list[tuple[str, int, float]]]]:
    """How many distinct tasks had their effect, and every run of each: ``{key: [(task
    id, pid, time)]}``."""
    cursor.execute("SELECT COUNT(*) FROM chaos_done WHERE app = %s", (app,))
    done = cursor.fetchone()[0]
    cursor.execute("SELECT key, task_id, pid, at FROM chaos_runs WHERE app = %s ORDER BY run",
                   (app,))  # fmt: skip
    runs: dict[str, list] = {}
    for key, task_id, pid, at in cursor.fetchall():
        runs.setdefault(key, []).append((task_id, pid, at))
    return done, runs


def test_every_task_runs_none_is_left_behind_while_workers_and_redis_are_killed(
    engine, postgres_url, tmp_path
):
    url, redis_server = engine
    app = fresh_app_name()
    chaos_jobs.create_tables(postgres_url)
    tasks = chaos_jobs.tasks_for(url, app)
    tasks.engine.counts()  # tables made, connections open, before the clock starts
    workers = Workers(url, app, tmp_path / "workers.log")
    db = psycopg2.connect(postgres_url)
    db.autocommit = True
    cursor = db.cursor()
    started = time.monotonic()
    crash = None  # (time the Redis server was killed, time it answered again, its children)
    try:
        workers.start()
        keys, names, refused = [], [], 0
        for number in range(TASKS):
            key, options = plan(number)
            tasks.defer(chaos_jobs.record, postgres_url, app, key, WORK, **options)
            keys.append(key)
            if "_name" in options:
                names.append(options["_name"])
                with contextlib.suppress(TaskAlreadyExists):
                    tasks.defer(chaos_jobs.record, postgres_url, app, key + "-again", WORK,
                                _name=options["_name"])  # fmt: skip
                    continue
                refused += 1
        assert refused == len(names)
        while True:
            done, runs = recorded(cursor, app)
            if redis_server is not None and crash is None and done >= CRASH_AT * TASKS:
                at_crash = counts(tasks)
                killed_at, children = time.time(), workers.children()
                redis_server.crash()
                time.sleep(0.5)
                redis_server.come_back()
                crash = (killed_at, time.time(), len(children))
            if done == TASKS:
                workers.stop_killing()
                left = counts(tasks)
                if left is not None and not any(left.values()):
                    break
            if time.monotonic() - started > DEADLINE:
                missing = sorted(set(keys) - set(runs))
                pytest.fail(
                    f"after {DEADLINE:g} s: {done} of {TASKS} tasks done, engine counts "
                    f"{counts(tasks)}, never ran: {missing[:20]} ({len(missing)})\n"
                    f"--- worker log ---\n{workers.log_tail()}"
                )
            time.sleep(0.2)
        seconds = time.monotonic() - started
        again = 0
        for name in names:  # the names stay taken, through the Redis crash too
            with contextlib.suppress(TaskAlreadyExists):
                tasks.defer(chaos_jobs.record, postgres_url, app, "late", WORK, _name=name)
                continue
            again += 1
        assert again == len(names)
    finally:
        workers.stop()
        tasks.close()
    done, runs = recorded(cursor, app)
    db.close()
    assert sorted(runs) == sorted(keys) and done == TASKS
    assert all(len({task_id for task_id, _, _ in run}) == 1 for run in runs.values())
    assert counts(tasks) == {"waiting": 0, "delayed": 0, "running": 0, "dead": 0}
    tasks.close()
    twice = {key: run for key, run in runs.items() if len(run) > 1}
    named_twice = [key for key in twice if f"chaos-{key}" in names]
    # a task runs again only if its worker died (or the engine went away) between its run
    # and its ack: a killed child held one such task, each child during the Redis crash at
    # most the tasks it had claimed (its acks failed)
    after_kill = [key for key, run in twice.items() if run[0][1] in workers.killed]
    in_crash = [key for key, run in twice.items()
                if crash and crash[0] - 0.5 < run[0][2] < crash[1] + VISIBILITY]  # fmt: skip
    print(
        f"\nchaos on {'Redis (AOF, fsync always)' if redis_server else 'PostgreSQL'}: "
        f"{TASKS} tasks ({len(names)} named, {sum(1 for n in range(TASKS) if n % 5 == 3)} "
        f"plain delayed), {sum(map(len, runs.values()))} runs, {len(twice)} ran more than once "
        f"({len(named_twice)} named; first run: {len(after_kill)} in a child killed later, "
        f"{len(in_crash)} during the Redis crash), {WORKERS} workers, kills: "
        f"{len(workers.killed)} children + {workers.supervisors_killed} supervisors, Redis "
        f"restarts: {int(crash is not None)}"
        + (f" (tasks then: {at_crash})" if crash else "")
        + f", {seconds:.1f} s"
    )
    assert len(workers.killed) >= 4 and workers.supervisors_killed >= 2
    assert (crash is not None) == (redis_server is not None)
    assert len(twice) <= len(workers.killed) + (chaos_jobs.PREFETCH * crash[2] if crash else 0)
