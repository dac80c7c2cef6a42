"""The pydal connector: what every piece that keeps rows in SQL uses (sessions, tickets, db
members and what comes next), on SQLite, PostgreSQL and MySQL/MariaDB.

- :mod:`~scalekit.connect.sql.dal`: a DAL opened from a URL (one attempt, the driver's
  connect timeout, each statement bounded even on a frozen server, a private folder for
  pydal's ``.table`` files), pools of its own in each process, SQLite's write lock taken
  at once (:func:`begin_immediate`), its WAL mode (:func:`wal_mode`: readers never
  wait for the writer), closing, one-line driver errors without the password.
- :mod:`~scalekit.connect.sql.deadline`: the client's own deadline on PostgreSQL round
  trips, which a frozen server cannot enforce.
- :mod:`~scalekit.connect.sql.connections`: :class:`ThreadDAL`, one DAL per thread of each
  process (fork-safe through :mod:`scalekit.core.process`), a block in one transaction of
  it (:meth:`ThreadDAL.transaction`: driver errors as the caller's StoreUnavailable).
- :mod:`~scalekit.connect.sql.guarded`: a connection failure as the caller's error
  (:func:`connect`), a new connection's session set for short transactions
  (:func:`session_defaults`), a DAL of its own from a URL for one command
  (:func:`opened`), driver errors as :class:`StoreUnavailable` without the password
  (:func:`unavailable`).
- :mod:`~scalekit.connect.sql.tables`: table and index names, tables created or upgraded
  from the live database (one process at a time: :func:`schema_lock`), a table required
  to exist, indexes, insert-if-absent.

To open an existing store only (a read or cleanup command), ``open_dal(..., create=False)``
then :func:`require_table` for each table: nothing is created, a missing database file or
table is :class:`~scalekit.core.errors.StoreNotFound`.

Each piece keeps its own schema (fields, indexes) and its own messages.
"""

from scalekit.connect.sql.connections import ThreadDAL
from scalekit.connect.sql.dal import (
    STATEMENT_TIMEOUT,
    begin_immediate,
    bound_args,
    close,
    close_quietly,
    connect_timeout_args,
    dal_options,
    failure_reason,
    open_dal,
    pool_per_process,
    positive_timeout,
    private_folder,
    server_uri,
    wal_mode,
)
from scalekit.connect.sql.guarded import (
    CHECK_SERVER,
    connect,
    opened,
    session_defaults,
    unavailable,
)
from scalekit.connect.sql.tables import (
    Index,
    check_table_name,
    columns,
    create_index,
    define_table,
    drop_index,
    identifier,
    insert_new,
    insert_new_rows,
    migrate_table,
    require_table,
    schema_lock,
)

__all__ = [
    "CHECK_SERVER",
    "STATEMENT_TIMEOUT",
    "Index",
    "ThreadDAL",
    "begin_immediate",
    "bound_args",
    "check_table_name",
    "close",
    "close_quietly",
    "columns",
    "connect",
    "connect_timeout_args",
    "create_index",
    "dal_options",
    "define_table",
    "drop_index",
    "failure_reason",
    "identifier",
    "insert_new",
    "insert_new_rows",
    "migrate_table",
    "open_dal",
    "opened",
    "pool_per_process",
    "positive_timeout",
    "private_folder",
    "require_table",
    "schema_lock",
    "server_uri",
    "session_defaults",
    "unavailable",
    "wal_mode",
]
