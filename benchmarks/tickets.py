"""Error tickets: the cost of the error path, and tickets2db's throughput into PostgreSQL.

What the tickets issue claims, measured in one run:

1. A failing request through ``TicketMiddleware`` (ticket built, secrets scrubbed, file
   written atomically to a local folder, 500 page) costs at most 5 ms more than the same
   app's successful request. Both go through the middleware, called in-process with a
   prepared environ; the failure is raised ten calls deep, with locals in every frame.
   The cases take turns within each round; every figure is a median over the rounds.
2. ``tickets2db`` (``collect``: batched INSERT ... ON CONFLICT DO NOTHING, commit, then
   delete the files) moves 10,000 ticket files into a private PostgreSQL in at most 5 s.
   Baseline, same run, same files: web2py's tickets2db loop through pydal (one
   ``insert`` + ``commit`` + ``unlink`` per file).
Run: ``.venv/bin/python benchmarks/tickets.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime

from pydal import DAL, Field

from scalekit.tickets import DatabaseStore, FolderStore, TicketMiddleware, collect

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import PostgresServer

PATH_TARGET = 0.005  # seconds more per failing request than per successful one
MOVE_TARGET = (5.0, 10_000)  # seconds for so many tickets; a quick run scales it


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def environ(path: str) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "page=2&sort=date",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7",
        "HTTP_HOST": "bench",
        "HTTP_ACCEPT": "text/html",
        "HTTP_COOKIE": "session_id_shop=abc.def",
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11)",
        "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
    }


def nested(depth: int, order: dict) -> int:
    """Ten calls deep, with a few locals in each frame, like a real controller."""
    items, total, user = order["items"], depth * 3, {"id": 42, "name": "maria"}
    if depth:
        return nested(depth - 1, order) + total + len(items) + user["id"]
    raise ValueError(f"order {order['id']}: quantity {items[0]['qty']} is not allowed")


def app(environ: dict, start_response: Callable) -> list[bytes]:
    order = {"id": 1234, "items": [{"sku": "A-1", "qty": -1}], "password": "hidden"}
    if environ["PATH_INFO"] == "/fail":
        nested(10, order)
    body = b"<html><body>order 1234: 1 item</body></html>"
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
    return [body]


def serve(middleware: TicketMiddleware, path: str) -> float:
    start = time.perf_counter()
    middleware(environ(path), lambda status, headers, exc_info=None: None)
    return time.perf_counter() - start


def error_path(folder: str, rounds: int, number: int) -> bool:
    store = FolderStore(folder)
    middleware = TicketMiddleware(app, store, app_name="bench")
    logging_off = contextlib.redirect_stderr(io.StringIO())
    times: dict[str, list[float]] = {"ok": [], "fail": []}
    with logging_off:
        serve(middleware, "/fail")  # warm up: linecache, first file in the folder
        for _ in range(rounds):
            for case, path in (("ok", "/"), ("fail", "/fail")):
                times[case].append(
                    statistics.median(serve(middleware, path) for _ in range(number))
                )
    ok, fail = statistics.median(times["ok"]), statistics.median(times["fail"])
    files = list(store.pending())
    size = statistics.median(os.path.getsize(path) for path in files)
    print(
        f"\n1. Error path: median µs per request over {rounds} rounds of {number} "
        f"(ticket files {size / 1024:.1f} KB, {len(files):,} written)\n"
        f"   {'successful request through TicketMiddleware':<52}{ok * 1e6:>10.1f}\n"
        f"   {'failing request: ticket file + 500 page':<52}{fail * 1e6:>10.1f}\n"
        f"   error path costs {(fail - ok) * 1e3:.2f} ms more ({fail / ok:.0f}x the successful "
        f"request)   target <= {PATH_TARGET * 1e3:.0f} ms   {verdict(fail - ok <= PATH_TARGET)}"
    )
    return fail - ok <= PATH_TARGET


def make_tickets(folder: str, count: int) -> None:
    """``count`` ticket files, as failing requests write them."""
    store = FolderStore(folder)
    middleware = TicketMiddleware(app, store, app_name="bench")
    with contextlib.redirect_stderr(io.StringIO()):
        for _ in range(count):
            serve(middleware, "/fail")


def web2py_loop(folder: str, uri: str, dal_folder: str) -> int:
    """web2py's scripts/tickets2db.py: insert, commit, unlink, one file at a time."""
    db = DAL(uri, folder=dal_folder)
    table = db.define_table(
        "web2py_ticket_bench",
        Field("ticket_id", length=100),
        Field("ticket_data", "text"),
        Field("created_datetime", "datetime"),
    )
    moved = 0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        with open(path) as file:
            data = file.read()
        table.insert(ticket_id=name, ticket_data=data, created_datetime=datetime.now())
        db.commit()
        os.unlink(path)
        moved += 1
    db.close()
    return moved


def tickets2db(server: PostgresServer, root: str, count: int) -> bool:
    source = os.path.join(root, "source")
    make_tickets(source, count)
    size = sum(os.path.getsize(os.path.join(source, name)) for name in os.listdir(source))
    ours, theirs = os.path.join(root, "ours"), os.path.join(root, "theirs")
    shutil.copytree(source, ours)
    shutil.copytree(source, theirs)
    dal_folder = os.path.join(root, "dal")
    os.makedirs(dal_folder)
    database = DatabaseStore(server.url, folder=dal_folder)
    database.entries(1)  # the table exists before timing, as on every run but the first
    os.sync()
    start = time.perf_counter()
    stats = collect(FolderStore(ours), database)
    seconds = time.perf_counter() - start
    database.close()
    os.sync()
    start = time.perf_counter()
    baseline_moved = web2py_loop(theirs, server.url, dal_folder)
    baseline = time.perf_counter() - start
    target = MOVE_TARGET[0] * count / MOVE_TARGET[1]
    ok = seconds <= target and stats.moved == count and not os.listdir(ours)
    print(
        f"\n2. tickets2db: {count:,} ticket files ({size / 2**20:.1f} MB) into PostgreSQL\n"
        f"   {'':<52}{'seconds':>8}{'tickets/s':>12}\n"
        f"   {'scalekit: collect (batched insert, then unlink)':<52}{seconds:>8.2f}"
        f"{count / seconds:>12,.0f}   target <= {target:.2f} s   {verdict(ok)}\n"
        f"   {'web2py loop: insert + commit + unlink per file':<52}{baseline:>8.2f}"
        f"{baseline_moved / baseline:>12,.0f}\n"
        f"   web2py / scalekit: {baseline / seconds:.3g}x the time; moved {stats.moved:,}, "
        f"files left {len(os.listdir(ours))}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: fewer requests, a tenth of the tickets"
    )
    args = parser.parse_args()
    rounds, number, count = (5, 40, 1_000) if args.quick else (15, 100, 10_000)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the server stops
    print(
        f"tickets ({'quick' if args.quick else 'full'} run): Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="scalekit-bench-tickets-") as root:
        results = [error_path(os.path.join(root, "errors"), rounds, number)]
        with PostgresServer().running() as server:
            results.append(tickets2db(server, root, count))
    print(f"\nverdict: {verdict(all(results))}; load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
