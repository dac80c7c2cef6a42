"""Cache hits: scalekit's cache.ram and cache.redis vs their floors, cachelib and dogpile.cache.

What the cache issue claims, measured in one run against the same private redis-server:

1. A ram cache hit, ``cache.ram("k", f, 300)``, costs at most 2x the floor: a get-or-create
   on a plain dict behind a ``threading.Lock``.
2. A Redis cache hit, ``cache.redis("k", f, 300)``, costs at most 1.2x the floor: a raw
   redis-py ``GET`` of a value of the same size.
3. For scale, the same get-or-create hit on the same backend with cachelib (``SimpleCache``,
   ``RedisCache``) and dogpile.cache (``dogpile.cache.memory``, ``dogpile.cache.redis``).

The value is a ~200-byte dict (a product record). Every case is called as
``func(key, f, 300)`` (the floor of 2. as ``client.get(key)``) from the same loop, and
every measured call is a hit: each ``f`` counts its calls, which must not grow after the
warm-up. A reference row shows the Redis floor plus ``json.loads``: what decoding the value
costs. The machine may be noisy: the cases take turns within each round, every figure is
a median over the rounds, and every ratio is the median of the per-round ratios.
Run: ``.venv/bin/python benchmarks/cache.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import redis
from cachelib import RedisCache, SimpleCache
from dogpile.cache import make_region

from scalekit.cache import Cache, CacheModel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import RedisServer

APP = "bench"
KEY = "product:48213"
TIME_EXPIRE = 300
#: A typical small cached value: 208 bytes as scalekit's JSON, 223 as a pickle.
VALUE = {
    "id": 48213,
    "sku": "TS-0042-BLU-M",
    "name": "Organic cotton t-shirt, navy blue",
    "price_cents": 1990,
    "currency": "EUR",
    "stock": 137,
    "tags": ["apparel", "cotton", "summer"],
    "rating": 4.6,
    "updated": "2025-05-14T09:21:07Z",
}


@dataclass(frozen=True)
class Plan:
    rounds: int  # every figure is a median over this many rounds
    ram_calls: int  # calls per case in one round of 1.
    redis_calls: int  # calls per case in one round of 2.


# Many short rounds: a burst of load from elsewhere then hits one round of every case alike.
FULL = Plan(rounds=61, ram_calls=20_000, redis_calls=1_000)
QUICK = Plan(rounds=9, ram_calls=5_000, redis_calls=200)


# -- timing --------------------------------------------------------------------------------
Case = tuple[Callable[..., Any], tuple]  # a function and its arguments


def interleaved(cases: dict[str, Case], number: int, rounds: int) -> dict[str, list[float]]:
    """Each case's µs per call in every round; the cases take turns, one later each round."""
    names = list(cases)
    times: dict = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            func, args = cases[name]
            start = time.perf_counter()
            for _ in range(number):
                func(*args)
            times[name].append((time.perf_counter() - start) / number * 1e6)
    return times


def median(values) -> float:
    return statistics.median(values)


def per_round(a: list[float], b: list[float]) -> float:
    """The median over the rounds of ``a / b``: immune to the machine's speed drifting."""
    return median(x / y for x, y in zip(a, b, strict=True))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- the cases -----------------------------------------------------------------------------
class Creator:
    """The ``f`` of one case: builds the value and counts how often it had to."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return dict(VALUE)


def locked_dict() -> Callable[[str, Callable, float], Any]:
    """The floor of 1.: the least an application can write, a dict behind a lock."""
    data: dict[str, Any] = {}
    lock = threading.Lock()

    def get_or_create(key: str, f: Callable[[], Any], time_expire: float) -> Any:
        with lock:
            value = data.get(key)
        if value is None:
            value = f()
            with lock:
                data[key] = value
        return value

    return get_or_create


def cachelib_get_or_create(cache: SimpleCache | RedisCache) -> Callable:
    """cachelib has no get-or-create: the usual ``get``, then ``f`` and ``set`` on a miss."""

    def get_or_create(key: str, f: Callable[[], Any], time_expire: float) -> Any:
        value = cache.get(key)
        if value is None:
            value = f()
            cache.set(key, value, timeout=time_expire)
        return value

    return get_or_create


def measure(
    cases: dict[str, Case],
    creators: dict[str, Creator],
    expect: dict[str, Any],
    number: int,
    rounds: int,
) -> dict[str, list[float]]:
    """Warm up (each case's ``f`` runs once: the miss that fills the cache), check what every
    case returns (``expect``, default the value), then time; every timed call must be a hit."""
    interleaved(cases, max(number // 10, 20), rounds=1)
    for name, (func, args) in cases.items():
        if func(*args) != expect.get(name, VALUE):
            raise RuntimeError(f"{name} does not return the cached value")
    before = {name: creator.calls for name, creator in creators.items()}
    if set(before.values()) != {1}:
        raise RuntimeError(f"the warm-up should call each f once: {before}")
    t = interleaved(cases, number, rounds)
    after = {name: creator.calls for name, creator in creators.items()}
    if after != before:
        raise RuntimeError(f"a timed call was a miss (f calls {before} -> {after})")
    return t


def check_hits(model: Any, before: int, number: int, rounds: int) -> None:
    """``model`` counted a hit for every call but the warm-up's first, a miss."""
    expected = max(number // 10, 20) - 1 + 1 + number * rounds  # warm-up, check, timed
    if model.hits - before != expected:
        raise RuntimeError(f"{model!r} counted {model.hits - before} hits, not {expected}")


def report(title: str, t: dict[str, list[float]], labels: dict[str, str], target: float) -> None:
    """The table (µs per call and per-round ratio to the floor), then the verdicts."""
    print(title)
    print(f"   {'case':<46}{'µs/op':>8}{'x floor':>10}")
    for name, label in labels.items():
        ratio = per_round(t[name], t["floor"])
        print(f"   {label:<46}{median(t[name]):8.2f}{ratio:9.2f}x")
    ratio = per_round(t["scalekit"], t["floor"])
    print(
        f"   scalekit / floor          {ratio:5.2f}x   target <= {target:g}x   "
        f"{verdict(ratio <= target)}"
    )
    for name in ("cachelib", "dogpile.cache"):
        slower = per_round(t[name], t["scalekit"])
        print(f"   {name + ' / scalekit':<26}{slower:5.2f}x   (above 1: scalekit is faster)")


# -- 1. ram --------------------------------------------------------------------------------
def ram_hits(model: CacheModel, plan: Plan) -> None:
    region = make_region().configure("dogpile.cache.memory")
    creators = {name: Creator() for name in ("floor", "scalekit", "cachelib", "dogpile.cache")}
    cases: dict[str, Case] = {
        "floor": (locked_dict(), (KEY, creators["floor"], TIME_EXPIRE)),
        "scalekit": (model, (KEY, creators["scalekit"], TIME_EXPIRE)),
        "cachelib": (
            cachelib_get_or_create(SimpleCache(default_timeout=TIME_EXPIRE)),
            (KEY, creators["cachelib"], TIME_EXPIRE),
        ),
        "dogpile.cache": (region.get_or_create, (KEY, creators["dogpile.cache"], TIME_EXPIRE)),
    }
    hits = model.hits
    t = measure(cases, creators, {}, plan.ram_calls, plan.rounds)
    check_hits(model, hits, plan.ram_calls, plan.rounds)
    report(
        f"\n1. ram cache hit, µs per call (median of {plan.rounds} rounds x "
        f"{plan.ram_calls:,} calls)",
        t,
        {
            "floor": "floor: dict.get under a threading.Lock",
            "scalekit": f"scalekit: cache.ram(key, f, {TIME_EXPIRE})",
            "cachelib": "cachelib: SimpleCache.get (pickled values)",
            "dogpile.cache": "dogpile.cache: memory region.get_or_create",
        },
        target=2,
    )


# -- 2. Redis ------------------------------------------------------------------------------
def redis_hits(model: CacheModel, url: str, plan: Plan, stack: contextlib.ExitStack) -> None:
    client = stack.enter_context(redis.Redis.from_url(url))  # the floor's
    cachelib = RedisCache(
        host=stack.enter_context(redis.Redis.from_url(url)), key_prefix="cachelib:"
    )
    region = make_region().configure(
        "dogpile.cache.redis",
        arguments={"url": url, "redis_expiration_time": TIME_EXPIRE + 300},
    )
    stack.callback(lambda: region.backend.writer_client.close())

    # The floor's value: the very bytes scalekit stores (the "v" field of its entry's hash).
    model(KEY, Creator(), TIME_EXPIRE)
    entry, floor_key = f"scalekit:c:{APP}:v:{KEY}", "floor:" + KEY
    payload = client.hget(entry, "v")
    if payload is None:
        raise RuntimeError(f"no scalekit entry at {entry}: has its Redis layout changed?")
    model.delete(KEY)
    client.set(floor_key, payload, ex=TIME_EXPIRE + 300)

    creators = {name: Creator() for name in ("scalekit", "cachelib", "dogpile.cache")}
    cases: dict[str, Case] = {
        "floor": (client.get, (floor_key,)),
        "decoded": (lambda key: json.loads(client.get(key)), (floor_key,)),
        "scalekit": (model, (KEY, creators["scalekit"], TIME_EXPIRE)),
        "cachelib": (cachelib_get_or_create(cachelib), (KEY, creators["cachelib"], TIME_EXPIRE)),
        "dogpile.cache": (
            region.get_or_create,
            ("dogpile:" + KEY, creators["dogpile.cache"], TIME_EXPIRE),
        ),
    }
    hits = model.hits
    t = measure(cases, creators, {"floor": payload}, plan.redis_calls, plan.rounds)
    check_hits(model, hits, plan.redis_calls, plan.rounds)
    sizes = {
        "floor": f"{client.strlen(floor_key)}",
        "scalekit": f"{client.hstrlen(entry, 'v')} (JSON, field v of a hash)",
        "cachelib": f"{client.strlen('cachelib:' + KEY)} (pickle)",
        "dogpile.cache": f"{client.strlen('dogpile:' + KEY)} (pickled CachedValue)",
    }
    report(
        f"\n2. Redis cache hit, µs per call (median of {plan.rounds} rounds x "
        f"{plan.redis_calls:,} calls)\n   stored value bytes: "
        + ", ".join(f"{name} {size}" for name, size in sizes.items()),
        t,
        {
            "floor": "floor: redis-py GET of the same bytes",
            "decoded": "for reference: the floor + json.loads",
            "scalekit": f"scalekit: cache.redis(key, f, {TIME_EXPIRE})",
            "cachelib": "cachelib: RedisCache.get",
            "dogpile.cache": "dogpile.cache: redis region.get_or_create",
        },
        target=1.2,
    )


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer iterations")
    plan = QUICK if parser.parse_args().quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the server stops
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer().running())
        with redis.Redis.from_url(server.url) as admin:
            server_version = admin.info("server")["redis_version"]
        print(
            f"cache hits ({'quick' if plan is QUICK else 'full'} run): private redis-server "
            f"{server_version} on 127.0.0.1, Python {sys.version.split()[0]}, redis-py "
            f"{redis.__version__} (hiredis {redis.utils.HIREDIS_AVAILABLE}), cachelib "
            f"{version('cachelib')}, dogpile.cache {version('dogpile.cache')}, "
            f"{os.cpu_count()} CPUs\n"
            "figures: medians over rounds in which the cases take turns; "
            "ratios: medians of the per-round ratios"
        )
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="scalekit-bench-"))
        cache = Cache(APP, redis=server.url, folder=folder)  # cache.disk is never used
        stack.callback(cache.close)
        ram_hits(cache.ram, plan)
        redis_hits(cache.redis, server.url, plan, stack)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: the server is already stopped and removed
        sys.exit(130)
