"""TaskViewer: refuses who is not allowed, counts and lists the tasks of each state, shows a
dead task's traceback escaped, retries it only on a POST with its form token; and
``scalekit tasks serve`` as a process. On SQLite and Redis."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scalekit.core.errors import ConfigError
from scalekit.tasks import Tasks
from scalekit.tasks.engines.base import DEAD, DELAYED, RUNNING, WAITING
from scalekit.tasks.task import new_task_id
from scalekit.tasks.viewer import TaskViewer
from scalekit.tasks.worker import BURIED, execute
from scalekit.testing import fresh_app_name
from scalekit.wsgi.server import open_server, url_of
from tests.servers import free_port
from tests.tasks.conftest import engine_url_for
from tests.tickets.test_viewer import CHROMIUM, chromium

SECRET = "viewer-tests-secret-0123456789abcdefghij"
TOKEN = "task-viewer-token-123"
SCRIPT = "<script>alert('owned')</script>"
ROOT = Path(__file__).resolve().parents[2]


def explode(text: str) -> None:
    """The dead task: its traceback holds ``text``."""
    raise ValueError(text)


def send_mail(to: str, subject: str = "") -> None:
    """The waiting, delayed and running tasks (never run here)."""


class Mailbox:
    """A bound method's object whose ``__repr__`` fails."""

    def __init__(self, owner: str):
        self.owner = owner

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def send(self, text: str) -> None:
        """Never run here."""


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path) -> str:
    return engine_url_for(request.param, request, tmp_path)


@pytest.fixture
def tasks(url):
    made = Tasks(url, fresh_app_name(), secret=SECRET, max_attempts=1, visibility_timeout=30)
    yield made
    made.close()


@pytest.fixture
def filled(tasks) -> dict[str, str]:
    """One task in each state in queue ``mail``: {state: task id}."""
    ids = {RUNNING: tasks.defer(send_mail, "ann@example.org", _queue="mail")}
    [running] = tasks.engine.claim(["mail"], "test-worker", wait=2)
    ids[DEAD] = tasks.defer(explode, f"bad input {SCRIPT}", _queue="mail")
    [dying] = tasks.engine.claim(["mail"], "test-worker", wait=2)
    assert (running.task_id, dying.task_id) == (ids[RUNNING], ids[DEAD])
    assert execute(tasks, dying) == BURIED
    ids[WAITING] = tasks.defer(send_mail, "bob@example.org", subject="<b>hi</b>", _queue="mail")
    ids[DELAYED] = tasks.defer(send_mail, "cy@example.org", _countdown=3600, _queue="mail")
    return ids


def call(
    app, path="/", *, method="GET", remote="10.1.2.3", query="", form=None, mount="", **headers
):
    """Status, headers and text of a request to ``app``; ``form``: a POST of these fields."""
    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode()
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": mount,
        "REMOTE_ADDR": remote, "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded",
    }  # fmt: skip
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    started = []
    text = b"".join(
        app(environ, lambda status, hdrs, exc_info=None: started.extend([status, hdrs]))
    )
    return int(started[0].split()[0]), dict(started[1]), text.decode()


def bearer(app, path="/", **options):
    return call(app, path, authorization=f"Bearer {TOKEN}", **options)


def form_token(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text)[1]


def counted(app) -> list[int]:
    """The numbers of the ``mail`` row on the first page: waiting, delayed, running, dead."""
    status, _, text = bearer(app)
    assert status == 200
    row = re.search(r'href="/queue/mail">mail</a></td>(.*?)</tr>', text)[1]
    return [int(n) for n in re.findall(r"<td>(\d+)</td>", row)]


def test_it_needs_an_address_or_a_token(tasks):
    with pytest.raises(ConfigError, match="TaskViewer needs allowed"):
        TaskViewer(tasks)
    with pytest.raises(ConfigError, match="not-an-address"):
        TaskViewer(tasks, allowed=["not-an-address"])


def test_access_needs_the_token_or_an_allowed_address(tasks, filled):
    viewer = TaskViewer(tasks, allowed=["192.168.5.0/24"], token=TOKEN)
    for path in ("/", "/queue/mail", f"/task/mail/{filled[DEAD]}"):
        for refused in (
            call(viewer, path),
            call(viewer, path, authorization="Bearer wrong"),
            call(viewer, path, query="token=wrong"),
            call(viewer, path, remote=""),
        ):
            assert refused[0] == 403 and "send_mail" not in refused[2]
            assert "ann@example.org" not in refused[2] and "mail" not in refused[2]
        assert bearer(viewer, path)[0] == 200
        assert call(viewer, path, remote="192.168.5.9")[0] == 200
        status, headers, _ = call(viewer, path, query=f"token={TOKEN}")
        cookie = headers["Set-Cookie"].split(";")[0]
        assert status == 200 and cookie.startswith("scalekit_tasks=") and TOKEN not in cookie
        assert call(viewer, path, cookie=cookie)[0] == 200


def test_counts_and_the_tasks_of_each_state_are_shown(tasks, filled):
    viewer = TaskViewer(tasks, token=TOKEN)
    assert counted(viewer) == [1, 1, 1, 1]  # waiting, delayed, running, dead
    status, headers, text = bearer(viewer, "/queue/mail")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
    for state in ("Running", "Delayed", "Waiting", "Dead"):
        assert f"<h2>{state}: 1</h2>" in text
    for task_id in filled.values():
        assert f'href="/task/mail/{task_id}"' in text
    assert "tests.tasks.test_viewer:send_mail(&#x27;bob@example.org&#x27;" in text
    assert "subject=&#x27;&lt;b&gt;hi&lt;/b&gt;&#x27;" in text and "<b>hi" not in text
    assert "ann@example.org" in text and "cy@example.org" in text  # arguments are shown
    assert text.count('action="/retry/mail/') == 1  # the dead task only
    assert bearer(viewer, "/queue/nothing-here")[0] == 200
    assert bearer(viewer, "/queue/bad queue")[0] == 404
    assert bearer(viewer, f"/task/mail/{new_task_id()}")[0] == 404
    assert bearer(viewer, "/task/mail/../../etc")[0] == 404


def test_a_dead_tasks_traceback_is_shown_escaped_and_inert(tasks, filled):
    viewer = TaskViewer(tasks, token=TOKEN)
    status, headers, text = bearer(viewer, f"/task/mail/{filled[DEAD]}")
    assert status == 200 and "Traceback (most recent call last)" in text
    assert "ValueError: bad input &lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in text
    assert "<script" not in text
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'") and "script-src" not in policy
    assert "form-action 'self'" in policy
    assert "&lt;script&gt;" in bearer(viewer, "/queue/mail")[2]  # its last line, listed


def test_retry_needs_a_post_with_the_viewers_form_token(tasks, filled):
    viewer = TaskViewer(tasks, token=TOKEN)
    dead = filled[DEAD]
    page = bearer(viewer, f"/task/mail/{dead}")[2]
    token = form_token(page)
    assert TOKEN not in page
    assert bearer(viewer, f"/retry/mail/{dead}")[0] == 405  # a GET changes nothing
    assert bearer(viewer, f"/retry/mail/{dead}", query=f"csrf={token}")[0] == 405
    assert bearer(viewer, f"/retry/mail/{dead}", method="POST")[0] == 403  # no form token
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert bearer(viewer, f"/retry/mail/{dead}", method="POST", form={"csrf": forged})[0] == 403
    other = TaskViewer(tasks, token="another-token-456")
    elsewhere = form_token(call(other, "/queue/mail", authorization="Bearer another-token-456")[2])
    assert bearer(viewer, f"/retry/mail/{dead}", method="POST", form={"csrf": elsewhere})[0] == 403
    assert counted(viewer) == [1, 1, 1, 1] and tasks.engine.find(dead).state == DEAD
    status, headers, _ = bearer(viewer, f"/retry/mail/{dead}", method="POST", form={"csrf": token})
    assert status == 303 and headers["Location"] == "/queue/mail"
    assert counted(viewer) == [2, 1, 1, 0]
    revived = tasks.engine.find(dead)
    assert revived.state == WAITING and tasks.decode(revived.payload).attempts == 0
    again = bearer(viewer, f"/retry/mail/{dead}", method="POST", form={"csrf": token})
    assert again[0] == 409 and "no longer dead" in again[2]
    running = bearer(viewer, f"/retry/mail/{filled[RUNNING]}", method="POST", form={"csrf": token})
    assert running[0] == 409 and tasks.engine.find(filled[RUNNING]).state == RUNNING


def test_purge_of_the_dead_tasks_is_a_button_only_when_enabled(tasks, filled):
    kept = TaskViewer(tasks, token=TOKEN)
    token = form_token(bearer(kept, "/queue/mail")[2])
    assert "/purge/" not in bearer(kept, "/queue/mail")[2]
    assert bearer(kept, "/purge/mail", method="POST", form={"csrf": token})[0] == 404
    viewer = TaskViewer(tasks, token=TOKEN, purge=True)
    page = bearer(viewer, "/queue/mail")[2]
    assert 'action="/purge/mail"' in page
    assert bearer(viewer, "/purge/mail")[0] == 405
    assert bearer(viewer, "/purge/mail", method="POST")[0] == 403
    status = bearer(viewer, "/purge/mail", method="POST", form={"csrf": form_token(page)})[0]
    assert status == 303 and counted(viewer) == [1, 1, 1, 0]


def test_links_forms_cookie_and_redirects_keep_the_mount_point(tasks, filled):
    viewer = TaskViewer(tasks, token=TOKEN)
    status, headers, text = call(viewer, "/", query=f"token={TOKEN}", mount="/admin/tasks")
    assert status == 200 and "Path=/admin/tasks" in headers["Set-Cookie"]
    assert 'href="/admin/tasks/queue/mail"' in text and TOKEN not in text
    text = bearer(viewer, "/queue/mail", mount="/admin/tasks")[2]
    assert f'action="/admin/tasks/retry/mail/{filled[DEAD]}"' in text
    assert f'href="/admin/tasks/task/mail/{filled[DEAD]}"' in text
    form = {"csrf": form_token(text)}
    path = f"/retry/mail/{filled[DEAD]}"
    done = bearer(viewer, path, method="POST", form=form, mount="/admin/tasks")
    assert done[0] == 303 and done[1]["Location"] == "/admin/tasks/queue/mail"


def test_an_allowed_address_browses_and_retries_without_a_token(tasks, filled):
    viewer = TaskViewer(tasks, allowed=["127.0.0.1"])
    assert call(viewer, remote="127.0.0.2", query="token=")[0] == 403
    page = call(viewer, f"/task/mail/{filled[DEAD]}", remote="127.0.0.1")
    assert page[0] == 200 and "Set-Cookie" not in page[1]
    form = {"csrf": form_token(page[2])}
    refused = call(
        viewer, f"/retry/mail/{filled[DEAD]}", method="POST", remote="10.0.0.1", form=form
    )
    assert refused[0] == 403 and tasks.engine.find(filled[DEAD]).state == DEAD
    done = call(viewer, f"/retry/mail/{filled[DEAD]}", method="POST", remote="127.0.0.1", form=form)
    assert done[0] == 303 and tasks.engine.find(filled[DEAD]).state == WAITING


def test_an_unreadable_payload_and_an_engine_down_are_clean_pages(tasks, url):
    tasks.engine.enqueue("mail", task_id := new_task_id(), b"\x01jnot signed at all" + b"x" * 40)
    viewer = TaskViewer(tasks, token=TOKEN)
    assert "(unreadable payload)" in bearer(viewer, "/queue/mail")[2]
    status, _, text = bearer(viewer, f"/task/mail/{task_id}")
    assert status == 200 and "cannot be read" in text and "Traceback" not in text
    down = Tasks("redis://127.0.0.1:1/0", fresh_app_name(), secret=SECRET)
    status, _, text = bearer(TaskViewer(down, token=TOKEN))
    assert status == 503 and "127.0.0.1:1" in text and "Traceback" not in text


def test_an_object_that_cannot_be_shown_does_not_take_the_page_down(tasks):
    task_id = tasks.defer(Mailbox("ann").send, "hello", _queue="mail")
    viewer = TaskViewer(tasks, token=TOKEN)
    status, _, text = bearer(viewer, f"/task/mail/{task_id}")
    assert status == 200 and "&lt;Mailbox that cannot be shown&gt;" in text
    assert "tests.tasks.test_viewer:Mailbox.send" in bearer(viewer, "/queue/mail")[2]


def test_a_browser_renders_the_dead_task_and_its_script_stays_text(tmp_path):
    assert os.path.exists(CHROMIUM), "headless Chromium is missing: `make test` installs it"
    tasks = Tasks(f"sqlite://{tmp_path}/tasks.sqlite", fresh_app_name(), secret=SECRET,
                  max_attempts=1)  # fmt: skip
    attack = "<script>document.title='owned'</script><img src=x onerror=\"document.title='img'\">"
    task_id = tasks.defer(explode, attack)
    assert execute(tasks, tasks.engine.claim(["default"], "test", wait=2)[0]) == BURIED
    viewer = TaskViewer(tasks, token=TOKEN)
    log = logging.getLogger("tests.viewer")
    with open_server(viewer, "127.0.0.1", 0, name="tasks viewer", log=log) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            page = f"{url_of(server)}task/default/{task_id}?token={TOKEN}"
            dom = chromium(tmp_path, "--dump-dom", page).stdout
        finally:
            server.shutdown()
            thread.join()
    tasks.close()
    assert f"<title>Task {task_id}</title>" in dom and "<h2>Traceback</h2>" in dom
    assert "&lt;script&gt;document.title='owned'&lt;/script&gt;&lt;img" in dom
    assert "<script" not in dom and "<img" not in dom and "owned</title>" not in dom


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def serve_command(tasks, url: str, *args: str) -> list[str]:
    port = str(free_port())
    store = ["--store", url, "--app", tasks.app_name]
    return [sys.executable, "-m", "scalekit", "tasks", *store, "serve", "--port", port, *args]


def test_scalekit_tasks_serve(tasks, url, filled):
    env = {**os.environ, "SCALEKIT_TASKS_SECRET": SECRET, "SCALEKIT_TASKS_TOKEN": TOKEN}
    process = subprocess.Popen(serve_command(tasks, url), cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        line = process.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + process.stderr.read()
        where = line.split(" at ")[1].split()[0]
        assert fetch(where)[0] == 403
        status, body, headers = fetch(f"{where}queue/mail?token={TOKEN}")
        assert status == 200 and "<h2>Dead: 1</h2>" in body and filled[DEAD] in body
        cookie = headers["Set-Cookie"].split(";")[0]
        request = urllib.request.Request(
            f"{where}retry/mail/{filled[DEAD]}",
            data=f"csrf={form_token(body)}".encode(),
            headers={"Cookie": cookie},
        )
        with urllib.request.urlopen(request) as answer:  # follows the 303 to the queue
            assert answer.status == 200 and "<h2>Dead: 0</h2>" in answer.read().decode()
        assert tasks.engine.find(filled[DEAD]).state == WAITING
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=10)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == 0 and stdout.endswith("stopped\n"), (stdout, stderr)
    assert TOKEN not in stdout + stderr and "Traceback" not in stderr


def test_scalekit_tasks_serve_refuses_to_start_without_access_control(tasks, url):
    env = {**os.environ, "SCALEKIT_TASKS_SECRET": SECRET, "SCALEKIT_TASKS_TOKEN": ""}
    done = subprocess.run(serve_command(tasks, url), check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert "--allow" in done.stderr and "SCALEKIT_TASKS_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
