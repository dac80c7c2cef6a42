"""The ``scalekit`` command: ``scalekit <command> [options]``.

Each module in this package that defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` is a command; it is found and registered here, nothing else to edit.
A command module imports its piece inside ``add_arguments`` and ``run``, never at module
level: only the command that runs adds its options, so ``scalekit --help`` loads no piece
and no driver.

Exit codes, the same for every command (the commands raise, this module picks the code):
``EXIT_OK``; ``EXIT_FAILURE``: the command ran and failed (a store down, a store to read
that does not exist, :class:`~scalekit.core.errors.StoreNotFound`, corrupt data, a file
system error) or found a problem (stale files to ``zip-static --check``); ``EXIT_USAGE``: the
command line or a setting is wrong (argparse's errors, a
:class:`~scalekit.core.errors.ConfigError`: a bad or missing URL or option).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from scalekit import __version__
from scalekit.core.errors import ConfigError, ScalekitError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _command_modules():
    """The command modules of this package, sorted by command name."""
    modules = (
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    )
    return sorted((m for m in modules if hasattr(m, "run")), key=lambda m: m.NAME)


class CommandParser(argparse.ArgumentParser):
    """A command's (or a command's sub-command's) parser: an argument it does not know is
    its own usage error (``usage: scalekit sessions2trash ...``), not the top level's."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with one sub-command per command module; only ``command``'s
    options are added (adding them may import its piece)."""
    parser = argparse.ArgumentParser(
        prog="scalekit",
        description="Sessions, cache, tickets, replicas, static files and maintenance "
        "for WSGI apps on many servers.",
    )
    parser.add_argument("--version", action="version", version=f"scalekit {__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="<command>", parser_class=CommandParser
    )
    for module in _command_modules():
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        sub.set_defaults(run=module.run)
        if command == module.NAME:
            module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbosity = getattr(args, "verbose", 0) or 0
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbosity, 2),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.run(args)
    except ConfigError as exc:
        return _failed(args.command, exc, EXIT_USAGE)
    except (ScalekitError, OSError) as exc:  # OSError: a file system error, in one line
        return _failed(args.command, exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        return _failed(args.command, "interrupted", EXIT_FAILURE)


def _failed(command: str, error: object, code: int) -> int:
    print(f"scalekit {command}: {error}", file=sys.stderr)
    return code
