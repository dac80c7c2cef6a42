"""FolderStore: one JSON file per ticket in a local folder (web2py's ``errors/``).

Files are ``<folder>/<ticket id>.json``, written atomically (a hidden temporary file, then
``os.replace``: :mod:`scalekit.connect.files`, as every piece keeps its files), so a reader
never sees half a ticket. It works with no network at all:
``tickets2db`` moves the files into a database later. Files that cannot be read as
tickets are moved aside into ``<folder>/bad/``, never deleted. Past ``max_bytes`` of
tickets, a save deletes tickets to make room: duplicates (a failure type and location with
a newer ticket) oldest first, then the oldest. Each process checks after each 1% of the cap
it wrote, so the folder can pass the cap by that much per writing process.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from typing import Any

from scalekit.connect.files import STALE_TEMP, TMP_INFIX, Folder, existing_folder, remove_file
from scalekit.core.errors import CorruptData, StoreUnavailable
from scalekit.tickets.stores import EVERY, Selection, TicketStore
from scalekit.tickets.ticket import ID_PATTERN, Entry, Group, entry, summarize

log = logging.getLogger("scalekit.tickets")

__all__ = ["BAD", "STALE_TEMP", "SUFFIX", "TMP_INFIX", "FolderStore"]

SUFFIX = ".json"
BAD = "bad"
MAX_BYTES = 100 * 1024 * 1024


class FolderStore(TicketStore):
    """Tickets as files in ``path`` (created 0700 on first write). ``fsync=True`` makes
    each write durable before the error page is sent, at the cost of a disk flush;
    ``max_bytes`` caps the tickets' size on disk (None: no cap); ``create=False``: the
    folder must exist (else :class:`~scalekit.core.errors.StoreNotFound`)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = "errors",
        *,
        fsync: bool = False,
        max_bytes: int | None = MAX_BYTES,
        create: bool = True,
    ):
        self.folder = os.path.abspath(os.fspath(path))
        if not create:
            existing_folder(self.folder, "ticket folder")
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._unchecked = max_bytes or 0  # bytes written since the size was checked
        self._files = Folder(self.folder, label="ticket folder", error=StoreUnavailable, log=log)

    def __repr__(self) -> str:
        return f"<FolderStore {self.folder}>"

    def save(self, ticket: dict[str, Any]) -> None:
        data = json.dumps(ticket, ensure_ascii=False, default=str).encode("utf-8")
        self._files.write(
            self.path_of(ticket["id"]),
            data,
            tmp_prefix=os.path.join(self.folder, f".{ticket['id']}{TMP_INFIX}"),  # hidden
            sync=self.fsync,
            make_folder=True,
        )
        self._unchecked += len(data)
        if self.max_bytes is not None and self._unchecked > self.max_bytes // 100:
            self._unchecked = 0  # checked after each 1% of the cap written, not every save
            self._trim(self.path_of(ticket["id"]))

    def load(self, ticket_id: str) -> dict[str, Any] | None:
        if not ID_PATTERN.match(ticket_id):
            return None
        path = self.path_of(ticket_id)
        try:
            return self.read(path)[0]
        except FileNotFoundError:
            return None
        except OSError as exc:  # a symbolic link, a folder, no permission...
            raise CorruptData(f"ticket file {path} cannot be read: {exc}") from None

    def entries(self, limit: int | None = None, selection: Selection = EVERY) -> list[Entry]:
        return [item for _, item in itertools.islice(self._entries(selection), limit)]

    def purge(self, before: float) -> int:
        return sum(remove_file(path) for path, _ in self._entries(Selection(until=before)))

    def _entries(self, selection: Selection) -> Iterator[tuple[str, Entry]]:
        """The path and entry of each readable ticket of ``selection``, newest first."""
        for path in self.pending(newest_first=True):
            try:
                item = entry(self.read(path)[0])
            except (OSError, CorruptData) as exc:
                log.warning("ticket file %s skipped: %s", path, exc)
                continue
            if selection.matches(item):
                yield path, item

    def summary(self) -> list[Group]:
        return summarize(self.entries())

    # -- what tickets2db uses -----------------------------------------------------------
    def path_of(self, ticket_id: str) -> str:
        return os.path.join(self.folder, ticket_id + SUFFIX)

    def pending(self, newest_first: bool = False) -> Iterator[str]:
        """Paths of the ticket files (oldest first), skipping temporary files and ``bad/``."""
        try:
            scanned = list(os.scandir(self.folder))
        except FileNotFoundError:
            return iter(())
        except OSError as exc:
            raise self._files.unavailable("list", exc) from exc
        files = []
        for item in scanned:
            if item.name.endswith(SUFFIX) and not item.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):  # moved meanwhile
                    files.append((item.stat(follow_symlinks=False).st_mtime, item.path))
        files.sort(reverse=newest_first)
        return (path for _, path in files)

    def _trim(self, keep: str) -> None:
        """Past ``max_bytes``, delete tickets (never ``keep``) until they take at most 90%
        of it (so the next saves find room without reading every ticket again):
        duplicates oldest first, then the oldest."""
        sizes = {}
        for path in self.pending():
            with contextlib.suppress(FileNotFoundError):
                sizes[path] = os.lstat(path).st_size
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        excess = total - self.max_bytes * 9 // 10
        seen, duplicates, others = set(), [], []
        for path in reversed(sizes):  # newest first: the newest of each failure stays
            try:
                item = entry(self.read(path)[0])
            except (OSError, CorruptData):
                continue
            group = duplicates if (item.error_type, item.location) in seen else others
            group.append(path)
            seen.add((item.error_type, item.location))
        removed = 0
        for path in [*reversed(duplicates), *reversed(others)]:
            if excess <= 0:
                break
            if path != keep:
                remove_file(path)
                excess -= sizes[path]
                removed += 1
        log.warning("ticket folder %s is over %d bytes: %d ticket(s) deleted", self.folder,
                    self.max_bytes, removed)  # fmt: skip

    def remove_stale_temps(self, older_than: float = STALE_TEMP) -> int:
        """Delete the temp files writers that crashed left behind; how many went."""
        removed, cutoff = 0, time.time() - older_than
        with contextlib.suppress(FileNotFoundError), os.scandir(self.folder) as scanned:
            for item in scanned:
                if not (item.name.startswith(".") and TMP_INFIX in item.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if item.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(item.path)
                        removed += 1
        return removed

    def read(self, path: str) -> tuple[dict[str, Any], str]:
        """The ticket in ``path`` and its JSON text; :class:`CorruptData` if the file is not
        a valid UTF-8 ticket named for its id or not a regular file, ``OSError`` if it cannot
        be read (a symbolic link is not followed)."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CorruptData("not a regular file")
            data = file.read()
        try:
            raw = data.decode("utf-8")
            ticket = json.loads(raw)
        except ValueError as exc:  # also UnicodeDecodeError
            raise CorruptData(f"not UTF-8 JSON: {exc}") from None
        if entry(ticket).ticket_id + SUFFIX != os.path.basename(path):
            raise CorruptData("the ticket's id does not match the file name")
        return ticket, raw

    def quarantine(self, path: str, reason: object) -> None:
        """Move ``path`` into ``bad/`` (never delete it), with a log line saying why."""
        bad = os.path.join(self.folder, BAD)
        target = os.path.join(bad, os.path.basename(path))
        try:
            os.makedirs(bad, mode=0o700, exist_ok=True)
            if os.path.lexists(target):
                target += f".{secrets.token_hex(4)}"
            os.replace(path, target)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error(
                "ticket file %s is unusable (%s) and could not be moved: %s", path, reason, exc
            )
            return
        log.warning("ticket file %s is unusable (%s): moved to %s", path, reason, target)

    @staticmethod
    def remove(path: str) -> None:
        """Delete a ticket file (now in the database); one already gone is fine."""
        remove_file(path)
