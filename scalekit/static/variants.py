"""Build the ``.gz`` / ``.br`` variants of one source file: hash, compress, write atomically.

Runs in the worker processes of :func:`scalekit.static.precompress`. One read of the
source feeds the content digest and every encoder; each variant goes to a temp file in the
source's folder, gets the source's permissions and mtime (nginx's ``gzip_static`` sends a
variant as if it were the source), then replaces the old one with ``os.replace``: a web
server reading the variant sees the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field, replace

from scalekit.core.errors import ConfigError
from scalekit.static.encoders import (
    BrotliEncoder,
    Encoder,
    GzipEncoder,
    installed,
    libdeflate_encoder,
    require,
    zopfli_encoder,
)
from scalekit.static.manifest import TEMP_SUFFIX, Entry

CHUNK = 1 << 20
#: File types that do not compress: images, fonts, archives, audio and video.
DEFAULT_SKIP = frozenset(
    [
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "avif",
        "ico",
        "heic",
        "woff",
        "woff2",
        "zip",
        "gz",
        "tgz",
        "bz2",
        "tbz",
        "xz",
        "zst",
        "br",
        "7z",
        "rar",
        "jar",
        "pdf",
        "swf",
        "flv",
        "mp3",
        "ogg",
        "oga",
        "opus",
        "m4a",
        "aac",
        "flac",
        "3gp",
        "3gpp",
        "asf",
        "avi",
        "m4v",
        "mov",
        "mp4",
        "mpeg",
        "mpg",
        "webm",
        "wmv",
    ]
)
SUFFIXES = (".gz", ".br")


ENGINES = ("auto", "libdeflate", "zlib", "zopfli")


@dataclass(frozen=True)
class Options:
    """What zip-static writes.

    ``engine`` makes the ``.gz``: ``libdeflate`` (the ``deflate`` package: as small as
    zlib at the same level, about twice as fast), ``zlib`` (the standard library, streamed),
    ``zopfli`` (smallest, slowest), ``auto`` = libdeflate when installed, else zlib. The
    one-piece engines (libdeflate, zopfli) hold a file in memory: files over
    ``whole_max_size`` stream through zlib. ``max_ratio``: a variant is kept only if at
    most this fraction of its source.
    """

    engine: str = "auto"
    level: int = 9
    zopfli_iterations: int = 15
    whole_max_size: int = 32 << 20
    brotli: bool = False
    quality: int = 11
    skip_extensions: frozenset[str] = DEFAULT_SKIP
    min_size: int = 256
    max_ratio: float = 0.95

    def resolved(self) -> Options:
        """These options with ``auto`` settled and the needed packages checked (fails
        early, in the parent process, with how to install what is missing)."""
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown gzip engine {self.engine!r}: use one of {ENGINES}")
        engine = self.engine
        if engine == "auto":
            engine = "libdeflate" if installed("deflate") else "zlib"
        elif engine != "zlib":
            require("zopfli" if engine == "zopfli" else "deflate")
        if self.brotli:
            require("brotli")
        return replace(self, engine=engine)

    @property
    def key(self) -> str:
        """Names everything that changes a variant's bytes; a new key means recompress."""
        gz = (
            f"zopfli:{self.zopfli_iterations}"
            if self.engine == "zopfli"
            else f"{self.engine}:{self.level}"
        )
        br = f"|br:{self.quality}" if self.brotli else ""
        return f"{gz}{br}|{self.max_ratio:g}|{self.whole_max_size}"

    def eligible(self, name: str, size: int) -> bool:
        """Worth compressing: big enough, and not a type that is compressed already."""
        ext = name.rpartition(".")[2].lower() if "." in name else ""
        return size >= self.min_size and ext not in self.skip_extensions

    def encoders(self, size: int) -> dict[str, Encoder]:
        if self.engine == "zlib" or size > self.whole_max_size:
            gz: Encoder = GzipEncoder(self.level)
        elif self.engine == "zopfli":
            gz = zopfli_encoder(self.zopfli_iterations)
        else:
            gz = libdeflate_encoder(self.level)
        return {".gz": gz, ".br": BrotliEncoder(self.quality)} if self.brotli else {".gz": gz}


@dataclass(frozen=True)
class Task:
    path: str
    rel: str
    prior: Entry | None  # what the manifest says, when its stat no longer matches


@dataclass
class Result:
    """``action``: compressed, unchanged, stale (``--check``), changed (during the read:
    nothing written) or error. ``sizes``: each variant's size, None if not kept.
    ``removed``: variant files deleted (dry run: that would be), those no longer kept or
    asked for. ``why``: what makes a stale file stale."""

    rel: str
    action: str
    entry: Entry | None = None
    source_size: int = 0
    sizes: dict[str, int | None] = field(default_factory=dict)
    error: str = ""
    removed: int = 0
    why: str = ""


def run_batch(tasks: list[Task], options: Options, mode: str) -> list[Result]:
    """Process ``tasks`` (mode ``write``, ``dry-run`` or ``check``); errors become results."""
    results = []
    for task in tasks:
        try:
            results.append(_run(task, options, mode))
        except OSError as exc:
            results.append(Result(task.rel, "error", error=f"{task.path}: {exc}"))
    return results


def _run(task: Task, options: Options, mode: str) -> Result:
    with open(task.path, "rb") as source:
        st = os.fstat(source.fileno())
        prior = task.prior
        why = _why_stale(task.path, prior, options.key)
        if why is None and prior is not None:  # the variants are in place: compare content
            digest = _digest(source, st)
            if digest == prior.digest:
                if mode == "write":
                    for suffix, size in prior.variants.items():
                        if size is not None:
                            os.utime(task.path + suffix, ns=(st.st_atime_ns, st.st_mtime_ns))
                entry = Entry(st.st_size, st.st_mtime_ns, st.st_ino, digest, prior.key)
                entry.variants = dict(prior.variants)
                return Result(task.rel, "unchanged", entry, st.st_size, dict(prior.variants))
            why = "its content changed since it was compressed"
            source.seek(0)
        if mode == "check":
            return Result(task.rel, "stale", source_size=st.st_size, why=why)
        return _compress(task, source, st, options, write=mode == "write")


def _compress(task: Task, source, st: os.stat_result, options: Options, write: bool) -> Result:
    encoders = options.encoders(st.st_size)
    outputs = {suffix: _Output(task.path, suffix, write) for suffix in encoders}
    try:
        hasher = hashlib.blake2b(digest_size=16)
        while chunk := source.read(_block(st)):
            hasher.update(chunk)
            for suffix, encoder in encoders.items():
                outputs[suffix].write(encoder.update(chunk))
        for suffix, encoder in encoders.items():
            outputs[suffix].write(encoder.finish())
        now = os.stat(task.path)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            return Result(task.rel, "changed", source_size=st.st_size)
        limit = options.max_ratio * st.st_size
        sizes = {s: (out.size if 0 < out.size <= limit else None) for s, out in outputs.items()}
        # written under options that asked for them, or saving too little now
        dropped = set(task.prior.variants if task.prior else ()) - set(outputs)
        unwanted = [*dropped, *(suffix for suffix, size in sizes.items() if size is None)]
        removed = sum(remove(task.path + suffix, write) for suffix in unwanted)
        if write:
            for suffix, out in outputs.items():
                if sizes[suffix] is not None:
                    out.commit(st)
        entry = Entry(st.st_size, st.st_mtime_ns, st.st_ino, hasher.hexdigest(), options.key)
        entry.variants = sizes
        return Result(task.rel, "compressed", entry, st.st_size, sizes, removed=removed)
    finally:
        for out in outputs.values():
            out.discard()


def _digest(source, st: os.stat_result) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    while chunk := source.read(_block(st)):
        hasher.update(chunk)
    return hasher.hexdigest()


def _block(st: os.stat_result) -> int:
    """Read size: the whole of a small file (a 1 MiB buffer per read of a 2 kB file costs
    more in page faults than compressing it), 1 MiB blocks of a large one."""
    return max(1, min(CHUNK, st.st_size))


def _why_stale(path: str, prior: Entry | None, key: str) -> str | None:
    """Why the source at ``path`` needs compressing whatever its content, or None if every
    variant the manifest records is there with its recorded size (and, as a regular file,
    not a link someone put in its place): then its content decides."""
    if prior is None:
        return "not compressed yet"
    if prior.key != key:
        return "compressed with other options"
    for suffix, size in prior.variants.items():
        name = os.path.basename(path) + suffix
        try:
            st = os.lstat(path + suffix)
        except FileNotFoundError:
            if size is not None:
                return f"{name} is missing"
            continue
        if size is None or not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return f"{name} is not the one zip-static wrote"
    return None


def remove(path: str, write: bool) -> bool:
    """Unlink ``path`` if ``write``; true if there was a file (or link) there to remove."""
    if not write:
        return os.path.lexists(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class _Output:
    """A variant being written to a temp file beside its source (or only counted)."""

    def __init__(self, path: str, suffix: str, write: bool) -> None:
        self.target = path + suffix
        self.size = 0
        self._temp = ""
        self._file = None
        if write:
            folder, name = os.path.split(self.target)
            fd, self._temp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
            self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None and data:
            self._file.write(data)

    def commit(self, st: os.stat_result) -> None:
        """Give the variant the source's mode and mtime, then put it in place."""
        assert self._file is not None
        os.fchmod(self._file.fileno(), stat.S_IMODE(st.st_mode))
        self._file.close()
        os.utime(self._temp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(self._temp, self.target)
        self._temp = ""

    def discard(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self._temp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
            self._temp = ""
