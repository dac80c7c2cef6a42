"""Ticket floods: identical failures counted on one ticket, a cap on the folder's size, and
the counts kept by every store and by tickets2db."""

from __future__ import annotations

import json
import os
import time

from scalekit.tickets import DatabaseStore, FolderStore, TicketMiddleware, collect
from scalekit.tickets.ticket import repeated
from tests.tickets.apps import app
from tests.tickets.conftest import raise_key_error, raise_value_error, ticket_of
from tests.wsgi import Client


def test_identical_failures_within_the_window_are_counted_on_one_ticket(tmp_path):
    folder = FolderStore(tmp_path / "errors")
    client = Client(TicketMiddleware(app, folder, repeat_window=1.0))
    ids = {client.request("/boom").header("X-Ticket-ID") for _ in range(5)}
    [path] = folder.pending()
    ticket = folder.read(path)[0]
    assert ids == {ticket["id"]} and ticket["count"] == 5 and ticket["last_seen"]
    other = client.request("/early").header("X-Ticket-ID")  # another failure: its own ticket
    assert other not in ids and folder.load(other)["count"] == 1
    time.sleep(1.1)  # past the window: a new ticket
    later = client.request("/boom").header("X-Ticket-ID")
    assert later not in ids and folder.load(later)["count"] == 1
    [values, keys] = folder.summary()
    assert (values.error_type, values.count, keys.error_type, keys.count) == (
        "ValueError",
        6,
        "KeyError",
        1,
    )


def test_a_store_keeps_the_highest_count_of_a_ticket(any_store):
    _, store = any_store
    ticket = ticket_of(raise_value_error)
    store.save(ticket)
    for _ in range(3):
        repeated(ticket, time.time())
        store.save(ticket)
    older = {key: value for key, value in ticket_of(raise_key_error).items() if key != "count"}
    store.save(older)  # written by a version without counts: stands for one failure
    assert store.load(ticket["id"])["count"] == 4
    assert {item.ticket_id: item.count for item in store.entries()} == {
        ticket["id"]: 4,
        older["id"]: 1,
    }
    assert [(group.error_type, group.count) for group in store.summary()] == [
        ("ValueError", 4),
        ("KeyError", 1),
    ]


def test_tickets2db_moves_the_counts_also_of_a_ticket_counted_again(tmp_path, postgres_url, table):
    folder = FolderStore(tmp_path / "errors")
    database = DatabaseStore(f"{postgres_url}?table={table}")
    ticket = ticket_of(raise_value_error)
    repeated(ticket, time.time())
    folder.save(ticket)
    assert collect(folder, database).moved == 1
    repeated(ticket, time.time())  # counted again after the move: the file is back
    folder.save(ticket)
    collect(folder, database)
    assert list(folder.pending()) == []
    assert database.load(ticket["id"]) == ticket and ticket["count"] == 3
    assert [(group.error_type, group.count) for group in database.summary()] == [("ValueError", 3)]
    database.close()


def test_the_folder_stays_under_its_cap_deleting_duplicates_first(tmp_path):
    size = len(json.dumps(ticket_of(raise_value_error), ensure_ascii=False).encode())
    folder = FolderStore(tmp_path / "errors", max_bytes=int(size * 5.5))
    unique = ticket_of(raise_key_error)
    values = [ticket_of(raise_value_error) for _ in range(5)]
    start = time.time() - 1000
    for age, ticket in enumerate([unique, *values]):  # oldest first
        folder.save(ticket)  # the sixth is over the cap
        os.utime(folder.path_of(ticket["id"]), (start + age, start + age))
    kept = {os.path.basename(path)[:-5] for path in folder.pending()}
    assert kept == {unique["id"], *(ticket["id"] for ticket in values[2:])}
    assert sum(os.path.getsize(folder.path_of(i)) for i in kept) <= folder.max_bytes
