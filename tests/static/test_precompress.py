"""precompress(): deterministic, incremental, atomic variants (observed as files on disk)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import threading
import zlib

import brotli
import pytest

from scalekit.core.errors import ConfigError
from scalekit.static import Options, StaticFiles, precompress
from scalekit.static.manifest import MANIFEST_NAME
from tests.static.conftest import read, text, write
from tests.wsgi import Client

COMPRESSIBLE = ["js/app.js", "css/site.css", "img/logo.svg", "data.json"]


def variants(root: str) -> set[str]:
    found = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith((".gz", ".br")) and name != "release.tar.gz":
                found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


@pytest.mark.parametrize("engine", ["zlib", "libdeflate", "zopfli"])
def test_gzip_variants_are_deterministic_and_decompress_to_the_source(tree, tmp_path, engine):
    copy = str(tmp_path / "copy")
    shutil.copytree(tree, copy)
    for root in (tree, copy):
        report = precompress([root], Options(engine=engine, zopfli_iterations=1), jobs=1)
        assert report.compressed == 4 and not report.errors
    assert variants(tree) == {f + ".gz" for f in COMPRESSIBLE}
    for rel in COMPRESSIBLE:
        data = read(f"{tree}/{rel}.gz")
        assert data == read(f"{copy}/{rel}.gz")  # same bytes on every server
        assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"  # no name, mtime 0
        assert gzip.decompress(data) == read(f"{tree}/{rel}")


def test_level_brotli_quality_and_streaming_of_large_files(tree):
    source = read(f"{tree}/js/app.js")
    precompress([tree], Options(engine="zlib", level=1), jobs=1)
    fast = read(f"{tree}/js/app.js.gz")
    streamed = Options(level=9, brotli=True, quality=5, whole_max_size=1000)
    report = precompress([tree], streamed, jobs=1)
    assert report.compressed == 4  # new options: everything again
    best = read(f"{tree}/js/app.js.gz")
    assert gzip.decompress(best) == gzip.decompress(fast) == source
    assert len(best) < len(fast) and fast[8] == 4 and best[8] == 2  # XFL: fastest / best
    assert gzip.decompress(best) == source  # streamed through zlib: over whole_max_size
    assert brotli.decompress(read(f"{tree}/js/app.js.br")) == source
    assert variants(tree) == {f + s for f in COMPRESSIBLE for s in (".gz", ".br")}


def test_skip_rules_min_size_and_max_ratio(tree):
    report = precompress([tree], Options(), jobs=1)
    # png, woff2 by type; tiny.txt by size; random.bin compressed, not kept (a .gz is
    # never a source).
    assert (report.compressed, report.skipped) == (4, 4)
    assert not os.path.exists(f"{tree}/random.bin.gz")
    report = precompress([tree], Options(skip_extensions=frozenset({"js"}), min_size=0), jobs=1)
    assert not os.path.exists(f"{tree}/js/app.js.gz")  # removed: js is skipped now
    assert os.path.exists(f"{tree}/img/photo.png.gz") and os.path.exists(f"{tree}/tiny.txt")
    assert not os.path.exists(f"{tree}/tiny.txt.gz")  # 5 bytes: gzip makes it bigger
    precompress([tree], Options(max_ratio=0.1), jobs=1)
    assert variants(tree) == set()  # text compresses to ~30%, not to 10%


def test_variant_has_the_source_mtime_and_permissions_and_no_temp_is_left(tree):
    os.chmod(f"{tree}/js/app.js", 0o640)
    precompress([tree], Options(brotli=True), jobs=2)
    for rel in COMPRESSIBLE:
        source = os.stat(f"{tree}/{rel}")
        for suffix in (".gz", ".br"):
            variant = os.stat(f"{tree}/{rel}{suffix}")
            assert variant.st_mtime_ns == source.st_mtime_ns
            assert stat.S_IMODE(variant.st_mode) == stat.S_IMODE(source.st_mode)
    leftovers = [n for _, _, files in os.walk(tree) for n in files if n.endswith(".tmp")]
    assert leftovers == []


def test_second_run_recompresses_nothing_and_decides_by_content(tree, tmp_path):
    assert precompress([tree], jobs=1).compressed == 4
    gz = f"{tree}/js/app.js.gz"
    first = os.stat(gz)
    report = precompress([tree], jobs=1)
    assert (report.compressed, report.unchanged) == (0, 4)
    os.utime(f"{tree}/js/app.js", (1_800_000_000, 1_800_000_000))  # touched, same bytes
    report = precompress([tree], jobs=1)
    assert (report.compressed, report.unchanged) == (0, 4)
    assert os.stat(gz).st_ino == first.st_ino  # not rewritten
    assert os.stat(gz).st_mtime == 1_800_000_000  # but follows its source's mtime
    copy = str(tmp_path / "copy")  # a deploy copy: new inodes and mtimes, same content
    shutil.copytree(tree, copy)
    assert precompress([copy], jobs=1).compressed == 0
    write(f"{tree}/js/app.js", text(99, 40_000))
    report = precompress([tree], jobs=1)
    assert report.compressed == 1
    assert gzip.decompress(read(gz)) == text(99, 40_000)


def test_a_replaced_variant_is_rebuilt(tree):
    precompress([tree], jobs=1)
    write(f"{tree}/css/site.css.gz", gzip.compress(b"something else"))
    assert precompress([tree], jobs=1).compressed == 1
    assert gzip.decompress(read(f"{tree}/css/site.css.gz")) == text(2, 9_000)


def test_clean_removes_only_variants_whose_source_is_gone(tree):
    precompress([tree], Options(brotli=True), jobs=1)
    os.unlink(f"{tree}/css/site.css")
    write(f"{tree}/orphan.js.gz", gzip.compress(b"not ours"))
    write(f"{tree}/.site.css.gz.x.zip-static.tmp", b"left by a crash")
    precompress([tree], Options(brotli=True), jobs=1)
    assert os.path.exists(f"{tree}/css/site.css.gz")  # without --clean: kept
    report = precompress([tree], Options(brotli=True), clean=True, jobs=1)
    assert report.removed == 2
    assert not os.path.exists(f"{tree}/css/site.css.gz")
    assert not os.path.exists(f"{tree}/css/site.css.br")
    assert not os.path.exists(f"{tree}/.site.css.gz.x.zip-static.tmp")
    assert os.path.exists(f"{tree}/orphan.js.gz") and os.path.exists(f"{tree}/release.tar.gz")
    assert "css/site.css" not in json.loads(read(f"{tree}/{MANIFEST_NAME}"))["files"]


def test_dropping_brotli_removes_the_br_files(tree):
    precompress([tree], Options(brotli=True), jobs=1)
    assert precompress([tree], Options(), jobs=1).compressed == 4
    assert variants(tree) == {f + ".gz" for f in COMPRESSIBLE}


def test_dry_run_and_check_write_nothing(tree):
    report = precompress([tree], Options(brotli=True), mode="dry-run", jobs=2)
    assert report.compressed == 4 and report.bytes_out[".gz"] < report.bytes_in
    assert variants(tree) == set() and not os.path.exists(f"{tree}/{MANIFEST_NAME}")
    report = precompress([tree], mode="check", jobs=1)
    assert sorted(report.stale) == sorted([*COMPRESSIBLE, "random.bin"])
    precompress([tree], jobs=1)
    assert precompress([tree], mode="check", jobs=1).stale == []
    write(f"{tree}/data.json", text(40, 2_000))
    os.unlink(f"{tree}/css/site.css")
    report = precompress([tree], mode="check", jobs=1)
    assert report.stale == ["css/site.css", "data.json"]
    assert report.why == {
        "css/site.css": "its source is gone: remove site.css.gz",
        "data.json": "its content changed since it was compressed",
    }


def test_parallel_and_serial_runs_write_the_same_files(tree, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(tree, copy)
    precompress([tree], Options(brotli=True), jobs=1)
    precompress([copy], Options(brotli=True), jobs=2)
    for name in variants(tree):
        assert read(f"{tree}/{name}") == read(f"{copy}/{name}")


def test_missing_packages_and_bad_options_are_clear_errors(tree):
    with pytest.raises(ConfigError, match="engine"):
        precompress([tree], Options(engine="lzma"))
    with pytest.raises(ValueError, match="mode"):
        precompress([tree], mode="fast")
    with pytest.raises(NotADirectoryError):
        precompress([f"{tree}/missing"], jobs=1)


def test_readers_never_see_a_partial_variant_while_zip_static_rewrites(tree):
    """A server keeps fetching app.js (gzip) while the source changes and zip-static runs
    again and again: every response decompresses to one whole version of the file."""
    versions = [text(100 + i, 400_000) for i in range(6)]
    valid = set(versions) | {text(1, 40_000)}
    precompress([tree], Options(engine="zlib"), jobs=1)
    client = Client(StaticFiles(None, tree))
    done, seen, failures = threading.Event(), set(), []

    def read_forever() -> None:
        while not done.is_set():
            response = client.get("/js/app.js", headers={"Accept-Encoding": "gzip"})
            body = response.body
            if response.header("Content-Encoding") == "gzip":
                try:
                    body = zlib.decompress(body, 31)
                except zlib.error as exc:
                    failures.append(f"broken gzip: {exc}")
                    continue
            if body not in valid:
                failures.append(f"partial or unknown body of {len(body)} bytes")
            seen.add(response.header("Content-Encoding"))
            raw = read(f"{tree}/js/app.js.gz")  # as nginx would read it
            try:
                if zlib.decompress(raw, 31) not in valid:
                    failures.append("a .gz file on disk holds an unknown version")
            except zlib.error as exc:
                failures.append(f"a .gz file on disk is cut short: {exc}")

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for data in versions:
            write(f"{tree}/js/app.js", data)
            assert precompress([tree], Options(engine="zlib"), jobs=1).compressed == 1
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert "gzip" in seen
