"""A replica set's connection to a frozen PostgreSQL (every process SIGSTOPped) fails its
statement within the member's ``statement_timeout`` and a little, instead of hanging."""

from __future__ import annotations

import psycopg2
import pytest

from scalekit.db import ReplicaSet
from scalekit.db.members import close
from tests.servers import PostgresServer
from tests.sessions.test_frozen_database import BOUND, DEADLINE, within


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer().running() as server:
        yield server


def test_a_statement_on_a_frozen_primary_fails_within_the_bound(postgres, tmp_path):
    replicas = ReplicaSet(f"{postgres.url}?statement_timeout={BOUND}", [], folder=str(tmp_path))

    def query_twice():  # one connection: open before the server freezes
        db = replicas.connect()
        try:
            assert db.executesql("SELECT 1") == [(1,)]
            with postgres.frozen():
                return db.executesql("SELECT 1")
        finally:
            close(db, "rollback")

    failure, took = within(DEADLINE + 1, query_twice)
    assert isinstance(failure, psycopg2.OperationalError), failure
    assert took < DEADLINE
    db = replicas.connect()  # running again: a new connection works
    assert db.executesql("SELECT 1") == [(1,)]
    close(db)


def test_a_slow_statement_ends_at_the_statement_timeout(postgres, tmp_path):
    replicas = ReplicaSet(f"{postgres.url}?statement_timeout={BOUND}", [], folder=str(tmp_path))
    db = replicas.connect()
    with pytest.raises(psycopg2.errors.QueryCanceled):
        db.executesql(f"SELECT pg_sleep({BOUND * 3})")  # the server ends it, cleanly
    db.rollback()
    assert db.executesql("SELECT 1") == [(1,)]  # the same connection still works
    close(db)
