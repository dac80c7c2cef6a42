"""The chaos test's task and worker process (:mod:`tests.tasks.test_chaos`).

:func:`record` is the task: it works a little, then in one PostgreSQL transaction records
its run (``chaos_runs``: one row per run) and its effect, made idempotent by the task's key
(``chaos_done``: ``INSERT ... ON CONFLICT DO NOTHING``). Run as ``python -m
tests.tasks.chaos_jobs ENGINE_URL APP``, this module is one worker supervisor (one child
process) with a short visibility timeout.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg2

from scalekit.tasks import Tasks
from scalekit.tasks.worker import Worker, running_task

SECRET = "chaos-tests-secret-0123456789abcdefghijk"
#: Seconds a lease lasts without a heartbeat: a killed child's tasks run again this soon.
VISIBILITY_TIMEOUT = 2.0
#: Tasks a child claims at a time.
PREFETCH = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS chaos_runs (
    run SERIAL PRIMARY KEY, app TEXT NOT NULL, key TEXT NOT NULL, task_id TEXT NOT NULL,
    pid INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS chaos_done (
    app TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (app, key));
"""

_connection: list = []  # [(pid, connection)]: this process's, opened on first use


def connection(dsn: str):
    """This process's connection to the record database (a forked child opens its own)."""
    if not _connection or _connection[0][0] != os.getpid() or _connection[0][1].closed:
        _connection[:] = [(os.getpid(), psycopg2.connect(dsn, connect_timeout=5))]
    return _connection[0][1]


def create_tables(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(SCHEMA)
    conn.close()


def record(dsn: str, app: str, key: str, work: float) -> None:
    """Sleep ``work`` seconds, then record this run of the task ``key`` and its effect."""
    time.sleep(work)
    conn = connection(dsn)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO chaos_runs (app, key, task_id, pid, at) VALUES (%s, %s, %s, %s, %s)",
                (app, key, running_task().id, os.getpid(), time.time()),
            )
            cursor.execute(
                "INSERT INTO chaos_done (app, key) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (app, key),
            )
    except psycopg2.Error:
        conn.close()  # reopened by the next run; this one is retried
        raise


def tasks_for(url: str, app: str) -> Tasks:
    return Tasks(url, app, secret=SECRET, visibility_timeout=VISIBILITY_TIMEOUT)


def main(url: str, app: str) -> int:
    """One worker supervisor with one child, until SIGTERM."""
    return Worker(tasks_for(url, app), concurrency=1, prefetch=PREFETCH, grace=5.0).run()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
