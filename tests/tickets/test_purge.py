"""Retention: ``TicketStore.purge`` and ``scalekit tickets purge --older-than``, on every store."""

from __future__ import annotations

import time

import pytest

from scalekit.cli import main
from tests.tickets.conftest import spread


def remaining(store) -> list[str]:
    return [item.ticket_id for item in store.entries()]


def test_purge_deletes_exactly_the_tickets_created_before(any_store):
    _, store = any_store
    now = time.time()
    tickets = spread(store, now)  # created 5, 4, 3, 2 and 1 hours ago
    newest = [ticket["id"] for ticket in reversed(tickets)]
    assert store.purge(now - 2.5 * 3600) == 3
    assert remaining(store) == newest[:2]
    assert store.purge(now - 2.5 * 3600) == 0
    assert store.purge(now) == 2 and remaining(store) == []


def test_the_cli_purges_what_its_dry_run_lists(any_store, capsys):
    url, store = any_store
    tickets = spread(store)  # 5, 4, 3, 2 and 1 hours old
    purge = ["tickets", "--store", url, "purge", "--older-than", "150m"]
    assert main([*purge, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines[1:-1]] == [t["id"] for t in tickets[2::-1]]
    assert lines[-1].startswith("3 ticket(s) created before ") and "would be deleted" in lines[-1]
    assert len(remaining(store)) == 5
    assert main(purge) == 0
    said = capsys.readouterr().out
    assert said.startswith("3 ticket(s) created before ") and said.rstrip().endswith("deleted")
    assert remaining(store) == [t["id"] for t in tickets[:2:-1]]
    assert main(purge) == 0 and capsys.readouterr().out.startswith("0 ticket(s)")


def test_purge_needs_a_duration(tmp_path, capsys):
    url = f"file://{tmp_path}/errors"
    for bad in ([], ["thirty days"], ["-3d"], ["0d"]):
        with pytest.raises(SystemExit) as stopped:
            main(["tickets", "--store", url, "purge", *(["--older-than", *bad] if bad else [])])
        assert stopped.value.code == 2
    assert "--older-than" in capsys.readouterr().err
