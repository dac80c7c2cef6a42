"""What the benchmarks share: cases timed in turns, and the statistics their claims rest on.

A benchmark script (``python benchmarks/<claim>.py``) imports it as ``harness``: the script's
folder is first on ``sys.path``. A folder, not a module beside the scripts, so that
``make bench`` does not run it as a benchmark.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["differences", "interleaved", "median", "per_round", "serve", "spread", "verdict"]


def interleaved(
    cases: dict[str, Callable[[], object]],
    number: int,
    rounds: int,
    setup: Callable[[str], None] = lambda name: None,
) -> dict[str, list[float]]:
    """Each case's µs per call in every round; the cases take turns, one later each round
    (so a drift of the machine's speed touches them all alike). ``setup(name)`` runs,
    untimed, before each case's turn."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            func = cases[name]
            setup(name)
            gc.collect()
            start = time.perf_counter()
            for _ in range(number):
                func()
            times[name].append((time.perf_counter() - start) / number * 1e6)
    return times


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def differences(a: list[float], b: list[float]) -> list[float]:
    """Round by round, ``a - b``."""
    return [x - y for x, y in zip(a, b, strict=True)]


def per_round(op: Callable[[float, float], float], a: list[float], b: list[float]) -> float:
    """The median over the rounds of ``op(a, b)``: immune to the machine's speed drifting."""
    return median(op(x, y) for x, y in zip(a, b, strict=True))


def spread(values: list[float]) -> str:
    """The middle half of the per-round values: where the median sits in the noise."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.1f}..{q3:.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def serve(app: Callable, base: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """One request as a WSGI server makes it: a fresh copy of ``base``, ``start_response``,
    the body iterated and closed. Its status, headers and body."""
    response: list = []

    def start_response(status, headers, exc_info=None):
        response[:] = [status, headers]
        return lambda data: None

    result = app(dict(base), start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return response[0], response[1], body
