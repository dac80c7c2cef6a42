"""What the ``serve`` actions of the admin viewers share (``scalekit tickets serve``,
``scalekit tasks serve``): their options, their token, the server's run."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

from scalekit.cli import EXIT_OK
from scalekit.cli.arguments import in_range
from scalekit.core.errors import ConfigError


def serve_arguments(parser: argparse.ArgumentParser, port: int, token_variable: str) -> None:
    """``--host``, ``--port`` (default ``port``), ``--allow`` and ``--token-file``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=in_range(0, 65535), default=port, help=f"(default {port})")
    parser.add_argument(
        "--allow",
        metavar="ADDRESS",
        action="append",
        default=[],
        help="a client address or network let in without the token (repeatable)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the token (default: ${token_variable})",
    )


def viewer_token(args: argparse.Namespace, token_variable: str, shows: str) -> str | None:
    """The token: the first line of ``--token-file``, else ``$token_variable``;
    :class:`ConfigError` if there is none and no ``--allow`` either (the viewer ``shows``
    what needs protecting)."""
    if args.token_file is None:
        token = os.environ.get(token_variable) or None
    else:
        with open(args.token_file, encoding="utf-8") as file:
            token = file.readline().strip() or None
    if not args.allow and not token:
        raise ConfigError(
            f"{args.command} serve needs --allow ADDRESS or a token (${token_variable} or "
            f"--token-file): the viewer shows {shows}"
        )
    return token


def run_viewer(name: str, app: Callable, args: argparse.Namespace, what: str) -> int:
    """Serve ``app`` on ``--host``/``--port`` until SIGINT or SIGTERM; ``what`` (the masked
    store) is named in the line that gives its URL."""
    from scalekit.wsgi.server import open_server, serve_until_signalled, url_of

    try:
        log = logging.getLogger(f"scalekit.{name}")
        with open_server(app, args.host, args.port, name=f"{name} viewer", log=log) as server:
            print(f"{name}: serving {what} at {url_of(server)} (Ctrl-C stops)", flush=True)
            serve_until_signalled(server)
    except KeyboardInterrupt:  # before the signals were handled
        pass
    print(f"{name}: stopped")
    return EXIT_OK
