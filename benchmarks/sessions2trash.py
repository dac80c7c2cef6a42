"""sessions2trash: scalekit's store.cleanup vs Django's clearsessions, on private servers.

What the sessions2trash issue claims, measured in one run:

1. ``store.cleanup(cutoff)``, what ``scalekit sessions2trash -o`` runs, deletes 1,000,000
   expired Redis sessions in at most 1.5 s (web2py documents 3 s), 1,000,000 expired rows
   in at most 3 s on SQLite and 5 s on PostgreSQL, and 200,000 expired session files in at
   most 10 s. One session in a hundred is live, and every live one must survive.
2. Meanwhile a session write never waits more than 100 ms: another process (as a web
   worker is) loads and saves one live session in a loop; every call is timed, first for
   a second alone (the baseline), then during the cleanup.

Baselines, same run, same number of sessions: Django's ``clearsessions`` on the same engine
(SQLite, PostgreSQL); for Redis a floor (ZRANGE + DEL + ZREM of the same keys, no checks)
and web2py's documented 3 s, quoted, not measured; for files web2py's plain loop (walk the
shards, stat each file, unlink the old ones, one thread). Filling the stores is not timed:
bulk writes in each store's own layout (Lua for Redis, executemany for SQLite, COPY for
PostgreSQL, plain files). A million sessions cannot be refilled for rounds: every figure is
one run, and other work on the machine shows in it (the load average is printed).
Run: ``.venv/bin/python benchmarks/sessions2trash.py [--quick] [--batch N] [--tmp DIR]``
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import io
import itertools
import multiprocessing
import os
import random
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import django
import psycopg2
import redis
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.core.management import call_command
from django.db import Error as DjangoDatabaseError
from django.db import connections

from scalekit import sessions
from scalekit.core.errors import ScalekitError
from scalekit.sessions.cookies import new_session_id
from scalekit.sessions.stores.base import SessionStore

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import PostgresServer, RedisServer

APP = "bench"
PREFIX = f"scalekit:s:{APP}:"  # the RedisStore's keys of this app
TTL = 24 * 3600  # the TTL of every session that has one
AGE = 3600  # the -x rule: cutoff = now - AGE
PAYLOAD = base64.b64encode(bytes(range(150)))  # 200 bytes, a typical signed session
LIVE_EVERY = 100  # one live session in a hundred
IDLE = 1.0  # seconds the writer runs alone before each cleanup: its baseline
PAUSE_TARGET = 0.100  # seconds: the longest a concurrent session write may wait


@dataclass(frozen=True)
class Plan:
    redis: int
    database: int
    files: int


FULL = Plan(redis=1_000_000, database=1_000_000, files=200_000)
QUICK = Plan(redis=100_000, database=100_000, files=20_000)
#: The issue's targets, (seconds, for so many sessions): a quick run scales them.
TARGETS = {
    "redis": (1.5, 1_000_000),
    "sqlite": (3.0, 1_000_000),
    "postgres": (5.0, 1_000_000),
    "file": (10.0, 200_000),
}
WEB2PY_REDIS = (3.0, 1_000_000)  # web2py's documented sessions2trash figure for Redis


def scaled(figure: tuple[float, int], count: int) -> float:
    seconds, sessions_ = figure
    return seconds * count / sessions_


class Population:
    """``count`` expired sessions and one live one per hundred, in random order."""

    def __init__(self, count: int, new_id: Callable[[], str] = new_session_id):
        self.expired = count
        self.live = [new_id() for _ in range(count // LIVE_EVERY)]
        self.sessions = [(new_id(), False) for _ in range(count)]
        self.sessions += [(sid, True) for sid in self.live]
        random.shuffle(self.sessions)


def stamp(at: float) -> str:
    """A naive UTC datetime as SQL text, as pydal and Django keep them."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- the concurrent writer -----------------------------------------------------------------
#: Called in the writer process: returns load, save and close callables for one session.
OpenSession = Callable[[], tuple[Callable, Callable, Callable]]


#: What a load or save may raise; the writer counts these and goes on.
FAILURES = (ScalekitError, RuntimeError, KeyError, DjangoDatabaseError, UpdateError)


@dataclass
class Calls:
    """Every call the writer made: (start, seconds) on the perf_counter clock."""

    calls: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    error: str = ""

    def latencies(self, start: float, end: float) -> list[float]:
        """Seconds of every call that overlapped ``start``-``end``."""
        return [seconds for at, seconds in self.calls if at + seconds >= start and at <= end]


@contextlib.contextmanager
def writer(open_session: OpenSession | None) -> Iterator[Calls]:
    """Another process that loads and saves one live session in a loop while the cleanup
    runs, as a web worker would, timing every call (a process, not a thread: no GIL)."""
    calls = Calls()
    if open_session is None:
        yield calls
        return
    context = multiprocessing.get_context("fork")
    stop, ready = context.Event(), context.Event()
    results, send = context.Pipe(duplex=False)
    child = context.Process(target=_write, args=(open_session, stop, ready, send), daemon=True)
    child.start()
    send.close()
    try:
        if not ready.wait(60):
            raise RuntimeError("the writer process did not start")
        yield calls
    finally:
        stop.set()
        try:
            calls.calls, calls.errors, calls.error = results.recv()
        except EOFError:
            calls.errors, calls.error = 1, "the writer process died (its traceback is above)"
        child.join(10)
        if child.is_alive():
            child.kill()


def _write(open_session: OpenSession, stop, ready, send) -> None:
    """The writer process: time load and save until ``stop``, then send the times."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops us
    calls, errors, error = [], 0, ""
    try:
        load, save, close = open_session()
    except FAILURES as exc:
        send.send(([], 1, f"{type(exc).__name__}: {exc}"))
        ready.set()
        return
    while not stop.is_set():
        for call in (load, save):
            start = time.perf_counter()
            try:
                call()
            except FAILURES as exc:
                why = exc if str(exc) else exc.__context__  # Django's UpdateError says nothing
                errors, error = errors + 1, error or f"{type(exc).__name__}: {why}"
            calls.append((start, time.perf_counter() - start))
        ready.set()
    close()
    send.send((calls, errors, error))


def store_session(url: str, sid: str, **options) -> OpenSession:
    """Load, then save (compare-and-set) the live session ``sid`` through a new store."""

    def open_session():
        store = sessions.open_store(url, app_name=APP, **options)
        version = [None]

        def load():
            record = store.load(sid)
            if record is None:
                raise RuntimeError("the live session is gone")
            version[0] = record.version

        def save():
            if not store.save(sid, PAYLOAD, TTL, version[0]):
                raise RuntimeError("save lost a compare-and-set")

        return load, save, store.close

    return open_session


def django_session(key: str) -> OpenSession:
    """Django's own load and save of the session ``key`` (what its middleware does)."""

    def open_session():
        from django.contrib.sessions.backends.db import SessionStore

        current = {}

        def load():
            current["session"] = SessionStore(session_key=key)
            current["session"]["hits"]  # loads it (KeyError if it was deleted)

        def save():
            current["session"]["hits"] += 1
            current["session"].save()

        return load, save, connections.close_all

    return open_session


@dataclass
class Timing:
    """One timed deletion, with the writer's latencies alone and during it."""

    name: str  # who: scalekit, Django, ...
    label: str  # what ran
    seconds: float
    deleted: int | None = None
    idle: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    writer_error: str = ""

    @property
    def pause(self) -> float:
        """The longest a writer's call took during the deletion (inf if it failed)."""
        return float("inf") if self.writer_error else max(self.during, default=float("inf"))


def timed(
    name: str, label: str, action: Callable[[], int | None], open_session: OpenSession | None
) -> Timing:
    """Run ``action`` (it returns how many sessions it deleted, if it says) while the writer
    runs, after a second of the writer alone."""
    os.sync()  # the disk writes of the fill (or of the last case) are not timed
    with writer(open_session) as calls:
        if open_session:
            time.sleep(IDLE)
        start = time.perf_counter()
        deleted = action()
        end = time.perf_counter()
    error = f"{calls.errors} failed calls, first: {calls.error}" if calls.errors else ""
    idle, during = calls.latencies(start - IDLE, start), calls.latencies(start, end)
    return Timing(name, label, end - start, deleted, idle, during, error)


def cleanup(store: SessionStore, options: dict) -> Callable[[], int]:
    """``sessions2trash -o`` (-x 3600, no -f): one pass, the cutoff taken when it starts."""
    return lambda: store.cleanup(time.time() - AGE, force=False, **options).deleted


def implemented(store: SessionStore) -> bool:
    return type(store).cleanup is not SessionStore.cleanup


# -- reporting -----------------------------------------------------------------------------
@dataclass
class Row:
    store: str
    count: int
    ours: Timing
    baseline: Timing
    target: float
    ok: bool  # in time, every expired session gone and every live one kept


def print_times(count: int, target: float, ours: Timing, *others: Timing) -> bool:
    """Seconds and rate of each, the ratios to ours; true if ours is within ``target``."""
    ok = ours.seconds <= target
    print(f"   {'':<50}{'seconds':>8}{'sessions/s':>12}")
    for timing in (ours, *others):
        goal = f"   target <= {target:.2f} s   {verdict(ok)}" if timing is ours else ""
        rate = count / timing.seconds
        print(f"   {timing.label:<50}{timing.seconds:>8.2f}{rate:>12,.0f}{goal}")
    for other in others:
        print(f"   {other.name} / scalekit: {other.seconds / ours.seconds:.3g}x the time")
    return ok


def ms(values: list[float], share: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1e3:.1f}"


def print_pauses(ours: Timing, *others: Timing) -> None:
    """The writer's p99 and longest call, alone and during each deletion."""
    print(
        "   writer (another process: load + save of a live session), ms per call\n"
        f"   {'':<34}{'calls':>8}{'p99':>9}{'max':>9}"
    )
    rows = [(f"alone, the {IDLE:g} s before", ours.idle, "")]
    for timing in (ours, *others):
        goal = ""
        if timing is ours:
            goal = f"   target max <= {PAUSE_TARGET * 1e3:.0f} ms   "
            goal += verdict(ours.pause <= PAUSE_TARGET)
        rows.append((f"during {timing.name}", timing.during, goal))
    for label, values, goal in rows:
        print(f"   {label:<34}{len(values):>8,}{ms(values, 0.99):>9}{ms(values, 1):>9}{goal}")
    for timing in (ours, *others):
        if timing.writer_error:
            print(f"   writer during {timing.name}: {timing.writer_error}")


def check(timing: Timing, population: Population, left: set[str], extra: str = "") -> bool:
    """Print what survived; true if exactly the live sessions did and all expired went."""
    live = set(population.live)
    kept, stray = len(left & live), len(left - live)
    ok = kept == len(live) and not stray and timing.deleted == population.expired
    print(
        f"   {timing.name + ':':<10}deleted {timing.deleted:,} of {population.expired:,} "
        f"expired, kept {kept:,} of {len(live):,} live, {stray:,} expired left{extra}   "
        f"{verdict(ok)}"
    )
    return ok


# -- Redis ---------------------------------------------------------------------------------
# KEYS: the due index, then the sessions. ARGV: payload, old t (ms), now (ms), TTL (ms), then
# per session its id and 1 if live. The index scores a session by its expiry if it has a
# TTL, else by its last use. An expired session was saved with ttl=None (no key TTL) and
# last used 2 hours ago; a live one was saved just now with a TTL.
_FILL = """
for i = 2, #KEYS do
  local sid, live = ARGV[2 * i + 1], ARGV[2 * i + 2] == '1'
  local used = live and ARGV[3] or ARGV[2]
  redis.call('HSET', KEYS[i], 'd', ARGV[1], 'v', '0', 't', used)
  if live then
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
    redis.call('ZADD', KEYS[1], tonumber(used) + tonumber(ARGV[4]), sid)
  else
    redis.call('ZADD', KEYS[1], used, sid)
  end
end
"""


def fill_redis(client: redis.Redis, population: Population) -> None:
    fill, now_ms = client.register_script(_FILL), time.time_ns() // 10**6
    rows = iter(population.sessions)
    while batch := list(itertools.islice(rows, 2000)):
        keys = [PREFIX + "due", *(PREFIX + sid for sid, _ in batch)]
        pairs = itertools.chain.from_iterable((sid, int(live)) for sid, live in batch)
        fill(keys=keys, args=[PAYLOAD, now_ms - 2 * AGE * 1000, now_ms, TTL * 1000, *pairs])


def delete_indexed(client: redis.Redis, cutoff: float) -> int:
    """The floor: take index entries up to the cutoff, DEL their keys and ZREM them, 1,000
    a round trip, checking nothing."""
    index, last, deleted = PREFIX + "due", int(cutoff * 1000), 0
    while sids := client.zrange(index, "-inf", last, byscore=True, offset=0, num=1000):
        pipe = client.pipeline(transaction=False)
        pipe.delete(*(PREFIX + sid.decode() for sid in sids))
        pipe.zrem(index, *sids)
        pipe.execute()
        deleted += len(sids)
    return deleted


def redis_case(server: RedisServer, plan: Plan, options: dict) -> Row | None:
    client = redis.Redis.from_url(server.url)
    store = sessions.open_store(server.url, app_name=APP)
    print(f"\n1. Redis {client.info('server')['redis_version']}: {plan.redis:,} expired sessions")
    if not implemented(store):
        print("   not run: RedisStore.cleanup is not implemented yet")
        return None
    population = Population(plan.redis)
    fill_redis(client, population)
    print(
        "   expired = saved with ttl=None (no key TTL), last used 2 h ago: the sessions Redis\n"
        "   does not expire itself; live = saved now with a 24 h TTL.\n"
        "   store.cleanup(now - 3600, force=False): the -x rule for sessions without a TTL.\n"
        "   floor: as many sessions again, deleted without any check (this machine's Redis)"
    )
    ours = timed(
        "scalekit",
        "scalekit: store.cleanup",
        cleanup(store, options),
        store_session(server.url, population.live[0]),
    )
    left = {key.decode()[len(PREFIX) :] for key in client.scan_iter(PREFIX + "*", count=10_000)}
    left = {sid for sid in left if sid != "due" and not sid.startswith("lock:")}
    index = client.zcard(PREFIX + "due")
    fill_redis(client, Population(plan.redis))  # the same again, for the floor
    floor = timed(
        "floor",
        "floor: ZRANGE + DEL + ZREM, 1,000 a round trip",
        lambda: delete_indexed(client, time.time() - AGE),
        None,
    )
    client.close()
    web2py = Timing("web2py", "web2py: documented (not measured)", scaled(WEB2PY_REDIS, plan.redis))
    target = scaled(TARGETS["redis"], plan.redis)
    ok = print_times(plan.redis, target, ours, floor, web2py)
    ok &= check(ours, population, left, f", {index:,} index entries left")
    ok &= index == len(left)
    print_pauses(ours)
    return Row("redis", plan.redis, ours, floor, target, ok)


# -- SQL databases -------------------------------------------------------------------------
class Router:
    """Sends Django's session queries to the database being measured."""

    alias = "default"

    def db_for_read(self, model, **hints):
        return self.alias

    db_for_write = db_for_read


ROUTER = Router()


def configure_django(sqlite_path: str, server: PostgresServer) -> None:
    postgres = {"HOST": "127.0.0.1", "PORT": server.port, "USER": server.superuser}
    settings.configure(
        SECRET_KEY="benchmark secret, not for production",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path},
            "postgres": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": server.database,
                **postgres,
            },
        },
        DATABASE_ROUTERS=[ROUTER],
    )
    django.setup()


class SQLiteBulk:
    """Fills and reads an SQLite file directly (sqlite3, one transaction)."""

    name, alias, where = "sqlite", "default", "its own SQLite file"

    def __init__(self, folder: str):
        self.files = {
            side: os.path.join(folder, f"{side}.sqlite") for side in ("scalekit", "django")
        }
        self.url = f"sqlite://{self.files['scalekit']}"
        self.version = f"SQLite {sqlite3.sqlite_version}"

    @staticmethod
    def blob(data: bytes) -> str:
        return base64.b64encode(data).decode()  # pydal keeps blobs as base64 text

    @staticmethod
    def aware(text: str) -> str:
        return text  # Django keeps naive UTC text in SQLite

    def load(self, side: str, table: str, columns: tuple[str, ...], rows: Iterable) -> None:
        marks = ", ".join("?" * len(columns))
        with contextlib.closing(sqlite3.connect(self.files[side])) as db, db:
            db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def keys(self, side: str, table: str, column: str) -> set[str]:
        with contextlib.closing(sqlite3.connect(self.files[side])) as db:
            return {key for (key,) in db.execute(f"SELECT {column} FROM {table}")}

    def settle(self, *tables: str) -> None:
        """Nothing to do: SQLite has no background work."""


class PostgresBulk:
    """Fills (COPY) and reads the private PostgreSQL database directly."""

    name, alias, where = "postgres", "postgres", "the same database"

    def __init__(self, server: PostgresServer):
        self.url = server.url
        with contextlib.closing(self.connect()) as connection:
            number = connection.server_version
        self.version = f"PostgreSQL {number // 10000}.{number % 10000}"

    def connect(self):
        connection = psycopg2.connect(self.url.replace("postgres://", "postgresql://"))
        connection.autocommit = True
        return connection

    @staticmethod
    def blob(data: bytes) -> str:
        return "\\x" + base64.b64encode(data).hex()  # pydal: base64 in a bytea

    @staticmethod
    def aware(text: str) -> str:
        return text + "+00"

    def load(self, side: str, table: str, columns: tuple[str, ...], rows: Iterable) -> None:
        copy = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
        rows = iter(rows)
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            while batch := list(itertools.islice(rows, 100_000)):
                buffer = io.StringIO()
                csv.writer(buffer).writerows(batch)
                buffer.seek(0)
                cursor.copy_expert(copy, buffer)

    def keys(self, side: str, table: str, column: str) -> set[str]:
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT {column} FROM {table}")
            return {key for (key,) in cursor}

    def settle(self, *tables: str) -> None:
        """What autovacuum would have done by then, and no checkpoint due while we time."""
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute("CHECKPOINT")


SCALEKIT_COLUMNS = (
    "locked", "created_datetime", "modified_datetime", "unique_key", "session_data", "version",
    "expires_datetime",
)  # fmt: skip


def database_case(
    number: int, bulk: SQLiteBulk | PostgresBulk, folder: str, plan: Plan, options: dict
) -> Row | None:
    store = sessions.open_store(bulk.url, app_name=APP, folder=folder)
    print(f"\n{number}. {bulk.version}: {plan.database:,} expired rows")
    if not implemented(store):
        print("   not run: DatabaseStore.cleanup is not implemented yet")
        return None
    now, blob = time.time(), bulk.blob(PAYLOAD)
    old = (stamp(now - TTL - AGE), stamp(now - AGE))  # last touched, expired (1 h ago)
    fresh = (stamp(now), stamp(now + TTL))
    ours_population = Population(plan.database)
    store.load(new_session_id())  # the store creates its tables and indexes
    rows = (
        ("F", touched, touched, sid, blob, 1, expires)
        for sid, live in ours_population.sessions
        for touched, expires in [fresh if live else old]
    )
    bulk.load("scalekit", store.table, SCALEKIT_COLUMNS, rows)

    ROUTER.alias = bulk.alias
    call_command("migrate", "sessions", database=bulk.alias, verbosity=0)
    theirs = Population(plan.database, new_id=lambda: os.urandom(16).hex())
    text = PAYLOAD.decode()
    rows = ((key, text, bulk.aware(fresh[1] if live else old[1])) for key, live in theirs.sessions)
    bulk.load("django", "django_session", ("session_key", "session_data", "expire_date"), rows)
    from django.contrib.sessions.backends.db import SessionStore

    django_writer = SessionStore()
    django_writer["hits"] = 0
    django_writer.save()  # the session Django's writer uses: one more live one
    theirs.live.append(django_writer.session_key)
    bulk.settle(store.table, "django_session")
    connections.close_all()  # the writer process opens its own
    print(
        f"   expired = expires_datetime 1 h ago (24 h TTL, touched 25 h ago); live = touched "
        f"now.\n   store.cleanup(now - 3600, force=False): the stored expiry has passed.\n"
        f"   Django: as many rows in django_session ({bulk.where}), expired by expire_date"
    )
    ours = timed(
        "scalekit",
        "scalekit: store.cleanup",
        cleanup(store, options),
        store_session(bulk.url, ours_population.live[0], folder=folder),
    )
    bulk.settle()
    django = timed(
        "Django",
        "Django: call_command('clearsessions')",
        lambda: call_command("clearsessions"),
        django_session(django_writer.session_key),
    )
    connections.close_all()
    target = scaled(TARGETS[bulk.name], plan.database)
    ok = print_times(plan.database, target, ours, django)
    ok &= check(ours, ours_population, bulk.keys("scalekit", store.table, "unique_key"))
    left = bulk.keys("django", "django_session", "session_key")
    django.deleted = len(theirs.sessions) + 1 - len(left)  # clearsessions does not say
    check(django, theirs, left)
    print_pauses(ours, django)
    return Row(bulk.name, plan.database, ours, django, target, ok)


# -- files ---------------------------------------------------------------------------------
def fill_files(folder: str, population: Population) -> None:
    """Session files in the FileStore's layout: ``<folder>/<sid[:2]>/<sid>``, a header line
    then the payload; expired ones last written 25 h ago with a 24 h TTL."""
    old, shards = time.time() - TTL - AGE, set()
    tail = f"{TTL} {len(PAYLOAD)} {zlib.crc32(PAYLOAD):08x}\n".encode()
    for sid, live in population.sessions:
        shard = os.path.join(folder, sid[:2])
        if shard not in shards:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            shards.add(shard)
        path = os.path.join(shard, sid)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(descriptor, b"SKS1 " + secrets.token_hex(8).encode() + b" " + tail + PAYLOAD)
        os.close(descriptor)
        if not live:
            os.utime(path, (old, old))


def session_files(folder: str) -> set[str]:
    return {name for _, _, names in os.walk(folder) for name in names if "." not in name}


def unlink_old(folder: str, cutoff: float) -> int:
    """web2py's loop for file sessions: walk, stat, unlink what is old (no header read)."""
    deleted = 0
    for shard in os.scandir(folder):
        for entry in os.scandir(shard.path):
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                deleted += 1
    return deleted


def file_case(root: str, plan: Plan, options: dict) -> Row | None:
    url = f"file://{os.path.join(root, 'scalekit')}"
    store = sessions.open_store(url, app_name=APP)
    print(f"\n4. Files: {plan.files:,} expired session files")
    if not implemented(store):
        print("   not run: FileStore.cleanup is not implemented yet")
        return None
    population = Population(plan.files)
    fill_files(store.folder, population)
    plain_folder = os.path.join(root, "plain")
    fill_files(plain_folder, Population(plan.files))
    print(
        "   expired = header TTL 24 h, file written 25 h ago; live = written now.\n"
        "   store.cleanup(now - 3600, force=False): the stored expiry has passed.\n"
        "   plain loop: as many files in a second folder. Writer: the default, fsync=True"
    )
    ours = timed(
        "scalekit",
        "scalekit: store.cleanup",
        cleanup(store, options),
        store_session(url, population.live[0]),
    )
    plain = timed(
        "plain",
        "plain loop: scandir, stat, unlink; one thread",
        lambda: unlink_old(plain_folder, time.time() - AGE),
        None,
    )
    target = scaled(TARGETS["file"], plan.files)
    ok = print_times(plan.files, target, ours, plain)
    ok &= check(ours, population, session_files(store.folder))
    print_pauses(ours)
    return Row("file", plan.files, ours, plain, target, ok)


# -- main ----------------------------------------------------------------------------------
def summary(rows: list[Row]) -> None:
    print(
        "\nSummary: one run each; ratio = the baseline's time / scalekit's; pause = the longest"
        "\nsession write during scalekit's cleanup; verdict: time, survivors and pause in target"
    )
    print(
        f"   {'store':<10}{'expired':>10}{'scalekit':>10}{'target':>8}  {'baseline':<10}"
        f"{'seconds':>8}{'ratio':>8}{'pause':>11}   verdict"
    )
    for row in rows:
        ours, ok = row.ours, row.ok and row.ours.pause <= PAUSE_TARGET
        print(
            f"   {row.store:<10}{row.count:>10,}{ours.seconds:>9.2f}s{row.target:>7.2f}s  "
            f"{row.baseline.name:<10}{row.baseline.seconds:>7.2f}s"
            f"{row.baseline.seconds / ours.seconds:>7.3g}x{ours.pause * 1e3:>8.1f} ms   "
            f"{verdict(ok)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a tenth the sessions")
    parser.add_argument("--batch", type=int, help="cleanup batch size (default: the store's)")
    parser.add_argument("--tmp", help="where the SQLite files and session files go")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    options = {} if args.batch is None else {"batch": args.batch}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the servers stop
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer().running())
        postgres_server = stack.enter_context(PostgresServer().running())
        folder = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="scalekit-bench-trash-", dir=args.tmp)
        )
        sqlite = SQLiteBulk(folder)
        configure_django(sqlite.files["django"], postgres_server)
        print(
            f"sessions2trash ({'quick' if plan is QUICK else 'full'} run): private servers on "
            f"127.0.0.1, Python {sys.version.split()[0]}, Django {django.__version__}, "
            f"redis-py {redis.__version__}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f} (others at work distort the times); cleanup batch "
            f"{args.batch or 'default'}; one live session per {LIVE_EVERY} expired"
            + ("\nquick: a tenth of the sessions, targets scaled to match" if args.quick else "")
        )
        rows = [
            redis_case(redis_server, plan, options),
            database_case(2, sqlite, folder, plan, options),
            database_case(3, PostgresBulk(postgres_server), folder, plan, options),
            file_case(folder, plan, options),
        ]
        summary([row for row in rows if row])
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: the servers are already stopped and removed
        sys.exit(130)
