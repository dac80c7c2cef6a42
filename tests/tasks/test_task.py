"""The task codec: signed payloads, what they hold, what they refuse (no server needed)."""

from __future__ import annotations

import datetime
import decimal
import os
import pickle
import re
import statistics
import time

import pytest

from scalekit.core.errors import ConfigError, CorruptData
from scalekit.tasks.errors import NotDeferrable, PayloadTooLarge
from scalekit.tasks.task import Codec, Task, decode, encode, new_task_id

SECRET = "s" * 32
OTHER = "o" * 32


class Counter:
    def __init__(self, start):
        self.value = start
        self.when = datetime.date(2026, 1, 2)

    def add(self, n):
        return self.value + n


class Packed:
    """State through __getstate__/__setstate__."""

    def __init__(self, items):
        self.items = items

    def __getstate__(self):
        return {"packed": list(self.items)}

    def __setstate__(self, state):
        self.items = tuple(state["packed"])

    def count(self):
        return len(self.items)


class Slotted:
    __slots__ = ("x",)

    def get(self):
        return self.x


class Opaque:
    def __init__(self):
        self.lock = object()


def make_task(**changes) -> Task:
    values = {"id": new_task_id(), "queue": "default", "function": "builtins:len"}
    return Task(**{**values, "args": (), "kwargs": {}, "request_id": "req-1", **changes})


def roundtrip(task: Task, serializer: str = "json") -> Task:
    return decode(encode(task, secret=SECRET, serializer=serializer), secret=SECRET)


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_every_field_round_trips(serializer):
    args = (1, "é", 2.5, None, True, [1, (2, 3)], {4: "int key", "s": {5, 6}})
    kwargs = {"when": datetime.datetime(2026, 12, 4, 21, 0), "amount": decimal.Decimal("1.10"),
              "blob": b"\x00\xff", "nested": {" looks like a tag": 1}}  # fmt: skip
    task = make_task(args=args, kwargs=kwargs, name="n1", eta=123.5, attempts=2, max_attempts=7,
                     min_backoff=0.5, max_backoff=60.0, max_age=3600.0, timeout=9.0)  # fmt: skip
    assert roundtrip(task, serializer) == task


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_bound_method_target_round_trips_by_its_dict(serializer):
    task = make_task(function=f"{__name__}:Counter.add", target=Counter(40), args=(2,))
    back = roundtrip(task, serializer)
    assert type(back.target) is Counter and vars(back.target) == vars(task.target)
    assert back.resolve()(*back.args) == 42


def test_a_json_target_is_rebuilt_with_setstate():
    task = make_task(function=f"{__name__}:Packed.count", target=Packed([1, 2, 3]))
    back = roundtrip(task)
    assert back.target.items == (1, 2, 3) and back.resolve()() == 3


def test_pickle_stores_what_json_cannot():
    slotted = Slotted()
    slotted.x = frozenset({1})
    task = make_task(function=f"{__name__}:Slotted.get", target=slotted, args=(Counter(1),))
    back = roundtrip(task, "pickle")
    assert back.resolve()() == frozenset({1}) and back.args[0].value == 1


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"args": (object(),)}, r"args\[0\] holds a object, which JSON cannot store"),
        ({"kwargs": {"when": {"x": [Counter(1)]}}}, r"kwargs\.when\.x\[0\] holds a Counter"),
        ({"target": Slotted(), "function": f"{__name__}:Slotted.get"}, "without __dict__"),
        ({"target": Opaque(), "function": "builtins:len"}, r"target\.state\.lock holds a object"),
    ],
)
def test_json_refuses_what_it_cannot_store_naming_where(changes, problem):
    with pytest.raises(NotDeferrable, match=problem):
        encode(make_task(**changes), secret=SECRET)


def test_a_target_of_a_class_a_worker_cannot_import_is_refused():
    class Local:
        def run(self):
            pass

    with pytest.raises(NotDeferrable, match="nested function or closure"):
        encode(make_task(function="builtins:len", target=Local()), secret=SECRET)


def test_pickle_refuses_the_unpicklable():
    with pytest.raises(NotDeferrable, match="cannot be pickled"):
        encode(make_task(args=(lambda: 1,)), secret=SECRET, serializer="pickle")


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_payload_over_max_payload_names_its_size_and_the_limit(serializer):
    task = make_task(args=("x" * 5000,))
    size = len(encode(task, secret=SECRET, serializer=serializer))
    assert len(encode(task, secret=SECRET, serializer=serializer, max_payload=size)) == size
    with pytest.raises(PayloadTooLarge, match=f"is {size} bytes, over max_payload={size - 1}"):
        encode(task, secret=SECRET, serializer=serializer, max_payload=size - 1)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="use 'json' or 'pickle'"):
        Codec(SECRET, serializer="yaml")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Codec("short")
    with pytest.raises(ConfigError, match="max_payload"):
        Codec(SECRET, max_payload=0)


def _flip(payload: bytes, index: int) -> bytes:
    return payload[:index] + bytes([payload[index] ^ 1]) + payload[index + 1 :]


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_tampered_forged_or_truncated_payloads_are_corrupt(serializer):
    good = encode(make_task(args=(1,)), secret=SECRET, serializer=serializer)
    bad = {
        "body altered": _flip(good, len(good) - 3),
        "signature altered": _flip(good, 5),
        "serializer letter changed": good[:1] + (b"p" if serializer == "json" else b"j") + good[2:],
        "signed with another secret": encode(make_task(), secret=OTHER, serializer=serializer),
        "truncated": good[:20],
        "empty": b"",
    }
    for payload in bad.values():
        with pytest.raises(CorruptData):
            decode(payload, secret=SECRET)
    with pytest.raises(CorruptData, match="unknown format"):
        decode(bytes([2]) + good[1:], secret=SECRET)
    with pytest.raises(CorruptData, match="is bytes, not str"):
        decode("text", secret=SECRET)


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_unsigned_or_forged_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_CreatesFile(str(marker)))
    forged = [
        bytes([1]) + b"p" + b"\0" * 32 + evil,  # no real signature
        evil,  # a bare pickle
        bytes([1]) + b"p" + Codec(OTHER).encode(make_task())[2:34] + evil,  # a foreign one
    ]
    for payload in forged:
        with pytest.raises(CorruptData):
            decode(payload, secret=SECRET)
    assert not marker.exists()


def test_an_old_secret_still_verifies_after_rotation():
    payload = encode(make_task(), secret=OTHER)
    assert decode(payload, secret=[SECRET, OTHER]).function == "builtins:len"
    with pytest.raises(CorruptData):
        decode(payload, secret=SECRET)


def test_task_ids_are_time_ordered_unique_and_url_safe():
    ids = []
    for _ in range(3):
        ids += [new_task_id() for _ in range(500)]
        time.sleep(0.002)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert max(ids[:500]) < min(ids[500:1000]) and max(ids[500:1000]) < min(ids[1000:])


def test_next_retry_grows_within_its_bounds_with_spread():
    now = 1000.0
    for attempts, (low, high) in {1: (1, 1), 2: (1, 2), 3: (2, 4), 4: (4, 8), 12: (5, 10)}.items():
        task = make_task(attempts=attempts, max_attempts=20, min_backoff=1, max_backoff=10)
        delays = [task.next_retry(now) - now for _ in range(2000)]
        assert low <= min(delays) and max(delays) <= high
        if high - low >= 1:  # equal jitter: uniform over the upper half of the cap
            assert statistics.pstdev(delays) > (high - low) / 5
            assert abs(statistics.mean(delays) - (low + high) / 2) < (high - low) / 10


def test_next_retry_stops_after_max_attempts_or_max_age():
    assert make_task(attempts=5, max_attempts=5).next_retry(0.0) is None
    assert make_task(attempts=4, max_attempts=5).next_retry(0.0) is not None
    young = make_task(attempts=1, created=0.0, max_age=100.0, min_backoff=1, max_backoff=1)
    assert young.next_retry(50.0) == 51.0
    assert young.next_retry(99.5) is None  # the try would start after max_age
    assert make_task(attempts=1, created=0.0, max_age=None).next_retry(10**9) is not None


def test_decode_reads_both_serializers_with_the_same_secret():
    task = make_task(args=(os.sep,))
    for serializer in ("json", "pickle"):
        assert Codec(SECRET).decode(encode(task, secret=SECRET, serializer=serializer)) == task
