"""The README's Python examples, run as written against the test servers.

Each test takes one ```python block of README.md (found by a line only it has), puts the
private servers' URLs and temp folders where the README names production hosts and paths,
runs it, and checks that it does what the README says. A block that drifts from the API
fails here. Every block runs.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import decimal
import gzip
import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalekit import sessions
from scalekit.cache import Cache
from scalekit.core.errors import ConfigError
from scalekit.maintenance import MaintenanceMiddleware, State, open_flag
from scalekit.sessions.cookies import new_session_id
from tests.sessions.apps import mount_py4web
from tests.wsgi import Client

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def snippet(marker: str, replace: dict[str, str] | None = None) -> str:
    """The README's one Python block that contains ``marker``, with ``replace`` applied."""
    found = [block for block in BLOCKS if marker in block]
    assert len(found) == 1, f"{len(found)} Python blocks of README.md contain {marker!r}"
    code = found[0]
    for old, new in (replace or {}).items():
        assert old in code, f"the README block with {marker!r} no longer says {old!r}"
        code = code.replace(old, new)
    return code


def run(code: str, **names) -> dict:
    """Run ``code`` as a module whose globals start as ``names``; its globals."""
    namespace = {"__name__": "readme_example", **names}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    return namespace


@contextlib.contextmanager
def shop_down(flag_url: str, message: str) -> Iterator[None]:
    """App ``shop`` in maintenance (down) for the block, seen by every process's next read."""
    flag = open_flag(flag_url, app_name="shop")
    flag.write(State(mode="down", message=message))
    try:
        time.sleep(1.1)  # each process reads the flag at most once a second
        yield
    finally:
        flag.clear()
        flag.close()


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_the_sessions_example_counts_visits(redis_url, monkeypatch):
    monkeypatch.setenv(
        "SESSION_SECRETS", "new-secret-32-bytes-of-random-xyz old-secret-32-bytes-too-abcdefgh"
    )
    code = snippet("session.visits = ", {"redis://127.0.0.1:6379/0": redis_url})
    client = Client(run(code)["application"])
    assert [client.get("/").text for _ in range(3)] == ["visit 1", "visit 2", "visit 3"]
    assert Client(client.app).get("/").text == "visit 1"  # another browser, another session


def test_every_store_url_example_opens_a_working_store(
    tmp_path, redis_url, memcache_url, postgres_url
):
    code = snippet(
        'open_store("file:///var/app/sessions"',
        {
            "file:///var/app/sessions": f"file://{tmp_path}/sessions",
            "/var/app/databases": str(tmp_path / "databases"),
            "postgres://app:pw@db.internal/shop": postgres_url,
            "memcache://m1:11211,m2:11211": memcache_url,
            "redis://:pw@cache.internal:6379/0": redis_url,
        },
    )
    kinds = []
    for line in code.strip().splitlines():
        store = run(line, sessions=sessions)["store"]
        sid = new_session_id()
        assert store.save(sid, b"signed payload", 60, None)
        assert store.load(sid).data == b"signed payload"
        store.delete(sid)
        assert store.load(sid) is None
        kinds.append(store.kind)
        store.close()
    assert len(kinds) == 5 and "redis" in kinds and "memcache" in kinds


def test_the_py4web_example(redis_url, monkeypatch):
    code = snippet("from py4web import Session", {"redis://cache:6379/0": redis_url})
    session = run(code, SECRET="Py4web-Readme:S3cret_4kQ!z8Wm#Tb5Yr2&Lp7")["session"]

    def visits():
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    client = mount_py4web("readme_shop", "visits", session, visits, monkeypatch)
    assert [client.get("/readme_shop/visits").text for _ in range(2)] == ["1", "2"]


def test_the_database_store_joins_the_apps_transaction(postgres_url, tmp_path, monkeypatch):
    from pydal import DAL

    monkeypatch.chdir(tmp_path)  # pydal's .table files
    code = snippet("sessions.DatabaseStore(db=db", {"postgres://app:pw@db/shop": postgres_url})
    namespace = run(code, DAL=DAL, sessions=sessions)
    store, db = namespace["store"], namespace["db"]
    sid = new_session_id()
    assert store.save(sid, b"payload", 60, None)
    other = sessions.open_store(postgres_url, app_name="shop", folder=str(tmp_path))
    assert other.load(sid) is None  # not committed: the app's transaction holds it
    db.commit()
    assert other.load(sid).data == b"payload"
    other.close()
    db.close()


def test_the_cache_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # cache.disk writes to ./cache/shop/
    loads = []

    def load_products():
        loads.append(1)
        return ["tea", "coffee"]

    namespace = run(snippet('cache = Cache("shop")'), load_products=load_products)
    assert namespace["page"] == {"products": ["tea", "coffee"]}
    assert len(loads) == 2  # the first call, then time_expire=0 recomputed
    cache = namespace["cache"]
    assert cache.ram("front", lambda: "not this", time_expire=60) == "not this"  # deleted
    assert cache.disk.increment("visits") == 2
    assert (tmp_path / "cache" / "shop").is_dir()


def test_the_cache_configuration_example(tmp_path, redis_url, memcache_url):
    code = snippet(
        'cache = Cache("shop", disk=',
        {
            "file:///var/cache/shop": f"file://{tmp_path}/cache",
            "redis://cache:6379/0": redis_url,
            "memcache://m1:11211,m2:11211": memcache_url,
        },
    )
    cache = run(code, Cache=Cache)["cache"]
    key = f"readme-{new_session_id()}"
    assert cache.ram(key, lambda: "from Redis", time_expire=60) == "from Redis"
    assert cache.redis(key, lambda: "recomputed", time_expire=60) == "from Redis"
    assert cache.disk(key, lambda: "recomputed", time_expire=60) == "from Redis"  # Redis too
    assert cache.memcache(key, lambda: "memcached", time_expire=60) == "memcached"


def test_the_tickets_example(tmp_path):
    code = snippet("tickets.TicketMiddleware(application", {"file://errors": f"file://{tmp_path}"})
    response = Client(run(code)["application"]).get("/")
    assert response.status == 500
    tickets = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(tickets) == 1 and "boom" in tickets[0].read_text(errors="replace")


def test_the_replica_example_reads_and_writes(postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # folder="databases"
    code = snippet(
        'dal.item.insert(name="new")',
        {
            '"postgres://app:secret@db1/app"': repr(postgres_url),
            # the one test server as a replica too, under another name
            '["postgres://app:secret@db2/app", "postgres://app:secret@db3/app"]': repr(
                [postgres_url.replace("127.0.0.1", "localhost")]
            ),
        },
    )
    (tmp_path / "databases").mkdir()
    client = Client(run(code)["application"])
    assert client.request("/", method="POST").status == 303  # the primary creates the table
    assert client.get("/").text == "new"  # read-your-writes: this client reads the primary
    assert client.request("/", method="POST").status == 303
    assert Client(client.app).get("/").text == "new,new"  # a replica, for another client


def test_the_static_files_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    static = tmp_path / "applications" / "shop" / "static"
    static.mkdir(parents=True)
    (static / "site.css").write_text("body { color: teal }")
    client = Client(run(snippet("StaticFiles(", {}), app=hello)["application"])
    response = client.get("/static/site.css")
    assert response.status == 200 and response.text == "body { color: teal }"
    assert client.get("/shop/default/index").text == "hello"


def test_the_maintenance_examples(redis_url):
    code = snippet('MaintenanceMiddleware(application, flag="redis://cache:6379/0"', {
        "redis://cache:6379/0": redis_url,
    })  # fmt: skip
    client = Client(run(code, application=hello)["application"])
    decorated = snippet('@with_maintenance("redis://cache:6379/0"', {
        "redis://cache:6379/0": redis_url, "...": "return hello(environ, start_response)",
    })  # fmt: skip
    checkout = Client(run(decorated, hello=hello)["checkout"])
    assert client.get("/").text == checkout.get("/").text == "hello"

    with shop_down(redis_url, "back soon"):
        for response in (client.get("/"), checkout.get("/")):
            assert response.status == 503 and "back soon" in response.text


def test_the_urls_example_says_what_each_line_gives():
    checked = 0
    namespace = run("from scalekit.core import urls")
    for line in snippet("urls.parse(").strip().splitlines():
        code, _, said = (part.strip() for part in line.partition("  # "))
        if not said:
            exec(code, namespace)  # noqa: S102 - our own README
        elif said.startswith("ConfigError: "):
            message = said.removeprefix("ConfigError: ").removesuffix("...")
            with pytest.raises(ConfigError, match=re.escape(message)):
                eval(code, namespace)
        elif code.startswith("print("):
            printed = code.removeprefix("print(").removesuffix(")")
            assert str(eval(printed, namespace)) == said
        else:
            assert eval(code, namespace) == ast.literal_eval(said)
        checked += bool(said)
    assert checked == 4


def test_the_ticket_viewer_example(postgres_url):
    code = snippet("admin = TicketViewer(", {"postgres://app@db.internal/shop": postgres_url})
    admin = Client(run(code, TOKEN="viewer token")["admin"])
    assert admin.get("/").status == 403  # 127.0.0.1 is not in 10.0.0.0/8
    assert admin.get("/summary", headers={"Authorization": "Bearer viewer token"}).status == 200


def test_the_replica_deploy_snippet_reads_its_environment(postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "databases").mkdir()
    monkeypatch.setenv("SCALEKIT_DB_PRIMARY", postgres_url)
    monkeypatch.setenv("SCALEKIT_DB_REPLICAS", postgres_url.replace("127.0.0.1", "localhost"))
    namespace = run(snippet("db.ReplicaSet.from_environ("), application=hello,
                    define_tables=lambda dal: None)  # fmt: skip
    replicas = namespace["replicas"]
    assert replicas.max_lag == 5 and len(replicas.replicas) == 1
    assert Client(namespace["application"]).get("/").text == "hello"


def test_the_maintenance_options_and_deploy_snippets(redis_url, tmp_path, monkeypatch):
    """Every option the README lists is one the middleware takes; the deploy snippet runs;
    ``writes_enabled_for`` asks the last middleware made, as the README says."""
    monkeypatch.chdir(tmp_path)
    for page in ("static/503.html", "applications/shop/static/503.html"):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("<p>{{message}}</p>")
    monkeypatch.setenv("SCALEKIT_MAINTENANCE_SECRET", "a deploy secret of 32 characters")
    names = {"MaintenanceMiddleware": MaintenanceMiddleware, "application": hello, "os": os}
    listing = snippet('page_url="/maintenance"', {"redis://cache:6379/0": redis_url})
    run("middleware = " + listing, **names)
    monkeypatch.setenv("SCALEKIT_MAINTENANCE_FLAG", redis_url)
    deployed = run(snippet('trusted_proxies=["10.0.0.2"'), application=hello)["application"]
    client = Client(deployed)
    deadline = time.monotonic() + 2  # a flip shows within a second (an earlier test's flag)
    while client.get("/").text != "hello":
        assert time.monotonic() < deadline, "maintenance still on with the flag cleared"
        time.sleep(0.1)

    guard = snippet("maintenance.writes_enabled_for(600)")
    run(guard)  # maintenance off: the import goes on
    with shop_down(redis_url, "import window"):
        with pytest.raises(SystemExit, match="maintenance soon"):
            run(guard)
        response = client.get("/")
        assert response.status == 503 and "import window" in response.text


def test_the_maintenance_cli_block_runs_as_written(redis_url):
    """Every line of the operator's block succeeds (no date in the past, no stale option),
    in order, on a real Redis flag."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if "scalekit maintenance schedule" in b]
    app = f"readme{os.getpid()}"
    names = {"redis://cache:6379/0": redis_url, "SCALEKIT_APP=shop": f"SCALEKIT_APP={app}"}
    for old, new in names.items():
        assert old in block, f"the README's maintenance CLI block no longer says {old!r}"
        block = block.replace(old, new)
    bin_folder = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-e", "-c", block], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    assert f"scheduled from {tomorrow} 02:00:00 UTC" in done.stdout
    flag = open_flag(redis_url, app_name=app)
    try:
        assert flag.read() is None  # the last line switched it off
    finally:
        flag.close()


def test_the_pydal_cached_select_example(tmp_path, redis_url):
    code = snippet(
        "cache=(cache.redis, 60), cacheable=True",
        {
            'folder="databases"': f'folder="{tmp_path}"',
            "redis://cache:6379/0": redis_url,
        },
    )
    namespace = run(code)
    db, cache, products = namespace["db"], namespace["cache"], namespace["products"]
    db.product.insert(name="tea", price=decimal.Decimal("3.50"))
    db.product.insert(name="caviar", price=decimal.Decimal("99.00"))
    db.commit()
    first = namespace["catalogue"]()
    db(db.product).update(name="renamed")
    db.commit()
    second = namespace["catalogue"]()  # from Redis: the database's change is not seen
    assert [(row.name, row.price) for row in second] == [("caviar", 99), ("tea", 3.5)]
    assert second.as_list() == first.as_list()
    assert isinstance(second.first().price, decimal.Decimal)
    cheap = db(db.product.price < 10).select(cache=(products, 60), cacheable=True)
    assert [row.name for row in cheap] == ["renamed"]
    assert products.clear() == 1  # the prefixed key only; the catalogue stays cached
    assert [row.name for row in namespace["catalogue"]()] == ["caviar", "tea"]
    cache.close()
    db.close()


def test_the_custom_error_page_example(tmp_path):
    code = snippet("def sorry(ticket_id, request_id)", {"file://errors": f"file://{tmp_path}"})
    response = Client(run(code, application=failing)["application"]).get("/")
    ticket = response.header("X-Ticket-ID")
    assert response.status == 500 and f"Please quote <b>{ticket}</b>" in response.text
    assert (tmp_path / f"{ticket}.json").is_file()


def failing(environ, start_response):
    raise ValueError("boom")


def test_the_flask_example_uses_flasks_own_session(redis_url):
    code = snippet("FlaskSessionInterface(", {"redis://cache:6379/0": redis_url})
    client = Client(run(code, SECRET="flask example secret, 32 bytes or more")["app"])
    assert [client.get("/").text for _ in range(2)] == ["guest seen 1 times", "guest seen 2 times"]
    guest = client.cookies["session"]
    cookie = client.request("/login/ann", "POST").header("Set-Cookie")
    assert f"Max-Age={7 * 24 * 3600}" in cookie and "HttpOnly" in cookie  # 7 days, permanent
    assert client.cookies["session"] != guest  # regenerate(): a new id on login
    assert client.get("/").text == "ann seen 3 times"
    signed_in = client.cookies["session"].split(".")[0]
    store = sessions.open_store(redis_url, app_name="shop")
    assert store.load(signed_in) is not None and store.load(guest.split(".")[0]) is None
    client.request("/logout", "POST")
    assert not client.cookies and store.load(signed_in) is None  # clear() deleted it
    store.close()


def test_the_ticket_node_and_trusted_proxies_example(tmp_path):
    code = snippet('node="node2"', {"file:///srv/shop/errors": f"file://{tmp_path}"})
    guarded = run(code, application=failing)["application"]

    def from_balancer(environ, start_response):
        environ["REMOTE_ADDR"] = "10.0.0.2"
        return guarded(environ, start_response)

    response = Client(from_balancer).request("/", headers={"X-Forwarded-For": "198.51.100.7"})
    ticket = json.loads((tmp_path / f"{response.header('X-Ticket-ID')}.json").read_text())
    assert ticket["node"] == "node2" and ticket["request"]["client"] == "198.51.100.7"
    assert ticket["version"] == "2026.12.5"


def _from(address: str, app):
    """``app`` as reached from ``address`` (the TCP peer the server would see)."""

    def reached(environ, start_response):
        environ["REMOTE_ADDR"] = address
        return app(environ, start_response)

    return reached


def _page(environ, start_response):
    """A dynamic page that fails at /fail and says who the client is otherwise."""
    if environ["PATH_INFO"] == "/fail":
        raise ValueError("boom")
    body = f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']} ".encode() * 200
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body]


def test_the_front_end_example(tmp_path):
    code = snippet(
        "deadline=25, server_timeout=30", {"file:///srv/shop/errors": f"file://{tmp_path}"}
    )
    application = run(code, app=_page)["application"]
    balancer = Client(_from("10.0.1.2", application))
    forwarded = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https",
                 "Accept-Encoding": "gzip", "X-Request-ID": "req-from-haproxy"}  # fmt: skip
    page = balancer.request("/", headers=forwarded)
    assert (
        page.header("Content-Encoding") == "gzip"
        and page.header("X-Request-ID") == "req-from-haproxy"
    )
    assert gzip.decompress(page.body).startswith(b"198.51.100.7 https ")
    spoofed = Client(_from("203.0.113.9", application)).request("/", headers=forwarded)
    assert gzip.decompress(spoofed.body).startswith(b"203.0.113.9 http ")  # not believed
    assert spoofed.header("X-Request-ID") != "req-from-haproxy"
    failed = balancer.request("/fail", headers=forwarded)
    ticket = json.loads((tmp_path / f"{failed.header('X-Ticket-ID')}.json").read_text())
    assert failed.status == 500 and ticket["request_id"] == "req-from-haproxy"
    assert ticket["request"]["client"] == "198.51.100.7"


def test_the_logging_and_deadline_examples(capfd):
    """The dictConfig block (in a process of its own: it replaces every handler) formats the
    request id of a record and writes the access line; the deadline block answers in time."""
    config = snippet('"()": "scalekit.frontend.RequestIdFilter"')
    driver = """
from scalekit.frontend import FrontendMiddleware
from tests.wsgi import Client

def view(environ, start_response):
    logging.getLogger("app.views").warning("signed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

Client(FrontendMiddleware(view)).request("/sign", headers={"X-Request-ID": "req-readme"})
logging.getLogger("app.cron").info("idle")
"""
    done = subprocess.run([sys.executable, "-c", config + driver], capture_output=True,
                          text=True, timeout=60, check=False, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [line.split(" ", 2)[2] for line in done.stderr.splitlines()]  # after asctime
    assert records == ["WARNING app.views [req-readme] signed", "INFO app.cron [-] idle"]
    [access] = [json.loads(line) for line in done.stdout.splitlines()]
    assert access["id"] == "req-readme" and access["path"] == "/sign"
    assert access["status"] == 200 and access["level"] == "WARNING"

    def slow_query():
        while True:  # Python code: interrupted in any thread
            pass

    def partial_page(start_response, seconds_left):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"partial, {seconds_left:.1f} s left".encode()]

    from scalekit.frontend import FrontendMiddleware

    code = snippet("except DeadlineExceeded:")
    report = run(code, slow_query=slow_query, partial_page=partial_page)["report"]
    answers = []
    app = FrontendMiddleware(report, deadline=0.3, grace=2)
    thread = threading.Thread(target=lambda: answers.append(Client(app).request("/report")))
    thread.start()
    thread.join(10)
    [answer] = answers
    assert answer.status == 200 and answer.text.startswith("partial, ")
    assert 0 < float(answer.text.split()[1]) <= 2.0


def _code_lines(text: str) -> list[str]:
    """``text``'s lines without comments and whitespace, the empty ones left out."""
    lines = (re.sub(r"\s+", "", line.split("#", 1)[0]) for line in text.splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize(
    ("marker", "path"),
    [("# examples/gunicorn.conf.py (excerpt)", "examples/gunicorn.conf.py"),
     ("# examples/app/wsgi.py (excerpt)", "examples/app/wsgi.py")],
)  # fmt: skip
def test_the_deploy_excerpts_are_in_the_example_files(marker, path):
    shipped = "".join(_code_lines((ROOT / path).read_text()))
    for line in _code_lines(snippet(marker)):
        assert line in shipped, f"README's excerpt of {path} says {line!r}, the file does not"


ROOT = README.parent
TASKS_SECRET = "tasks secret of the readme tests, 32+ bytes"


@pytest.fixture
def shop(tmp_path, redis_url, monkeypatch) -> Iterator[dict]:
    """The tasks example written as the package ``shop`` (``shop/tasks.py``) under
    ``tmp_path``, importable, on a fresh app of the test Redis; its names."""
    from scalekit.tasks import facade
    from scalekit.testing import fresh_app_name

    monkeypatch.setattr(facade, "_default", [])  # default=True replaces it for this test only
    monkeypatch.setenv("SCALEKIT_TASKS_SECRET", TASKS_SECRET)
    app, receipts = fresh_app_name(), tmp_path / "receipts"
    receipts.mkdir()
    code = snippet("def write_receipt(", {
        "redis://cache:6379/0": redis_url, 'app_name="shop"': f'app_name="{app}"',
        "/srv/app/receipts": str(receipts),
    })  # fmt: skip
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "tasks.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("shop.tasks")
    yield {"app": app, "tasks": module.tasks, "module": module, "folder": tmp_path,
           "receipts": receipts, "url": redis_url}  # fmt: skip
    module.tasks.close()
    for name in [name for name in sys.modules if name == "shop" or name.startswith("shop.")]:
        del sys.modules[name]


def burst_worker(shop: dict) -> subprocess.CompletedProcess:
    """``scalekit tasks --app APP worker --burst``, as the README's shell line runs it."""
    env = {**os.environ, "PYTHONPATH": f"{shop['folder']}{os.pathsep}{ROOT}",
           "SCALEKIT_TASKS": shop["url"], "SCALEKIT_TASKS_SECRET": TASKS_SECRET}  # fmt: skip
    command = [sys.executable, "-m", "scalekit", "tasks", "--app", shop["app"], "worker", "--burst"]
    done = subprocess.run(command, check=False, cwd=shop["folder"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_the_smallest_tasks_example_runs_on_a_worker_process(shop):
    response = Client(shop["module"].checkout).request("/", method="POST")
    assert response.status == 202
    task_id = response.text
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)
    assert shop["tasks"].engine.find(task_id).state == "waiting"
    assert not (shop["receipts"] / "42.txt").exists()  # deferred, not run in the view
    burst_worker(shop)
    receipt = (shop["receipts"] / "42.txt").read_text()
    assert receipt == "Thank you, ann@example.com\n"
    assert shop["tasks"].engine.find(task_id) is None  # acknowledged: deleted
    assert shop["tasks"].engine.counts() == {
        "default": {"waiting": 0, "delayed": 0, "running": 0, "dead": 0}
    }


def define_orders(dal) -> None:
    from pydal import Field

    dal.define_table("orders", Field("email"))


def test_the_transactional_tasks_example_enqueues_only_what_commits(shop, monkeypatch):
    from scalekit import db as scalekit_db
    from scalekit.tasks.worker import ACKED, execute

    monkeypatch.chdir(shop["folder"])  # folder="databases"
    (shop["folder"] / "databases").mkdir()
    database = f"sqlite://{shop['folder']}/shop.sqlite"
    code = snippet("_transactional=True)", {"postgres://app:pw@db1/shop": database})
    namespace = run(code, define_tables=define_orders)
    response = Client(namespace["application"]).request("/", method="POST")
    assert response.status == 303 and response.header("Location") == "/orders/1"
    engine = shop["tasks"].engine
    [claim] = engine.claim(["default"], "readme-test")  # relayed right after the commit
    assert execute(shop["tasks"], claim) == ACKED
    assert (shop["receipts"] / "1.txt").read_text() == "Thank you, ann@example.com\n"

    def order_then_fail(environ, start_response):  # the README's view, then a failure
        namespace["order"](environ, start_response)
        raise RuntimeError("after the defer")

    failing = scalekit_db.DBMiddleware(order_then_fail, namespace["replicas"], define=define_orders)
    with pytest.raises(RuntimeError, match="after the defer"):
        Client(failing).request("/", method="POST")
    assert engine.claim(["default"], "readme-test") == []  # no task for the rollback
    from scalekit.tasks.outbox import relay

    assert relay(engine, database, app=shop["app"], min_age=0) == 0  # and no row left


def test_the_periodic_tasks_example_schedules_each_period_once(shop, monkeypatch):
    from scalekit.tasks.periodic import Scheduler

    (shop["folder"] / "shop" / "periodic.py").write_text(snippet("tasks.schedule.add(cleanup"))
    importlib.import_module("shop.periodic")  # registers the entries

    tasks = shop["tasks"]
    assert [entry.name for entry in tasks.schedule] == [
        "shop.periodic:refresh_rates", "weekday-report", "shop.periodic:morning_mail",
        "shop.periodic:cleanup",
    ]  # fmt: skip
    monday = datetime.datetime(2030, 6, 3, 7, 31, tzinfo=datetime.timezone.utc).timestamp()
    ids = Scheduler(tasks).tick(now=monday)  # 07:30, 02:30 (a Monday), 05:00 (07:00 Paris), 00:00
    assert len(ids) == 4
    found = [tasks.engine.find(task_id) for task_id in ids]
    assert [(info.queue, info.name) for info in found] == [
        ("default", f"periodic:shop.periodic:refresh_rates:{int(monday) - 60}"),
        ("reports", f"periodic:weekday-report:{int(monday) - 5 * 3600 - 60}"),
        ("default", f"periodic:shop.periodic:morning_mail:{int(monday) - 2 * 3600 - 31 * 60}"),
        ("default", f"periodic:shop.periodic:cleanup:{int(monday) - 7 * 3600 - 31 * 60}"),
    ]
    report = tasks.decode(found[1].payload)
    assert (report.args, report.kwargs) == (("sales",), {"fmt": "pdf"})
    assert Scheduler(tasks).tick(now=monday + 60) == []  # another scheduler: the lease is held


def test_the_failure_exceptions_example_steers_the_retries():
    import urllib.error
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from scalekit.tasks import PermanentTaskFailure, SingularTaskFailure

    class Hook(BaseHTTPRequestHandler):  # answers POST /<status> with that status
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(int(self.path.strip("/")))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        notify = run(snippet("def notify(url, body)"))["notify"]
        base = f"http://127.0.0.1:{server.server_port}"
        notify(f"{base}/200", b"ok")  # returns: the task is acknowledged
        with pytest.raises(PermanentTaskFailure, match="is gone"):
            notify(f"{base}/410", b"x")
        with pytest.raises(SingularTaskFailure, match="busy"):
            notify(f"{base}/503", b"x")
        with pytest.raises(urllib.error.HTTPError):
            notify(f"{base}/500", b"x")
    finally:
        server.shutdown()
        server.server_close()


def test_the_task_viewer_example(shop):
    admin = Client(run(snippet("admin = TaskViewer("), TOKEN="task viewer token")["admin"])
    assert admin.get("/").status == 403  # 127.0.0.1 is not in 10.0.0.0/8
    shop["tasks"].defer(shop["module"].write_receipt, 7, to="bo")
    page = admin.get("/queue/default", headers={"Authorization": "Bearer task viewer token"})
    assert page.status == 200 and "write_receipt" in page.text


# -- Redis Sentinel and Redis Cluster ----------------------------------------------------
SENTINEL_URL = "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0"


@pytest.fixture
def on_topologies(redis_sentinel, redis_cluster):
    """``snippet`` with the README's Sentinel and Cluster URLs made the test groups'."""
    cluster_url = "redis+cluster://" + ",".join(redis_cluster)

    def snippet_here(marker: str, replace: dict[str, str] | None = None) -> str:
        code = snippet(marker, replace).replace(SENTINEL_URL, redis_sentinel.url)
        code, found = re.subn(r"redis\+cluster://n1:7000(,n\d:7000)*", cluster_url, code)
        assert found, f"the README block with {marker!r} names no Cluster"
        return code

    return snippet_here


def test_the_sentinel_and_cluster_session_examples(on_topologies):
    code = on_topologies(f'sessions.open_store("{SENTINEL_URL}"')
    stores = []
    for line in code.strip().splitlines()[:2]:  # a Sentinel store, then a Cluster one
        store = run(line, sessions=sessions)["store"]
        sid = new_session_id()
        assert store.save(sid, b"signed payload", 60, None)
        assert store.load(sid).data == b"signed payload"
        stores.append(store)
    assert [store.min_replicas for store in stores] == [0, 1]
    secret = "readme secret of 32 bytes or more!"
    namespace = run(code, sessions=sessions, app=hello, SECRET=secret)
    assert Client(namespace["app"]).get("/").text == "hello"
    for store in [*stores, namespace["store"]]:
        store.close()


def test_the_cluster_cache_example(on_topologies):
    cache = run(on_topologies("cache.ram = cache.redis"), Cache=Cache)["cache"]
    key = f"readme-{new_session_id()}"
    assert cache.ram(key, lambda: "on the Cluster", time_expire=60) == "on the Cluster"
    assert cache.redis(key, lambda: "recomputed", time_expire=60) == "on the Cluster"


def test_the_sentinel_and_cluster_tasks_examples(on_topologies):
    from scalekit.tasks import Tasks

    code = on_topologies('Tasks("redis+sentinel://', {"secret=...": f"secret={TASKS_SECRET!r}"})
    for line in code.strip().splitlines():
        tasks = run(line, Tasks=Tasks)["tasks"]
        assert isinstance(tasks.engine.counts(), dict)  # the engine answers
        tasks.close()


def test_the_open_redis_cluster_example(on_topologies):
    redis = run(on_topologies('open_redis("redis+cluster://'))["redis"]
    assert redis.call("GET", "{cart:7}:total") == b"42"
    assert redis.call("DEL", "{cart:7}:total") == 1
    redis.close()


def test_the_memcached_replicas_example(memcache_url):
    nodes = "memcache://10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211"
    store = run(snippet("?replicas=2", {nodes: memcache_url}))["store"]
    assert store.replicas == 2
    sid = new_session_id()
    assert store.save(sid, b"signed payload", 60, None)
    assert store.load(sid).data == b"signed payload"
    store.close()
