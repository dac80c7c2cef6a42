"""Remove the uploads that no record references: ``scalekit uploads gc`` runs :func:`collect`.

An upload's name says which field should hold it (``person.image.<key>...`` belongs in
``person.image``), so an upload is garbage when the app's database has that table and
column and no row of it holds the name. :func:`collect` asks one query per batch of names
and removes what no row holds, if it is older than the grace period (default a day): an
upload is saved before the record that holds it commits, and must survive that moment.

It never removes what it cannot check: names whose table or column is not in the database
(another app's, a field renamed or dropped) are kept and counted by ``table.field``; a
database that cannot be reached stops the run before anything more is removed. It also
removes what writes that never finished left behind (a killed writer's temp file, an
unfinished multipart upload), where the store keeps such leftovers.

What it cannot know: a name copied into a field other than the one it was made for, or a
name held by another database sharing the store (give each app its own store, or its own
``prefix``). An old upload that a record takes up again while the run is deleting it is
lost: records take new uploads, which the grace period protects.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydal import DAL

from scalekit.connect import sql
from scalekit.uploads.names import parse_name
from scalekit.uploads.stores.base import UploadInfo, UploadStore

__all__ = ["DAY", "Collection", "collect"]

log = logging.getLogger("scalekit.uploads")

#: The default grace period: uploads younger than this are never removed.
DAY = 86400.0


@dataclass
class Collection:
    """What :func:`collect` did: uploads examined, too young, held by a record, removed (or
    that would be, ``dry_run``) and their bytes, kept because their ``table.field`` is not
    in the database (count by ``table.field``), and leftovers of unfinished writes removed."""

    examined: int = 0
    young: int = 0
    referenced: int = 0
    removed: int = 0
    bytes: int = 0
    unchecked: Counter[str] = field(default_factory=Counter)
    leftovers: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def summary(self, dry_run: bool = False) -> str:
        """One line: examined, removed and bytes, kept (and why), leftovers, seconds."""
        verb = "would remove" if dry_run else "removed"
        line = (
            f"examined {self.examined:,}, {verb} {self.removed:,} ({self.bytes:,} bytes), "
            f"{self.referenced:,} referenced, {self.young:,} younger than the grace"
        )
        if self.unchecked:
            fields = ", ".join(f"{name} ({n:,})" for name, n in sorted(self.unchecked.items()))
            line += f", {sum(self.unchecked.values()):,} kept: not in the database: {fields}"
        line += f", {verb} {self.leftovers:,} leftover(s) of unfinished writes"
        seconds = (self.ended or time.monotonic()) - self.started
        return f"{line} in {seconds:.1f} s"


def collect(
    store: UploadStore,
    db: DAL | str,
    *,
    older_than: float = DAY,
    prefix: str = "",
    dry_run: bool = False,
    batch: int = 500,
    progress: Callable[[Collection], None] | None = None,
) -> Collection:
    """Remove the uploads of ``store`` (names starting with ``prefix``) older than
    ``older_than`` seconds that no row of the database ``db`` (a DAL, or its URL, opened
    read-only: a database that fails is :class:`StoreUnavailable`, its URL masked) holds in
    the field their name names; ``dry_run``: count them, remove nothing."""
    if isinstance(db, str):
        with sql.opened(db) as opened:
            return collect(store, opened, older_than=older_than, prefix=prefix,
                           dry_run=dry_run, batch=batch, progress=progress)  # fmt: skip
    cutoff = time.time() - older_than
    done = Collection()
    checker = _Checker(db)
    pending: dict[tuple[str, str], list[UploadInfo]] = defaultdict(list)

    def flush(key: tuple[str, str]) -> None:
        infos = pending.pop(key)
        held = checker.referenced(*key, [info.name for info in infos])
        done.referenced += len(held)
        for info in infos:
            if info.name not in held and (dry_run or store.delete(info.name)):
                done.removed += 1
                done.bytes += info.size
                log.info("%s: %s (%d bytes)", info.name, "unreferenced" if dry_run
                         else "removed", info.size)  # fmt: skip
        if progress is not None:
            progress(done)

    for info in store.names(prefix):
        parsed = parse_name(info.name)
        if parsed is None:
            continue
        done.examined += 1
        key = (parsed.table, parsed.field)
        if info.modified > cutoff:
            done.young += 1
        elif not checker.has(*key):
            done.unchecked[".".join(key)] += 1
        else:
            pending[key].append(info)
            if len(pending[key]) >= batch:
                flush(key)
    for key in list(pending):
        flush(key)
    done.leftovers = store.remove_leftovers(cutoff, dry_run=dry_run)
    done.ended = time.monotonic()
    return done


class _Checker:
    """The database side: which ``table.field`` exist, which names a field holds."""

    def __init__(self, db: DAL):
        self.db = db
        self.adapter = db._adapter
        self.columns: dict[str, set[str] | None] = {}

    def has(self, table: str, column: str) -> bool:
        if table not in self.columns:
            self.columns[table] = sql.columns(self.db, table)
        return column.lower() in (self.columns[table] or ())

    def referenced(self, table: str, column: str, names: list[str]) -> set[str]:
        """The ``names`` some row of ``table`` holds in ``column`` (one query)."""
        quote, adapt = self.adapter.dialect.quote, self.adapter.adapt
        listed = ", ".join(adapt(name) for name in names)  # names: [A-Za-z0-9_.=-] only
        query = f"SELECT {quote(column)} FROM {quote(table)} WHERE {quote(column)} IN ({listed});"
        return {str(row[0]) for row in self.db.executesql(query)}
