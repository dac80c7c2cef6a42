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
    assert capsys.readouterr().out.startswith("stale: data.json\nzip-static: 1 stale")


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
