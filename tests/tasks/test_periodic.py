"""Periodic tasks: each cron period is enqueued once across every scheduler, on Redis and
SQLite. Time is simulated: the schedulers tick with a fake ``now`` (one-minute periods),
the leases and name TTLs run on the engine's real clock."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

from scalekit.core.errors import ConfigError, InvalidArgument, StoreUnavailable
from scalekit.tasks import NotDeferrable, Tasks
from scalekit.tasks.cron import Cron
from scalekit.tasks.engines.base import WAITING
from scalekit.tasks.periodic import Schedule, Scheduler
from scalekit.tasks.worker import Worker
from scalekit.testing import fresh_app_name, run_in_children
from tests.tasks import jobs

SECRET = "periodic-tests-secret-0123456789abcdef"
T0 = 1_800_000_000 - 1_800_000_000 % 3600  # an hour's start
MINUTE = 60


def report(kind: str, size: int = 1) -> None:
    """The periodic task (never run here: the tests read the queue)."""


def cleanup() -> None:
    """A second periodic task."""


@pytest.fixture(params=["redis", "sqlite"])
def engine_kind(request) -> str:
    return request.param


@pytest.fixture
def make_tasks(engine_url):
    """``make_tasks(app_name=None, **options)``: a Tasks of the backend under test, one
    per simulated server; its schedule has ``report`` every minute."""
    opened: list[Tasks] = []
    default_app = fresh_app_name()

    def make(app_name: str | None = None, **options) -> Tasks:
        tasks = Tasks(engine_url, app_name or default_app, secret=SECRET, **options)
        tasks.schedule.add(report, "* * * * *", args=("minutely",), kwargs={"size": 2})
        opened.append(tasks)
        enqueued(tasks)  # the store is made before the schedulers race to use it
        return tasks

    yield make
    for tasks in opened:
        tasks.engine.close()


def enqueued(tasks: Tasks, queue: str = "default") -> list[str]:
    """The names of the tasks waiting in ``queue``, in order."""
    return [info.name for info in tasks.engine.tasks(queue, WAITING, limit=1000)]


def names(*minutes: int, entry: str = f"{__name__}:report") -> list[str]:
    return [f"periodic:{entry}:{T0 + m * MINUTE}" for m in minutes]


def tick_together(schedulers: list[Scheduler], periods: int, start: int = 0, pause=0.0) -> None:
    """Every scheduler in its own thread ticks 3 times per period (at :00, :20, :40 of
    each simulated minute), all of them at each step (a barrier), ``pause`` s apart."""
    steps = [T0 + (start + p) * MINUTE + s for p in range(periods) for s in (0, 20, 40)]
    barrier = threading.Barrier(len(schedulers))
    errors: list[Exception] = []

    def run(scheduler: Scheduler) -> None:
        try:
            for now in steps:
                barrier.wait(timeout=30)
                scheduler.tick(now)
                time.sleep(pause)
        except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_schedule_entries() -> None:
    schedule = Schedule()
    entry = schedule.add(report, "@hourly", queue="reports", args=("daily",), kwargs={"size": 3})
    assert entry.name == f"{__name__}:report"
    assert entry.task_name(T0) == f"periodic:{__name__}:report:{T0}"
    assert (entry.queue, entry.args, entry.kwargs) == ("reports", ("daily",), {"size": 3})
    assert schedule.add(report, "0 0 * * *", name="nightly").cron.expr == "0 0 * * *"
    assert [e.name for e in schedule] == [entry.name, "nightly"]
    assert len(schedule) == 2 and schedule["nightly"].function is report
    with pytest.raises(ConfigError, match="already scheduled"):
        schedule.add(report, "@daily")
    with pytest.raises(ConfigError, match="hour: 25 is out of range"):
        schedule.add(cleanup, "0 25 * * *")
    with pytest.raises(NotDeferrable):
        schedule.add(lambda: None, "@daily", name="anonymous")
    with pytest.raises(ConfigError, match="1-150 printable characters"):
        schedule.add(cleanup, "@daily", name="")
    with pytest.raises(ConfigError, match="1-150 printable characters"):
        schedule.add(cleanup, "@daily", name="x" * 151)
    assert len(schedule) == 2


def test_periodic_decorator_registers_on_the_facade(engine_url) -> None:
    tasks = Tasks(engine_url, fresh_app_name(), secret=SECRET)
    decorated = tasks.periodic("*/5 * * * *", queue="reports", args=("weekly",))(report)
    assert decorated is report
    entry = tasks.schedule[f"{__name__}:report"]
    assert (entry.cron.expr, entry.queue, entry.args) == ("*/5 * * * *", "reports", ("weekly",))
    tasks.periodic("@daily", name="cleanup")(cleanup)
    assert [e.name for e in tasks.schedule] == [entry.name, "cleanup"]
    paris = Cron("0 2 * * *", timezone="Europe/Paris")
    tasks.periodic(paris, name="local")(cleanup)
    assert tasks.schedule["local"].cron is paris
    with pytest.raises(ConfigError, match="day-of-week: 9 is out of range"):
        tasks.periodic("0 0 * * 9")
    with pytest.raises(InvalidArgument, match="queue name"):
        tasks.periodic("@daily", queue="no spaces")
    tasks.engine.close()


def test_the_decorator_works_on_a_function_its_module_is_still_defining(engine_url, tmp_path):
    """``@tasks.periodic`` in a module (the README's way): the function is registered while
    the module is still being imported, and the first tick defers it."""
    (tmp_path / "nightly_jobs.py").write_text(
        "from scalekit.tasks import Tasks\n"
        f"tasks = Tasks({engine_url!r}, {fresh_app_name()!r}, secret={SECRET!r})\n\n"
        "@tasks.periodic('0 3 * * *', args=('nightly',))\n"
        "def nightly(word):\n"
        "    return word\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import nightly_jobs  # imported now, as a worker's --import does

        tasks = nightly_jobs.tasks
        assert tasks.schedule["nightly_jobs:nightly"].function is nightly_jobs.nightly
        Scheduler(tasks, "one").tick(T0)
        [waiting] = tasks.engine.tasks("default", WAITING)
        assert tasks.decode(waiting.payload).function == "nightly_jobs:nightly"
        tasks.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("nightly_jobs", None)


def test_one_scheduler_enqueues_each_period_once(make_tasks) -> None:
    tasks = make_tasks()
    tasks.schedule.add(cleanup, "*/2 * * * *", queue="maintenance")
    scheduler = Scheduler(tasks, "only")
    first = scheduler.tick(T0 + 5)
    assert len(first) == 2  # report and cleanup, both due at T0
    for now in range(T0 + 5, T0 + 4 * MINUTE, 15):
        scheduler.tick(now)
    assert enqueued(tasks) == names(0, 1, 2, 3)
    assert enqueued(tasks, "maintenance") == names(0, 2, entry=f"{__name__}:cleanup")
    info = tasks.engine.find(first[0])
    assert info is not None and info.name in names(0) + names(0, entry=f"{__name__}:cleanup")


@pytest.mark.parametrize("count", [2, 5])
def test_concurrent_schedulers_in_threads(make_tasks, count: int) -> None:
    schedulers = [Scheduler(make_tasks(), f"server{i}") for i in range(count)]
    tick_together(schedulers, periods=6)
    assert enqueued(schedulers[0].tasks) == names(*range(6))


def test_schedulers_that_all_believe_they_hold_the_lease(make_tasks) -> None:
    # a lease shorter than the time between two ticks: every scheduler takes it in turn,
    # several in the same period; the task names still let each period in once
    schedulers = [Scheduler(make_tasks(), f"server{i}", lease_ttl=0.01) for i in range(5)]
    tick_together(schedulers, periods=6, pause=0.01)
    assert enqueued(schedulers[0].tasks) == names(*range(6))


def test_a_new_holder_in_the_same_period_does_not_enqueue_it_again(make_tasks) -> None:
    first = Scheduler(make_tasks(), "first", lease_ttl=0.2)
    assert len(first.tick(T0 + 1)) == 1
    time.sleep(0.25)  # first paused past its lease: second is elected in the same period
    second = Scheduler(make_tasks(), "second")
    assert second.tick(T0 + 30) == []  # its defer found the period's name taken
    assert len(second.tick(T0 + MINUTE)) == 1
    assert enqueued(first.tasks) == names(0, 1)


@pytest.mark.parametrize("count", [2, 5])
def test_concurrent_schedulers_in_processes(make_tasks, count: int) -> None:
    app_name = fresh_app_name()
    tasks = make_tasks(app_name)
    tasks.engine.close()  # the children open their own connections
    barrier = multiprocessing.get_context("fork").Barrier(count)

    def server(index: int) -> None:
        # a lease shorter than a step: it changes hands between the processes
        scheduler = Scheduler(make_tasks(app_name), f"process{index}", lease_ttl=0.05)
        for step in range(8 * 4):  # 8 periods, 4 ticks each, all processes together
            barrier.wait(timeout=30)
            scheduler.tick(T0 + step * 15)
            time.sleep(0.02)

    assert run_in_children(count, server) == [0] * count
    assert enqueued(tasks) == names(*range(8))


def test_downtime_enqueues_only_the_latest_period_once(make_tasks) -> None:
    tasks = make_tasks()
    Scheduler(tasks, "before", lease_ttl=0.2).tick(T0 + 10)
    assert enqueued(tasks) == names(0)
    time.sleep(0.25)  # the scheduler died, its lease ended
    # everything down for 10 periods; two schedulers come back (a restart: new holders)
    after = [Scheduler(make_tasks(), "after1"), Scheduler(make_tasks(), "after2")]
    tick_together(after, periods=1, start=10)
    assert enqueued(tasks) == names(0, 10)
    tick_together(after, periods=2, start=11)  # the holder goes on
    assert enqueued(tasks) == names(0, 10, 11, 12)


def test_a_period_older_than_name_ttl_is_not_enqueued(make_tasks) -> None:
    # its name may have expired: enqueuing it could run it twice
    tasks = make_tasks(name_ttl=120)
    tasks.schedule.add(cleanup, "@hourly")
    scheduler = Scheduler(tasks, "server")
    assert len(scheduler.tick(T0 + 59)) == 2  # both due at T0
    scheduler.stop()
    restarted = Scheduler(tasks, "restarted")  # knows nothing of what was enqueued
    assert len(restarted.tick(T0 + 4 * MINUTE + 1)) == 1  # report's; cleanup's is too old
    assert enqueued(tasks) == [
        *names(0),
        *names(0, entry=f"{__name__}:cleanup"),
        *names(4),
    ]


def test_the_lease_moves_when_its_holder_stops_ticking(make_tasks) -> None:
    first, second = (
        Scheduler(make_tasks(), "first", lease_ttl=0.5),
        Scheduler(make_tasks(), "second", lease_ttl=0.5),
    )
    assert len(first.tick(T0)) == 1
    assert second.tick(T0 + MINUTE) == []  # first holds the lease
    assert len(first.tick(T0 + MINUTE + 1)) == 1
    time.sleep(0.6)  # first stops renewing: its lease ends
    assert len(second.tick(T0 + 2 * MINUTE)) == 1
    assert first.tick(T0 + 3 * MINUTE) == []  # second holds it now
    second.stop()  # a holder that stops gives the lease up at once
    assert len(first.tick(T0 + 3 * MINUTE + 1)) == 1
    assert enqueued(first.tasks) == names(0, 1, 2, 3)


def test_an_entry_that_cannot_be_deferred_does_not_stop_the_others(make_tasks, caplog) -> None:
    tasks = make_tasks()
    tasks.schedule.add(cleanup, "* * * * *", args=(object(),))  # cannot be stored
    with caplog.at_level("ERROR", logger="scalekit.tasks"):
        assert len(Scheduler(tasks, "server").tick(T0)) == 1
    assert enqueued(tasks) == names(0)
    assert f"periodic {__name__}:cleanup: could not defer it" in caplog.text


def test_no_entries_no_lease(engine_url) -> None:
    tasks = Tasks(engine_url, fresh_app_name(), secret=SECRET)
    assert Scheduler(tasks, "idle").tick(T0) == []
    assert tasks.engine.try_lease("scheduler", "another", 10)  # the idle one took nothing
    tasks.engine.close()


def _serve(tasks: Tasks, index: int) -> None:
    """A worker process (one server) whose supervisor ticks its own scheduler often."""
    scheduler = Scheduler(tasks, f"worker{index}", lease_ttl=0.3)
    scheduler.interval = 0.05
    sys.exit(Worker(tasks, scheduler=scheduler, grace=2.0).run())


def test_workers_on_three_servers_run_a_periodic_task_once(engine_url, tmp_path) -> None:
    # real clock, real workers: the hour's period runs once whatever holds the lease,
    # also when holders are killed (SIGKILL) and the lease moves
    tasks = Tasks(engine_url, fresh_app_name(), secret=SECRET, visibility_timeout=1.0)
    tasks.schedule.add(jobs.done, "@hourly", args=(str(tmp_path), "hourly"))
    enqueued(tasks)  # the store is made before the workers race to use it
    if time.time() % 3600 > 3600 - 15:  # the test must not cross into the next period
        time.sleep(3600 - time.time() % 3600 + 0.5)
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_serve, args=(tasks, i)) for i in range(3)]
    for process in workers:
        process.start()
    try:
        deadline = time.monotonic() + 15
        while not jobs.runs(str(tmp_path), "hourly"):
            assert time.monotonic() < deadline, "the periodic task never ran"
            time.sleep(0.05)
        for process in workers[:2]:  # whichever held the lease, the last one takes it
            process.kill()
            process.join(5)
            time.sleep(0.6)  # the killed holder's lease (0.3 s) ends, another ticks
        os.kill(workers[2].pid, signal.SIGTERM)
        workers[2].join(10)
        assert workers[2].exitcode == 0
    finally:
        for process in workers:
            if process.is_alive():
                process.kill()
                process.join(5)
    assert len(jobs.runs(str(tmp_path), "hourly")) == 1
    tasks.close()


def test_an_engine_that_is_down_is_an_error_of_the_tick() -> None:
    # the worker logs it and ticks again later
    down = Tasks("redis://127.0.0.1:1/0", fresh_app_name(), secret=SECRET)
    down.schedule.add(report, "* * * * *")
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1"):
        Scheduler(down, "server").tick(T0)
