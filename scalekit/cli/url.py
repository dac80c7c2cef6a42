"""``scalekit url [--for PIECE] URL...``: check backend URLs as the pieces open them, and show
what scalekit reads from them.

A URL is checked by the openers themselves (:func:`scalekit.sessions.open_store`,
:func:`scalekit.cache.backends.open_backend`, :func:`scalekit.maintenance.open_flag`), which
read their options without connecting: it is good when one of them takes it (``--for``: when
that one does), and bad with the opener's own message when it raises
:class:`~scalekit.core.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

from scalekit.cli import EXIT_OK, EXIT_USAGE
from scalekit.core import urls
from scalekit.core.errors import ConfigError

NAME = "url"
HELP = "check backend URLs as the pieces open them and show their settings (passwords masked)"

#: The piece that opens a URL -> its opener (module, function), imported when checking.
OPENERS = {
    "sessions": ("scalekit.sessions.stores", "open_store"),
    "cache": ("scalekit.cache.backends", "open_backend"),
    "flag": ("scalekit.maintenance.flags", "open_flag"),
}
#: Settings a unix socket URL does not use.
_TCP_ONLY = ("host", "port", "ssl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", metavar="URL", help="a backend URL, e.g. redis://host/0")
    parser.add_argument(
        "--for", dest="piece", choices=OPENERS,
        help="check for this piece only (session store, cache backend, maintenance flag); "
        "default: good if one of them takes it",
    )  # fmt: skip


def describe(settings: urls.BackendURL) -> list[str]:
    """One ``name: value`` line per setting; a password or secret option shows only as ***.
    A unix socket shows its path, not a host and port."""
    lines = [f"kind: {settings.kind}"]
    unix = getattr(settings, "unix_socket", None) is not None
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.name == "url" or (unix and item.name in _TCP_ONLY):
            continue
        if item.name == "password":
            value = urls.MASK if value is not None else None
        elif item.name == "options":
            value = settings.masked_options
        lines.append(f"{item.name}: {value}")
    return lines


def check(piece: str, url: str) -> tuple[str, str]:
    """``("opens", "")``, ``("refuses", the opener's ConfigError)``, or ``("unchecked",
    why)`` when the opener needs a package that is not installed. Nothing connects: the
    openers connect on first use."""
    module, function = OPENERS[piece]
    try:
        opened = getattr(importlib.import_module(module), function)(url)
    except ConfigError as exc:
        return "refuses", str(exc)
    except ImportError as exc:
        return "unchecked", f"the {exc.name} package is not installed"
    opened.close()
    return "opens", ""


def run(args: argparse.Namespace) -> int:
    pieces = [args.piece] if args.piece else list(OPENERS)
    bad = 0
    for url in args.urls:
        try:
            settings: urls.BackendURL | None = urls.parse(url)
        except ConfigError:
            settings = None  # the openers say why (the cache reads ram://, which no one else does)
        verdicts = {piece: check(piece, url) for piece in pieces}
        said = {verdict: {p: why for p, (v, why) in verdicts.items() if v == verdict}
                for verdict in ("opens", "refuses", "unchecked")}  # fmt: skip
        refused = said["refuses"]
        if settings is not None:
            print(settings.masked)
            for line in describe(settings):
                print(f"  {line}")
        elif len(refused) < len(pieces):  # a URL only a piece reads (the cache's ram://)
            print(urls.mask(url))
        if len(refused) == len(pieces):
            bad += 1
            grouped = _grouped(refused)
            for why, refusing in grouped.items():  # which piece said what, if they differ
                where = f" (as {', '.join(refusing)})" if len(grouped) > 1 else ""
                print(f"error{where}: {why}", file=sys.stderr)
            continue
        if said["opens"]:
            print(f"  opens as: {', '.join(said['opens'])}")
        for piece, why in said["unchecked"].items():
            print(f"  not checked as {piece}: {why}")
        for piece, why in refused.items():
            print(f"  not as {piece}: {why}")
    print(f"{len(args.urls) - bad} URL(s) ok, {bad} bad")
    return EXIT_USAGE if bad else EXIT_OK


def _grouped(refused: dict[str, str]) -> dict[str, list[str]]:
    """Each message once, with the pieces that gave it."""
    grouped: dict[str, list[str]] = {}
    for piece, why in refused.items():
        grouped.setdefault(why, []).append(piece)
    return grouped
