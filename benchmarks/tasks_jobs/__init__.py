"""The tasks ``benchmarks/tasks.py`` defers, as each system's workers import them.

One module for the four systems: ``noop``, and ``mark`` / ``hang``, which push when they
started (``time.time()``) to a Redis list for the benchmark to read. Celery's app and
Dramatiq's broker use the Redis of ``$TASKS_BENCH_REDIS`` (read at import: their workers
import this module).
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from celery import Celery
from dramatiq.brokers.redis import RedisBroker

URL = os.environ.get("TASKS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
MARKS = "bench:marks:"  # + a label: "sent ran pid ppid" per run of mark or hang

_client: tuple[int, redis.Redis] | None = None


def _redis() -> redis.Redis:
    """This process's client (RQ's default worker forks a process per job)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(URL))
    return _client[1]


def noop() -> None:
    """The task of the throughput and enqueue measurements."""


def mark(label: str, sent: float = 0.0) -> None:
    """Record that this task started: when it was sent, when it ran, which process ran it."""
    ran = time.time()
    _redis().rpush(MARKS + label, f"{sent!r} {ran!r} {os.getpid()} {os.getppid()}")


def hang(label: str, seconds: float) -> None:
    """A long task: record its start, then sleep (the benchmark kills its worker)."""
    mark(label)
    time.sleep(seconds)


celery_app = Celery("tasks_jobs", broker=URL)
celery_app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
celery_noop = celery_app.task(name="bench.noop")(noop)
celery_mark = celery_app.task(name="bench.mark")(mark)

dramatiq.set_broker(RedisBroker(url=URL))
dramatiq_noop = dramatiq.actor(noop, actor_name="noop", max_retries=0)
dramatiq_mark = dramatiq.actor(mark, actor_name="mark", max_retries=0)
