"""DBScope: the database connections of one request, opened on first use, ended together,
and what runs once its transaction has committed; ``current()`` finds the request's scope
(a :class:`~scalekit.core.context.RequestVar`). The scope is also the request's
:class:`~scalekit.core.context.Transaction` for the other pieces."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydal import DAL

from scalekit.core.context import RequestVar
from scalekit.core.errors import MissingContext
from scalekit.db.members import close
from scalekit.db.replicas import ReplicaSet
from scalekit.wsgi.environ import DB_KEY as ENVIRON_KEY

__all__ = ["AUTOCOMMIT", "ENVIRON_KEY", "MANUAL", "REQUEST", "DBScope", "current", "current_scope"]

log = logging.getLogger("scalekit.db")

#: How the scope ends its transactions: by the request's outcome, or not at all.
REQUEST, AUTOCOMMIT, MANUAL = "request", "autocommit", "manual"
#: The request's scope, set by :class:`~scalekit.db.DBMiddleware`.
current_scope: RequestVar[DBScope] = RequestVar(
    "scalekit_db", "no database scope here: run inside DBMiddleware or @with_db"
)


def current() -> DBScope:
    """The database scope of the request this thread (or task) is serving."""
    return current_scope.get()


class DBScope:
    """What a view uses: ``scope.db`` (a replica for read-only requests, else the primary),
    ``scope.reader`` and ``scope.writer`` to choose explicitly.

    Once the writer is open, or while the client is pinned after a write, ``reader`` is
    the primary too: reads inside a transaction that wrote see its writes. ``define`` is
    called with each new DAL to define the app's tables. :meth:`on_commit` defers work
    until the request's transaction has committed.
    """

    def __init__(
        self,
        replicas: ReplicaSet,
        read_only: bool,
        pinned: Callable[[], bool] = lambda: False,
        define: Callable[[DAL], Any] | None = None,
        dal_options: dict[str, Any] | None = None,
    ):
        self.replicas, self.read_only = replicas, read_only
        self.mode = REQUEST
        self._pinned, self._define = pinned, define
        self._dal_options = dal_options or {}
        self._reader: DAL | None = None
        self._writer: DAL | None = None
        self._callbacks: list[Callable[[], Any]] = []

    @property
    def db(self) -> DAL:
        """The request's DAL: ``reader`` if the request is read-only, else ``writer``."""
        return self.reader if self.read_only else self.writer

    @property
    def reader(self) -> DAL:
        """A DAL for reads: a replica, unless this request wrote or the client is pinned."""
        if self._writer is not None:
            return self._writer
        if self._reader is None:
            if self._pinned():
                return self.writer
            self._reader = self._open(read_only=True)
        return self._reader

    @property
    def writer(self) -> DAL:
        """A DAL on the primary; from now on ``reader`` answers with it too."""
        if self._writer is None:
            self._writer = self._open(read_only=False)
        return self._writer

    @property
    def wrote(self) -> bool:
        """True once this request opened the primary for writing."""
        return self._writer is not None

    def on_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` once the request's transaction has committed (Django's
        ``transaction.on_commit``): callbacks run in the order given, after the response's
        transaction ended and before the response is sent; each in a transaction of its own
        on the same connection (``writer``), committed when it returns, rolled back and
        logged (never raised) when it fails. A rollback, or a failed commit, drops them.

        In autocommit mode every statement has committed already: ``callback`` runs now.
        A manual view commits itself, unseen by the scope: refused (MissingContext); and
        callbacks still waiting when a view switches to manual are dropped.
        """
        if self.mode == MANUAL:
            raise MissingContext(
                "on_commit in a manual view: the scope cannot see your commits; "
                "call the callback yourself after db.commit()"
            )
        if self.mode == AUTOCOMMIT:
            _call(callback)
        else:
            self._callbacks.append(callback)

    def autocommit(self) -> None:
        """Commit every statement as it runs (this request's connections, open or not);
        the transaction open until now commits, and its :meth:`on_commit` callbacks run."""
        self.mode = AUTOCOMMIT
        for db in self._open_dals():
            _set_autocommit(db, True)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback)

    def manual(self) -> None:
        """The view commits itself; what it leaves uncommitted is rolled back at the end."""
        self.mode = MANUAL

    def finish(self, success: bool) -> None:
        """Commit (``success`` in request mode) or roll back, and release the connections,
        then run the :meth:`on_commit` callbacks if it committed; a failed commit is raised
        after everything is released (a failed rollback is only logged: the connection is
        dropped, and the server discards the transaction)."""
        committed = success and self.mode == REQUEST
        pending, self._callbacks = self._callbacks, []
        self._end(success, keep_writer=committed and bool(pending))
        try:
            while committed and pending:
                callback = pending.pop(0)
                ok = _call(callback)
                try:
                    self._end(ok, keep_writer=True)
                except Exception:  # the request has committed: only logged
                    log.exception("could not commit what on_commit callback %r did", callback)
                    ok = False
                if ok:  # what it registered runs after; else it was rolled back with it
                    pending += self._callbacks
                self._callbacks = []
        finally:
            self._end(False)  # the writer the callbacks kept (nothing left to commit)

    def _end(self, success: bool, keep_writer: bool = False) -> None:
        """Commit or roll back the open DALs and release them (see :meth:`finish`); with
        ``keep_writer`` the writer stays open for the on_commit callbacks (one connection
        for the request and its callbacks)."""
        dals = self._open_dals()
        kept = self._writer if keep_writer else None
        self._reader, self._writer = None, kept
        error: BaseException | None = None
        for db in dals:
            commit = success and self.mode == REQUEST and error is None
            try:
                if self.mode == AUTOCOMMIT:
                    _set_autocommit(db, False)
                if db is kept:
                    db.commit() if commit else db.rollback()
                else:
                    if commit:
                        db.commit()
                    close(db, None if commit else "rollback")
            except Exception as exc:  # noqa: BLE001 - a broken connection is only dropped
                log.warning("could not end a transaction: %s", exc)
                _drop(db)
                if db is kept:
                    self._writer = None
                if commit:
                    error = exc
        if error is not None:
            raise error

    def _open_dals(self) -> list[DAL]:
        """The open DALs, the writer first (its commit decides the request)."""
        return [db for db in (self._writer, self._reader) if db is not None]

    def _open(self, read_only: bool) -> DAL:
        db = self.replicas.connect(read_only=read_only, **self._dal_options)
        try:
            if self.mode == AUTOCOMMIT:
                _set_autocommit(db, True)
            if self._define is not None:
                self._define(db)
        except BaseException:
            _drop(db)
            raise
        return db


def _call(callback: Callable[[], Any]) -> bool:
    """Run an on_commit callback: True if it returned, False (logged) if it raised."""
    try:
        callback()
    except Exception:  # the transaction has committed: a failure is logged
        log.exception("on_commit callback %r failed", callback)
        return False
    return True


def _set_autocommit(db: DAL, on: bool) -> None:
    """Switch the DAL's connection in or out of autocommit (ending any open transaction:
    the caller decides what that means)."""
    adapter = db._adapter
    connection = adapter.connection
    if on:
        db.commit()
    if adapter.dbengine == "sqlite":
        connection.isolation_level = None if on else ""
    elif adapter.dbengine == "mysql":
        connection.autocommit(on)
    else:
        connection.autocommit = on


def _drop(db: DAL) -> None:
    """Release a DAL whose connection may be broken: roll back if possible, else drop it."""
    try:
        close(db, "rollback")
    except Exception:
        log.debug("dropping a broken connection", exc_info=True)
