"""``scalekit zip-static`` and ``scripts/zip_static_files.py``: options, output, exit codes."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

from scalekit.cli import main
from tests.static.conftest import read, text, write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_run_then_unchanged_then_check(tree, capsys):
    assert main(["zip-static", "-j", "1", "-v", "--brotli", "--quality", "4", tree]) == 0
    out = capsys.readouterr().out
    assert f"compressed {tree}/js/app.js 40.0 kB -> gz " in out and ", br " in out
    assert "zip-static: 4 compressed, 0 unchanged, 4 skipped, 0 variants removed; " in out
    assert main(["zip-static", "--brotli", "--quality", "4", tree]) == 0
    assert "0 compressed, 4 unchanged" in capsys.readouterr().out
    assert main(["zip-static", "--check", "--brotli", "--quality", "4", tree]) == 0
    assert "0 stale, 4 up to date" in capsys.readouterr().out
    write(f"{tree}/data.json", text(50, 3_000))
    assert main(["zip-static", "--check", "--brotli", "--quality", "4", tree]) == 1
    out = capsys.readouterr().out
    assert out.startswith("stale: data.json: its content changed since it was compressed\n")
    assert "\nzip-static: 1 stale" in out


def test_dry_run_shows_bytes_saved_and_writes_nothing(tree, capsys):
    assert main(["zip-static", "--dry-run", "-v", tree]) == 0
    out = capsys.readouterr().out
    assert "would compress" in out and "4 would be compressed" in out and "-> gz" in out
    assert not os.path.exists(f"{tree}/js/app.js.gz")


def test_level_skip_min_size_ratio_zopfli_and_clean(tree, capsys):
    args = ["zip-static", "-j", "2", "--zopfli", "--zopfli-iterations", "2", "--skip", "png,.JS",
            "--min-size", "0", "--max-ratio", "0.9", tree]  # fmt: skip
    assert main(args) == 0
    assert not os.path.exists(f"{tree}/img/photo.png.gz")
    assert not os.path.exists(f"{tree}/js/app.js.gz")
    assert os.path.exists(f"{tree}/fonts/icons.woff2.gz")  # the list replaced the default
    assert not os.path.exists(f"{tree}/release.tar.gz.gz")  # .gz files are never sources
    assert gzip.decompress(read(f"{tree}/css/site.css.gz")) == text(2, 9_000)
    os.unlink(f"{tree}/css/site.css")
    capsys.readouterr()
    assert main([*args[:-1], "--clean", tree]) == 0
    assert not os.path.exists(f"{tree}/css/site.css.gz")
    assert "0 compressed, 3 unchanged, 4 skipped, 1 variants removed" in capsys.readouterr().out


def test_usage_errors_exit_2(tree, capsys):
    assert main(["zip-static", f"{tree}/missing"]) == 1  # a missing folder, as every command
    assert f"static folder {tree}/missing does not exist" in capsys.readouterr().err
    assert main(["zip-static", f"{tree}/css/site.css"]) == 2  # a file given for a folder
    assert "is not a folder" in capsys.readouterr().err
    for bad in (["-l", "10"], ["--max-ratio", "1.5"], ["--check", "--dry-run"], ["--engine", "x"]):
        try:
            main(["zip-static", *bad, tree])
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"{bad} was accepted")


def test_the_deploy_script_runs_from_a_checkout(tree):
    done = subprocess.run(
        [sys.executable, f"{ROOT}/scripts/zip_static_files.py", "-j", "1", tree],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("zip-static: 4 compressed")
    assert os.path.exists(f"{tree}/js/app.js.gz")


def variant_files(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(folder, name), root)
            for folder, _, names in os.walk(root) for name in names
            if name.endswith((".gz", ".br")) and name != "release.tar.gz"}  # fmt: skip


def removed_count(out: str, would: str = "") -> int:
    """The count of the summary's "N variants [would be ]removed"."""
    return int(out.split(f" variants {would}removed")[0].rsplit(", ", 1)[1].replace(",", ""))


def test_the_count_of_removed_variants_is_the_files_that_went(tree, capsys):
    """Sources gone (--clean), options changed (no more --brotli), a variant missing, a
    source that now saves too little: every variant file deleted is counted, once."""
    assert main(["zip-static", "-j", "1", "--brotli", "--quality", "4", tree]) == 0
    os.unlink(f"{tree}/css/site.css")  # .gz and .br go with --clean
    os.unlink(f"{tree}/img/logo.svg")
    os.unlink(f"{tree}/js/app.js.gz")  # rebuilt; its .br goes with --brotli dropped
    write(f"{tree}/data.json", os.urandom(2_000))  # saves too little now: its .gz goes
    before = variant_files(tree)
    capsys.readouterr()
    assert main(["zip-static", "-j", "2", "--dry-run", "--clean", tree]) == 0
    would = removed_count(capsys.readouterr().out, "would be ")
    assert variant_files(tree) == before
    assert main(["zip-static", "-j", "2", "--clean", tree]) == 0
    removed = removed_count(capsys.readouterr().out)
    gone = before - variant_files(tree)
    assert removed == would == len(gone) > 0
    assert "data.json.gz" in gone and "js/app.js.br" in gone and "css/site.css.br" in gone


def test_check_says_why_each_file_is_stale_one_line_per_file(tree, capsys):
    assert main(["zip-static", "-j", "1", "--brotli", "--quality", "4", tree]) == 0
    os.unlink(f"{tree}/css/site.css")  # its .gz and .br stay: orphans
    write(f"{tree}/data.json", text(40, 2_000))  # new content
    os.unlink(f"{tree}/js/app.js.br")  # a variant missing
    write(f"{tree}/img/logo.svg.gz", b"not what zip-static wrote")
    write(f"{tree}/new.js", text(41, 3_000))  # never compressed
    capsys.readouterr()
    assert main(["zip-static", "--check", "--brotli", "--quality", "4", tree]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [
        "stale: css/site.css: its source is gone: remove site.css.gz, site.css.br",
        "stale: data.json: its content changed since it was compressed",
        "stale: img/logo.svg: logo.svg.gz is not the one zip-static wrote",
        "stale: js/app.js: app.js.br is missing",
        "stale: new.js: not compressed yet",
    ]
    assert lines[-1].startswith("zip-static: 5 stale, 0 up to date")
    assert main(["zip-static", "--check", tree]) == 1  # without --brotli: other options
    out = capsys.readouterr().out
    assert "stale: js/app.js: compressed with other options\n" in out
