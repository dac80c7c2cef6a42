"""Replica failover: scalekit's ReplicaSet + DBMiddleware vs the web2py recipe.

The web2py recipe rotates a per-process counter over the replica URIs and gives pydal the
rotated list, ``DAL([uri2, uri1])``: pydal tries them in order on every request. One run,
on a private PostgreSQL primary with two streaming replicas, measures the request time of
the same read-only WSGI view (one DAL per request, as in web2py; the same pool size,
connect timeout and tables for both) in three phases:

1. healthy: both replicas up;
2. stopped: replica 2 is stopped (its port refuses connections);
3. black-holed: replica 2's port accepts connections and never answers, as a host that
   hangs or drops packets does (each attempt costs the whole connect timeout).

Each phase starts fresh apps, warms them up on the healthy cluster, breaks replica 2 and
measures: the first failure (which pydal's one-second sleep makes cost about 1 s + the
timeout for scalekit too) is part of the figures.

Claim: scalekit's p99 with one replica stopped or black-holed is at most 1.5x its own
healthy p99, while the recipe pays the failure on a share of its requests. The two
cases take turns, one round each. Run: ``.venv/bin/python benchmarks/replicas.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg2
from pydal import DAL, Field
from werkzeug.test import EnvironBuilder

from scalekit.db import DBMiddleware, ReplicaSet, current

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import PostgresReplica, PostgresServer

CONNECT_TIMEOUT = 1  # seconds, for both cases
POOL_SIZE = 4
SLOW = 0.1  # seconds: a request this slow paid for a failure
WARM_UP = 20  # requests per app before the failure: a running app, its pool filled


@dataclass(frozen=True)
class Plan:
    rounds: int
    requests: int  # per case and round
    hole_requests: int  # per round for the recipe when every other try costs a timeout


FULL = Plan(rounds=10, requests=150, hole_requests=4)
QUICK = Plan(rounds=5, requests=60, hole_requests=2)


def define(db: DAL) -> None:
    db.define_table("item", Field("name"), Field("price", "double"), migrate=False)


def view(environ, start_response):
    db = current().db
    rows = db(db.item.price > 10).select(limitby=(0, 20), orderby=db.item.id)
    body = ",".join(row.name for row in rows).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def recipe_app(uris: list[str], folder: str) -> Callable:
    """The web2py recipe: a per-process counter rotates the URIs, pydal tries them in order."""
    counter = itertools.count()

    def app(environ, start_response):
        start = next(counter) % len(uris)
        db = DAL(
            uris[start:] + uris[:start], folder=folder, pool_size=POOL_SIZE,
            driver_args={"connect_timeout": CONNECT_TIMEOUT}, migrate=False,
        )  # fmt: skip
        try:
            define(db)
            rows = db(db.item.price > 10).select(limitby=(0, 20), orderby=db.item.id)
            body = ",".join(row.name for row in rows).encode()
            db.commit()
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


def scalekit_app(primary: str, replicas: list[str], folder: str) -> Callable:
    replica_set = ReplicaSet(
        primary, replicas, connect_timeout=CONNECT_TIMEOUT, folder=folder,
        pool_size=POOL_SIZE, migrate=False,
    )  # fmt: skip
    return DBMiddleware(view, replica_set, define=define)


def serve(app: Callable, base: dict) -> float:
    """One request as a WSGI server makes it; its duration in seconds."""
    status: list[str] = []

    def start_response(code, headers, exc_info=None):
        status[:] = [code]
        return lambda data: None

    started = time.perf_counter()
    result = app(dict(base), start_response)
    try:
        for _ in result:
            pass
    finally:
        if hasattr(result, "close"):
            result.close()
    elapsed = time.perf_counter() - started
    if status != ["200 OK"]:
        raise RuntimeError(f"answered {status}")
    return elapsed


def measure(apps: dict[str, Callable], counts: dict[str, int], rounds: int) -> dict:
    """Per-request seconds of each app; the apps take turns, one round each."""
    base = EnvironBuilder(path="/items").get_environ()
    times: dict[str, list[float]] = {name: [] for name in apps}
    names = list(apps)
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            times[name] += [serve(apps[name], base) for _ in range(counts[name])]
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class BlackHole:
    """Accepts connections on ``port`` and never answers."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for connection in self.held:
            connection.close()


@contextlib.contextmanager
def cluster() -> Iterator[tuple[PostgresServer, PostgresReplica, PostgresReplica]]:
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(PostgresServer().running())
        connection = psycopg2.connect(
            host="127.0.0.1", port=primary.port, user=primary.superuser,
            dbname=primary.database,
        )  # fmt: skip
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE item (id serial PRIMARY KEY, name text, price float8)")
            cursor.execute(
                "INSERT INTO item (name, price) "
                "SELECT 'item' || i, i % 100 FROM generate_series(1, 1000) i"
            )
        connection.close()
        first = stack.enter_context(PostgresReplica(primary).running())
        second = stack.enter_context(PostgresReplica(primary).running())
        yield primary, first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    plan = QUICK if parser.parse_args().quick else FULL
    print(__doc__.splitlines()[0])
    print(f"rounds={plan.rounds}, requests per round={plan.requests}, "
          f"connect timeout={CONNECT_TIMEOUT} s, pool size={POOL_SIZE}")  # fmt: skip
    with cluster() as (primary, first, second), tempfile.TemporaryDirectory() as folder:
        uris = [first.url, second.url]
        results: dict[str, dict[str, list[float]]] = {}

        def phase(label: str, recipe_requests: int, fail: Callable[[], object]) -> None:
            """Fresh apps warmed up on the healthy cluster, then ``fail``, then measured."""
            apps = {
                "web2py recipe": recipe_app(uris, folder),
                "scalekit": scalekit_app(primary.url, uris, folder),
            }
            measure(apps, dict.fromkeys(apps, WARM_UP), 1)
            fail()
            counts = {"web2py recipe": recipe_requests, "scalekit": plan.requests}
            results[label] = measure(apps, counts, plan.rounds)

        phase("healthy", plan.requests, lambda: None)
        phase("one replica stopped", plan.requests, second.stop_cluster)
        second.start_cluster()
        holes: list[BlackHole] = []

        def black_hole() -> None:
            second.stop_cluster()
            holes.append(BlackHole(second.port))

        try:
            phase("one replica black-holed", plan.hole_requests, black_hole)
        finally:
            for hole in holes:
                hole.close()
        report(results)


def report(results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{'phase':<26}{'case':<15}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>10}{'slow':>7}")  # fmt: skip
    for label, cases in results.items():
        for name, values in cases.items():
            slow = sum(v > SLOW for v in values) / len(values)
            print(
                f"{label:<26}{name:<15}{len(values):>9}{statistics.median(values) * 1e3:>9.2f}"
                f"{percentile(values, 99) * 1e3:>9.2f}{max(values) * 1e3:>10.1f}{slow:>7.1%}"
            )
    healthy = percentile(results["healthy"]["scalekit"], 99)
    recipe_healthy = statistics.median(results["healthy"]["web2py recipe"])
    print(f"\n(slow: share of requests over {SLOW * 1e3:.0f} ms)")
    for label in ("one replica stopped", "one replica black-holed"):
        ratio = percentile(results[label]["scalekit"], 99) / healthy
        verdict = "PASS" if ratio <= 1.5 else "MISS"
        recipe = results[label]["web2py recipe"]
        print(f"{label}: scalekit p99 / its healthy p99 = {ratio:.2f}x "
              f"(target <= 1.5x) {verdict}; recipe p50 / its healthy p50 = "
              f"{statistics.median(recipe) / recipe_healthy:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
