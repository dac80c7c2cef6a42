"""Maintenance mode off: what MaintenanceMiddleware adds to a request, vs the bare app.

What the maintenance issue claims, measured in one run:

1. With the flag off, a request through ``MaintenanceMiddleware`` costs at most 5 µs more
   than the same request to the bare app, with a file flag and with a Redis flag (a private
   redis-server). The flag is read at most once a second (the default ``cache_seconds``);
   those reads are part of the timed calls.
2. For scale: web2py's way, an ``os.path.exists`` on the ``DISABLED`` file per request.

Every WSGI app is called in-process with a prepared environ and a no-op ``start_response``.
The machine may be noisy: the cases take turns within each round, every figure is a median
over the rounds, and every overhead is the median of the per-round differences.
Run: ``.venv/bin/python benchmarks/maintenance.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from scalekit.maintenance import MaintenanceMiddleware, open_flag

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import RedisServer

TARGET_US = 5.0
BODY = b"<html><body>Hello, world</body></html>"


@dataclass(frozen=True)
class Plan:
    rounds: int  # every figure is a median over this many rounds
    requests: int  # requests per case in one round


FULL = Plan(rounds=41, requests=20_000)
QUICK = Plan(rounds=9, requests=20_000)


def bare_app(environ: dict, start_response: Callable) -> list[bytes]:
    """A small real view: sets its headers and returns a body."""
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def web2py_style(path: str) -> Callable:
    """The baseline web2py offers: look for the DISABLED file on every request."""

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if os.path.exists(path):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        return bare_app(environ, start_response)

    return app


def environ() -> dict:
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/shop/cart/add", "QUERY_STRING": "",
        "SCRIPT_NAME": "", "SERVER_NAME": "shop.example", "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.5", "wsgi.url_scheme": "https",
        "HTTP_ACCEPT": "text/html", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }  # fmt: skip


def start_response(status: str, headers: list, exc_info=None) -> None:
    return None


def interleaved(cases: dict[str, Callable], number: int, rounds: int) -> dict[str, list[float]]:
    """Each case's µs per request in every round; the cases take turns, one later each round."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    env = environ()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            app = cases[name]
            gc.collect()
            start = time.perf_counter()
            for _ in range(number):
                app(env, start_response)
            times[name].append((time.perf_counter() - start) / number * 1e6)
    return times


def overhead(t: dict[str, list[float]], name: str) -> float:
    """The median over the rounds of (case - bare app), in µs."""
    return statistics.median(x - y for x, y in zip(t[name], t["bare"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer iterations")
    plan = QUICK if parser.parse_args().quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the server stops
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer().running())
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="scalekit-bench-"))
        with redis.Redis.from_url(server.url) as admin:
            server_version = admin.info("server")["redis_version"]
        file_url = f"file://{folder}/MAINTENANCE"
        for url in (file_url, server.url):
            open_flag(url, "bench").clear()  # off
        file_site = MaintenanceMiddleware(bare_app, file_url, app_name="bench")
        redis_site = MaintenanceMiddleware(bare_app, server.url, app_name="bench")
        stack.callback(redis_site.maintenance.close)
        cases = {
            "bare": bare_app,
            "file": file_site,
            "redis": redis_site,
            "web2py": web2py_style(os.path.join(folder, "DISABLED")),
        }
        for app in cases.values():  # all answer 200 with maintenance off
            seen: list[str] = []
            app(environ(), lambda status, headers, exc_info=None, seen=seen: seen.append(status))
            assert seen == ["200 OK"], seen
        reads_before = admin_gets(server.url)
        started = time.monotonic()
        t = interleaved(cases, plan.requests, plan.rounds)
        elapsed = time.monotonic() - started
        reads = admin_gets(server.url) - reads_before

    print(
        f"maintenance overhead ({'quick' if plan is QUICK else 'full'} run): Python "
        f"{sys.version.split()[0]}, private redis-server {server_version}, {os.cpu_count()} "
        f"CPUs; median of {plan.rounds} rounds x {plan.requests:,} requests per case; "
        "overheads: medians of the per-round differences to the bare app"
    )
    print(f"   {'case':<58}{'µs/req':>8}{'overhead':>10}")
    labels = {
        "bare": "baseline: the bare WSGI app",
        "file": "scalekit: MaintenanceMiddleware, file flag, off",
        "redis": "scalekit: MaintenanceMiddleware, Redis flag, off",
        "web2py": "for scale: web2py-style os.path.exists(DISABLED)",
    }
    for name, label in labels.items():
        extra = "" if name == "bare" else f"{overhead(t, name):8.2f} µs"
        print(f"   {label:<58}{statistics.median(t[name]):8.2f}{extra:>12}")
    print(f"   Redis GETs of the flag during {elapsed:.1f} s of timing: {reads} "
          "(at most one a second: the cache)")  # fmt: skip
    for name in ("file", "redis"):
        cost = overhead(t, name)
        verdict = "PASS" if cost <= TARGET_US else "MISS"
        print(f"   {name} flag off: +{cost:.2f} µs per request   target <= {TARGET_US:g} µs   "
              f"{verdict}")  # fmt: skip


def admin_gets(url: str) -> int:
    """How many GET commands the server has run (INFO commandstats)."""
    with redis.Redis.from_url(url) as admin:
        return int(admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: the server is already stopped and removed
        sys.exit(130)
