"""``scalekit tickets serve``: the viewer as a server of its own, refused without access control."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from scalekit.tickets import FolderStore
from tests.servers import free_port
from tests.tickets.conftest import spread

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-token-0123456789"
CLI = [sys.executable, "-m", "scalekit", "tickets"]


@contextlib.contextmanager
def serving(
    store: str, *args: str, token: str | None = None, stop: int = signal.SIGINT
) -> Iterator[tuple[str, list]]:
    """``tickets serve`` running as a subprocess, stopped by ``stop``; yields its URL and a
    list its output (stdout, stderr) is put in once it stopped."""
    env = {**os.environ, "SCALEKIT_TICKETS_TOKEN": token or ""}
    command = [*CLI, "--store", store, "serve", "--port", str(free_port()), *args]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    output: list = []
    try:
        line = process.stdout.readline()
        assert " at http://" in line, line + process.stderr.read()
        yield line.split(" at ")[1].split()[0], output
    finally:
        process.send_signal(stop)
        try:
            output.extend(process.communicate(timeout=10))
        finally:
            process.kill()  # a server that did not stop fails the test, and is not left behind
            process.wait()
        assert process.returncode == 0 and output[0].endswith("stopped\n"), output


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    """Status, body and headers of a GET of ``url``."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def test_serve_lets_in_the_token_only(tmp_path):
    url = f"file://{tmp_path}/errors"
    tickets = spread(FolderStore(tmp_path / "errors"))
    with serving(url, token=TOKEN) as (where, output):
        assert where.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
        status, body, _ = fetch(where)
        assert status == 403 and tickets[0]["id"] not in body
        status, body, _ = fetch(where, {"Authorization": "Bearer wrong-token"})
        assert status == 403
        status, body, _ = fetch(where, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and all(ticket["id"] in body for ticket in tickets)
        status, body, headers = fetch(f"{where}ticket/{tickets[1]['id']}?token={TOKEN}")
        assert status == 200 and "raise_key_error" in body
        cookie = headers["Set-Cookie"].split(";")[0]
        assert fetch(f"{where}summary", {"Cookie": cookie})[0] == 200
    stdout, stderr = output
    assert TOKEN not in stdout + stderr and "Traceback" not in stderr


def test_serve_lets_in_allowed_addresses(tmp_path):
    url = f"file://{tmp_path}/errors"
    [ticket, *_] = spread(FolderStore(tmp_path / "errors"))
    with serving(url, "--allow", "127.0.0.0/8") as (where, _):
        status, body, _ = fetch(f"{where}ticket/{ticket['id']}")
        assert status == 200 and ticket["id"] in body
    with serving(url, "--allow", "10.0.0.0/8") as (where, _):
        assert fetch(where)[0] == 403


def test_serve_reads_the_token_from_a_file(tmp_path):
    spread(FolderStore(tmp_path / "errors"))
    (tmp_path / "token").write_text(TOKEN + "\n")
    token_file = ("--token-file", str(tmp_path / "token"))
    with serving(f"file://{tmp_path}/errors", *token_file, stop=signal.SIGTERM) as (w, _):
        assert fetch(w)[0] == 403
        assert fetch(w, {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_serve_refuses_to_start_without_access_control(tmp_path):
    spread(FolderStore(tmp_path / "errors"))
    env = {**os.environ, "SCALEKIT_TICKETS_TOKEN": ""}
    command = [*CLI, "--store", f"file://{tmp_path}/errors", "serve", "--port", str(free_port())]
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "--allow" in done.stderr and "SCALEKIT_TICKETS_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
