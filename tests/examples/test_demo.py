"""The demo that `make demo` runs: gunicorn with examples/gunicorn.conf.py on embedded
defaults (sqlite sessions and data, disk cache, local tickets folder), behind the request
front end (compression, request ids, the JSON access log)."""

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from urllib.parse import unquote

import pytest

from scalekit.maintenance import State, format_time, open_flag
from tests.examples.browser import Browser, field
from tests.servers import free_port
from tests.tickets.test_viewer import chromium

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
NODE = "demo-node"
VERSION = "2026.12.5-demo"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo's data folder: its databases, and its maintenance flag file."""
    return tmp_path_factory.mktemp("demo-data")


@contextlib.contextmanager
def running_demo(data, **env: str) -> Iterator[str]:
    """``make demo``'s gunicorn on a free port with its data in ``data`` (its access log in
    ``data/access.log``); its URL."""
    port = free_port()
    env = {**os.environ, "SCALEKIT_BIND": f"127.0.0.1:{port}", "SCALEKIT_WORKERS": "2",
           "SCALEKIT_DATA": str(data), "SCALEKIT_NODE": NODE, "SCALEKIT_TASK_WORKERS": "0",
           "SCALEKIT_VERSION": VERSION, "SCALEKIT_ACCESSLOG": str(data / "access.log"),
           **env}  # fmt: skip
    process = subprocess.Popen(
        [GUNICORN, "-c", "examples/gunicorn.conf.py"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode(errors="replace")
                    pytest.fail(f"the demo did not start:\n{output[-2000:]}", pytrace=False)
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture(scope="module")
def demo_url(demo_data):
    with running_demo(demo_data) as url:
        yield url


def test_demo_signs_in_keeps_the_session_and_signs_the_guestbook(demo_url):
    browser = Browser(demo_url)
    status, headers, _ = browser.post("/sign-in", name="ann", password="secret")
    assert (status, headers["Location"]) == (303, "/")
    assert "session_id_guestbook" in browser.cookies
    _, _, page = browser.get("/")
    assert (field(page, "user"), field(page, "flash"), field(page, "views")) == (
        "ann", "Signed in as ann.", "1",
    )  # fmt: skip
    assert browser.post("/entries", body="hello from the demo")[0] == 303
    for views in (2, 3, 4):  # any worker: the session and the fragment are shared
        _, _, page = browser.get("/")
        assert field(page, "views") == str(views)
        assert "hello from the demo" in page
    status, _, page = Browser(demo_url).post("/sign-in", name="ann", password="wrong")
    assert status == 303


def test_demo_entries_page_reads_the_session_without_counting(demo_url):
    browser = Browser(demo_url)
    browser.post("/sign-in", name="bea", password="secret")
    status, headers, page = browser.get("/entries")  # shows the flash, and pops it
    assert status == 200 and "Set-Cookie" not in headers
    assert (field(page, "user"), field(page, "flash"), field(page, "views")) == (
        "bea", "Signed in as bea.", "0",
    )  # fmt: skip
    for _ in range(3):
        status, headers, page = browser.get("/entries")
        assert (field(page, "user"), field(page, "flash"), field(page, "views")) == (
            "bea", None, "0",
        )  # fmt: skip
    assert field(browser.get("/")[2], "views") == "1"
    assert field(browser.get("/entries")[2], "views") == "1"


def test_demo_fails_with_a_ticket_and_serves_precompressed_static(demo_url):
    status, headers, page = Browser(demo_url).get("/fail")
    assert status == 500 and headers["X-Ticket-ID"] in page
    status, headers, _ = Browser(demo_url).request("GET", "/static/style.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert Browser(demo_url).get("/healthz")[0] == 200


def test_demo_tickets_name_the_request_node_and_client_behind_a_trusted_balancer(tmp_path):
    """The demo trusts the balancer on loopback (``$SCALEKIT_TRUSTED_PROXIES``' default), as
    gunicorn.conf.py does: the ticket keeps the balancer's request id, the address the
    balancer saw, the node and the version, as the access record does. (A demo of its own:
    a worker counts a repeated failure on its first ticket for a while.)"""
    from scalekit.tickets import open_store

    with running_demo(tmp_path) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/fail", headers={"X-Forwarded-For": "203.0.113.9",
                                                    "X-Request-ID": "haproxy-id-9"})  # fmt: skip
        response = connection.getresponse()
        response.read()
        connection.close()
    ticket = open_store(f"file://{tmp_path}/errors", create=False).load(
        response.headers["X-Ticket-ID"]
    )
    assert (ticket["request_id"], ticket["node"], ticket["version"]) == (
        response.headers["X-Request-ID"], NODE, VERSION,
    ) == ("haproxy-id-9", NODE, VERSION)  # fmt: skip
    assert (ticket["request"]["client"], ticket["request"]["peer"]) == ("203.0.113.9", host)
    record = access_records(tmp_path)["haproxy-id-9"]
    assert (record["client"], record["status"], record["level"]) == ("203.0.113.9", 500, "ERROR")


def curl(url: str, *args: str) -> tuple[dict[str, str], str]:
    """The headers (lowercase names) and the decoded body curl got for ``url``."""
    headers, body = curl_bytes(url, *args)
    return headers, body.decode()


def curl_bytes(url: str, *args: str) -> tuple[dict[str, str], bytes]:
    """The headers curl got for ``url`` (lowercase names; ``status``: the status code) and
    the body as it came."""
    done = subprocess.run(["curl", "-s", "-D", "-", *args, url], capture_output=True,
                          check=True, timeout=20)  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    return {**headers, "status": status.split()[1]}, body


def test_demo_page_arrives_compressed_and_chromium_renders_it(demo_url, tmp_path):
    plain_headers, plain = curl(demo_url + "/entries")
    assert "content-encoding" not in plain_headers and field(plain, "node") == NODE
    for asked, sent in (("gzip", "gzip"), ("br", "br"), ("gzip;q=0.5, br", "br")):
        headers, page = curl(demo_url + "/entries", "--compressed", "-H",
                             f"Accept-Encoding: {asked}")  # fmt: skip
        assert headers["content-encoding"] == sent and "Accept-Encoding" in headers["vary"]
        assert field(page, "node") == NODE and "<form" in page  # curl decoded it
        assert int(headers["content-length"]) < len(plain.encode())
    net_log = tmp_path / "net-log.json"
    done = chromium(tmp_path, f"--log-net-log={net_log}", "--dump-dom", demo_url + "/entries")
    assert field(done.stdout, "node") == NODE, done.stderr[-2000:]  # rendered, decoded
    assert 'action="/sign-in"' in done.stdout
    assert re.search(r"Content-Encoding: (br|gzip)", net_log.read_text(errors="replace"))


def access_records(data) -> dict[str, dict]:
    """The demo's access log (one JSON object a line), by request id."""
    lines = (data / "access.log").read_text().splitlines()
    return {record["id"]: record for record in map(json.loads, lines)}


def test_demo_request_id_is_in_the_response_and_the_access_log(demo_url, demo_data):
    status, headers, _ = Browser(demo_url).get("/entries")
    made = headers["X-Request-ID"]
    assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", made)
    connection = http.client.HTTPConnection(*demo_url[7:].split(":"), timeout=10)
    connection.request("GET", "/fail", headers={"X-Request-ID": "balancer-id-7"})
    failed = connection.getresponse()  # from loopback, a trusted balancer: its id is kept
    failed.read()
    connection.close()
    assert (failed.status, failed.headers["X-Request-ID"]) == (500, "balancer-id-7")
    records = access_records(demo_data)
    assert {key: records[made][key] for key in ("method", "path", "status", "node", "version")} == {
        "method": "GET", "path": "/entries", "status": 200, "node": NODE, "version": VERSION,
    }  # fmt: skip
    assert records[made]["client"] == "127.0.0.1" and records[made]["bytes"] > 0
    assert (records["balancer-id-7"]["status"], records["balancer-id-7"]["level"]) == (500, "ERROR")


def test_demo_refuses_a_deadline_that_would_outlast_gunicorns_timeout(tmp_path):
    """gunicorn.conf.py gives gunicorn's ``timeout`` to the front end: a deadline that would
    end after it (a sync worker killed with no answer) stops the demo at start, saying why."""
    env = {**os.environ, "SCALEKIT_BIND": f"127.0.0.1:{free_port()}", "SCALEKIT_WORKERS": "1",
           "SCALEKIT_DATA": str(tmp_path), "SCALEKIT_TIMEOUT": "10",
           "SCALEKIT_DEADLINE": "9.5"}  # fmt: skip
    done = subprocess.run([GUNICORN, "-c", "examples/gunicorn.conf.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "a deadline of 9.5 s with 1 s of grace does not end" in done.stderr
    assert "the server's timeout of 10 s" in done.stderr


def test_demo_unknown_path_is_404(demo_url):
    assert Browser(demo_url).get("/nope")[0] == 404


@contextlib.contextmanager
def maintenance(demo_data, state: State):
    """The demo in maintenance (``state``) for the block, as ``scalekit maintenance on`` does
    with the demo's flag file; every worker sees it within a second."""
    flag = open_flag(f"file://{demo_data}/MAINTENANCE")
    flag.write(state)
    try:
        time.sleep(1.1)
        yield
    finally:
        flag.clear()
        time.sleep(1.1)


def test_demo_banner_shows_the_operators_message_and_the_end(demo_url, demo_data):
    end = time.time() + 1800
    with maintenance(demo_data, State("read-only", "Moving to a bigger database", end=end)):
        banner = field(Browser(demo_url).get("/")[2], "banner")
        assert banner.startswith("Moving to a bigger database")
        assert format_time(end) in banner
    with maintenance(demo_data, State("read-only")):  # no message: the mode's own words
        assert "read-only for maintenance" in field(Browser(demo_url).get("/")[2], "banner")
    assert field(Browser(demo_url).get("/")[2], "banner") is None


def test_demo_offers_no_form_in_read_only_mode_and_says_why(demo_url, demo_data):
    signed_in = Browser(demo_url)
    signed_in.post("/sign-in", name="cy", password="secret")
    with maintenance(demo_data, State("read-only", end=time.time() + 600)):
        for browser in (Browser(demo_url), signed_in):
            _, _, page = browser.get("/")
            assert "<form" not in page and "Changes are paused" in field(page, "paused")
        assert field(signed_in.get("/")[2], "user") == "cy"  # still signed in, reading
        status, headers, _ = Browser(demo_url).post("/sign-in", name="dee", password="secret")
        assert (status, headers["Location"]) == (303, "/maintenance")
        status, _, page = Browser(demo_url).get("/maintenance")
        assert status == 200 and "You can still browse" in page and "Down" not in page
    _, _, page = Browser(demo_url).get("/")
    assert 'action="/sign-in"' in page and field(page, "paused") is None


def test_demo_shows_the_node_that_served_and_the_node_that_saved_the_session(demo_url):
    browser = Browser(demo_url)
    _, headers, page = browser.get("/")
    assert field(page, "node") == NODE and "X-Node" not in headers  # make cluster's only
    assert field(page, "saved-by") is None  # no session saved yet
    browser.post("/sign-in", name="eve", password="secret")
    _, _, page = browser.get("/")
    assert field(page, "saved-by") == NODE


def test_demo_sets_no_pin_cookie_without_replicas(demo_url):
    browser = Browser(demo_url)
    browser.post("/sign-in", name="fay", password="secret")
    status, headers, _ = browser.post("/entries", body="no pin, please")
    assert status == 303
    assert not any("scalekit_db_pin" in c for c in headers.get_all("Set-Cookie") or [])
    assert "scalekit_db_pin" not in browser.cookies


# -- Deferred tasks: signing defers a receipt (examples/app/jobs.py) in its transaction; the
# worker that gunicorn starts beside the app (SCALEKIT_TASK_WORKERS, as `make demo` sets it)
# writes the file and marks the entry.


@pytest.fixture(scope="module")
def worker_demo(tmp_path_factory):
    """``make demo``: the demo with its task worker; ``(URL, data folder)``."""
    data = tmp_path_factory.mktemp("demo-worker")
    with running_demo(data, SCALEKIT_TASK_WORKERS="1") as url:
        yield url, data


def newest_receipt(page: str) -> int:
    """The id of the newest entry that asked for a receipt."""
    return int(re.search(r'id="receipt-(\d+)"', page).group(1))


def wait_for_receipt(browser: Browser, entry: int, seconds: float = 5) -> str:
    """The page once entry ``entry``'s receipt shows as written (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        page = browser.get("/")[2]
        if field(page, f"receipt-{entry}") == f"receipt written by {NODE}":
            return page
        assert time.monotonic() < deadline, f"no receipt after {seconds} s: {page}"
        time.sleep(0.1)


def task_counts(data) -> dict[str, int]:
    """Every task of the demo's engine, by state, summed over the queues."""
    from scalekit.tasks import open_engine

    engine = open_engine(f"sqlite://{data}/tasks.sqlite", "guestbook")
    try:
        totals: dict[str, int] = {}
        for states in engine.counts().values():
            for state, number in states.items():
                totals[state] = totals.get(state, 0) + number
        return totals
    finally:
        engine.close()


def test_demo_signing_defers_a_receipt_that_the_worker_writes(worker_demo):
    url, data = worker_demo
    browser = Browser(url)
    browser.post("/sign-in", name="gus", password="secret")
    assert browser.post("/entries", body="a receipt, please")[0] == 303
    entry = newest_receipt(browser.get("/")[2])  # pending, or written already
    page = wait_for_receipt(browser, entry)
    receipt = (data / "receipts" / f"{entry}.txt").read_text()
    assert receipt.startswith(f"Entry {entry} by gus, signed ") and "a receipt, please" in receipt
    assert field(page, "tasks-waiting") is None
    assert set(task_counts(data).values()) <= {0}  # run and acknowledged: none left


def test_demo_signing_that_fails_leaves_no_entry_no_task_and_no_receipt(worker_demo):
    url, data = worker_demo
    browser = Browser(url)
    browser.post("/sign-in", name="hal", password="secret")
    status, headers, page = browser.post("/entries", body="vanishing entry", then="fail")
    assert status == 500 and headers["X-Ticket-ID"] in page
    assert browser.post("/entries", body="committed")[0] == 303
    page = wait_for_receipt(browser, newest_receipt(browser.get("/")[2]))
    assert "committed" in page and "vanishing entry" not in page
    assert set(task_counts(data).values()) <= {0}
    with contextlib.closing(sqlite3.connect(data / "storage.sqlite")) as db:
        assert db.execute("SELECT count(*) FROM scalekit_task_outbox").fetchone() == (0,)
        entries = {row[0] for row in db.execute("SELECT id FROM entry")}
    receipts = {int(name.removesuffix(".txt")) for name in os.listdir(data / "receipts")}
    assert receipts == entries  # one receipt per committed entry, none for the failed one
    for entry in entries:
        assert "vanishing" not in (data / "receipts" / f"{entry}.txt").read_text()


def test_demo_without_a_worker_says_the_receipts_wait(demo_url):
    """The module's demo runs no task worker (SCALEKIT_TASK_WORKERS=0, as on an app
    server): the receipt stays pending, and after views.RECEIPT_LATE the page asks why."""
    browser = Browser(demo_url)
    browser.post("/sign-in", name="ida", password="secret")
    browser.post("/entries", body="nobody writes my receipt")
    entry = newest_receipt(browser.get("/")[2])
    deadline = time.monotonic() + 10
    while (waiting := field(browser.get("/")[2], "tasks-waiting")) is None:
        assert time.monotonic() < deadline, "the page never said the receipts wait"
        time.sleep(0.5)
    assert "is a task worker running?" in waiting
    assert field(browser.get("/")[2], f"receipt-{entry}") == "receipt pending"


def task_workers(data) -> list[str]:
    """The command lines of the task worker processes working for the demo in ``data``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            if "tasks worker" in command and str(data) in command:
                found.append(command)
    return found


def test_demo_stops_its_task_worker_with_gunicorn(tmp_path):
    with running_demo(tmp_path, SCALEKIT_TASK_WORKERS="1"):
        assert task_workers(tmp_path)
    assert task_workers(tmp_path) == []  # gunicorn's on_exit sent SIGTERM and waited


def test_demo_ctrl_c_stops_gunicorn_and_its_task_worker(tmp_path):
    """Ctrl-C in `make demo`'s terminal: SIGINT to every process of the foreground group
    (gunicorn's master and workers, the task worker and its children); all of them exit."""
    port = free_port()
    env = dict(os.environ, SCALEKIT_BIND=f"127.0.0.1:{port}", SCALEKIT_WORKERS="1",
               SCALEKIT_DATA=str(tmp_path), SCALEKIT_TASK_WORKERS="1")  # fmt: skip
    process = subprocess.Popen(
        [GUNICORN, "-c", "examples/gunicorn.conf.py"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not task_workers(tmp_path):
            assert process.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(20)
        deadline = time.monotonic() + 5  # gunicorn's workers may outlive their master briefly
        while _group(process.pid):
            assert time.monotonic() < deadline, f"still running: {_group(process.pid)}"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _group(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that have not exited (zombies excepted)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(pid))
    return found


# -- Pictures: the sign form takes an optional picture, stored through scalekit.uploads
# (a folder under the data folder here) and served by its downloads at /download/<name>.


def png(width: int = 2) -> bytes:
    """A real PNG, ``width`` x 1 grey pixels (made here: no image library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" + bytes(range(width)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def cookies(browser: Browser) -> str:
    """The ``Cookie`` header ``browser`` sends."""
    return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


def post_picture(browser: Browser, url: str, path, body: str = "with a picture",
                 kind: str = "image/png", *curl_args: str,
                 **fields: str) -> tuple[int, str]:  # fmt: skip
    """Sign as ``browser``'s user with the file at ``path`` as the picture, as a browser's
    form does (curl -F: multipart/form-data, the file streamed); ``(status, body)``."""
    form = [f"body={body}", *(f"{name}={value}" for name, value in fields.items())]
    done = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-H", f"Cookie: {cookies(browser)}",
         *(arg for field_ in form for arg in ("-F", field_)),
         "-F", f"picture=@{path};type={kind}", *curl_args, url + "/entries"],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    text, _, status = done.stdout.decode(errors="replace").rpartition("\n")
    return int(status), text


def pictures_in(data) -> list[str]:
    """Every file in the demo's uploads folder (file://DATA/uploads): the pictures, and any
    temp file a write left."""
    return sorted(path.name for path in (data / "uploads").rglob("*") if path.is_file())


def picture_of(page: str, entry_element: str = "picture-") -> str | None:
    """The upload name in the newest entry's ``<img src="/download/<name>">``."""
    found = re.search(rf'<img id="{entry_element}\d+" src="/download/([^"]+)"', page)
    return found.group(1) if found else None


def test_demo_signs_with_a_picture_that_downloads_serve(demo_url, demo_data, tmp_path):
    browser = Browser(demo_url)
    browser.post("/sign-in", name="jo", password="secret")
    form = re.search(r'<form [^>]*action="/entries".*?</form>', browser.get("/")[2], re.DOTALL)[0]
    assert 'enctype="multipart/form-data"' in form
    assert re.search(r'name="picture"\s+accept="image/gif,image/jpeg,image/png,image/webp"', form)
    picture = tmp_path / "été à la plage.png"
    picture.write_bytes(png(7))
    assert post_picture(browser, demo_url, picture, body="look")[0] == 303
    page = browser.get("/")[2]
    name = picture_of(page)
    assert name.startswith("entry.picture.") and name.endswith(".png")
    assert name in pictures_in(demo_data)  # under a name the store made, not the client's
    headers, data = curl_bytes(f"{demo_url}/download/{name}")
    assert data == png(7)
    assert headers["content-type"] == "image/png" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"].startswith("inline;")  # shown, with its own name
    assert "été_à_la_plage.png" in unquote(headers["content-disposition"])
    headers, part = curl_bytes(f"{demo_url}/download/{name}", "-r", "1-3")
    assert part == png(7)[1:4] and headers["content-range"] == f"bytes 1-3/{len(png(7))}"
    etag = headers["etag"]
    headers, _ = curl_bytes(f"{demo_url}/download/{name}", "-H", f"If-None-Match: {etag}")
    assert headers["status"] == "304"
    net_log = tmp_path / "net-log.json"  # Chromium shows it: the page's <img> loads it
    done = chromium(tmp_path, f"--log-net-log={net_log}", "--dump-dom", demo_url + "/entries")
    assert f'src="/download/{name}"' in done.stdout, done.stderr[-2000:]
    log = net_log.read_text(errors="replace")
    assert f"GET /download/{name} HTTP/1.1" in log and "Content-Type: image/png" in log


def test_demo_signs_without_a_picture_as_a_browser_sends_the_form(demo_url, demo_data):
    """No file chosen: the browser still sends the file part, with an empty file name and
    no bytes. The entry is signed, with no picture and nothing stored."""
    browser = Browser(demo_url)
    browser.post("/sign-in", name="ole", password="secret")
    before = pictures_in(demo_data)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="body"\r\n\r\nno picture today\r\n'
        b'--b\r\nContent-Disposition: form-data; name="picture"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n--b--\r\n"
    )  # fmt: skip
    connection = http.client.HTTPConnection(*demo_url[7:].split(":"), timeout=10)
    connection.request("POST", "/entries", body, {
        "Cookie": cookies(browser), "Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert connection.getresponse().status == 303
    connection.close()
    page = browser.get("/")[2]
    assert field(page, "flash") == "Thank you for signing."
    newest = re.search(r"<li>.*?</li>", page)[0]
    assert "no picture today" in newest and "<img" not in newest
    assert pictures_in(demo_data) == before


def test_demo_refuses_a_file_that_is_not_a_picture_and_keeps_nothing(demo_url, demo_data,
                                                                       tmp_path):  # fmt: skip
    """The type is judged by the file's first bytes: an SVG, or an HTML page called .png,
    is refused (no entry, nothing left in the store), whatever the browser said it was."""
    browser = Browser(demo_url)
    browser.post("/sign-in", name="kim", password="secret")
    before = pictures_in(demo_data)
    svg = tmp_path / "x.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    html = tmp_path / "x.png"
    html.write_text("<html><script>alert(1)</script></html>")
    for path, kind in ((svg, "image/svg+xml"), (html, "image/png")):
        assert post_picture(browser, demo_url, path, body="sneaky", kind=kind)[0] == 303
        page = browser.get("/")[2]
        assert field(page, "flash") == "Not signed: a picture is a PNG, JPEG, GIF or WebP file."
        assert "sneaky" not in page
    assert pictures_in(demo_data) == before


def test_demo_refuses_a_picture_over_the_limit_with_413_and_keeps_nothing(
    demo_url, demo_data, tmp_path
):
    """5 MB at most (``$SCALEKIT_MAX_PICTURE``; the request: that and 16 KiB for the text):
    a larger one is refused while it is read, announced (Content-Length) or not (chunked),
    and nothing of it stays in the store."""
    browser = Browser(demo_url)
    browser.post("/sign-in", name="lou", password="secret")
    before = pictures_in(demo_data)
    big = tmp_path / "big.png"
    big.write_bytes(png() + b"\0" * (5 * 1024 * 1024 + 16 * 1024))
    for how in ([], ["-H", "Transfer-Encoding: chunked"]):
        status, text = post_picture(browser, demo_url, big, "too big", "image/png", *how)
        assert status == 413 and "Content too large" in text
    assert pictures_in(demo_data) == before
    assert "too big" not in browser.get("/")[2]


def test_demo_signing_that_fails_removes_its_picture(demo_url, demo_data, tmp_path):
    browser = Browser(demo_url)
    browser.post("/sign-in", name="max", password="secret")
    before = pictures_in(demo_data)
    picture = tmp_path / "p.png"
    picture.write_bytes(png())
    status, _ = post_picture(browser, demo_url, picture, "gone again", "image/png",
                             then="fail")  # fmt: skip
    assert status == 500 and "gone again" not in browser.get("/")[2]
    assert pictures_in(demo_data) == before


def test_demo_reads_no_picture_of_a_signed_out_client_nor_a_bad_form(demo_url, demo_data,
                                                                      tmp_path):  # fmt: skip
    """Signed out: refused before the body is read. Two pictures in one form, or a form cut
    short by a client that went away: a 400 (to a client still there), nothing stored."""
    before = pictures_in(demo_data)
    picture = tmp_path / "p.png"
    picture.write_bytes(png())
    assert post_picture(Browser(demo_url), demo_url, picture, "anonymous")[0] == 303
    browser = Browser(demo_url)
    browser.post("/sign-in", name="ned", password="secret")
    status, text = post_picture(browser, demo_url, picture, "twice", "image/png", "-F",
                                f"picture=@{picture};type=image/png")  # fmt: skip
    assert status == 400 and "malformed or incomplete" in text  # the generic page
    host, port = demo_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            b"POST /entries HTTP/1.1\r\nHost: demo\r\nCookie: " + cookies(browser).encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nX-Request-ID: gone-away"
            + b"\r\nContent-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: form-data; "
            + b'name="picture"; filename="p.png"\r\n\r\n' + png() + b"\0" * 100_000
        )  # fmt: skip
    deadline = time.monotonic() + 10  # the request's access record: it has ended
    while "gone-away" not in access_records(demo_data):
        assert time.monotonic() < deadline, "the cut request never ended"
        time.sleep(0.1)
    assert access_records(demo_data)["gone-away"]["status"] == 400
    assert pictures_in(demo_data) == before
    assert "anonymous" not in browser.get("/")[2]


def test_demo_downloads_refuse_what_is_no_upload_name(demo_url):
    for path in (
        "/download/",
        "/download/../config.py",
        "/download/entry.picture.x/../../a.png",
        "/download/entry.picture.0123456789abcdef0123456789abcdef.eA==.png",
    ):
        assert Browser(demo_url).get(path)[0] == 404
