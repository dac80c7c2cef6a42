"""The app's version travels with each ticket: ``scalekit tickets list|show``, the viewer's
list and ticket page show it beside the node, and a database store keeps it in a column of
its own (a table of the previous version gains it; its old rows have none)."""

from __future__ import annotations

import contextlib
import sqlite3

from scalekit.cli import main
from scalekit.tickets import DatabaseStore, FolderStore, TicketViewer, collect
from tests.tickets.conftest import raise_key_error, raise_value_error, ticket_of
from tests.wsgi import Client

TOKEN = "viewer-token-123456"
#: The ticket table as the version before this one made it: a node column, no version.
PREVIOUS = (
    "CREATE TABLE scalekit_ticket (id INTEGER PRIMARY KEY AUTOINCREMENT, ticket_id CHAR(64), "
    "ticket_data TEXT, created_datetime TIMESTAMP, app CHAR(64), hostname CHAR(255), "
    "node CHAR(255), error_type CHAR(255), location CHAR(512), summary CHAR(512), "
    "occurrences INTEGER)"
)


def versioned(fail, version: str | None) -> dict:
    ticket = ticket_of(fail)
    if version is None:  # written before tickets had a version
        del ticket["version"]
    else:
        ticket["version"] = version
    return ticket


def test_list_show_and_the_viewer_show_the_version(tmp_path, capsys):
    folder = FolderStore(tmp_path / "errors")
    new, old = versioned(raise_value_error, "2026.12.5"), versioned(raise_key_error, None)
    folder.save(new)
    folder.save(old)
    url = f"file://{folder.folder}"
    assert main(["tickets", "--store", url, "list"]) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    assert head.split()[3:5] == ["node", "version"]
    by_id = {line.split()[2]: line.split() for line in lines[:2]}
    assert by_id[new["id"]][5] == "2026.12.5" and by_id[old["id"]][5] == "-"
    assert main(["tickets", "--store", url, "show", new["id"]]) == 0
    assert "version 2026.12.5" in capsys.readouterr().out.splitlines()[1]
    viewer = Client(TicketViewer(folder, token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert "<td>2026.12.5</td>" in viewer.request("/", headers=auth).text
    page = viewer.request(f"/ticket/{new['id']}", headers=auth).text
    assert "<th>version</th><td><code>2026.12.5</code></td>" in page


def test_a_previous_ticket_table_gains_the_version_column(tmp_path):
    path = tmp_path / "tickets.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(PREVIOUS)
        db.execute(
            "INSERT INTO scalekit_ticket (ticket_id, ticket_data, created_datetime, app, "
            "hostname, node, error_type, location, summary, occurrences) VALUES "
            "('old-ticket-0123456789', '{}', '2026-12-01 10:00:00', 'shop', 'h', 'n1', "
            "'KeyError', 'x.py:1 in f', 'KeyError: old', 1)"
        )
        db.commit()
    folder = FolderStore(tmp_path / "errors")
    folder.save(versioned(raise_value_error, "2026.12.5"))
    store = DatabaseStore(f"sqlite://{path}", folder=str(tmp_path / "pydal"))
    assert collect(folder, store).moved == 1  # what tickets2db runs
    assert {item.app + ":" + item.version for item in store.entries()} == {
        "shop:2026.12.5",
        "shop:",
    }
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert sorted(db.execute("SELECT version FROM scalekit_ticket").fetchall(), key=str) == [
            ("2026.12.5",),
            (None,),
        ]
