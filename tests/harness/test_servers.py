"""Each fixture's server really answers (a real round trip), and a broken start is loud."""

import os
import socket
import time

import psycopg2
import pymysql
import pytest
import redis
from pydal import DAL, Field
from pymemcache.client.base import Client

from scalekit.core import urls
from tests.servers import RedisCluster, RedisSentinelGroup, RedisServer, ServerStartError


def test_redis_round_trip_over_tcp_and_unix_socket(redis_server, redis_url):
    settings = urls.parse(redis_url)
    tcp = redis.Redis(host=settings.host, port=settings.port, db=settings.db)
    tcp.set("harness:key", b"value")
    unix = urls.parse(redis_server.unix_url)
    over_socket = redis.Redis(unix_socket_path=unix.unix_socket, db=unix.db)
    assert over_socket.get("harness:key") == b"value"
    assert tcp.info("server")["tcp_port"] == settings.port
    tcp.delete("harness:key")


def test_two_memcached_instances_are_separate_servers(memcache_url):
    settings = urls.parse(memcache_url)
    assert len(settings.servers) == 2
    first, second = (Client(address, connect_timeout=2, timeout=2) for address in settings.servers)
    first.set("harness-key", b"on-first")
    second.set("harness-key", b"on-second")
    assert first.get("harness-key") == b"on-first"
    assert second.get("harness-key") == b"on-second"
    first.delete("harness-key")
    assert first.get("harness-key") is None and second.get("harness-key") == b"on-second"


def test_postgres_round_trip_with_psycopg2(postgres_url):
    settings = urls.parse(postgres_url)
    connection = psycopg2.connect(
        host=settings.host, port=settings.port, user=settings.user, dbname=settings.database
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE harness (n integer)")
        cursor.execute("INSERT INTO harness VALUES (41), (1)")
        cursor.execute("SELECT sum(n), current_database() FROM harness")
        assert cursor.fetchone() == (42, "scalekit_test")
    connection.close()


def test_postgres_through_pydal_with_the_parsed_uri(postgres_url, tmp_path):
    db = DAL(urls.parse(postgres_url).dal_uri, folder=str(tmp_path), pool_size=0)
    try:
        db.define_table("harness_pydal", Field("name"))
        db.harness_pydal.insert(name="scalekit")
        db.commit()
        assert db(db.harness_pydal).select().first().name == "scalekit"
        db.harness_pydal.drop()
        db.commit()
    finally:
        db.close()


class _RedisWithBadOption(RedisServer):
    def command(self):
        return [*super().command(), "--no-such-directive", "yes"]


def test_a_server_that_cannot_start_fails_loudly_with_its_log_and_cleans_up():
    server = _RedisWithBadOption()
    with pytest.raises(ServerStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "redis did not start" in message
    assert "last lines of its log" in message
    assert "no-such-directive" in message  # redis-server's own complaint
    assert not os.path.exists(server.workdir)


def test_stop_ends_the_process_frees_the_port_and_removes_files():
    server = RedisServer().start()
    port, workdir = server.port, server.workdir
    server.stop()
    assert not os.path.exists(workdir)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_mariadb_round_trip_as_the_user_with_a_password(mysql_server, mysql_url):
    settings = urls.parse(mysql_url)
    assert settings.password == mysql_server.password and mysql_server.password not in repr(
        settings
    )
    connection = pymysql.connect(
        host=settings.host, port=settings.port, user=settings.user,
        password=settings.password, database=settings.database,
    )  # fmt: skip
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 41 + 1, DATABASE(), CURRENT_USER()")
            assert cursor.fetchone() == (42, "scalekit_test", "scalekit@127.0.0.1")
    finally:
        connection.close()


def _named_primary(addresses, service):
    sentinels = [redis.Redis(host=host, port=port) for host, port in addresses]
    return {sentinel.sentinel_get_master_addr_by_name(service)[1] for sentinel in sentinels}


def test_the_sentinels_name_the_primary_and_promote_the_replica_when_it_is_killed(redis_sentinel):
    primary = redis_sentinel.primary()
    assert _named_primary(redis_sentinel.addresses, redis_sentinel.service) == {primary.port}
    redis.Redis(port=primary.port).set("harness:sentinel", b"replicated")
    (replica,) = (node for node in redis_sentinel.nodes if node is not primary)
    with redis_sentinel.primary_killed() as killed:
        assert killed is primary and killed.process.poll() is not None
        started, named = time.monotonic(), set()
        while time.monotonic() - started < 5 and named != {replica.port}:
            named = _named_primary(redis_sentinel.addresses, redis_sentinel.service)
            time.sleep(0.05)
        assert named == {replica.port}, f"still {named} after 5 s"
        assert redis.Redis(port=replica.port).get("harness:sentinel") == b"replicated"
    assert redis_sentinel.primary() is replica  # the killed node is back, as its replica
    assert redis.Redis(port=killed.port).info("replication")["role"] == "slave"


def test_a_sentinel_group_stops_every_process_and_folder():
    group = RedisSentinelGroup().start()
    processes, folders = group.processes, [s.workdir for s in (*group.nodes, *group.sentinels)]
    assert len(processes) == 5 and all(process.poll() is None for process in processes)
    group.stop()
    assert all(process.poll() is not None for process in processes)
    assert not any(os.path.exists(folder) for folder in folders)


def _cluster_nodes(seed: str) -> list[list[str]]:
    """``CLUSTER NODES`` as seen from ``seed``: one list of fields per node."""
    host, port = seed.split(":")
    with redis.Redis(host=host, port=int(port)) as client:
        return [
            line.split()
            for line in client.execute_command("CLUSTER", "NODES").decode().splitlines()
        ]


def test_the_cluster_has_three_primaries_each_with_one_replica(redis_cluster):
    assert len(redis_cluster) == 6
    for seed in redis_cluster:  # every node sees the same healthy layout
        nodes = _cluster_nodes(seed)
        primaries = {n[0] for n in nodes if "master" in n[2]}
        replicas_of = [n[3] for n in nodes if "slave" in n[2]]
        assert len(primaries) == 3 and sorted(replicas_of) == sorted(primaries)
        assert all(n[7] == "connected" and "fail" not in n[2] for n in nodes)


def test_a_key_set_through_one_seed_is_read_through_another_and_replicated(redis_cluster):
    first, last = (redis.RedisCluster.from_url(f"redis://{seed}") for seed in redis_cluster[::5])
    keys = [f"harness:cluster:{n}" for n in range(30)]
    for key in keys:
        first.set(key, key.encode())
    assert [last.get(key) for key in keys] == [key.encode() for key in keys]
    primaries = last.get_primaries()
    assert len(primaries) == 3
    for primary in primaries:  # the keys spread over every primary, each copied to its replica
        client = last.get_redis_connection(primary)
        assert client.dbsize() > 0 and client.execute_command("WAIT", 1, 2000) == 1
    assert last.delete(*keys) == len(keys)
    first.close()
    last.close()


def test_a_cluster_stops_every_process_and_folder():
    cluster = RedisCluster().start()
    processes, folders = cluster.processes, [node.workdir for node in cluster.nodes]
    assert len(processes) == 6 and all(process.poll() is None for process in processes)
    cluster.stop()
    for process in processes:
        assert process.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)
    assert not any(os.path.exists(folder) for folder in folders)
