"""``scalekit sessions2trash``: delete expired sessions, once or in a loop (web2py's options).

Cron: ``*/10 * * * * scalekit sessions2trash --store redis://cache:6379/0 --app shop -o``

It opens an existing store only: a mistyped ``--app`` or path is exit 1 naming the missing
folder, database file or table, and creates nothing. Redis keeps no store per app: there, an
app with no session at all is reported (exit 0).
"""

from __future__ import annotations

import argparse
import os
import time

from scalekit.cli import cron
from scalekit.cli.arguments import non_negative, positive
from scalekit.core.errors import ConfigError
from scalekit.core.urls import mask

NAME = "sessions2trash"
HELP = "delete expired sessions from a session store (web2py's options; cron-ready)"
STORE_VARIABLE, APP_VARIABLE = "SCALEKIT_SESSION_STORE", "SCALEKIT_APP"


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
    cron.add_arguments(parser)
    parser.add_argument(
        "-x", "--expiration", type=non_negative(float), default=3600.0, metavar="SECONDS",
        help="sessions unused this long expire when they have no stored expiry, or with -f "
        "(default 3600; -x 0 -f deletes every session)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    parser.add_argument("--batch", type=positive(int), default=1000, metavar="N",
                        help="sessions per batch (default 1000)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise ConfigError(f"give the store's URL with --store or ${STORE_VARIABLE}")
    from scalekit.sessions.stores import open_store

    store = open_store(args.store, app_name=args.app, create=False)
    verb = "would delete" if args.dry_run else "deleted"

    def one_pass(progress: cron.Progress) -> cron.Outcome:
        stats = store.cleanup(
            time.time() - args.expiration,
            force=args.force,
            dry_run=args.dry_run,
            batch=args.batch,
            progress=lambda s: progress(f"examined {s.examined:,}, {verb} {s.deleted:,}"),
        )
        if stats.self_expiring:
            return cron.Outcome(stats.note, notable=True, last=True)
        summary = f"examined {stats.examined:,}, {verb} {stats.deleted:,}"
        if stats.note:  # lock files removed, an app without sessions
            summary += f"; {stats.note}"
        return cron.Outcome(summary, stats.examined, "sessions", notable=bool(stats.note))

    try:
        return cron.run_passes(args, f"{mask(args.store)} (app {args.app})", one_pass)
    finally:
        store.close()
