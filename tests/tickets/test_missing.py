"""The commands that read or clean up tickets open existing stores only: a mistyped folder,
database file or table is exit 1 naming it, and nothing is created."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from scalekit.cli import main
from scalekit.tickets import open_store
from tests.servers import free_port
from tests.tickets.conftest import spread

ROOT = Path(__file__).resolve().parents[2]
PURGE = ["purge", "--older-than", "30d"]
COMMANDS = [
    ["list"],
    ["show", "NoSuchTicketNoSuchTicket"],
    ["summary"],
    PURGE,
    [*PURGE, "--dry-run"],
]


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def serve(url: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scalekit", "tickets", "--store", url, "serve",
               "--allow", "127.0.0.1", "--port", str(free_port())]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_folder_or_sqlite_file_is_exit_1_and_stays_missing(tmp_path, command, capsys):
    for url, missing in (
        (f"file://{tmp_path}/erors", "ticket folder"),
        (f"sqlite://{tmp_path}/tickts.sqlite", "database file"),
        (f"sqlite://{tmp_path}/no/such/folder/tickets.sqlite", "database file"),
    ):
        assert main(["tickets", "--store", url, *command]) == 1, url
        said = capsys.readouterr().err
        assert missing in said and "does not exist" in said and "Traceback" not in said
        assert files_under(tmp_path) == set(), url


def test_a_missing_table_is_exit_1_and_not_created(
    tmp_path, postgres_url, mysql_url, table, capsys
):
    with contextlib.closing(sqlite3.connect(tmp_path / "app.sqlite")):
        pass  # an existing database without the ticket table
    sqlite = f"sqlite://{tmp_path}/app.sqlite"
    for url in (f"{base}?table={table}" for base in (sqlite, postgres_url, mysql_url)):
        for command in [*COMMANDS, ["list"]]:  # each finds it still missing
            assert main(["tickets", "--store", url, *command]) == 1, (url, command)
            assert f"table {table} does not exist" in capsys.readouterr().err
    assert files_under(tmp_path) == {"app.sqlite"}  # no .table file either
    with contextlib.closing(sqlite3.connect(tmp_path / "app.sqlite")) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    dsn = postgres_url.split("?")[0].replace("postgres://", "postgresql://")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", (table,))
        assert cursor.fetchone() == (None,)


def test_serve_does_not_start_on_a_missing_store(tmp_path):
    for url in (f"file://{tmp_path}/erors", f"sqlite://{tmp_path}/tickts.sqlite"):
        done = serve(url)
        assert done.returncode == 1 and "does not exist" in done.stderr, done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_an_existing_store_is_read_as_before(tmp_path, capsys):
    url = f"sqlite://{tmp_path}/tickets.sqlite"
    store = open_store(url)
    spread(store)
    store.close()
    before = files_under(tmp_path)
    assert main(["tickets", "--store", url, "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "5 ticket(s)"
    assert files_under(tmp_path) == before


def test_a_table_of_the_previous_version_is_read_without_being_recreated(tmp_path, capsys):
    [ticket] = spread(open_store(f"file://{tmp_path}/errors"))[:1]
    with contextlib.closing(sqlite3.connect(tmp_path / "old.sqlite")) as db:
        db.execute(  # the table before occurrences (issue 17), with one row
            "CREATE TABLE scalekit_ticket (id INTEGER PRIMARY KEY, ticket_id CHAR(64), "
            "ticket_data TEXT, created_datetime TIMESTAMP, app CHAR(64), hostname CHAR(255), "
            "error_type CHAR(255), location CHAR(512), summary CHAR(512))"
        )
        db.execute(
            "INSERT INTO scalekit_ticket (ticket_id, ticket_data, created_datetime, app, "
            "hostname, error_type, location, summary) VALUES (?, '{}', ?, 'shop', 'h1', "
            "'ValueError', 'x.py:1 in f', 'ValueError: old')",
            (ticket["id"], ticket["created"][:19].replace("T", " ")),
        )
        db.commit()
    url = f"sqlite://{tmp_path}/old.sqlite"
    assert main(["tickets", "--store", url, "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert ticket["id"] in listed[1] and listed[-1] == "1 ticket(s)"
    assert main(["tickets", "--store", url, "summary"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 ticket(s) in 1 group(s)"
