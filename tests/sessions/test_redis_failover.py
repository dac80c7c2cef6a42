"""Sessions through a failover under load, behind Sentinels and on a Cluster.

A primary is killed (SIGKILL) while threads save sessions (each its own keys), increment
counter sessions by compare-and-set, and read through the client cache. Writes succeed again
within 5 s; with ``min_replicas=1`` no acknowledged save and no compare-and-set update is
lost; no cached read is older than the last acknowledged write once the failover is done;
through SessionMiddleware every response is a page (200, or the policy's 503), never a
traceback. The counts and the recovery time are printed (``pytest -s``).

Each topology is a server group of this module's own: killing its primary disturbs no other
test.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from scalekit import sessions
from scalekit.core.errors import StoreUnavailable
from scalekit.sessions.middleware import failure_page
from scalekit.sessions.stores import ANY, SessionStore, open_store
from scalekit.testing import fresh_app_name
from scalekit.testing.sessions import SID
from tests.servers import RedisCluster, RedisSentinelGroup
from tests.wsgi import Client, Response

SECRET = "failover-secret-0123456789abcdef-0123"


class QuickCluster(RedisCluster):
    """A cluster whose nodes take a silent peer for failed after 1 s, as the Sentinels do
    (``down-after-milliseconds 1000``): with the default 2 s, writes wait about 4.5 s."""

    def __init__(self) -> None:
        super().__init__()
        for node in self.nodes:
            node.node_timeout_ms = 1000


TOPOLOGIES = {"sentinel": RedisSentinelGroup, "cluster": QuickCluster}
THREADS = 6  # per workload
RECOVERY_BOUND = 5.0  # seconds: the "writes succeed again within 5 s"
#: Seconds the group may take to settle after its failover: on a loaded machine a Sentinel
#: may miss the new primary's first pings and fail over once more, and the primary left
#: over is made a replica again some 8 s later (a write with min_replicas waits for that).
SETTLE = 15.0


@pytest.fixture(scope="module", params=sorted(TOPOLOGIES))
def group(request):
    with TOPOLOGIES[request.param]().running() as running:
        yield running


class Load:
    """Threads calling ``step(thread, n)`` until :meth:`stop`: when each call succeeded
    (returned true) and failed (raised :class:`StoreUnavailable`), and what else a call
    raised (that thread stops: a traceback a client would see)."""

    def __init__(self, step: Callable[[int, int], bool], threads: int = THREADS):
        self.step, self.oks, self.failures = step, [], []
        self.first_error = ""
        self.crashes: list[BaseException] = []
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _loop(self, index: int) -> None:
        n = 0
        while not self._stopped.is_set():
            try:
                if self.step(index, n):
                    self.oks.append(time.monotonic())
            except StoreUnavailable as exc:
                self.failures.append(time.monotonic())
                self.first_error = self.first_error or str(exc)
                time.sleep(0.01)
            except BaseException as exc:  # noqa: BLE001 - kept for the test to show
                self.crashes.append(exc)
                return
            n += 1

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join()

    def recovery(self, killed_at: float) -> float:
        """Seconds from the kill until the first success after the last failure."""
        if not self.failures:
            return 0.0
        last = max(self.failures)
        return min((ok for ok in self.oks if ok > last), default=math.inf) - killed_at


def settled(attempt: Callable[[], bool]) -> bool:
    """Whether ``attempt()`` returns true (without StoreUnavailable) within :data:`SETTLE`
    seconds of trying again."""
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        with contextlib.suppress(StoreUnavailable):
            if attempt():
                return True
        time.sleep(0.1)
    return False


def primary_killed(group, key: str):
    """The primary that holds ``key`` killed for the body (behind Sentinels, the primary)."""
    return group.primary_killed(key) if isinstance(group, RedisCluster) else group.primary_killed()


def key_of(store: SessionStore, sid: str) -> str:
    return store.layout.prefix(sid) + sid


class Failover:
    """One app's sessions on ``url`` under every workload at once, through one kill: of the
    primary of the bucket that holds the counters and the sequences (:attr:`key`)."""

    def __init__(self, url: str, stack: contextlib.ExitStack):
        app_name = fresh_app_name()

        def store(**options) -> SessionStore:
            return stack.enter_context(
                contextlib.closing(open_store(url, app_name=app_name, **options))
            )

        self.plain, self.replicated = store(), store(min_replicas=1)
        self.cached = store(client_cache=True, client_cache_max_age=3600)
        ids = [f"Counter{n:017d}" for n in range(1000)]
        bucket = [
            sid for sid in ids if self.plain.layout.prefix(sid) == self.plain.layout.prefix(ids[0])
        ]
        self.counter_ids, self.sequence_ids = bucket[:3], bucket[3:6]
        self.key = key_of(self.plain, bucket[0])
        self.acked: dict[int, list[str]] = {0: [], 1: []}  # min_replicas: saved session ids
        self.increments = [0] * THREADS  # acknowledged, per thread
        self.confirmed = [0] * THREADS  # unacknowledged, found applied on the next load
        self.pending: list[str | None] = [None] * THREADS
        self.last_acked = dict.fromkeys(self.sequence_ids, 0)
        self.reads_after, self.stale = [], []
        self.lost: dict[int, list[str]] = {}  # min_replicas: the acknowledged saves lost
        self.failed_over = threading.Event()
        for sid in self.counter_ids:
            assert self.replicated.save(sid, json.dumps({"n": 0, "log": []}).encode(), 600, None)
        for sid in self.sequence_ids:
            assert self.replicated.save(sid, b"0", 600, None)
        self.loads = {
            "saves": Load(lambda i, n: self._save(self.plain, 0, i, n)),
            "replicated saves": Load(lambda i, n: self._save(self.replicated, 1, i, n)),
            "increments": Load(self._increment),
            "sequences": Load(self._sequence, threads=len(self.sequence_ids)),
            "cached reads": Load(self._read, threads=2),
        }

    def _save(self, store: SessionStore, replicas: int, index: int, n: int) -> bool:
        sid = f"Save{replicas}x{index:02d}x{n:015d}"
        saved = store.save(sid, sid.encode(), 600, None)
        if saved:
            self.acked[replicas].append(sid)
        return saved

    def _increment(self, index: int, n: int) -> bool:
        """A compare-and-set increment of a counter, logging its token in the session: an
        attempt that raised or lost the reply is counted when the next load shows it."""
        sid = self.counter_ids[index % len(self.counter_ids)]
        record = self.replicated.load(sid)
        state = json.loads(record.data)
        if self.pending[index] in state["log"]:
            self.confirmed[index] += 1
        self.pending[index] = token = f"{index}.{n}"
        new = {"n": state["n"] + 1, "log": [*state["log"][-63:], token]}
        if self.replicated.save(sid, json.dumps(new).encode(), 600, record.version):
            self.increments[index] += 1
            self.pending[index] = None
            return True
        return False

    def _sequence(self, index: int, n: int) -> bool:
        """Sequence session ``index`` holds ever higher numbers (one writer each)."""
        sid = self.sequence_ids[index]
        saved = self.replicated.save(sid, str(n + 1).encode(), 600, ANY)
        if saved:
            self.last_acked[sid] = n + 1
        return saved

    def _read(self, index: int, n: int) -> bool:
        for sid in self.sequence_ids:
            after = self.failed_over.is_set()
            floor = self.last_acked[sid]
            number = int(self.cached.load(sid).data)
            if after:
                self.reads_after.append(number)
                if number < floor:
                    self.stale.append((sid, number, floor))
        return True

    def stop(self) -> None:
        """Stop every workload, and find the acknowledged saves that were lost."""
        for load in self.loads.values():
            load.stop()
            assert load.crashes == []
        for replicas, acked in self.acked.items():
            self.lost[replicas] = [
                sid
                for sid in acked
                if (record := self.plain.load(sid)) is None or record.data != sid.encode()
            ]

    def counters(self) -> tuple[int, int]:
        """The counters' sum, and the increments known to have been applied."""
        total = sum(json.loads(self.plain.load(sid).data)["n"] for sid in self.counter_ids)
        return total, sum(self.increments) + sum(self.confirmed)


@pytest.fixture(scope="module")
def failover(group) -> Iterator[tuple[Failover, float]]:
    """Every workload running, the primary killed, the group whole again, one more second
    of load: the workloads and when the kill was."""
    with contextlib.ExitStack() as stack:
        run = Failover(group.url, stack)
        try:
            time.sleep(0.5)
            killed_at = time.monotonic()
            with primary_killed(group, run.key):
                pass  # after the body: promoted, the killed node back as a replica
            assert settled(lambda: run.replicated.touch(run.counter_ids[0], 600) is None)
            run.failed_over.set()
            time.sleep(1.0)
        finally:
            run.stop()
        report(type(group).__name__, run, killed_at)
        yield run, killed_at


def report(topology: str, run: Failover, killed_at: float) -> None:
    loads = run.loads
    total, applied = run.counters()
    print(f"\n[{topology} failover, {THREADS} threads a workload]")
    for replicas, name in ((0, "saves"), (1, "replicated saves")):
        load = loads[name]
        print(
            f"  min_replicas={replicas}: saves ok {len(load.oks)} / failed {len(load.failures)}"
            f" / lost {len(run.lost[replicas])}; writes again after"
            f" {load.recovery(killed_at):.2f} s"
        )
    print(
        f"  compare-and-set increments: acknowledged {sum(run.increments)}, applied without"
        f" a reply {sum(run.confirmed)}, failed {len(loads['increments'].failures)},"
        f" counted {total}, lost {applied - total}"
    )
    print(f"  cached reads after the failover {len(run.reads_after)}, stale {len(run.stale)}")


def test_min_replicas_unmet_is_store_unavailable_and_the_write_on_the_primary(redis_url, app_name):
    url = f"{redis_url}?min_replicas=1&replica_timeout=0.05"  # a Redis without replicas
    with contextlib.closing(open_store(url, app_name=app_name)) as store:
        with pytest.raises(
            StoreUnavailable, match=r"save a session on 1 replica\(s\) within 0.05s"
        ):
            store.save(SID, b"on the primary only", 60, None)
        assert store.load(SID).data == b"on the primary only"
        with pytest.raises(StoreUnavailable, match="min_replicas"):
            store.touch(SID, 60)


def test_writes_succeed_again_within_5_seconds(failover):
    run, killed_at = failover
    saves = run.loads["saves"]
    assert saves.failures, "the kill should have failed some saves"
    assert "session store redis+" in saves.first_error  # the masked URL, named
    assert saves.recovery(killed_at) < RECOVERY_BOUND
    assert max(saves.oks) > max(saves.failures)


def test_no_acknowledged_save_is_lost_with_min_replicas(failover):
    run, _ = failover
    assert run.loads["replicated saves"].failures and run.acked[1]
    assert run.lost[1] == []


def test_no_compare_and_set_update_is_lost(failover):
    run, _ = failover
    total, applied = run.counters()
    assert run.loads["increments"].failures and sum(run.increments) > 0
    assert total == applied


def test_no_cached_read_is_stale_after_the_failover(failover):
    run, _ = failover
    assert run.loads["sequences"].failures and run.reads_after
    assert run.stale == []


def counter_app(environ, start_response):
    """One more in the session's counter: answers the counter and the session's id."""
    session = environ[sessions.ENVIRON_KEY]
    session["n"] = (session.n or 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{session.n} {session.session_id}".encode()]


def reloaded(browser: Client) -> Response:
    """The first 200 a browser gets by reloading a 503 while the group settles."""
    answers = []
    settled(lambda: answers.append(browser.request("/")) or answers[-1].status == 200)
    return answers[-1]


def test_through_the_middleware_no_traceback_reaches_a_client(group):
    """Browsers incrementing a counter in their sessions while the primary is killed: each
    gets a 200 or the policy's 503, and the numbers its 200s show only go up."""
    store = open_store(group.url, app_name=fresh_app_name(), min_replicas=1)
    app = sessions.SessionMiddleware(counter_app, store, SECRET, app_name=store.app_name)
    browsers = [Client(app) for _ in range(THREADS)]
    seen: list[list[tuple[int, bytes]]] = [[] for _ in browsers]

    def browse(index: int, n: int) -> bool:
        response = browsers[index].request("/")  # what it raises would reach the client
        seen[index].append((response.status, response.body))
        if response.status != 200:
            time.sleep(0.01)
        return response.status == 200

    with contextlib.closing(store):
        for index in range(len(browsers)):
            assert browse(index, 0) and browse(index, 1)  # each has its stored session
        sid = seen[0][-1][1].split()[1].decode()
        load = Load(browse)
        try:
            time.sleep(0.3)
            with primary_killed(group, key_of(store, sid)):
                pass
            time.sleep(0.5)
        finally:
            load.stop()
        assert load.crashes == []
        pages = {(status, body) for answers in seen for status, body in answers if status != 200}
        assert pages == {(503, failure_page(app.engine, StoreUnavailable()).body)}
        for index, answers in enumerate(seen):
            numbers = [int(body.split()[0]) for status, body in answers if status == 200]
            assert numbers == sorted(set(numbers)), "an acknowledged increment was lost"
            assert int(reloaded(browsers[index]).body.split()[0]) > numbers[-1]
        errors = sum(status != 200 for answers in seen for status, _ in answers)
        print(f"\n  middleware: {sum(map(len, seen))} responses, {errors} were 503, no traceback")
