"""pydal upload fields kept in a store (``Field("image", "upload", **store.field_options())``)
on every backend: inserts from web2py's ``cgi.FieldStorage``, file objects and dicts,
``field.store`` / ``field.retrieve`` (streamed), ``autodelete`` on delete and on a replacing
update, ``authorize``, ``max_size``; records in SQLite and PostgreSQL; a py4web ``Form``."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import warnings

import pytest
from pydal import DAL, Field
from pydal.exceptions import NotAuthorizedException, NotFoundException
from werkzeug.test import EnvironBuilder

from scalekit.testing import fresh_app_name
from scalekit.testing.uploads import Watermark
from scalekit.uploads import UploadNotFound, UploadTooLarge, original_filename, parse_name
from scalekit.uploads.stores import CHUNK
from tests.wsgi import Client

with warnings.catch_warnings():  # deprecated since Python 3.11, what web2py still uses
    warnings.simplefilter("ignore", DeprecationWarning)
    import cgi  # web2py's request.vars hold cgi.FieldStorage objects


@pytest.fixture
def store(make_store):
    """An empty store of each backend (tests/uploads/conftest.py)."""
    return make_store()


@pytest.fixture
def db(tmp_path):
    """The app's own database (SQLite), where the records naming the uploads live."""
    database = DAL(f"sqlite://{tmp_path}/app.sqlite", folder=str(tmp_path))
    yield database
    database.close()


def stored(store) -> set[str]:
    return {info.name for info in store.names()}


def field_storage(data: bytes, filename: str, field: str = "image") -> cgi.FieldStorage:
    """A ``cgi.FieldStorage`` of a file part, parsed from a real multipart body, as
    web2py's ``request.vars.<field>`` holds it."""
    environ = EnvironBuilder(
        method="POST", data={field: (io.BytesIO(data), filename)}
    ).get_environ()
    form = cgi.FieldStorage(fp=environ["wsgi.input"], environ=environ)
    return form[field]


def test_an_insert_stores_a_web2py_field_storage_and_retrieve_streams_it(db, store):
    db.define_table("person", Field("image", "upload", **store.field_options()))
    data = os.urandom(CHUNK + 17)
    record = db.person.insert(image=field_storage(data, "C:\\photos\\été 🎉.png"))
    name = db.person(record).image
    assert parse_name(name)[:2] == ("person", "image")
    assert stored(store) == {name}

    filename, stream = db.person.image.retrieve(name)
    with stream:
        assert filename == "été_🎉.png"
        assert stream.read(5) == data[:5]
        assert stream.read() == data[5:]
    properties = db.person.image.retrieve_file_properties(name)
    assert properties["filename"] == filename
    local = store.local_path(name)
    assert properties["path"] == (os.path.dirname(local) if local else None)


def test_field_store_takes_files_field_storages_bytes_and_dicts(db, store, tmp_path):
    db.define_table("doc", Field("file", "upload", **store.field_options()))
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7 report")
    with open(path, "rb") as file:
        from_file = db.doc.file.store(file)  # no file name given: the file's own
    from_storage = db.doc.file.store(field_storage(b"<svg/>", "a.svg", "file"))
    from_bytes = db.doc.file.store(b"raw bytes", "notes.txt")
    record = db.doc.insert(file={"data": b"dict data", "filename": "d.csv"})
    from_dict = db.doc(record).file
    expected = {
        from_file: ("report.pdf", b"%PDF-1.7 report"),
        from_storage: ("a.svg", b"<svg/>"),
        from_bytes: ("notes.txt", b"raw bytes"),
        from_dict: ("d.csv", b"dict data"),
    }
    for name, (filename, data) in expected.items():
        assert parse_name(name)[:2] == ("doc", "file")
        got_name, stream = db.doc.file.retrieve(name)
        with stream:
            assert (got_name, stream.read()) == (filename, data)


def test_a_retrieved_upload_is_read_lazily(db, store):
    """A 24 MiB upload read through ``retrieve`` in 64 KiB reads: the process's peak memory
    grows by far less than the upload."""
    db.define_table("video", Field("clip", "upload", **store.field_options()))
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    name = db.video.clip.store(iter([block] * 384), "clip.mp4")
    expected = hashlib.sha256(block * 384).hexdigest()
    _, stream = db.video.clip.retrieve(name)
    digest = hashlib.sha256()
    with Watermark() as memory, stream:
        while piece := stream.read(1 << 16):
            digest.update(piece)
    assert digest.hexdigest() == expected
    assert memory.growth < 12 << 20


def test_autodelete_removes_the_file_of_a_deleted_or_replaced_record(db, store):
    db.define_table("person", Field("image", "upload", **store.field_options(autodelete=True)))
    first = db.person.insert(image=field_storage(b"one", "one.png"))
    second = db.person.insert(image=field_storage(b"two", "two.png"))
    old = db.person(first).image
    db(db.person.id == first).update(image=field_storage(b"new", "new.png"))
    new = db.person(first).image
    assert new != old and stored(store) == {new, db.person(second).image}

    db(db.person.id == first).update(image=new)  # the same name: the file stays
    assert new in stored(store)
    db(db.person.id > 0).delete()
    assert stored(store) == set()


def test_without_autodelete_deleting_a_record_keeps_its_file(db, store):
    db.define_table("person", Field("image", "upload", **store.field_options()))
    record = db.person.insert(image=field_storage(b"kept", "k.png"))
    name = db.person(record).image
    db(db.person.id == record).delete()
    assert stored(store) == {name}


def test_max_size_refuses_a_larger_file_and_stores_nothing(db, store):
    db.define_table("person", Field("image", "upload", **store.field_options(max_size=1000)))
    with pytest.raises(UploadTooLarge):
        db.person.insert(image=field_storage(b"x" * 1001, "big.png"))
    assert db(db.person).count() == 0 and stored(store) == set()
    assert db.person(db.person.insert(image=field_storage(b"x" * 1000, "ok.png")))


def test_retrieve_checks_the_fields_authorize_as_pydal_does(db, store):
    allowed = {"yes"}
    db.define_table("doc", Field("owner"),
                    Field("file", "upload", authorize=lambda row: row.owner in allowed,
                          **store.field_options()))  # fmt: skip
    mine = db.doc(db.doc.insert(owner="yes", file=field_storage(b"mine", "m.txt", "file"))).file
    theirs = db.doc(db.doc.insert(owner="no", file=field_storage(b"them", "t.txt", "file"))).file
    assert db.doc.file.retrieve(mine)[1].read() == b"mine"
    with pytest.raises(NotAuthorizedException):
        db.doc.file.retrieve(theirs)
    db(db.doc.owner == "yes").delete()  # no record names it any more
    with pytest.raises(NotFoundException):
        db.doc.file.retrieve(mine)


@pytest.mark.parametrize("name", ["person.image.nokey.png", "../../etc/passwd", "a" * 300])
def test_retrieving_a_missing_or_forged_name_is_not_found(db, store, name):
    db.define_table("person", Field("image", "upload", **store.field_options()))
    with pytest.raises(UploadNotFound):  # an IOError: web2py's and py4web's download 404
        db.person.image.retrieve(name)


def test_the_hooks_work_only_through_pydals_field(store):
    with pytest.raises(TypeError, match=r"Field\.store"):
        store.field_options()["custom_store"](io.BytesIO(b"x"), "x.png", None)


def test_records_in_postgresql_and_a_replacing_update(postgres_url, store):
    """The app's records in PostgreSQL: a replacing update inside a transaction removes
    the old file (autodelete) and names the new one, after the commit as before it."""
    table = f"person_{uuid.uuid4().hex[:10]}"
    database = DAL(postgres_url, folder=None)
    try:
        database.define_table(table, Field("image", "upload",
                                           **store.field_options(autodelete=True)))  # fmt: skip
        people = database[table]
        record = people.insert(image=field_storage(b"old", "old.png"))
        database.commit()
        old = people(record).image
        people(record).update_record(image=field_storage(b"new", "new.png"))
        database.commit()
        new = people(record).image
        assert parse_name(new)[:2] == (table, "image")
        assert stored(store) == {new}
        assert people.image.retrieve(new)[1].read() == b"new"
        assert old != new
    finally:
        database.rollback()
        database[table].drop()
        database.commit()
        database.close()


def test_a_py4web_form_stores_edits_and_clears_its_upload(store, tmp_path, monkeypatch):
    from py4web import DAL as Py4webDAL
    from py4web import action
    from py4web.core import bottle
    from py4web.utils.form import Form

    app_name = fresh_app_name()
    db = Py4webDAL(f"sqlite://{tmp_path}/py4web.sqlite", folder=str(tmp_path))
    db.define_table("person", Field("name"),
                    Field("image", "upload", **store.field_options(autodelete=True)))  # fmt: skip
    db.commit()

    def sign(record_id=None):
        form = Form(db.person, record_id and int(record_id), csrf_protection=False)
        return f"accepted {form.vars['id']}" if form.accepted else f"errors {form.errors}"

    monkeypatch.setattr(action, "app_name", app_name)  # what py4web's app loader sets
    view = action.uses(db)(sign)
    view.__module__ = f"apps.{app_name}.controllers"  # where py4web looks for actions
    action("sign", method=["POST"])(view)
    action("sign/<record_id>", method=["POST"])(view)

    def post(path, data):
        environ = EnvironBuilder(method="POST", path=f"/{app_name}/{path}", data=data)
        status, body = _call(bottle.default_app(), environ.get_environ())
        assert status.startswith("200"), body
        return body.decode()

    answer = post("sign", {"_formname": "person", "name": "Zoë",
                           "image": (io.BytesIO(b"first"), "zoë.png")})  # fmt: skip
    record = int(answer.removeprefix("accepted "))
    first = db.person(record).image
    assert parse_name(first)[:2] == ("person", "image") and stored(store) == {first}
    post(f"sign/{record}", {"_formname": "person", "id": str(record), "name": "Zoë",
                            "image": (io.BytesIO(b"second"), "z2.png")})  # fmt: skip
    second = db.person(record).image
    assert second != first and stored(store) == {second}
    assert db.person.image.retrieve(second)[1].read() == b"second"
    post(f"sign/{record}", {"_formname": "person", "id": str(record), "name": "Zoë",
                            "_delete_image": "ON"})  # fmt: skip
    assert db.person(record).image is None and stored(store) == set()
    db.close()


def _call(app, environ) -> tuple[str, bytes]:
    """Call a WSGI app as a server would (a browser's unquoted boundary); its status and body."""
    environ["CONTENT_TYPE"] = environ["CONTENT_TYPE"].replace('"', "")
    started = []
    result = app(environ, lambda status, headers, exc_info=None: started.append(status))
    try:
        return started[-1], b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()


def test_a_flask_app_inserts_werkzeugs_file_storage(db, store):
    from flask import Flask, request

    db.define_table("person", Field("image", "upload", **store.field_options()))
    app = Flask(__name__)

    @app.post("/sign")
    def sign():
        record = db.person.insert(image=request.files["picture"])
        return db.person(record).image

    environ = EnvironBuilder(method="POST", path="/sign",
                             data={"picture": (io.BytesIO(b"flask"), "ünï.gif")})  # fmt: skip
    status, name = _call(app.wsgi_app, environ.get_environ())
    assert status.startswith("200")
    assert original_filename(name.decode()) == "ünï.gif"
    assert stored(store) == {name.decode()}


class Boom(Exception):
    pass


def test_autodelete_in_a_request_waits_for_its_commit(store, tmp_path):
    """In a ``scalekit.db`` request, a deleted record's file goes once the transaction has
    committed; a rolled back request keeps the file its record still names."""
    from scalekit.core import context
    from scalekit.db import DBMiddleware, ReplicaSet

    def define(database):
        database.define_table("person", Field("image", "upload",
                                              **store.field_options(autodelete=True)))  # fmt: skip

    replicas = ReplicaSet(f"sqlite://{tmp_path}/app.sqlite", folder=str(tmp_path), pool_size=2)
    database = replicas.connect(pool_size=0)
    define(database)
    ids = [database.person.insert(image=field_storage(data, "p.png")) for data in (b"1", b"2")]
    names = [database.person(record).image for record in ids]
    database.commit()
    database.close()

    def deleting(record, fail):
        def view(environ, start_response):
            writer = context.transaction.get().writer
            writer(writer.person.id == record).delete()
            assert stored(store) == set(names)  # not before the commit
            if fail:
                raise Boom
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"deleted"]

        return DBMiddleware(view, replicas, define=define)

    with pytest.raises(Boom):
        Client(deleting(ids[0], fail=True)).request("/", method="POST")
    assert stored(store) == set(names)
    assert Client(deleting(ids[1], fail=False)).request("/", method="POST").status == 200
    assert stored(store) == {names[0]}
