"""``scalekit sessions copy``: copy an app's sessions from one Redis session store to another
of any topology (single Redis, Sentinel, Cluster), so nobody is signed out by the move.

``scalekit sessions copy --from redis://old:6379/0 --to redis+cluster://n1:7000 --app shop``

Create-only: a session already in the target (saved there by a server that uses it) is never
overwritten, so the copy can run while the new servers serve, and again (it copies nothing
twice). The source is only read.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from scalekit.cli import cron
from scalekit.cli.arguments import positive
from scalekit.core.errors import ConfigError
from scalekit.core.urls import mask, parse

NAME = "sessions"
HELP = "copy an app's sessions between Redis session stores (e.g. into a Cluster)"
APP_VARIABLE = "SCALEKIT_APP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    text = (
        "copy every session of an app from one Redis session store to another (single "
        "Redis, Sentinel, Cluster), keeping data, TTLs and cleanup order; never overwrites"
    )
    copy = actions.add_parser("copy", help=text, description=text)
    copy.add_argument("--from", dest="source", metavar="URL", required=True,
                      help="the Redis session store to read (never changed)")  # fmt: skip
    copy.add_argument("--to", dest="target", metavar="URL", required=True,
                      help="the Redis session store to write, in its own key layout")  # fmt: skip
    copy.add_argument(
        "--app", default=os.environ.get(APP_VARIABLE, "app"),
        help=f"the app whose sessions to copy (default: ${APP_VARIABLE} or 'app')",
    )  # fmt: skip
    copy.add_argument("--dry-run", action="store_true", help="count only, write nothing")
    copy.add_argument("--batch", type=positive(int), default=1000, metavar="N",
                      help="sessions per batch (default 1000)")  # fmt: skip
    copy.add_argument("-v", "--verbose", action="count", default=0,
                      help="progress per batch (repeat: more logs)")  # fmt: skip
    copy.set_defaults(once=True)


def run(args: argparse.Namespace) -> int:
    from scalekit.sessions.stores import open_store

    source_url, target_url = (parse(url, kinds={"redis"}) for url in (args.source, args.target))
    if replace(source_url, options={}) == replace(target_url, options={}):  # options aside
        raise ConfigError(f"--from and --to name the same store: {source_url.masked}")
    stores = []
    try:
        for url in (args.source, args.target):
            stores.append(open_store(url, app_name=args.app))
        source, target = stores
        verb = "would copy" if args.dry_run else "copied"

        def one_pass(progress: cron.Progress) -> cron.Outcome:
            def counts(s) -> str:
                return f"{verb} {s.copied:,}, skipped existing {s.existing:,}, gone {s.gone:,}"

            stats = source.copy_to(
                target,
                dry_run=args.dry_run,
                batch=args.batch,
                progress=lambda s: progress(counts(s)),
            )
            summary = f"{counts(stats)}; {stats.note}" if stats.note else counts(stats)
            return cron.Outcome(summary, stats.copied, "sessions", notable=True)

        where = f"{mask(args.source)} -> {mask(args.target)} (app {args.app})"
        return cron.run_passes(args, where, one_pass)
    finally:
        for store in stores:
            store.close()
