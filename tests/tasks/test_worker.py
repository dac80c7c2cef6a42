"""The worker: ``execute`` settles one claimed task (ack, retry with backoff, bury), and
``scalekit tasks worker`` processes run tasks, survive SIGKILL, stop on SIGTERM, recycle.

Each test runs on SQLite and Redis; the tasks are :mod:`tests.tasks.jobs`, which record
their runs in files of a temporary folder.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from scalekit.tasks import Tasks
from scalekit.tasks.engines.base import DEAD, DELAYED
from scalekit.tasks.periodic import LEASE as LEASE_KEY
from scalekit.tasks.periodic import Scheduler
from scalekit.tasks.task import Task, encode, new_task_id
from scalekit.tasks.worker import ACKED, BURIED, DROPPED, RETRIED, Worker, execute
from scalekit.testing import fresh_app_name
from tests.tasks import jobs
from tests.tasks.conftest import engine_url_for

SECRET = "worker-tests-secret-0123456789abcdefghij"
ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0  # the visibility timeout of the process tests, in seconds


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path) -> str:
    return engine_url_for(request.param, request, tmp_path)


@pytest.fixture
def tasks(url):
    made = Tasks(url, fresh_app_name(), secret=SECRET, visibility_timeout=LEASE,
                 max_attempts=3, min_backoff=0.05, max_backoff=0.1)  # fmt: skip
    yield made
    made.close()


def claim_one(tasks, wait: float = 2.0):
    [claim] = tasks.engine.claim(["default"], "test", wait=wait)
    return claim


# -- execute -------------------------------------------------------------------------------


def test_a_task_that_returns_is_acked(tasks, folder):
    tasks.defer(jobs.done, folder, "a")
    assert execute(tasks, claim_one(tasks)) == ACKED
    assert jobs.runs(folder, "a") == [os.getpid()]
    assert sum(tasks.engine.counts().get("default", {}).values()) == 0


def test_a_failing_task_is_retried_with_backoff_then_dead_with_its_traceback(tasks, folder):
    failures = []
    task_id = tasks.defer(jobs.always_fails, folder, "f")
    outcomes = []
    for _ in range(3):
        outcomes.append(execute(tasks, claim_one(tasks), on_failure=lambda *a: failures.append(a)))
        info = tasks.engine.find(task_id)
        if outcomes[-1] == RETRIED:
            assert info.state == DELAYED and info.eta > time.time()
            assert tasks.decode(info.payload).attempts == len(outcomes)
    assert outcomes == [RETRIED, RETRIED, BURIED]
    assert len(jobs.runs(folder, "f", "start")) == 3
    info = tasks.engine.find(task_id)
    assert info.state == DEAD
    assert "ValueError: broken task f" in info.error and "Traceback" in info.error
    [(task, exc_info)] = failures
    assert (task.id, task.attempts, exc_info[0]) == (task_id, 3, ValueError)


def test_a_permanent_failure_is_dead_at_once_with_one_error_logged(tasks, folder, caplog):
    failures = []
    task_id = tasks.defer(jobs.permanent, folder, "p")
    with caplog.at_level(logging.INFO, logger="scalekit.tasks"):
        outcome = execute(tasks, claim_one(tasks), on_failure=lambda *a: failures.append(a))
    assert outcome == BURIED and len(failures) == 1
    assert tasks.engine.find(task_id).state == DEAD
    assert "PermanentTaskFailure: no use retrying p" in tasks.engine.find(task_id).error
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_a_singular_failure_is_retried_and_logged_at_info_without_traceback(tasks, folder, caplog):
    tasks.defer(jobs.singular, folder, "s")
    with caplog.at_level(logging.INFO, logger="scalekit.tasks"):
        assert execute(tasks, claim_one(tasks)) == RETRIED
    [record] = caplog.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "the remote service said later" in record.getMessage()
    assert execute(tasks, claim_one(tasks)) == ACKED
    assert len(jobs.runs(folder, "s")) == 1


def test_a_task_over_its_timeout_is_stopped_and_counted_as_a_failure(tasks, folder):
    task_id = tasks.defer(jobs.slow, folder, "t", 5.0, _timeout=0.3)
    started = time.monotonic()
    assert execute(tasks, claim_one(tasks)) == RETRIED
    assert time.monotonic() - started < 2.0
    assert jobs.runs(folder, "t", "start") and not jobs.runs(folder, "t")
    assert tasks.decode(tasks.engine.find(task_id).payload).attempts == 1


def forged(tasks, folder, secret: str) -> bytes:
    """A payload of a task that would create ``folder/forged``, signed with ``secret``."""
    task = Task(id=new_task_id(), queue="default", function="tests.tasks.jobs:done",
                args=(folder, "forged"), kwargs={})  # fmt: skip
    return encode(task, secret=secret)


def test_a_forged_payload_is_buried_and_never_run(tasks, folder, caplog):
    payload = forged(tasks, folder, "another-secret-0123456789abcdefghijklmn")
    tasks.engine.enqueue("default", "forged", payload)
    with caplog.at_level(logging.INFO, logger="scalekit.tasks"):
        assert execute(tasks, claim_one(tasks)) == BURIED
    assert not Path(folder, "forged").exists()
    info = tasks.engine.find("forged")
    assert info.state == DEAD and "signature" in info.error
    [record] = caplog.records
    assert record.levelno == logging.ERROR and folder not in record.getMessage()


def test_a_callable_that_cannot_be_found_is_buried(tasks, folder):
    task = Task(id="gone", queue="default", function="tests.tasks.jobs:no_such_job",
                args=(folder, "gone"), kwargs={})  # fmt: skip
    tasks.engine.enqueue("default", "gone", tasks.encode(task))
    assert execute(tasks, claim_one(tasks)) == BURIED
    assert "NotDeferrable" in tasks.engine.find("gone").error


def test_a_task_whose_deliveries_killed_workers_is_buried_unrun(tasks, folder):
    task_id = tasks.defer(jobs.done, folder, "poison", _retries=0)
    claim_one(tasks)  # this worker "dies": the lease expires
    time.sleep(LEASE + 0.2)
    claim = claim_one(tasks)
    assert claim.deliveries == 2
    assert execute(tasks, claim) == BURIED
    assert jobs.runs(folder, "poison") == []
    assert "killed its worker 1 time(s)" in tasks.engine.find(task_id).error


def test_an_outcome_after_the_lease_was_lost_is_dropped(tasks, folder):
    tasks.defer(jobs.always_fails, folder, "lost")
    first = claim_one(tasks)
    time.sleep(LEASE + 0.2)
    second = claim_one(tasks)  # another worker runs it now
    assert execute(tasks, first) == DROPPED
    assert execute(tasks, second) == RETRIED


# -- worker processes ----------------------------------------------------------------------


def _run_worker(tasks, options) -> None:
    sys.exit(Worker(tasks, **options).run())


def start_worker(tasks, **options):
    """A worker supervisor (``Worker(tasks, **options).run()``) in a process of its own."""
    process = multiprocessing.get_context("fork").Process(target=_run_worker, args=(tasks, options))
    process.start()
    return process


@pytest.fixture
def worker(tasks):
    """``worker(**options)``: a started worker process, killed after the test if still up."""
    started = []

    def begin(**options):
        started.append(start_worker(tasks, **options))
        return started[-1]

    yield begin
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(5)


def wait_for(condition, timeout: float = 15.0):
    """``condition()``'s first true value, polled; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.02)
    return value


def stop(process, signum=signal.SIGTERM, timeout: float = 10.0) -> int:
    os.kill(process.pid, signum)
    process.join(timeout)
    assert not process.is_alive(), "the worker did not stop"
    return process.exitcode


def test_workers_run_every_task_and_burst_exits(tasks, folder, worker):
    for number in range(30):
        tasks.defer(jobs.done, folder, f"b{number}")
    process = worker(concurrency=2, burst=True)
    process.join(30)
    assert process.exitcode == 0
    assert all(len(jobs.runs(folder, f"b{number}")) == 1 for number in range(30))
    assert sum(tasks.engine.counts()["default"].values()) == 0


def test_a_task_running_longer_than_the_lease_keeps_it(tasks, folder, worker):
    tasks.defer(jobs.slow, folder, "long", LEASE * 2.5)
    process = worker(concurrency=2)
    wait_for(lambda: jobs.runs(folder, "long"))
    time.sleep(0.3)
    assert len(jobs.runs(folder, "long", "start")) == 1
    assert stop(process) == 0


def test_a_child_killed_while_running_a_task_is_replaced_and_the_task_runs_again(
    tasks, folder, worker
):
    tasks.defer(jobs.slow_once, folder, "k", 60.0)
    process = worker()
    [victim] = wait_for(lambda: jobs.runs(folder, "k", "start"))
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    [runner] = wait_for(lambda: jobs.runs(folder, "k"))
    assert runner != victim
    assert LEASE / 2 < time.monotonic() - killed < LEASE + 5  # last renewed LEASE/3 before
    assert stop(process) == 0


def test_sigterm_finishes_the_running_task_hands_back_the_others_and_exits_0(tasks, folder, worker):
    tasks.defer(jobs.slow, folder, "g", 1.0)
    later = tasks.defer(jobs.done, folder, "later")
    process = worker(prefetch=4, grace=10.0)
    wait_for(lambda: jobs.runs(folder, "g", "start"))
    started = time.monotonic()
    assert stop(process) == 0
    assert time.monotonic() - started < 5.0  # the task's 1 s, not the grace's 10
    assert len(jobs.runs(folder, "g")) == 1 and jobs.runs(folder, "later") == []
    [claim] = tasks.engine.claim(["default"], "test")  # handed back: ready at once
    assert claim.task_id == later


def test_a_task_past_its_timeout_and_the_grace_is_killed_then_buried_as_poison(
    tasks, folder, worker
):
    task_id = tasks.defer(jobs.stubborn, folder, "st", 60.0, _timeout=0.2, _retries=1)
    process = worker(grace=0.3)
    first = wait_for(lambda: jobs.runs(folder, "st", "start"))
    wait_for(lambda: tasks.engine.find(task_id).state == DEAD, timeout=4 * LEASE + 8)
    starts = jobs.runs(folder, "st", "start")
    assert len(starts) == 2 and starts[0] == first[0] != starts[1]
    assert "killed its worker 2 time(s)" in tasks.engine.find(task_id).error
    assert stop(process) == 0


@pytest.mark.parametrize("limit", [{"max_tasks": 2}, {"max_memory": 1.0}])
def test_max_tasks_and_max_memory_recycle_the_child(tasks, folder, worker, limit):
    for number in range(4):
        tasks.defer(jobs.done, folder, f"r{number}")
    process = worker(burst=True, prefetch=1, **limit)
    process.join(30)
    assert process.exitcode == 0
    pids = [pid for number in range(4) for pid in jobs.runs(folder, f"r{number}")]
    per_child = limit.get("max_tasks", 1)
    assert len(pids) == 4 and len(set(pids)) == 4 // per_child


def test_the_supervisor_ticks_the_scheduler_of_periodic_tasks(tasks, folder, worker):
    tasks.schedule.add(jobs.done, "* * * * *", args=(folder, "periodic"))
    process = worker(scheduler=Scheduler(tasks))
    wait_for(lambda: jobs.runs(folder, "periodic"))
    assert stop(process) == 0
    assert tasks.engine.try_lease(LEASE_KEY, "another scheduler", 5.0)  # released on stop


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (its reaper may be slow)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_children_of_a_killed_supervisor_finish_their_task_hand_back_the_rest_and_exit(
    tasks, folder, worker
):
    tasks.defer(jobs.slow, folder, "o", 0.5)
    later = tasks.defer(jobs.done, folder, "later")
    process = worker(prefetch=4)
    [child] = wait_for(lambda: jobs.runs(folder, "o", "start"))
    os.kill(process.pid, signal.SIGKILL)
    wait_for(lambda: not running(child), timeout=5.0)
    assert jobs.runs(folder, "o") == [child] and jobs.runs(folder, "later") == []
    [claim] = tasks.engine.claim(["default"], "test")  # handed back: ready at once
    assert claim.task_id == later


def test_a_dead_tasks_traceback_keeps_no_password(tasks):
    """The traceback kept with a dead task (shown by `tasks show` and the task page) is
    scrubbed like an error ticket: a URL's password and secret-looking pairs masked."""
    task_id = tasks.defer(jobs.cannot_connect, "postgres://shop:hunter2-pw@db/shop?token=t0k3n-xyz")
    assert execute(tasks, claim_one(tasks)) == BURIED
    error = tasks.engine.find(task_id).error
    assert "cannot connect to postgres://shop:***@db/shop?token=***" in error
    assert "hunter2-pw" not in error and "t0k3n-xyz" not in error


LEAKY_URL = "postgres://shop:hunter2-pw@db/shop?token=t0k3n-xyz"


@pytest.mark.parametrize(
    ("job", "outcomes"), [("leaks", [RETRIED, BURIED]), ("cannot_connect", [BURIED])]
)
def test_the_workers_log_keeps_no_password(tasks, caplog, job, outcomes):
    """What the worker logs of a failure (retried, buried after its last attempt, failed
    for good) is scrubbed as the dead task's traceback is: no URL password, no token."""
    tasks.defer(getattr(jobs, job), LEAKY_URL, _retries=1)
    with caplog.at_level(logging.INFO, logger="scalekit.tasks"):
        assert [execute(tasks, claim_one(tasks, wait=5.0)) for _ in outcomes] == outcomes
    logged = caplog.text
    assert "postgres://shop:***@db/shop?token=***" in logged and "Traceback" in logged
    assert "hunter2-pw" not in logged and "t0k3n-xyz" not in logged
    assert all(record.exc_info is None for record in caplog.records)


def test_a_worker_settles_a_task_in_the_serializer_and_size_it_was_stored_with(url, folder):
    """A pickle app's task (an argument JSON cannot store) failing under a worker opened
    with the defaults (JSON, 1 MiB: ``scalekit tasks worker``) is retried and buried as
    pickle, not stuck re-raising NotDeferrable until its lease expires."""
    from fractions import Fraction

    app = fresh_app_name()
    pickled = Tasks(url, app, secret=SECRET, serializer="pickle", max_payload=4 << 20,
                    max_attempts=2, min_backoff=0.05, max_backoff=0.1)  # fmt: skip
    worker = Tasks(url, app, secret=SECRET)
    try:
        task_id = pickled.defer(jobs.always_fails, folder, "p", Fraction(1, 3), "x" * (2 << 20))
        assert execute(worker, claim_one(worker)) == RETRIED
        info = worker.engine.find(task_id)
        assert info.payload[1:2] == b"p" and worker.decode(info.payload).attempts == 1
        time.sleep(0.15)
        assert execute(worker, claim_one(worker)) == BURIED
        assert worker.engine.find(task_id).state == DEAD
    finally:
        pickled.close()
        worker.close()
