"""The ``scalekit`` command: ``scalekit <command> [options]``.

Each module in this package that defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` is a command; it is found and registered here, nothing else to edit.
Exit codes: 0 ok, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from scalekit import __version__
from scalekit.core.errors import ScalekitError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _command_modules():
    """The command modules of this package, sorted by command name."""
    modules = (
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    )
    return sorted((m for m in modules if hasattr(m, "run")), key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per command module."""
    parser = argparse.ArgumentParser(
        prog="scalekit",
        description="Sessions, cache, tickets, replicas, static files and maintenance "
        "for WSGI apps on many servers.",
    )
    parser.add_argument("--version", action="version", version=f"scalekit {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="<command>")
    for module in _command_modules():
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _execute(args)


def run_command(module: ModuleType, argv: Sequence[str] | None = None) -> int:
    """Run one command module alone: a cron or deploy wrapper then imports no other
    command's dependencies."""
    parser = argparse.ArgumentParser(prog=f"scalekit {module.NAME}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    args.command, args.run = module.NAME, module.run
    return _execute(args)


def _execute(args: argparse.Namespace) -> int:
    verbosity = getattr(args, "verbose", 0) or 0
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbosity, 2),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.run(args)
    except ScalekitError as exc:
        print(f"scalekit {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"scalekit {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
