"""Health memory: which database hosts to skip right now, and when to try them again.

A host that fails to connect is skipped for a cooldown that doubles with each failure in a
row (with jitter, capped), then one caller probes it (half-open) while the others keep
skipping it; success forgets the failures. A replica whose replication lag is over the
limit is skipped the same way for a short hold.

The memory is per process: each gunicorn worker learns on its own (one failed connect per
cooldown and worker), which needs no shared store and cannot be poisoned by another host.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from scalekit.core.errors import ConfigError

log = logging.getLogger("scalekit.db")

UNKNOWN, UP, DOWN, PROBING, LAGGING = "unknown", "up", "down", "probing", "lagging"
#: What :meth:`HealthMemory.acquire` answers: use the host as it is, or probe it first.
USE, PROBE = "use", "probe"


@dataclass(frozen=True)
class HostEvent:
    """A change worth knowing, passed to ``on_change`` hooks (``host`` is a masked URL).

    ``state``: ``down``, ``up``, ``lagging``, ``caught_up`` or ``fallback`` (reads sent to
    the primary because no replica could serve them; ``count`` of them since last time).
    """

    host: str
    state: str
    reason: str = ""
    retry_in: float | None = None
    count: int = 0


@dataclass
class _Host:
    state: str = UNKNOWN
    failures: int = 0
    retry_at: float = 0.0  # DOWN/LAGGING: skip until then; PROBING: the probe's deadline
    lag_checked_at: float = float("-inf")


Hook = Callable[[HostEvent], object]


class HealthMemory:
    """Per-process, thread-safe record of each host's health (see the module docstring).

    ``cooldown``: seconds a host is skipped after its first failure; each further failure in
    a row doubles it, up to ``max_cooldown``; ``jitter`` spreads it by ±that fraction so
    processes do not all probe at once. ``on_change`` is called on every state change.
    """

    def __init__(
        self,
        cooldown: float = 5.0,
        max_cooldown: float = 120.0,
        jitter: float = 0.2,
        on_change: Hook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 0 < cooldown <= max_cooldown:
            raise ConfigError(f"need 0 < cooldown ({cooldown}) <= max_cooldown ({max_cooldown})")
        if not 0 <= jitter < 1:
            raise ConfigError(f"jitter={jitter} must be from 0 to below 1")
        self.cooldown, self.max_cooldown, self.jitter = cooldown, max_cooldown, jitter
        self.on_change, self._clock = on_change, clock
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def state(self, host: str) -> str:
        """``unknown``, ``up``, ``down``, ``probing`` or ``lagging``."""
        with self._lock:
            return self._host(host).state

    def available(self, host: str) -> bool:
        """True unless the host is in its cooldown (or hold, or being probed); changes
        nothing, unlike :meth:`acquire`."""
        with self._lock:
            entry = self._host(host)
            return entry.state in (UP, UNKNOWN) or self._clock() >= entry.retry_at

    def acquire(self, host: str) -> str | None:
        """``USE`` (known up), ``PROBE`` (check it first: never seen, or its cooldown is over
        and this caller is the one to probe) or ``None`` (skip it for now)."""
        now = self._clock()
        with self._lock:
            entry = self._host(host)
            if entry.state == UP:
                return USE
            if entry.state == UNKNOWN:
                return PROBE
            if now < entry.retry_at:
                return None
            if entry.state == LAGGING:
                return USE
            entry.state, entry.retry_at = PROBING, now + self.max_cooldown
            return PROBE

    def succeeded(self, host: str) -> None:
        """The host accepted a connection."""
        with self._lock:
            entry = self._host(host)
            if entry.state in (UP, LAGGING):  # lag is judged apart, by caught_up()
                return
            was_down, failures = entry.state in (DOWN, PROBING), entry.failures
            entry.state, entry.failures = UP, 0
        if was_down:
            log.warning("database %s is back up after %d failed attempt(s)", host, failures)
            self.emit(HostEvent(host, "up"))

    def failed(self, host: str, reason: str) -> float:
        """The host could not be reached: skip it for the next cooldown; return its length."""
        now = self._clock()
        with self._lock:
            entry = self._host(host)
            entry.failures += 1
            base = min(self.cooldown * 2 ** min(entry.failures - 1, 30), self.max_cooldown)
            wait = base * random.uniform(1 - self.jitter, 1 + self.jitter)
            first = entry.state not in (DOWN, PROBING)
            entry.state, entry.retry_at = DOWN, now + wait
        if first:
            log.warning("database %s is down (%s); skipping it for %.1f s", host, reason, wait)
            self.emit(HostEvent(host, "down", reason, wait))
        else:
            log.info("database %s is still down (%s); next try in %.1f s", host, reason, wait)
        return wait

    def lag_due(self, host: str, interval: float) -> bool:
        """True at most once per ``interval`` seconds per host: time to measure its lag."""
        now = self._clock()
        with self._lock:
            entry = self._host(host)
            if now - entry.lag_checked_at < interval:
                return False
            entry.lag_checked_at = now
            return True

    def lagging(
        self, host: str, lag: float | None, limit: float, hold: float, why: str = ""
    ) -> None:
        """The replica is ``lag`` seconds behind, over ``limit``, or its lag is unknown
        (None, for the reason ``why``): skip it for ``hold`` seconds."""
        with self._lock:
            entry = self._host(host)
            first = entry.state != LAGGING
            entry.state, entry.retry_at = LAGGING, self._clock() + hold
        if first:
            if lag is None:
                reason = f"replication lag unknown ({why or 'no answer'}), limit {limit:g} s"
            else:
                reason = f"replication lag {lag:.1f} s over the {limit:g} s limit"
            log.warning("replica %s skipped: %s", host, reason)
            self.emit(HostEvent(host, "lagging", reason, hold))

    def caught_up(self, host: str) -> None:
        """The replica's lag is within the limit again."""
        with self._lock:
            entry = self._host(host)
            if entry.state != LAGGING:
                return
            entry.state = UP
        log.warning("replica %s caught up: its lag is within the limit again", host)
        self.emit(HostEvent(host, "caught_up"))

    def _host(self, host: str) -> _Host:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host()
        return entry

    def emit(self, event: HostEvent) -> None:
        """Pass ``event`` to the ``on_change`` hook, if any (a hook that fails is logged)."""
        if self.on_change is None:
            return
        try:
            self.on_change(event)
        except Exception:  # a broken hook must not break requests
            log.exception("scalekit.db on_change hook failed on %s", event)
