"""ReplicaSet on a real MariaDB primary with binary-log replicas: reads rotate over the
replicas, writes go to the primary, and ``max_lag`` reads each replica's own status."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from scalekit.db import ReplicaSet
from scalekit.db.members import Lag, Member, close
from tests.db.conftest import define, read_ports, server_port, wait_replayed
from tests.servers import MariaDBReplica


def seconds_behind(replica: MariaDBReplica) -> int | None:
    return replica.sql("SHOW SLAVE STATUS")[0]["Seconds_Behind_Master"]


def lag_watcher(mysql_cluster, replica: MariaDBReplica, folder: str, events: list):
    """A set of ``replica`` and a shared one, that skips replicas over 0.5 s behind."""
    other = mysql_cluster.replicas[0]
    replicas = ReplicaSet(
        mysql_cluster.primary.url, [replica.url, other.url], folder=folder,
        max_lag=0.5, lag_interval=0.2, on_change=events.append,
    )  # fmt: skip
    return replicas, other


def write(mysql_cluster) -> None:
    mysql_cluster.primary.sql(
        "INSERT INTO scalekit_test.item (name) VALUES (%s)", f"lag-{uuid.uuid4().hex}"
    )


def test_reads_rotate_over_the_replicas_and_writes_go_to_the_primary(mysql_cluster, folder):
    primary = mysql_cluster.primary
    replicas = ReplicaSet(primary.url, [r.url for r in mysql_cluster.replicas], folder=folder)
    ports = read_ports(replicas, 10, folder)
    assert sorted(ports) == sorted([r.port for r in mysql_cluster.replicas] * 5)
    assert all(a != b for a, b in itertools.pairwise(ports))

    name = f"w-{uuid.uuid4().hex}"
    writer = replicas.connect(folder=folder)
    define(writer)
    assert server_port(writer) == primary.port
    writer.item.insert(name=name)
    writer.commit()
    close(writer)
    wait_replayed(primary, mysql_cluster.replicas)
    reader = replicas.connect(read_only=True, folder=folder)
    define(reader)
    assert reader(reader.item.name == name).count() == 1
    with pytest.raises(Exception, match="read-only"):
        reader.item.insert(name=name)
    close(reader, "rollback")


def test_a_delayed_replica_is_skipped_until_it_catches_up(
    mysql_cluster, private_mysql_replica, folder
):
    events: list = []
    replica = private_mysql_replica
    replicas, other = lag_watcher(mysql_cluster, replica, folder, events)
    assert sorted(read_ports(replicas, 2, folder)) == sorted([replica.port, other.port])
    replica.sql("STOP SLAVE")
    replica.sql("CHANGE MASTER TO MASTER_DELAY = 3")
    replica.sql("START SLAVE")
    write(mysql_cluster)
    deadline = time.monotonic() + 5
    while not (seconds_behind(replica) or 0) >= 1:
        assert time.monotonic() < deadline, "the delayed replica never reported a lag"
        time.sleep(0.05)
    time.sleep(0.25)  # past the lag interval: the set measures again
    assert read_ports(replicas, 4, folder) == [other.port] * 4
    assert [e.state for e in events] == ["lagging"]
    assert "over the 0.5 s limit" in events[0].reason

    replica.wait_replayed()
    time.sleep(0.3)
    assert replica.port in read_ports(replicas, 4, folder)
    assert [e.state for e in events] == ["lagging", "caught_up"]


def test_a_replica_whose_replication_stopped_is_skipped_and_the_log_says_why(
    mysql_cluster, private_mysql_replica, folder, caplog
):
    events: list = []
    replica = private_mysql_replica
    replicas, other = lag_watcher(mysql_cluster, replica, folder, events)
    assert sorted(read_ports(replicas, 2, folder)) == sorted([replica.port, other.port])
    replica.sql("STOP SLAVE")
    time.sleep(0.25)
    with caplog.at_level("WARNING", logger="scalekit.db"):
        assert read_ports(replicas, 4, folder) == [other.port] * 4
    assert [e.state for e in events] == ["lagging"]
    why = "replication lag unknown (replication is not running (IO thread No, SQL thread No))"
    assert why in events[0].reason
    assert any(why in record.getMessage() for record in caplog.records)

    replica.sql("START SLAVE")
    write(mysql_cluster)
    replica.wait_replayed()
    time.sleep(0.3)
    assert replica.port in read_ports(replicas, 4, folder)
    assert [e.state for e in events] == ["lagging", "caught_up"]


def test_a_user_who_may_not_read_the_status_is_skipped_and_told_what_to_grant(
    mysql_cluster, folder
):
    events: list = []
    with MariaDBReplica(mysql_cluster.primary, monitor=False).running() as replica:
        replica.wait_replayed()
        replicas, other = lag_watcher(mysql_cluster, replica, folder, events)
        assert read_ports(replicas, 4, folder) == [other.port] * 4
    assert [e.state for e in events] == ["lagging"]
    assert "user 'scalekit' may not read the replication status: grant it SLAVE MONITOR" in (
        events[0].reason
    )


def test_a_server_that_replicates_from_nobody_has_no_lag(mysql_cluster, folder):
    primary = mysql_cluster.primary
    primary.sql(f"GRANT SLAVE MONITOR ON *.* TO '{primary.user}'@'127.0.0.1'")
    member = Member(primary.url, connect_timeout=2)
    db = member.connect({"folder": folder})
    try:
        assert member.lag(db) == Lag(0.0)
    finally:
        close(db, "rollback")
    replica = mysql_cluster.replicas[0]
    member = Member(replica.url, connect_timeout=2)
    db = member.connect({"folder": folder})
    try:
        assert member.lag(db) == Lag(0.0)  # idle and replayed: 0, not unknown
    finally:
        close(db, "rollback")
