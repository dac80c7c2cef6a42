"""``scalekit tickets2db``: move ticket files into a database, once or in a loop.

Cron: ``*/5 * * * * scalekit tickets2db --folder /srv/app/errors --db postgres://... -o``.
The database URI comes from ``--db``, else ``$SCALEKIT_TICKET_DB``, else web2py's
``private/ticket_storage.txt`` in the folder that holds the errors folder. A pass that
fails keeps its files: the next pass moves them.
"""

from __future__ import annotations

import argparse
import os

from scalekit.cli import cron
from scalekit.core.errors import ConfigError

NAME = "tickets2db"
HELP = "move error ticket files into a database (web2py's options; cron-ready)"
DB_VARIABLE = "SCALEKIT_TICKET_DB"
STORAGE_FILE = os.path.join("private", "ticket_storage.txt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", default="errors", help="the ticket folder (default: ./errors)")
    parser.add_argument(
        "--db",
        metavar="URI",
        help=f"the database URI (default: ${DB_VARIABLE}, else {STORAGE_FILE} beside the folder)",
    )
    cron.add_arguments(parser)


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


def run(args: argparse.Namespace) -> int:
    uri = database_uri(args)
    if not uri:
        raise ConfigError(f"give the database with --db, ${DB_VARIABLE} or {STORAGE_FILE}")
    from scalekit.tickets.database import DatabaseStore
    from scalekit.tickets.folder import FolderStore
    from scalekit.tickets.transfer import collect

    folder, database = FolderStore(args.folder), DatabaseStore(uri)

    def one_pass(progress: cron.Progress) -> cron.Outcome:
        stats = collect(
            folder,
            database,
            progress=lambda s: progress(f"moved {s.moved:,}, already stored {s.duplicates:,}"),
        )
        return cron.Outcome(
            f"moved {stats.moved:,}, already stored {stats.duplicates:,}, moved to bad/ "
            f"{stats.quarantined:,}, stale temp files removed {stats.stale_temps:,}",
            stats.moved + stats.duplicates + stats.quarantined,
            "tickets",
            notable=stats.quarantined > 0,
        )

    try:
        return cron.run_passes(args, f"{folder.folder} -> {database.masked}", one_pass)
    finally:
        database.close()
