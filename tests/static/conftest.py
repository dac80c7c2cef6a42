"""A small static tree with every kind of file zip-static meets."""

from __future__ import annotations

import os
import random

import pytest


def text(seed: int, size: int) -> bytes:
    """Compressible, seed-dependent text of ``size`` bytes (JavaScript-like words)."""
    rng = random.Random(seed)
    words = [b"function", b"return", b"const", b"value", b"width", b"=>", b"{", b"};", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" " + str(rng.randrange(1000)).encode() + b" "
    return bytes(out[:size])


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def write(path: str, data: bytes, mtime: float | None = None) -> str:
    """Write ``data`` atomically (readers of the source never see a part of it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".part", "wb") as file:
        file.write(data)
    os.replace(path + ".part", path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def tree(tmp_path) -> str:
    """``static/``: JS, CSS, SVG and JSON to compress; an image, a font and an archive to
    skip; a tiny file; random bytes that do not compress."""
    return make_tree(str(tmp_path / "static"))


def make_tree(root: str) -> str:
    write(f"{root}/js/app.js", text(1, 40_000), mtime=1_700_000_000)
    write(f"{root}/css/site.css", text(2, 9_000), mtime=1_700_000_000)
    write(f"{root}/img/logo.svg", text(3, 3_000), mtime=1_700_000_000)
    write(f"{root}/data.json", text(4, 2_000), mtime=1_700_000_000)
    write(f"{root}/img/photo.png", text(5, 5_000))
    write(f"{root}/fonts/icons.woff2", text(6, 5_000))
    write(f"{root}/release.tar.gz", text(7, 5_000))
    write(f"{root}/tiny.txt", b"hello")
    write(f"{root}/random.bin", random.Random(8).randbytes(20_000))
    return root
