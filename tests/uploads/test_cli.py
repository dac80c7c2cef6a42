"""``scalekit uploads migrate|gc`` in real processes: summary lines, exit codes (0 done,
1 failed, 2 usage), progress on a terminal, no password in any output."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydal import DAL, Field

from scalekit.uploads import UploadStore, open_store

ROOT = Path(__file__).resolve().parents[2]
OLD = time.time() - 3 * 86400


def scalekit(*argv: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name in ("SCALEKIT_UPLOADS", "SCALEKIT_DB_PRIMARY"):
        if name not in env:
            environ.pop(name, None)
    return subprocess.run([sys.executable, "-m", "scalekit", "uploads", *argv], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def source(tmp_path) -> UploadStore:
    store = open_store(f"file://{tmp_path}/old-uploads", fsync=False)
    for number in range(3):
        store.save(b"%d" % number * 1000, f"f{number}.txt", table="person", field="image")
    yield store
    store.close()


def test_migrate_prints_a_summary_and_a_rerun_skips(source, tmp_path):
    destination = f"sqlite://{tmp_path}/uploads.sqlite"
    done = scalekit("migrate", "--from", source.url, "--to", destination)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"uploads migrate: {source.url} -> {destination}: ")
    assert "3 copied, 0 skipped (already there), 0 failed, 3,000 bytes in " in done.stdout
    again = scalekit("migrate", "--from", source.url, "--to", destination)
    assert "0 copied, 3 skipped (already there), 0 failed, 0 bytes" in again.stdout


def test_migrate_move_verbose_and_jobs(source, tmp_path):
    moved = scalekit("migrate", "-v", "-j", "2", "--move", "--from", source.url,
                     "--to", f"file://{tmp_path}/new")  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert "3 deleted from the source" in moved.stdout
    assert moved.stderr.count("copied to file://") == 3
    assert list(source.names()) == []


def test_a_destination_that_cannot_be_reached_is_exit_1_without_its_password(source):
    down = "postgres://app:s3cret-pw@127.0.0.1:1/app?connect_timeout=2"
    done = scalekit("migrate", "--from", source.url, "--to", down)
    assert done.returncode == 1
    assert "postgres://app:***@127.0.0.1:1/app" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert len(list(source.names())) == 3


@pytest.mark.parametrize(
    "argv, error",
    [
        (["migrate", "--to", "file:///tmp/x"], "--from"),
        (["migrate", "--from", "file:///tmp/x", "--to", "file:///tmp/x"], "the same store"),
        (["migrate", "--from", "ftp://host/x", "--to", "file:///tmp/x"], "ftp"),
        (["gc", "--db", "sqlite:///tmp/x.sqlite"], "--store"),
        (["gc", "--store", "file:///tmp/x", "--older-than", "soon"], "--older-than"),
        (["shred"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_are_exit_2(argv, error):
    done = scalekit(*argv)
    assert done.returncode == 2, done
    assert error in done.stderr


def test_gc_removes_the_unreferenced_and_prints_a_summary(source, tmp_path):
    db = DAL(f"sqlite://{tmp_path}/storage.sqlite", folder=str(tmp_path))
    db.define_table("person", Field("image", "upload"))
    held, *orphans = sorted(info.name for info in source.names())
    db.person.insert(image=held)
    db.commit()
    db.close()
    for name in (held, *orphans):
        os.utime(source.local_path(name), (OLD, OLD))
    database = f"sqlite://{tmp_path}/storage.sqlite"
    environ = {"SCALEKIT_UPLOADS": source.url, "SCALEKIT_DB_PRIMARY": database}
    dry = scalekit("gc", "--dry-run", **environ)
    assert dry.returncode == 0, dry.stderr
    assert f"uploads gc: {source.url}: examined 3, would remove 2 (2,000 bytes)" in dry.stdout
    done = scalekit("gc", **environ)
    assert "removed 2 (2,000 bytes), 1 referenced" in done.stdout
    assert [info.name for info in source.names()] == [held]


def test_gc_on_a_missing_database_file_is_exit_1(source, tmp_path):
    done = scalekit("gc", "--store", source.url, "--db", f"sqlite://{tmp_path}/typo.sqlite")
    assert done.returncode == 1
    assert "typo.sqlite does not exist" in done.stderr
    assert len(list(source.names())) == 3


def test_progress_on_a_terminal_then_the_summary(source, tmp_path):
    """stdout a terminal: running totals rewritten on one line (the first at once, then at
    most 5 a second), cleared before the summary."""
    main, terminal = pty.openpty()
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "scalekit", "uploads", "migrate", "--from", source.url,
               "--to", f"sqlite://{tmp_path}/uploads.sqlite"]  # fmt: skip
    process = subprocess.Popen(command, env=environ, stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        try:
            chunk = os.read(main, 4096) if ready else b""
        except OSError:  # the process closed the terminal
            chunk = b""
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    process.stderr.close()
    text = shown.decode()
    assert "\r" in text and " copied, " in text.split("uploads migrate:")[0]
    assert text.rstrip().endswith(" s")
    assert "3 copied, 0 skipped" in text


def test_an_empty_source_is_said_so(tmp_path):
    (tmp_path / "empty").mkdir()
    done = scalekit("migrate", "--from", f"file://{tmp_path}/empty", "--to", f"file://{tmp_path}/b")
    assert done.returncode == 0
    assert "0 copied" in done.stdout
    assert f"no upload in file://{tmp_path}/empty" in done.stderr


@pytest.mark.parametrize("missing", ["file://{tmp}/typo", "sqlite://{tmp}/typo.sqlite"])
@pytest.mark.parametrize("jobs", ["1", "3"])
def test_a_missing_source_is_exit_1_and_nothing_is_created(missing, jobs, tmp_path):
    source = missing.format(tmp=tmp_path)
    done = scalekit("migrate", "-j", jobs, "--from", source, "--to", f"file://{tmp_path}/b")
    assert done.returncode == 1, done
    assert "typo" in done.stderr and "Traceback" not in done.stderr
    assert not any(path.name.startswith("typo") for path in tmp_path.iterdir())


def test_gc_on_a_missing_store_is_exit_1(tmp_path):
    database = tmp_path / "storage.sqlite"
    DAL(f"sqlite://{database}", folder=str(tmp_path)).close()
    done = scalekit("gc", "--store", f"file://{tmp_path}/typo", "--db", f"sqlite://{database}")
    assert done.returncode == 1 and "typo" in done.stderr
    assert not (tmp_path / "typo").exists()
