"""Single-flight: on a miss one worker computes, the others wait or get the stale value."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.cache.conftest import run_in_children


def slow_counter(path, delay: float = 0.3):
    """A function that appends a line to ``path`` per call (any process) and is slow."""

    def f():
        with open(path, "a") as file:
            file.write(f"{os.getpid()}\n")
        time.sleep(delay)
        return "computed"

    return f


def runs(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_threads(count: int, target) -> list:
    results: list = [None] * count
    start = threading.Barrier(count)

    def work(index):
        start.wait()
        results[index] = target()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_32_threads_run_f_once(model, tmp_path):
    f = slow_counter(tmp_path / "runs")
    results = run_threads(32, lambda: model("k", f, 60))
    assert results == ["computed"] * 32
    assert runs(tmp_path / "runs") == 1


def test_32_threads_forcing_a_refresh_run_f_once(model, tmp_path):
    model.set("k", "old", 60)
    f = slow_counter(tmp_path / "runs")
    results = run_threads(32, lambda: model("k", f, 0))
    assert results == ["computed"] * 32
    assert runs(tmp_path / "runs") == 1


@pytest.mark.shared
def test_32_workers_in_threads_and_processes_run_f_once(model, tmp_path):
    f = slow_counter(tmp_path / "runs", delay=0.5)
    out = tmp_path / "results"
    start_at = time.time() + 0.5  # every worker misses at the same moment

    def process(index):
        time.sleep(max(start_at - time.time(), 0))
        values = run_threads(4, lambda: model("k", f, 60))
        with open(out, "a") as file:
            file.write("".join(f"{value}\n" for value in values))

    assert run_in_children(8, process) == [0] * 8
    assert out.read_text().splitlines() == ["computed"] * 32
    assert runs(tmp_path / "runs") == 1


def test_a_stale_value_is_served_while_another_worker_computes(model):
    model("k", lambda: "old", 60)
    time.sleep(0.3)
    assert model.backend.try_lease("k", "someone-else", 30)  # a worker is recomputing
    started = time.monotonic()
    calls = []
    value = model("k", lambda: calls.append(1) or "new", 0.2, single_flight=True)
    assert value == "old" and calls == []
    assert time.monotonic() - started < 0.5
    assert model.stats()["stale"] == 1


def test_a_waiter_gets_the_holders_value(model):
    assert model.backend.try_lease("k", "holder", 30)

    def holder():
        time.sleep(0.3)
        model.set("k", "from-holder", 60)
        model.backend.release_lease("k", "holder")

    thread = threading.Thread(target=holder)
    thread.start()
    calls = []
    value = model("k", lambda: calls.append(1) or "mine", 60, single_flight=True)
    thread.join()
    assert value == "from-holder" and calls == []


def test_a_waiter_computes_itself_after_wait_timeout(make_model, app_name):
    model = make_model(app_name, wait_timeout=0.3, single_flight=True)
    assert model.backend.try_lease("k", "stuck", 30)
    started = time.monotonic()
    assert model("k", lambda: "mine", 60) == "mine"
    assert 0.3 <= time.monotonic() - started < 1.5
    assert model.get("k") == "mine"


def test_a_dead_holder_blocks_no_longer_than_the_lease_ttl(make_model, app_name, cache_kind):
    model = make_model(app_name, single_flight=True, wait_timeout=10)
    lease_ttl = 1.0
    if cache_kind == "ram":  # one process: a holder that never releases stands for a dead one
        assert model.backend.try_lease("k", "dead", lease_ttl)
    else:

        def take_and_die(_index):
            assert model.backend.try_lease("k", "dead", lease_ttl)
            os._exit(0)  # killed while holding the lease: no release

        assert run_in_children(1, take_and_die) == [0]
    started = time.monotonic()
    assert model("k", lambda: "after", 60) == "after"
    assert time.monotonic() - started < lease_ttl + 0.7


def test_an_exception_in_f_leaves_no_lease(model):
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        model("k", broken, 60, single_flight=True)
    with pytest.raises(RuntimeError):
        model("k", broken, 60, single_flight=False)
    started = time.monotonic()
    assert model("k", lambda: "ok", 60, single_flight=True) == "ok"
    assert time.monotonic() - started < 0.2
    assert model.backend.try_lease("k", "next", 30) is True


def test_single_flight_defaults(make_model, app_name, cache_kind):
    model = make_model(app_name)
    assert model.single_flight is (cache_kind != "ram")
    assert make_model(app_name, single_flight=False).single_flight is False
