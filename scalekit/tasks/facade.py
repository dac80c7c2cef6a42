"""The app's side of deferred tasks: ``Tasks(url, secret=...)`` and ``defer(fn, *args)``.

``tasks.defer(send_mail, to, _countdown=60)`` checks that a worker can find ``send_mail``
again, stores the call as a signed payload (:mod:`scalekit.tasks.task`) in the engine the
URL names and returns the task's id; ``scalekit tasks worker`` runs it.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scalekit.core import context, urls
from scalekit.core.checks import check_app_name
from scalekit.core.errors import ConfigError, InvalidArgument
from scalekit.core.signing import secret_list
from scalekit.tasks import outbox
from scalekit.tasks.callables import reference
from scalekit.tasks.cron import Cron
from scalekit.tasks.engines import ENGINES, Engine, open_engine
from scalekit.tasks.periodic import Schedule
from scalekit.tasks.task import Codec, Task, new_task_id

__all__ = [
    "SECRET_VARIABLE",
    "URL_VARIABLE",
    "Tasks",
    "check_queue",
    "default_tasks",
    "defer",
]

URL_VARIABLE = "SCALEKIT_TASKS"
SECRET_VARIABLE = "SCALEKIT_TASKS_SECRET"
APP_VARIABLE = "SCALEKIT_APP"
#: The retry options a queue may override, with their defaults.
RETRY_OPTIONS = {
    "max_attempts": 5,
    "min_backoff": 1.0,
    "max_backoff": 3600.0,
    "max_age": None,
    "timeout": None,
}
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
MAX_NAME = 200

_default: list[Tasks] = []
_default_lock = threading.Lock()


def check_queue(queue: Any) -> str:
    """A queue name: 1-64 letters, digits, ``_``, ``.`` or ``-`` (it becomes part of keys)."""
    if not isinstance(queue, str) or not _QUEUE.match(queue):
        raise InvalidArgument(
            f"queue name {queue!r:.80} must be 1-64 letters, digits, '_', '.' or '-'"
        )
    return queue


def _check_name(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidArgument(
            f"task name {name!r:.80} must be 1-{MAX_NAME} printable characters (no control "
            "characters)"
        )
    return name


def _seconds(value: Any, what: str, *, none: bool = False, zero: bool = False) -> float | None:
    """A number of seconds, more than 0 (or 0 with ``zero``; None with ``none``)."""
    if value is None and none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value >= 0 if zero else value > 0)
    ):
        raise InvalidArgument(
            f"{what} {value!r:.60} must be a number of seconds, {'0' if zero else 'more than 0'}"
            " or more" + (" (or None)" if none else "")
        )
    return float(value)


def _retry_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The retry options of ``options`` checked, as floats (max_attempts an int)."""
    unknown = sorted(set(options) - set(RETRY_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)}; a queue overrides "
            f"{', '.join(RETRY_OPTIONS)}"
        )
    checked = dict(options)
    try:
        attempts = checked.get("max_attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidArgument(f"max_attempts {attempts!r:.60} must be an int, 1 or more")
        for key in ("min_backoff", "max_backoff"):
            if key in checked:
                checked[key] = _seconds(checked[key], key)
        for key in ("max_age", "timeout"):
            if key in checked:
                checked[key] = _seconds(checked[key], key, none=True)
    except InvalidArgument as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return checked


class Tasks:
    """Deferred tasks of one app on one engine.

    ``url``: the engine (``redis://``, ``sqlite://``, ``postgres://``, ``mysql://``), opened
    on first use with ``visibility_timeout``, ``name_ttl`` and ``engine_options`` (when
    given; else the URL's query, else the engine's defaults: 30 s and 7 days).
    ``secret``: signs every payload (32+ bytes; a list rotates it: the first signs, all
    verify), else ``$SCALEKIT_TASKS_SECRET``. ``serializer``: ``"json"`` (tagged JSON) or
    ``"pickle"``. ``max_payload``: the largest payload in bytes. ``max_attempts``,
    ``min_backoff``, ``max_backoff``, ``max_age``, ``timeout``: every task's retry options,
    ``queues`` overrides them per queue (``{"mail": {"max_attempts": 10}}``).
    ``default=True``: the module-level :func:`defer` uses this one.
    """

    def __init__(
        self,
        url: str,
        app_name: str = "app",
        *,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        serializer: str = "json",
        max_payload: int = 1 << 20,
        visibility_timeout: float | None = None,
        name_ttl: float | None = None,
        max_attempts: int = 5,
        min_backoff: float = 1.0,
        max_backoff: float = 3600.0,
        max_age: float | None = None,
        timeout: float | None = None,
        queues: Mapping[str, Mapping[str, Any]] | None = None,
        default: bool = False,
        **engine_options: Any,
    ):
        self.settings = urls.parse(url, kinds=ENGINES.kinds)
        if secret is None:
            secret = os.environ.get(SECRET_VARIABLE)
        if not secret:
            raise ConfigError(
                f"Tasks({self.settings.masked!r}) needs a secret to sign its payloads: "
                f"secret=... or ${SECRET_VARIABLE}, 32+ random bytes (whoever can write an "
                "unsigned task runs any function on the workers)"
            )
        try:
            secret_list(secret)
        except ConfigError as exc:
            raise ConfigError(f"Tasks secret= (or ${SECRET_VARIABLE}): {exc}") from None
        self.codec = Codec(secret, serializer, max_payload)
        self.app_name = check_app_name(app_name)
        try:
            given = {"visibility_timeout": visibility_timeout, "name_ttl": name_ttl}
            given = {name: value for name, value in given.items() if value is not None}
            checked = {name: _seconds(value, name) for name, value in given.items()}
            self._engine_options = {**checked, **engine_options}
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
        options = {"max_attempts": max_attempts, "min_backoff": min_backoff,
                   "max_backoff": max_backoff, "max_age": max_age, "timeout": timeout}  # fmt: skip
        self.defaults = _retry_options(options, "Tasks")
        self.queues: dict[str, dict[str, Any]] = {}
        for queue, overrides in (queues or {}).items():
            try:
                check_queue(queue)
            except InvalidArgument as exc:
                raise ConfigError(f"Tasks queues=: {exc}") from None
            if not isinstance(overrides, Mapping):
                raise ConfigError(
                    f"Tasks queues={{{queue!r}: ...}} must map option names to values"
                )
            self.queues[queue] = {**self.defaults, **_retry_options(overrides, f"queue {queue!r}")}
        named = [(f"queue {queue!r}", values) for queue, values in self.queues.items()]
        for where, values in [("Tasks", self.defaults), *named]:
            if values["min_backoff"] > values["max_backoff"]:
                raise ConfigError(f"{where}: min_backoff is more than max_backoff")
        self._engine: Engine | None = None
        #: the periodic tasks (:meth:`periodic`) the workers' scheduler defers
        self.schedule = Schedule()
        self._lock = threading.Lock()
        if default:
            with _default_lock:
                _default[:] = [self]

    def __repr__(self) -> str:
        return f"Tasks({self.settings.masked!r}, app_name={self.app_name!r})"

    @property
    def engine(self) -> Engine:
        """The engine, opened on first use (it connects lazily, per process)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = open_engine(
                        self.settings.url, self.app_name, **self._engine_options
                    )
        return self._engine

    def options(self, queue: str) -> dict[str, Any]:
        """The retry options of ``queue`` (its overrides over the Tasks's defaults)."""
        return self.queues.get(queue, self.defaults)

    def encode(self, task: Task) -> bytes:
        """``task`` as this app's signed payload."""
        return self.codec.encode(task)

    def reencode(self, task: Task, like: bytes) -> bytes:
        """``task``, read from the stored ``like`` and changed, signed anew as ``like`` was
        stored (:meth:`~scalekit.tasks.task.Codec.reencode`)."""
        return self.codec.reencode(task, like)

    def decode(self, payload: bytes) -> Task:
        """The task in a payload signed with this app's secret (``CorruptData`` if not)."""
        return self.codec.decode(payload)

    def defer(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        _countdown: float | None = None,
        _eta: datetime.datetime | float | None = None,
        _name: str | None = None,
        _queue: str = "default",
        _transactional: bool = False,
        _retries: int | None = None,
        _timeout: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Run ``fn(*args, **kwargs)`` later on a worker; the task's id.

        ``_countdown``: seconds from now; ``_eta``: a datetime (naive: UTC) or a Unix time;
        ``_name``: enqueue it only if no task of the queue took this name within ``name_ttl``
        (else :class:`~scalekit.tasks.errors.TaskAlreadyExists`); ``_queue``; ``_retries``:
        retries after the first failure (``max_attempts - 1``); ``_timeout``: seconds a run
        may take; ``_transactional``: enqueue it only if the current request's database
        transaction commits (:mod:`~scalekit.tasks.outbox`). A task's own keyword arguments
        cannot start with ``_``.
        """
        task = self.task_for(
            fn, args, kwargs, countdown=_countdown, eta=_eta, name=_name, queue=_queue,
            retries=_retries, timeout=_timeout,
        )  # fmt: skip
        payload = self.encode(task)  # refused before the engine is opened
        if _transactional:
            outbox.write(self, task, payload)
        else:
            self.engine.enqueue(task.queue, task.id, payload, eta=task.eta, name=task.name)
        return task.id

    def task_for(
        self,
        fn: Callable[..., Any],
        args: tuple,
        kwargs: dict[str, Any],
        *,
        countdown: float | None = None,
        eta: datetime.datetime | float | None = None,
        name: str | None = None,
        queue: str = "default",
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Task:
        """The :class:`Task` :meth:`defer` stores, every option checked."""
        options = [key for key in kwargs if key.startswith("_")]
        if options:
            raise InvalidArgument(
                f"defer: unknown option(s) {', '.join(options)} (defer's options are _countdown, "
                "_eta, _name, _queue, _transactional, _retries, _timeout; a task's own keyword "
                "arguments cannot start with '_')"
            )
        function, target = reference(fn)
        retry = dict(self.options(check_queue(queue)))
        if retries is not None:
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InvalidArgument(f"_retries {retries!r:.60} must be an int, 0 or more")
            retry["max_attempts"] = retries + 1
        if timeout is not None:
            retry["timeout"] = _seconds(timeout, "_timeout")
        now = time.time()
        return Task(
            id=new_task_id(), queue=queue, function=function, args=args, kwargs=kwargs,
            target=target, name=_check_name(name), eta=_eta_of(countdown, eta, now),
            created=now, request_id=context.request_id.get(), **retry,
        )  # fmt: skip

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        queue: str = "default",
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Decorate a function (``@tasks.task`` or ``@tasks.task(queue="mail", retries=3)``)
        with ``fn.defer(*args, **kwargs)``: :meth:`defer` with these defaults (which a
        ``_queue=``, ``_retries=`` or ``_timeout=`` given to ``fn.defer`` overrides). The
        function itself is returned, so it is still called as before and found by its path."""
        check_queue(queue)

        def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
            def defer(*args: Any, **kwargs: Any) -> str:
                options = {"_queue": queue, "_retries": retries, "_timeout": timeout, **kwargs}
                return self.defer(function, *args, **options)

            function.defer = functools.wraps(function)(defer)  # type: ignore[attr-defined]
            return function

        return decorate if fn is None else decorate(fn)

    def periodic(
        self,
        cron: str | Cron,
        *,
        queue: str = "default",
        name: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorate a function to be deferred at each time of ``cron`` (UTC, or a
        ``Cron(expr, timezone=...)``), once per period across the cluster
        (:mod:`scalekit.tasks.periodic`); ``name``: the entry's, by default the function's
        import path. The function is returned unchanged."""
        check_queue(queue)
        parsed = cron if isinstance(cron, Cron) else Cron(cron)

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.schedule.add(function, parsed, queue=queue, name=name, args=args, kwargs=kwargs)
            return function

        return register

    def close(self) -> None:
        """Close the engine's connections (it reopens them on next use)."""
        if self._engine is not None:
            self._engine.close()


def _eta_of(countdown: Any, eta: Any, now: float) -> float | None:
    if countdown is not None and eta is not None:
        raise InvalidArgument("defer: give _countdown or _eta, not both")
    if countdown is not None:
        return now + _seconds(countdown, "_countdown", zero=True)
    if isinstance(eta, datetime.datetime):
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=datetime.timezone.utc)
        return eta.timestamp()
    if eta is not None:
        return _seconds(eta, "_eta (a datetime or a Unix time)", zero=True)
    return None


def default_tasks() -> Tasks:
    """The ``Tasks(..., default=True)`` made last in this process, else one made once from
    ``$SCALEKIT_TASKS`` (the URL), ``$SCALEKIT_TASKS_SECRET`` and ``$SCALEKIT_APP``."""
    with _default_lock:
        if not _default:
            url = os.environ.get(URL_VARIABLE)
            if not url:
                raise ConfigError(
                    "no default Tasks: make one with Tasks(url, secret=..., default=True), or "
                    f"set ${URL_VARIABLE} (the engine's URL) and ${SECRET_VARIABLE}"
                )
            _default.append(Tasks(url, os.environ.get(APP_VARIABLE, "app")))
        return _default[0]


def defer(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> str:
    """:meth:`Tasks.defer` on :func:`default_tasks`."""
    return default_tasks().defer(fn, *args, **kwargs)
