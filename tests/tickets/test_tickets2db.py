"""tickets2db against a real PostgreSQL: moves, is idempotent, quarantines bad files, and
loses nothing when the database goes down mid-run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys

import psycopg2
import pytest

from scalekit.cli import main
from scalekit.core.errors import StoreUnavailable
from scalekit.tickets import DatabaseStore, FolderStore, collect
from tests.servers import PostgresServer
from tests.tickets.conftest import raise_key_error, raise_value_error, ticket_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fill(folder: FolderStore, count: int) -> list[dict]:
    tickets = [ticket_of(raise_value_error if n % 2 else raise_key_error) for n in range(count)]
    for ticket in tickets:
        folder.save(ticket)
    return tickets


def rows(url: str, table: str) -> dict[str, tuple]:
    """The table's rows by ticket id, read with psycopg2 (not through scalekit)."""
    dsn = url.split("?")[0].replace("postgres://", "postgresql://")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT ticket_id, ticket_data, app, error_type, location, summary, hostname, "
            f"created_datetime FROM {table}"
        )
        return {row[0]: row[1:] for row in cursor.fetchall()}


@pytest.fixture
def folder(tmp_path) -> FolderStore:
    return FolderStore(tmp_path / "app" / "errors")


def test_files_become_rows_and_are_deleted(folder, postgres_url, table, capsys):
    tickets = fill(folder, 12)
    url = f"{postgres_url}?table={table}"
    code = main(["tickets2db", "--folder", folder.folder, "--db", url, "-o", "-v"])
    assert code == 0 and list(folder.pending()) == []
    stored = rows(postgres_url, table)
    assert set(stored) == {ticket["id"] for ticket in tickets}
    for ticket in tickets:
        data, app, error_type, location, summary, hostname, created = stored[ticket["id"]]
        assert json.loads(data) == ticket
        assert (app, error_type, location, summary, hostname) == (
            "shop",
            ticket["error"]["type"],
            ticket["error"]["location"],
            ticket["error"]["summary"],
            ticket["hostname"],
        )
        assert created.strftime("%Y-%m-%dT%H:%M:%S") == ticket["created"][:19]
    assert "moved 12, already stored 0, moved to bad/ 0" in capsys.readouterr().out


def test_a_rerun_after_a_crash_never_duplicates(folder, postgres_url, table, tmp_path):
    fill(folder, 5)
    copy = tmp_path / "copy"
    shutil.copytree(folder.folder, copy)
    database = DatabaseStore(f"{postgres_url}?table={table}")
    assert collect(folder, database).moved == 5
    shutil.copytree(copy, folder.folder, dirs_exist_ok=True)  # rows committed, files kept
    stats = collect(folder, database)
    assert (stats.moved, stats.duplicates) == (0, 5)
    assert len(rows(postgres_url, table)) == 5 and list(folder.pending()) == []
    database.close()


def test_corrupt_and_unreadable_files_go_to_bad_and_the_run_goes_on(
    folder, postgres_url, table, caplog, capsys
):
    [good, other] = fill(folder, 2)
    stored_ids = {good["id"], other["id"]}
    other["id"] = "X" * 22  # valid JSON, but named for another id
    bad = {
        "notjson0000000000000000.json": b"{not json",
        "truncated000000000000000.json": json.dumps(good).encode()[:200],
        "latin100000000000000000.json": b"\xff\xfe\x00garbage",
        "wrongschema0000000000000.json": json.dumps({**good, "schema": 99}).encode(),
        "renamed00000000000000000.json": json.dumps(other).encode(),
        "alist0000000000000000000.json": b"[1, 2, 3]",
        "utf16000000000000000000.json": json.dumps(good).encode("utf-16"),
    }
    for name, content in bad.items():
        with open(os.path.join(folder.folder, name), "wb") as file:
            file.write(content)
    os.symlink("/etc/passwd", os.path.join(folder.folder, "link0000000000000000000.json"))
    with caplog.at_level(logging.WARNING, logger="scalekit.tickets"):
        code = main(
            ["tickets2db", "--folder", folder.folder, "--db", f"{postgres_url}?table={table}", "-o"]
        )
    assert code == 0
    assert set(rows(postgres_url, table)) == stored_ids
    bad_folder = os.path.join(folder.folder, "bad")
    moved = sorted(os.listdir(bad_folder))
    assert moved == sorted([*bad, "link0000000000000000000.json"])
    for name, content in bad.items():  # kept byte for byte, never deleted
        with open(os.path.join(bad_folder, name), "rb") as file:
            assert file.read() == content
    assert os.readlink(os.path.join(bad_folder, "link0000000000000000000.json")) == "/etc/passwd"
    assert list(folder.pending()) == []
    assert sum("moved to" in r.message and "bad" in r.message for r in caplog.records) == 8
    assert "moved to bad/ 8" in capsys.readouterr().out


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own, to stop and start."""
    with PostgresServer().running() as server:
        yield server


def test_the_database_going_down_mid_run_loses_nothing(folder, own_postgres, table):
    tickets = fill(folder, 30)
    url = f"{own_postgres.url}?table={table}&connect_timeout=2"
    database = DatabaseStore(url)
    batches = []

    def stop_after_first_batch(stats):
        batches.append(stats.moved)
        if len(batches) == 1:
            own_postgres.stop_cluster()

    try:
        with pytest.raises(StoreUnavailable, match="ticket database"):
            collect(folder, database, batch=10, progress=stop_after_first_batch)
        assert len(list(folder.pending())) == 20  # the failed batch's files are all kept
        code = main(["tickets2db", "--folder", folder.folder, "--db", url, "-o"])
        assert code == 1 and len(list(folder.pending())) == 20
    finally:
        own_postgres.start_cluster()
    assert batches == [10] and len(rows(own_postgres.url, table)) == 10
    stats = collect(folder, database)  # reconnects
    assert (stats.moved, stats.duplicates) == (20, 0)
    assert set(rows(own_postgres.url, table)) == {ticket["id"] for ticket in tickets}
    assert list(folder.pending()) == []
    database.close()


def test_the_database_comes_from_the_environment_or_ticket_storage(
    folder, postgres_url, table, monkeypatch, capsys
):
    monkeypatch.delenv("SCALEKIT_TICKET_DB", raising=False)
    fill(folder, 1)
    assert main(["tickets2db", "--folder", folder.folder, "-o"]) == 2
    assert "--db" in capsys.readouterr().err
    private = os.path.join(os.path.dirname(folder.folder), "private")
    os.makedirs(private)
    with open(os.path.join(private, "ticket_storage.txt"), "w") as file:
        file.write(f"{postgres_url}?table={table}\n")
    assert main(["tickets2db", "--folder", folder.folder, "-o"]) == 0
    assert len(rows(postgres_url, table)) == 1
    fill(folder, 1)
    monkeypatch.setenv("SCALEKIT_TICKET_DB", f"{postgres_url}?table={table}_env")
    assert main(["tickets2db", "--folder", folder.folder, "-o"]) == 0
    assert len(rows(postgres_url, f"{table}_env")) == 1


def test_the_script_wrapper_runs_from_a_checkout(folder, postgres_url, table):
    fill(folder, 3)
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "tickets2db.py"),
            "--folder",
            folder.folder,
            "--db",
            f"{postgres_url}?table={table}",
            "-o",
            "-v",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "moved 3" in done.stdout and len(rows(postgres_url, table)) == 3


def test_postgresql_keeps_ticket_json_compressed_with_lz4(folder, postgres_url, table):
    tickets = fill(folder, 3)  # each several KB: stored out of line, compressed
    collect(folder, DatabaseStore(f"{postgres_url}?table={table}"))
    dsn = postgres_url.split("?")[0].replace("postgres://", "postgresql://")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT ticket_id, pg_column_compression(ticket_data) FROM {table}")
        assert dict(cursor.fetchall()) == {ticket["id"]: "lz4" for ticket in tickets}


def test_temp_files_of_crashed_writers_go_and_fresh_ones_stay(folder, postgres_url, table):
    fill(folder, 1)
    stale = os.path.join(folder.folder, ".abc.tmp-1234")
    fresh = os.path.join(folder.folder, ".def.tmp-5678")
    for path in (stale, fresh):
        with open(path, "w") as file:
            file.write('{"half": ')
    os.utime(stale, (os.path.getatime(stale), os.path.getmtime(stale) - 3600))
    stats = collect(folder, DatabaseStore(f"{postgres_url}?table={table}"))
    assert (stats.moved, stats.stale_temps) == (1, 1)
    assert sorted(os.listdir(folder.folder)) == [".def.tmp-5678"]


def test_a_web2py_ticket_table_gains_the_missing_columns(folder, postgres_url, table, caplog):
    dsn = postgres_url.split("?")[0].replace("postgres://", "postgresql://")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {table} (id SERIAL PRIMARY KEY, ticket_id VARCHAR(100), "
            "ticket_data TEXT, created_datetime TIMESTAMP)"
        )
        conn.commit()
    tickets = fill(folder, 2)
    with caplog.at_level(logging.INFO, logger="scalekit"):
        assert collect(folder, DatabaseStore(f"{postgres_url}?table={table}")).moved == 2
    stored = rows(postgres_url, table)
    assert {ticket_id: row[1] for ticket_id, row in stored.items()} == {
        ticket["id"]: "shop" for ticket in tickets
    }
    added = "app, hostname, node, version, error_type, location, summary, occurrences"
    upgrades = [r.getMessage() for r in caplog.records if "adding columns" in r.getMessage()]
    assert upgrades == [f"table {table}: adding columns {added}"]
