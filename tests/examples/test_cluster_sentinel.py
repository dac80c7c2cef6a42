"""`make cluster REDIS=sentinel`: the demo on examples/sentinel/'s deploy, started from those
very files on loopback (a primary, its replica, three Sentinels), every Redis user of the demo
(sessions, cache, maintenance flag, tasks) on one ``redis+sentinel://`` URL.

The cluster starts once for the module; the Redis primary is killed (SIGKILL) under load in
the second test, the next ones run on the promoted replica, the last one stops everything.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from examples.cluster import Cluster, _gone, _in_sync
from scalekit.core import urls
from tests.examples.browser import Browser, field
from tests.examples.test_cluster import (
    command,
    read_only_is_obeyed_by_every_node,
    receipt_is_written_by_a_worker,
    signed_in,
    status,
)

REDIS_USERS = ("SCALEKIT_SESSION_STORE", "SCALEKIT_CACHE", "SCALEKIT_MAINTENANCE_FLAG",
               "SCALEKIT_TASKS")  # fmt: skip
REDIS_PROCESSES = {"redis1", "redis2", "sentinel1", "sentinel2", "sentinel3"}
#: Maintenance(retry_seconds=): after a failed read of the flag, the next one comes this
#: much later (the last known state holds meanwhile).
FLAG_RETRY_SECONDS = 5.0
#: When the failover test saw its last failure (see flag_read_again).
FAILOVER: dict[str, float] = {}


def started(tmp_path_factory, redis: str) -> Iterator[Cluster]:
    """The demo cluster on ``redis`` ("sentinel", "cluster") for a module, stopped after."""
    state = str(tmp_path_factory.mktemp("cluster") / "state")
    cluster = Cluster(state, redis=redis, cron_sleep=1)
    cluster.start()
    try:
        yield cluster
    finally:
        Cluster(cluster.state_dir).stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from started(tmp_path_factory, "sentinel")


def sentinel_settings(cluster: Cluster) -> urls.SentinelURL:
    return urls.parse(cluster.state["env"]["SCALEKIT_CACHE"])


def named_primary(cluster: Cluster) -> str:
    """The name (redis1, redis2) of the node every Sentinel names as the primary now."""
    settings, ports = sentinel_settings(cluster), set()
    for host, port in settings.sentinels:
        with redis.Redis(host=host, port=port, password=settings.sentinel_password,
                         socket_timeout=1) as sentinel:  # fmt: skip
            ports.add(sentinel.sentinel_get_master_addr_by_name(settings.service)[1])
    (port,) = ports
    return next(s["name"] for s in cluster.state["servers"] if s["url"].endswith(f":{port}"))


def test_every_redis_user_is_on_the_sentinels_and_no_password_shows(cluster, capsys):
    settings = sentinel_settings(cluster)
    assert (settings.service, len(settings.sentinels)) == ("scalekit", 3)
    assert named_primary(cluster) == "redis1"
    every_redis_user_is_on(cluster, capsys, "redis+sentinel://", REDIS_PROCESSES)


def test_killing_the_redis_primary_keeps_every_user_signed_in(cluster, capsys):
    FAILOVER["last failure"] = failover_under_load(
        cluster, capsys, "redis1", "Sentinel", lambda: named_primary_or_none(cluster) == "redis2"
    )
    assert named_primary(cluster) == "redis2"


def test_restart_brings_the_killed_primary_back_as_a_replica(cluster, capsys):
    restarted_as_replica(cluster, capsys)
    assert named_primary(cluster) == "redis2"


def named_primary_or_none(cluster: Cluster) -> str | None:
    try:
        return named_primary(cluster)
    except ValueError:  # the Sentinels do not agree yet
        return None


def every_redis_user_is_on(cluster: Cluster, capsys, scheme: str, processes: set[str]) -> None:
    """Sessions, cache, flag and tasks use one ``scheme`` URL; the Redis ``processes`` are
    up; ``start`` and ``status`` show no password; a signed-in user hops over the nodes."""
    env = cluster.state["env"]
    assert all(env[name].startswith(scheme) for name in REDIS_USERS)
    assert len({env[name] for name in REDIS_USERS[1:]}) == 1  # sessions: ?client_cache=true
    code, lines = status(cluster, capsys)
    assert code == 0 and set(lines) >= processes
    assert all(line[0] == "up" for line in lines.values())
    output = command(cluster, capsys, "start")[1] + command(cluster, capsys, "status")[1]
    assert "Redis: " in output and ":***@" in output  # start shows the running cluster
    settings = urls.parse(env["SCALEKIT_CACHE"])
    for secret in (settings.password, getattr(settings, "sentinel_password", None)):
        assert secret is None or secret not in output
    browser, name = signed_in(cluster)
    pages = [browser.get("/") for _ in range(6)]
    assert {headers["X-Node"] for _, headers, _ in pages} == {"node1", "node2", "node3"}
    assert [field(page, "views") for _, _, page in pages] == ["1", "2", "3", "4", "5", "6"]
    assert all(field(page, "user") == name for _, _, page in pages)


def failover_under_load(cluster: Cluster, capsys, victim: str, what: str,
                        promoted: Callable[[], bool]) -> float:  # fmt: skip
    """Four signed-in users load ``/`` (it saves the session) through haproxy while the Redis
    node ``victim`` is killed (SIGKILL), until ``promoted()`` and 2 s more: every user is
    still signed in and still counting. Meanwhile the session policy answers 503 (no session
    to be had); a request that had its session when Redis went may fail in the view (the hit
    counter): a 500 page with its ticket. Prints the counts and the recovery time; returns
    the moment (``time.monotonic()``) of the last failure."""
    users = [signed_in(cluster) for _ in range(4)]
    answers: list[list[tuple[float, str | None, int]]] = [[] for _ in users]
    failures: list[tuple[float, int, bool]] = []
    stop = threading.Event()

    def load(browser: Browser, seen: list) -> None:
        while not stop.is_set():
            status, headers, page = browser.get("/")
            if status == 200:
                seen.append((time.monotonic(), field(page, "user"), int(field(page, "views"))))
            else:
                ticketed = status == 503 or bool(headers["X-Ticket-ID"])
                failures.append((time.monotonic(), status, ticketed and "Traceback" not in page))

    threads = [threading.Thread(target=load, args=(browser, seen))
               for (browser, _), seen in zip(users, answers, strict=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        killed = time.monotonic()
        os.kill(cluster.server(victim)["pid"], signal.SIGKILL)
        while not promoted() and time.monotonic() < killed + 20:
            time.sleep(0.1)
        time.sleep(2)  # served by the promoted replica for a while
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    recovered = max((at for at, _, _ in failures), default=killed) - killed
    went_back = 0
    for (_, name), served in zip(users, answers, strict=True):
        assert {user for _, user, _ in served} == {name}, "a user was signed out"
        before = max(views for at, _, views in served if at < killed)
        assert served[-1][0] > killed + recovered and served[-1][2] > before, "not counting"
        went_back += sum(b < a for (_, _, a), (_, _, b) in itertools.pairwise(served))
    codes = [code for _, code, _ in failures]
    assert set(codes) <= {500, 503} and all(clean for _, _, clean in failures)
    assert recovered < 15  # measured: 2-3 s (down after 1 s, then the election)
    code, lines = status(cluster, capsys)
    assert code == 3 and lines[victim][0] == "down"
    with capsys.disabled():
        print(f"\n{what} failover under the demo: {sum(map(len, answers))} pages served, "
              f"{codes.count(503)} 503 and {codes.count(500)} 500 (ticketed), the last "
              f"{recovered:.2f} s after the SIGKILL; view counters that went back: "
              f"{went_back}")  # fmt: skip
    return killed + recovered


def restarted_as_replica(cluster: Cluster, capsys) -> None:
    """``restart`` the Redis node that ``status`` shows down: it comes back with its config
    file and data, and the Sentinels (or the cluster) make it a replica of the node promoted
    in its place; then every process is up again."""
    (victim,) = [name for name, line in status(cluster, capsys)[1].items() if line[0] == "down"]
    code, output = command(cluster, capsys, "restart", victim)
    assert code == 0 and f"{victim} runs again (pid" in output
    cluster.load()  # the new pid
    server, deadline = cluster.server(victim), time.monotonic() + 30
    with redis.Redis(host="127.0.0.1", port=server["port"], password=server["password"]) as client:
        while client.info("replication")["role"] != "slave" or not _in_sync(client):
            assert time.monotonic() < deadline, f"{victim} is not a replica in sync"
            time.sleep(0.1)
    assert status(cluster, capsys)[0] == 0


def test_tasks_and_the_maintenance_flag_work_on_the_promoted_replica(cluster):
    receipt_is_written_by_a_worker(cluster)
    flag_read_again(FAILOVER)
    read_only_is_obeyed_by_every_node(cluster)


def flag_read_again(failover: dict[str, float]) -> None:
    """Wait until a worker whose read of the flag failed in the failover reads it again
    (a second more: its last failed read may follow the last failed page a little)."""
    last = failover.get("last failure", 0.0) + FLAG_RETRY_SECONDS + 1
    time.sleep(max(0.0, last - time.monotonic()))


def test_stop_ends_the_redis_nodes_and_the_sentinels(cluster, capsys):
    pids = [cluster.server(name)["pid"] for name in REDIS_PROCESSES]
    code, output = command(cluster, capsys, "stop")
    assert code == 0 and all(f"stopping {name} (pid" in output for name in REDIS_PROCESSES)
    assert all(map(_gone, pids))
    assert not os.path.exists(cluster.state_dir)
