"""Where the maintenance flag lives, and the cheap per-process reader of it.

* ``file:///srv/app/MAINTENANCE``: a JSON file on each server (or a shared disk), written
  atomically. A file named ``DISABLED`` (web2py's convention), or a ``file://`` URL naming an
  app *folder* (its ``DISABLED`` file is used), means "down" whatever it holds, unless it
  holds a JSON flag.
* ``redis://host:6379/0``: one key, ``scalekit:m:<app>`` (the name of the ``m`` namespace of
  :mod:`scalekit.connect.redis`), shared by every server; one command flips them all. The
  same on Redis behind Sentinels (``redis+sentinel://``) and on a Redis Cluster
  (``redis+cluster://``; one key needs no hash tag), and on Valkey (``valkey...://``).

:class:`Maintenance` reads the flag at most once per ``cache_seconds`` (default 1) per
process. Between reads, asking costs one monotonic-clock compare. If the flag cannot be read
(Redis down, a corrupt file) the last known state holds, and the error is logged at most once
a minute.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
from typing import Any

import redis

from scalekit.connect.files import describe_os_error, replace_atomically
from scalekit.connect.redis import REDIS_OPTIONS, open_redis
from scalekit.core import urls
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, CorruptData, StoreNotFound, StoreUnavailable
from scalekit.core.options import merge_options
from scalekit.maintenance.state import DOWN, State

__all__ = ["FLAG_VARIABLE", "FileFlag", "Flag", "Maintenance", "RedisFlag", "open_flag"]

#: The environment variable the CLI and :func:`writes_enabled_for` read the flag URL from.
FLAG_VARIABLE = "SCALEKIT_MAINTENANCE_FLAG"
WEB2PY_NAME = "DISABLED"
#: The URL schemes a flag can be kept at: a file, or a Redis key (any topology, or Valkey).
_FLAG_SCHEMES = (
    "file", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster",
    "valkey", "valkeys", "valkey+sentinel", "valkey+cluster",
)  # fmt: skip
_MEMCACHE = "is a memcached URL, and memcached may evict a key at any time (ending maintenance)"
_NOT_A_FLAG = {"memcache": _MEMCACHE, "memcached": _MEMCACHE}
LOG_EVERY = 60.0  # seconds between two log lines about the same unreadable flag

log = logging.getLogger("scalekit.maintenance")


class Flag(abc.ABC):
    """Storage of one maintenance flag: ``read`` / ``write`` / ``clear``."""

    where: str  # for messages: the file or the masked URL and key

    @abc.abstractmethod
    def read(self) -> State | None:
        """The stored state, ``None`` when maintenance is off.

        Raises :class:`StoreUnavailable` or :class:`CorruptData`."""

    @abc.abstractmethod
    def write(self, state: State) -> None:
        """Store ``state`` (replacing any other)."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Switch maintenance off (no error if it was off)."""

    def close(self) -> None:  # noqa: B027 - optional: only flags with connections close
        """Release connections, if any."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where}>"


class FileFlag(Flag):
    """A flag file; a ``DISABLED`` file (web2py) means "down" even when empty."""

    def __init__(self, path: str):
        path = os.path.abspath(path)
        if os.path.isdir(path):  # an app folder: web2py's DISABLED file in it
            path = os.path.join(path, WEB2PY_NAME)
        self.path = self.where = path
        self.web2py = os.path.basename(path) == WEB2PY_NAME

    def read(self) -> State | None:
        try:
            with open(self.path, "rb") as file:
                raw = file.read(65536)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the maintenance flag {self.path}: {exc}") from exc
        if self.web2py and not raw.lstrip().startswith(b"{"):
            return State(DOWN, raw.decode("utf-8", "replace").strip()[:1000])
        return State.from_json(raw, self.path)

    def write(self, state: State) -> None:
        folder, name = os.path.split(self.path)
        try:
            replace_atomically(
                self.path,
                state.to_json() + b"\n",
                tmp_prefix=os.path.join(folder, f".{name}.tmp-"),
                mode=0o644,
            )
        except FileNotFoundError:  # the flag's folder: made by the deploy, never by a typo
            raise StoreNotFound(
                f"cannot write the maintenance flag {self.path}: the folder {folder} does not exist"
            ) from None
        except OSError as exc:  # its file name is the temp file's: say what is wrong instead
            reason = (
                describe_os_error(exc)
                if isinstance(exc, NotADirectoryError)
                else exc.strerror or str(exc)
            )
            raise StoreUnavailable(
                f"cannot write the maintenance flag {self.path}: {reason}"
            ) from exc

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot remove the maintenance flag {self.path}: {exc}"
            ) from exc


class RedisFlag(Flag):
    """The key ``scalekit:m:<app>`` on a Redis server (or behind Sentinels, or in a Cluster),
    holding the state as JSON.

    A window with an end expires from Redis a minute after it closes. Short timeouts by
    default (0.25 s), so a down server costs a request little; URL options override them.
    """

    @renamed_keyword("app", "app_name")
    def __init__(self, settings: urls.RedisURL, app_name: str = "app", **redis_options: Any):
        """``redis_options``: those of :data:`~scalekit.connect.redis.REDIS_OPTIONS`."""
        options = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25, **redis_options}
        self._redis = open_redis(settings, **options)
        self.key = self._redis.namespace("m", app_name, spread=True).name  # one key: no tag
        self.where = f"{settings.masked} key {self.key}"

    def read(self) -> State | None:
        try:
            raw = self._redis.call("GET", self.key, safe=True)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"cannot read the maintenance flag at {self.where}: {exc}"
            ) from exc
        return None if raw is None else State.from_json(raw, self.where)

    def write(self, state: State) -> None:
        args: list[Any] = ["SET", self.key, state.to_json()]
        if state.end is not None:
            args += ["PXAT", int((state.end + 60) * 1000)]
        self._command(*args)

    def clear(self) -> None:
        self._command("DEL", self.key)

    def _command(self, *args: Any) -> None:
        """Run ``args``, a ``SET`` or ``DEL``: doing one twice is harmless, so it is retried
        after a lost connection."""
        try:
            self._redis.call(*args, safe=True)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"cannot change the maintenance flag at {self.where}: {exc}"
            ) from exc

    def close(self) -> None:
        self._redis.close()


@renamed_keyword("app", "app_name")
def open_flag(url: str, app_name: str = "app", **options: Any) -> Flag:
    """The flag at ``url``: ``file:///path``, or a Redis key (``redis://``, ``rediss://``,
    ``unix://``, ``redis+sentinel://``, ``redis+cluster://``, or their ``valkey`` forms)."""
    scheme = url.partition("://")[0].partition(":")[0].lower() if "://" in url else ""
    if scheme not in _FLAG_SCHEMES:
        problem = _NOT_A_FLAG.get(scheme, f"is a {scheme}:// URL" if scheme else "is not a URL")
        raise ConfigError(
            f"{urls.mask(url)!r} {problem}; a maintenance flag is file:///path/to/flag (for "
            "the servers that see that file) or redis://host:6379/0 (for every server; also "
            "rediss://, redis+sentinel://, redis+cluster://, their valkey forms, or "
            "unix:///path/to/redis.sock)"
        )
    settings = urls.parse(url, kinds={"file", "redis"})
    if isinstance(settings, urls.FileURL):
        settings.check_options(())
        if options:
            raise ConfigError(f"{settings.masked}: a file flag takes no options")
        return FileFlag(settings.path)
    merged = merge_options(settings, REDIS_OPTIONS, options)
    if not app_name or any(c.isspace() for c in app_name):
        raise ConfigError(f"app name {app_name!r} cannot be empty or contain spaces")
    return RedisFlag(settings, app_name, **merged)


class Maintenance:
    """The maintenance state of one flag as this process sees it, read at most once per
    ``cache_seconds``.

    :meth:`current` is what a request asks: the state if maintenance is on *now*, else
    ``None``. Between reads it costs a clock compare; a scheduled window opens and closes on
    time because the cache also expires at the window's start and end. When the flag cannot
    be read, the last known state holds (also across a window edge: its times are known)
    and the next try comes after ``retry_seconds``.
    """

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        flag: Flag | str,
        app_name: str = "app",
        *,
        cache_seconds: float = 1.0,
        retry_seconds: float = 5.0,
    ):
        self.flag = open_flag(flag, app_name) if isinstance(flag, str) else flag
        if cache_seconds < 0 or retry_seconds < 0:
            raise ConfigError("cache_seconds and retry_seconds cannot be negative")
        self.cache_seconds, self.retry_seconds = cache_seconds, retry_seconds
        self.state: State | None = None  # the last state read from the flag
        self.error: Exception | None = None  # the last read's error, if it failed
        self._active: State | None = None  # what current() answers until _deadline
        self._deadline = -1.0  # monotonic time
        self._next_read = -1.0  # monotonic time
        self._lock = threading.Lock()
        self._last_log = -LOG_EVERY
        self._suppressed = 0

    def __repr__(self) -> str:
        return f"<Maintenance {self.flag.where}>"

    def current(self) -> State | None:
        """The state if maintenance is on right now, else ``None`` (cached; never raises)."""
        if time.monotonic() < self._deadline:
            return self._active
        return self.refresh()

    def refresh(self, force: bool = False) -> State | None:
        """Read the flag if the cache is stale (or ``force``); return :meth:`current`'s answer.

        One thread reads at a time; the others wait for its answer (at most the Redis
        timeout, once per ``retry_seconds`` while Redis is down) rather than use a stale one.
        """
        with self._lock:
            mono, now = time.monotonic(), time.time()
            if force or mono >= self._next_read:
                self._read()
                pause = self.retry_seconds if self.error is not None else self.cache_seconds
                self._next_read = time.monotonic() + pause
                mono, now = time.monotonic(), time.time()
            state = self.state
            active = state if state is not None and state.active(now) else None
            deadline = self._next_read
            change = state.next_change(now) if state is not None else None
            if change is not None:
                deadline = min(deadline, mono + (change - now))
            self._active, self._deadline = active, deadline
            return active

    def _read(self) -> None:
        try:
            state = self.flag.read()
        except (StoreUnavailable, CorruptData) as exc:
            self._failed(exc)
            return
        if self.error is not None:
            log.warning("maintenance flag %s readable again: %s", self.flag.where,
                        state.describe() if state else "off")  # fmt: skip
        self.state, self.error = state, None

    def _failed(self, exc: Exception) -> None:
        self.error = exc
        mono = time.monotonic()
        if mono - self._last_log < LOG_EVERY:
            self._suppressed += 1
            return
        held = self.state.describe() if self.state is not None else "off"
        more = (
            f" ({self._suppressed} more failures since the last message)"
            if self._suppressed
            else ""
        )
        log.error("%s; keeping the last known state (%s)%s", exc, held, more)
        self._last_log, self._suppressed = mono, 0

    def writes_enabled_for(self, seconds: float = 0.0) -> bool:
        """False if maintenance is on, or a window starts within ``seconds``: a long job
        (an import, a batch) should not start now."""
        self.current()
        state, now = self.state, time.time()
        if state is None or state.over(now):
            return True
        return not (state.start is None or state.start <= now + seconds)

    def close(self) -> None:
        self.flag.close()
