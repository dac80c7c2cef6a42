"""Uploads in: ``receive`` streams a multipart form (or a raw body) into every store, the
limit passed, a malformed body or a client gone leaves nothing stored; ``BodyLimit`` answers
413 before reading an announced oversize body, and while reading one of unknown length,
whatever the app's framework (Flask's parser) makes of it; a malformed or cut-short body
(``BadUpload``) is a 400, a programmer's error still raises. Under a real gunicorn:
test_receive_served."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
from flask import Flask, request
from werkzeug.test import EnvironBuilder

from scalekit.core.errors import InvalidArgument
from scalekit.testing.uploads import Watermark
from scalekit.uploads import (
    BadUpload,
    UploadTooLarge,
    open_store,
    original_filename,
    parse_name,
)
from scalekit.uploads.receive import BodyLimit, limit_body, receive
from tests.wsgi import Client

MB = 1 << 20
BOUNDARY = "----scalekitBoundary7MA4YWxk"


@pytest.fixture
def store(make_store):
    """An empty store of each backend (tests/uploads/conftest.py)."""
    return make_store()


@pytest.fixture
def folder_store(tmp_path):
    opened = open_store(f"file://{tmp_path}/uploads")
    yield opened
    opened.close()


def stored(store) -> dict[str, bytes]:
    return {info.name: b"".join(store.read(info.name)) for info in store.names()}


def form_environ(data: dict, **extra) -> dict:
    """The environ of a POST of ``data`` as multipart/form-data (werkzeug's encoder):
    ``{"field": (file, "name.png")}`` for a file, a str for a text field."""
    environ = EnvironBuilder(method="POST", data=data).get_environ()
    environ.update(extra)
    return environ


class Body:
    """A request body read as a server hands it over: ``head``, then ``size`` bytes of a
    deterministic payload made as they are read, then ``tail``; ``stop_after``: the client
    goes away (reads return nothing) after that many bytes."""

    def __init__(self, head: bytes, size: int, tail: bytes, stop_after: int | None = None):
        self._pieces = self._make(head, size, tail)
        self._pending = b""
        self.left = stop_after
        self.sent = 0
        self.size = len(head) + size + len(tail)
        self.sha256 = hashlib.sha256()

    def _make(self, head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
        yield head
        block = hashlib.sha256(b"payload").digest() * 2048  # 64 KiB
        for start in range(0, size, len(block)):
            piece = block[: size - start]
            self.sha256.update(piece)
            yield piece
        yield tail

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            self._pending = next(self._pieces, b"")
            if not self._pending:
                return b""
        size = len(self._pending) if size < 0 else size
        if self.left is not None:
            size = min(size, self.left)
            self.left -= size
        data, self._pending = self._pending[:size], self._pending[size:]
        self.sent += len(data)
        return data


def file_part(name: str, filename: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"'
        f"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()


def streamed_form(size: int, *, length: bool = True, stop_after: int | None = None,
                  before: bytes = b"") -> dict:  # fmt: skip
    """A POST environ whose body is a form with a text field and one file of ``size``
    bytes (after the parts ``before``), read lazily; without ``CONTENT_LENGTH`` (chunked)
    unless ``length``."""
    head = (
        before
        + (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nholiday\r\n'
        ).encode()
        + file_part("picture", "beach.jpg")
    )
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    body = Body(head, size, tail, stop_after)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.input": body,
               "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}"}  # fmt: skip
    if length:
        environ["CONTENT_LENGTH"] = str(body.size)
    return environ


# -- receive ---------------------------------------------------------------------------


def test_receive_streams_the_files_of_a_form_into_the_store(store):
    photo, notes = os.urandom(3 * MB + 5), b"plain text notes"
    environ = form_environ({"title": "été", "picture": (io.BytesIO(photo), "../../x é.jpg"),
                            "notes": (io.BytesIO(notes), "notes.txt")})  # fmt: skip
    received = receive(environ, store, max_size=10 * MB, fields=["picture", "notes"],
                       table="guest")  # fmt: skip
    assert received.form == {"title": "été"}
    assert set(received) == {"picture", "notes"}
    assert parse_name(received["picture"])[:2] == ("guest", "picture")
    assert original_filename(received["picture"]) == "x_é.jpg"
    assert stored(store) == {received["picture"]: photo, received["notes"]: notes}


def test_a_body_past_the_limit_leaves_nothing_stored(store):
    environ = streamed_form(3 * MB, length=False)  # chunked: only reading finds it out
    with pytest.raises(UploadTooLarge):
        receive(environ, store, max_size=2 * MB, table="guest", field="picture")
    assert environ["wsgi.input"].sent <= 2 * MB + (1 << 16)  # not read to its end
    assert stored(store) == {}


def test_a_client_gone_mid_file_leaves_nothing_stored(store):
    first = file_part("a", "a.txt") + b"complete file\r\n"
    environ = streamed_form(3 * MB, stop_after=2 * MB, before=first)
    with pytest.raises(BadUpload, match="short of its length"):
        receive(environ, store, max_size=10 * MB, fields=["a", "picture"], table="guest")
    assert stored(store) == {}  # the complete first file removed too


def test_a_large_upload_is_streamed_not_held(folder_store):
    environ = streamed_form(64 * MB, length=False)
    with Watermark() as memory:
        received = receive(environ, folder_store, max_size=100 * MB, table="guest",
                           field="picture")  # fmt: skip
    digest = hashlib.sha256()
    for chunk in folder_store.read(received["picture"]):
        digest.update(chunk)
    assert digest.hexdigest() == environ["wsgi.input"].sha256.hexdigest()
    assert received.form == {"title": "holiday"}
    assert memory.growth < 16 * MB


class Untouchable:
    """A request body that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


def test_a_body_announced_over_the_limit_is_refused_unread(folder_store):
    environ = streamed_form(10, length=True)
    environ.update(CONTENT_LENGTH=str(50 * MB), **{"wsgi.input": Untouchable()})
    with pytest.raises(UploadTooLarge):
        receive(environ, folder_store, max_size=MB, table="guest", field="picture")


def test_a_raw_body_is_one_upload_named_by_its_content_disposition(folder_store):
    data = os.urandom(100_000)
    environ = {"REQUEST_METHOD": "PUT", "CONTENT_TYPE": "image/png",
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data),
               "HTTP_CONTENT_DISPOSITION": "attachment; filename=\"x.png\"; "
                                           "filename*=UTF-8''%C3%A9t%C3%A9.png"}  # fmt: skip
    received = receive(environ, folder_store, max_size=MB, table="doc", field="scan")
    assert list(received) == ["scan"] and original_filename(received["scan"]) == "été.png"
    assert stored(folder_store) == {received["scan"]: data}


def test_a_request_without_a_body_stores_nothing(folder_store):
    environ = {"REQUEST_METHOD": "PUT", "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO()}
    with pytest.raises(BadUpload, match="no body"):
        receive(environ, folder_store, max_size=MB, field="scan")
    assert stored(folder_store) == {}


def test_only_the_asked_fields_and_chosen_files_are_stored(folder_store):
    environ = form_environ({"picture": (io.BytesIO(b""), ""),  # no file chosen
                            "other": (io.BytesIO(b"not asked for"), "o.txt"),
                            "cv": (io.BytesIO(b"cv"), "cv.pdf")})  # fmt: skip
    received = receive(environ, folder_store, max_size=MB, fields=["picture", "cv"])
    assert list(received) == ["cv"] and parse_name(received["cv"])[:2] == ("upload", "cv")
    assert stored(folder_store) == {received["cv"]: b"cv"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (form_environ({"a": (io.BytesIO(b"1"), "1.txt")}, CONTENT_TYPE="multipart/form-data"),
         "malformed"),
        (form_environ({"a": (io.BytesIO(b"1"), "1.txt")},
                      CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}"), "malformed"),
        (form_environ({"a": "text"}, CONTENT_TYPE="application/x-www-form-urlencoded"),
         "holds no file"),
    ],
)  # fmt: skip
def test_a_malformed_body_is_a_bad_upload(folder_store, environ, message):
    with pytest.raises(BadUpload, match=message):
        receive(environ, folder_store, max_size=MB, field="a")
    assert stored(folder_store) == {}


def test_two_files_for_one_field_are_refused_and_nothing_is_kept(folder_store):
    body = (file_part("a", "1.txt") + b"one\r\n" + file_part("a", "2.txt") + b"two\r\n"
            + f"--{BOUNDARY}--\r\n".encode())  # fmt: skip
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
               "wsgi.input": io.BytesIO(body)}  # fmt: skip
    with pytest.raises(BadUpload, match="more than one file"):
        receive(environ, folder_store, max_size=MB, field="a")
    assert stored(folder_store) == {}


def text_form(value: bytes, content_type: str = "text/plain") -> dict:
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="t"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode() + value + (
            f"\r\n--{BOUNDARY}--\r\n").encode()  # fmt: skip
    return {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
            "wsgi.input": io.BytesIO(body)}  # fmt: skip


def test_text_fields_in_an_unknown_charset_or_too_long(folder_store):
    environ = text_form("hé".encode(), "text/plain; charset=no-such-charset")
    assert receive(environ, folder_store, max_size=MB, field="a").form == {"t": "hé"}
    with pytest.raises(UploadTooLarge, match="form field 't'"):
        receive(text_form(b"x" * 65537), folder_store, max_size=MB, field="a")


def test_the_client_never_picks_the_names_field(folder_store):
    with pytest.raises(InvalidArgument, match="field= or fields=") as raised:
        receive(form_environ({}), folder_store, max_size=MB)
    assert not isinstance(raised.value, BadUpload)  # the programmer's error, not the client's


# -- BodyLimit -------------------------------------------------------------------------


def reading_app(environ, start_response):
    """Reads the whole body, says how much."""
    data = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(data)).encode()]


def call(app, environ) -> tuple[int, bytes]:
    started = []
    result = app(environ, lambda status, headers, exc_info=None: started.append(status))
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(started[-1].split()[0]), body


def test_body_limit_refuses_an_announced_oversize_body_unread():
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": str(50 * MB),
               "wsgi.input": Untouchable()}  # fmt: skip
    status, body = call(BodyLimit(reading_app, MB), environ)
    assert status == 413 and b"limit of 1048576 bytes" in body


def test_body_limit_counts_a_chunked_body_as_the_app_reads_it():
    app = BodyLimit(reading_app, 2 * MB)
    environ = streamed_form(3 * MB, length=False)
    body = environ["wsgi.input"]
    assert call(app, environ)[0] == 413
    assert body.sent <= 2 * MB + 1
    environ = streamed_form(MB, length=False)
    size = environ["wsgi.input"].size
    assert call(app, environ) == (200, str(size).encode())


def test_whatever_flasks_parser_makes_of_it_an_oversize_body_gets_413():
    flask_app = Flask(__name__)

    @flask_app.post("/")
    def upload():
        picture = request.files.get("picture")  # werkzeug stops at the limit, silently
        return ("no picture", 400) if picture is None else ("stored", 200)

    app = BodyLimit(flask_app.wsgi_app, 2 * MB)
    environ = form_environ({"picture": (io.BytesIO(b"x" * 3 * MB), "p.png")})
    environ = {**environ, "wsgi.input_terminated": True}
    del environ["CONTENT_LENGTH"]  # as gunicorn gives a chunked body
    assert call(app, environ)[0] == 413
    small = form_environ({"picture": (io.BytesIO(b"x" * MB), "p.png")})
    assert call(app, small) == (200, b"stored")


def test_a_lower_limit_of_the_app_is_a_413_too(folder_store):
    @limit_body(10 * MB)
    def view(environ, start_response):
        received = receive(environ, folder_store, max_size=MB, field="picture")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(received).encode()]

    status, body = call(view, streamed_form(2 * MB, length=False))
    assert (status, stored(folder_store)) == (413, {}) and b"limit of 1048576 bytes" in body
    assert call(view, streamed_form(1000))[0] == 200 and len(stored(folder_store)) == 1


def test_a_streamed_answer_goes_out_as_the_app_makes_it():
    def app(environ, start_response):
        def body():
            start_response("201 Created", [("Content-Type", "text/plain")])
            yield environ["wsgi.input"].read(10)
            yield b"!"

        return body()

    assert call(BodyLimit(app, MB), streamed_form(100, length=False))[0] == 201
    assert call(BodyLimit(app, 5), streamed_form(100, length=False))[0] == 413
    response = Client(BodyLimit(reading_app, MB)).get("/")
    assert (response.status, response.body) == (200, b"0")


def test_a_lower_limit_passed_while_the_body_streams_is_a_413(folder_store):
    def app(environ, start_response):
        def body():
            received = receive(environ, folder_store, max_size=1000, field="picture")
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield json.dumps(received).encode()

        return body()

    status, body = call(BodyLimit(app, MB), streamed_form(5000, length=False))
    assert status == 413 and b"limit of 1000 bytes" in body
    assert stored(folder_store) == {}


def cut_short() -> dict:
    """A form whose client goes away mid-file, after a complete first file."""
    first = file_part("a", "a.txt") + b"complete file\r\n"
    return streamed_form(300_000, stop_after=200_000, before=first)


def malformed() -> dict:
    """A form whose second part's header is no header, after a complete first file."""
    body = (file_part("a", "a.txt") + b"complete file\r\n"
            + f"--{BOUNDARY}\r\n<script>alert(1)</script>\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
            )  # fmt: skip
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/up", "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
            "wsgi.input": io.BytesIO(body)}  # fmt: skip


@pytest.mark.parametrize("make_environ", [cut_short, malformed])
def test_body_limit_answers_a_bad_upload_400_and_nothing_is_stored(folder_store, make_environ,
                                                                    caplog):  # fmt: skip
    @limit_body(10 * MB)
    def view(environ, start_response):
        received = receive(environ, folder_store, max_size=MB, fields=["a", "picture"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(received).encode()]

    started = []
    with caplog.at_level(logging.INFO, logger="scalekit.uploads"):
        body = b"".join(view(make_environ(), lambda *args: started.append(args)))
    ((status, headers, *_),) = started
    assert status == "400 Bad Request" and stored(folder_store) == {}
    assert body == b"Bad request: the upload's body is malformed or incomplete.\n"
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert ("Cache-Control", "no-store") in headers
    assert ": 400, " in caplog.text and "POST /" in caplog.text


def test_a_bad_upload_after_the_answer_started_or_a_programmers_error_is_raised(folder_store):
    def streaming(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"storing..."
        receive(environ, folder_store, max_size=MB, field="a")

    with pytest.raises(BadUpload, match="short of its length"):
        call(BodyLimit(streaming, MB), cut_short())

    @limit_body(MB)
    def unnamed(environ, start_response):
        return receive(environ, folder_store, max_size=MB)

    with pytest.raises(InvalidArgument, match="field= or fields=") as raised:
        call(unnamed, malformed())
    assert not isinstance(raised.value, BadUpload)
    with pytest.raises(InvalidArgument, match="max_size must be a number"):
        BodyLimit(reading_app, "1 MB")
    assert stored(folder_store) == {}
