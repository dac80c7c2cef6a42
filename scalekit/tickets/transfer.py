"""Move ticket files into a database: what ``scalekit tickets2db`` runs.

Files go in batches; each batch is one INSERT (a ticket id stored already is skipped, or
replaced if the file counts more failures: a ticket counted again after it moved) and one
commit, and only then are its files deleted. A crash anywhere leaves every ticket in a
file, in the database, or both; the next run finishes the job without duplicates. A file
that is not a valid ticket is moved into ``bad/`` and the run goes on; the temp file of a
writer that crashed (older than ten minutes) is deleted.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from scalekit.core.errors import CorruptData
from scalekit.tickets.database import DatabaseStore
from scalekit.tickets.folder import FolderStore

BATCH = 500
BATCH_BYTES = 8 * 1024 * 1024  # a batch ends early past this much JSON
#: Threads deleting a committed batch's files: an unlink mostly waits for the disk (a
#: TRIM on file systems mounted with ``discard``), and those waits overlap.
UNLINKERS = 4


@dataclass
class CollectStats:
    moved: int = 0  # rows added, files deleted
    duplicates: int = 0  # stored already (a re-run after a crash): files deleted
    quarantined: int = 0  # moved into bad/
    stale_temps: int = 0  # temp files of crashed writers, deleted


def collect(
    folder: FolderStore,
    database: DatabaseStore,
    *,
    batch: int = BATCH,
    progress: Callable[[CollectStats], None] | None = None,
) -> CollectStats:
    """Move every ticket file of ``folder`` into ``database``; ``progress`` is called after
    each committed batch. :class:`StoreUnavailable` stops the run: the files of the batch
    under way stay where they are.

    A helper thread reads and checks the next batch while this one is inserted (the
    database driver lets go of the GIL while it waits for the server), and a few threads
    delete a committed batch's files together."""
    stats = CollectStats(stale_temps=folder.remove_stale_temps())
    batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
    stop, failure = threading.Event(), []
    reader = threading.Thread(
        target=_read, args=(folder, batch, stats, batches, stop, failure), name="tickets-reader"
    )
    reader.start()
    unlinkers = ThreadPoolExecutor(UNLINKERS, thread_name_prefix="tickets-unlink")
    try:
        while (pending := batches.get()) is not None:
            added = database.insert([(ticket, raw) for _, ticket, raw in pending])
            list(unlinkers.map(folder.remove, [path for path, _, _ in pending]))
            stats.moved += added
            stats.duplicates += len(pending) - added
            if progress is not None:
                progress(stats)
    finally:
        unlinkers.shutdown()
        stop.set()
        with contextlib.suppress(queue.Empty):  # let a reader blocked on a full queue go on
            while True:
                batches.get_nowait()
        reader.join()
    if failure:
        raise failure[0]
    return stats


_Batch = list[tuple[str, dict[str, Any], str]]


def _read(
    folder: FolderStore,
    batch: int,
    stats: CollectStats,
    batches: queue.Queue[_Batch | None],
    stop: threading.Event,
    failure: list[BaseException],
) -> None:
    """Put batches of valid tickets on ``batches`` (then None); quarantine the rest."""
    pending: _Batch = []
    size = 0
    try:
        for path in folder.pending():
            if stop.is_set():
                return
            try:
                ticket, raw = folder.read(path)
            except FileNotFoundError:  # another run took it
                continue
            except (OSError, CorruptData) as exc:
                folder.quarantine(path, exc)
                stats.quarantined += 1
                continue
            pending.append((path, ticket, raw))
            size += len(raw)
            if len(pending) >= batch or size >= BATCH_BYTES:
                _put(batches, pending, stop)
                pending, size = [], 0
        if pending:
            _put(batches, pending, stop)
    except BaseException as exc:  # noqa: BLE001 - handed over and raised again by collect
        failure.append(exc)
    finally:
        _put(batches, None, stop)


def _put(batches: queue.Queue, item: _Batch | None, stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            batches.put(item, timeout=0.1)
            return
