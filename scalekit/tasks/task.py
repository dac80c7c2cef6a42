"""A deferred call and the signed bytes an engine stores for it.

A payload is ``version byte (1) + serializer letter (j: tagged JSON, p: pickle) + HMAC-SHA256
(32 bytes) + body``, the body the task's fields in order (a list); the signature covers the
version, the letter and the body. Every payload is signed whatever the serializer: a task
names a callable by import path, so whoever could write an unsigned payload into Redis or the
table would run ``os:system`` on the workers.
:func:`decode` checks the signature before it reads anything, so an unsigned or altered
pickle is never unpickled. Payloads are signed with the Tasks secret (a list rotates it).

With tagged JSON (the default) the arguments are what :mod:`scalekit.core.tagged_json`
stores, dicts with any keys too. A bound method's object (the *target*) is stored as its
class's import path and its state (``__getstate__()`` if the class defines one, else its
``__dict__``), rebuilt with ``cls.__new__(cls)`` then ``__setstate__(state)`` (or a
``__dict__`` update); so it must be an instance of an importable class whose state tagged
JSON stores. With ``serializer="pickle"`` anything picklable is an argument or a target.
"""

from __future__ import annotations

import os
import pickle
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from scalekit.core import tagged_json
from scalekit.core.errors import ConfigError, CorruptData
from scalekit.core.signing import SIGNATURE_SIZE, Signer
from scalekit.tasks import callables
from scalekit.tasks.errors import NotDeferrable, PayloadTooLarge

__all__ = ["SERIALIZERS", "Codec", "Task", "decode", "encode", "new_task_id"]

VERSION = 1
SERIALIZERS = {"json": b"j", "pickle": b"p"}
_HEADER = 2  # the version byte and the serializer letter
#: What task arguments may hold with tagged JSON (dicts with any keys, as pickle keeps them).
TASK_JSON = tagged_json.Extension(any_keys=True)


def new_task_id() -> str:
    """A unique, time-ordered id: 48 bits of Unix milliseconds then 80 random bits, as 32
    lowercase hex digits (URL-safe, and the same under a case-insensitive SQL collation);
    ids made in a later millisecond sort later."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclass
class Task:
    """One deferred call: what to run, with what, and how to retry it."""

    id: str
    queue: str
    #: the callable's import path "package.module:Qual.name"
    function: str
    args: tuple
    kwargs: dict
    #: the object a bound method is bound to
    target: object | None = None
    name: str | None = None
    #: Unix time the task was asked to run at; None: at once
    eta: float | None = None
    #: failed runs so far; 0 at first
    attempts: int = 0
    max_attempts: int = 5
    min_backoff: float = 1.0
    max_backoff: float = 3600.0
    #: seconds after ``created`` when no new try starts; None: no limit
    max_age: float | None = None
    #: seconds a run may take; None: no limit
    timeout: float | None = None
    created: float = field(default_factory=time.time)
    #: the id of the request that deferred it
    request_id: str | None = None

    def resolve(self) -> Callable[..., Any]:
        """The callable, imported again and checked (:class:`NotDeferrable` if the path
        names something else, or the target does not fit the method)."""
        return callables.resolve(self.function, self.target)

    def next_retry(self, now: float) -> float | None:
        """The Unix time of the next try after a failed run already counted in ``attempts``;
        None when there is none: ``attempts >= max_attempts``, or it would start more than
        ``max_age`` after ``created``.

        Exponential backoff with "equal jitter": the n-th retry waits a uniformly random
        time between half of ``min_backoff * 2**(n-1)`` (capped at ``max_backoff``) and that
        cap, never less than ``min_backoff``: retries still grow, and tasks that failed
        together (a service down) do not all come back in the same instant."""
        if self.attempts >= self.max_attempts:
            return None
        cap = min(self.max_backoff, self.min_backoff * 2.0 ** min(max(self.attempts, 1) - 1, 64))
        eta = now + max(self.min_backoff, random.uniform(cap / 2, cap))
        if self.max_age is not None and eta > self.created + self.max_age:
            return None
        return eta


_FIELDS = tuple(f.name for f in fields(Task))
_ARGS, _KWARGS, _TARGET = map(_FIELDS.index, ("args", "kwargs", "target"))


class Codec:
    """Encode tasks into signed bytes and back, with one secret (or a list: the first signs,
    every one verifies), one serializer and one size limit."""

    def __init__(
        self,
        secret: str | bytes | Sequence[str | bytes],
        serializer: str = "json",
        max_payload: int = 1 << 20,
    ):
        if serializer not in SERIALIZERS:
            raise ConfigError(f"task serializer {serializer!r}: use 'json' or 'pickle'")
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 64:
            raise ConfigError(f"max_payload {max_payload!r} must be a number of bytes, 64 or more")
        self._signer = Signer(secret, "task payload")
        self.serializer, self.max_payload = serializer, max_payload

    def encode(self, task: Task) -> bytes:
        """The signed payload; :class:`NotDeferrable` if an argument or the target cannot be
        stored, :class:`PayloadTooLarge` (naming both sizes) over ``max_payload``."""
        return self._encode(task, self.serializer, self.max_payload)

    def reencode(self, task: Task, like: bytes) -> bytes:
        """``task`` (read from the stored payload ``like``, then changed: one more attempt,
        attempts reset) signed anew with the serializer that wrote ``like`` and no size limit
        of this codec's: what a task was stored as, it can be stored as again, whatever the
        serializer and ``max_payload`` of the worker or command settling it."""
        serializer = next((n for n, letter in SERIALIZERS.items() if like[1:2] == letter), None)
        return self._encode(
            task, serializer or self.serializer, max(self.max_payload, 2 * len(like))
        )

    def _encode(self, task: Task, serializer: str, max_payload: int) -> bytes:
        head = bytes((VERSION,)) + SERIALIZERS[serializer]
        body = _pickle(task) if serializer == "pickle" else _json(task)
        size = _HEADER + SIGNATURE_SIZE + len(body)
        if size > max_payload:
            raise PayloadTooLarge(
                f"task {task.function}: the payload is {size} bytes, over max_payload="
                f"{max_payload}: pass a reference (a key, a file name) instead of the data"
            )
        return head + self._signer.sign(head + body) + body

    def decode(self, payload: bytes) -> Task:
        """The task in a payload; :class:`CorruptData` if it is not a payload of this
        version, or its signature does not verify (then nothing of it is read)."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise CorruptData(f"a task payload is bytes, not {type(payload).__name__}")
        payload = bytes(payload)
        head, signature = payload[:_HEADER], payload[_HEADER : _HEADER + SIGNATURE_SIZE]
        body = payload[_HEADER + SIGNATURE_SIZE :]
        if len(payload) < _HEADER + SIGNATURE_SIZE:
            raise CorruptData(f"a task payload of {len(payload)} bytes is truncated")
        if head[0] != VERSION or head[1:] not in SERIALIZERS.values():
            raise CorruptData(f"a task payload of an unknown format {head!r} (version {VERSION})")
        if not self._signer.verify(head + body, signature):
            raise CorruptData(
                "a task payload with a bad signature (altered, forged or signed with another "
                "secret): not read"
            )
        try:
            values = pickle.loads(body) if head[1:] == b"p" else _from_json(body)
            return _task(values)
        except Exception as exc:  # noqa: BLE001 - whatever a signed but unreadable body raises
            raise CorruptData(
                f"a signed task payload cannot be read ({type(exc).__name__}: {exc})"
            ) from None


def encode(
    task: Task,
    *,
    secret: str | bytes | Sequence[str | bytes],
    serializer: str = "json",
    max_payload: int = 1 << 20,
) -> bytes:
    """``task`` as signed bytes (see :meth:`Codec.encode`)."""
    return Codec(secret, serializer, max_payload).encode(task)


def decode(payload: bytes, *, secret: str | bytes | Sequence[str | bytes]) -> Task:
    """The task in signed bytes, whichever serializer wrote them (see :meth:`Codec.decode`)."""
    return Codec(secret).decode(payload)


def _pickle(task: Task) -> bytes:
    try:
        return pickle.dumps(_values(task), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling fails in many ways, all told here
        raise NotDeferrable(
            f"task {task.function}: an argument cannot be pickled ({type(exc).__name__}: {exc})"
        ) from None


def _json(task: Task) -> bytes:
    """Tagged JSON; only the arguments and the target are walked (the other fields are
    JSON already), so an enqueue pays for what it passes."""
    values = _values(task)
    values[_ARGS] = list(task.args)
    values[_TARGET] = None if task.target is None else _target_to_plain(task)
    for index in (_ARGS, _KWARGS, _TARGET):
        try:
            values[index] = tagged_json.to_tagged(values[index], TASK_JSON)
        except tagged_json.NotJSON as exc:
            raise NotDeferrable(
                f"task {task.function}: {_FIELDS[index]}{exc.path} {exc.problem}; arguments "
                f"may hold {TASK_JSON.allowed} (or use serializer='pickle')"
            ) from None
    try:
        return tagged_json.ENCODER.encode(values).encode("utf-8")
    except (TypeError, ValueError) as exc:  # circular references, a field of a wrong type
        raise NotDeferrable(f"task {task.function}: it cannot be JSON: {exc}") from None


def _target_to_plain(task: Task) -> dict[str, Any]:
    """A bound method's object as ``{"class": path, "state": state}``."""
    target, cls = task.target, type(task.target)
    getstate = getattr(cls, "__getstate__", None)
    if getstate is not None and getstate is not getattr(object, "__getstate__", None):
        state = target.__getstate__()
    elif hasattr(target, "__dict__"):
        state = vars(target)
    else:
        raise NotDeferrable(
            f"task {task.function}: it is bound to a {cls.__name__} without __dict__ or "
            "__getstate__, which JSON cannot store (or use serializer='pickle')"
        )
    try:
        path = callables.class_path(cls)
    except NotDeferrable as exc:
        raise NotDeferrable(f"task {task.function}: the object it is bound to: {exc}") from None
    return {"class": path, "state": state}


def _target_from_plain(plain: dict[str, Any]) -> object:
    cls = callables.resolve(plain["class"])
    if not isinstance(cls, type):
        raise TypeError(f"{plain['class']} is not a class")
    target = cls.__new__(cls)
    if hasattr(target, "__setstate__"):
        target.__setstate__(plain["state"])
    else:
        target.__dict__.update(plain["state"])
    return target


def _from_json(body: bytes) -> list[Any]:
    values = tagged_json.loads(body, TASK_JSON)
    if values[_TARGET] is not None:
        values[_TARGET] = _target_from_plain(values[_TARGET])
    return values


def _values(task: Task) -> list[Any]:
    """The fields of ``task`` in order: the body is a list (no keys to write and sort)."""
    return [getattr(task, name) for name in _FIELDS]


def _task(values: list[Any]) -> Task:
    """A Task from decoded fields, their types checked (a signed payload of a bug, say)."""
    if not isinstance(values, list) or len(values) != len(_FIELDS):
        raise ValueError(f"not a list of the {len(_FIELDS)} fields of a task")
    task = Task(*values)
    task.args = tuple(task.args)
    if not (isinstance(task.kwargs, dict) and all(type(k) is str for k in task.kwargs)):
        raise TypeError("kwargs is not a dict of names")
    return task
