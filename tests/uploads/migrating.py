"""What the migrate tests share: uploads of known sizes and contents, a store's contents."""

from __future__ import annotations

import hashlib

from scalekit.uploads import UploadStore
from scalekit.uploads.stores import CHUNK

SIZES = {"empty.txt": 0, "small.png": 10, "edge.bin": CHUNK + 1, "é 🎉.txt": 3000}


def payload(size: int, seed: str) -> bytes:
    """``size`` bytes, different for each seed, the same on every run."""
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def contents(store: UploadStore) -> dict[str, bytes]:
    """Every upload of a store, by name (small test files only)."""
    return {info.name: b"".join(store.read(info.name)) for info in store.names()}


def filled(store: UploadStore, sizes: dict[str, int] = SIZES) -> dict[str, bytes]:
    for filename, size in sizes.items():
        store.save(payload(size, filename), filename, table="person", field="image")
    return contents(store)
