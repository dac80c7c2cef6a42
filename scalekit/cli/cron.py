"""The cron loop of ``sessions2trash``, ``tickets2db`` and the commands to come (``tasks
relay``): each command supplies one pass, this runs it once (``-o``) or every ``-s``
seconds, with progress and a summary line under ``-v``.

In the loop a pass that fails because a store is down is logged and retried after the
sleep; with ``-o`` it fails the run. SIGTERM or Ctrl-C stops the loop at once while it
sleeps, else after the current pass (exit 0); a second one interrupts the pass.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scalekit.cli import EXIT_OK
from scalekit.cli.arguments import positive
from scalekit.core.errors import StoreUnavailable

log = logging.getLogger("scalekit.cli")


@dataclass
class Outcome:
    """What one pass did. ``summary`` ends the summary line; with ``unit`` the line adds the
    pass's seconds and rate (``count`` per second). ``notable``: print the line without
    ``-v`` too. ``last``: later passes would have nothing to do, so the loop ends."""

    summary: str
    count: int = 0
    unit: str = ""
    notable: bool = False
    last: bool = False


Progress = Callable[[str], None]
OnePass = Callable[[Progress], Outcome]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``-o``, ``-s`` and ``-v``, as web2py's cron scripts have them."""
    parser.add_argument("-o", "--once", action="store_true",
                        help="one pass, then exit (without it, run every -s seconds)")  # fmt: skip
    parser.add_argument("-s", "--sleep", type=positive(float), default=300.0,
                        metavar="SECONDS", help="seconds between passes (default 300)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="progress per batch and a summary (repeat: more logs)")  # fmt: skip


def run_passes(args: argparse.Namespace, where: str, one_pass: OnePass) -> int:
    """Run ``one_pass(progress)`` as ``args.once``, ``args.sleep`` and ``args.verbose`` say;
    ``where`` (passwords masked) names what it works on in the summary line."""
    if args.once:
        _run_one(args, where, one_pass)
        return EXIT_OK
    with _stop_on_signals() as stop:
        while not stop.requested:
            try:
                if _run_one(args, where, one_pass).last:
                    break
            except StoreUnavailable as exc:
                log.error("%s: pass failed, retrying in %g s: %s", args.command, args.sleep, exc)
            stop.sleep(args.sleep)
    return EXIT_OK


def _run_one(args: argparse.Namespace, where: str, one_pass: OnePass) -> Outcome:
    def progress(text: str) -> None:
        if args.verbose:
            print(f"  {text}", flush=True)

    started = time.monotonic()
    outcome = one_pass(progress)
    if args.verbose or outcome.notable:
        line = f"{args.command}: {where}: {outcome.summary}"
        if outcome.unit:
            seconds = time.monotonic() - started
            rate = outcome.count / seconds if seconds > 0 else 0.0
            line += f" in {seconds:.2f} s ({rate:,.0f} {outcome.unit}/s)"
        print(line, flush=True)
    return outcome


class _Stopped(BaseException):
    """Not an error: unwinds the loop's sleep when a stop signal comes."""


class _Stop:
    """The loop's stop request, set by SIGTERM / SIGINT."""

    def __init__(self) -> None:
        self.requested = self.sleeping = False

    def handle(self, signum: int, frame: object) -> None:
        if self.sleeping:
            raise _Stopped
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True  # the pass ends first: the loop checks between passes

    def sleep(self, seconds: float) -> None:
        self.sleeping = True
        try:
            if not self.requested:
                time.sleep(seconds)
        finally:
            self.sleeping = False


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    """A :class:`_Stop` that SIGTERM and SIGINT set while the block runs (signals can be
    handled in the main thread only: elsewhere they keep their handlers)."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
