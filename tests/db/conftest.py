"""A PostgreSQL primary with two streaming replicas for the whole run, and the same with
MariaDB (binary log replication); private replicas for tests that stop or pause one, and
helpers that ask a DAL which server answered."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import pytest
from pydal import DAL, Field

from scalekit.db.members import close
from tests.conftest import _running
from tests.servers import MariaDBPrimary, MariaDBReplica, PostgresReplica, PostgresServer


@dataclass
class Cluster:
    primary: PostgresServer | MariaDBPrimary
    replicas: list[PostgresReplica] | list[MariaDBReplica]

    @property
    def replica_urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> str:
    """pydal's folder for the run: the .table files of the primary's tables."""
    return str(tmp_path_factory.mktemp("databases"))


def start_cluster(stack: contextlib.ExitStack, primary, replica_of, folder: str) -> Cluster:
    """``primary`` with table ``item``, then two replicas (``replica_of(primary)``) that
    have replayed it."""
    primary = _running(stack, primary)
    db = DAL(primary.url, folder=folder, attempts=1)
    define(db)
    db.commit()
    db.close()
    replicas = [_running(stack, replica_of(primary)) for _ in range(2)]
    wait_replayed(primary, replicas)
    return Cluster(primary, replicas)


@pytest.fixture(scope="session")
def postgres_cluster(folder: str) -> Iterator[Cluster]:
    """A PostgreSQL primary and two streaming replicas."""
    with contextlib.ExitStack() as stack:
        yield start_cluster(stack, PostgresServer(), PostgresReplica, folder)


@pytest.fixture
def cluster(postgres_cluster: Cluster) -> Cluster:
    """The PostgreSQL cluster (a test module may run on both by overriding this)."""
    return postgres_cluster


@pytest.fixture(scope="session")
def mysql_cluster(folder: str) -> Iterator[Cluster]:
    """A MariaDB primary and two read-only replicas of its binary log."""
    with contextlib.ExitStack() as stack:
        yield start_cluster(stack, MariaDBPrimary(), MariaDBReplica, folder)


@contextlib.contextmanager
def third_replica(cluster: Cluster) -> Iterator:
    """One more replica of ``cluster``'s primary, caught up, for a test to stop or delay."""
    with contextlib.ExitStack() as stack:
        replica = _running(stack, type(cluster.replicas[0])(cluster.primary))
        wait_replayed(cluster.primary, [replica])
        yield replica


@pytest.fixture
def private_mysql_replica(mysql_cluster: Cluster) -> Iterator[MariaDBReplica]:
    with third_replica(mysql_cluster) as replica:
        yield replica


@pytest.fixture
def private_replica(cluster: Cluster) -> Iterator[PostgresReplica]:
    with third_replica(cluster) as replica:
        yield replica


def define(db: DAL) -> None:
    """The test app's one table (created on the primary only: replicas never migrate)."""
    db.define_table("item", Field("name"))


def server_port(db: DAL) -> int:
    """The port of the server this DAL talks to."""
    if db._adapter.dbengine == "mysql":
        return int(db.executesql("SELECT @@port")[0][0])
    return int(db.executesql("SELECT inet_server_port()")[0][0])


def read_ports(replicas, count: int, folder: str) -> list[int]:
    """The ports of the servers that ``count`` read-only connections of ``replicas`` reach."""
    ports = []
    for _ in range(count):
        db = replicas.connect(read_only=True, folder=folder)
        try:
            ports.append(server_port(db))
        finally:
            close(db, "rollback")
    return ports


def in_recovery(db: DAL) -> bool:
    """True on a replica."""
    return bool(db.executesql("SELECT pg_is_in_recovery()")[0][0])


def sql(server: PostgresServer, query: str, *args) -> list[tuple]:
    """Run one statement on ``server`` in autocommit; its rows (if any)."""
    connection = psycopg2.connect(
        host="127.0.0.1", port=server.port, user=server.superuser, dbname=server.database,
        connect_timeout=2,
    )  # fmt: skip
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def names(server: PostgresServer | MariaDBPrimary, prefix: str) -> set[str]:
    """The names of the rows of ``item`` starting with ``prefix``."""
    if isinstance(server, MariaDBPrimary):
        rows = server.sql("SELECT name FROM scalekit_test.item WHERE name LIKE %s", prefix + "%")
        return {row["name"] for row in rows}
    rows = sql(server, "SELECT name FROM item WHERE name LIKE %s", prefix + "%")
    return {row[0] for row in rows}


def connections(server: PostgresServer | MariaDBPrimary) -> int:
    """How many client connections the test database has open on ``server``."""
    if isinstance(server, MariaDBPrimary):
        query = "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = %s"
        return int(server.sql(query, server.database)[0]["n"])
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    return int(sql(server, query, server.database)[0][0])


def wait_replayed(primary: PostgresServer | MariaDBPrimary, replicas: list) -> None:
    """Wait until every replica has replayed all the primary has written so far."""
    if isinstance(primary, MariaDBPrimary):
        for replica in replicas:
            replica.wait_replayed()
        return
    (lsn,) = sql(primary, "SELECT pg_current_wal_lsn()::text")[0]
    deadline = time.monotonic() + 10
    for replica in replicas:
        query = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
        while not sql(replica, query, lsn)[0][0]:
            assert time.monotonic() < deadline, f"replica on {replica.port} is not catching up"
            time.sleep(0.02)


class BlackHole:
    """A TCP listener on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/scalekit_test"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()
