"""The record zip-static keeps in each tree: which sources it compressed, and to what.

One JSON file, ``.zip-static.json`` at the root of the tree, maps each source's path
(relative, ``/``-separated) to an :class:`Entry`. The stat fields are a cheap pre-check;
the content digest is the truth, so a tree copied to a new server (new inodes and mtimes)
is verified by hashing, not recompressed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

MANIFEST_NAME = ".zip-static.json"
TEMP_SUFFIX = ".zip-static.tmp"
_VERSION = 1

log = logging.getLogger("scalekit.static")


@dataclass
class Entry:
    """One source: its stat at the last run, its content digest, what was written for it.

    ``key`` names the encoders, levels and ratio used; ``variants`` maps each suffix
    (``.gz``, ``.br``) to the variant's size, or ``None`` when it did not save enough.
    """

    size: int
    mtime_ns: int
    inode: int
    digest: str
    key: str
    variants: dict[str, int | None] = field(default_factory=dict)

    def same_stat(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)

    def to_json(self) -> list:
        return [self.size, self.mtime_ns, self.inode, self.digest, self.key, self.variants]

    @classmethod
    def from_json(cls, row: list) -> Entry:
        size, mtime_ns, inode, digest, key, variants = row
        return cls(int(size), int(mtime_ns), int(inode), str(digest), str(key), dict(variants))


def load(root: str) -> dict[str, Entry]:
    """The entries recorded for ``root``; empty (everything is checked again) when the file
    is missing or unreadable."""
    path = os.path.join(root, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        if data.get("version") != _VERSION:
            return {}
        return {rel: Entry.from_json(row) for rel, row in data["files"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring the unreadable manifest %s (%s): every file is checked", path, exc)
        return {}


def save(root: str, entries: dict[str, Entry]) -> None:
    """Write the manifest atomically (temp file in ``root``, then ``os.replace``)."""
    data = {"version": _VERSION, "files": {rel: e.to_json() for rel, e in sorted(entries.items())}}
    fd, temp = tempfile.mkstemp(prefix=MANIFEST_NAME + ".", suffix=TEMP_SUFFIX, dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, separators=(",", ":"))
        os.chmod(temp, 0o644)
        os.replace(temp, os.path.join(root, MANIFEST_NAME))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
