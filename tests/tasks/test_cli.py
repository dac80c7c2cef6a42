"""``scalekit tasks``: the worker command in real processes, and the operations commands
(info, list, show, retry, purge) on what it leaves, on SQLite and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalekit.tasks import Tasks
from scalekit.tasks.engines.base import DEAD, WAITING
from scalekit.testing import fresh_app_name
from scalekit.tickets import open_store
from tests.tasks import jobs
from tests.tasks.conftest import engine_url_for
from tests.tasks.test_worker import SECRET, forged, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path) -> str:
    return engine_url_for(request.param, request, tmp_path)


@pytest.fixture
def app() -> str:
    return fresh_app_name()


@pytest.fixture
def tasks(url, app):
    made = Tasks(url, app, secret=SECRET, min_backoff=0.05, max_backoff=0.1)
    yield made
    made.close()


def command(url: str, app: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "scalekit", "tasks", "--store", url, "--app", app, *argv]


def environment(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCALEKIT_TASKS_SECRET": SECRET}
    env.pop("SCALEKIT_TASKS", None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def scalekit(url: str, app: str, *argv: str, **env: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(command(url, app, *argv), env=environment(**env), check=False,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_burst_worker_runs_the_tasks_and_exits_0(url, app, tasks, folder):
    for number in range(6):
        tasks.defer(jobs.done, folder, f"b{number}")
    done = scalekit(url, app, "worker", "--burst", "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    assert "worker stopped" in done.stdout
    assert all(len(jobs.runs(folder, f"b{number}")) == 1 for number in range(6))


def test_max_tasks_recycles_the_worker_process(url, app, tasks, folder):
    for number in range(3):
        tasks.defer(jobs.done, folder, f"r{number}")
    done = scalekit(url, app, "worker", "--burst", "--max-tasks", "1", "--prefetch", "1")
    assert done.returncode == 0, done.stderr
    pids = [pid for number in range(3) for pid in jobs.runs(folder, f"r{number}")]
    assert len(set(pids)) == 3


def test_a_dead_task_gets_a_ticket_and_is_shown_retried_and_purged(
    url, app, tasks, folder, tmp_path
):
    task_id = tasks.defer(jobs.always_fails, folder, "f", _retries=1)
    tickets = f"file://{tmp_path}/tickets"
    worker = subprocess.Popen(command(url, app, "worker", "--tickets", tickets, "--grace", "5"),
                              env=environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: tasks.engine.find(task_id).state == DEAD)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        err = worker.communicate(timeout=10)[1]
    finally:
        worker.kill()
    assert worker.returncode == 0 and time.monotonic() - started < 5, err
    assert "failed (attempt 1 of 2" in err and "failed 2 time(s), buried" in err
    assert f"[default {task_id} tests.tasks.jobs:always_fails] " in err  # the log context
    [ticket] = open_store(tickets).entries()
    assert ticket.summary == "ValueError: broken task f" and ticket.app == app

    info = scalekit(url, app, "info")
    assert info.returncode == 0
    [row] = [line.split() for line in info.stdout.splitlines() if line.startswith("default")]
    assert row == ["default", "0", "0", "0", "1"]

    listed = scalekit(url, app, "list", "--queue", "default", "--state", "dead")
    assert task_id in listed.stdout and "tests.tasks.jobs:always_fails" in listed.stdout
    unsigned = scalekit(url, app, "list", "--state", "dead", SCALEKIT_TASKS_SECRET=None)
    assert task_id in unsigned.stdout and "always_fails" not in unsigned.stdout

    shown = scalekit(url, app, "show", task_id)
    assert shown.returncode == 0
    for text in ("callable tests.tasks.jobs:always_fails", folder, "attempts 2 of 2",
                 "ValueError: broken task f", "dead"):  # fmt: skip
        assert text in shown.stdout

    again = scalekit(url, app, "retry", task_id)
    assert again.returncode == 0 and "waiting again" in again.stdout
    info = tasks.engine.find(task_id)
    assert info.state == WAITING and tasks.decode(info.payload).attempts == 0
    assert scalekit(url, app, "retry", task_id).returncode == 1  # not dead any more

    dry = scalekit(url, app, "purge", "--queue", "default", "--dry-run")
    assert "1 task(s) of queue default would be deleted" in dry.stdout
    assert tasks.engine.find(task_id) is not None
    purged = scalekit(url, app, "purge", "--queue", "default", "--state", "waiting")
    assert "1 waiting task(s) of queue default deleted" in purged.stdout
    assert tasks.engine.find(task_id) is None
    assert scalekit(url, app, "show", task_id).returncode == 1


def test_a_task_whose_worker_was_killed_runs_again_after_the_visibility_timeout(
    url, app, tasks, folder
):
    tasks.defer(jobs.slow_once, folder, "k", 60.0)
    argv = command(url, app, "worker", "--visibility-timeout", "1")
    worker = subprocess.Popen(argv, env=environment(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)  # fmt: skip
    try:
        [victim] = wait_for(lambda: jobs.runs(folder, "k", "start"))
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        [runner] = wait_for(lambda: jobs.runs(folder, "k"))
        waited = time.monotonic() - killed
        worker.send_signal(signal.SIGTERM)
        err = worker.communicate(timeout=10)[1].decode()
    finally:
        worker.kill()
    assert runner != victim and waited < 6, err  # not the default 30 s lease
    assert worker.returncode == 0 and "killed by signal 9" in err


def test_a_forged_payload_is_buried_by_the_worker_and_never_run(url, app, tasks, folder):
    tasks.engine.enqueue("default", "forged", forged(tasks, folder, "x" * 40))
    done = scalekit(url, app, "worker", "--burst")
    assert done.returncode == 0
    assert not Path(folder, "forged").exists()
    assert "bad signature" in done.stderr and folder not in done.stderr
    assert tasks.engine.find("forged").state == DEAD
    shown = scalekit(url, app, "show", "forged")
    assert shown.returncode == 1 and "cannot be read" in shown.stdout
    assert scalekit(url, app, "retry", "forged").returncode == 1


def test_the_secret_comes_from_the_environment_or_a_file_only(url, app, tasks, folder, tmp_path):
    tasks.defer(jobs.done, folder, "s")
    missing = scalekit(url, app, "worker", "--burst", SCALEKIT_TASKS_SECRET=None)
    assert missing.returncode == 2 and "SCALEKIT_TASKS_SECRET" in missing.stderr
    assert scalekit(url, app, "--secret", SECRET, "worker").returncode == 2
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    done = scalekit(url, app, "--secret-file", str(secret_file), "worker", "--burst",
                    SCALEKIT_TASKS_SECRET=None)  # fmt: skip
    assert done.returncode == 0 and jobs.runs(folder, "s")


USAGE_ERRORS = [
    ["worker", "--concurrency", "0"], ["worker", "--import", "no.such.module"],
    ["worker", "-q", "no spaces"], ["worker", "--visibility-timeout", "0"],
    ["list", "--state", "lost"], ["purge"],
]  # fmt: skip


@pytest.mark.parametrize("argv", USAGE_ERRORS)
def test_usage_errors_exit_2(url, app, argv):
    done = scalekit(url, app, *argv)
    assert done.returncode == 2, done.stderr


def test_no_store_is_a_usage_error():
    argv = [sys.executable, "-m", "scalekit", "tasks", "info"]
    no_store = subprocess.run(argv, env=environment(), capture_output=True, text=True, check=False)
    assert no_store.returncode == 2 and "SCALEKIT_TASKS" in no_store.stderr


APP_MODULE = """
import os
from scalekit.tasks import Tasks
from tests.tasks import jobs

tasks = Tasks(os.environ["SCALEKIT_TASKS"], os.environ["SCALEKIT_APP"], default=True)
tasks.periodic("* * * * *", args=({folder!r}, "periodic"))(jobs.done)
"""


def test_the_worker_schedules_the_periodic_tasks_of_an_imported_module(
    url, app, tasks, folder, tmp_path
):
    (tmp_path / "periodic_app.py").write_text(APP_MODULE.format(folder=folder))
    tasks.engine.counts()  # the store exists before two processes use it
    env = environment(PYTHONPATH=f"{ROOT}:{tmp_path}", SCALEKIT_TASKS=url, SCALEKIT_APP=app)
    argv = command(url, app, "worker", "--import", "periodic_app")
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: jobs.runs(folder, "periodic") or worker.poll() is not None)
        worker.send_signal(signal.SIGTERM)
        err = worker.communicate(timeout=10)[1].decode()
    finally:
        worker.kill()
    assert worker.returncode == 0 and jobs.runs(folder, "periodic"), err


@pytest.mark.parametrize("view", [["info"], ["list", "--queue", "default", "--state", "dead"],
                                  ["purge", "--queue", "default"]])  # fmt: skip
def test_reading_commands_on_a_missing_database_exit_1_and_create_nothing(view, tmp_path, app):
    """A mistyped SQLite path is named and not created (as `tickets list`, `sessions2trash`)."""
    missing = tmp_path / "typo" / "tasks.sqlite"
    done = subprocess.run(
        command(f"sqlite://{missing}", app, *view),
        check=False, env=environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []
