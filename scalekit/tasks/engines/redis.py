"""RedisEngine: a Redis stream and consumer group per queue, delayed and dead tasks beside it.

Layout, for app ``shop`` and queue ``mail`` (every key of a queue carries the hash tag
``{shop:mail}``, so one queue's keys share a Cluster slot and its scripts can run there):

* ``scalekit:t:{shop:mail}:stream`` - the ready tasks, one entry each (fields ``i`` task
  id, ``p`` payload, ``n`` name, ``e`` eta), consumer group ``workers``: an entry not yet
  delivered is ``waiting``, a pending one (in the group's PEL) ``running``.
* ``scalekit:t:{shop:mail}:delayed`` - sorted set of task ids by eta (Unix seconds).
* ``scalekit:t:{shop:mail}:dead`` - sorted set of task ids by the time they were buried.
* ``scalekit:t:{shop:mail}:t:<id>`` - a delayed or dead task's hash: the stream fields,
  and for a dead one ``x`` the error and ``d`` its deliveries; for a task a script moved
  into the stream (promoted, retried at once, revived) only ``s``, its entry id, so an ack
  after a lost lease finds the task wherever it went. Scripts build these keys from the
  prefix they are given: the tag puts them in the slot of the keys they declare.
* ``scalekit:t:{shop:mail}:n:<name>`` - a task name, taken for ``name_ttl`` (``SET NX PX``).
* ``scalekit:t:shop:queues`` - the set of the app's queue names (outside any queue's tag;
  ``scalekit:t:{shop}:queues`` where the topology hash-tags, as on a Cluster).
* ``scalekit:t:shop:lease:<key>`` - a lease (``try_lease``; tagged likewise).

An enqueue is one round trip: a bare ``XADD``, or one script when it is named or delayed.
A claim is one ``XREADGROUP`` (blocking up to ``wait``, never past the next known eta);
every :data:`MAINTENANCE_INTERVAL` seconds per process and queue, and when a delayed task
this process knows of comes due (:data:`DUE_GAP` at least after the last pass), one script
first promotes due delayed tasks, hands expired leases to the claimer (``XAUTOCLAIM``) and
says when the next delayed task is due. Until then the operations views (``find``,
``tasks``, ``counts``, ``purge``) read a delayed task whose eta has passed as waiting.

On a Cluster (``redis+cluster://``) each queue lives in its own slot, so one queue's tasks
are on one primary and different queues spread over the primaries. One ``XREADGROUP``
reads one slot: a claim over several queues reads them one by one in their order and
blocks on one at a time for :data:`ROUTED_BLOCK`, so a task enqueued meanwhile in another
queue waits up to that long, and longer as Redis ends a blocked read on its clock tick
(``hz``: up to 0.1 s later at the default 10). The operations views visit the queues one by
one.

After a failover (Sentinel or Cluster) every step but the enqueue is retried once on the
new primary: reads, and the scripts that settle a claim, which check the claim first and
so do nothing the second time. An enqueue is not (a retried ``XADD`` could queue the task
twice): it raises :class:`~scalekit.core.errors.StoreUnavailable`, and the task may or may
not be queued. Redis replicates asynchronously: the tasks enqueued on a primary in the
moment before it is lost may not have reached its replica, and are lost with it (their
enqueues were acknowledged). ``min_replicas=1`` closes that gap: an enqueue returns once a
replica has the task (``WAIT``), or raises StoreUnavailable when none confirms in time.
Lost acks, retries and hand-outs only make a task run again (at least once, as ever).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import redis

from scalekit.connect.redis import REDIS_OPTIONS, NotReplicated, Script, open_redis
from scalekit.core.checks import check_app_name, check_lease, check_ttl
from scalekit.core.errors import ConfigError, CorruptData, InvalidArgument, StoreUnavailable
from scalekit.core.options import merge_options, parse_duration
from scalekit.core.urls import RedisURL
from scalekit.tasks.engines.base import (
    DEAD,
    DELAYED,
    RUNNING,
    STATES,
    WAITING,
    Claim,
    Engine,
    TaskInfo,
    check_state,
    positive_seconds,
)
from scalekit.tasks.errors import TaskAlreadyExists

__all__ = ["DUE_GAP", "MAINTENANCE_INTERVAL", "ROUTED_BLOCK", "RedisEngine"]

log = logging.getLogger("scalekit.tasks")

#: Seconds between two promotion + reclaim passes of one process on one queue.
MAINTENANCE_INTERVAL = 0.25
#: Seconds at least between two such passes when a known delayed task comes due (many
#: etas close together cost a pass per this gap, not one per claim).
DUE_GAP = 0.05
#: Seconds a claim over several queues on a routed topology (a Cluster: one read, one slot)
#: blocks on one queue before it reads the others again: the latency it adds to a task
#: enqueued meanwhile in another queue (and Redis's clock tick, see above); an idle claim
#: over n queues makes up to 10 (n + 1) reads a second.
ROUTED_BLOCK = 0.1
#: The consumer group every worker of a queue belongs to.
GROUP = "workers"
#: Tasks promoted, purged or scanned per script call (bounds how long Redis is busy).
BATCH = 1000
#: A consumer with nothing pending and idle this long (ms) is removed from the group.
CONSUMER_IDLE_MS = 3600_000
#: Seconds between two such clean-ups by one process of one queue.
REAP_INTERVAL = 60.0
#: Seconds an in-process record of "queue registered" stays trusted before a new SADD.
REGISTER_INTERVAL = 60.0

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

# A claim is held while its stream entry is pending with the delivery count it was handed
# out with: a reclaim (XAUTOCLAIM) raises the count, an ack or a purge removes the entry.
# held() returns the consumer that holds it, or nil.
_HELD = """
local function held(stream, group, id, deliveries)
  local p = redis.pcall('XPENDING', stream, group, id, id, 1)
  if p.err == nil and p[1] ~= nil and tonumber(p[1][4]) == tonumber(deliveries) then
    return p[1][2]
  end
end
local function fields_of(stream, id)
  local entry = redis.call('XRANGE', stream, id, id)[1]
  local out = {}
  if entry then for i = 1, #entry[2], 2 do out[entry[2][i]] = entry[2][i + 1] end end
  return out
end
"""

_LAST_DELIVERED = """
local function after_delivered(stream, group)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then return '(' .. info['last-delivered-id'] end
  end
  return '-'
end
"""

# KEYS: stream, delayed, record, name. ARGV: id, payload, eta or '', name or '', name ttl
# ms, now. Returns 0 (name taken), 1 (waiting) or 2 (delayed). Never retried after a lost
# reply: a second run would queue the task twice, or find its own name taken.
_ENQUEUE = Script(
    """
if ARGV[4] ~= '' and not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[5]) then
  return 0
end
local fields = {'i', ARGV[1], 'p', ARGV[2]}
if ARGV[4] ~= '' then fields[#fields + 1] = 'n'; fields[#fields + 1] = ARGV[4] end
if ARGV[3] ~= '' then
  fields[#fields + 1] = 'e'; fields[#fields + 1] = ARGV[3]
  if tonumber(ARGV[3]) > tonumber(ARGV[6]) then
    redis.call('HSET', KEYS[3], unpack(fields))
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
    return 2
  end
end
redis.call('XADD', KEYS[1], '*', unpack(fields))
return 1
""",
    keys=4,
)

# KEYS: stream, delayed. ARGV: group, consumer, now, min idle ms, count, XAUTOCLAIM cursor,
# record key prefix, batch, consumer idle ms to reap ('' not now). Returns {reclaimed
# {id, fields, deliveries}..., next cursor, next eta or ''}. Retried after a lost reply: the
# second run finds no task due twice, and what the first reclaimed waits out a lease.
_MAINTAIN = Script(
    """
local stream, delayed, group = KEYS[1], KEYS[2], ARGV[1]
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local due = redis.call('ZRANGE', delayed, '-inf', ARGV[3], 'BYSCORE', 'LIMIT', 0, ARGV[8])
for _, id in ipairs(due) do
  local fields = redis.call('HGETALL', ARGV[7] .. id)
  if #fields == 0 then fields = {'i', id} end
  local entry = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('DEL', ARGV[7] .. id)
  redis.call('HSET', ARGV[7] .. id, 's', entry)
end
if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end
local claimed, cursor = {}, ARGV[6]
if tonumber(ARGV[5]) > 0 then
  local r = redis.call('XAUTOCLAIM', stream, group, ARGV[2], ARGV[4], cursor, 'COUNT', ARGV[5])
  cursor = r[1]
  for _, entry in ipairs(r[2]) do
    if entry[2] then
      local p = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      claimed[#claimed + 1] = {entry[1], entry[2], p[1][4]}
    end
  end
end
if ARGV[9] ~= '' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    if info['pending'] == 0 and info['idle'] > tonumber(ARGV[9]) then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
    end
  end
end
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
return {claimed, cursor, first[2] or ''}
""",
    keys=2,
)

# KEYS: stream. ARGV: group, then entry id and deliveries of each claim. Returns 1 (lease
# renewed: idle time reset, count unchanged) or 0 (lost) for each. Idempotent.
_EXTEND = Script(
    _HELD
    + """
local out = {}
for i = 2, #ARGV, 2 do
  local owner = held(KEYS[1], ARGV[1], ARGV[i], ARGV[i + 1])
  if owner then
    redis.call('XCLAIM', KEYS[1], ARGV[1], owner, 0, ARGV[i], 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
""",
    keys=1,
)

# KEYS: stream, delayed, dead, record. ARGV: group, entry id, task id. Deletes the task
# wherever it is now: the claim's entry, or (that entry gone: the task was retried, buried
# or revived after the claim lost its lease) its record and the entry its ``s`` names.
# Idempotent.
_ACK = Script(
    """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 0 then
  local entry = redis.call('HGET', KEYS[4], 's')
  if entry then
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
  end
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
end
redis.call('DEL', KEYS[4])
""",
    keys=4,
)

# KEYS: stream, delayed, record. ARGV: group, entry id, deliveries, task id, payload, eta,
# now. Returns 1, or 0 when the claim is no longer held (nothing done: also what a second
# run after a lost reply answers, the retry done).
_RETRY = Script(
    _HELD
    + """
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local old = fields_of(KEYS[1], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local fields = {'i', ARGV[4], 'p', ARGV[5], 'e', ARGV[6]}
if old['n'] then fields[#fields + 1] = 'n'; fields[#fields + 1] = old['n'] end
redis.call('DEL', KEYS[3])
if tonumber(ARGV[6]) > tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
else
  redis.call('HSET', KEYS[3], 's', redis.call('XADD', KEYS[1], '*', unpack(fields)))
end
return 1
""",
    keys=3,
)

# KEYS: stream, dead, record. ARGV: group, entry id, deliveries, task id, payload, error,
# now. Returns 1, or 0 when the claim is no longer held (as _RETRY).
_BURY = Script(
    _HELD
    + """
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local old = fields_of(KEYS[1], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'i', ARGV[4], 'p', ARGV[5], 'x', ARGV[6], 'd', ARGV[3])
if old['n'] then redis.call('HSET', KEYS[3], 'n', old['n']) end
if old['e'] then redis.call('HSET', KEYS[3], 'e', old['e']) end
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[4])
return 1
""",
    keys=3,
)

# KEYS: stream, dead, record. ARGV: task id, '1' to replace the payload by ARGV[3] or '0'.
# Returns 1, or 0 when the task is not dead (a second run after a lost reply: revived).
_REVIVE = Script(
    """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local old = {}
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do old[flat[i]] = flat[i + 1] end
redis.call('DEL', KEYS[3])
local fields = {'i', ARGV[1], 'p', old['p'] or ''}
if ARGV[2] == '1' then fields[4] = ARGV[3] end
if old['n'] then fields[#fields + 1] = 'n'; fields[#fields + 1] = old['n'] end
redis.call('HSET', KEYS[3], 's', redis.call('XADD', KEYS[1], '*', unpack(fields)))
return 1
""",
    keys=3,
)

# A delayed task whose eta has passed is waiting (a claim's pass promotes it next).
# by_eta returns {id, eta, ...} of the delayed set, in eta order: up to limit due by now
# (due true) or still to come.
_BY_ETA = """
local function by_eta(delayed, due, now, limit)
  local min, max = '(' .. now, '+inf'
  if due then min, max = '-inf', now end
  return redis.call('ZRANGE', delayed, min, max, 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
end
"""

# KEYS: stream, delayed, dead. ARGV: group, state, limit, record key prefix, now. Returns
# {key, flat fields, score, deliveries} per task, in the order they will run (dead: newest
# first): a stream entry's key is its id, its score ''; a record's key is the task id, its
# score its eta (dead: its burial time). Waiting: the stream's new entries, then the due
# delayed tasks.
_LIST = Script(
    _LAST_DELIVERED
    + _BY_ETA
    + """
local state, limit, now, rows = ARGV[2], tonumber(ARGV[3]), ARGV[5], {}
local function records(flat)
  for i = 1, #flat, 2 do
    rows[#rows + 1] = {flat[i], redis.call('HGETALL', ARGV[4] .. flat[i]), flat[i + 1], 0}
  end
  return rows
end
if state == 'dead' then
  return records(redis.call('ZRANGE', KEYS[3], 0, limit - 1, 'REV', 'WITHSCORES'))
end
if state == 'delayed' then return records(by_eta(KEYS[2], false, now, limit)) end
if state == 'running' then
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', limit)
  if pending.err then return rows end
  for _, p in ipairs(pending) do
    local entry = redis.call('XRANGE', KEYS[1], p[1], p[1])[1]
    rows[#rows + 1] = {p[1], entry and entry[2] or {}, '', p[4]}
  end
  return rows
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local start = after_delivered(KEYS[1], ARGV[1])
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', limit)) do
    rows[#rows + 1] = {e[1], e[2], '', 0}
  end
end
if #rows < limit then records(by_eta(KEYS[2], true, now, limit - #rows)) end
return rows
""",
    keys=3,
)

# KEYS: delayed, dead, record. ARGV: task id, now. Returns {state, flat fields, score} or
# nil.
_FIND_RECORD = Script(
    """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then
  local state = tonumber(score) <= tonumber(ARGV[2]) and 'waiting' or 'delayed'
  return {state, redis.call('HGETALL', KEYS[3]), score}
end
score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if score then return {'dead', redis.call('HGETALL', KEYS[3]), score} end
return false
""",
    keys=3,
)

# KEYS: stream, delayed, dead. ARGV: group, now. Returns {waiting, delayed, running, dead}:
# every stream entry is either not yet delivered or pending (ack, retry and bury delete
# the entry and its pending record together), so waiting = XLEN - pending + the due
# delayed tasks.
_COUNTS = Script(
    """
local length, pending = 0, 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  length = redis.call('XLEN', KEYS[1])
  local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
  if not summary.err then pending = summary[1] end
end
local due = redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[2])
local delayed, dead = redis.call('ZCARD', KEYS[2]) - due, redis.call('ZCARD', KEYS[3])
return {length - pending + due, delayed, pending, dead}
""",
    keys=3,
)

# KEYS: stream, delayed, dead. ARGV: group, state, batch, record key prefix, now. Deletes
# up to a batch of the queue's tasks in that state (waiting: the stream's new entries,
# then the due delayed tasks), with the records naming purged entries; returns how many
# (a second run after a lost reply purges the next batch: the lost one goes uncounted).
_PURGE = Script(
    _LAST_DELIVERED
    + _HELD
    + _BY_ETA
    + """
local state, batch, now = ARGV[2], tonumber(ARGV[3]), ARGV[5]
local function drop(set, ids)
  if #ids == 0 then return 0 end
  local records = {}
  for i, id in ipairs(ids) do records[i] = ARGV[4] .. id end
  redis.call('DEL', unpack(records))
  redis.call('ZREM', set, unpack(ids))
  return #ids
end
local function drop_delayed(due, limit)
  local flat, ids = by_eta(KEYS[2], due, now, limit), {}
  for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
  return drop(KEYS[2], ids)
end
if state == 'dead' then return drop(KEYS[3], redis.call('ZRANGE', KEYS[3], 0, batch - 1)) end
if state == 'delayed' then return drop_delayed(false, batch) end
local ids = {}
if state == 'waiting' and redis.call('EXISTS', KEYS[1]) == 1 then
  local start = after_delivered(KEYS[1], ARGV[1])
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', batch)) do
    ids[#ids + 1] = e[1]
  end
elseif state == 'running' then
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', batch)
  if pending.err then return 0 end
  for _, p in ipairs(pending) do ids[#ids + 1] = p[1] end
  if #ids > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
end
for _, id in ipairs(ids) do
  local record = ARGV[4] .. (fields_of(KEYS[1], id)['i'] or '')
  if redis.call('HGET', record, 's') == id then redis.call('DEL', record) end
end
if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
if state == 'waiting' and #ids < batch then return #ids + drop_delayed(true, batch - #ids) end
return #ids
""",
    keys=3,
)

# KEYS: lease. ARGV: holder, ttl ms. Takes the lease, or renews it for its holder
# (idempotent).
_TRY_LEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
""",
    keys=1,
)


class _Queue:
    """The keys of one queue, all under its hash tag ``{app:queue}``."""

    __slots__ = ("dead", "delayed", "keys", "name", "prefix", "record", "stream")

    def __init__(self, app_name: str, name: str):
        self.name = name
        self.prefix = f"scalekit:t:{{{app_name}:{name}}}:"
        self.stream, self.delayed, self.dead = (
            self.prefix + k for k in ("stream", "delayed", "dead")
        )
        self.keys = [self.stream, self.delayed, self.dead]
        self.record = self.prefix + "t:"  # + task id


class RedisEngine(Engine):
    """Tasks in Redis (``redis://``, ``rediss://`` for TLS, ``unix://`` sockets, Sentinel's
    ``redis+sentinel://``, ``redis+cluster://``): see the module docstring for the layout.
    Connections open lazily, per process."""

    def __init__(
        self,
        settings: RedisURL,
        app_name: str = "app",
        *,
        visibility_timeout: float = 30.0,
        name_ttl: float = 7 * 86400.0,
        min_replicas: int = 0,
        replica_timeout: float = 0.5,
        **redis_options: Any,
    ):
        """``min_replicas``: an enqueue returns once that many replicas have the task
        (``WAIT``, up to ``replica_timeout`` seconds: keep it below ``socket_timeout``), so
        it survives the loss of the primary. ``redis_options``: those of
        :data:`~scalekit.connect.redis.REDIS_OPTIONS`."""
        if not isinstance(settings, RedisURL):
            raise ConfigError(f"{settings!s}: a Redis task engine needs a redis:// URL")
        self.app_name = check_app_name(app_name)
        self.visibility_timeout = positive_seconds(visibility_timeout, "visibility_timeout")
        self.name_ttl = check_ttl(name_ttl, "name_ttl")
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
            raise ConfigError(f"min_replicas must be an int of 0 or more, got {min_replicas!r}")
        self.min_replicas = min_replicas
        self.replica_timeout = positive_seconds(replica_timeout, "replica_timeout")
        self.settings = settings
        self._redis = open_redis(settings, **redis_options)
        namespace = self._redis.namespace("t", app_name)
        self._registry = namespace.prefix + "queues"
        self._leases = namespace.prefix + "lease:"
        timeout = self._redis.topology.socket_timeout
        # a blocking read must end well within the socket timeout
        self._block_limit = 1.0 if not timeout else min(1.0, max(0.01, timeout / 2))
        self._queues: dict[str, _Queue] = {}
        self._registered: dict[str, float] = {}  # queue -> when this process last SADDed it
        self._checked: dict[str, float] = {}  # queue -> time of the last maintenance pass
        self._due: dict[str, float] = {}  # queue -> eta of its next delayed task (inf: none)
        self._cursor: dict[str, str] = {}  # queue -> XAUTOCLAIM cursor
        self._reaped: dict[str, float] = {}  # queue -> time consumers were last reaped

    @classmethod
    def from_url(
        cls, settings: Any, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> RedisEngine:
        """``visibility_timeout``, ``name_ttl``, ``replica_timeout`` (seconds, or ``30s``,
        ``7d`` in a URL) and ``min_replicas`` beside the Redis connection options.
        ``create`` changes nothing: Redis keeps no store to create (a queue is its keys)."""
        spec = {
            **REDIS_OPTIONS,
            "visibility_timeout": parse_duration,
            "name_ttl": parse_duration,
            "min_replicas": int,
            "replica_timeout": parse_duration,
        }
        return cls(settings, app_name, **merge_options(settings, spec, options))

    def __repr__(self) -> str:
        return f"<RedisEngine {self.settings.masked} app={self.app_name}>"

    # -- enqueue ------------------------------------------------------------------------
    def enqueue(
        self,
        queue: str,
        task_id: str,
        payload: bytes,
        *,
        eta: float | None = None,
        name: str | None = None,
    ) -> None:
        """Not retried after a lost connection (a second ``XADD`` could queue the task
        twice): :class:`StoreUnavailable` then, and the task may be queued or not. With
        ``min_replicas``, it returns once that many replicas have the task."""
        q = self._queue(queue)
        self._register(q)
        if eta is None and name is None and not self.min_replicas:
            self._call(
                "enqueue a task", q.stream, "XADD", q.stream, "*", "i", task_id, "p", payload
            )
            return
        now = time.time()
        keys = [q.stream, q.delayed, q.record + task_id, q.prefix + "n:" + (name or "")]
        ttl_ms = int(self.name_ttl * 1000)
        args = [task_id, payload, "" if eta is None else repr(float(eta)), name or "", ttl_ms, now]
        replicas = {"replicas": self.min_replicas, "replica_timeout": self.replica_timeout}
        outcome = self._run("enqueue a task", q, _ENQUEUE, keys, args, **replicas)
        if outcome == 0:
            raise TaskAlreadyExists(
                f"a task named {name!r} was enqueued in queue {queue!r} within name_ttl "
                f"({self.name_ttl:g} s)"
            )
        if outcome == 2:
            self._due[q.name] = min(self._due.get(q.name, math.inf), float(eta))

    def _register(self, q: _Queue) -> None:
        """Add the queue to the app's registry once a while per process (not per enqueue)."""
        now = time.monotonic()
        if now - self._registered.get(q.name, -math.inf) >= REGISTER_INTERVAL:
            self._call(
                "register a queue", self._registry, "SADD", self._registry, q.name, safe=True
            )
            self._registered[q.name] = now

    # -- claim --------------------------------------------------------------------------
    def claim(
        self, queues: Sequence[str], consumer: str, *, count: int = 1, wait: float = 0.0
    ) -> list[Claim]:
        if not queues:
            raise InvalidArgument("claim needs at least one queue")
        if not isinstance(consumer, str) or not consumer:
            raise InvalidArgument(f"a consumer is a worker's unique name, not {consumer!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count must be an int of 1 or more, not {count!r}")
        qs = [self._queue(name) for name in queues]
        turns = itertools.cycle(qs)  # a routed topology blocks on one queue at a time
        deadline = time.monotonic() + max(0.0, wait)
        claims: list[Claim] = []
        while True:
            now = time.time()
            for q in qs:
                if len(claims) < count and self._maintenance_due(q, now):
                    claims += self._maintain(q, consumer, count - len(claims), now)
            left = deadline - time.monotonic()
            if len(qs) > 1 or claims or left <= 0:
                for q in qs:  # earlier queues first
                    if len(claims) < count:
                        claims += self._read([q], consumer, count - len(claims), None)
                if claims or left <= 0:
                    return claims
            next_pass = min(self._next_promotion(q) for q in qs) - time.time()
            block = min(left, self._block_limit, max(0.0, next_pass))
            if self._redis.topology.routes and len(qs) > 1:
                claims = self._read([next(turns)], consumer, count, min(block, ROUTED_BLOCK))
            else:
                claims = self._read(qs, consumer, count, block)
            if claims:
                return claims

    def _maintenance_due(self, q: _Queue, now: float) -> bool:
        checked = self._checked.get(q.name, 0.0)
        return now >= self._next_promotion(q) or now - checked >= MAINTENANCE_INTERVAL

    def _next_promotion(self, q: _Queue) -> float:
        """When the next delayed task this process knows of is due (``DUE_GAP`` at the
        earliest after the last pass)."""
        checked = self._checked.get(q.name, 0.0)
        return max(self._due.get(q.name, math.inf), checked + DUE_GAP)

    def _maintain(self, q: _Queue, consumer: str, count: int, now: float) -> list[Claim]:
        """Promote due delayed tasks, reclaim up to ``count`` expired leases for
        ``consumer``, learn the next eta: one script."""
        reap = ""
        if now - self._reaped.get(q.name, 0.0) >= REAP_INTERVAL:
            reap, self._reaped[q.name] = CONSUMER_IDLE_MS, now
        idle_ms, cursor = int(self.visibility_timeout * 1000), self._cursor.get(q.name, "0-0")
        args = [GROUP, consumer, repr(now), idle_ms, count, cursor, q.record, BATCH, reap]
        reclaimed, cursor, first = self._run(
            "promote and reclaim tasks", q, _MAINTAIN, [q.stream, q.delayed], args, safe=True
        )
        self._cursor[q.name] = cursor.decode()
        self._checked[q.name] = now
        self._due[q.name] = float(first) if first else math.inf
        return self._claims(q, consumer, [(i, f, d) for i, f, d in reclaimed])

    def _read(
        self, qs: list[_Queue], consumer: str, count: int, block: float | None
    ) -> list[Claim]:
        """``XREADGROUP`` of up to ``count`` new entries (blocking ``block`` seconds); an
        entry beyond ``count`` (several streams answered at once) is given back. Retried
        after a lost reply: what the first read handed out waits out a lease, then goes
        out again."""
        command: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
        if block is not None:
            command += ["BLOCK", max(1, int(block * 1000))]
        command += ["STREAMS", *(q.stream for q in qs), *(">" for _ in qs)]
        try:
            reply = self._redis.call(*command, safe=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise self._failure("claim tasks", qs[0].stream, exc) from None
            for q in qs:  # the stream or group is gone (data lost, or never claimed)
                self._checked[q.name] = 0.0
            return []
        except redis.RedisError as exc:
            raise self._failure("claim tasks", qs[0].stream, exc) from None
        by_stream = dict(reply or ())
        claims: list[Claim] = []
        for q in qs:  # earlier queues first
            for entry_id, fields in by_stream.get(q.stream.encode(), ()):
                if len(claims) < count:
                    claims += self._claims(q, consumer, [(entry_id, fields, 1)])
                else:
                    self._give_back(q, consumer, entry_id)
        return claims

    def _give_back(self, q: _Queue, consumer: str, entry_id: bytes) -> None:
        """Make an entry read beyond ``count`` look expired and undelivered: the next
        maintenance pass (this process's at once) hands it out."""
        idle = int(self.visibility_timeout * 1000)
        command = ("XCLAIM", q.stream, GROUP, consumer, 0, entry_id, "IDLE", idle)
        self._call("give back a task", q.stream, *command, "RETRYCOUNT", 0, "JUSTID", safe=True)
        self._checked[q.name] = 0.0

    def _claims(self, q: _Queue, consumer: str, entries: list[tuple]) -> list[Claim]:
        """Claims of stream entries; a malformed one is buried (dead, with the reason)."""
        claims = []
        for entry_id, flat, deliveries in entries:
            receipt = entry_id.decode()
            fields = _fields(flat)
            try:
                task_id = _task_id(q.stream, receipt, fields)
                payload = _payload(q.stream, receipt, fields)
                claims.append(Claim(q.name, task_id, payload, int(deliveries), receipt))
            except CorruptData as exc:
                log.warning(
                    "task engine %s: %s; moved to the dead tasks", self.settings.masked, exc
                )
                task_id = fields.get("i", entry_id).decode(errors="replace")
                claim = Claim(q.name, task_id, fields.get("p", b""), int(deliveries), receipt)
                self.bury(claim, claim.payload, f"CorruptData: {exc}")
        return claims

    # -- leases on claims ---------------------------------------------------------------
    def extend(self, claims: Sequence[Claim]) -> list[Claim]:
        by_queue: dict[str, list[Claim]] = {}
        for claim in claims:
            by_queue.setdefault(claim.queue, []).append(claim)
        lost = []
        for name, group in by_queue.items():
            q = self._queue(name)
            args = [GROUP]
            for claim in group:
                args += [claim.receipt, claim.deliveries]
            held = self._run("extend task leases", q, _EXTEND, [q.stream], args, safe=True)
            lost += [claim for claim, ok in zip(group, held, strict=True) if not ok]
        return lost

    def ack(self, claim: Claim) -> None:
        q = self._queue(claim.queue)
        keys = [*q.keys, q.record + claim.task_id]
        args = [GROUP, claim.receipt, claim.task_id]
        self._run("acknowledge a task", q, _ACK, keys, args, safe=True)

    def retry(self, claim: Claim, payload: bytes, eta: float) -> bool:
        q = self._queue(claim.queue)
        keys = [q.stream, q.delayed, q.record + claim.task_id]
        args = [*_held(claim), claim.task_id, payload, repr(float(eta)), repr(time.time())]
        done = self._run("retry a task", q, _RETRY, keys, args, safe=True) == 1
        if done:
            self._due[q.name] = min(self._due.get(q.name, math.inf), float(eta))
        return done

    def bury(self, claim: Claim, payload: bytes, error: str) -> bool:
        q = self._queue(claim.queue)
        keys = [q.stream, q.dead, q.record + claim.task_id]
        args = [*_held(claim), claim.task_id, payload, error, repr(time.time())]
        return self._run("bury a task", q, _BURY, keys, args, safe=True) == 1

    def revive(self, queue: str, task_id: str, payload: bytes | None = None) -> bool:
        q = self._queue(queue)
        keys = [q.stream, q.dead, q.record + task_id]
        args = [task_id, "0" if payload is None else "1", b"" if payload is None else payload]
        return self._run("revive a task", q, _REVIVE, keys, args, safe=True) == 1

    # -- what operators see -------------------------------------------------------------
    def find(self, task_id: str, queue: str | None = None) -> TaskInfo | None:
        for name in [queue] if queue is not None else self._queue_names():
            q = self._queue(name)
            keys = [q.delayed, q.dead, q.record + task_id]
            args = [task_id, repr(time.time())]
            found = self._run("find a task", q, _FIND_RECORD, keys, args, safe=True)
            if found:
                state, flat, score = found
                return self._info(q, task_id.encode(), flat, score, 0, state.decode())
            info = self._find_in_stream(q, task_id)
            if info is not None:
                return info
        return None

    def _find_in_stream(self, q: _Queue, task_id: str) -> TaskInfo | None:
        """Scan the stream, a batch at a time (operations only: O(length))."""
        wanted, start = task_id.encode(), "-"
        while True:
            command = ("XRANGE", q.stream, start, "+", "COUNT", BATCH)
            batch = self._call("find a task", q.stream, *command, safe=True)
            for entry_id, flat in batch:
                if _fields(flat).get("i") == wanted:
                    pending = self._pending_entry(q, entry_id)
                    state, deliveries = (WAITING, 0) if pending is None else (RUNNING, pending)
                    return self._info(q, entry_id, flat, b"", deliveries, state)
            if len(batch) < BATCH:
                return None
            start = b"(" + batch[-1][0]

    def _pending_entry(self, q: _Queue, entry_id: bytes) -> int | None:
        """The delivery count of a pending entry, None if it is not pending."""
        try:
            rows = self._redis.call("XPENDING", q.stream, GROUP, entry_id, entry_id, 1, safe=True)
        except redis.ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                return None
            raise self._failure("find a task", q.stream, exc) from None
        except redis.RedisError as exc:
            raise self._failure("find a task", q.stream, exc) from None
        return int(rows[0][3]) if rows else None

    def tasks(self, queue: str, state: str, limit: int = 50) -> list[TaskInfo]:
        q = self._queue(queue)
        check_state(state)
        if limit < 1:
            return []
        args = [GROUP, state, limit, q.record, repr(time.time())]
        rows = self._run("list tasks", q, _LIST, q.keys, args, safe=True)
        return [
            self._info(q, key, flat, score, deliveries, state)
            for key, flat, score, deliveries in rows
        ]

    def counts(self) -> dict[str, dict[str, int]]:
        result, now = {}, repr(time.time())
        for name in self._queue_names():
            q = self._queue(name)
            numbers = self._run("count tasks", q, _COUNTS, q.keys, [GROUP, now], safe=True)
            result[name] = dict(zip((WAITING, DELAYED, RUNNING, DEAD), numbers, strict=True))
        return result

    def purge(self, queue: str, state: str | None = None) -> int:
        q = self._queue(queue)
        if state is not None:
            check_state(state)
        deleted, now = 0, repr(time.time())  # one now: a task coming due is purged once
        for one in STATES if state is None else (state,):
            while True:
                args = [GROUP, one, BATCH, q.record, now]
                n = self._run("purge tasks", q, _PURGE, q.keys, args, safe=True)
                deleted += n
                if n < BATCH:
                    break
        return deleted

    def _queue_names(self) -> list[str]:
        names = self._call("list queues", self._registry, "SMEMBERS", self._registry, safe=True)
        return sorted(name.decode() for name in names)

    def _info(
        self, q: _Queue, key: bytes, flat: list, score: bytes, deliveries: int, state: str
    ) -> TaskInfo:
        """A task's :class:`TaskInfo` from a stream entry (``key`` its id, ``score``
        empty) or a delayed or dead record (``key`` the task id, ``score`` its eta or
        burial time)."""
        fields = _fields(flat)
        if score:
            where, task_id = q.record + key.decode(), key.decode()
        else:
            where = q.stream
            task_id = _task_id(where, key.decode(), fields)
        eta = float(score) if score and state != DEAD else _float(fields.get("e"))
        error = fields.get("x")
        return TaskInfo(
            queue=q.name,
            task_id=task_id,
            state=state,
            payload=_payload(where, key.decode(), fields),
            eta=eta,
            name=fields["n"].decode() if "n" in fields else None,
            deliveries=int(fields["d"]) if state == DEAD and "d" in fields else int(deliveries),
            error=None if error is None else error.decode(errors="replace"),
        )

    # -- leases -------------------------------------------------------------------------
    def try_lease(self, key: str, holder: str, ttl: float) -> bool:
        ttl = check_lease(holder, ttl)
        lease = self._leases + key
        try:
            args = [holder, max(1, int(ttl * 1000))]
            return self._redis.run(_TRY_LEASE, [lease], args, safe=True) == 1
        except redis.RedisError as exc:
            raise self._failure("take a lease", lease, exc) from None

    def release_lease(self, key: str, holder: str) -> None:
        lease = self._leases + key
        try:
            self._redis.release_lease(lease, holder)
        except redis.RedisError as exc:
            raise self._failure("release a lease", lease, exc) from None

    def close(self) -> None:
        self._redis.close()

    # -- helpers ------------------------------------------------------------------------
    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            if not isinstance(name, str) or not _QUEUE_NAME.match(name):
                raise InvalidArgument(
                    f"queue name {name!r} must be 1-64 letters, digits, '_', '.' or '-'"
                )
            q = self._queues[name] = _Queue(self.app_name, name)
        return q

    def _call(self, action: str, key: str, *args: Any, safe: bool = False) -> Any:
        """``RedisConnector.call``; ``safe``: retried on a new connection after a lost one
        (running it twice does no harm)."""
        try:
            return self._redis.call(*args, safe=safe)
        except redis.RedisError as exc:
            raise self._failure(action, key, exc) from None

    def _run(
        self, action: str, q: _Queue, script: Script, keys: list, args: list, **run: Any
    ) -> Any:
        """``RedisConnector.run`` with its ``safe`` and ``replicas`` keywords."""
        try:
            return self._redis.run(script, keys, args, **run)
        except redis.RedisError as exc:
            raise self._failure(action, q.prefix + "*", exc) from None

    def _failure(self, action: str, key: str, exc: redis.RedisError) -> Exception:
        """A key of the wrong type is :class:`CorruptData` naming it; anything else
        :class:`StoreUnavailable` naming the server."""
        if isinstance(exc, NotReplicated):
            return StoreUnavailable(
                f"task engine {self.settings.masked} failed to {action} on {self.min_replicas} "
                f"replica(s) within {self.replica_timeout:g}s (min_replicas): {exc}; the task "
                "may run, or be lost with the primary; check the replicas and their links"
            )
        if isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE"):
            return CorruptData(
                f"task engine {self.settings.masked} failed to {action}: {key} holds another "
                f"kind of value than the engine stores there ({exc})"
            )
        return StoreUnavailable(
            f"task engine {self.settings.masked} failed to {action}: "
            f"{type(exc).__name__}: {exc}; check that Redis is running and reachable"
        )


def _held(claim: Claim) -> list:
    """The script arguments that name a claim's hand-out: group, entry id, deliveries."""
    return [GROUP, claim.receipt, claim.deliveries]


def _fields(flat: list) -> dict[str, bytes]:
    """A stream entry's or hash's flat ``[field, value, ...]`` as a dict."""
    return {flat[i].decode(errors="replace"): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _task_id(key: str, entry_id: str, fields: dict[str, bytes]) -> str:
    try:
        return fields["i"].decode()
    except (KeyError, UnicodeDecodeError):
        raise CorruptData(f"{key} entry {entry_id} has no task id") from None


def _payload(key: str, entry_id: str, fields: dict[str, bytes]) -> bytes:
    try:
        return fields["p"]
    except KeyError:
        raise CorruptData(f"{key} entry {entry_id} has no payload") from None


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)
