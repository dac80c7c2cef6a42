"""Single-flight on a miss: one caller computes ``f``, the others wait for its value.

Two forms. ``in_process``: a per-key thread lock, so ``f`` runs once per process (the
default for ``cache.ram``). ``leased``: a lease in the backend (owner token + TTL) so ``f``
runs once across processes and servers (the default for shared backends). A waiter gets a
stale value at once if there is one; otherwise it polls, with backoff, for the value for
up to ``wait_timeout`` seconds, then computes ``f`` itself (logged) rather than fail. The
lease is released in a ``finally`` (an exception in ``f`` never leaves it behind) and only
by its owner; a worker that dies holding it blocks others at most ``lease_ttl`` seconds.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scalekit.cache.backends.base import Entry
from scalekit.core.errors import StoreUnavailable

if TYPE_CHECKING:
    from scalekit.cache.model import CacheModel

log = logging.getLogger("scalekit.cache")

_FIRST_DELAY = 0.002
_MAX_DELAY = 0.05


def in_process(
    model: CacheModel, key: str, f: Callable[[], Any], time_expire: float | None, since: float
) -> Any:
    """Compute ``f`` under ``key``'s thread lock unless another thread just stored it."""
    with model.key_lock(key):
        return _recheck_then_compute(model, key, f, time_expire, since)


def leased(
    model: CacheModel,
    key: str,
    f: Callable[[], Any],
    time_expire: float | None,
    stale: Entry | None,
    since: float,
) -> Any:
    """Take ``key``'s lease and compute, serve ``stale``, or wait for the holder's value."""
    backend = model.backend
    token = secrets.token_hex(16)
    deadline = time.monotonic() + model.wait_timeout
    delay = _FIRST_DELAY
    while True:
        try:
            taken = backend.try_lease(key, token, model.lease_ttl)
        except StoreUnavailable as exc:
            return model._down(exc, "lease", key, f)
        if taken:
            return _compute_holding(model, key, f, time_expire, since, token)
        if stale is not None:
            model.stale += 1
            return stale.value
        if time.monotonic() >= deadline:
            log.warning(
                "cache %s: waited %gs for the worker computing %r; computing it here",
                backend.kind, model.wait_timeout, key,
            )  # fmt: skip
            return _compute(model, key, f, time_expire)
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)
        try:
            entry = backend.get(key)
        except StoreUnavailable as exc:
            return model._down(exc, "read", key, f)
        if entry is not None and model.fresh(entry, time_expire, since):
            return entry.value


def _compute_holding(
    model: CacheModel,
    key: str,
    f: Callable[[], Any],
    time_expire: float | None,
    since: float,
    token: str,
) -> Any:
    """With the lease held: recheck (a holder may have just stored), compute, store, release."""
    try:
        return _recheck_then_compute(model, key, f, time_expire, since)
    finally:
        try:
            model.backend.release_lease(key, token)
        except StoreUnavailable as exc:
            model._note_error(exc, "release the lease of", key)


def _recheck_then_compute(
    model: CacheModel, key: str, f: Callable[[], Any], time_expire: float | None, since: float
) -> Any:
    """The value another worker stored since ``since``, else ``f()`` computed and stored."""
    try:
        entry = model.backend.get(key)
    except StoreUnavailable as exc:
        return model._down(exc, "read", key, f)
    if entry is not None and model.fresh(entry, time_expire, since):
        return entry.value
    return _compute(model, key, f, time_expire)


def _compute(model: CacheModel, key: str, f: Callable[[], Any], time_expire: float | None) -> Any:
    value = f()
    model.store(key, value, time_expire)
    return value
