"""Tasks the worker tests defer: importable by a worker process, each records its runs as
lines (``start PID``, ``end PID``) in ``folder/name``, which the tests read."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from scalekit.tasks.errors import PermanentTaskFailure, SingularTaskFailure


def record(folder: str, name: str, word: str = "end") -> int:
    """Append ``word PID`` to ``folder/name``; how many lines it has now."""
    path = Path(folder, name)
    with path.open("a") as file:
        file.write(f"{word} {os.getpid()}\n")
    return len(path.read_text().splitlines())


def runs(folder: str, name: str, word: str = "end") -> list[int]:
    """The pids of the ``word`` lines of ``folder/name`` ([] if it does not exist)."""
    path = Path(folder, name)
    if not path.exists():
        return []
    return [int(pid) for kind, pid in map(str.split, path.read_text().splitlines()) if kind == word]


def noop() -> None:
    """Nothing: the benchmark's task."""


def done(folder: str, name: str) -> None:
    record(folder, name)


def flaky(folder: str, name: str, failures: int) -> None:
    """Fail the first ``failures`` runs, then succeed."""
    if record(folder, name, "start") <= failures:
        raise RuntimeError(f"flaky failure in {name}")
    record(folder, name)


def always_fails(folder: str, name: str, *data: object) -> None:
    """Fail every time (``data``: what a test makes the payload carry)."""
    record(folder, name, "start")
    raise ValueError(f"broken task {name}")


def permanent(folder: str, name: str) -> None:
    record(folder, name, "start")
    raise PermanentTaskFailure(f"no use retrying {name}")


def singular(folder: str, name: str) -> None:
    """Ask for a retry on the first run, succeed on the second."""
    if record(folder, name, "start") == 1:
        raise SingularTaskFailure("the remote service said later")
    record(folder, name)


def slow(folder: str, name: str, seconds: float) -> None:
    """Record the start, sleep ``seconds``, record the end."""
    record(folder, name, "start")
    time.sleep(seconds)
    record(folder, name)


def stubborn(folder: str, name: str, seconds: float) -> None:
    """Run ``seconds`` whatever is raised inside it (a TaskTimeout too)."""
    record(folder, name, "start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(Exception):  # the point: it does not stop
            time.sleep(0.02)
    record(folder, name)


def slow_once(folder: str, name: str, seconds: float) -> None:
    """Sleep ``seconds`` on the first run only (the test kills that run's process)."""
    if record(folder, name, "start") == 1:
        time.sleep(seconds)
    record(folder, name)


def cannot_connect(url: str) -> None:
    """Fail for good with a message holding ``url`` (and any password in it)."""
    raise PermanentTaskFailure(f"cannot connect to {url}")


def leaks(url: str) -> None:
    """Fail (to be retried) with a message holding ``url`` (and any password in it)."""
    raise ConnectionError(f"cannot reach {url}")
