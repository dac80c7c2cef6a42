"""``scalekit sessions2trash``: delete expired sessions, once or in a loop (web2py's options).

Cron: ``*/10 * * * * scalekit sessions2trash --store redis://cache:6379/0 --app shop -o``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from scalekit.core.errors import StoreUnavailable
from scalekit.core.urls import mask
from scalekit.sessions.stores import SessionStore, open_store
from scalekit.sessions.stores.base import CleanupStats

NAME = "sessions2trash"
HELP = "delete expired sessions from a session store (web2py's options; cron-ready)"
STORE_VARIABLE, APP_VARIABLE = "SCALEKIT_SESSION_STORE", "SCALEKIT_APP"

log = logging.getLogger("scalekit.sessions2trash")


def _positive(kind):
    def convert(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is negative")
        return value

    convert.__name__ = kind.__name__
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="URL", default=os.environ.get(STORE_VARIABLE),
        help=f"the session store's URL (default: ${STORE_VARIABLE})",
    )  # fmt: skip
    parser.add_argument(
        "--app", default=os.environ.get(APP_VARIABLE, "app"),
        help=f"the app whose sessions to clean (default: ${APP_VARIABLE} or 'app')",
    )  # fmt: skip
    parser.add_argument("-f", "--force", action="store_true",
                        help="ignore the stored expiry: delete what is older than -x")  # fmt: skip
    parser.add_argument("-o", "--once", action="store_true",
                        help="one pass, then exit (without it, run every -s seconds)")  # fmt: skip
    parser.add_argument("-s", "--sleep", type=_positive(float), default=300.0, metavar="SECONDS",
                        help="seconds between passes (default 300)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="progress per batch and a summary (repeat: more logs)")  # fmt: skip
    parser.add_argument(
        "-x", "--expiration", type=_positive(float), default=3600.0, metavar="SECONDS",
        help="sessions unused this long expire when they have no stored expiry, or with -f "
        "(default 3600; -x 0 -f deletes every session)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    parser.add_argument("--batch", type=_positive(int), default=1000, metavar="N",
                        help="sessions per batch (default 1000)")  # fmt: skip


def clean_once(store: SessionStore, args: argparse.Namespace) -> CleanupStats:
    """One pass over ``store``; prints progress and a summary with ``-v``."""
    started, where = time.monotonic(), f"{mask(args.store)} (app {args.app})"

    def progress(stats: CleanupStats) -> None:
        if args.verbose:
            verb = "would delete" if args.dry_run else "deleted"
            print(f"  examined {stats.examined:,}, {verb} {stats.deleted:,}", flush=True)

    stats = store.cleanup(
        time.time() - args.expiration,
        force=args.force,
        dry_run=args.dry_run,
        batch=max(1, args.batch),
        progress=progress,
    )
    seconds = time.monotonic() - started
    if stats.note:
        print(f"{NAME}: {where}: {stats.note}")
    elif args.verbose:
        verb = "would delete" if args.dry_run else "deleted"
        rate = stats.examined / seconds if seconds > 0 else 0.0
        print(
            f"{NAME}: {where}: examined {stats.examined:,}, {verb} {stats.deleted:,} "
            f"in {seconds:.2f} s ({rate:,.0f} sessions/s)",
            flush=True,
        )
    return stats


def run(args: argparse.Namespace) -> int:
    if not args.store:
        print(f"{NAME}: give the store's URL with --store or ${STORE_VARIABLE}", file=sys.stderr)
        return 2
    store = open_store(args.store, app=args.app)
    try:
        while True:
            try:
                stats = clean_once(store, args)
            except StoreUnavailable as exc:
                if args.once:
                    raise
                log.error("%s: pass failed, retrying in %g s: %s", NAME, args.sleep, exc)
            else:
                if stats.note:
                    return 0
            if args.once:
                return 0
            time.sleep(args.sleep)
    finally:
        store.close()
