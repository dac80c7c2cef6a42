"""ReplicaSet on a real primary with streaming replicas: rotation, health memory, fallback,
lag, and the web2py drop-in. Where a query went is asked from the server itself."""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid

import pytest
from pydal import DAL, Field

from scalekit.core.errors import ConfigError, DatabaseUnavailable
from scalekit.db import HealthMemory, ReplicaSet, fail_safe_round_robin
from scalekit.db.members import close
from tests.db.conftest import (
    define,
    in_recovery,
    read_ports,
    server_port,
    sql,
    wait_replayed,
)
from tests.servers import free_port


def dead_url() -> str:
    return f"postgres://postgres@127.0.0.1:{free_port()}/scalekit_test"


def test_round_robin_spreads_reads_over_the_replicas(cluster, folder):
    replicas = ReplicaSet(cluster.primary.url, cluster.replica_urls, folder=folder)
    ports = read_ports(replicas, 10, folder)
    first, second = (r.port for r in cluster.replicas)
    assert sorted(ports) == sorted([first, second] * 5)
    assert all(a != b for a, b in itertools.pairwise(ports))  # strictly alternating


def test_writes_go_to_the_primary_and_a_replica_refuses_them(cluster, folder):
    replicas = ReplicaSet(cluster.primary.url, cluster.replica_urls, folder=folder)
    name = f"w-{uuid.uuid4().hex}"
    for _ in range(4):
        db = replicas.connect(folder=folder)
        define(db)
        assert server_port(db) == cluster.primary.port and not in_recovery(db)
        db.item.insert(name=name)
        db.commit()
        close(db)
    reader = replicas.connect(read_only=True, folder=folder)
    define(reader)
    assert in_recovery(reader)
    with pytest.raises(Exception, match="read-only transaction"):
        reader.item.insert(name=name)
    close(reader, "rollback")


def test_each_process_starts_the_rotation_at_its_own_offset(cluster):
    replicas = ReplicaSet(cluster.primary.url, cluster.replica_urls)
    replicas.ordered()  # the parent's counter, which forked children must not inherit
    firsts = []
    for _ in range(16):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its first replica, and leave at once
            os.write(write_end, replicas.ordered()[0].masked.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            firsts.append(pipe.read())
        os.waitpid(pid, 0)
    assert len(set(firsts)) == 2  # all 16 on one replica: 1 chance in 32768


def test_replicas_never_migrate_and_share_the_primarys_table_files(cluster, folder):
    replicas = ReplicaSet(cluster.primary.url, cluster.replica_urls, folder=folder)
    reader = replicas.connect(read_only=True, folder=folder)
    writer = replicas.connect(folder=folder)
    try:
        assert reader._uri_hash == writer._uri_hash == replicas.table_hash
        table = f"t{uuid.uuid4().hex[:10]}"
        reader.define_table(table, Field("x"), migrate=True)  # a replica would raise
        assert not sql(cluster.primary, "SELECT 1 FROM pg_tables WHERE tablename = %s", table)
    finally:
        close(reader, "rollback")
        close(writer, "rollback")


def test_a_stopped_replica_is_skipped_then_tried_again_after_its_cooldown(
    cluster, private_replica, folder
):
    events = []
    replicas = ReplicaSet(
        cluster.primary.url, [private_replica.url, cluster.replicas[0].url], folder=folder,
        health=HealthMemory(cooldown=0.5, jitter=0, on_change=events.append),
    )  # fmt: skip
    private_replica.stop_cluster()
    started = time.monotonic()
    ports = read_ports(replicas, 6, folder)
    assert ports == [cluster.replicas[0].port] * 6
    assert time.monotonic() - started < 0.5  # a refused connection costs nothing
    assert [e.state for e in events] == ["down"]

    private_replica.start_cluster()
    time.sleep(0.6)
    ports = read_ports(replicas, 4, folder)
    assert private_replica.port in ports and cluster.replicas[0].port in ports
    assert [e.state for e in events] == ["down", "up"]


def test_a_black_hole_costs_one_connect_timeout_per_cooldown(cluster, black_hole, folder):
    replicas = ReplicaSet(
        cluster.primary.url, [black_hole.url, cluster.replicas[0].url], folder=folder,
        connect_timeout=1, health=HealthMemory(cooldown=1.0, jitter=0),
    )  # fmt: skip
    slow, reads, started = [], 0, time.monotonic()
    while time.monotonic() - started < 2.6:  # tries at 0 s and, after 1 s of cooldown, 2 s
        begin = time.monotonic()
        (port,) = read_ports(replicas, 1, folder)
        elapsed = time.monotonic() - begin
        assert port == cluster.replicas[0].port
        reads += 1
        if elapsed > 0.5:
            slow.append(elapsed)
    assert len(black_hole.accepted) == 2
    assert len(slow) == 2 and all(s < 1.6 for s in slow), slow
    assert reads > 20


def test_all_replicas_down_sends_reads_to_the_primary_and_says_so(cluster, folder, caplog):
    events = []
    replicas = ReplicaSet(
        cluster.primary.url, [dead_url(), dead_url()], folder=folder, on_change=events.append
    )
    with caplog.at_level(logging.WARNING, logger="scalekit.db"):
        ports = read_ports(replicas, 5, folder)
    assert ports == [cluster.primary.port] * 5
    reports = [r for r in caplog.records if "sent to the primary" in r.getMessage()]
    assert len(reports) == 1  # bounded: once per fallback_log_interval
    assert [e.state for e in events] == ["down", "down", "fallback"]


def test_a_primary_that_is_down_raises_a_clear_error(folder):
    url = dead_url()
    replicas = ReplicaSet(url, [dead_url()], folder=folder)
    for read_only in (False, True):
        with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
            replicas.connect(read_only=read_only)


def test_a_lagging_replica_is_skipped_until_it_catches_up(cluster, private_replica, folder):
    events = []
    other = cluster.replicas[0]
    replicas = ReplicaSet(
        cluster.primary.url, [private_replica.url, other.url], folder=folder,
        max_lag=0.5, lag_interval=0.2, on_change=events.append,
    )  # fmt: skip
    sql(cluster.primary, "INSERT INTO item (name) VALUES (%s)", f"lag-{uuid.uuid4().hex}")
    wait_replayed(cluster.primary, [private_replica])  # a replayed transaction to age
    sql(private_replica, "SELECT pg_wal_replay_pause()")
    time.sleep(0.7)
    sql(cluster.primary, "INSERT INTO item (name) VALUES (%s)", f"lag-{uuid.uuid4().hex}")
    query = "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()"
    while not sql(private_replica, query)[0][0]:
        time.sleep(0.02)
    assert read_ports(replicas, 4, folder) == [other.port] * 4
    assert [e.state for e in events] == ["lagging"]

    sql(private_replica, "SELECT pg_wal_replay_resume()")
    wait_replayed(cluster.primary, [private_replica])
    time.sleep(0.3)
    assert private_replica.port in read_ports(replicas, 4, folder)
    assert [e.state for e in events] == ["lagging", "caught_up"]


def test_uris_for_a_dal_list_skip_hosts_in_cooldown(cluster, folder):
    dead = dead_url()
    replicas = ReplicaSet(cluster.primary.url, [dead, cluster.replicas[0].url], folder=folder)
    read_ports(replicas, 2, folder)  # learns that ``dead`` is down
    for _ in range(3):
        assert replicas.uris() == [cluster.replicas[0].url, cluster.primary.url]
    assert replicas.uris(read_only=False) == [cluster.primary.url]


def test_fail_safe_round_robin_learns_from_pydal(cluster, folder):
    dead = dead_url()
    uris = (dead, *cluster.replica_urls)
    for _ in range(3):  # the dead host is first in one call out of three, then last
        db = DAL(fail_safe_round_robin(*uris), folder=folder, attempts=1)
        assert in_recovery(db)
        close(db, "rollback")
    for _ in range(3):
        assert fail_safe_round_robin(*uris)[-1] == dead


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"replicas": "postgres://u@h/db"}, "list of URLs"),
        ({"strategy": "fastest"}, "round_robin"),
        ({"max_lag": 0}, "max_lag"),
        ({"replicas": ["postgres://u@h/db?timeout=3"]}, "unknown option timeout"),
        ({"replicas": ["redis://h:6379/0"]}, "database or sqlite"),
    ],
)
def test_bad_configuration_is_refused_clearly(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ReplicaSet("postgres://u:secret@h/db", **kwargs)


def test_configuration_from_the_environment_masks_passwords():
    replicas = ReplicaSet.from_environ(
        {
            "SCALEKIT_DB_PRIMARY": "postgres://app:s3cret@db1/app",
            "SCALEKIT_DB_REPLICAS": "postgres://app:s3cret@db2/app?connect_timeout=1, "
            "postgres://app:s3cret@db3/app",
        }
    )
    assert [m.timeout for m in replicas.replicas] == [1.0, 2.0]
    assert "s3cret" not in repr(replicas) and "***" in repr(replicas)
    with pytest.raises(ConfigError, match="SCALEKIT_DB_PRIMARY"):
        ReplicaSet.from_environ({})
