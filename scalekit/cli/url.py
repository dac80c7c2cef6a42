"""``scalekit url URL...``: check backend URLs and show what scalekit reads from them."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.core import urls
from scalekit.core.errors import ConfigError

NAME = "url"
HELP = "check backend URLs and show their parsed settings (passwords masked)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", metavar="URL", help="a backend URL, e.g. redis://host/0")


def describe(settings: urls.BackendURL) -> list[str]:
    """One ``name: value`` line per setting; a password or secret option shows only as ***."""
    lines = [f"kind: {settings.kind}"]
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.name == "url":
            continue
        if item.name == "password":
            value = urls.MASK if value is not None else None
        elif item.name == "options":
            value = settings.masked_options
        lines.append(f"{item.name}: {value}")
    return lines


def run(args: argparse.Namespace) -> int:
    bad = 0
    for url in args.urls:
        try:
            settings = urls.parse(url)
        except ConfigError as exc:
            bad += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(settings.masked)
        for line in describe(settings):
            print(f"  {line}")
    print(f"{len(args.urls) - bad} URL(s) ok, {bad} bad")
    return EXIT_FAILURE if bad else EXIT_OK
