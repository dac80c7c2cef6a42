"""What DatabaseStore.cleanup deletes, as SQL: one rule per kind of expired row, each found
through an index, deleted in short transactions whose size follows the time they take.

Every DELETE repeats its rule's condition, so a row saved or touched after it was picked
stays ("delete conditionally, never select-then-delete"). Per engine::

    sqlite    DELETE FROM t NOT INDEXED WHERE id IN (SELECT id FROM t WHERE <rule>
              ORDER BY <index> LIMIT n) AND <rule>
    postgres  WITH picked AS (SELECT ctid FROM t WHERE <rule> ORDER BY <index> LIMIT n
              FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM t WHERE ctid = ANY(ARRAY(
              SELECT ctid FROM picked)) AND <rule> RETURNING 1) SELECT count(*) of both
    mysql     DELETE FROM t WHERE <rule> ORDER BY <index> LIMIT n

SQLite runs the statement under its one write lock (NOT INDEXED makes it look the picked
rows up by rowid instead of walking the rule's index range again). PostgreSQL locks the
picked rows, skipping any that another transaction is writing right now instead of waiting
for it, re-evaluates ``<rule>`` on the newest version of a row changed meanwhile, and
deletes the locked rows by their physical address (a locked row cannot move): a lookup
through the primary key costs three times as much in a table that is mostly dead rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime

from pydal import DAL
from pydal.objects import Field, Query, Table

from scalekit.sessions.stores._sql_schema import local_text, utc_text

#: How long one cleanup transaction should hold its locks; its size follows this.
TARGET_SECONDS = 0.03
#: SQLite has one writer at a time, and a waiting writer polls (after 1, 2, 5, 10, 15, 20,
#: then 25 ms): a pause this long between transactions lets it in within ~60 ms.
SQLITE_PAUSE = 0.025
MIN_ROWS, MAX_ROWS = 50, 50_000


@dataclass(frozen=True)
class Rule:
    """One kind of expired row: its condition, and the index order that finds it first
    (no order: the lock table, small and without an index on its expiry)."""

    table: Table
    where: Query
    order: tuple[Field, ...]
    kind: str  # "session" or "lock"


def utc(timestamp: float) -> datetime:
    """A Unix time as a naive UTC datetime in whole seconds, rounded down (as pydal writes
    it, and as ``load`` compares ``expires_datetime`` too)."""
    return datetime(*time.gmtime(math.floor(timestamp))[:6])


def session_rules(sessions: Table, at: float, cutoff: float, force: bool) -> list[Rule]:
    """The expired sessions at Unix time ``at``, for the ``cutoff`` of the -x rule.

    A row whose ``version`` is NULL was last written by web2py, which kept local time in
    ``modified_datetime``: it is compared with the cutoff in local time. The store's own
    rows (saves and touches both set ``version``) keep UTC, with microseconds.
    """
    expires, modified, version = (
        sessions.expires_datetime,
        sessions.modified_datetime,
        sessions.version,
    )
    ours = (version != None) & (modified < utc_text(cutoff))  # noqa: E711 (IS NOT NULL)
    web2pys = (version == None) & (modified < local_text(cutoff))  # noqa: E711
    unknown = modified == None  # noqa: E711 (no time at all: nothing to keep it by)
    rules = [Rule(sessions, expires <= utc(at), (expires,), "session")]
    if force:  # whatever the expiry: the modified_datetime index finds them
        return rules + [Rule(sessions, q, (modified,), "session") for q in (ours, web2pys, unknown)]
    no_expiry = expires == None  # noqa: E711
    order = (expires, modified)  # the index (expires_datetime, modified_datetime)
    return rules + [
        Rule(sessions, no_expiry & q, order, "session") for q in (ours, web2pys, unknown)
    ]


def lock_rules(locks: Table, at: float) -> list[Rule]:
    """Lock rows whose holder's time has run out (live locks stay, also with force)."""
    return [Rule(locks, locks.expires_at <= at, (), "lock")]


def delete_sql(db: DAL, rule: Rule, rows: int) -> str:
    """One transaction's DELETE of at most ``rows`` rows of ``rule`` (see the module)."""
    adapter = db._adapter
    table, where = rule.table._rname, adapter.expand(rule.where)
    order = ""
    if rule.order:
        order = " ORDER BY " + ", ".join(adapter.expand(field) for field in rule.order)
    key = adapter.expand(rule.table._id)
    if adapter.dbengine == "mysql":  # no LIMIT in an IN subquery; DELETE takes one
        return f"DELETE FROM {table} WHERE {where}{order} LIMIT {rows};"
    if adapter.dbengine == "postgres":
        pick = f"SELECT ctid AS picked FROM {table} WHERE {where}{order} LIMIT {rows}"
        return (
            f"WITH picked AS ({pick} FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM {table} "
            f"WHERE ctid = ANY(ARRAY(SELECT picked FROM picked)) AND {where} RETURNING 1) "
            "SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM gone);"
        )
    pick = f"SELECT {key} FROM {table} WHERE {where}{order} LIMIT {rows}"
    # NOT INDEXED: look the picked rows up by rowid, not by walking the rule's range again
    return f"DELETE FROM {table} NOT INDEXED WHERE {key} IN ({pick}) AND {where};"


def count_sql(db: DAL, rules: list[Rule]) -> str:
    """What ``dry_run`` runs: how many rows of one table the rules would delete (a row
    that several rules match counts once; the deleting rules each see it only once too)."""
    where = rules[0].where
    for rule in rules[1:]:
        where |= rule.where
    return f"SELECT count(*) FROM {rules[0].table._rname} WHERE {db._adapter.expand(where)};"


def delete(db: DAL, rule: Rule, rows: int) -> tuple[int, int]:
    """Run one DELETE (not committed); (rows picked, rows deleted)."""
    adapter = db._adapter
    adapter.execute(delete_sql(db, rule, rows))
    if adapter.dbengine == "postgres":
        picked, gone = adapter.cursor.fetchone()
        return int(picked), int(gone)
    gone = max(adapter.cursor.rowcount, 0)
    return gone, gone  # one statement under SQLite's write lock (MySQL: one DELETE)


def count(db: DAL, rules: list[Rule]) -> int:
    """Run :func:`count_sql`."""
    db._adapter.execute(count_sql(db, rules))
    return int(db._adapter.cursor.fetchone()[0])


def next_size(rows: int, seconds: float) -> int:
    """The size of the next transaction: toward ``TARGET_SECONDS`` at the rate of the last
    one, at most doubling or halving, within ``MIN_ROWS`` and ``MAX_ROWS``."""
    goal = rows * TARGET_SECONDS / max(seconds, 1e-4)
    return int(min(max(goal, rows / 2, MIN_ROWS), rows * 2, MAX_ROWS))
