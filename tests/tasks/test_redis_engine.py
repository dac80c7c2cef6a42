"""RedisEngine on real redis-servers: what only Redis does (key layout, round trips, racing
promotion, reclaimed leases, a restart with AOF, a server down and back, unix sockets)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis
from redis.crc import key_slot

from scalekit.core.errors import ConfigError, CorruptData, StoreUnavailable
from scalekit.tasks.engines import open_engine
from scalekit.tasks.engines.base import RUNNING, WAITING
from scalekit.tasks.engines.redis import MAINTENANCE_INTERVAL
from scalekit.tasks.errors import TaskAlreadyExists
from scalekit.testing import fresh_app_name
from scalekit.testing.tasks import SharedTaskEngineSuite
from tests.servers import RedisServer


class AofRedisServer(RedisServer):
    """redis-server with AOF on, fsync at every write; it can crash and come back."""

    name = "redis-aof"

    def command(self) -> list[str]:
        return [*super().command()[:-2], "--appendonly", "yes", "--appendfsync", "always"]

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def come_back(self) -> None:
        """Start again on the same port and folder (so from its AOF)."""
        self._launch()
        self._wait_until_answering()


class TestOverUnixSocket(SharedTaskEngineSuite):
    """The conformance suite again, through the server's unix socket."""

    @pytest.fixture
    def make_engine(self, redis_server):
        opened = []

        def make(app_name=None, **options):
            options.setdefault("visibility_timeout", 5.0)
            opened.append(
                open_engine(redis_server.unix_url, app_name or fresh_app_name(), **options)
            )
            return opened[-1]

        yield make
        for engine in opened:
            engine.close()


@pytest.fixture
def app_name() -> str:
    return fresh_app_name()


@pytest.fixture
def engine(redis_url, app_name):
    engine = open_engine(redis_url, app_name, visibility_timeout=0.3)
    yield engine
    engine.close()


@pytest.fixture
def client(redis_server):
    with redis.Redis(host="127.0.0.1", port=redis_server.port) as client:
        yield client


def commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (a script's commands counted too), and their total,
    INFO's own calls left out."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()}
    calls.pop("info", None)
    calls["total"] = sum(calls.values())
    return calls


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def test_every_key_of_a_queue_has_its_queue_hash_tag(engine, client, app_name):
    now = time.time()
    engine.enqueue("mail", "a", b"A")
    engine.enqueue("mail", "b", b"B", eta=now + 60)
    engine.enqueue("mail", "c", b"C", name="nightly")
    engine.enqueue("mail", "d", b"D", eta=now + 60, name="weekly")
    engine.bury(engine.claim(["mail"], "w1")[0], b"A", "boom")
    engine.enqueue("other", "x", b"X")
    keys = {key.decode() for key in client.scan_iter(match=f"scalekit:t:*{app_name}*")}
    queue_keys = {key for key in keys if "{" in key}
    assert {key.split("}")[1] for key in queue_keys if "mail" in key} == {
        ":stream", ":delayed", ":dead", ":t:a", ":t:b", ":t:d", ":n:nightly", ":n:weekly"
    }  # fmt: skip
    slots = {key_slot(key.encode()) for key in queue_keys if "{" + app_name + ":mail}" in key}
    assert len(slots) == 1
    assert key_slot(f"scalekit:t:{{{app_name}:other}}:stream".encode()) not in slots
    assert keys - queue_keys == {f"scalekit:t:{app_name}:queues"}
    assert engine.counts() == {
        "mail": {"waiting": 1, "delayed": 2, "running": 0, "dead": 1},
        "other": {"waiting": 1, "delayed": 0, "running": 0, "dead": 0},
    }


def test_enqueue_is_one_round_trip_and_a_claim_one_between_maintenance(engine, client):
    engine.enqueue("q", "warm", b"")  # registers the queue: once per process and minute
    engine.enqueue("q", "warm2", b"", name="warm2", eta=time.time() + 60)  # loads the script
    engine.ack(engine.claim(["q"], "w1")[0])  # the first claim also promotes and reclaims
    before = commands(client)
    engine.enqueue("q", "a", b"A")
    assert delta(before, commands(client)) == {"xadd": 1, "total": 1}
    before = commands(client)
    engine.enqueue("q", "b", b"B", name="b", eta=time.time() + 60)
    script = {"set": 1, "hset": 1, "zadd": 1}  # run by the script, in the same call
    assert delta(before, commands(client)) == {"evalsha": 1, **script, "total": 4}
    before = commands(client)
    (claim,) = engine.claim(["q"], "w1", wait=1)
    assert delta(before, commands(client)) == {"xreadgroup": 1, "total": 1}
    before = commands(client)
    engine.ack(claim)
    script = {"xack": 1, "xdel": 1, "del": 1}  # the DEL: a moved task's record, if any
    assert delta(before, commands(client)) == {"evalsha": 1, **script, "total": 4}


def test_an_idle_claim_looks_every_maintenance_interval_not_more(engine, client):
    engine.claim(["q"], "w1")
    before = commands(client)
    assert engine.claim(["q"], "w1", wait=1) == []
    calls = delta(before, commands(client))
    assert calls["evalsha"] <= 1 / MAINTENANCE_INTERVAL + 1  # promote + reclaim passes
    assert calls["xreadgroup"] <= 1 / MAINTENANCE_INTERVAL + 1  # blocking reads between


def test_racing_claimers_hand_out_each_due_task_once(redis_url, app_name):
    engines = [open_engine(redis_url, app_name) for _ in range(4)]
    ids = {f"t{i}" for i in range(300)}
    eta = time.time() + 0.3
    for task_id in ids:
        engines[0].enqueue("q", task_id, task_id.encode(), eta=eta)
    got: list[list[str]] = [[] for _ in engines]

    def work(i: int) -> None:
        while sum(map(len, got)) < len(ids) and time.time() < eta + 5:
            for claim in engines[i].claim(["q"], f"w{i}", count=7, wait=0.2):
                got[i].append(claim.task_id)
                engines[i].ack(claim)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handed = [task_id for one in got for task_id in one]
    assert sorted(handed) == sorted(ids)
    assert sum(1 for one in got if one) > 1  # they did race
    for engine in engines:
        engine.close()


def test_an_expired_lease_goes_to_another_worker_and_the_first_loses(engine):
    engine.enqueue("q", "a", b"A")
    (first,) = engine.claim(["q"], "w1")
    assert first.deliveries == 1
    assert engine.claim(["q"], "w2") == []
    time.sleep(0.35)
    (second,) = engine.claim(["q"], "w2")
    assert (second.task_id, second.deliveries, second.receipt) == ("a", 2, first.receipt)
    assert engine.extend([first, second]) == [first]
    assert engine.retry(first, b"A2", time.time()) is False
    assert engine.bury(first, b"A2", "late") is False
    assert engine.counts()["q"] == {"waiting": 0, "delayed": 0, "running": 1, "dead": 0}
    assert engine.retry(second, b"A2", time.time() + 60) is True
    (info,) = engine.tasks("q", "delayed")
    assert (info.task_id, info.payload) == ("a", b"A2")


def queue_keys(client: redis.Redis, app_name: str) -> set[str]:
    """The names of the keys of queue ``q`` (the stream and the sets included)."""
    keys = client.scan_iter(match=f"scalekit:t:{{{app_name}:q}}:*")
    return {key.decode().split("}:")[1] for key in keys}


@pytest.mark.parametrize(
    "meanwhile", ["delayed", "waiting", "promoted and running", "dead", "revived"]
)
def test_an_ack_after_a_lost_lease_deletes_the_task_wherever_it_went(
    engine, client, app_name, meanwhile
):
    """A second worker took over the task and retried or buried it (then it was maybe
    claimed again, or revived) while the first still ran it: the first's ack deletes the
    task and leaves none of its keys."""
    engine.enqueue("q", "a", b"A")
    (lost,) = engine.claim(["q"], "w1")
    time.sleep(0.35)
    (second,) = engine.claim(["q"], "w2")
    if meanwhile in ("dead", "revived"):
        assert engine.bury(second, b"A2", "boom")
        assert meanwhile == "dead" or engine.revive("q", "a")
    else:
        eta = {"delayed": 60, "waiting": -1, "promoted and running": 0.05}[meanwhile]
        assert engine.retry(second, b"A2", time.time() + eta)
        if meanwhile == "promoted and running":
            time.sleep(0.1)
            (third,) = engine.claim(["q"], "w3")
            assert third.receipt != lost.receipt
    assert engine.find("a").state == meanwhile.split()[-1].replace("revived", "waiting")
    engine.ack(lost)
    assert engine.find("a") is None
    assert engine.counts()["q"] == {"waiting": 0, "delayed": 0, "running": 0, "dead": 0}
    assert queue_keys(client, app_name) == {"stream"}


@pytest.mark.parametrize(
    ("claimed", "end"), [(True, "ack"), (True, RUNNING), (False, WAITING), (False, None)]
)
def test_a_moved_tasks_record_goes_with_the_task(engine, client, app_name, claimed, end):
    """A revived task (like a promoted one) keeps a record naming its entry until it is
    acked or purged."""
    engine.enqueue("q", "a", b"A")
    assert engine.bury(engine.claim(["q"], "w1")[0], b"A", "boom")
    assert engine.revive("q", "a")
    assert queue_keys(client, app_name) == {"stream", "t:a"}
    claims = engine.claim(["q"], "w1") if claimed else []
    if end == "ack":
        engine.ack(claims[0])
    else:
        assert engine.purge("q", end) == 1
    assert queue_keys(client, app_name) == {"stream"}


def test_due_delayed_tasks_are_waiting_until_promoted_and_purged_as_such(engine, client):
    """No claim promoted them: the views read the delayed set by eta around now, after
    the stream's new entries (where the next claim's pass appends them, in eta order)."""
    now = time.time()
    engine.enqueue("q", "new", b"N")
    engine.enqueue("q", "due2", b"2", eta=now + 0.1)
    engine.enqueue("q", "due1", b"1", eta=now + 0.05)
    engine.enqueue("q", "later", b"L", eta=now + 60)
    time.sleep(max(0.0, now + 0.15 - time.time()))
    assert [t.task_id for t in engine.tasks("q", "waiting")] == ["new", "due1", "due2"]
    assert [t.task_id for t in engine.tasks("q", "waiting", limit=2)] == ["new", "due1"]
    assert [t.task_id for t in engine.tasks("q", "delayed")] == ["later"]
    info = engine.find("due1", "q")
    assert (info.state, info.payload, info.eta) == ("waiting", b"1", pytest.approx(now + 0.05))
    assert engine.counts()["q"] == {"waiting": 3, "delayed": 1, "running": 0, "dead": 0}
    assert engine.purge("q", "delayed") == 1
    assert engine.purge("q", "waiting") == 3
    assert engine.counts()["q"] == {"waiting": 0, "delayed": 0, "running": 0, "dead": 0}
    assert engine.claim(["q"], "w1") == []


def test_extend_resets_the_idle_time(engine):
    engine.enqueue("q", "a", b"A")
    claims = engine.claim(["q"], "w1")
    for _ in range(3):
        time.sleep(0.2)
        assert engine.extend(claims) == []
    assert engine.claim(["q"], "w2") == []  # 0.6 s after the claim, 0.2 after the extend
    assert engine.tasks("q", "running")[0].deliveries == 1


def test_a_waiting_claim_wakes_when_a_delayed_task_comes_due(engine):
    engine.enqueue("q", "a", b"A", eta=time.time() + 0.3)
    started = time.monotonic()
    (claim,) = engine.claim(["q"], "w1", wait=3)
    assert claim.task_id == "a"
    assert time.monotonic() - started < 0.3 + 2 * MAINTENANCE_INTERVAL


def test_a_delayed_task_enqueued_elsewhere_is_promoted_within_the_interval(redis_url, app_name):
    worker, producer = open_engine(redis_url, app_name), open_engine(redis_url, app_name)
    assert worker.claim(["q"], "w1") == []
    producer.enqueue("q", "a", b"A", eta=time.time() + 0.2)
    started = time.monotonic()
    assert [c.task_id for c in worker.claim(["q"], "w1", wait=3)] == ["a"]
    assert time.monotonic() - started < 0.2 + 2 * MAINTENANCE_INTERVAL + 0.5
    worker.close()
    producer.close()


def test_named_tasks_race_once_and_the_name_frees_after_name_ttl(redis_url, app_name):
    engine = open_engine(redis_url, app_name, name_ttl=0.3)
    outcomes = []

    def enqueue(i: int) -> None:
        try:
            engine.enqueue("q", f"t{i}", b"", name="report", eta=time.time() + 60 * (i % 2))
            outcomes.append(i)
        except TaskAlreadyExists:
            pass

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 1
    time.sleep(0.35)
    engine.enqueue("q", "again", b"", name="report")
    engine.close()


def test_a_malformed_entry_is_buried_not_handed_out_again_and_again(engine, client, app_name):
    stream = f"scalekit:t:{{{app_name}:q}}:stream"
    engine.enqueue("q", "before", b"B")
    client.xadd(stream, {"junk": "1"})
    engine.enqueue("q", "after", b"A")
    claims = engine.claim(["q"], "w1", count=5)
    assert [c.task_id for c in claims] == ["before", "after"]
    (dead,) = engine.tasks("q", "dead")
    assert "CorruptData" in dead.error and stream in dead.error
    time.sleep(0.35)
    assert [c.task_id for c in engine.claim(["q"], "w2", count=5)] == ["before", "after"]


def test_a_key_of_the_wrong_type_is_corrupt_data_naming_it(engine, client, app_name):
    stream = f"scalekit:t:{{{app_name}:q}}:stream"
    client.set(stream, "not a stream")
    with pytest.raises(CorruptData, match=stream.replace("{", r"\{").replace("}", r"\}")):
        engine.enqueue("q", "a", b"A")
    with pytest.raises(CorruptData, match="q"):
        engine.counts()


def test_dead_letters_newest_first_revive_and_purge(engine):
    for task_id in "abc":
        engine.enqueue("q", task_id, task_id.encode(), name=f"n{task_id}")
    for claim in engine.claim(["q"], "w1", count=3):
        assert engine.bury(claim, claim.payload + b"!", f"{claim.task_id} failed")
        time.sleep(0.002)
    dead = engine.tasks("q", "dead")
    assert [(d.task_id, d.payload, d.name, d.error) for d in dead] == [
        ("c", b"c!", "nc", "c failed"), ("b", b"b!", "nb", "b failed"),
        ("a", b"a!", "na", "a failed"),
    ]  # fmt: skip
    assert engine.revive("q", "b", b"fixed") is True
    assert engine.revive("q", "b") is False
    info = engine.find("b")
    assert (info.state, info.payload, info.name, info.deliveries) == ("waiting", b"fixed", "nb", 0)
    assert engine.purge("q", "dead") == 2
    assert engine.counts()["q"] == {"waiting": 1, "delayed": 0, "running": 0, "dead": 0}
    with pytest.raises(TaskAlreadyExists):  # a purge leaves names taken
        engine.enqueue("q", "a2", b"", name="na")


def test_options_from_the_url_and_keywords(redis_url, app_name):
    engine = open_engine(redis_url + "?visibility_timeout=45s&name_ttl=2d&socket_timeout=0.5")
    assert (engine.visibility_timeout, engine.name_ttl) == (45, 2 * 86400)
    assert open_engine(redis_url, visibility_timeout=5).visibility_timeout == 5
    with pytest.raises(ConfigError, match="unknown option"):
        open_engine(redis_url, poll=1)
    with pytest.raises(ConfigError, match="visibility_timeout"):
        open_engine(redis_url, visibility_timeout=0)


def test_leases_elect_one_holder(engine):
    assert engine.try_lease("scheduler", "a", 0.3)
    assert not engine.try_lease("scheduler", "b", 0.3)
    assert engine.try_lease("scheduler", "a", 0.3)  # renewed
    engine.release_lease("scheduler", "b")  # not b's: kept
    assert not engine.try_lease("scheduler", "b", 0.3)
    engine.release_lease("scheduler", "a")
    assert engine.try_lease("scheduler", "b", 0.3)


def test_unix_socket(redis_server, app_name):
    engine = open_engine(redis_server.unix_url, app_name)
    engine.enqueue("q", "a", b"A", eta=time.time() - 1)
    (claim,) = engine.claim(["q"], "w1")
    engine.ack(claim)
    assert engine.counts() == {"q": {"waiting": 0, "delayed": 0, "running": 0, "dead": 0}}
    engine.close()


def test_aof_restart_loses_no_acknowledged_enqueue_and_a_down_redis_comes_back(app_name):
    with AofRedisServer().running() as server:
        url = server.url.replace("redis://", "redis://:sekret@")
        engine = open_engine(server.url, app_name, visibility_timeout=0.3)
        masked = open_engine(url, app_name, socket_connect_timeout=0.2)
        for i in range(50):
            engine.enqueue("q", f"t{i}", b"x", eta=time.time() + 60 * (i % 2))
        (running,) = engine.claim(["q"], "w1")
        server.crash()
        with pytest.raises(StoreUnavailable) as failure:
            masked.enqueue("q", "lost", b"x")
        assert "sekret" not in str(failure.value) and str(server.port) in str(failure.value)
        with pytest.raises(StoreUnavailable):
            engine.claim(["q"], "w1", wait=0.1)
        server.come_back()
        assert engine.counts() == {"q": {"waiting": 24, "delayed": 25, "running": 1, "dead": 0}}
        time.sleep(0.35)
        claims = engine.claim(["q"], "w2", count=100)
        assert len(claims) == 25 and running.receipt in {c.receipt for c in claims}
        engine.close()
        masked.close()
    assert not os.path.exists(server.workdir)


def test_a_claim_over_queues_filled_at_once_stays_within_count(engine, client, app_name):
    """Entries arriving in two queues together can all come back from one blocking read;
    those beyond ``count`` are given back, and handed out later, once, as first deliveries."""
    total = 150

    def produce() -> None:
        for i in range(total):
            pipe = client.pipeline(transaction=False)
            for queue in "ab":
                pipe.xadd(
                    f"scalekit:t:{{{app_name}:{queue}}}:stream", {"i": f"{queue}{i}", "p": b""}
                )
            pipe.execute()
            time.sleep(0.0005)

    producer = threading.Thread(target=produce)
    producer.start()
    got, deadline = [], time.monotonic() + 10
    while len(got) < 2 * total and time.monotonic() < deadline:
        claims = engine.claim(["a", "b"], "w1", wait=0.5)
        assert len(claims) <= 1
        for claim in claims:
            got.append((claim.task_id, claim.deliveries))
            engine.ack(claim)
    producer.join()
    assert sorted(got) == sorted((f"{q}{i}", 1) for q in "ab" for i in range(total))
