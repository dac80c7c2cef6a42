"""``scalekit uploads migrate|gc``: move uploads between stores, remove the unreferenced.

``scalekit uploads migrate --from file:///old/uploads --to s3://bucket/uploads`` copies
every upload under its name, verifies each copy by checksum, and can be run again to
complete a migration that stopped (``--move``: each source deleted once its copy was read
back and matched, also a copy already there). Cron, once a day:
``scalekit uploads gc --store $SCALEKIT_UPLOADS --db $SCALEKIT_DB_PRIMARY``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.cli.arguments import duration, positive
from scalekit.core.errors import ConfigError
from scalekit.core.urls import mask

if TYPE_CHECKING:
    from scalekit.uploads.gc import Collection
    from scalekit.uploads.migrate import Migration

NAME = "uploads"
HELP = "copy uploads to another store (verified, resumable) or remove unreferenced ones"
STORE_VARIABLE, DB_VARIABLE = "SCALEKIT_UPLOADS", "SCALEKIT_DB_PRIMARY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    migrate = actions.add_parser(
        "migrate",
        help="copy every upload to another store under the same name, each copy verified by "
        "SHA-256; run it again to complete a migration that stopped",
        description="Copy every upload of one store to another under the same name, each "
        "copy verified by SHA-256 and size; a re-run skips the verified copies, so it "
        "completes a migration that stopped. The source is kept unless --move.",
    )
    migrate.add_argument("--from", dest="source", metavar="URL", required=True,
                         help="the store to copy from (kept unless --move)")  # fmt: skip
    migrate.add_argument("--to", dest="destination", metavar="URL", required=True,
                         help="the store to copy to")  # fmt: skip
    migrate.add_argument("--move", action="store_true",
                         help="delete each from the source once its copy was read back and "
                         "matched (also the copies already there: each is read back)")  # fmt: skip
    migrate.add_argument("--rehash", action="store_true",
                         help="re-read the copies already there even where the destination "
                         "recorded a checksum (finds copies corrupted since)")  # fmt: skip
    migrate.add_argument("--dry-run", action="store_true",
                         help="copy and delete nothing: count what would be copied (not "
                         "checked: that the two URLs are not one store)")  # fmt: skip
    migrate.add_argument(
        "-j", "--jobs", type=positive(int), default=1, metavar="N",
        help="uploads copied at a time, a thread each (default 1; 8 or more for S3 or a "
        "far server; SQLite takes one writer at a time)",
    )  # fmt: skip
    _common(migrate)
    migrate.set_defaults(run_action=run_migrate)
    gc = actions.add_parser(
        "gc",
        help="remove uploads no record references, older than a grace period (cron-ready)",
        description="Remove the uploads that no record references (the table and field "
        "their name names, one query per batch), older than the grace period; names whose "
        "table or field is not in the database are kept and reported.",
    )
    gc.add_argument("--store", metavar="URL", default=os.environ.get(STORE_VARIABLE),
                    help=f"the upload store (default: ${STORE_VARIABLE})")  # fmt: skip
    gc.add_argument("--db", metavar="URL", default=os.environ.get(DB_VARIABLE),
                    help=f"the app's database, whose records hold the names (default: "
                    f"${DB_VARIABLE})")  # fmt: skip
    gc.add_argument("--older-than", type=duration, default=86400.0, metavar="AGE",
                    help="the grace period: younger uploads are kept, their records may not "
                    "be committed yet (default 1d; 45s, 90m, 12h, 2w)")  # fmt: skip
    gc.add_argument("--dry-run", action="store_true", help="count only, remove nothing")
    gc.add_argument("--batch", type=positive(int), default=500, metavar="N",
                    help="names per database query (default 500)")  # fmt: skip
    _common(gc)
    gc.set_defaults(run_action=run_gc)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="", metavar="P",
                        help="only the names starting with P (e.g. person.image.)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="a line per upload (repeat: more logs)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    return args.run_action(args)


def run_migrate(args: argparse.Namespace) -> int:
    from scalekit.uploads import open_store
    from scalekit.uploads.migrate import migrate

    if mask(args.source) == mask(args.destination):
        raise ConfigError(f"--from and --to are the same store: {mask(args.source)}")
    with contextlib.ExitStack() as stack:
        source = open_store(args.source, create=False)  # a mistyped source: exit 1
        stack.callback(source.close)
        destination = open_store(args.destination)
        stack.callback(destination.close)
        live = _Live(args.verbose)
        stack.callback(live.clear)
        done = migrate(
            source, destination, prefix=args.prefix, move=args.move, rehash=args.rehash,
            dry_run=args.dry_run, jobs=args.jobs, progress=live.show(_migrate_progress),
        )  # fmt: skip
    print(f"{NAME} migrate: {source.url} -> {destination.url}: {done.summary()}", flush=True)
    if done.stopped:
        print(f"{NAME} migrate: stopped: {done.stopped}; run it again to go on", file=sys.stderr)
    elif not done.copied + done.skipped + done.failed + done.vanished:
        prefix = f" whose name starts with {args.prefix!r}" if args.prefix else ""
        print(f"{NAME} migrate: no upload{prefix} in {source.url}", file=sys.stderr)
    elif done.failed:
        print(f"{NAME} migrate: {done.failed:,} upload(s) not migrated (see above); the source "
              "keeps them", file=sys.stderr)  # fmt: skip
    return EXIT_OK if done.ok else EXIT_FAILURE


def run_gc(args: argparse.Namespace) -> int:
    if not args.store or not args.db:
        raise ConfigError(
            f"give the upload store (--store URL or ${STORE_VARIABLE}) and the app's database "
            f"(--db URL or ${DB_VARIABLE})"
        )
    from scalekit.uploads import open_store
    from scalekit.uploads.gc import collect

    with contextlib.ExitStack() as stack:
        store = open_store(args.store, create=False)
        stack.callback(store.close)
        live = _Live(args.verbose)
        stack.callback(live.clear)
        done = collect(
            store, args.db, older_than=args.older_than, prefix=args.prefix,
            dry_run=args.dry_run, batch=args.batch,
            progress=live.show(functools.partial(_gc_progress, dry_run=args.dry_run)),
        )  # fmt: skip
    print(f"{NAME} gc: {store.url}: {done.summary(args.dry_run)}", flush=True)
    return EXIT_OK


def _migrate_progress(done: Migration) -> str:
    return (f"{done.copied:,} copied, {done.skipped:,} skipped, {done.failed:,} failed, "
            f"{done.bytes / 1e6:,.1f} MB")  # fmt: skip


def _gc_progress(done: Collection, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    return f"examined {done.examined:,}, {verb} {done.removed:,}"


class _Live:
    """Running totals on one line, rewritten at most 5 times a second, when stdout is a
    terminal and ``-v`` (a line per upload) is not given; the line is cleared at the end."""

    def __init__(self, verbose: int) -> None:
        self.live = not verbose and sys.stdout.isatty()
        self.shown = 0.0
        self.width = 0

    def show(self, text: Callable[[Any], str]) -> Callable[[Any], None] | None:
        if not self.live:
            return None

        def progress(done: Any) -> None:
            now = time.monotonic()
            if now - self.shown >= 0.2:
                line = text(done)
                self.width = max(self.width, len(line))
                print(f"\r{line}", end="", flush=True)
                self.shown = now

        return progress

    def clear(self) -> None:
        if self.width:
            print("\r" + " " * self.width + "\r", end="", flush=True)
