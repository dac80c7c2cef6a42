"""Uploads in, under a real gunicorn (one sync worker): a 50 MB POST over a 1 MB limit is
answered 413 without the server reading it (announced, or chunked and counted, also when
Flask's own parser reads it); a form under the limit is stored; a malformed form, or one cut
short by a client that stops sending, is answered 400 by ``BodyLimit`` and leaves nothing in
the store."""

from __future__ import annotations

import io
import json
import os
import select
import socket
from collections.abc import Iterator

import pytest
from flask import Flask, request

from scalekit.uploads import open_store
from scalekit.uploads.receive import BodyLimit, receive
from tests.gunicorn import gunicorn
from tests.uploads.test_receive import BOUNDARY, MB, file_part, form_environ, stored


def _gunicorn_view(environ, start_response):
    """Stores the picture of a form into the store named by ``UPLOADS_TEST_STORE``; a bad
    form is left to ``BodyLimit`` (a 400)."""
    store = open_store(os.environ["UPLOADS_TEST_STORE"])
    try:
        received = receive(environ, store, max_size=MB, table="guest", field="picture")
    finally:
        store.close()
    answer = json.dumps(received).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(answer)))])  # fmt: skip
    return [answer]


gunicorn_app = BodyLimit(_gunicorn_view, MB)
_flask_app = Flask(__name__)


@_flask_app.post("/")
def _flask_upload():
    """Flask's own parser reads the form: werkzeug stops silently at the limit."""
    picture = request.files.get("picture")
    return ("no picture", 400) if picture is None else (f"{len(picture.read())}", 200)


flask_gunicorn_app = BodyLimit(_flask_app.wsgi_app, MB)


@pytest.fixture
def folder_store(tmp_path):
    """The folder the server stores into, and the test reads."""
    opened = open_store(f"file://{tmp_path}/uploads")
    yield opened
    opened.close()


@pytest.fixture
def served(folder_store):
    env = {"UPLOADS_TEST_STORE": folder_store.url}
    app = "tests.uploads.test_receive_served:gunicorn_app"
    with gunicorn(app, env, workers=1, threads=1) as port:
        yield port


def post(port: int, body: Iterator[bytes], headers: dict[str, str]) -> tuple[int, int, bytes]:
    """POST ``body`` to the server, stopping as soon as it answers; the status, how many
    bytes of the body went out, and the response body."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(f"POST / HTTP/1.1\r\nHost: test\r\n{head}\r\n".encode())
        sent = _send_until_answered(sock, body)
        response = _read_response(sock)
    status = int(response.split(b" ", 2)[1])
    return status, sent, response.partition(b"\r\n\r\n")[2]


def _send_until_answered(sock: socket.socket, body: Iterator[bytes]) -> int:
    """Send ``body`` until the server answers or closes; how many bytes went out."""
    sent = 0
    for chunk in body:
        view = memoryview(chunk)
        while view:
            readable, writable, _ = select.select([sock], [sock], [], 20)
            if readable:
                return sent
            assert writable, "the server neither reads nor answers"
            try:
                count = sock.send(view)
            except (BrokenPipeError, ConnectionResetError):
                return sent
            sent += count
            view = view[count:]
    return sent


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def _blocks(total: int, chunked: bool) -> Iterator[bytes]:
    block = b"x" * (1 << 16)
    for _ in range(total // len(block)):
        yield b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    if chunked:
        yield b"0\r\n\r\n"


def test_gunicorn_refuses_an_announced_50mb_post_without_reading_it(served, folder_store):
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
               "Content-Length": str(50 * MB)}  # fmt: skip
    status, sent, body = post(served, _blocks(50 * MB, chunked=False), headers)
    assert status == 413 and b"limit of 1048576 bytes" in body
    assert sent < 20 * MB  # what socket buffers took before the answer came
    assert stored(folder_store) == {}


def test_gunicorn_stops_a_chunked_50mb_post_at_the_limit(served, folder_store):
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
               "Transfer-Encoding": "chunked"}  # fmt: skip
    head = file_part("picture", "big.jpg")
    body = iter([b"%x\r\n%s\r\n" % (len(head), head), *_blocks(50 * MB, chunked=True)])
    status, sent, _ = post(served, body, headers)
    assert status == 413 and sent < 20 * MB
    assert stored(folder_store) == {}


def test_gunicorn_flasks_parser_stopped_at_the_limit_gets_413():
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
               "Transfer-Encoding": "chunked"}  # fmt: skip
    head = file_part("picture", "big.jpg")
    with gunicorn("tests.uploads.test_receive_served:flask_gunicorn_app", {}, workers=1,
                  threads=1) as port:  # fmt: skip
        body = iter([b"%x\r\n%s\r\n" % (len(head), head), *_blocks(50 * MB, chunked=True)])
        status, sent, answer = post(port, body, headers)
    assert status == 413 and b"limit of 1048576 bytes" in answer and sent < 20 * MB


def test_gunicorn_stores_a_form_under_the_limit(served, folder_store):
    data = os.urandom(MB // 2)
    environ = form_environ({"picture": (io.BytesIO(data), "small.png")})
    body = environ["wsgi.input"].read()
    headers = {"Content-Type": environ["CONTENT_TYPE"], "Content-Length": str(len(body))}
    status, _, answer = post(served, iter([body]), headers)
    assert status == 200
    name = json.loads(answer)["picture"]
    assert stored(folder_store) == {name: data}


FIRST = file_part("picture", "first.png") + b"a whole first file\r\n"
BAD_FORM = b"Bad request: the upload's body is malformed or incomplete.\n"


def test_gunicorn_answers_400_to_a_form_cut_short_and_keeps_nothing(served, folder_store):
    second = file_part("picture2", "second.png") + b"y" * 100_000
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
               "Content-Length": str(len(FIRST) + len(second) + 500_000)}  # fmt: skip
    with socket.create_connection(("127.0.0.1", served), timeout=20) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(f"POST / HTTP/1.1\r\nHost: test\r\n{head}\r\n".encode() + FIRST + second)
        sock.shutdown(socket.SHUT_WR)  # the client stops sending, still listens
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 400 ") and response.endswith(b"\r\n\r\n" + BAD_FORM)
    assert stored(folder_store) == {}
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "0"}
    assert post(served, iter([]), urlencoded)[::2] == (400, BAD_FORM)


def test_gunicorn_answers_400_to_a_malformed_form_and_keeps_nothing(served, folder_store):
    body = FIRST + f"--{BOUNDARY}\r\n<b>no header</b>\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
               "Content-Length": str(len(body))}  # fmt: skip
    assert post(served, iter([body]), headers)[::2] == (400, BAD_FORM)
    assert stored(folder_store) == {}
