"""Loading and saving sessions: laziness, conflict-safe saves, locking, failure policy.

The engine holds a request's settings (store, secrets, cookie, timeouts) and does every
store call a session makes; :mod:`scalekit.sessions.middleware` only wires it into WSGI.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

from scalekit.core import tagged_json
from scalekit.core.errors import (
    ConfigError,
    ConflictError,
    CorruptData,
    SerializationError,
    StoreUnavailable,
)
from scalekit.sessions.cookies import SessionCookie, new_session_id
from scalekit.sessions.serializers import PayloadCodec
from scalekit.sessions.session import Session
from scalekit.sessions.stores import SessionStore, open_store
from scalekit.sessions.stores.base import now, ttl_seconds

log = logging.getLogger("scalekit.sessions")

FAIL_CLOSED, FAIL_OPEN = "fail_closed", "fail_open"
StoreFailure = (StoreUnavailable, ConflictError)
#: Backoff between compare-and-set attempts: a random wait up to base * 2**attempt, capped.
_BACKOFF_BASE, _BACKOFF_CAP = 0.002, 0.1


def _all_immutable(data: dict) -> bool:
    """No value can change in place: with no key set or deleted, the data is as loaded."""
    return all(type(value) in tagged_json.SCALARS for value in data.values())


class SessionEngine:
    """Everything a session needs between the cookie and the store.

    ``store`` is a :class:`SessionStore` or a URL for :func:`open_store`. ``secret`` is a
    string or a list (the first signs, all verify). ``app_name`` names the cookie
    (``session_id_<app_name>``) and, with a URL, the store's app; it defaults to the
    store's. See the README for every option.
    """

    #: What :meth:`begin` makes: a framework adapter's subclass of :class:`Session`.
    session_class = Session

    def __init__(
        self,
        store: SessionStore | str,
        secret: str | bytes | Sequence[str | bytes],
        *,
        app_name: str | None = None,
        cookie_name: str | None = None,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_max_age: int | None = None,
        secure: bool | str = "auto",
        httponly: bool = True,
        samesite: str | None = "Lax",
        idle_timeout: int | None = 24 * 3600,
        absolute_timeout: int | None = None,
        touch_fraction: float = 0.1,
        max_size: int = 64 * 1024,
        serializer: str = "json",
        lock: bool = False,
        lock_timeout: float = 10.0,
        lock_ttl: float = 30.0,
        on_store_error: str = FAIL_CLOSED,
        retry_after: int = 5,
        conflict_retries: int = 50,
    ):
        if on_store_error not in (FAIL_CLOSED, FAIL_OPEN):
            raise ConfigError(
                f"on_store_error={on_store_error!r}: use 'fail_closed' or 'fail_open'"
            )
        if not 0 <= touch_fraction <= 1:
            raise ConfigError(f"touch_fraction={touch_fraction!r} must be between 0 and 1")
        if isinstance(store, str):
            store = open_store(store, app_name=app_name or "app")
        self.store = store
        self.ttl = ttl_seconds(idle_timeout)
        self.absolute_timeout = absolute_timeout
        self.touch_after = None if self.ttl is None else self.ttl * touch_fraction
        self.max_size = max_size
        self.lock, self.lock_timeout, self.lock_ttl = lock, lock_timeout, lock_ttl
        self.on_store_error, self.retry_after = on_store_error, retry_after
        self.conflict_retries = conflict_retries
        self.codec = PayloadCodec(secret, serializer, self.ttl)
        self.cookie = SessionCookie(
            cookie_name or f"session_id_{app_name or store.app_name}",
            secret,
            path=cookie_path,
            domain=cookie_domain,
            max_age=cookie_max_age,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    # -- a request's life ------------------------------------------------------------------
    def begin(self, environ: dict) -> Session:
        """A lazy session for this request: reads the cookie, does no store I/O."""
        https = environ.get("wsgi.url_scheme") == "https"
        return self.session_class(self, self.cookie.read(environ), https)

    def load(self, session: Session) -> None:
        """Fill ``session`` from the store (first use of its data)."""
        sid = session._sid
        if sid is not None:
            try:
                if self.lock:
                    self._acquire(session, sid)
                record = self.store.load(sid)
                if record is not None:
                    body, created, data = self.codec.open(sid, record.data)
                    if not self._expired(record.touched_at, created):
                        session._loaded(record, body, created, data)
                        return
            except StoreFailure as exc:
                self._failed(session, exc, "load")
                return
            except CorruptData as exc:
                log.warning("session store %s: %s; starting a new session", self.store, exc)
            object.__setattr__(session, "_sid", None)  # never reuse an id the client chose
        session._loaded(None, None, now(), {})

    def _expired(self, touched_at: float, created: float) -> bool:
        current = now()
        return (self.ttl is not None and touched_at + self.ttl < current) or (
            self.absolute_timeout is not None and created + self.absolute_timeout < current
        )

    def finish(self, session: Session) -> list[tuple[str, str]]:
        """Save or touch the session as needed; the headers (Set-Cookie) to send."""
        if session._forgotten or session._degraded:
            return []
        if session._data is None:  # never used: only a changed cookie (secure()) goes again
            return [self._set_cookie(session)] if session._resend and session._sid else []
        try:
            return self._finish(session)
        except StoreFailure as exc:
            if session._failure is not exc:  # a change was lost: an error under any policy
                log.error("session save failed, answering an error (this request's changes "
                          "were not saved): %s", exc)  # fmt: skip
                object.__setattr__(session, "_failure", exc)
            raise

    def release(self, session: Session) -> None:
        """Release the session's lock, if it holds one (always called, also on errors)."""
        if session._lock is None:
            return
        sid, token = session._lock
        object.__setattr__(session, "_lock", None)
        try:
            self.store.release_lease(sid, token)
        except StoreUnavailable as exc:
            log.warning("session lock of %s... not released (it expires by itself): %s",
                        sid[:6], exc)  # fmt: skip

    # -- saving ----------------------------------------------------------------------------
    def _finish(self, session: Session) -> list[tuple[str, str]]:
        data, record, old_sid = session._data, session._record, session._sid
        if session._renew:
            return self._save_renewed(session)
        if not data:
            if record is None:
                return []  # never store an empty new session, nor send a cookie for it
            self.store.delete(old_sid)
            object.__setattr__(session, "_sid", None)
            return [self.cookie.delete_header(https=session._https)]
        if record is None:
            return self._create(session, self.codec.body(session._created, data))
        if session._dirty or not _all_immutable(data):  # else nothing can have changed
            body = self.codec.body(session._created, data)
            if body != session._body:
                self._save_merging(session, body)
                return self._cookie_refresh(session)
        resign = self.codec.resign_due(record.data)  # bounds how old a payload put back is
        if resign or (
            self.touch_after is not None and now() - record.touched_at >= self.touch_after
        ):
            try:  # signing again is a touch that also rewrites the (unchanged) payload
                if resign:
                    self._save_merging(session, session._body)
                else:
                    self.store.touch(old_sid, self.ttl)
            except StoreFailure as exc:  # no change is lost: the failure policy applies
                self._failed(session, exc, "touch")
                return []
            return self._cookie_refresh(session)
        return self._cookie_refresh(session, touched=False)

    def _create(self, session: Session, body: bytes) -> list[tuple[str, str]]:
        while True:
            sid = new_session_id()
            if self.store.save(sid, self._seal(sid, body), self.ttl, None):
                object.__setattr__(session, "_sid", sid)
                return [self._set_cookie(session)]

    def _save_renewed(self, session: Session) -> list[tuple[str, str]]:
        old_sid = session._sid if session._record is not None else None
        headers = []
        if session._data:
            headers = self._create(session, self.codec.body(now(), session._data))
        elif old_sid is not None:
            headers = [self.cookie.delete_header(https=session._https)]
        if old_sid is not None:
            self.store.delete(old_sid)  # only now that the new record is stored
        return headers

    def _save_merging(self, session: Session, body: bytes) -> None:
        """Compare-and-set; on conflict wait a moment (growing, jittered, so concurrent
        writers spread out), then re-apply only this request's changed keys to what is
        stored now. After ``conflict_retries`` attempts: :class:`ConflictError`."""
        sid, record, changes = session._sid, session._record, None
        attempt = 0
        while not self.store.save(sid, self._seal(sid, body), self.ttl, record.version):
            attempt += 1
            if attempt >= self.conflict_retries:
                raise ConflictError(
                    f"session {sid[:6]}...: {attempt} concurrent saves won in a row; "
                    "this request's changes were not saved"
                )
            time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
            record = self.store.load(sid)
            if record is None:
                log.info("session %s... was deleted by a concurrent request; "
                         "this request's changes are dropped", sid[:6])  # fmt: skip
                return
            try:
                _, created, stored = self.codec.open(sid, record.data)
            except CorruptData as exc:
                log.warning("session store %s: %s; this request's changes are dropped",
                            self.store, exc)  # fmt: skip
                return
            if changes is None:
                changes = self._changes(session)
            for key, (deleted, value) in changes.items():
                if deleted:
                    stored.pop(key, None)
                else:
                    stored[key] = value
            body = self.codec.body(created, stored)

    def _changes(self, session: Session) -> dict[str, tuple[bool, Any]]:
        """The keys this request set or deleted: ``{key: (deleted, value)}``."""
        _, original = self.codec.serializer.loads(session._body)
        before = self.codec.key_bodies(original)
        after = self.codec.key_bodies(session._data)
        changes = {key: (True, None) for key in before if key not in after}
        for key, serialized in after.items():
            if before.get(key) != serialized:
                changes[key] = (False, session._data[key])
        return changes

    def _seal(self, sid: str, body: bytes) -> bytes:
        payload = self.codec.seal(sid, body)
        if len(payload) > self.max_size:
            raise SerializationError(
                f"session {sid[:6]}... is {len(payload):,} bytes, over the {self.max_size:,}-byte"
                " limit (max_size); it was not saved and the stored session is unchanged"
            )
        return payload

    # -- cookies, locks, failures ----------------------------------------------------------
    def session_cookie(self, session: Session) -> SessionCookie:
        """The cookie that gives ``session`` its id: one for all, unless an adapter's
        sessions differ in lifetime (Flask's permanent ones)."""
        return self.cookie

    def _set_cookie(self, session: Session) -> tuple[str, str]:
        return self.session_cookie(session).set_header(
            session._sid, https=session._https, force_secure=session._secure
        )

    def _cookie_refresh(self, session: Session, touched: bool = True) -> list[tuple[str, str]]:
        """Re-send the cookie when its Max-Age should restart or its attributes changed."""
        if session._resend or (touched and self.session_cookie(session).max_age is not None):
            return [self._set_cookie(session)]
        return []

    def _acquire(self, session: Session, sid: str) -> None:
        token = secrets.token_urlsafe(16)
        deadline, delay = time.monotonic() + self.lock_timeout, 0.005
        while not self.store.try_lease(sid, token, self.lock_ttl):
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"session {sid[:6]}... stayed locked by another request for "
                    f"{self.lock_timeout:g}s (lock_timeout)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        object.__setattr__(session, "_lock", (sid, token))

    def _failed(self, session: Session, exc: Exception, action: str) -> None:
        """Apply the store failure policy to a load or touch: raise (fail_closed) or degrade
        (fail_open). A failed save never comes here: a lost change is always an error."""
        if self.on_store_error == FAIL_CLOSED:
            log.error("session %s failed, answering 503 (fail_closed): %s", action, exc)
            object.__setattr__(session, "_failure", exc)
            raise exc
        log.error("session %s failed, going on with an empty unsaved session (fail_open): %s",
                  action, exc)  # fmt: skip
        object.__setattr__(session, "_degraded", True)
        session._loaded(None, None, now(), {})
