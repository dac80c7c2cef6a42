"""Precompress static trees: ``precompress(["static"], Options(brotli=True))``.

The parent process walks each tree and settles what it can from stat calls alone: files
skipped (type or size), files unchanged since the last run (same size, mtime and inode as
the manifest, variants in place with the source's mtime). Everything else goes to a pool
of worker processes, largest files first, small files in batches; a worker hashes a file
whose stat changed and recompresses only if its content did. The manifest is saved last.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING

from scalekit.core.errors import InvalidArgument, NotAFolder
from scalekit.static import manifest
from scalekit.static.manifest import MANIFEST_NAME, TEMP_SUFFIX, Entry
from scalekit.static.variants import SUFFIXES, Options, Result, Task, remove, run_batch

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

MODES = ("write", "dry-run", "check")
_BATCH_BYTES = 4 << 20  # small files travel to the workers in batches of about this much
_BATCH_FILES = 64


@dataclass
class Report:
    """What one run did (or, with ``dry-run`` / ``check``, would do)."""

    compressed: int = 0  # files with a variant written in this run
    unchanged: int = 0
    skipped: int = 0  # by type or size, or when no variant saved enough
    removed: int = 0  # variant files deleted: sources gone (--clean), options changed
    bytes_in: int = 0  # sources compressed in this run
    bytes_out: dict[str, int] = field(default_factory=dict)  # their kept variants, by suffix
    stale: list[str] = field(default_factory=list)  # paths that need a run (check mode)
    why: dict[str, str] = field(default_factory=dict)  # what makes each stale path stale
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count_unchanged(self, sizes: dict[str, int | None]) -> None:
        if any(sizes.values()):
            self.unchanged += 1
        else:
            self.skipped += 1  # still does not compress

    def mark_stale(self, rel: str, why: str) -> None:
        self.stale.append(rel)
        self.why[rel] = why

    def add(self, result: Result) -> None:
        if result.action == "compressed" and not any(result.sizes.values()):
            self.skipped += 1  # compressed, but no variant saved enough to be kept
            self.removed += result.removed
        elif result.action == "compressed":
            self.compressed += 1
            self.removed += result.removed
            self.bytes_in += result.source_size
            for suffix, size in result.sizes.items():
                self.bytes_out[suffix] = self.bytes_out.get(suffix, 0) + (size or 0)
        elif result.action == "unchanged":
            self.count_unchanged(result.sizes)
        elif result.action == "stale":
            self.mark_stale(result.rel, result.why)
        elif result.action == "changed":
            self.errors.append(f"{result.rel}: changed while being compressed; run again")
        else:
            self.errors.append(result.error)


Progress = Callable[[str, Result], None]


def precompress(
    roots: Iterable[str],
    options: Options | None = None,
    *,
    mode: str = "write",
    clean: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """Write (or with ``mode="dry-run"`` count, or with ``"check"`` list) the variants of
    every file under ``roots``. ``clean`` removes the variants of sources that are gone;
    ``jobs`` worker processes (default: one per core); ``progress(root, result)`` is called
    for each file a worker handled."""
    if mode not in MODES:
        raise InvalidArgument(f"mode must be one of {MODES}, not {mode!r}")
    options = (options or Options()).resolved()
    report, started = Report(), time.monotonic()
    jobs = max(1, jobs or os.cpu_count() or 1)
    with contextlib.ExitStack() as stack:
        pool: list[ProcessPoolExecutor] = []

        def executor() -> ProcessPoolExecutor:
            if not pool:  # imported here: a run with nothing to compress starts no pool
                from concurrent.futures import ProcessPoolExecutor

                pool.append(stack.enter_context(ProcessPoolExecutor(jobs)))
            return pool[0]

        for root in roots:
            _one_tree(os.path.abspath(root), options, mode, clean, jobs, executor, report, progress)
    report.seconds = time.monotonic() - started
    return report


def _one_tree(
    root: str,
    options: Options,
    mode: str,
    clean: bool,
    jobs: int,
    executor: Callable[[], ProcessPoolExecutor],
    report: Report,
    progress: Progress | None,
) -> None:
    """Settle what stat calls can, hand the rest to the workers, save the manifest."""
    entries = manifest.load(root)
    before = len(entries), report.removed
    tasks: list[tuple[int, Task]] = []
    seen: set[str] = set()
    key = options.key
    for folder, rel, name, st in _walk(root, clean and mode == "write"):
        path = os.path.join(folder, name)
        prior = entries.get(rel)
        if not options.eligible(name, st.st_size):
            report.skipped += 1
            if prior is not None:  # compressed under other options: drop what we wrote
                why = "no longer compressed (its type or size is skipped)"
                _drop(path, rel, prior, entries, mode, report, why)
            continue
        seen.add(rel)
        if prior is not None and _fresh(path, prior, st, key):
            report.count_unchanged(prior.variants)
        else:
            tasks.append((st.st_size, Task(path, rel, prior)))
    for rel in [rel for rel in entries if rel not in seen]:
        path = os.path.join(root, *rel.split("/"))
        if not os.path.exists(path) and (clean or mode == "check"):
            _drop(path, rel, entries[rel], entries, mode, report, "its source is gone")
    results = 0
    for result in _dispatch(tasks, options, mode, jobs, executor):
        results += 1
        report.add(result)
        if result.entry is not None:
            entries[result.rel] = result.entry
        if progress is not None:
            progress(root, result)
    if mode == "write" and (results or (len(entries), report.removed) != before):
        manifest.save(root, entries)


_NAME = attrgetter("name")


def _walk(root: str, remove_temps: bool) -> Iterator[tuple[str, str, str, os.stat_result]]:
    """(folder, relative path, name, stat) of each source under ``root``, sorted. Files
    named ``*.gz`` / ``*.br`` (variants, or archives), the manifest and temp files are not
    sources; links to folders are not followed."""
    if not os.path.isdir(root):
        raise NotAFolder(f"{root} is not a folder")
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as scan:
            items = sorted(scan, key=_NAME)
        subfolders = []
        for item in items:
            name = item.name
            if item.is_dir(follow_symlinks=False):
                subfolders.append((item.path, prefix + name + "/"))
            elif name.endswith(TEMP_SUFFIX):
                if remove_temps:  # left by an interrupted run
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item.path)
            elif not (name.startswith(MANIFEST_NAME) or name.endswith(SUFFIXES)):
                try:
                    st = item.stat()
                except FileNotFoundError:  # a dangling link, or removed meanwhile
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield folder, prefix + name, name, st
        pending.extend(reversed(subfolders))


def _fresh(path: str, prior: Entry, st: os.stat_result, key: str) -> bool:
    """The stat-only pre-check: same source stat and options, each recorded variant in
    place with the source's mtime, no unrecorded one."""
    if prior.key != key or not prior.same_stat(st):
        return False
    for suffix, size in prior.variants.items():
        try:
            variant = os.lstat(path + suffix)
        except FileNotFoundError:
            if size is None:
                continue
            return False
        if size is None or variant.st_size != size or variant.st_mtime_ns != st.st_mtime_ns:
            return False
    return True


def _drop(
    path: str, rel: str, prior: Entry, entries: dict, mode: str, report: Report, why: str
) -> None:
    """Remove the variants recorded for ``rel`` (``why``: a source gone or no longer
    compressed); with ``check``, list it as stale if any is there."""
    written = [path + s for s, size in prior.variants.items() if size is not None]
    if mode == "check":
        present = [os.path.basename(p) for p in written if os.path.lexists(p)]
        if present:
            report.mark_stale(rel, f"{why}: remove {', '.join(present)}")
        return
    report.removed += sum(remove(variant, mode == "write") for variant in written)
    if mode == "write":
        del entries[rel]


def _dispatch(
    tasks: list[tuple[int, Task]],
    options: Options,
    mode: str,
    jobs: int,
    executor: Callable[[], ProcessPoolExecutor],
) -> Iterator[Result]:
    """Run the tasks, largest first; in this process when one job (or one task) suffices."""
    tasks.sort(key=lambda sized: -sized[0])
    if jobs == 1 or len(tasks) <= 1:
        yield from run_batch([task for _, task in tasks], options, mode)
        return
    futures = [executor().submit(run_batch, batch, options, mode) for batch in _batches(tasks)]
    for future in as_completed(futures):
        yield from future.result()


def _batches(tasks: list[tuple[int, Task]]) -> Iterator[list[Task]]:
    batch: list[Task] = []
    total = 0
    for size, task in tasks:
        batch.append(task)
        total += size
        if total >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch
