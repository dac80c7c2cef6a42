"""Opening pydal DALs from scalekit URLs, their pools in each process, and closing them.

A piece's own DAL (:func:`dal_options`, :func:`open_dal`) gets one connection attempt with a
short connect timeout, credentials decoded as pydal expects them, and no migration; pydal's
``.table`` files go beside an SQLite file, else into a folder private to the user. pydal
keeps its pools class-wide, by URI: a forked child starts with empty ones
(:func:`pool_per_process`). A driver failure becomes one line without the password
(:func:`failure_reason`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import tempfile
import time
from typing import Any

from pydal import DAL
from pydal._globals import THREAD_LOCAL
from pydal.connection import ConnectionPool

from scalekit.connect.files import describe_os_error
from scalekit.connect.sql.deadline import bounded_connection
from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.core.process import after_fork
from scalekit.core.urls import BackendURL, DatabaseURL, SQLiteURL

#: Seconds to wait for a server (for SQLite: for a locked file) unless told otherwise.
CONNECT_TIMEOUT = 5.0
#: Seconds a statement may run on a server unless told otherwise (:func:`bound_args`).
STATEMENT_TIMEOUT = 5.0
#: Seconds the client waits past the statement timeout, so that a server that answers
#: ends a slow statement itself (the connection stays usable).
_MARGIN = 1.0
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): (.+)$", re.MULTILINE)


class _PoolsPerProcess:
    """The URIs whose pydal pools scalekit fills. In a forked child the parent's pooled
    connections are hidden: kept referenced, never closed, so that the parent's sessions
    on the server stay intact."""

    def __init__(self) -> None:
        self.uris: set[str] = set()
        self.inherited: list[Any] = []
        after_fork(self)

    def _after_fork(self) -> None:
        for uri in self.uris:
            pool = ConnectionPool.POOLS.pop(uri, None)
            if pool:
                self.inherited.append(pool)


_pools = _PoolsPerProcess()


def pool_per_process(uri: str) -> None:
    """Give each forked child an empty pydal pool for ``uri``."""
    _pools.uris.add(uri)


def positive_timeout(settings: BackendURL, timeout: float, name: str = "connect_timeout") -> float:
    """``timeout`` as a float; :class:`ConfigError` naming the URL unless it is positive."""
    timeout = float(timeout)
    if not timeout > 0:
        raise ConfigError(f"{settings.masked}: {name} must be positive")
    return timeout


def connect_timeout_args(settings: DatabaseURL, timeout: float) -> dict[str, float]:
    """The driver argument for a connect timeout: libpq takes whole seconds (and treats 1
    as 2); pymysql takes a float."""
    return {"connect_timeout": math.ceil(timeout) if settings.dialect == "postgres" else timeout}


def bound_args(settings: DatabaseURL, statement_timeout: float) -> dict[str, Any]:
    """The driver arguments that bound each statement to ``statement_timeout`` seconds,
    and what the client waits for its reply to a little more, however the server fails.

    PostgreSQL (psycopg2): the server's ``statement_timeout``; TCP keepalives and
    ``tcp_user_timeout`` for a server gone from the network; and for one that is frozen
    but still acknowledged by its kernel, a deadline kept by the client
    (:func:`~scalekit.connect.sql.deadline.bounded_connection`). MySQL/MariaDB: the
    driver's read and write timeouts (pymysql keeps TCP keepalives on itself).
    """
    seconds = positive_timeout(settings, statement_timeout, "statement_timeout")
    wait = seconds + _MARGIN
    if settings.dialect != "postgres":
        return {"read_timeout": math.ceil(wait), "write_timeout": math.ceil(wait)}
    from psycopg2.extensions import libpq_version

    args: dict[str, Any] = {
        "options": f"-c statement_timeout={math.ceil(seconds * 1000)}",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "connection_factory": bounded_connection(wait),
    }
    if libpq_version() >= 120000:  # libpq 11 and older refuse the option
        args["tcp_user_timeout"] = math.ceil(wait * 1000)
    return args


def server_uri(settings: DatabaseURL) -> tuple[str, bool]:
    """The pydal URI of a database server, and whether pydal must percent-decode its
    credentials (pydal decodes them only when there is a password)."""
    if settings.password is not None:
        return settings.dal_uri, True
    user = settings.user or ""
    if any(char in user for char in ":@/%"):
        raise ConfigError(
            f"{settings.masked}: pydal reads a user name with : @ / or % only when a "
            "password follows it; add one, e.g. user:password@host"
        )
    scheme, _, rest = settings.dal_uri.partition("://")
    return f"{scheme}://{user}@{rest.partition('@')[2]}", False


def dal_options(
    settings: BackendURL,
    *,
    folder: str | None,
    timeout: float | None,
    pool_size: int | None = None,
    statement_timeout: float | None = None,
) -> dict[str, Any]:
    """The ``pydal.DAL`` arguments (``uri`` included) for a piece's own connections to a
    SQLite file or a database server: a short connect timeout (default 5 s; for SQLite how
    long to wait for a locked file), on a server each statement bounded (default 5 s, see
    :func:`bound_args`), credentials decoded as pydal expects them. A relative
    SQLite path is relative to ``folder``, else to the current directory; SQLite keeps
    pydal's ``.table`` files beside the database unless ``folder`` is given."""
    timeout = positive_timeout(settings, CONNECT_TIMEOUT if timeout is None else timeout)
    if pool_size is not None and pool_size < 0:
        raise ConfigError(f"{settings.masked}: pool_size must be 0 or more")
    options: dict[str, Any] = {"pool_size": pool_size or 0, "folder": folder}
    if isinstance(settings, SQLiteURL):
        if settings.memory:
            raise ConfigError(
                f"{settings.masked}: an in-memory SQLite database lives in one connection; "
                "give a file, e.g. sqlite://storage.sqlite"
            )
        path = os.path.join(os.path.abspath(folder or os.getcwd()), settings.path)
        options.update(
            uri=f"sqlite://{path}",
            folder=folder or os.path.dirname(path),
            driver_args={"timeout": timeout},
            decode_credentials=True,
        )
        return options
    if not isinstance(settings, DatabaseURL):
        raise ConfigError(f"{settings.masked}: a database URL is needed here")
    uri, decode = server_uri(settings)
    statement_timeout = STATEMENT_TIMEOUT if statement_timeout is None else statement_timeout
    options.update(
        uri=uri,
        driver_args={
            **connect_timeout_args(settings, timeout),
            **bound_args(settings, statement_timeout),
        },
        decode_credentials=decode,
    )
    return options


def private_folder() -> str:
    """``<tmp>/scalekit-pydal-<uid>``, created 0700; refused if someone else could write
    it, since pydal unpickles the ``.table`` files it keeps there."""
    folder = os.path.join(tempfile.gettempdir(), f"scalekit-pydal-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ConfigError(
            f"{folder} is not a private folder of user {os.getuid()}: remove it, or pass "
            "folder=... for its pydal .table files"
        )
    return folder


def open_dal(options: dict[str, Any], where: str, *, create: bool = True) -> DAL:
    """A new DAL from :func:`dal_options`: one attempt, no migration, the private folder
    when none is set, a pool of its own in each process (``pool_size``). Raises
    :class:`StoreUnavailable` (naming ``where``) for a folder it cannot create; pydal's
    ``RuntimeError`` when the server cannot be reached. Without ``create`` it opens an
    existing database only: a missing SQLite file is :class:`StoreNotFound`, and neither
    it nor its folder is created. pydal's ``DAL(folder=)`` changes the
    thread's default folder: it is restored."""
    options = dict(options)
    sqlite = options["uri"].startswith("sqlite://")
    path = options["uri"].removeprefix("sqlite://")
    if not create and sqlite and not os.path.isfile(path):
        raise StoreNotFound(f"{where}: database file {path} does not exist")
    previous = getattr(THREAD_LOCAL, "_pydal_folder_", None)
    try:
        if sqlite:
            if create:
                os.makedirs(options["folder"], exist_ok=True)
        else:  # pydal's .table files, a cache of scalekit's, not a part of the store
            options["folder"] = options["folder"] or private_folder()
            os.makedirs(options["folder"], mode=0o700, exist_ok=True)
        if options["pool_size"]:
            pool_per_process(options["uri"])
        return DAL(
            options.pop("uri"), migrate=False, attempts=1, check_reserved=None,
            lazy_tables=False, **options,
        )  # fmt: skip
    except OSError as exc:
        raise StoreUnavailable(
            f"{where}: cannot create a folder: {describe_os_error(exc)}; give a folder that "
            f"user {os.getuid()} can write"
        ) from exc
    finally:
        if previous is None:
            vars(THREAD_LOCAL).pop("_pydal_folder_", None)
        else:
            THREAD_LOCAL._pydal_folder_ = previous


def close(db: DAL, action: str | None = None) -> None:
    """Commit or roll back (``action``), then give the connection back to the pool (or
    close it) and unregister the DAL; a connection that fails ``action`` is dropped."""
    try:
        db._adapter.close(action=action)
    finally:
        with contextlib.suppress(Exception):  # already closed: nothing left to release
            db.close()


def close_quietly(db: DAL) -> None:
    """:func:`close` without committing, also when the connection is dead."""
    with contextlib.suppress(Exception):
        close(db)


def begin_immediate(db: DAL) -> None:
    """On SQLite, BEGIN IMMEDIATE (take the write lock now), retried every millisecond up to
    the connection's busy timeout; nothing if a transaction is under way already.

    SQLite's own busy handler sleeps longer and longer (up to 100 ms a time) and so loses
    the lock, over and over, to a busy writer: a second's wait is common.
    """
    adapter = db._adapter
    if adapter.connection.in_transaction:
        return
    busy_ms = int(db.executesql("PRAGMA busy_timeout;")[0][0])
    db.executesql("PRAGMA busy_timeout = 0;")
    deadline = time.monotonic() + busy_ms / 1000
    try:
        while True:
            try:
                adapter.execute("BEGIN IMMEDIATE;")
                return
            except adapter.driver.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.001)
    finally:
        db.executesql(f"PRAGMA busy_timeout = {busy_ms};")


def wal_mode(db: DAL) -> None:
    """Put the SQLite file in WAL mode (it stays so), so that readers never wait for the
    writer; while other connections keep the file busy (a new file opened by several at
    once), retried every millisecond up to the connection's busy timeout."""
    deadline = time.monotonic() + int(db.executesql("PRAGMA busy_timeout;")[0][0]) / 1000
    while str(db.executesql("PRAGMA journal_mode;")[0][0]).lower() != "wal":
        try:
            db.executesql("PRAGMA journal_mode = WAL;")
        except db._adapter.driver.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.001)


def failure_reason(exc: BaseException, password: str | None) -> str:
    """One line saying why pydal or its driver failed, without the password (pydal's
    connect error quotes the driver's traceback: the last line it raised says why)."""
    text = str(exc)
    raised = _RAISED.findall(text)
    lines = raised[-1:] or [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason.replace(password, "***") if password else reason
