"""The task engine contract as a test suite any engine runs (scalekit's own run it on every
engine in ``tests/tasks/test_conformance.py``).

Subclass :class:`TaskEngineSuite` in a test module (a class named ``Test...``) and give the
fixture ``make_engine``: a function ``make_engine(app_name=None, **options)`` that opens a
:class:`~scalekit.tasks.engines.Engine` for ``app_name`` (a fresh one when None) as your
users open it, ``visibility_timeout`` and ``name_ttl`` among the options (an unknown one
a :class:`~scalekit.core.errors.ConfigError` naming it), and closes what it opened after
the test. An engine whose tasks other processes see (a server, a file)
subclasses :class:`SharedTaskEngineSuite`. Payloads are opaque bytes here: the suite needs
no task codec. Imports pytest: for tests only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable

import pytest

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.tasks.engines.base import DEAD, DELAYED, RUNNING, STATES, WAITING, Engine
from scalekit.tasks.errors import TaskAlreadyExists
from scalekit.testing import fresh_app_name, run_in_children, run_threads

__all__ = ["LEASE", "Q", "SharedTaskEngineSuite", "TaskEngineSuite"]

#: The queue most tests use.
Q = "default"
#: The short ``visibility_timeout`` of the lease tests, in seconds.
LEASE = 0.5
#: How long a test sleeps for such a lease to be over (0.2 s for the engine to notice).
PAST_LEASE = LEASE + 0.2

MakeEngine = Callable[..., Engine]


def ids(items: Iterable) -> list[str]:
    """The task ids of claims or task infos, in their order."""
    return [item.task_id for item in items]


def fill(engine: Engine, queue: str, count: int, prefix: str = "t") -> list[str]:
    """Enqueue ``count`` tasks (payload: their id) in ``queue``; their ids in order."""
    task_ids = [f"{prefix}{index:03d}" for index in range(count)]
    for task_id in task_ids:
        engine.enqueue(queue, task_id, task_id.encode())
    return task_ids


def zeros(**numbers: int) -> dict[str, int]:
    """The counts of one queue: ``numbers`` by state, 0 for the others."""
    return {state: numbers.get(state, 0) for state in STATES}


def timed(call: Callable[[], object]) -> tuple[object, float]:
    """What ``call()`` returned, and how many seconds it took."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


class TaskEngineSuite:
    """What every engine does: opaque payloads, FIFO queues, delays, blocking claims,
    leases that expire and are extended, ack/retry/bury/revive, the operations views
    (find, tasks, counts, purge), named tasks, apps apart, scheduler leases, no task lost or
    handed out twice under concurrency, forks and close."""

    @pytest.fixture
    def app_name(self) -> str:
        return fresh_app_name()

    @pytest.fixture
    def engine_for(self, make_engine: MakeEngine, app_name: str) -> MakeEngine:
        """``engine_for(app_name=<the test's app>, **options)``: an engine of ``make_engine``
        used once (connected, its tables made), so a test's short delays start after that."""

        def open_used(app_name: str = app_name, **options) -> Engine:
            engine = make_engine(app_name, **options)
            engine.counts()
            return engine

        return open_used

    @pytest.fixture
    def engine(self, engine_for: MakeEngine) -> Engine:
        return engine_for()

    @pytest.fixture
    def workers(self, engine_for: MakeEngine) -> tuple[Engine, Engine]:
        """Two engines of one app with leases of :data:`LEASE` seconds: two workers."""
        return engine_for(visibility_timeout=LEASE), engine_for(visibility_timeout=LEASE)

    # -- opening ---------------------------------------------------------------------
    def test_is_an_engine_with_its_options(self, make_engine):
        engine = make_engine(visibility_timeout=LEASE, name_ttl=2)
        assert isinstance(engine, Engine)
        assert (engine.visibility_timeout, engine.name_ttl) == (LEASE, 2)

    def test_unknown_options_are_config_errors(self, make_engine):
        with pytest.raises(ConfigError, match="no_such_option"):
            make_engine(no_such_option=1)

    # -- payloads and order ------------------------------------------------------------
    def test_payloads_round_trip_byte_for_byte(self, engine):
        binary = bytes(range(256)) + b"\xff\xfe\x00"  # not UTF-8
        payloads = {"empty": b"", "binary": binary, "big": os.urandom(1 << 20)}
        for task_id, payload in payloads.items():
            engine.enqueue(Q, task_id, payload)
            assert engine.find(task_id).payload == payload
        claims = engine.claim([Q], "w1", count=3)
        assert ids(claims) == list(payloads)
        for claim in claims:
            assert (claim.queue, claim.payload, claim.deliveries) == (Q, payloads[claim.task_id], 1)
            assert isinstance(claim.receipt, str) and claim.receipt

    def test_a_queue_is_first_in_first_out(self, engine):
        task_ids = fill(engine, Q, 100)
        claimed = []
        while claims := engine.claim([Q], "w1", count=30):
            assert len(claims) == min(30, 100 - len(claimed))
            assert [claim.payload for claim in claims] == [c.task_id.encode() for c in claims]
            claimed += ids(claims)
        assert claimed == task_ids

    def test_count_limits_a_claim(self, engine):
        fill(engine, Q, 5)
        assert len(engine.claim([Q], "w1", count=3)) == 3
        assert len(engine.claim([Q], "w1", count=10)) == 2
        assert engine.claim([Q], "w1", count=10) == []

    def test_earlier_queues_are_served_first(self, engine):
        fill(engine, "low", 2, prefix="low")  # enqueued first, yet served last
        fill(engine, "high", 2, prefix="high")
        assert ids(engine.claim(["high", "low"], "w1", count=3)) == ["high000", "high001", "low000"]
        assert ids(engine.claim(["high", "low"], "w1", count=3)) == ["low001"]
        fill(engine, "high", 1, prefix="again")
        fill(engine, "low", 1, prefix="later")
        assert ids(engine.claim(["low", "high"], "w1")) == ["later000"]

    def test_a_claim_of_other_queues_gets_nothing(self, engine):
        fill(engine, Q, 1)
        assert engine.claim(["other"], "w1") == []
        assert ids(engine.claim([Q], "w1")) == ["t000"]

    # -- eta ---------------------------------------------------------------------------
    def test_an_eta_in_the_past_is_waiting(self, engine):
        eta = time.time() - 60
        engine.enqueue(Q, "t1", b"p", eta=eta)
        info = engine.find("t1")
        assert info.state == WAITING
        assert info.eta == pytest.approx(eta, abs=0.01)
        assert ids(engine.claim([Q], "w1")) == ["t1"]

    def test_no_eta_shows_as_none(self, engine):
        engine.enqueue(Q, "t1", b"p")
        info = engine.find("t1")
        assert (info.queue, info.task_id, info.state, info.eta) == (Q, "t1", WAITING, None)
        assert (info.payload, info.name, info.deliveries, info.error) == (b"p", None, 0, None)

    def test_a_future_eta_is_delayed_until_due(self, engine):
        eta = time.time() + 0.3
        engine.enqueue(Q, "t1", b"p", eta=eta)
        info = engine.find("t1")
        assert (info.state, info.eta) == (DELAYED, pytest.approx(eta, abs=0.01))
        assert engine.claim([Q], "w1") == []
        time.sleep(max(0.0, eta - time.time()) + 0.05)
        [claim] = engine.claim([Q], "w1")
        assert (claim.task_id, claim.payload, claim.deliveries) == ("t1", b"p", 1)
        assert engine.find("t1").state == RUNNING

    def test_a_due_task_shows_as_waiting_before_any_claim(self, engine):
        eta = time.time() + 0.2  # no worker claims: the views alone say it is due
        engine.enqueue(Q, "t1", b"p", eta=eta)
        engine.enqueue(Q, "t2", b"p", eta=eta + 60)
        time.sleep(max(0.0, eta - time.time()) + 0.05)
        assert engine.find("t1").state == WAITING
        assert ids(engine.tasks(Q, WAITING)) == ["t1"]
        assert ids(engine.tasks(Q, DELAYED)) == ["t2"]
        assert engine.counts()[Q] == zeros(waiting=1, delayed=1)

    def test_delayed_tasks_run_in_eta_order(self, engine):
        now = time.time()
        for task_id, delay in (("late", 0.4), ("early", 0.2), ("middle", 0.3)):
            engine.enqueue(Q, task_id, task_id.encode(), eta=now + delay)
        assert ids(engine.tasks(Q, DELAYED)) == ["early", "middle", "late"]
        time.sleep(max(0.0, now + 0.45 - time.time()))
        assert ids(engine.claim([Q], "w1", count=5)) == ["early", "middle", "late"]

    def test_due_tasks_become_ready_once_however_many_claim(self, engine_for):
        engines = [engine_for() for _ in range(2)]
        eta = time.time() + 0.3
        task_ids = [f"t{index:02d}" for index in range(20)]
        for task_id in task_ids:
            engines[0].enqueue(Q, task_id, b"p", eta=eta)
        time.sleep(max(0.0, eta - time.time()) + 0.05)
        claimed: list[str] = []
        start = threading.Barrier(4, timeout=10)

        def work(index: int) -> None:
            start.wait()
            claimed.extend(ids(engines[index % 2].claim([Q], f"w{index}", count=20)))

        run_threads(4, work)
        assert sorted(claimed) == task_ids
        assert engines[0].counts()[Q] == zeros(running=20)

    # -- blocking claims -----------------------------------------------------------------
    def test_a_waiting_claim_returns_when_a_task_arrives(self, engine):
        timer = threading.Timer(0.2, engine.enqueue, (Q, "t1", b"p"))
        timer.start()
        claims, took = timed(lambda: engine.claim(["other", Q], "w1", count=5, wait=5))
        timer.join()
        assert ids(claims) == ["t1"]
        assert 0.15 < took < 1.5

    def test_one_arriving_task_goes_to_one_waiting_claim(self, engine_for):
        engines = [engine_for() for _ in range(2)]
        got: list[list[str]] = []

        def work(index: int) -> None:
            got.append(ids(engines[index].claim([Q], f"w{index}", wait=0.6)))

        timer = threading.Timer(0.2, engines[0].enqueue, (Q, "t1", b"p"))
        timer.start()
        run_threads(2, work)
        timer.join()
        assert sorted(got) == [[], ["t1"]]

    def test_a_waiting_claim_holds_up_no_other_call(self, engine):
        fill(engine, Q, 2)
        got: list[list[str]] = []
        waiting = threading.Thread(
            target=lambda: got.append(ids(engine.claim(["idle"], "w1", wait=5)))
        )
        waiting.start()
        time.sleep(0.1)
        start = time.monotonic()
        [claim] = engine.claim([Q], "w2")
        engine.ack(claim)
        assert engine.find("t001").state == WAITING
        assert time.monotonic() - start < 0.5
        engine.enqueue("idle", "t2", b"p")
        waiting.join(5)
        assert got == [["t2"]]

    def test_a_waiting_claim_ignores_other_apps(self, engine_for):
        mine, theirs = engine_for(), engine_for(fresh_app_name())
        timer = threading.Timer(0.1, theirs.enqueue, (Q, "t1", b"p"))
        timer.start()
        claims, took = timed(lambda: mine.claim([Q], "w1", wait=0.6))
        timer.join()
        assert claims == [] and took > 0.55
        assert ids(theirs.claim([Q], "w1")) == ["t1"]

    def test_a_waiting_claim_wakes_when_a_delayed_task_comes_due(self, engine):
        eta = time.time() + 0.3
        engine.enqueue(Q, "t1", b"p", eta=eta)
        claims, took = timed(lambda: engine.claim([Q], "w1", wait=5))
        assert ids(claims) == ["t1"]
        assert time.time() >= eta and took < 1.5

    def test_a_waiting_claim_wakes_for_a_task_delayed_meanwhile(self, engine_for):
        waiting, other = engine_for(), engine_for()  # other: another process
        eta = time.time() + 0.5
        timer = threading.Timer(0.1, other.enqueue, (Q, "t1", b"p"), {"eta": eta})
        timer.start()
        claims, took = timed(lambda: waiting.claim([Q], "w1", wait=5))
        timer.join()
        assert ids(claims) == ["t1"]
        assert time.time() >= eta and took < 1.5

    def test_a_waiting_claim_gives_up_after_wait(self, engine):
        claims, took = timed(lambda: engine.claim([Q], "w1", wait=0.5))
        assert claims == []
        assert 0.45 < took < 1.5
        claims, took = timed(lambda: engine.claim([Q], "w1"))
        assert claims == []
        assert took < 0.4

    # -- leases --------------------------------------------------------------------------
    def test_an_expired_lease_hands_the_task_out_again(self, workers):
        first, second = workers
        first.enqueue(Q, "t1", b"p")
        [lost] = first.claim([Q], "w1")
        assert second.claim([Q], "w2") == []  # within its lease
        time.sleep(PAST_LEASE)
        [claim] = second.claim([Q], "w2")
        assert (claim.task_id, claim.payload, claim.deliveries) == ("t1", b"p", 2)
        assert first.find("t1").deliveries == 2
        assert first.extend([lost]) == [lost]
        assert second.extend([claim]) == []
        time.sleep(PAST_LEASE)
        [third] = first.claim([Q], "w1")  # the first consumer again, under a new lease
        assert (third.task_id, third.deliveries) == ("t1", 3)
        assert first.extend([lost, claim, third]) == [lost, claim]

    def test_an_extended_lease_is_kept(self, workers):
        first, second = workers
        first.enqueue(Q, "t1", b"p")
        [claim] = first.claim([Q], "w1")
        deadline = time.monotonic() + 2 * LEASE
        while time.monotonic() < deadline:
            time.sleep(LEASE / 3)
            assert first.extend([claim]) == []
            assert second.claim([Q], "w2") == []
        assert first.find("t1").state == RUNNING
        first.ack(claim)
        assert first.find("t1") is None

    def test_extend_returns_only_the_lost_claims(self, engine_for):
        first, second = (engine_for(visibility_timeout=1.0) for _ in range(2))
        fill(first, Q, 3)
        [lost] = first.claim([Q], "w1")
        time.sleep(0.6)
        kept, acked = first.claim([Q], "w1", count=2)
        first.ack(acked)
        time.sleep(0.6)  # lost's lease is over, kept's is not
        assert ids(second.claim([Q], "w2", count=3)) == [lost.task_id]
        assert first.extend([kept, acked, lost]) == [acked, lost]
        assert first.find(kept.task_id).state == RUNNING

    def test_ack_deletes(self, engine):
        fill(engine, Q, 2)
        [claim] = engine.claim([Q], "w1")
        assert engine.counts()[Q] == zeros(waiting=1, running=1)
        engine.ack(claim)
        assert engine.find(claim.task_id) is None
        assert engine.counts()[Q] == zeros(waiting=1)
        assert engine.extend([claim]) == [claim]
        assert ids(engine.claim([Q], "w1")) == ["t001"]

    def test_ack_after_a_lost_lease_still_deletes(self, workers):
        first, second = workers
        first.enqueue(Q, "t1", b"p")
        [lost] = first.claim([Q], "w1")
        time.sleep(PAST_LEASE)
        [claim] = second.claim([Q], "w2")
        first.ack(lost)  # it ran
        assert first.find("t1") is None
        assert second.extend([claim]) == [claim]
        second.ack(claim)  # the second run ends too
        assert second.counts()[Q] == zeros()

    def test_ack_after_a_lost_lease_deletes_a_task_retried_meanwhile(self, workers):
        first, second = workers
        first.enqueue(Q, "t1", b"p")
        [lost] = first.claim([Q], "w1")
        time.sleep(PAST_LEASE)
        [claim] = second.claim([Q], "w2")
        assert second.retry(claim, b"second", time.time() + 60) is True  # the rerun failed
        first.ack(lost)  # the first run succeeded after all: no third run
        assert first.find("t1") is None
        assert second.counts()[Q] == zeros()

    def test_an_expired_lease_nobody_took_is_extended(self, workers):
        first, second = workers
        first.enqueue(Q, "t1", b"p")
        [claim] = first.claim([Q], "w1")
        time.sleep(PAST_LEASE)  # expired, but neither handed out again nor gone
        assert first.extend([claim]) == []
        assert second.claim([Q], "w2") == []
        first.ack(claim)
        assert first.find("t1") is None

    # -- retry, bury, revive -------------------------------------------------------------
    def test_retry_delays_the_task_with_its_new_payload(self, engine):
        engine.enqueue(Q, "t1", b"first", name="once")
        [claim] = engine.claim([Q], "w1")
        eta = time.time() + 0.3
        assert engine.retry(claim, b"second", eta) is True
        info = engine.find("t1")
        assert (info.state, info.payload, info.name) == (DELAYED, b"second", "once")
        assert info.eta == pytest.approx(eta, abs=0.01)
        assert engine.counts()[Q] == zeros(delayed=1)
        assert engine.extend([claim]) == [claim]  # that run is over
        assert engine.claim([Q], "w1") == []
        time.sleep(max(0.0, eta - time.time()) + 0.05)
        [again] = engine.claim([Q], "w1")
        assert (again.task_id, again.payload, again.deliveries) == ("t1", b"second", 1)

    def test_retry_with_a_past_eta_is_ready_at_once(self, engine):
        engine.enqueue(Q, "t1", b"first")
        [claim] = engine.claim([Q], "w1")
        assert engine.retry(claim, b"second", time.time() - 1) is True
        [again] = engine.claim([Q], "w1")
        assert (again.task_id, again.payload) == ("t1", b"second")

    def test_retry_and_bury_after_a_lost_lease_do_nothing(self, workers):
        first, second = workers
        first.enqueue(Q, "t1", b"first")
        [lost] = first.claim([Q], "w1")
        time.sleep(PAST_LEASE)
        [claim] = second.claim([Q], "w2")
        assert first.retry(lost, b"changed", time.time() + 60) is False
        assert first.bury(lost, b"changed", "boom") is False
        info = first.find("t1")
        assert (info.state, info.payload, info.error) == (RUNNING, b"first", None)
        assert second.extend([claim]) == []  # the other holder's run is untouched
        assert second.retry(claim, b"second", time.time() + 60) is True
        assert first.find("t1").payload == b"second"

    def test_bury_keeps_the_task_dead_with_its_error(self, engine):
        engine.enqueue(Q, "t1", b"first")
        [claim] = engine.claim([Q], "w1")
        assert engine.bury(claim, b"last", "Traceback: boom") is True
        info = engine.find("t1")
        assert (info.state, info.payload, info.error) == (DEAD, b"last", "Traceback: boom")
        assert engine.counts()[Q] == zeros(dead=1)
        assert engine.extend([claim]) == [claim]
        assert engine.claim([Q], "w1") == []

    def test_dead_tasks_are_listed_newest_first(self, engine):
        fill(engine, Q, 3)
        for claim in engine.claim([Q], "w1", count=3):
            assert engine.bury(claim, claim.payload, f"error of {claim.task_id}")
            time.sleep(0.01)
        dead = engine.tasks(Q, DEAD)
        assert ids(dead) == ["t002", "t001", "t000"]
        assert [info.error for info in dead] == [f"error of {task_id}" for task_id in ids(dead)]

    def test_revive_makes_a_dead_task_waiting(self, engine):
        fill(engine, Q, 2)
        for claim in engine.claim([Q], "w1", count=2):
            engine.bury(claim, claim.payload, "boom")
        assert engine.revive(Q, "t000") is True
        assert engine.revive(Q, "t001", b"fixed") is True
        assert [(i.state, i.error) for i in engine.tasks(Q, WAITING)] == [(WAITING, None)] * 2
        claims = engine.claim([Q], "w1", count=2)
        assert sorted((c.task_id, c.payload, c.deliveries) for c in claims) == [
            ("t000", b"t000", 1),
            ("t001", b"fixed", 1),
        ]

    def test_revive_of_a_task_that_is_not_dead_is_false(self, engine):
        fill(engine, Q, 2)
        [claim] = engine.claim([Q], "w1")
        engine.bury(claim, claim.payload, "boom")
        assert engine.revive(Q, "t001") is False  # waiting
        assert engine.revive("other", "t000") is False  # dead, in another queue
        assert engine.revive(Q, "missing") is False
        assert engine.find("t000").state == DEAD
        assert engine.find("t001").state == WAITING

    # -- find, tasks, counts, purge -----------------------------------------------------
    def every_state(self, engine: Engine, queue: str = Q) -> None:
        """Tasks of ``queue`` in every state: d0 dead, r0 running, w0 and w1 waiting,
        l0 (in 60 s) and l1 (in 30 s) delayed."""
        engine.enqueue(queue, f"{queue}-d0", b"d0")
        engine.enqueue(queue, f"{queue}-r0", b"r0")
        dead, _running = engine.claim([queue], "w1", count=2)
        assert engine.bury(dead, dead.payload, "boom")
        fill(engine, queue, 2, prefix=f"{queue}-w")
        engine.enqueue(queue, f"{queue}-l0", b"l0", eta=time.time() + 60)
        engine.enqueue(queue, f"{queue}-l1", b"l1", eta=time.time() + 30)

    def test_find_in_any_queue_or_in_one(self, engine):
        engine.enqueue("a", "t1", b"p", name="n1")
        info = engine.find("t1")
        assert (info.queue, info.task_id, info.name, info.state) == ("a", "t1", "n1", WAITING)
        assert engine.find("t1", "a") == info
        assert engine.find("t1", "b") is None
        assert engine.find("missing") is None
        assert ids(engine.claim(["a"], "w1")) == ["t1"]
        assert (engine.find("t1").state, engine.find("t1").deliveries) == (RUNNING, 1)

    def test_tasks_lists_each_state_in_run_order(self, engine):
        self.every_state(engine)
        self.every_state(engine, "other")
        assert ids(engine.tasks(Q, WAITING)) == ["default-w000", "default-w001"]
        assert ids(engine.tasks(Q, DELAYED)) == ["default-l1", "default-l0"]
        assert ids(engine.tasks(Q, RUNNING)) == ["default-r0"]
        assert ids(engine.tasks(Q, DEAD)) == ["default-d0"]
        for state in STATES:
            assert {info.state for info in engine.tasks(Q, state)} == {state}
        assert ids(engine.tasks(Q, WAITING, limit=1)) == ["default-w000"]
        assert engine.tasks("empty", WAITING) == []

    def test_counts_every_state_of_every_queue(self, engine):
        assert engine.counts() == {}
        self.every_state(engine)
        self.every_state(engine, "other")
        fill(engine, "other", 1, prefix="more")
        assert engine.counts() == {
            Q: zeros(waiting=2, delayed=2, running=1, dead=1),
            "other": zeros(waiting=3, delayed=2, running=1, dead=1),
        }

    def test_purge_one_state_or_all(self, engine):
        self.every_state(engine)
        self.every_state(engine, "other")
        left = {DEAD: 1, DELAYED: 2, RUNNING: 1, WAITING: 2}
        for state in (DEAD, RUNNING, WAITING, DELAYED):
            assert engine.purge(Q, state) == left.pop(state)
            assert engine.counts()[Q] == zeros(**left)
            assert engine.tasks(Q, state) == []
        assert engine.find("default-w000") is None
        assert engine.purge(Q) == 0
        assert engine.counts()["other"] == zeros(waiting=2, delayed=2, running=1, dead=1)
        assert engine.purge("other") == 6
        assert engine.counts() == {Q: zeros(), "other": zeros()}
        fill(engine, Q, 1, prefix="new")  # a purged queue works on
        assert ids(engine.claim([Q], "w1")) == ["new000"]

    def test_tasks_lists_50_unless_told(self, engine):
        fill(engine, Q, 60)
        assert ids(engine.tasks(Q, WAITING)) == [f"t{index:03d}" for index in range(50)]
        assert len(engine.tasks(Q, WAITING, limit=100)) == 60

    def test_a_purged_running_task_stays_gone(self, engine):
        fill(engine, Q, 3)
        retried, buried, acked = engine.claim([Q], "w1", count=3)
        assert engine.purge(Q, RUNNING) == 3
        assert engine.retry(retried, b"again", time.time() - 1) is False
        assert engine.bury(buried, b"again", "boom") is False
        engine.ack(acked)
        assert engine.extend([retried, buried, acked]) == [retried, buried, acked]
        assert engine.counts()[Q] == zeros()
        assert engine.claim([Q], "w1", count=3) == []

    def test_names_stay_taken_after_purge(self, engine):
        engine.enqueue(Q, "t1", b"p", name="once")
        assert engine.purge(Q) == 1
        with pytest.raises(TaskAlreadyExists):
            engine.enqueue(Q, "t2", b"p", name="once")

    # -- named tasks ---------------------------------------------------------------------
    def test_a_name_is_taken_once_per_queue(self, engine, engine_for):
        engine.enqueue(Q, "t1", b"p", name="report")
        with pytest.raises(TaskAlreadyExists):
            engine.enqueue(Q, "t2", b"p", name="report")
        with pytest.raises(TaskAlreadyExists):
            engine.enqueue(Q, "t2", b"p", name="report", eta=time.time() + 60)
        assert engine.find("t2") is None
        engine.enqueue("other", "t3", b"p", name="report")
        engine_for(fresh_app_name()).enqueue(Q, "t4", b"p", name="report")  # another app
        [claim] = engine.claim([Q], "w1")
        engine.ack(claim)
        with pytest.raises(TaskAlreadyExists):  # its task ran, the name is still taken
            engine.enqueue(Q, "t5", b"p", name="report")
        assert engine.counts()[Q] == zeros()

    def test_names_are_any_string(self, engine):
        names = ["user:42 résumé", "{tag}", "a/b?c=d&e", "n" * 200]
        for index, name in enumerate(names):
            engine.enqueue(Q, f"t{index}", b"p", name=name, eta=time.time() + 60 * index)
            with pytest.raises(TaskAlreadyExists):
                engine.enqueue(Q, f"again{index}", b"p", name=name)
        assert [engine.find(f"t{index}").name for index in range(4)] == names
        assert engine.counts()[Q] == zeros(waiting=1, delayed=3)

    def test_a_name_is_free_again_after_name_ttl(self, engine_for):
        engine = engine_for(name_ttl=1)
        engine.enqueue(Q, "t1", b"p", name="nightly")
        taken = time.time()
        with pytest.raises(TaskAlreadyExists):
            engine.enqueue(Q, "t2", b"p", name="nightly")
        time.sleep(max(0.0, taken + 1.1 - time.time()))
        engine.enqueue(Q, "t3", b"p", name="nightly")
        assert engine.find("t3").name == "nightly"

    def test_racing_enqueues_of_one_name_enqueue_it_once(self, engine_for):
        engines = [engine_for() for _ in range(2)]
        outcomes: dict[str, list[str]] = {"enqueued": [], "refused": []}
        start = threading.Barrier(2, timeout=10)

        def race(index: int) -> None:
            for round_ in range(20):
                start.wait()
                try:
                    engines[index].enqueue(Q, f"r{round_}-{index}", b"p", name=f"n{round_}")
                    outcomes["enqueued"].append(f"n{round_}")
                except TaskAlreadyExists:
                    outcomes["refused"].append(f"n{round_}")

        run_threads(2, race)
        names = [f"n{round_}" for round_ in range(20)]
        assert sorted(outcomes["enqueued"]) == sorted(names)
        assert sorted(outcomes["refused"]) == sorted(names)
        assert engines[0].counts()[Q] == zeros(waiting=20)

    # -- apps ----------------------------------------------------------------------------
    def test_apps_are_isolated(self, engine_for):
        mine, theirs = engine_for(), engine_for(fresh_app_name())
        mine.enqueue(Q, "t1", b"mine", name="n")
        theirs.enqueue(Q, "t1", b"theirs", name="n")
        mine.enqueue(Q, "t2", b"mine")
        assert theirs.find("t2") is None
        assert theirs.counts() == {Q: zeros(waiting=1)}
        [claim] = theirs.claim([Q], "w1", count=5)
        assert (claim.task_id, claim.payload) == ("t1", b"theirs")
        assert mine.purge(Q) == 2
        assert theirs.find("t1").state == RUNNING
        assert mine.try_lease("scheduler", "a", 30) is True
        assert theirs.try_lease("scheduler", "b", 30) is True

    # -- scheduler leases ----------------------------------------------------------------
    def test_a_lease_is_exclusive_and_renewable_by_its_holder(self, engine):
        assert engine.try_lease("scheduler", "a", 30) is True
        assert engine.try_lease("scheduler", "b", 30) is False
        assert engine.try_lease("scheduler", "a", 30) is True
        engine.release_lease("scheduler", "b")  # not b's: nothing happens
        assert engine.try_lease("scheduler", "b", 30) is False
        assert engine.try_lease("other", "b", 30) is True
        engine.release_lease("scheduler", "a")
        assert engine.try_lease("scheduler", "b", 30) is True

    def test_a_lease_expires_unless_renewed(self, engine):
        assert engine.try_lease("expires", "a", 0.3) is True
        assert engine.try_lease("renewed", "a", 0.4) is True
        time.sleep(0.25)
        assert engine.try_lease("renewed", "a", 0.4) is True
        time.sleep(0.2)  # expires' lease is over, renewed's is not
        assert engine.try_lease("expires", "b", 30) is True
        assert engine.try_lease("renewed", "b", 30) is False

    # -- concurrency, processes, close ---------------------------------------------------
    def test_no_task_is_lost_or_handed_out_twice_across_threads(self, engine_for):
        engines = [engine_for() for _ in range(2)]  # two threads on each
        task_ids = fill(engines[0], Q, 400)
        acked: list[str] = []

        def work(index: int) -> None:
            engine = engines[index % 2]
            consumer = f"node-{index % 2}.example.org:{os.getpid()}:{index}"  # as workers name
            while claims := engine.claim([Q], consumer, count=3):
                for claim in claims:
                    engine.ack(claim)
                    acked.append(claim.task_id)

        run_threads(4, work)
        assert sorted(acked) == task_ids
        assert engines[0].counts()[Q] == zeros()

    def test_tasks_of_dead_workers_run_once_more_amid_busy_ones(self, engine_for):
        engines = [engine_for(visibility_timeout=LEASE) for _ in range(3)]
        task_ids = fill(engines[0], Q, 60)
        acked: dict[str, int] = {}  # task id: deliveries of the claim acked
        deadline = time.monotonic() + 10

        def work(index: int) -> None:
            engine = engines[index]
            while len(acked) < 60 and time.monotonic() < deadline:
                for claim in engine.claim([Q], f"w{index}", count=3, wait=0.2):
                    if not (claim.task_id.endswith("0") and claim.deliveries == 1):
                        assert claim.task_id not in acked, f"{claim} handed out again"
                        acked[claim.task_id] = claim.deliveries
                        engine.ack(claim)  # a task ending in 0 is dropped once: a dead worker

        run_threads(3, work)
        assert sorted(acked) == task_ids
        assert {task_id: 2 if task_id.endswith("0") else 1 for task_id in task_ids} == acked
        assert engines[0].counts()[Q] == zeros()

    def test_works_in_forked_children_and_after(self, engine):
        engine.enqueue(Q, "parent", b"p")
        [claim] = engine.claim([Q], "parent")  # connections open before the fork
        waiting = threading.Thread(target=engine.claim, args=(["idle"], "w"), kwargs={"wait": 1})
        waiting.start()  # and a thread in a call while the process forks
        time.sleep(0.1)

        def child(index: int) -> None:
            signal.alarm(10)  # a lock the waiting thread held must not hang the child
            queue = f"child{index}"
            engine.enqueue(queue, f"c{index}", b"child")
            [got] = engine.claim([queue], f"w{index}")
            assert (got.task_id, got.payload) == (f"c{index}", b"child")
            engine.ack(got)

        assert run_in_children(2, child) == [0, 0]
        waiting.join()
        engine.ack(claim)
        assert engine.find("parent") is None
        engine.enqueue(Q, "after", b"a")
        assert ids(engine.claim([Q], "parent")) == ["after"]

    def test_close_then_use_reopens(self, engine):
        engine.enqueue(Q, "t1", b"p")
        engine.close()
        engine.close()
        [claim] = engine.claim([Q], "w1")
        engine.close()
        engine.ack(claim)
        assert engine.find("t1") is None


class SharedTaskEngineSuite(TaskEngineSuite):
    """An engine whose tasks other processes see: worker processes share the queues, a
    waiting claim wakes for a task another process enqueued, a process that dies holding a
    claim loses no task, and a server that is not there is a clean, quick error. Give also
    the fixture ``make_unreachable_engine``: ``make_unreachable_engine(app_name)`` opens your
    engine on a server that is not there (its error must not show the password ``hunter2``).
    """

    def test_a_server_that_is_down_raises_store_unavailable_quickly(
        self, make_unreachable_engine, app_name
    ):
        down = make_unreachable_engine(app_name)  # connections are opened lazily: no error yet
        calls = {
            "enqueue": lambda: down.enqueue(Q, "t1", b"p"),
            "claim": lambda: down.claim([Q], "w1", wait=0.2),
            "counts": down.counts,
            "try_lease": lambda: down.try_lease("scheduler", "a", 30),
        }
        for what, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert time.monotonic() - started < 10, what
            assert "hunter2" not in str(caught.value), what

    def test_worker_processes_run_each_task_once(self, engine):
        task_ids = fill(engine, Q, 100)

        def worker(index: int) -> None:
            while claims := engine.claim([Q], f"p{index}", count=3):
                for claim in claims:
                    engine.ack(claim)
                    engine.enqueue("done", f"{claim.task_id}-by-{index}", claim.payload)

        assert run_in_children(3, worker) == [0, 0, 0]
        done = engine.claim(["done"], "check", count=500)
        assert sorted(claim.payload.decode() for claim in done) == task_ids
        assert engine.counts()[Q] == zeros()

    def test_a_killed_worker_process_loses_no_task(self, engine_for):
        engine = engine_for(visibility_timeout=LEASE)
        engine.enqueue(Q, "t1", b"p")

        def killed(_index: int) -> None:
            assert ids(engine.claim([Q], "doomed")) == ["t1"]  # then gone, without an ack

        assert run_in_children(1, killed) == [0]
        assert engine.claim([Q], "w1") == []
        time.sleep(PAST_LEASE)
        [claim] = engine.claim([Q], "w1")
        assert (claim.task_id, claim.payload, claim.deliveries) == ("t1", b"p", 2)

    def test_a_waiting_claim_in_another_process_wakes(self, engine):
        timer = threading.Timer(0.3, engine.enqueue, (Q, "t1", b"p"))
        timer.start()

        def waiting(_index: int) -> None:
            claims, took = timed(lambda: engine.claim([Q], "child", wait=5))
            assert ids(claims) == ["t1"] and took < 1.5

        assert run_in_children(1, waiting) == [0]
        timer.join()
        assert engine.find("t1").state == RUNNING
