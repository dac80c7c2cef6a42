"""Session overhead: scalekit's SessionMiddleware on Redis vs raw redis-py and Flask-Session.

What the sessions issue claims, measured in one run against the same private servers:

1. A read-and-write session request (cookie present, the view reads the session and changes
   one value) costs scalekit at most 1.2x the floor, raw redis-py ``GET`` + ``SET EX`` of a
   same-sized payload; Flask-Session 0.8 on Redis costs at least 1.5x what scalekit does.
   Every WSGI app is called in-process with a prepared environ, and the overhead of
   sessions is the app's time minus the same app's time without sessions.
   It is measured twice, with the benchmark and Redis pinned to CPUs (``sched_setaffinity``):
   first on one CPU, where a round trip costs what loopback costs (about 35 µs for a
   command on a 2-CPU VM), then on one CPU each, where every round trip also waits for the
   hypervisor to wake the other, idle vCPU (200-300 µs on the same VM, like a Redis on
   another host). The targets apply to the first: they compare what the libraries do per
   request, and the wake-up, paid alike by all three, would swamp it. Left to the
   scheduler, the two processes move between these placements, which is what made
   unpinned runs swing (a redis-py command took 129-372 µs from one run to the next).
2. Round trips per request, counted by Redis (INFO commandstats): read-only 1, untouched 0.
3. A session lookup with 1,000,000 stored sessions is at most 1.2x slower than with 1,000,
   on Redis and on PostgreSQL.
4. The read-and-write overhead on Redis Sentinel (a primary, a replica, three Sentinels) and
   on a Redis Cluster (three primaries, three replicas) is at most 1.1x a single Redis's.
   Also beside a single Redis with one replica: a replica costs its primary the copy of
   every write, which Sentinel's and the Cluster's primaries pay and a lone Redis does not.
   Twice: with the benchmark and every primary on one CPU (replicas and Sentinels on the
   other), then with every server on the other CPU, as on other hosts.

The machine may be noisy: the cases take turns within each round, every figure is a median
over the rounds, and every ratio is the median of the per-round ratios.
Run: ``.venv/bin/python benchmarks/sessions_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import importlib.util
import io
import itertools
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version

import flask
import harness
import psycopg2
import redis
from flask_session import Session as FlaskSession
from harness import interleaved, median, per_round, verdict
from werkzeug.test import EnvironBuilder

from scalekit import sessions
from scalekit.core.errors import StoreUnavailable
from scalekit.sessions.cookies import new_session_id
from scalekit.sessions.serializers import PayloadCodec

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import (
    PostgresServer,
    RedisCluster,
    RedisSentinelGroup,
    RedisServer,
    SentinelNode,
)

SECRET = "benchmark secret, not for production"
CODEC = PayloadCodec(SECRET)  # what SessionMiddleware(..., SECRET) signs and reads with
TTL = 24 * 3600  # scalekit's default idle timeout; the floor uses the same
#: A typical signed-in user's session: about 200 bytes once encoded and signed by scalekit.
TYPICAL = {
    "user_id": 48213,
    "user_name": "maria.rossi",
    "lang": "it",
    "csrf": "kq0Yb7a2XQ3w9JfL1mZc8RtUe4HnVs6PdGo5yBxAiKj",
    "cart": [1021, 877],
    "hits": 0,
}


@dataclass(frozen=True)
class Plan:
    rounds: int  # every figure is a median over this many rounds
    requests: int  # requests per case in one round
    lookups: int  # loads per store in one round
    many: int  # the large population of stored sessions
    few: int = 1000


# Many short rounds: a burst of load from elsewhere then hits one round of every case alike.
FULL = Plan(rounds=41, requests=300, lookups=500, many=1_000_000)
QUICK = Plan(rounds=9, requests=100, lookups=100, many=100_000)


# -- WSGI ----------------------------------------------------------------------------------
def environ(path: str = "/", cookie: str | None = None) -> dict:
    return EnvironBuilder(path=path, headers={"Cookie": cookie} if cookie else {}).get_environ()


def serve(app: Callable, base: dict) -> list[tuple[str, str]]:
    """One request as a WSGI server makes it; the response headers of its 200."""
    status, headers, _ = harness.serve(app, base)
    if status != "200 OK":
        raise RuntimeError(f"{app!r} answered {status}")
    return headers


def set_cookie(headers: list[tuple[str, str]], name: str) -> str:
    """``name=value`` of the Set-Cookie header for cookie ``name``."""
    for key, value in headers:
        if key.lower() == "set-cookie" and value.startswith(name + "="):
            return value.split(";", 1)[0]
    raise RuntimeError(f"the response set no {name} cookie: {headers}")


def bare_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def session_view(environ, start_response):
    """``/`` reads the session and changes one value (creating the session if there is
    none), ``/read`` only reads it, ``/untouched`` never uses it."""
    session = environ[sessions.ENVIRON_KEY]
    if environ["PATH_INFO"] != "/untouched":
        if "user_id" not in session:
            session.update(TYPICAL)
        if environ["PATH_INFO"] == "/":
            session["hits"] += 1
    return bare_app(environ, start_response)


class NoSessions(flask.sessions.SessionInterface):
    """Flask without sessions: its default cookie session would spend time checking the
    Flask-Session cookie, a cost of sessions that belongs to Flask-Session's side."""

    def open_session(self, app, request):
        return None  # Flask then hands the view a null session

    def save_session(self, app, session, response):
        pass


def flask_app(client: redis.Redis | None) -> flask.Flask:
    """Flask with Flask-Session on ``client`` (the view does what ``/`` does above), or
    Flask without sessions and a view that does not touch one."""
    app = flask.Flask(f"bench_{'session' if client else 'plain'}")
    if client is None:
        app.session_interface = NoSessions()
        app.add_url_rule("/", "index", lambda: "ok")
        return app
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
    FlaskSession(app)

    def index():
        if "user_id" not in flask.session:
            flask.session.update(TYPICAL)
        flask.session["hits"] += 1
        return "ok"

    app.add_url_rule("/", "index", index)
    return app


# -- 1. per-request overhead ---------------------------------------------------------------
class ScalekitApp:
    """``SessionMiddleware(session_view)`` on a RedisStore, and one session it created."""

    def __init__(self, redis_url: str):
        self.store = sessions.open_store(redis_url, app_name="bench")
        self.middleware = sessions.SessionMiddleware(session_view, self.store, SECRET)
        self.cookie = set_cookie(serve(self.middleware, environ()), "session_id_bench")
        self.sid = self.cookie.partition("=")[2].partition(".")[0]

    def payload(self) -> bytes:
        return self.store.load(self.sid).data

    def hits(self) -> int:
        return CODEC.open(self.sid, self.payload())[2]["hits"]


@dataclass(frozen=True)
class Placement:
    """Which CPUs the benchmark and every thread of the Redis server may run on."""

    label: str
    mine: frozenset[int]
    server: frozenset[int]

    def applied(self, server_pid: int) -> contextlib.AbstractContextManager[None]:
        return pinned({0: self.mine, server_pid: self.server})


@contextlib.contextmanager
def pinned(cpus_of: dict[int, frozenset[int]]) -> Iterator[None]:
    """Every thread of each process (pid 0: this one) on its CPUs for the body."""
    before = {}
    for pid, cpus in cpus_of.items():
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid or os.getpid()}/task")]
        for tid in [0] if pid == 0 else threads:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for tid, cpus in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


def placements() -> list[Placement]:
    """One CPU for both (the target's case), then one CPU each where there are two."""
    first, *others = sorted(os.sched_getaffinity(0))
    shared = [
        Placement(f"one CPU: the benchmark and Redis on CPU {first}", *[frozenset({first})] * 2)
    ]
    if not others:
        return shared
    apart = f"two CPUs: the benchmark on CPU {first}, Redis on CPU {others[0]}"
    return [*shared, Placement(apart, frozenset({first}), frozenset({others[0]}))]


def request_overhead(redis_server: RedisServer, plan: Plan) -> ScalekitApp:
    scalekit = ScalekitApp(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    fs_app, plain_app = flask_app(client), flask_app(None)
    fs_cookie = set_cookie(serve(fs_app, environ()), "session")
    fs_key = "session:" + fs_cookie.partition("=")[2]
    payload, floor_key = scalekit.payload(), "floor:" + scalekit.sid
    client.set(floor_key, payload, ex=TTL)

    def floor():
        client.get(floor_key)
        client.set(floor_key, payload, ex=TTL)

    def fs_hits() -> int:
        return fs_app.session_interface.serializer.decode(client.get(fs_key))["hits"]

    sk_env, fs_env = environ(cookie=scalekit.cookie), environ(cookie=fs_cookie)
    cases = {
        "app": lambda: serve(bare_app, sk_env),
        "scalekit": lambda: serve(scalekit.middleware, sk_env),
        "floor": floor,
        "flask": lambda: serve(plain_app, fs_env),
        "flask-session": lambda: serve(fs_app, fs_env),
    }
    print(
        f"\n1. Read-and-write request: overhead of sessions, µs per request (median of "
        f"{plan.rounds} rounds x {plan.requests:,} requests)"
    )
    print(
        f"   stored payload: scalekit {len(payload)} bytes (signed JSON), the floor "
        f"{len(payload)} bytes, Flask-Session {client.strlen(fs_key)} bytes (msgpack)"
    )
    for number, placement in enumerate(placements()):
        with placement.applied(redis_server.process.pid):
            interleaved(cases, max(plan.requests // 10, 20), rounds=1)  # warm up
            before = scalekit.hits(), fs_hits()
            t = interleaved(cases, plan.requests, plan.rounds)
        made = plan.requests * plan.rounds
        if (scalekit.hits() - before[0], fs_hits() - before[1]) != (made, made):
            raise RuntimeError("not every measured request was a read-and-write of one session")
        report_overhead(placement, t, targets=number == 0)
    return scalekit


def report_overhead(placement: Placement, t: dict[str, list[float]], targets: bool) -> None:
    sk = [s - a for s, a in zip(t["scalekit"], t["app"], strict=True)]
    fs = [s - a for s, a in zip(t["flask-session"], t["flask"], strict=True)]
    m = {name: median(values) for name, values in t.items()}
    print(f"   {placement.label}")
    for label, values, detail in [
        ("floor: redis-py GET + SET EX", t["floor"], ""),
        ("scalekit: SessionMiddleware(app) - app", sk, f"= {m['scalekit']:.1f} - {m['app']:.1f}"),
        (
            "Flask-Session: Flask+Session - Flask",
            fs,
            f"= {m['flask-session']:.1f} - {m['flask']:.1f}",
        ),
    ]:
        print(f"     {label:<42}{median(values):8.1f}   {detail}")
    ratio = per_round(lambda s, f: s / f, sk, t["floor"])
    slower = per_round(lambda f, s: f / s, fs, sk)
    if targets:
        checks = (
            f"target <= 1.2x   {verdict(ratio <= 1.2)}",
            f"target >= 1.5x   {verdict(slower >= 1.5)}",
        )
    else:
        checks = "no target: the round trips here include the VM's wake-up of the other CPU", ""
    print(f"     scalekit / floor           {ratio:5.2f}x   {checks[0]}")
    print(f"     Flask-Session / scalekit   {slower:5.2f}x   {checks[1]}")


# -- 2. round trips ------------------------------------------------------------------------
def commands_of(url: str, request: Callable[[], object]):
    """Commands Redis ran for ``request``: ({top-level: calls}, {inside Lua: calls}, failed).

    INFO commandstats counts both; MONITOR, which tags script calls "lua", splits them.
    """
    admin = redis.Redis.from_url(url, single_connection_client=True)
    admin.ping()  # connected before the reset: its HELLO is not counted
    end, in_lua = f"end of request {new_session_id()}", {}
    with redis.Redis.from_url(url).monitor() as monitor:
        admin.config_resetstat()
        request()
        admin.echo(end)
        while (command := monitor.next_command())["command"] != f"ECHO {end}":
            if command["client_type"] == "lua":
                name = command["command"].split()[0].lower()
                in_lua[name] = in_lua.get(name, 0) + 1
    top, failed = {}, 0
    for key, stat in admin.info("commandstats").items():
        name = key.removeprefix("cmdstat_")
        if name not in ("config|resetstat", "echo"):  # ours
            failed += stat["failed_calls"]
            if stat["calls"] > in_lua.get(name, 0):
                top[name] = stat["calls"] - in_lua.get(name, 0)
    admin.close()
    return top, in_lua, failed


def round_trips(redis_url: str, scalekit: ScalekitApp) -> None:
    cases = [  # label, request, the top-level commands expected (None: no claim)
        ("new session, view writes", environ(), None),
        ("read-and-write", environ(cookie=scalekit.cookie), {"hmget": 1, "evalsha": 1}),
        ("read-only", environ("/read", scalekit.cookie), {"hmget": 1}),
        ("session untouched", environ("/untouched", scalekit.cookie), {}),
    ]
    print("\n2. Redis commands per request (INFO commandstats, after a warm-up)")
    print(f"   {'request':<26}{'round trips':<13}{'expected':<10}{'top-level':<22}inside Lua")
    for label, env, expected in cases:
        serve(scalekit.middleware, env)  # warm up: scripts loaded, connection open
        top, in_lua, failed = commands_of(
            redis_url, lambda env=env: serve(scalekit.middleware, env)
        )
        check = "-" if expected is None else f"{sum(expected.values())} {verdict(top == expected)}"
        shown = ", ".join(f"{name} {calls}" for name, calls in sorted(top.items())) or "-"
        inside = ", ".join(f"{name} {calls}" for name, calls in in_lua.items()) or "-"
        print(f"   {label:<26}{sum(top.values()):<13}{check:<10}{shown:<22}{inside}")
        if failed:
            print(f"   {'':<26}{failed} failed calls (a NOSCRIPT answer, or an error)")


# -- 3. lookup scaling ---------------------------------------------------------------------
# The store's layout (see stores/redis.py), many sessions per call. KEYS: the index, then
# the sessions. ARGV: now (ms), TTL (ms), then payload and id of each session.
_FILL = """
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], 'd', ARGV[2 * i - 1], 'v', '0', 't', ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[2 * i])
end
"""


class Population:
    """``count`` random session ids, each with a real payload signed by scalekit's codec."""

    def __init__(self, count: int):
        self.body = CODEC.body(time.time(), TYPICAL)
        self.sids = [new_session_id() for _ in range(count)]

    def rows(self) -> Iterator[tuple[str, bytes]]:
        return ((sid, CODEC.seal(sid, self.body)) for sid in self.sids)

    def sample(self, store) -> list[str]:
        """Random ids to look up, after checking that ``store`` loads them as real sessions."""
        sample = random.choices(self.sids, k=5000)
        for sid in sample[:50]:
            CODEC.open(sid, store.load(sid).data)  # CorruptData if the fill went wrong
        return sample


def fill_redis(url: str, population: Population, app: str) -> None:
    client = redis.Redis.from_url(url)
    fill, prefix = client.register_script(_FILL), f"scalekit:s:{app}:"
    now_ms = time.time_ns() // 10**6
    rows = population.rows()
    while batch := list(itertools.islice(rows, 2000)):
        keys = [prefix + "due", *(prefix + sid for sid, _ in batch)]
        payloads_and_ids = itertools.chain.from_iterable((p, sid) for sid, p in batch)
        fill(keys=keys, args=[now_ms, TTL * 1000, *payloads_and_ids])
    client.close()


def fill_postgres(server: PostgresServer, store, population: Population) -> None:
    """COPY rows in the DatabaseStore's table layout (see its docstring), then VACUUM ANALYZE
    as autovacuum would. The payload goes in as pydal keeps a blob: base64 in a bytea."""
    store.load(new_session_id())  # the store creates its table and indexes
    at, utc = time.time(), "%Y-%m-%d %H:%M:%S"  # the store's naive UTC datetimes
    saved, expires = time.strftime(utc, time.gmtime(at)), time.strftime(utc, time.gmtime(at + TTL))
    copy = (
        f"COPY {store.table} (locked, created_datetime, modified_datetime, unique_key, "
        "session_data, version, expires_datetime) FROM STDIN WITH (FORMAT csv)"
    )
    connection = psycopg2.connect(
        host="127.0.0.1", port=server.port, user=server.superuser, dbname=server.database
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            rows = population.rows()
            while batch := list(itertools.islice(rows, 100_000)):
                buffer = io.StringIO()
                csv.writer(buffer).writerows(
                    ("F", saved, saved, sid, "\\x" + base64.b64encode(payload).hex(), 1, expires)
                    for sid, payload in batch
                )
                buffer.seek(0)
                cursor.copy_expert(copy, buffer)
            cursor.execute(f"VACUUM ANALYZE {store.table}")
    finally:
        connection.close()


def compare_lookups(label: str, stores: dict, samples: dict, plan: Plan) -> None:
    cases = {}
    for size, store in stores.items():
        ids = itertools.cycle(samples[size])
        cases[size] = lambda store=store, ids=ids: store.load(next(ids))
    interleaved(cases, max(plan.lookups // 10, 20), rounds=1)  # warm up
    t = interleaved(cases, plan.lookups, plan.rounds)
    ratio = per_round(lambda many, few: many / few, t[plan.many], t[plan.few])
    print(
        f"   {label:<18}{median(t[plan.few]):>10.1f}{median(t[plan.many]):>12.1f}"
        f"{ratio:>9.2f}x   {verdict(ratio <= 1.2)}"
    )


def timed(action: Callable, *args) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def lookup_scaling(redis_server: RedisServer, stack: contextlib.ExitStack, plan: Plan) -> None:
    print(
        f"\n3. Session lookup: store.load of a random stored id, µs (median of {plan.rounds} "
        f"rounds x {plan.lookups:,} loads); target: {plan.many:,} <= 1.2x {plan.few:,}"
    )
    print(f"   {'store':<18}{plan.few:>10,}{plan.many:>12,}{'ratio':>10}")
    populations = {size: Population(size) for size in (plan.few, plan.many)}
    notes = [redis_lookups(redis_server, populations, plan)]
    notes.append(postgres_lookups(stack, populations, plan))
    print(f"   filled: {', '.join(note for note in notes if note)}")


def redis_lookups(server: RedisServer, populations: dict, plan: Plan) -> str:
    stores, samples, seconds = {}, {}, {}
    for db, (size, population) in enumerate(populations.items(), start=1):
        url = f"redis://127.0.0.1:{server.port}/{db}"  # one database per population
        seconds[size] = timed(fill_redis, url, population, "bench")
        stores[size] = sessions.open_store(url, app_name="bench")
        samples[size] = population.sample(stores[size])
    server_version = redis.Redis.from_url(server.url).info("server")["redis_version"]
    compare_lookups(f"redis {server_version}", stores, samples, plan)
    return f"Redis {plan.many:,} in {seconds[plan.many]:.1f} s (Lua, 2,000 sessions a call)"


def postgres_lookups(stack: contextlib.ExitStack, populations: dict, plan: Plan) -> str | None:
    if importlib.util.find_spec("scalekit.sessions.stores.database") is None:
        print("   postgres          not run: scalekit/sessions/stores/database.py does not exist")
        return None
    server = stack.enter_context(PostgresServer().running())
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="scalekit-bench-pydal-"))
    stores, samples, seconds = {}, {}, {}
    try:
        for size, population in populations.items():
            stores[size] = store = sessions.open_store(
                server.url, app_name=f"s{size}", folder=folder
            )
            seconds[size] = timed(fill_postgres, server, store, population)
            samples[size] = population.sample(store)
    except StoreUnavailable as exc:
        print(f"   postgres          not run: {exc}")
        return None
    with contextlib.closing(psycopg2.connect(server.url)) as connection:
        number = connection.server_version  # 150018 for 15.18
    compare_lookups(f"postgres {number // 10000}.{number % 10000}", stores, samples, plan)
    return f"PostgreSQL in {seconds[plan.many]:.1f} s (COPY, VACUUM ANALYZE)"


# -- 4. topologies --------------------------------------------------------------------------
def is_primary(port: int) -> bool:
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
        return client.info("replication")["role"] == "master"


TOPOLOGIES = {
    "single": "single Redis",
    "replicated": "single Redis + replica",
    "sentinel": "Sentinel (primary + replica)",
    "cluster": "Cluster (3 primaries + 3 replicas)",
}


def topologies(redis_server: RedisServer, stack: contextlib.ExitStack, plan: Plan) -> None:
    primary = stack.enter_context(SentinelNode().running())  # a single Redis with a replica
    replica = stack.enter_context(SentinelNode(primary.port).running())
    group = stack.enter_context(RedisSentinelGroup().running())
    cluster = stack.enter_context(RedisCluster().running())
    apps = dict(
        zip(
            TOPOLOGIES,
            [
                ScalekitApp(url)
                for url in (
                    redis_server.url,
                    primary.url,
                    group.url,
                    "redis+cluster://" + ",".join(cluster.seeds),
                )
            ],
            strict=True,
        )
    )
    primaries = [
        redis_server,
        primary,
        group.primary(),
        *(node for node in cluster.nodes if is_primary(node.port)),
    ]
    others = [
        server for server in (replica, *group.members(), *cluster.nodes) if server not in primaries
    ]
    first, *rest = sorted(os.sched_getaffinity(0))
    mine, apart = frozenset({first}), frozenset(rest[:1] or [first])
    print(
        f"\n4. Read-and-write request on each topology: overhead of sessions, µs per request "
        f"(median of {plan.rounds} rounds x {plan.requests:,} requests); target: Sentinel "
        "and Cluster <= 1.1x the single Redis"
    )
    for label, primaries_cpus in [
        (f"the benchmark and the primaries on CPU {first}, the rest on CPU {min(apart)}", mine),
        (f"the benchmark on CPU {first}, every server on CPU {min(apart)} (as on other hosts)",
         apart),
    ]:  # fmt: skip
        cpus_of = {0: mine}
        cpus_of.update({server.process.pid: primaries_cpus for server in primaries})
        cpus_of.update({server.process.pid: apart for server in others})
        with pinned(cpus_of):
            overhead = session_overhead(apps, plan)
        print(f"   {label}")
        print(f"     {'':<36}{'µs':>8}{'/ single':>12}{'/ single + replica':>21}")
        for name, title in TOPOLOGIES.items():
            line = f"     {title:<36}{median(overhead[name]):8.1f}"
            if name in ("sentinel", "cluster"):
                ratios = [
                    per_round(lambda x, y: x / y, overhead[name], overhead[base])
                    for base in ("single", "replicated")
                ]
                line += f"{ratios[0]:11.2f}x{ratios[1]:20.2f}x   {verdict(ratios[0] <= 1.1)}"
            print(line)
    print(
        "   A replica costs its primary the copy of every write, and Sentinel's and the "
        "Cluster's primaries have one:\n   the last column is what routing and failover "
        "handling add."
    )


def session_overhead(apps: dict[str, ScalekitApp], plan: Plan) -> dict[str, list[float]]:
    """Each app's µs per read-and-write request minus the bare app's, per round."""
    base = {name: environ(cookie=app.cookie) for name, app in apps.items()}
    cases = {"app": lambda: serve(bare_app, base["single"])}
    cases.update(
        {
            name: lambda app=app, env=base[name]: serve(app.middleware, env)
            for name, app in apps.items()
        }
    )
    interleaved(cases, max(plan.requests // 10, 20), rounds=1)  # warm up
    before = {name: app.hits() for name, app in apps.items()}
    t = interleaved(cases, plan.requests, plan.rounds)
    made = plan.requests * plan.rounds
    if any(app.hits() - before[name] != made for name, app in apps.items()):
        raise RuntimeError("not every measured request was a read-and-write of one session")
    return {name: [s - a for s, a in zip(t[name], t["app"], strict=True)] for name in apps}


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: fewer iterations, 100,000 sessions instead of 1,000,000",
    )
    plan = QUICK if parser.parse_args().quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the servers stop
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer().running())
        print(
            f"sessions overhead ({'quick' if plan is QUICK else 'full'} run): private servers "
            f"on 127.0.0.1, Python {sys.version.split()[0]}, redis-py {redis.__version__} "
            f"(hiredis {redis.utils.HIREDIS_AVAILABLE}), Flask {version('flask')}, "
            f"Flask-Session {version('flask-session')}, {os.cpu_count()} CPUs\n"
            "figures: medians over rounds in which the cases take turns; "
            "ratios: medians of the per-round ratios"
        )
        scalekit = request_overhead(redis_server, plan)
        round_trips(redis_server.url, scalekit)
        lookup_scaling(redis_server, stack, plan)
        topologies(redis_server, stack, plan)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: the servers are already stopped and removed
        sys.exit(130)
