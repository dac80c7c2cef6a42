"""`make cluster` end to end: three gunicorn nodes behind haproxy on loopback, sharing
Redis, memcached and PostgreSQL (primary + streaming replica), with the cron loops and a
task worker per node.

The cluster starts once for the module; the test that kills a node (and restarts it) runs
next to last, then the last one stops the cluster.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest

from examples.cluster import BIN, Cluster, main
from scalekit import tickets, uploads
from tests.examples.browser import Browser, field
from tests.examples.test_demo import curl_bytes, png, post_picture

NODES = {"node1", "node2", "node3"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("cluster") / "state"), cron_sleep=1)
    cluster.start()
    try:
        yield cluster
    finally:  # what the state file names now (a test restarts a node; the last one stops all)
        Cluster(cluster.state_dir).stop()


def command(cluster: Cluster, capsys, *args: str) -> tuple[int, str]:
    """``python -m examples.cluster <args>`` on this cluster: (exit code, stdout + stderr)."""
    code = main([*args, "--state", cluster.state_dir])
    output = capsys.readouterr()
    return code, output.out + output.err


def status(cluster: Cluster, capsys) -> tuple[int, dict[str, list[str]]]:
    """The exit code of ``status`` and its lines by process name."""
    code, output = command(cluster, capsys, "status")
    return code, {line.split()[0]: line.split()[1:] for line in output.splitlines()}


def signed_in(cluster: Cluster) -> tuple[Browser, str]:
    browser, name = Browser(cluster.url), f"user-{uuid.uuid4().hex[:8]}"
    assert browser.post("/sign-in", name=name, password="pw")[0] == 303
    return browser, name


def test_requests_hop_across_nodes_while_session_flash_and_cache_hold(cluster):
    browser, name = signed_in(cluster)
    _, _, page = browser.get("/")
    assert (field(page, "user"), field(page, "flash"), field(page, "views")) == (
        name, f"Signed in as {name}.", "1",
    )  # fmt: skip
    hits, nodes = int(field(page, "hits")), set()
    for views in range(2, 32):
        status, headers, page = browser.get("/")
        assert status == 200
        nodes.add(headers["X-Node"])
        assert (field(page, "user"), field(page, "views")) == (name, str(views))
        assert field(page, "flash") is None  # shown once, on whichever node
        assert int(field(page, "hits")) == hits + 1  # one counter for all nodes
        hits += 1
    assert nodes == NODES
    message = f"hello {uuid.uuid4().hex}"
    assert browser.post("/entries", body=message)[0] == 303
    pages = [browser.get("/") for _ in range(3)]
    assert {headers["X-Node"] for _, headers, _ in pages} == NODES
    assert all(message in page for _, _, page in pages)  # the fragment, rebuilt once
    assert [field(page, "flash") for _, _, page in pages] == ["Thank you for signing.", None, None]


def test_start_when_it_runs_shows_it_and_starts_nothing(cluster, capsys):
    code, output = command(cluster, capsys, "start")
    assert code == 0 and "already running" in output
    assert f"{cluster.url}/" in output and cluster.stats_url in output
    saved = Cluster(cluster.state_dir)
    assert saved.load() and saved.state == cluster.state  # nothing started, nothing recorded
    code, lines = status(cluster, capsys)
    assert code == 0 and {"haproxy", "redis", "memcached", *NODES} <= set(lines)
    assert all(line[0] == "up" for line in lines.values())
    assert lines["node1"][1:] == ["pid", str(cluster.state["nodes"][0]["pid"]),
                                  cluster.node_url(0) + "/"]  # fmt: skip


def test_haproxy_and_the_app_name_the_nodes_alike_on_the_loopback_stats_page(cluster):
    assert cluster.stats_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(cluster.stats_url + ";csv", timeout=5) as response:
        rows = list(csv.DictReader(io.StringIO(response.read().decode().lstrip("# "))))
    servers = {row["svname"]: row["status"] for row in rows if row["type"] == "2"}
    served = {Browser(cluster.url).get("/healthz")[1]["X-Node"] for _ in range(6)}
    assert served == set(servers) == NODES
    assert all(state.startswith("UP") for state in servers.values())  # "UP 1/2" while checked


def test_x_node_and_x_request_id_lead_to_the_line_in_that_nodes_access_log(cluster):
    served = {}
    for _ in range(6):
        _, headers, _ = Browser(cluster.url).get("/entries")
        served[headers["X-Request-ID"]] = headers["X-Node"]
    assert set(served.values()) == NODES
    logs = {}
    for name in NODES:
        with open(os.path.join(cluster.state_dir, name, "access.log")) as log:
            logs[name] = {record["id"]: record for record in map(json.loads, log)}
    for request, node in served.items():
        assert [name for name in sorted(NODES) if request in logs[name]] == [node]
        assert (logs[node][request]["path"], logs[node][request]["node"]) == ("/entries", node)


def test_maintenance_read_only_is_obeyed_by_every_node(cluster):
    read_only_is_obeyed_by_every_node(cluster)


def read_only_is_obeyed_by_every_node(cluster: Cluster) -> None:
    """``scalekit maintenance on --mode read-only`` (the cluster's flag URL): every node
    refuses a POST and shows the banner; after ``off`` every node takes it again."""

    def maintenance(*args: str) -> None:
        subprocess.run([os.path.join(BIN, "scalekit"), "maintenance", *args], check=True,
                       env=cluster.env(), stdout=subprocess.DEVNULL)  # fmt: skip

    maintenance("on", "--mode", "read-only", "--message", "database upgrade")
    try:
        time.sleep(1.2)  # each process re-reads the flag at most once a second
        for index in range(3):
            browser = Browser(cluster.node_url(index))
            status, headers, _ = browser.post("/entries", body="refused")
            assert (status, headers["Location"]) == (303, "/maintenance")
            status, _, page = browser.get("/")
            assert status == 200 and "database upgrade" in field(page, "banner")
    finally:
        maintenance("off")
    time.sleep(1.2)
    for index in range(3):
        status, headers, _ = Browser(cluster.node_url(index)).post("/entries", body="x")
        assert (status, headers["Location"]) == (303, "/")


def test_a_failure_becomes_a_ticket_in_postgresql(cluster):
    status, headers, page = Browser(cluster.url).get("/fail")
    ticket = headers["X-Ticket-ID"]
    assert status == 500 and ticket in page
    store = tickets.open_store(cluster.env()["SCALEKIT_TICKET_DB"])
    try:  # tickets2db runs every second for each node's errors folder
        deadline, found = time.monotonic() + 15, None
        while found is None and time.monotonic() < deadline:
            time.sleep(0.2)
            found = store.load(ticket)
    finally:
        store.close()
    assert found is not None, "tickets2db did not move the ticket into PostgreSQL"
    assert found["app"] == "guestbook"
    assert "a failure on purpose, on node" in json.dumps(found)


def test_a_receipt_deferred_through_haproxy_is_written_by_a_nodes_worker(cluster, capsys):
    """Signing defers the entry's receipt (examples/app/jobs.py) through the outbox into the
    cluster's Redis; one of the three task workers writes it into its node's folder. The
    relay loop (for what a crash leaves in the outbox) runs too."""
    code, lines = status(cluster, capsys)
    workers = {*(f"worker-{node}" for node in NODES), "tasks-relay"}
    assert code == 0 and workers <= set(lines) and all(lines[w][0] == "up" for w in workers)
    receipt_is_written_by_a_worker(cluster)
    with open(os.path.join(cluster.state_dir, "tasks-relay.log")) as log:  # relay -v, each pass
        relayed = log.read()
    assert "task(s) relayed from the outbox of postgres://" in relayed
    assert "Traceback" not in relayed


def receipt_is_written_by_a_worker(cluster: Cluster) -> None:
    """Sign the guestbook through haproxy; a node's task worker writes the receipt."""
    browser, _ = signed_in(cluster)
    message = f"receipt {uuid.uuid4().hex}"
    assert browser.post("/entries", body=message)[0] == 303
    found = re.search(rf'id="receipt-(\d+)"[^<]*</small><p>{message}<', browser.get("/")[2])
    entry, deadline, state = found.group(1), time.monotonic() + 10, ""
    while not state.startswith("receipt written by "):
        assert time.monotonic() < deadline, f"no worker wrote the receipt: {state!r}"
        time.sleep(0.1)
        state = field(browser.get("/")[2], f"receipt-{entry}") or ""
    node = state.removeprefix("receipt written by ")
    assert node in NODES
    with open(os.path.join(cluster.state_dir, node, "receipts", f"{entry}.txt")) as receipt:
        assert message in receipt.read()


def test_a_picture_signed_through_one_node_is_served_by_each(cluster, tmp_path):
    """The picture is kept in PostgreSQL (``SCALEKIT_UPLOADS``: chunk rows on the primary),
    not in the folder of the node that took it: each node serves it, whole and in ranges."""
    browser, _ = signed_in(cluster)
    message, picture = f"picture {uuid.uuid4().hex}", tmp_path / "node1.png"
    picture.write_bytes(png(9))
    assert post_picture(browser, cluster.node_url(0), picture, message)[0] == 303
    page = browser.get("/")[2]
    name = re.search(rf'<p>{message}</p><img id="picture-\d+" src="/download/([^"]+)"', page)[1]
    for index in range(3):
        headers, data = curl_bytes(f"{cluster.node_url(index)}/download/{name}")
        assert (headers["x-node"], headers["content-type"], data) == (
            f"node{index + 1}", "image/png", png(9),
        )  # fmt: skip
        headers, data = curl_bytes(f"{cluster.node_url(index)}/download/{name}", "-r", "4-")
        assert (headers["status"], data) == ("206", png(9)[4:])
    store = uploads.open_store(cluster.env()["SCALEKIT_UPLOADS"])
    try:
        assert store.info(name).size == len(png(9))
        assert not any(name in files for _, _, files in os.walk(cluster.state_dir))
    finally:
        store.close()
    with open(os.path.join(cluster.state_dir, "uploads-gc.log")) as log:  # each pass: a day's
        passes = log.read().splitlines()  # grace, so the new picture stays
    assert passes and all(line.startswith("uploads gc: postgres://") for line in passes), passes
    assert curl_bytes(f"{cluster.url}/download/{name}")[1] == png(9)  # through haproxy


def test_killing_a_node_under_load_loses_no_session_update(cluster, capsys):
    users = [signed_in(cluster)[0] for _ in range(4)]
    seen: list[list[int]] = [[] for _ in users]
    failures: list[str] = []
    stop = threading.Event()

    def load(browser: Browser, views: list[int]) -> None:
        while not stop.is_set():
            try:
                status, _, page = browser.get("/")
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if status == 200:
                views.append(int(field(page, "views")))
            else:
                failures.append(str(status))

    threads = [threading.Thread(target=load, args=pair) for pair in zip(users, seen, strict=True)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        cluster.kill_node(1)
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    try:
        total = len(failures) + sum(map(len, seen))
        assert total > 200, "too little load to judge"
        assert len(failures) <= total * 0.001, failures
        for browser, views in zip(users, seen, strict=True):
            assert views == sorted(set(views)), "a session went back in time"
            _, headers, page = browser.get("/")
            assert headers["X-Node"] != "node2"
            assert int(field(page, "views")) > len(views)  # every counted view was kept
    finally:
        code, lines = status(cluster, capsys)
        assert code == 3 and lines["node2"][0] == "down" and lines["node1"][0] == "up"
        code, output = command(cluster, capsys, "restart", "node2")
        assert code == 0 and f"node2 answers again on {cluster.node_url(1)}/" in output
        assert status(cluster, capsys)[0] == 0


def test_stop_says_what_it_stops(cluster, capsys):
    assert command(cluster, capsys, "restart", "node9") == (
        1, "cluster: no node 'node9': the nodes are node1, node2, node3\n",
    )  # fmt: skip
    code, output = command(cluster, capsys, "stop")
    assert code == 0 and "stopping haproxy (pid" in output and "stopping node1 (pid" in output
    assert output.index("stopping haproxy") < output.index("stopping redis")
    assert not os.path.exists(cluster.state_dir)
    assert command(cluster, capsys, "status")[0] == 3
