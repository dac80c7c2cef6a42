"""The cluster's cost of shared sessions: wrk against haproxy in front of three nodes.

What the deploy issue claims, measured in one run on the cluster that `make cluster` starts
(three gunicorn nodes x 2 workers behind haproxy, Redis, memcached, PostgreSQL + replica):
with Redis sessions, a signed-in user's page keeps at least 0.85x the requests/s of the
same page without a session; the same measured with memcached sessions, on a second
cluster. The page is the guestbook's ``/entries`` (hit counter, cached entries, the user's
name): signed in, its session is loaded (a round trip, or a client-cache hit) and not
written, as on most pages of a signed-in user; without a session, the requests carry
another cookie and the lazy session does no store I/O. For the worst case, the front
page ``/`` changes and saves the session on every request (the user's view counter):
load + save, reported beside it. 48 users' sessions take turns.

The cases take turns in each round, each round starting with the next one; figures are
medians over the rounds, p99 from wrk's latency distribution, and the per-round ratios
of the signed-in page are printed too. Everything (wrk, haproxy, the nodes, the servers)
shares this machine's cores. The cluster's Redis sessions use client-side caching
(``?client_cache=true``), as ``make cluster`` configures them.
Run: ``.venv/bin/python benchmarks/cluster.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.cluster import Cluster
from tests.examples.browser import Browser

TARGET = 0.85
COOKIE = "session_id_guestbook"


#: Each wrk thread cycles through its own half of the cookies: with 6 connections per thread
#: and 24 cookies per half, no two requests in flight share a session (one user, one tab).
SCRIPT = """
local cookies, counter, first = {%s}, 0, 1
local threads = 0
function setup(thread) thread:set("first", threads * %d + 1); threads = threads + 1 end
function request()
  counter = counter %% %d
  local cookie = cookies[first + counter]
  counter = counter + 1
  return wrk.format("GET", "%s", {["Cookie"] = "%s=" .. cookie})
end
"""
SESSIONS_PER_THREAD = 24


def wrk(url: str, path: str, seconds: int, cookies: list[str], name: str = COOKIE
        ) -> tuple[float, float, int]:  # fmt: skip
    """``(requests/s, p99 ms, failed responses)`` of one wrk run of GET ``path`` on ``url``,
    each request with one of ``cookies`` under ``name`` (the same Lua work in every case)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        listed = ", ".join(f'"{c}"' for c in cookies)
        script.write(SCRIPT % (listed, SESSIONS_PER_THREAD, SESSIONS_PER_THREAD, path, name))
        script.flush()
        command = ["wrk", "-t2", "-c12", f"-d{seconds}s", "--latency", "-s", script.name, url]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (
        rate,
        p99,
        (int(failed.group(1)) if failed else 0) + (sum(map(int, errors.groups())) if errors else 0),
    )


def signed_in_cookies(url: str, count: int) -> list[str]:
    """The session cookies of ``count`` users who signed in through haproxy."""
    cookies = []
    for number in range(count):
        browser = Browser(url)
        browser.post("/sign-in", name=f"bench{number}", password="bench")
        cookies.append(browser.cookies[COOKIE])
    return cookies


#: The cases, in the order they take turns: (label, path, cookie name).
CASES = {
    "none": ("no session cookie, /entries", "/entries", "unrelated"),
    "read": ("signed in, /entries (load)", "/entries", COOKIE),
    "write": ("signed in, / (load + save)", "/", COOKIE),
}


def measure(sessions: str, rounds: int, seconds: int) -> dict[str, list[tuple]]:
    """Start a cluster with ``sessions``; the cases take turns for ``rounds`` rounds."""
    with tempfile.TemporaryDirectory(prefix="scalekit-bench-") as state:
        cluster = Cluster(os.path.join(state, "cluster"), sessions=sessions, cron_sleep=60)
        cluster.start()
        try:
            cookies = signed_in_cookies(cluster.url, 2 * SESSIONS_PER_THREAD)
            wrk(cluster.url, "/", 2, cookies)  # warm up: pools, caches, the fragment
            results: dict[str, list[tuple]] = {case: [] for case in CASES}
            order = list(CASES)
            for r in range(rounds):  # each round starts with the next case: no fixed order
                for case in order[r % len(order) :] + order[: r % len(order)]:
                    _, path, name = CASES[case]
                    results[case].append(wrk(cluster.url, path, seconds, cookies, name))
            return results
        finally:
            cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s per case")
    args = parser.parse_args()
    rounds, seconds = (1, 3) if args.quick else (7, 8)
    print(f"wrk -t2 -c12 against haproxy; {rounds} round(s) of {seconds} s per case")
    print(f"{'case':<44}{'req/s':>8}{'p99 ms':>9}{'errors':>8}{'ratio':>8}")
    ok = True
    for sessions in ("redis", "memcache"):
        results = measure(sessions, rounds, seconds)
        ratios = {}
        for case, (label, _, _) in CASES.items():
            rate = statistics.median(r[0] for r in results[case])
            p99 = statistics.median(r[1] for r in results[case])
            errors = sum(r[2] for r in results[case])
            ratios[case] = statistics.median(
                s[0] / n[0] for s, n in zip(results[case], results["none"], strict=True)
            )
            print(f"{sessions + ': ' + label:<44}{rate:>8.0f}{p99:>9.1f}"
                  f"{errors:>8}{ratios[case]:>7.2f}x")  # fmt: skip
            ok = ok and errors == 0
        rounds_read = ", ".join(
            f"{s[0] / n[0]:.2f}" for s, n in zip(results["read"], results["none"], strict=True)
        )
        print(f"  {sessions}: signed-in read / no session, per round: {rounds_read}")
        if sessions == "redis":
            passed = ratios["read"] >= TARGET
            print(
                f"  a signed-in page keeps {ratios['read']:.2f}x of the session-less rate with "
                f"Redis sessions (target >= {TARGET}x): {'PASS' if passed else 'MISS'}"
            )
            ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
