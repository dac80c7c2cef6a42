"""Copy every upload of one store to another under the same name, each copy verified.

``scalekit uploads migrate --from file:///old/uploads --to s3://bucket/uploads`` runs
:func:`migrate`. The name stays the same, so the records that hold it need no change: point
the app at the new store once the migration has run (and run it again after the switch,
for the uploads that came in meanwhile).

Each copy is verified: the destination is read back and its SHA-256 and size compared with
the bytes read from the source (and with the checksum the source recorded, if it did). A
copy that does not match is removed and counted as failed. A re-run skips what is already
at the destination with the same size and checksum (the checksum the destination recorded,
else its bytes hashed again; ``rehash`` hashes them always), so a migration that was killed
or failed half-way is completed by running it again. The source is never changed unless
``move`` is given; then an upload is deleted from the source only once its copy was read
back and matched, also a copy already there: ``move`` reads every copy back, as
``rehash`` does, because the checksum a store recorded is of the bytes it was given, not
proof of the bytes it holds now.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scalekit.core.errors import ConfigError, ScalekitError, StoreUnavailable
from scalekit.uploads.errors import UploadCorrupt, UploadNotFound
from scalekit.uploads.names import parse_name
from scalekit.uploads.stores.base import Source, UploadInfo, UploadStore

__all__ = ["KEPT_FAILURES", "Migration", "migrate"]

_T = TypeVar("_T")

log = logging.getLogger("scalekit.uploads")

#: The failures a :class:`Migration` keeps with their reasons (all are counted and logged).
KEPT_FAILURES = 1000
#: In the key of a same-store probe: no store makes such a key (theirs are hex digits)
_PROBE = "-scalekit-migrate-probe-"


@dataclass
class Migration:
    """What :func:`migrate` did: uploads copied, skipped (already there and verified), gone
    from the source before their turn came (deleted by the app meanwhile), that failed (the
    first :data:`KEPT_FAILURES` with why), sources deleted (``move``) and those the source would not
    delete (web2py's blob fields are the app's; deleted meanwhile), bytes copied, and why
    it stopped early (a store that cannot be reached), if it did."""

    copied: int = 0
    skipped: int = 0
    vanished: int = 0
    failed: int = 0
    deleted: int = 0
    undeleted: int = 0
    bytes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    #: counted only: ``copied`` and ``bytes`` are what a real run would copy
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Every upload listed is at the destination, verified, and the run went to the end."""
        return not self.failed and self.stopped is None

    @property
    def seconds(self) -> float:
        """How long the run took (so far, while it runs)."""
        return (self.ended or time.monotonic()) - self.started

    def summary(self) -> str:
        """One line: copied, skipped, failed, (deleted,) bytes and seconds (a dry run: and
        that the same-store check was not made)."""
        moved = f", {self.vanished:,} gone from the source" if self.vanished else ""
        moved += f", {self.deleted:,} deleted from the source" if self.deleted else ""
        if self.undeleted:
            moved += f", {self.undeleted:,} left at the source (it did not delete them)"
        copied = "would be copied" if self.dry_run else "copied"
        line = (
            f"{self.copied:,} {copied}, {self.skipped:,} skipped (already there), "
            f"{self.failed:,} failed{moved}, {self.bytes:,} bytes in {self.seconds:.1f} s"
        )
        if self.dry_run:
            line += "; not checked that the two URLs are two stores (a dry run writes no probe)"
        return line


def migrate(
    source: UploadStore,
    destination: UploadStore,
    *,
    prefix: str = "",
    move: bool = False,
    rehash: bool = False,
    dry_run: bool = False,
    jobs: int = 1,
    progress: Callable[[Migration], None] | None = None,
) -> Migration:
    """Copy every upload of ``source`` whose name starts with ``prefix`` to ``destination``
    under the same name, verified; ``move``: delete each from the source once its copy was
    read back and matched. Two URLs of one store are a :class:`ConfigError` (a probe
    written to the destination shows in the source). A failure of one upload (corrupt,
    refused) is counted and the run goes on; a store that cannot be reached stops it
    (:attr:`Migration.stopped`). ``jobs``: uploads copied at a time, each in a thread of
    its own (for a server store far away; an SQLite destination takes one writer at a
    time). ``dry_run``: copy and delete nothing, count what would be copied (the copies
    already there are checked as a real run checks them; no probe is written, so two URLs
    of one store are not found out, and the summary says so). ``progress`` is called with
    the running totals after each upload."""
    if jobs < 1:
        raise ConfigError(f"jobs must be 1 or more, not {jobs!r}")
    listing = (info for info in source.names(prefix) if not _is_probe(info.name))
    if source.url == destination.url or (
        (first := next(listing, None)) is not None  # a source missing stops here
        and not dry_run
        and _same_store(source, destination, first.name)
    ):
        raise ConfigError(
            f"{source.url} and {destination.url} are the same store (a copy onto itself, and "
            "--move would delete the only copy)"
        )
    listed = itertools.chain([first] if first is not None else [], listing)
    run = _Run(source, destination, listed, move=move and not dry_run, rehash=rehash or move,
               dry_run=dry_run, progress=progress)  # fmt: skip
    if jobs == 1:
        run.work()
    else:
        _in_threads(run, jobs)
    run.done.ended = time.monotonic()
    return run.done


def _in_threads(run: _Run, jobs: int) -> None:
    """``run`` in ``jobs`` threads. Each closes the stores once every thread is done: a
    database store's close ends this thread's connection (only its thread may), an S3
    store's the clients all threads share (never while another is copying)."""
    finished = threading.Barrier(jobs)

    def work() -> None:
        try:
            run.work(threaded=True)
        finally:
            finished.wait()
            run.source.close()
            run.destination.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C: the threads end after the upload each is copying
        run.stop("interrupted")
        raise
    if run.error is not None:  # what a thread raised (the source missing...): the caller's
        raise run.error


class _Run:
    """One migration: the listing the workers share, the totals they add to."""

    def __init__(
        self,
        source: UploadStore,
        destination: UploadStore,
        listing: Iterator[UploadInfo],
        *,
        move: bool,
        rehash: bool,
        dry_run: bool,
        progress: Callable[[Migration], None] | None,
    ):
        self.source, self.destination, self.listing = source, destination, listing
        self.move, self.rehash, self.dry_run, self.progress = move, rehash, dry_run, progress
        self.done = Migration(dry_run=dry_run)
        self.lock = threading.Lock()
        #: what stopped a thread of its own (raised again by the caller's thread)
        self.error: BaseException | None = None

    def work(self, threaded: bool = False) -> None:
        """Migrate uploads until none is left or the run stops; in a thread of its own
        (``threaded``), what stops it is kept for the caller's thread to raise."""
        try:
            while (listed := self._next()) is not None:
                self._one(listed)
        except Exception as exc:
            if not threaded:
                raise
            with self.lock:
                self.error = self.error or exc

    def stop(self, why: str) -> None:
        with self.lock:
            self._halt(why)

    def _halt(self, why: str) -> None:
        """Stop the run (the first reason is kept); the caller holds the lock."""
        if self.done.stopped is None:
            self.done.stopped = why
            log.error("migration stopped: %s", why)

    def _next(self) -> UploadInfo | None:
        with self.lock:
            if self.done.stopped is not None or self.error is not None:
                return None
            try:
                return next(self.listing, None)
            except StoreUnavailable as exc:
                self._halt(str(exc))
                return None

    def _one(self, listed: UploadInfo) -> None:
        deleted: bool | None = None
        try:
            copied = _migrate_one(self.source, self.destination, listed, self.rehash, self.dry_run)
            if self.move:
                deleted = self.source.delete(listed.name)
        except StoreUnavailable as exc:
            self.stop(str(exc))
            return
        except _Vanished:
            log.info("%s: gone from %s before its turn: nothing to copy", listed.name,
                     self.source.url)  # fmt: skip
            with self.lock:
                self.done.vanished += 1
                self._report()
            return
        except (ScalekitError, OSError, ValueError) as exc:
            log.error("%s: not migrated: %s", listed.name, exc)
            with self.lock:
                self.done.failed += 1
                if len(self.done.failures) < KEPT_FAILURES:
                    self.done.failures.append((listed.name, str(exc)))
                self._report()
            return
        with self.lock:
            self.done.copied += copied is not None
            self.done.skipped += copied is None
            self.done.bytes += copied or 0
            self.done.deleted += deleted is True
            self.done.undeleted += deleted is False
            self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done)


def _same_store(source: UploadStore, destination: UploadStore, like: str) -> bool:
    """Whether an upload written to the destination shows in the source: one folder, table
    or bucket under two URLs (a trailing slash, a symlink, another host name). The probe is
    named like ``like``, the first upload to copy: the same ``table.field`` and key's first
    two characters (a folder store keeps it in the folder that upload's copy goes to, so it
    makes no folder of its own), its key marked (:func:`_is_probe`: no migration copies
    one). One a killed run left is an unreferenced upload that ``uploads gc`` removes."""
    parsed = parse_name(like)
    assert parsed is not None  # listed by a store
    key = f"{parsed.key[:2]}{_PROBE}{secrets.token_hex(8)}"
    probe = f"{parsed.table}.{parsed.field}.{key}.probe"
    destination.put(probe, b"")
    try:
        source.info(probe)
    except UploadNotFound:
        return False
    finally:
        destination.delete(probe)
    return True


def _is_probe(name: str) -> bool:
    """Whether ``name`` is a same-store probe (:func:`_same_store`), not an upload."""
    parsed = parse_name(name)
    return parsed is not None and _PROBE in parsed.key


def _migrate_one(
    source: UploadStore, destination: UploadStore, listed: UploadInfo, rehash: bool,
    dry_run: bool,
) -> int | None:  # fmt: skip
    """Copy and verify one upload; the bytes copied (``dry_run``: to copy), ``None`` when
    a verified copy was there already."""
    name = listed.name
    if _verified_copy(source, destination, listed, rehash):
        log.info("%s: already at %s, skipped", name, destination.url)
        return None
    if dry_run:
        log.info("%s: would be copied to %s (%d bytes)", name, destination.url, listed.size)
        return listed.size
    chunks = _from_source(source.read, name)
    try:
        read = Source(chunks)
        destination.put(name, read)
    finally:
        _close(chunks)
    try:
        _check_source(source, listed, read)
        there = _digest(destination, name)
        if there != (read.sha256, read.size):
            raise UploadCorrupt(
                f"{destination.url}: {name}: the copy reads back as {there[1]} bytes with "
                f"SHA-256 {there[0]}, not the {read.size} bytes with {read.sha256} written"
            )
    except BaseException:
        destination.delete(name)  # a bad copy is worse than none: the next run copies again
        raise
    log.info("%s: copied to %s (%d bytes, verified)", name, destination.url, read.size)
    return read.size


def _verified_copy(
    source: UploadStore, destination: UploadStore, listed: UploadInfo, rehash: bool
) -> bool:
    """Whether the destination holds the upload already with the source's size and SHA-256:
    the checksum the destination recorded is taken on trust unless ``rehash`` (``move``
    sets it), else its bytes are read back and hashed."""
    try:
        there = destination.info(listed.name)
    except UploadNotFound:
        return False
    if there.size != listed.size:
        return False
    wanted = listed.sha256 or _from_source(_digest, source, listed.name)[0]
    if there.sha256 and not rehash:
        return there.sha256 == wanted
    try:
        same = _digest(destination, listed.name) == (wanted, listed.size)
    except UploadCorrupt:
        same = False
    if not same:
        log.warning("%s: the copy at %s differs: copying it again", listed.name, destination.url)
    return same


class _Vanished(Exception):
    """The source no longer has an upload it listed."""


def _from_source(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)`` on the source: its UploadNotFound is :class:`_Vanished`."""
    try:
        return call(*args)
    except UploadNotFound:
        raise _Vanished from None


def _check_source(source: UploadStore, listed: UploadInfo, read: Source) -> None:
    """:class:`UploadCorrupt` unless the bytes read are the size (and SHA-256) listed."""
    if read.size != listed.size or (listed.sha256 and listed.sha256 != read.sha256):
        raise UploadCorrupt(
            f"{source.url}: {listed.name}: read {read.size} bytes with SHA-256 {read.sha256}, "
            f"the store lists {listed.size} bytes with {listed.sha256 or 'no checksum'}"
        )


def _digest(store: UploadStore, name: str) -> tuple[str, int]:
    """The SHA-256 and size of an upload's bytes as the store reads them back."""
    sha, size = hashlib.sha256(), 0
    chunks = store.read(name)
    try:
        for chunk in chunks:
            sha.update(chunk)
            size += len(chunk)
    finally:
        _close(chunks)
    return sha.hexdigest(), size


def _close(chunks: Iterator[bytes]) -> None:
    """Close a read's iterator (a cursor, a response) also when it was not read to the end."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
