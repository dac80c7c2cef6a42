"""``scalekit zip-static DIR...``: write ``.gz`` (and ``.br``) variants of static files.

Deploy step: ``scalekit zip-static --brotli --clean applications/*/static``; CI:
``scalekit zip-static --check applications/*/static`` (exit 1 and list what is stale, and
why, one line per file).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.cli.arguments import in_range, non_negative

if TYPE_CHECKING:
    from scalekit.static import Report
    from scalekit.static.variants import Result

NAME = "zip-static"
HELP = "precompress static files to .gz / .br for the web server (incremental, atomic)"


def _extensions(text: str) -> frozenset[str]:
    return frozenset(e.strip().lstrip(".").lower() for e in text.split(",") if e.strip())


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalekit.static.variants import DEFAULT_SKIP, ENGINES

    parser.add_argument("dirs", nargs="+", metavar="DIR", help="static folders to compress")
    parser.add_argument("-l", "--level", type=in_range(1, 9), default=9,
                        help="gzip level, 1 fastest .. 9 smallest (default 9)")  # fmt: skip
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto",
        help="what makes the .gz: libdeflate (pip install deflate; as small as zlib, ~2x "
        "faster), zlib, zopfli; auto (default): libdeflate when installed, else zlib",
    )  # fmt: skip
    parser.add_argument("--zopfli", dest="engine", action="store_const", const="zopfli",
                        help="same as --engine zopfli: ~5%% smaller, much slower")  # fmt: skip
    parser.add_argument("--zopfli-iterations", type=in_range(1, 1000), default=15, metavar="N",
                        help="zopfli iterations (default 15)")  # fmt: skip
    parser.add_argument("--brotli", action="store_true",
                        help="also write .br files (pip install brotli)")  # fmt: skip
    parser.add_argument("--quality", type=in_range(0, 11), default=11,
                        help="brotli quality, 0..11 (default 11)")  # fmt: skip
    parser.add_argument(
        "--skip", type=_extensions, default=DEFAULT_SKIP, metavar="EXT,EXT",
        help="extensions never compressed, replacing the default list (images, fonts, "
        "archives, audio, video); --skip '' compresses every type",
    )  # fmt: skip
    parser.add_argument("--min-size", type=non_negative(int), default=256, metavar="BYTES",
                        help="leave smaller files alone (default 256)")  # fmt: skip
    parser.add_argument("--max-ratio", type=_ratio, default=0.95, metavar="R",
                        help="keep a variant only if <= R x its source (default 0.95)")  # fmt: skip
    parser.add_argument("-j", "--jobs", type=in_range(1, 1024), default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")  # fmt: skip
    parser.add_argument("--clean", action="store_true",
                        help="remove variants zip-static wrote for sources now gone")  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_const", dest="mode", const="check",
                      help="write nothing; list what is stale, exit 1 if anything is")  # fmt: skip
    mode.add_argument("--dry-run", action="store_const", dest="mode", const="dry-run",
                      help="write nothing; show what would change and the bytes saved")  # fmt: skip
    parser.set_defaults(mode="write")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="a line per file compressed")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from scalekit.connect.files import existing_folder
    from scalekit.static import Options, precompress

    for folder in args.dirs:  # checked first: nothing is compressed when one is wrong
        existing_folder(folder, "static folder")
    options = Options(
        level=args.level,
        engine=args.engine,
        zopfli_iterations=args.zopfli_iterations,
        brotli=args.brotli,
        quality=args.quality,
        skip_extensions=args.skip,
        min_size=args.min_size,
        max_ratio=args.max_ratio,
    )
    counter = _Progress(args.verbose, args.mode)
    report = precompress(
        args.dirs, options, mode=args.mode, clean=args.clean, jobs=args.jobs, progress=counter
    )
    counter.done()
    for error in report.errors:
        print(f"{NAME}: {error}", file=sys.stderr)
    for rel in sorted(report.stale):
        print(f"stale: {rel}: {report.why[rel]}")
    print(summary(report, args.mode))
    return EXIT_FAILURE if report.errors or report.stale else EXIT_OK


class _Progress:
    """``-v``: a line per file; on a terminal without ``-v``: a running count."""

    def __init__(self, verbose: int, mode: str) -> None:
        self.verbose = verbose
        self.verb = "would compress" if mode == "dry-run" else "compressed"
        self.live = not verbose and sys.stdout.isatty()
        self.count = 0

    def __call__(self, root: str, result: Result) -> None:
        self.count += 1
        if self.verbose and result.action == "compressed":
            sizes = ", ".join(
                f"{suffix[1:]} {_size(size) if size is not None else 'not kept'}"
                for suffix, size in result.sizes.items()
            )
            print(f"{self.verb} {os.path.join(root, result.rel)} {_size(result.source_size)}"
                  f" -> {sizes}", flush=True)  # fmt: skip
        elif self.live and self.count % 100 == 0:
            print(f"\r{self.count:,} files", end="", flush=True)

    def done(self) -> None:
        if self.live and self.count >= 100:
            print("\r", end="")


def summary(report: Report, mode: str) -> str:
    """One line: files compressed/unchanged/skipped, bytes before and after, seconds."""
    would = "would be " if mode == "dry-run" else ""
    line = (
        f"{NAME}: {report.compressed:,} {would}compressed, {report.unchanged:,} unchanged, "
        f"{report.skipped:,} skipped, {report.removed:,} variants {would}removed"
    )
    if mode == "check":
        line = f"{NAME}: {len(report.stale):,} stale, {report.unchanged:,} up to date"
    elif report.compressed:
        after = ", ".join(
            f"{suffix[1:]} {_size(size)} ({size / max(report.bytes_in, 1):.0%})"
            for suffix, size in sorted(report.bytes_out.items(), reverse=True)
        )
        line += f"; {_size(report.bytes_in)} -> {after}"
    return f"{line}; {report.seconds:.2f} s"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
