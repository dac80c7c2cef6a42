"""``scalekit tickets list|show ID|summary|serve|purge``: tickets in a folder or a database."""

from __future__ import annotations

import argparse
import json
import os
import time
import unicodedata
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.cli.arguments import duration, positive
from scalekit.cli.viewers import run_viewer, serve_arguments, viewer_token
from scalekit.core.errors import CorruptData
from scalekit.core.urls import mask

if TYPE_CHECKING:
    from scalekit.tickets.stores import TicketStore
    from scalekit.tickets.ticket import Entry

NAME = "tickets"
HELP = "list, show, summarize, serve and purge error tickets in a ticket folder or database"
STORE_VARIABLE = "SCALEKIT_TICKET_STORE"
TOKEN_VARIABLE = "SCALEKIT_TICKETS_TOKEN"


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
    listing.add_argument(
        "-n", "--limit", type=positive(int), default=50, help="how many (default 50)"
    )
    listing.add_argument("--app", help="only this app's tickets")
    listing.add_argument(
        "--type",
        dest="error_type",
        metavar="TYPE",
        help="only this exception type (ValueError, module.Name)",
    )
    for name, which in (("--since", "at or after"), ("--until", "before")):
        listing.add_argument(
            name,
            type=moment,
            metavar="WHEN",
            help=f"only tickets created {which} WHEN: an ISO date or time "
            "(UTC unless it says otherwise) or a duration ago (7d, 12h)",
        )
    show = views.add_parser("show", help="one ticket in full")
    show.add_argument("ticket_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="the ticket's JSON as stored")
    views.add_parser("summary", help="counts by exception type and location")
    purge = views.add_parser("purge", help="delete the tickets older than a duration (retention)")
    purge.add_argument(
        "--older-than",
        required=True,
        type=age,
        metavar="DURATION",
        help="created longer ago than this: 30d, 12h, 2w...",
    )
    purge.add_argument(
        "--dry-run",
        action="store_true",
        help="list the tickets that would be deleted, delete nothing",
    )
    serve = views.add_parser(
        "serve",
        help="browse the tickets in HTML (the TicketViewer); needs --allow or a token",
        description="Serve the TicketViewer. Access needs a client address in --allow or the "
        f"token (${TOKEN_VARIABLE} or --token-file), as Authorization: Bearer or ?token=.",
    )
    serve_arguments(serve, 8001, TOKEN_VARIABLE)


def list_lines(entries: list[Entry]) -> list[str]:
    lines = [f"{'UTC':<20}{'ticket':<24}{'app':<12}{'node':<16}{'version':<12}error"]
    for item in entries:
        lines.append(
            f"{item.created:<20}{item.ticket_id:<24}{item.app[:11]:<12}"
            f"{item.node[:15]:<16}{(item.version or '-')[:11]:<12}{item.summary[:100]}"
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
    peer = request.get("peer", request["client"])  # older tickets have no peer
    via = f" via {peer}" if peer != request["client"] else ""
    where = (
        f"node {ticket.get('node', ticket['hostname'])}  host {ticket['hostname']}  "
        f"version {ticket.get('version', '-')}"
    )
    lines = [
        f"ticket {ticket['id']}  app {ticket['app']}  {ticket['created']}",
        f"{where}  pid {ticket['pid']}  request {ticket['request_id']}",
        f"{request['method']} {request['path']}{query}  from {request['client']}{via}",
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
    from scalekit.tickets.stores import Selection, open_store

    if args.view == "serve":
        return serve(args)
    store = open_store(args.store, create=False)  # reading: a typo must not create a store
    try:
        if args.view == "list":
            chosen = Selection(args.app, args.error_type, args.since, args.until)
            entries = store.entries(args.limit, chosen)
            lines = [*list_lines(entries), f"{len(entries)} ticket(s)"]
        elif args.view == "purge":
            lines = purge(store, args)
        elif args.view == "show":
            try:
                ticket = store.load(args.ticket_id)
            except CorruptData as exc:
                print(visible(f"{NAME}: ticket {args.ticket_id!r} cannot be read: {exc}"))
                return EXIT_FAILURE
            if ticket is None:
                print(visible(f"{NAME}: no ticket {args.ticket_id!r} in {mask(args.store)}"))
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


def purge(store: TicketStore, args: argparse.Namespace) -> list[str]:
    """Delete the tickets older than ``--older-than`` (list them with ``--dry-run``)."""
    from scalekit.tickets.stores import Selection, stamp

    before = time.time() - args.older_than
    where = f"created before {stamp(before)} UTC in {mask(args.store)}"
    if args.dry_run:
        entries = store.entries(selection=Selection(until=before))
        return [*list_lines(entries), f"{len(entries)} ticket(s) {where} would be deleted"]
    return [f"{store.purge(before)} ticket(s) {where} deleted"]


def age(text: str) -> float:
    """A :func:`duration` of more than 0 (``--older-than 0`` would delete every ticket)."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0: give e.g. 30d")
    return seconds


def moment(text: str) -> float:
    """The Unix time of an ISO date or time (UTC unless it has an offset) or of a duration
    (``7d``) ago."""
    try:
        return time.time() - duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date or time (2026-11-30, 2026-11-30T08:00) nor a "
            "duration ago (7d, 12h)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def serve(args: argparse.Namespace) -> int:
    """Serve the viewer of ``--store`` until interrupted; refused without --allow or a token."""
    from scalekit.tickets.stores import open_store
    from scalekit.tickets.viewer import TicketViewer

    token = viewer_token(args, TOKEN_VARIABLE, "tracebacks and request data")
    store = open_store(args.store, create=False)
    try:
        store.entries(1)  # a store that does not exist or cannot be read stops here
        viewer = TicketViewer(store, allowed=args.allow, token=token)
        return run_viewer(NAME, viewer, args, mask(args.store))
    finally:
        store.close()
