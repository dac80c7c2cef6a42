"""``scalekit tickets list|show ID|summary|serve``: read tickets from a folder or a database."""

from __future__ import annotations

import argparse
import json
import os
import unicodedata
from typing import TYPE_CHECKING, Any

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.cli.arguments import in_range
from scalekit.core.errors import ConfigError, CorruptData
from scalekit.core.urls import mask

if TYPE_CHECKING:
    from scalekit.tickets.ticket import Entry

NAME = "tickets"
HELP = "list, show, summarize and serve error tickets in a ticket folder or database"
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
    listing.add_argument("-n", "--limit", type=int, default=50, help="how many (default 50)")
    show = views.add_parser("show", help="one ticket in full")
    show.add_argument("ticket_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="the ticket's JSON as stored")
    views.add_parser("summary", help="counts by exception type and location")
    serve = views.add_parser(
        "serve",
        help="browse the tickets in HTML (the TicketViewer); needs --allow or a token",
        description="Serve the TicketViewer. Access needs a client address in --allow or the "
        f"token (${TOKEN_VARIABLE} or --token-file), as Authorization: Bearer or ?token=.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=in_range(0, 65535), default=8001, help="(default 8001)")
    serve.add_argument(
        "--allow",
        metavar="ADDRESS",
        action="append",
        default=[],
        help="a client address or network let in without the token (repeatable)",
    )
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the token (default: ${TOKEN_VARIABLE})",
    )


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

    if args.view == "serve":
        return serve(args)
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


def serve(args: argparse.Namespace) -> int:
    """Serve the viewer of ``--store`` until interrupted; refused without --allow or a token."""
    from scalekit.tickets.server import open_server
    from scalekit.tickets.stores import open_store
    from scalekit.tickets.viewer import TicketViewer

    token = _token(args.token_file)
    if not args.allow and not token:
        raise ConfigError(
            f"tickets serve needs --allow ADDRESS or a token (${TOKEN_VARIABLE} or "
            "--token-file): the viewer shows tracebacks and request data"
        )
    store = open_store(args.store)
    try:
        with open_server(TicketViewer(store, allowed=args.allow, token=token), args.host,
                         args.port) as server:  # fmt: skip
            host, port = server.server_address[:2]
            where = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
            print(f"{NAME}: serving {mask(args.store)} at {where} (Ctrl-C stops)", flush=True)
            server.serve_forever()
    except KeyboardInterrupt:
        print(f"{NAME}: stopped")
    finally:
        store.close()
    return EXIT_OK


def _token(path: str | None) -> str | None:
    """The viewer's token: the first line of ``path``, else $SCALEKIT_TICKETS_TOKEN."""
    if path is None:
        return os.environ.get(TOKEN_VARIABLE) or None
    with open(path, encoding="utf-8") as file:
        return file.readline().strip() or None
