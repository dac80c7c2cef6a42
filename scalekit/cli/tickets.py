"""``scalekit tickets list|show ID|summary``: read tickets from a folder or a database."""

from __future__ import annotations

import argparse
import json
import os
import unicodedata
from typing import TYPE_CHECKING, Any

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.core.errors import CorruptData

if TYPE_CHECKING:
    from scalekit.tickets.ticket import Entry

NAME = "tickets"
HELP = "list, show and summarize error tickets in a ticket folder or database"
STORE_VARIABLE = "SCALEKIT_TICKET_STORE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalekit.tickets.stores import DEFAULT_URL

    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_VARIABLE, DEFAULT_URL),
        help=f"file://FOLDER or a database URL (default: ${STORE_VARIABLE} or {DEFAULT_URL})",
    )
    views = parser.add_subparsers(dest="view", metavar="<view>", required=True)
    listing = views.add_parser("list", help="the newest tickets, newest first")
    listing.add_argument("-n", "--limit", type=int, default=50, help="how many (default 50)")
    show = views.add_parser("show", help="one ticket in full")
    show.add_argument("ticket_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="the ticket's JSON as stored")
    views.add_parser("summary", help="counts by exception type and location")


def list_lines(entries: list[Entry]) -> list[str]:
    lines = [f"{'UTC':<20}{'ticket':<24}{'app':<12}{'host':<16}error"]
    for item in entries:
        lines.append(
            f"{item.created:<20}{item.ticket_id:<24}{item.app[:11]:<12}"
            f"{item.hostname[:15]:<16}{item.summary[:100]}"
        )
    return lines


def visible(text: str) -> str:
    """``text`` with control and format characters (escapes, CR, bidi overrides) shown as
    ``\\x1b``-style escapes: what a ticket recorded from a request never drives the terminal."""
    return "".join(
        char.encode("unicode_escape").decode()
        if unicodedata.category(char)[0] in "CZ" and char != " "
        else char
        for char in text
    )


def show_lines(ticket: dict[str, Any]) -> list[str]:
    error, request = ticket["error"], ticket["request"]
    query = f"?{request['query']}" if request.get("query") else ""
    lines = [
        f"ticket {ticket['id']}  app {ticket['app']}  {ticket['created']}",
        f"host {ticket['hostname']}  pid {ticket['pid']}  request {ticket['request_id']}",
        f"{request['method']} {request['path']}{query}  from {request['client']}",
        f"{error['summary']}",
        f"counted {ticket.get('count', 1)} time(s), last at {ticket.get('last_seen', '-')}",
        f"at {error['location']}",
        "",
        *error["traceback"].rstrip().split("\n"),
    ]
    for frame in reversed(ticket["frames"]):
        lines += ["", f"{frame['file']}:{frame['line']} in {frame['function']}"]
        lines += [f"    {name} = {value}" for name, value in frame["locals"].items()]
    lines += ["", "request headers:"]
    lines += [f"    {name}: {value}" for name, value in request["headers"].items()]
    return lines


def run(args: argparse.Namespace) -> int:
    from scalekit.tickets.stores import open_store

    store = open_store(args.store)
    try:
        if args.view == "list":
            entries = store.entries(max(args.limit, 0))
            lines = [*list_lines(entries), f"{len(entries)} ticket(s)"]
        elif args.view == "show":
            try:
                ticket = store.load(args.ticket_id)
            except CorruptData as exc:
                print(visible(f"{NAME}: ticket {args.ticket_id!r} cannot be read: {exc}"))
                return EXIT_FAILURE
            if ticket is None:
                print(visible(f"{NAME}: no ticket {args.ticket_id!r} in {args.store}"))
                return EXIT_FAILURE
            lines = json.dumps(ticket, indent=2).split("\n") if args.json else show_lines(ticket)
        else:
            groups = store.summary()
            lines = [f"{'count':>6}  {'first seen':<20}{'last seen':<20}error at location"]
            lines += [
                f"{g.count:>6}  {g.first_seen:<20}{g.last_seen:<20}{g.error_type} at {g.location}"
                for g in groups
            ]
            lines.append(f"{sum(g.count for g in groups)} ticket(s) in {len(groups)} group(s)")
    finally:
        store.close()
    print("\n".join(map(visible, lines)))
    return EXIT_OK
