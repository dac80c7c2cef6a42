"""``scalekit tickets list|show|summary`` and the store methods behind them, over every store."""

from __future__ import annotations

import json
import time

import pytest

from scalekit.cli import main
from scalekit.tickets import FolderStore, build
from scalekit.tickets.ticket import ID_PATTERN, new_ticket_id
from tests.tickets.conftest import ENVIRON, raise_key_error, spread, ticket_of


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def test_entries_are_newest_first_and_limited(any_store):
    _, store = any_store
    tickets = spread(store)
    newest = [ticket["id"] for ticket in reversed(tickets)]
    assert [entry.ticket_id for entry in store.entries()] == newest
    [first, second] = store.entries(2)
    assert [first.ticket_id, second.ticket_id] == newest[:2]
    assert (first.app, first.error_type, first.summary) == (
        "shop",
        "ValueError",
        "ValueError: bad <order> & more",
    )
    assert first.created == tickets[-1]["created"][:19].replace("T", " ")
    assert store.load(tickets[0]["id"]) == tickets[0]
    assert store.load("NoSuchTicketNoSuchTicket") is None and store.load("../etc") is None


def test_summary_groups_by_type_and_location(any_store):
    _, store = any_store
    now = time.time()
    tickets = spread(store, now)
    [values, keys] = store.summary()
    assert (values.error_type, values.count) == ("ValueError", 3)
    assert (keys.error_type, keys.count) == ("KeyError", 2)
    assert values.location == tickets[0]["error"]["location"]
    assert keys.location.endswith("in raise_key_error")
    assert (values.first_seen, values.last_seen) == (stamp(now - 5 * 3600), stamp(now - 3600))
    assert (keys.first_seen, keys.last_seen) == (stamp(now - 4 * 3600), stamp(now - 2 * 3600))


def test_the_cli_lists_shows_and_summarizes(any_store, capsys):
    url, store = any_store
    tickets = spread(store)
    assert main(["tickets", "--store", url, "list", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("UTC") and lines[-1] == "3 ticket(s)"
    assert [line.split()[2] for line in lines[1:4]] == [t["id"] for t in tickets[::-1][:3]]
    assert main(["tickets", "--store", url, "show", tickets[1]["id"]]) == 0
    shown = capsys.readouterr().out
    assert f"ticket {tickets[1]['id']}  app shop" in shown
    assert "KeyError: 'missing'" in shown and "Traceback (most recent call last)" in shown
    assert "in raise_key_error" in shown and "Cookie: ***" in shown and "sid=abc" not in shown
    assert main(["tickets", "--store", url, "show", "--json", tickets[1]["id"]]) == 0
    assert json.loads(capsys.readouterr().out) == tickets[1]
    assert main(["tickets", "--store", url, "show", "NoSuchTicketNoSuchTicket"]) == 1
    assert "no ticket" in capsys.readouterr().out
    assert main(["tickets", "--store", url, "summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "3" and "ValueError at " in out[1]
    assert out[2].split()[0] == "2" and "KeyError at " in out[2]
    assert out[-1] == "5 ticket(s) in 2 group(s)"


def test_the_cli_escapes_control_characters_from_requests(tmp_path, capsys):
    store = FolderStore(tmp_path / "errors")
    environ = {**ENVIRON, "PATH_INFO": "/a\x1b[2J\rb", "HTTP_X_EVIL": "\x1b]0;pwned\x07\u202e"}
    try:
        raise ValueError("bad \x1b[31mred")
    except ValueError as exc:
        ticket = build(exc, environ, app_name="shop\x1b[1m", request_id="req-1")
    store.save(ticket)
    url = f"file://{store.folder}"
    for command in (["show", ticket["id"]], ["list"], ["summary"]):
        assert main(["tickets", "--store", url, *command]) == 0
        out = capsys.readouterr().out
        assert not any(char in out for char in "\x1b\x07\r\u202e"), command
    assert main(["tickets", "--store", url, "show", ticket["id"]]) == 0
    shown = capsys.readouterr().out
    assert "/a\\x1b[2J\\rb" in shown and "X-Evil: \\x1b]0;pwned\\x07\\u202e" in shown


def test_a_bad_store_url_is_a_clear_error(capsys):
    assert main(["tickets", "--store", "redis://localhost/0", "list"]) == 2  # usage
    assert "this setting takes" in capsys.readouterr().err


def test_ticket_ids_are_random_url_safe_and_never_look_like_an_option():
    ids = {new_ticket_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(ID_PATTERN.match(i) and len(i) == 22 and not i.startswith("-") for i in ids)


def test_the_cli_lists_by_app_type_and_date(any_store, capsys):
    url, store = any_store
    now = time.time()
    tickets = spread(store, now)  # 5..1 hours old: ValueError, KeyError, ValueError...
    other = ticket_of(raise_key_error, now - 1800, app="blog")
    store.save(other)

    def listed(*args: str) -> list[str]:
        assert main(["tickets", "--store", url, "list", *args]) == 0
        return [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:-1]]

    ids = [ticket["id"] for ticket in tickets]
    assert listed("--app", "blog") == [other["id"]]
    assert listed("--app", "shop", "--type", "KeyError") == [ids[3], ids[1]]
    assert listed("--type", "KeyError") == [other["id"], ids[3], ids[1]]
    assert listed("--since", "150m") == [other["id"], ids[4], ids[3]]
    assert listed("--since", "4.5h", "--until", "150m", "--type", "ValueError") == [ids[2]]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 2.5 * 3600))
    assert listed("--until", iso) == ids[2::-1]
    assert listed("--until", iso + "+01:00") == ids[1::-1]  # an hour earlier in UTC
    assert listed("--app", "nobody") == []


def test_list_refuses_a_bad_date(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["tickets", "--store", f"file://{tmp_path}", "list", "--since", "yesterday"])
    assert stopped.value.code == 2 and "neither an ISO date" in capsys.readouterr().err
