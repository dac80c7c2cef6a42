"""Workers: processes that claim deferred tasks from an engine and run them.

:func:`execute` runs one claimed task and settles it (ack, retry with backoff, or bury in the
dead letters); :class:`Worker` is ``scalekit tasks worker``: a supervisor process that forks
child processes, each claiming and running tasks one at a time while a heartbeat thread
keeps the leases of the claims it holds. A child killed while it runs a task (SIGKILL, the
machine gone) loses nothing: its lease expires and another worker runs the task again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from multiprocessing.sharedctypes import RawArray
from typing import Any

from scalekit.core import context
from scalekit.core.errors import ConfigError, CorruptData, InvalidArgument, ScalekitError
from scalekit.core.scrub import scrub_text
from scalekit.tasks.engines.base import Claim
from scalekit.tasks.errors import (
    NotDeferrable,
    PermanentTaskFailure,
    SingularTaskFailure,
    TaskTimeout,
)
from scalekit.tasks.facade import check_queue

__all__ = [
    "ACKED",
    "BURIED",
    "DROPPED",
    "RETRIED",
    "TaskLogContext",
    "Worker",
    "execute",
    "running_task",
]

log = logging.getLogger("scalekit.tasks")

#: What :func:`execute` did with a claim: deleted it (the task succeeded), made it
#: ``delayed`` for another try, made it ``dead``, or dropped it (its lease was lost: another
#: worker runs it now).
ACKED, RETRIED, BURIED, DROPPED = "acked", "retried", "buried", "dropped"

#: ``on_failure(task, exc_info)``: called when a task that could be read is buried after an
#: exception (its last attempt, PermanentTaskFailure, a callable that cannot be found).
FailureHook = Callable[[Any, tuple], Any]

_running: ContextVar[Any] = ContextVar("scalekit_task", default=None)


def running_task() -> Any:
    """The :class:`~scalekit.tasks.task.Task` this thread is running, or None."""
    return _running.get()


class TaskLogContext(logging.Filter):
    """A logging filter giving each record ``task``: ``"[queue id function] "`` while a
    task runs, else ``""`` (a format such as ``"%(task)s%(message)s"`` shows it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = _running.get()
        record.task = f"[{task.queue} {task.id} {task.function}] " if task else ""
        return True


def execute(
    tasks: Any,
    claim: Claim,
    *,
    on_failure: FailureHook | None = None,
    on_start: Callable[[Any], Any] | None = None,
) -> str:
    """Run the task of ``claim`` (a :class:`~scalekit.tasks.Tasks`'s engine handed it out)
    and settle it; :data:`ACKED`, :data:`RETRIED`, :data:`BURIED` or :data:`DROPPED`.

    A payload that is not signed with the secret, or does not decode, is buried unrun (a
    forged task never runs). A task whose earlier deliveries killed their workers
    ``max_attempts`` times is buried unrun (a poison task must not kill workers forever).
    ``on_start(task)`` is called just before the task runs.
    """
    engine = tasks.engine
    try:
        task = tasks.decode(claim.payload)
    except CorruptData as exc:
        log.error(
            "task %s of queue %s cannot be read, buried unrun: %s", claim.task_id, claim.queue, exc
        )
        return _settled(engine.bury(claim, claim.payload, f"unreadable task: {exc}"), claim)
    deaths = claim.deliveries - 1
    if deaths and task.attempts + deaths >= task.max_attempts:
        error = f"killed its worker {deaths} time(s) (and failed {task.attempts} time(s))"
        log.error(
            "task %s of queue %s (%s) %s: buried unrun", task.id, task.queue, task.function, error
        )
        return _settled(engine.bury(claim, tasks.reencode(task, claim.payload), error), claim)
    token = _running.set(task)
    try:
        return _run(tasks, claim, task, on_failure, on_start)
    finally:
        _running.reset(token)


def _run(tasks, claim, task, on_failure, on_start) -> str:
    engine = tasks.engine
    try:
        function = task.resolve()
    except NotDeferrable as exc:
        log.error("task %s of queue %s: %s; buried unrun", task.id, task.queue, exc)
        return _bury(tasks, claim, task, sys.exc_info(), on_failure)
    if on_start is not None:
        on_start(task)
    try:
        with _request(task.request_id), _time_limit(task.timeout):
            function(*task.args, **task.kwargs)
    except PermanentTaskFailure:
        log.error(
            "task %s of queue %s (%s) failed for good:\n%s",
            task.id,
            task.queue,
            task.function,
            _traceback(sys.exc_info()),
        )
        return _bury(tasks, claim, task, sys.exc_info(), on_failure)
    except SingularTaskFailure as exc:
        return _failed(tasks, claim, task, sys.exc_info(), on_failure, quiet=exc)
    except Exception:  # noqa: BLE001 - every failure of a task is retried or buried
        return _failed(tasks, claim, task, sys.exc_info(), on_failure)
    engine.ack(claim)
    return ACKED


def _failed(tasks, claim, task, exc_info, on_failure, quiet=None) -> str:
    """One more failed attempt: retry after the backoff, or bury if it was the last."""
    task.attempts += 1
    eta = task.next_retry(time.time())
    where = f"task {task.id} of queue {task.queue} ({task.function})"
    if eta is None:
        log.error("%s failed %d time(s), buried:\n%s", where, task.attempts, _traceback(exc_info))
        return _bury(tasks, claim, task, exc_info, on_failure)
    wait = max(eta - time.time(), 0.0)
    if quiet is not None:
        log.info(
            "%s asked to be retried (%s): again in %.1f s", where, scrub_text(str(quiet)), wait
        )
    else:
        log.warning(
            "%s failed (attempt %d of %d), again in %.1f s:\n%s",
            where,
            task.attempts,
            task.max_attempts,
            wait,
            _traceback(exc_info),
        )
    payload = tasks.reencode(task, claim.payload)
    return _settled(tasks.engine.retry(claim, payload, eta), claim, RETRIED)


def _bury(tasks, claim, task, exc_info, on_failure) -> str:
    error = _traceback(exc_info)  # shown to operators
    outcome = _settled(tasks.engine.bury(claim, tasks.reencode(task, claim.payload), error), claim)
    if on_failure is not None and outcome == BURIED:
        try:
            on_failure(task, exc_info)
        except Exception:  # noqa: BLE001 - a broken hook must not stop the worker
            log.error(
                "the failure hook failed on task %s:\n%s", task.id, _traceback(sys.exc_info())
            )
    return outcome


def _traceback(exc_info) -> str:
    """The failure's traceback with its secrets scrubbed, as logged and kept with a dead task:
    a task's exception may quote a URL with its password, a token..."""
    return scrub_text("".join(traceback.format_exception(*exc_info))).rstrip()


def _settled(done: bool, claim: Claim, outcome: str = BURIED) -> str:
    if done:
        return outcome
    log.warning(
        "task %s of queue %s: its lease was lost (another worker runs it now); "
        "this run's outcome dropped",
        claim.task_id,
        claim.queue,
    )
    return DROPPED


@contextlib.contextmanager
def _request(request_id: str | None) -> Iterator[None]:
    """The deferring request's id, as the current request's, while the task runs."""
    token = context.request_id.set(request_id)
    try:
        yield
    finally:
        context.request_id.reset(token)


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TaskTimeout` in the task after ``seconds`` (SIGALRM: only in the main
    thread; elsewhere the task runs without a limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    running = True

    def expired(signum, frame):
        if running:
            raise TaskTimeout(f"the task ran longer than its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        running = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: A child's exit code asking the supervisor for a fresh child (--max-tasks, --max-memory).
RECYCLE = 75
#: Seconds a child blocks in one claim with nothing to do (it sees a stop request after
#: at most this long) and the supervisor's polling period.
CLAIM_WAIT, TICK = 1.0, 0.1
#: A child that dies sooner than this after its start is replaced only this long after it.
RESTART_DELAY = 1.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Worker:
    """``scalekit tasks worker``: ``concurrency`` child processes running the tasks of
    ``queues`` (earlier queues first), under a supervisor that replaces a child that dies.

    Each child claims up to ``prefetch`` tasks at a time and runs them one by one; a task
    running past its ``timeout`` gets :class:`TaskTimeout` raised inside it, and its child
    is killed (SIGKILL) if it has not returned ``grace`` seconds later. ``burst``: exit once
    no task is ready. ``max_tasks`` / ``max_memory`` (RSS in MiB): a child exits after the
    task that reaches it and a new one takes its place. SIGTERM or SIGINT: children stop
    claiming, hand back the tasks they prefetched, finish the running task within ``grace``
    seconds (else are killed: the task runs again elsewhere after the visibility timeout)
    and :meth:`run` returns. ``scheduler`` (a :class:`~scalekit.tasks.periodic.Scheduler`,
    not with ``burst``): ticked by the supervisor every ``scheduler.interval`` seconds,
    stopped (its lease released) when the worker stops.
    """

    def __init__(
        self,
        tasks: Any,
        queues: Sequence[str] = ("default",),
        *,
        concurrency: int = 1,
        burst: bool = False,
        max_tasks: int | None = None,
        max_memory: float | None = None,
        grace: float = 30.0,
        prefetch: int = 4,
        on_failure: FailureHook | None = None,
        name: str | None = None,
        scheduler: Any = None,
    ):
        if isinstance(queues, str) or not queues:
            raise ConfigError(f"a worker needs a sequence of queue names, not {queues!r:.60}")
        for queue in queues:
            try:
                check_queue(queue)
            except InvalidArgument as exc:
                raise ConfigError(f"worker: {exc}") from None
        limits = {
            "concurrency": concurrency,
            "prefetch": prefetch,
            "max_tasks": max_tasks or 1,
            "max_memory": max_memory or 1,
        }
        for label, value in limits.items():
            if value <= 0:
                raise ConfigError(f"a worker's {label} must be more than 0, not {value!r}")
        if grace < 0:
            raise ConfigError(f"a worker's grace must be 0 or more seconds, not {grace!r}")
        self.tasks, self.queues, self.concurrency = tasks, tuple(queues), concurrency
        self.burst, self.grace, self.prefetch = burst, grace, prefetch
        self.max_tasks, self.max_memory = max_tasks, max_memory
        self.on_failure = on_failure
        self.name = name or socket.gethostname()
        self.scheduler = None if burst else scheduler
        self._stopping = False

    def run(self) -> int:
        """Supervise the children until stopped (or, with ``burst``, until they are done);
        0."""
        previous = {sig: signal.signal(sig, self._stop) for sig in _STOP_SIGNALS}
        deadlines = RawArray("d", self.concurrency)  # each child's running task's, shared
        children: dict[int, tuple[int, float]] = {}  # pid -> (slot, started)
        due: dict[int, float] = dict.fromkeys(range(self.concurrency), 0.0)  # slots to fill
        log.info(
            "worker %s: %d process(es) on queue(s) %s",
            self.name,
            self.concurrency,
            ", ".join(self.queues),
        )
        stop_at, next_tick = None, 0.0
        try:
            while children or (due and stop_at is None):
                now = time.monotonic()
                for slot, when in list(due.items()):
                    if stop_at is None and when <= now:
                        del due[slot]
                        children[self._fork(slot, deadlines)] = (slot, now)
                if self.scheduler is not None and stop_at is None and now >= next_tick:
                    ticked = self._tick()  # after a failure, again in a second
                    next_tick = now + (self.scheduler.interval if ticked else RESTART_DELAY)
                if self._stopping and stop_at is None:
                    stop_at = now + self.grace
                    log.info("worker %s stopping: running tasks get %g s", self.name, self.grace)
                    due.clear()
                    self._signal(children, signal.SIGTERM)
                self._kill_overdue(children, deadlines, stop_at)
                time.sleep(TICK)
                self._reap(children, deadlines, due)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.scheduler is not None:
                with contextlib.suppress(ScalekitError):  # its lease expires instead
                    self.scheduler.stop()
        log.info("worker %s stopped", self.name)
        return 0

    def _stop(self, signum, frame) -> None:
        self._stopping = True

    def _tick(self) -> bool:
        """Defer the periodic tasks now due, if this supervisor's scheduler is elected;
        False if the engine failed."""
        try:
            self.scheduler.tick()
        except ScalekitError as exc:
            log.warning("worker %s: periodic tasks not scheduled: %s", self.name, exc)
            return False
        return True

    def _fork(self, slot: int, deadlines) -> int:
        # SIGTERM and SIGINT wait (blocked) until the child has its own handlers
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            return pid
        code = 1
        try:
            code = _Child(self, slot, deadlines).run()
        except BaseException:
            log.exception("worker %s: a child process failed:", self.name)
        finally:
            logging.shutdown()
            os._exit(code)

    def _reap(self, children, deadlines, due) -> None:
        """Collect the children that exited; schedule the replacement of those that did not
        finish their work (died, killed, recycled)."""
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if pid not in children:
                continue
            slot, started = children.pop(pid)
            deadlines[slot] = 0.0
            code = os.waitstatus_to_exitcode(status)
            if code == 0 or self._stopping:
                continue
            due[slot] = now = time.monotonic()
            if code != RECYCLE:
                how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
                log.warning("worker %s: child %d %s; replacing it", self.name, pid, how)
                if now - started < RESTART_DELAY:  # dying at start: not in a tight loop
                    due[slot] += RESTART_DELAY

    def _kill_overdue(self, children, deadlines, stop_at) -> None:
        """SIGKILL the children whose task is ``grace`` past its timeout, and every child
        ``grace`` after a stop request."""
        now, wall = time.monotonic(), time.time()
        for pid, (slot, _) in children.items():
            deadline = deadlines[slot]
            if stop_at is not None and now > stop_at:
                why = f"still running {self.grace:g} s after the stop request"
            elif deadline and wall > deadline + self.grace:
                why = f"its task still running {self.grace:g} s past its timeout"
            else:
                continue
            log.error(
                "worker %s: child %d killed, %s (the task runs again after the visibility timeout)",
                self.name,
                pid,
                why,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadlines[slot] = 0.0

    @staticmethod
    def _signal(children, signum) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


class _Child:
    """One child process: claims, runs one task at a time, keeps its leases."""

    def __init__(self, worker: Worker, slot: int, deadlines):
        self.worker, self.slot, self.deadlines = worker, slot, deadlines
        self.engine = worker.tasks.engine
        self.consumer = f"{worker.name}.{os.getpid()}"
        self.parent = os.getppid()
        self.stopping = False
        self.held: set[Claim] = set()  # running or prefetched
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self) -> int:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        heartbeat.start()
        try:
            return self._loop()
        finally:
            self._release()
            self.done.set()
            heartbeat.join()
            self.engine.close()

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _done_claiming(self) -> bool:
        """Asked to stop, or orphaned (the supervisor was killed: nobody would stop us)."""
        return self.stopping or os.getppid() != self.parent

    def _loop(self) -> int:
        worker, ran = self.worker, 0
        wait = 0.0 if worker.burst else CLAIM_WAIT
        while not self._done_claiming():
            try:
                claims = self.engine.claim(
                    worker.queues, self.consumer, count=worker.prefetch, wait=wait
                )
            except ScalekitError as exc:
                log.error("worker %s: claiming failed: %s", self.consumer, exc)
                time.sleep(CLAIM_WAIT)
                continue
            if not claims:
                if worker.burst:
                    return 0
                continue
            with self.lock:
                self.held.update(claims)
            for claim in claims:
                if self._done_claiming():  # the rest are handed back
                    return 0
                with self.lock:
                    if claim not in self.held:  # its lease was lost meanwhile
                        continue
                self._execute(claim)
                ran += 1
                if (worker.max_tasks and ran >= worker.max_tasks) or self._too_big():
                    log.info("worker %s: %d task(s) run, recycled", self.consumer, ran)
                    return RECYCLE
        return 0

    def _execute(self, claim: Claim) -> None:
        def started(task) -> None:
            self.deadlines[self.slot] = time.time() + task.timeout if task.timeout else 0.0

        try:
            execute(self.worker.tasks, claim, on_failure=self.worker.on_failure, on_start=started)
        except ScalekitError as exc:  # the engine failed: the lease expires, it runs again
            log.error(
                "worker %s: task %s of queue %s not settled: %s",
                self.consumer,
                claim.task_id,
                claim.queue,
                exc,
            )
        finally:
            self.deadlines[self.slot] = 0.0
            with self.lock:
                self.held.discard(claim)

    def _too_big(self) -> bool:
        limit = self.worker.max_memory
        return bool(limit) and rss_mib() > limit

    def _release(self) -> None:
        """Hand back the claims prefetched but not run: ready again at once."""
        with self.lock:
            claims, self.held = list(self.held), set()
        now = time.time()
        for claim in claims:
            try:
                self.engine.retry(claim, claim.payload, now)
            except ScalekitError as exc:  # its lease expires instead
                log.warning(
                    "worker %s: task %s not handed back: %s", self.consumer, claim.task_id, exc
                )

    def _heartbeat(self) -> None:
        """Every third of the visibility timeout, renew the leases held; forget lost ones."""
        while not self.done.wait(self.engine.visibility_timeout / 3):
            with self.lock:
                claims = list(self.held)
            if not claims:
                continue
            try:
                lost = self.engine.extend(claims)
            except ScalekitError as exc:
                log.error("worker %s: leases not renewed: %s", self.consumer, exc)
                continue
            with self.lock:  # a claim settled while extend ran was not lost: it is done
                lost = [claim for claim in lost if claim in self.held]
                self.held.difference_update(lost)
            for claim in lost:
                log.warning("worker %s: lease of task %s lost", self.consumer, claim.task_id)


def rss_mib() -> float:
    """This process's resident memory in MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm", "rb") as file:
        pages = int(file.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
