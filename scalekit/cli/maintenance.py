"""``scalekit maintenance on|off|status|schedule``: flip maintenance mode for every server.

``scalekit maintenance on --mode read-only --for 30m --message "Database upgrade"``
``scalekit maintenance schedule --at 2030-06-01T02:00 --for 1h`` (UTC, or ``--at +2h``)
The flag URL comes from ``--flag`` or ``$SCALEKIT_MAINTENANCE_FLAG``; the app from ``--app``
or ``$SCALEKIT_APP``.
"""

from __future__ import annotations

import argparse
import os
import time

from scalekit.cli import EXIT_OK
from scalekit.cli.arguments import argument_type, positive
from scalekit.core.errors import ConfigError, CorruptData

NAME = "maintenance"
HELP = "switch maintenance mode (down or read-only) on or off for every server, or schedule it"
APP_VARIABLE = "SCALEKIT_APP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalekit.maintenance.flags import FLAG_VARIABLE
    from scalekit.maintenance.state import MODES, parse_duration, parse_time

    parser.add_argument("action", choices=("on", "off", "status", "schedule"),
                        help="on: now; off: end it (also a scheduled one); status: show; "
                        "schedule: a window from --at, lasting --for")  # fmt: skip
    parser.add_argument(
        "--flag", metavar="URL", default=os.environ.get(FLAG_VARIABLE),
        help=f"redis://host:6379/0 (every server) or file:///path/to/flagfile "
        f"(default: ${FLAG_VARIABLE})",
    )  # fmt: skip
    parser.add_argument(
        "--app", default=os.environ.get(APP_VARIABLE, "app"),
        help=f"the app, part of the Redis key (default: ${APP_VARIABLE} or 'app')",
    )  # fmt: skip
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="down: every request gets 503; read-only: only writes do "
                        "(default down)")  # fmt: skip
    parser.add_argument("--message", default="", help="shown to users on the maintenance page")
    parser.add_argument("--retry-after", type=positive(int), metavar="SECONDS",
                        help="the Retry-After header (default: the time left in the window, "
                        "else 300)")  # fmt: skip
    parser.add_argument(
        "--at", type=argument_type(parse_time, "time"), metavar="TIME",
        help="schedule: the start, in UTC: YYYY-MM-DDTHH:MM (or ending in Z, or an offset "
        "such as +02:00), or +30m from now",
    )  # fmt: skip
    parser.add_argument("--for", dest="duration", type=argument_type(parse_duration, "duration"),
                        metavar="DURATION", help="how long: 90s, 30m, 2h, 1h30m "
                        "(default: until `off`)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs")


def run(args: argparse.Namespace) -> int:
    from scalekit.connect.files import existing_folder
    from scalekit.maintenance.flags import FLAG_VARIABLE, FileFlag, open_flag

    if not args.flag:
        raise ConfigError(
            f"give the flag's URL with --flag or ${FLAG_VARIABLE}, e.g. "
            "--flag redis://localhost:6379/0 or --flag file:///srv/app/MAINTENANCE"
        )
    changing = args.mode is not None or args.message or args.retry_after is not None
    if args.action in ("off", "status") and (changing or args.at is not None or args.duration):
        raise ConfigError(f"`{args.action}` takes only --flag and --app")
    if args.action == "on" and args.at is not None:
        raise ConfigError("`on` starts now: to start later use `schedule --at TIME`")
    if args.action == "schedule" and args.at is None:
        raise ConfigError("`schedule` needs --at TIME (UTC as YYYY-MM-DDTHH:MM, or +30m from now)")
    flag = open_flag(args.flag, app_name=args.app)
    if args.action in ("off", "status") and isinstance(flag, FileFlag):
        existing_folder(os.path.dirname(flag.path), "the maintenance flag's folder")
    try:
        return _act(flag, args)
    finally:
        flag.close()


def _act(flag, args: argparse.Namespace) -> int:
    from scalekit.maintenance.state import State, format_time

    now = time.time()
    if args.action == "status":
        state = flag.read()
        print(f"{NAME} ({flag.where}): {state.describe(now) if state else 'off'}")
        return EXIT_OK
    if args.action == "off":
        try:
            before = flag.read()
        except CorruptData:  # replaced anyway
            before = None
        flag.clear()
        print(f"{NAME} ({flag.where}): off" + (f" (was {before.describe(now)})" if before else ""))
        return EXIT_OK
    start = args.at if args.action == "schedule" else None
    begin = start if start is not None else now
    end = begin + args.duration if args.duration else None
    if end is not None and end <= now:
        raise ConfigError(f"that window ended already ({format_time(end)}); pick a later --at")
    state = State(args.mode or "down", args.message, start, end, args.retry_after)
    flag.write(state)
    print(f"{NAME} ({flag.where}): {state.describe(now)}")
    return EXIT_OK
