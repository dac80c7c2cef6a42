"""ReplicaSet: one primary and its read replicas, picked per connection with health memory.

    replicas = ReplicaSet("postgres://app:pw@db1/app",
                          ["postgres://app:pw@db2/app", "postgres://app:pw@db3/app"])
    db = replicas.connect(read_only=True, folder="databases", pool_size=10)

Reads rotate over the replicas that are up (round robin from a random offset per process),
skip those in cooldown or too far behind, and fall back to the primary when none can serve
(logged at most once per ``fallback_log_interval``, with the count). Writes always go to
the primary. Only the primary migrates; every DAL gets the same ``table_hash``, so the
``.table`` files do not depend on which database answered.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from pydal import DAL

from scalekit.connect.sql import close
from scalekit.core.errors import ConfigError, DatabaseUnavailable
from scalekit.core.process import PerProcess
from scalekit.db.health import PROBE, HealthMemory, Hook, HostEvent
from scalekit.db.members import Member

log = logging.getLogger("scalekit.db")

#: Environment variables read by :meth:`ReplicaSet.from_environ`.
PRIMARY_VARIABLE, REPLICAS_VARIABLE = "SCALEKIT_DB_PRIMARY", "SCALEKIT_DB_REPLICAS"
Strategy = Callable[[list[Member]], list[Member]]
_REPLICA_ONLY = {"migrate": False, "migrate_enabled": False, "fake_migrate": False,
                 "fake_migrate_all": False}  # fmt: skip
_T = TypeVar("_T")


class _Rotation:
    """Round robin over a list from a random offset, a new offset in every process (so
    forked workers do not all start on the same host)."""

    def __init__(self, size: int):
        self._size = size
        self._turns = PerProcess(lambda: itertools.count(random.randrange(size)))

    def rotated(self, items: Sequence[_T]) -> list[_T]:
        """``items`` (of this rotation's size) starting at the next turn's offset."""
        start = next(self._turns.get()) % self._size  # itertools.count: atomic under the GIL
        return [*items[start:], *items[:start]]


class ReplicaSet:
    """A primary and replicas, each a URL (see :class:`~scalekit.db.members.Member`).

    ``strategy``: ``"round_robin"`` (default), ``"random"``, ``"ordered"`` (the first
    replica that is up: nearest first) or a function reordering the list of replicas.
    ``connect_timeout``: seconds per connection attempt. ``cooldown``/``max_cooldown``: how
    long a failed host is skipped (see :class:`HealthMemory`). ``max_lag``: skip replicas
    more than this many seconds behind (PostgreSQL, MySQL/MariaDB; a replica whose lag
    cannot be told is skipped too; measured at most every ``lag_interval``
    seconds per replica and process). ``on_change``: called with a :class:`HostEvent` on
    every state change and fallback report (or pass your own ``health`` memory, e.g. to
    share it between sets). Other keyword arguments are the defaults of
    every ``pydal.DAL`` made here (``folder``, ``pool_size``, ``migrate``...).
    """

    def __init__(
        self,
        primary: str,
        replicas: Iterable[str] = (),
        *,
        strategy: str | Strategy = "round_robin",
        connect_timeout: float = 2.0,
        cooldown: float = 5.0,
        max_cooldown: float = 120.0,
        max_lag: float | None = None,
        lag_interval: float = 1.0,
        on_change: Hook | None = None,
        fallback_log_interval: float = 60.0,
        health: HealthMemory | None = None,
        **dal_options: Any,
    ):
        if isinstance(replicas, str):
            raise ConfigError("give the replicas as a list of URLs, not one string")
        self.primary = Member(primary, connect_timeout)
        self.replicas = [Member(url, connect_timeout) for url in replicas]
        names = [m.uri for m in [self.primary, *self.replicas]]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.primary.masked}: a database is listed twice")
        if not callable(strategy) and strategy not in ("round_robin", "random", "ordered"):
            raise ConfigError(
                f"strategy={strategy!r}: use round_robin, random, ordered or a function"
            )
        if max_lag is not None and not max_lag > 0:
            raise ConfigError(f"max_lag={max_lag!r} must be a positive number of seconds")
        self.strategy = strategy
        self.max_lag, self.lag_interval = max_lag, lag_interval
        self.health = health or HealthMemory(cooldown, max_cooldown, on_change=on_change)
        self.fallback_log_interval = fallback_log_interval
        self.dal_options = dal_options
        self.table_hash: str = (
            dal_options.pop("table_hash", None)
            or hashlib.md5(self.primary.uri.encode()).hexdigest()
        )
        self._lock = threading.Lock()
        self._rotation = _Rotation(len(self.replicas))
        self._fallbacks, self._fallback_logged_at = 0, float("-inf")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **options: Any) -> ReplicaSet:
        """From ``$SCALEKIT_DB_PRIMARY`` and ``$SCALEKIT_DB_REPLICAS`` (URLs separated by
        commas or spaces; may be empty)."""
        environ = os.environ if environ is None else environ
        primary = environ.get(PRIMARY_VARIABLE, "").strip()
        if not primary:
            raise ConfigError(f"set ${PRIMARY_VARIABLE} to the primary's URL, e.g. "
                              "postgres://app:secret@db1/app")  # fmt: skip
        replicas = environ.get(REPLICAS_VARIABLE, "").replace(",", " ").split()
        return cls(primary, replicas, **options)

    def __repr__(self) -> str:
        replicas = ", ".join(m.masked for m in self.replicas)
        return f"<ReplicaSet primary={self.primary.masked} replicas=[{replicas}]>"

    # -- choosing ---------------------------------------------------------------------
    def ordered(self) -> list[Member]:
        """The replicas in the order the strategy tries them for the next read."""
        replicas = self.replicas
        if len(replicas) < 2 or self.strategy == "ordered":
            return list(replicas)
        if self.strategy == "random":
            return random.sample(replicas, len(replicas))
        if callable(self.strategy):
            return list(self.strategy(list(replicas)))
        return self._rotation.rotated(replicas)

    def uris(self, read_only: bool = True) -> list[str]:
        """URLs (as given) for ``DAL([...])``: for reads, the replicas that are not in
        cooldown in the strategy's order, then the primary; for writes, the primary."""
        if not read_only:
            return [self.primary.url]
        up = [m.url for m in self.ordered() if self.health.available(m.masked)]
        return [*up, self.primary.url]

    # -- connecting -------------------------------------------------------------------
    def connect(self, read_only: bool = False, **dal_options: Any) -> DAL:
        """A pydal DAL: on a replica for ``read_only`` (the primary if none can serve),
        else on the primary. Raises :class:`DatabaseUnavailable` if that fails too."""
        options = {**self.dal_options, **dal_options, "table_hash": self.table_hash}
        if read_only and self.replicas:
            replica_options = {**options, **_REPLICA_ONLY}
            for member in self.ordered():
                db = self._try(member, replica_options, check_lag=self.max_lag is not None)
                if db is not None:
                    return db
            self._note_fallback()
        db = self._try(self.primary, options, check_lag=False)
        if db is None:
            raise DatabaseUnavailable(
                f"database {self.primary.masked} cannot be reached; "
                f"{'no replica could serve the read either; ' if read_only else ''}"
                "check that it is running, and the URL's host, port, user and database"
            )
        return db

    def _try(self, member: Member, options: dict[str, Any], check_lag: bool) -> DAL | None:
        """A DAL on ``member``, or None if it is skipped, fails, or lags too much (the
        primary is never skipped: a write has nowhere else to go)."""
        health, host = self.health, member.masked
        verdict = health.acquire(host)
        if verdict is None:
            if member is not self.primary:
                return None
            verdict = PROBE  # pydal would sleep a second after its failed attempt
        try:
            if verdict == PROBE:
                member.probe()
            db = member.connect(options)
        except Exception as exc:  # noqa: BLE001 - any driver or pydal failure marks the host
            health.failed(host, member.reason(exc))
            return None
        health.succeeded(host)
        if check_lag and health.lag_due(host, self.lag_interval):
            assert self.max_lag is not None
            try:
                lag = member.lag(db)
            except Exception:
                close(db, "rollback")
                raise
            if lag.seconds is None or lag.seconds > self.max_lag:
                close(db, "rollback")
                health.lagging(host, lag.seconds, self.max_lag, self.lag_interval, lag.why)
                return None
            health.caught_up(host)
        return db

    def _note_fallback(self) -> None:
        """Count a read sent to the primary; report at most once per interval."""
        now = time.monotonic()
        with self._lock:
            self._fallbacks += 1
            if now - self._fallback_logged_at < self.fallback_log_interval:
                return
            count, self._fallbacks, self._fallback_logged_at = self._fallbacks, 0, now
        states = ", ".join(f"{m.masked} {self.health.state(m.masked)}" for m in self.replicas)
        log.warning(
            "%d read(s) sent to the primary %s since the last report: no replica can "
            "serve them (%s)", count, self.primary.masked, states,
        )  # fmt: skip
        self.health.emit(HostEvent(self.primary.masked, "fallback", states, count=count))


class _LearningList(list):
    """The URIs for ``DAL([...])``, learning from pydal's walk through them: moving past a
    host means it failed; stopping at one (the walk is closed) means it answered."""

    def __init__(self, members: Sequence[Member], health: HealthMemory):
        super().__init__(m.url for m in members)
        self._members, self._health = list(members), health

    def __iter__(self) -> Iterator[str]:
        for member in self._members:
            try:
                yield member.url
            except GeneratorExit:
                self._health.succeeded(member.masked)
                raise
            self._health.failed(member.masked, "pydal could not connect")


class _Recipe:
    """The rotation and health memory of one ``fail_safe_round_robin`` list of URIs."""

    def __init__(self, uris: Sequence[str]):
        self.members = [Member(uri, connect_timeout=2.0) for uri in uris]
        self.health = HealthMemory()
        self._rotation = _Rotation(len(self.members))

    def uris(self) -> list[str]:
        rotated = self._rotation.rotated(self.members)
        up = [m for m in rotated if self.health.available(m.masked)]
        return _LearningList(up + [m for m in rotated if m not in up], self.health)


_recipes: dict[tuple[str, ...], _Recipe] = {}
_recipes_lock = threading.Lock()


def fail_safe_round_robin(*uris: str) -> list[str]:
    """Drop-in for web2py's recipe, ``DAL(fail_safe_round_robin(uri1, uri2, uri3))``.

    Rotates from a random offset per process, puts hosts that failed recently last (a last
    resort), and learns from pydal's attempts: a host pydal moves past is skipped for a
    cooldown. Give the DAL ``driver_args={"connect_timeout": 2}`` and a fixed
    ``table_hash=`` too; or better, use :meth:`ReplicaSet.connect`, which also avoids
    pydal's one-second sleep after a failed round.
    """
    if not uris:
        raise ConfigError("fail_safe_round_robin needs at least one URI")
    with _recipes_lock:
        recipe = _recipes.get(uris)
        if recipe is None:
            recipe = _recipes[uris] = _Recipe(uris)
    return recipe.uris()
