"""``scalekit tickets2db``: move ticket files into a database, once or in a loop.

Cron: ``*/5 * * * * scalekit tickets2db --folder /srv/app/errors --db postgres://... -o``.
The database URI comes from ``--db``, else ``$SCALEKIT_TICKET_DB``, else web2py's
``private/ticket_storage.txt`` in the folder that holds the errors folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from scalekit.cli.sessions2trash import _positive
from scalekit.core.errors import StoreUnavailable
from scalekit.tickets.database import DatabaseStore
from scalekit.tickets.folder import FolderStore
from scalekit.tickets.transfer import CollectStats, collect

NAME = "tickets2db"
HELP = "move error ticket files into a database (web2py's options; cron-ready)"
DB_VARIABLE = "SCALEKIT_TICKET_DB"
STORAGE_FILE = os.path.join("private", "ticket_storage.txt")

log = logging.getLogger("scalekit.tickets2db")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", default="errors", help="the ticket folder (default: ./errors)")
    parser.add_argument(
        "--db",
        metavar="URI",
        help=f"the database URI (default: ${DB_VARIABLE}, else {STORAGE_FILE} beside the folder)",
    )
    parser.add_argument(
        "-o",
        "--once",
        action="store_true",
        help="one pass, then exit (without it, run every -s seconds)",
    )
    parser.add_argument(
        "-s",
        "--sleep",
        type=_positive(float),
        default=300.0,
        metavar="SECONDS",
        help="seconds between passes (default 300)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="progress per batch and a summary (repeat: more logs)",
    )


def database_uri(args: argparse.Namespace) -> str | None:
    """``--db``, ``$SCALEKIT_TICKET_DB``, or the first line of ``private/ticket_storage.txt``."""
    if args.db:
        return args.db
    if os.environ.get(DB_VARIABLE):
        return os.environ[DB_VARIABLE]
    app_folder = os.path.dirname(os.path.abspath(args.folder))
    try:
        with open(os.path.join(app_folder, STORAGE_FILE), encoding="utf-8") as file:
            return file.read().strip() or None
    except FileNotFoundError:
        return None


def move_once(
    folder: FolderStore, database: DatabaseStore, args: argparse.Namespace
) -> CollectStats:
    """One pass; prints progress and a summary with ``-v``."""
    started = time.monotonic()

    def progress(stats: CollectStats) -> None:
        if args.verbose:
            print(f"  moved {stats.moved:,}, already stored {stats.duplicates:,}", flush=True)

    stats = collect(folder, database, progress=progress)
    if args.verbose or stats.quarantined:
        print(
            f"{NAME}: {folder.folder} -> {database.masked}: moved {stats.moved:,}, already "
            f"stored {stats.duplicates:,}, moved to bad/ {stats.quarantined:,}, stale temp "
            f"files removed {stats.stale_temps:,} in "
            f"{time.monotonic() - started:.2f} s",
            flush=True,
        )
    return stats


def run(args: argparse.Namespace) -> int:
    uri = database_uri(args)
    if not uri:
        print(
            f"{NAME}: give the database with --db, ${DB_VARIABLE} or {STORAGE_FILE}",
            file=sys.stderr,
        )
        return 2
    folder, database = FolderStore(args.folder), DatabaseStore(uri)
    try:
        while True:
            try:
                move_once(folder, database, args)
            except StoreUnavailable as exc:
                if args.once:
                    raise
                log.error(
                    "%s: pass failed, files kept, retrying in %g s: %s", NAME, args.sleep, exc
                )
            if args.once:
                return 0
            time.sleep(args.sleep)
    finally:
        database.close()
