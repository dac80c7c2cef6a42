"""The README's uploads section (``scalekit.uploads``), run as written against real servers.

Each Python block runs with the test servers' URLs and temp folders where the README names
production hosts and paths (a folder, PostgreSQL, moto's S3 server), and is checked to do
what the README says; the sh blocks run as commands; the option tables are checked against
the code's signatures and the CLI's ``--help``.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from pydal import DAL, Field

from scalekit.connect.sql.dal import CONNECT_TIMEOUT, STATEMENT_TIMEOUT
from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer
from scalekit.uploads import Downloads, UploadNotFound, UploadTooLarge, open_store
from scalekit.uploads.names import new_name
from scalekit.uploads.stores import DatabaseStore, FileStore, S3Store
from scalekit.uploads.stores.database import MAX_CHUNK_SIZE
from tests.examples.test_readme import README, run, snippet
from tests.wsgi import Client

SECTION = re.search(
    r"^## Uploads every server can read.*?(?=^## )",
    README.read_text(encoding="utf-8"),
    re.DOTALL | re.MULTILINE,
).group(0)
BOUNDARY = "readme-boundary-7f3a"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
OLD = time.time() - 3 * 86400  # older than gc's default grace of a day


def sh_block(marker: str, replace: dict[str, str]) -> list[str]:
    """The commands of the section's one sh block holding ``marker`` (continuation lines
    joined, comments dropped), with ``replace`` applied."""
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", SECTION, re.DOTALL) if marker in b]
    for old, new in replace.items():
        assert old in block, f"the README's sh block with {marker!r} no longer says {old!r}"
        block = block.replace(old, new)
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def shell(command: str, **env: str) -> subprocess.CompletedProcess:
    """``command`` run by bash with the venv's ``scalekit`` first on the PATH."""
    bin_folder = os.path.dirname(sys.executable)
    environ = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "-e", "-c", command], capture_output=True, text=True,
                          env=environ, timeout=120, check=False)  # fmt: skip


def form(text: dict[str, str], files: dict[str, tuple[str, bytes]]) -> bytes:
    """A ``multipart/form-data`` body (boundary :data:`BOUNDARY`)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in text.items()
    ]
    for name, (filename, data) in files.items():
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def posting(app: Callable, body: bytes, *, announced: bool = True) -> Callable:
    """``app`` sent ``body`` as a multipart POST (``announced=False``: chunked, no length);
    the body's file object is kept as ``posting.input`` to see how much was read."""

    def post(environ: dict, start_response: Callable):
        posting.input = io.BytesIO(body)
        environ.update(
            REQUEST_METHOD="POST",
            CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}",
            **{"wsgi.input": posting.input},
        )
        if announced:
            environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return post


@pytest.fixture
def fresh_postgres(postgres_server) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL, dropped afterwards
    (the README's ``person`` table clashes with no other test's)."""
    import psycopg2

    database = f"readme_uploads_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", port=postgres_server.port,
                             user=postgres_server.superuser, dbname="postgres")  # fmt: skip
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        yield postgres_server.url.rsplit("/", 1)[0] + "/" + database
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    finally:
        admin.close()


def test_the_smallest_example_stores_records_serves_and_limits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALEKIT_UPLOADS", f"file://{tmp_path}/uploads")
    (tmp_path / "databases").mkdir()
    namespace = run(snippet("def add_person(environ, start_response):"))
    app, db, store = namespace["application"], namespace["db"], namespace["store"]

    body = form({"name": "Zoë"}, {"image": ("holiday.png", PNG)})
    response = Client(posting(app, body)).request("/", method="POST")
    assert (response.status, response.header("Location")) == (303, "/")
    (row,) = db(db.person).select()
    assert row.name == "Zoë" and row.image.startswith("person.image.")
    key = row.image.split(".")[2]
    assert (tmp_path / "uploads" / "person.image" / key[:2] / row.image).read_bytes() == PNG

    client = Client(app)
    got = client.get(f"/download/{row.image}")
    assert (got.status, got.body, got.header("Content-Type")) == (200, PNG, "image/png")
    assert got.header("Content-Disposition") == 'inline; filename="holiday.png"'
    assert got.header("X-Content-Type-Options") == "nosniff"
    assert got.header("Content-Security-Policy").startswith("sandbox; default-src 'none'")
    assert got.header("Cache-Control") == "private, max-age=3600"
    part = client.request(f"/download/{row.image}", headers={"Range": "bytes=0-7"})
    assert (part.status, part.body) == (206, PNG[:8])
    again = client.request(f"/download/{row.image}", headers={"If-None-Match": got.header("ETag")})
    assert (again.status, again.body) == (304, b"")

    page = form({"name": "Mallory"}, {"image": ("x.html", b"<script>alert(1)</script>")})
    assert Client(posting(app, page)).request("/", method="POST").status == 303
    html = db(db.person.name == "Mallory").select().first().image
    served = client.get(f"/download/{html}")
    assert served.header("Content-Disposition").startswith("attachment;")
    assert client.get(f"/download/{new_name('a.png', 'person', 'image')}").status == 404  # no row

    no_file = form({"name": "Ann"}, {"image": ("", b"")})  # no file chosen
    assert Client(posting(app, no_file)).request("/", method="POST").status == 303
    assert db(db.person.name == "Ann").select().first().image is None

    near = form({"name": "Near"}, {"image": ("near.png", b"n" * ((5 << 20) - 1024))})
    assert Client(posting(app, near)).request("/", method="POST").status == 303  # under 5 MB
    stored = {info.name for info in store.names()}
    big = form({"name": "Big"}, {"image": ("big.png", PNG + b"x" * (5 << 20))})
    refused = Client(posting(app, big)).request("/", method="POST")
    assert refused.status == 413 and posting.input.tell() == 0  # refused before reading it
    chunked = Client(posting(app, big, announced=False)).request("/", method="POST")
    assert chunked.status == 413 and posting.input.tell() < len(big)
    cut = form({"name": "Cut"}, {"image": ("cut.png", PNG)})[:-40]  # the client went away
    bad = Client(posting(app, cut)).request("/", method="POST")  # limit_body answers it
    assert (bad.status, bad.header("Cache-Control")) == (400, "no-store")
    assert {info.name for info in store.names()} == stored  # the partial uploads removed
    assert db(db.person.name.belongs(["Big", "Cut"])).count() == 0
    db.close()


def test_the_s3_example_saves_reads_and_deletes_on_moto(s3_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "holiday.jpg").write_bytes(PNG)
    bucket = s3_server.create_bucket(f"readme-{uuid.uuid4().hex[:16]}")
    url = "s3://AKIAEXAMPLE:SECRET@my-app-uploads/prod?endpoint_url=http://minio:9000"
    code = snippet(url, {url: s3_server.url(bucket, "prod"), "store.delete(name)": ""})
    namespace = run(code)
    store, name, info = namespace["store"], namespace["name"], namespace["info"]
    assert name.startswith("person.image.") and name.endswith(".jpg")
    assert (info.name, info.size) == (name, len(PNG))
    assert info.sha256 == hashlib.sha256(PNG).hexdigest()
    assert namespace["first_kilobyte"] == PNG[:1024]
    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"prod/{name}"]
    assert s3_server.secret_key not in repr(store) + store.url
    run("store.delete(name)", store=store, name=name)  # the block's last line
    with pytest.raises(UploadNotFound):
        store.info(name)
    store.close()


def test_the_pydal_fields_example_on_postgresql(fresh_postgres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "databases").mkdir()
    code = snippet(
        'image={"data": b"\\x89PNG...", "filename": "zoë.png"}',
        {"postgres://app:secret@db/app": fresh_postgres},
    )
    first, delete = code.split("db(db.person.id == person).delete()")
    namespace = run(first)
    db, store = namespace["db"], namespace["store"]
    name = db.person(namespace["person"]).image
    assert name.startswith("person.image.") and store.info(name).size == len(b"\x89PNG...")
    assert namespace["filename"] == "zoë.png"
    assert namespace["stream"].read() == b"\x89PNG..."
    namespace["stream"].close()

    other = db.person.insert(name="Bo", image={"data": PNG, "filename": "bo.png"})
    old = db.person(other).image
    db(db.person.id == other).update(image={"data": b"new", "filename": "new.png"})
    with pytest.raises(UploadNotFound):  # autodelete: the replaced file went
        store.info(old)
    with pytest.raises(UploadTooLarge):  # max_size: nothing stored, no record
        db.person.insert(name="Big", image={"data": b"x" * ((5 << 20) + 1), "filename": "b.png"})
    assert db(db.person.name == "Big").count() == 0
    with pytest.raises(TypeError):  # a hook called directly
        db.person.image.custom_store(io.BytesIO(b"x"), "x.png")
    assert db.person.image.store(io.BytesIO(b"own"), "own.txt").startswith("person.image.")

    rest = "db(db.person.id == person).delete()" + delete  # the block's end, same globals
    exec(compile(rest, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert db.person(namespace["person"]) is None
    with pytest.raises(UploadNotFound):  # autodelete: the store's file went too
        store.info(name)
    db.close()
    store.close()


def test_the_downloads_example_authorizes_and_signs_links(tmp_path, monkeypatch):
    monkeypatch.setenv("APP_SECRET", "readme-app-secret-32-bytes-long-xyz")
    store = open_store(f"file://{tmp_path}/uploads", fsync=False)
    db = DAL(f"sqlite://{tmp_path}/app.sqlite", folder=str(tmp_path))
    db.define_table("person", Field("owner"), Field("image", "upload", **store.field_options()))
    row = db.person.insert(owner="alice", image={"data": PNG, "filename": "cat.png"})
    name = db.person(row).image
    other = db.person(db.person.insert(owner="bob", image={"data": b"b", "filename": "b.png"}))
    db.commit()
    namespace = run(snippet("def authorize(environ, name, record):"), store=store, db=db, name=name)
    downloads, link = namespace["downloads"], namespace["link"]

    def get(path: str, user: str | None = None) -> int:
        def app(environ, start_response):
            path_info, _, query = path.partition("?")
            environ.update(PATH_INFO=path_info, QUERY_STRING=query)
            if user:
                environ["REMOTE_USER"] = user
            return downloads(environ, start_response)

        return Client(app).get(path).status

    assert get(f"/download/{name}", "alice") == 200
    assert get(f"/download/{name}", "bob") == 403 and get(f"/download/{name}") == 403
    assert get(f"/download/{new_name('x.png', 'person', 'image')}", "alice") == 404  # no record
    base, query = link.split("?")
    assert base == f"https://example.com/download/{name}"
    expires, signature = re.fullmatch(r"expires=(\d+)&signature=([\w-]{43})", query).groups()
    assert get(link.removeprefix("https://example.com")) == 200  # the link on its own, no user
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert get(f"/download/{name}?expires={expires}&signature={flipped}") == 403  # altered
    assert get(f"/download/{name}?expires={int(expires) + 60}&signature={signature}") == 403
    assert get(f"/download/{other.image}?{query}") == 403  # made for another upload
    for purpose, status in (("scalekit.uploads", 200), ("scalekit.sessions", 403)):
        mac = Signer(os.environ["APP_SECRET"], purpose).sign(f"{expires}:{name}".encode())
        encoded = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        assert get(f"/download/{name}?expires={expires}&signature={encoded}") == status
    short = downloads.url(name, expires_in=0.01)
    time.sleep(1.05)  # its expiry (whole seconds) passed
    assert get(short) == 403
    db.close()


def test_the_migrate_example_copies_verified_and_resumes(fresh_postgres, tmp_path, capsys):
    source = open_store(f"file://{tmp_path}/uploads", fsync=False)
    names = [
        source.save(b"%d" % n * 5000, f"f{n}.txt", table="person", field="image") for n in range(3)
    ]
    flat = new_name("old.jpg", "person", "image")  # web2py's flat layout, read as it is
    (tmp_path / "uploads" / flat).write_bytes(PNG)
    code = snippet(
        "done = migrate(",
        {
            "file:///srv/uploads": f"file://{tmp_path}/uploads",
            "postgres://app:pw@db/app": fresh_postgres,
        },
    )
    run(code)
    assert "4 copied, 0 skipped (already there), 0 failed" in capsys.readouterr().out
    destination = open_store(fresh_postgres)
    for name in [*names, flat]:
        copied = b"".join(destination.read(name))
        assert copied == b"".join(source.read(name))  # and the source kept
        assert destination.info(name).sha256 == hashlib.sha256(copied).hexdigest()
    run(code)
    assert "0 copied, 4 skipped (already there), 0 failed" in capsys.readouterr().out
    destination.close()
    source.close()


def test_the_migrate_command_copies_a_web2py_folder_to_s3(s3_server, tmp_path):
    folder = tmp_path / "web2py" / "uploads"
    source = open_store(f"file://{folder}", fsync=False)
    separate = source.save(PNG, "a.png", table="shop", field="picture")
    flat = new_name("b.txt", "shop", "picture")
    (folder / flat).write_bytes(b"flat")
    bucket = s3_server.create_bucket(f"readme-{uuid.uuid4().hex[:16]}")
    (command,) = sh_block(
        "scalekit uploads migrate",
        {
            "file:///srv/web2py/applications/shop/uploads": f"file://{folder}",
            "s3://bucket/shop-uploads?region=eu-west-1": s3_server.url(bucket, "shop-uploads"),
        },
    )
    done = shell(command)
    assert done.returncode == 0, done.stderr
    assert "2 copied, 0 skipped (already there), 0 failed" in done.stdout
    assert s3_server.secret_key not in done.stdout + done.stderr
    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted(
        f"shop-uploads/{name}" for name in (separate, flat)
    )
    source.close()


def test_the_gc_commands_remove_only_old_orphans(fresh_postgres, tmp_path):
    store = open_store(f"file://{tmp_path}/uploads", fsync=False)
    db = DAL(fresh_postgres, folder=str(tmp_path))
    db.define_table("person", Field("image", "upload", **store.field_options()))
    kept = db.person(db.person.insert(image={"data": b"kept", "filename": "k.png"})).image
    db.commit()
    orphan = store.save(b"orphan", "o.png", table="person", field="image")
    young = store.save(b"young", "y.png", table="person", field="image")
    unknown = store.save(b"other app", "u.png", table="ghost", field="file")
    for name in (kept, orphan, unknown):
        os.utime(store.local_path(name), (OLD, OLD))
    dry_run, cron = sh_block(
        "scalekit uploads gc",
        {
            "file:///srv/uploads": f"file://{tmp_path}/uploads",
            "postgres://app:pw@db/app": fresh_postgres,
        },
    )[::-1]
    first = shell(dry_run)
    assert first.returncode == 0, first.stderr
    assert "would remove 1 " in first.stdout and store.info(orphan)
    done = shell(
        cron.split(None, 5)[5],
        SCALEKIT_UPLOADS=f"file://{tmp_path}/uploads",
        SCALEKIT_DB_PRIMARY=fresh_postgres,
    )  # the crontab line's command
    assert done.returncode == 0, done.stderr
    assert "removed 1 " in done.stdout and "not in the database: ghost.file (1)" in done.stdout
    with pytest.raises(UploadNotFound):
        store.info(orphan)
    assert [store.info(name).name for name in (kept, young, unknown)] == [kept, young, unknown]
    db.close()
    store.close()


def defaults(cls: type) -> dict:
    """The default of each keyword of ``cls``."""
    return {name: option.default for name, option in inspect.signature(cls).parameters.items()}


def test_the_option_tables_match_the_code(tmp_path):
    file, database, s3 = (defaults(cls) for cls in (FileStore, DatabaseStore, S3Store))
    rows = {  # each row of the stores' table: whether the code has what it says
        "| all | `create` | `true` (s3: `false`) |": (
            (file["create"], database["create"], s3["create"]) == (True, True, False)
        ),
        "| file | `fsync` | `true` |": file["fsync"] is True,
        "| database | `table` | `scalekit_upload` |": database["table"] == "scalekit_upload",
        "| database | `chunk_size` | 512 KiB | bytes per chunk row, at most 2 MiB": (
            (database["chunk_size"], MAX_CHUNK_SIZE) == (512 << 10, 2 << 20)
        ),
        "| database | `connect_timeout`, `statement_timeout` | 5, 5 |": (
            (CONNECT_TIMEOUT, STATEMENT_TIMEOUT) == (5, 5)
        ),
        "| database | `blobs` | none |": not database["blobs"],
        "| s3 | `part_size` | 8 MiB |": s3["part_size"] == 8 << 20,
        "| s3 | `connect_timeout`, `read_timeout`, `retries` | 5, 15, 2 |": (
            (s3["connect_timeout"], s3["read_timeout"], s3["retries"]) == (5, 15, 2)
        ),
        "| s3 | `addressing_style` | `path` with `endpoint_url`, else `auto` |": (
            s3["addressing_style"] is None  # chosen by the endpoint
        ),
        "| s3 | `endpoint_url` | AWS |": True,
    }
    for row, holds in rows.items():
        assert row in SECTION, f"the README's options table no longer says {row!r}"
        assert holds, row
    # every option of the table taken as a keyword; an S3 URL's own parts only in the URL
    open_store(f"file://{tmp_path}/files", create=True, fsync=False).close()
    open_store("sqlite://u.sqlite", folder=str(tmp_path), create=True, table="t",
               chunk_size=1024, blobs="person.image:image_data", connect_timeout=1,
               statement_timeout=1).close()  # fmt: skip
    url = ("s3://my-bucket/p?endpoint_url=http://h:9000&region=r&access_key=A"
           "&secret_key=S3CRET&session_token=T0KEN")  # fmt: skip
    store = open_store(url, create=False, part_size=5 << 20, connect_timeout=1,
                       read_timeout=1, retries=0, addressing_style="virtual")  # fmt: skip
    assert "S3CRET" not in repr(store) + store.url and "T0KEN" not in repr(store) + store.url
    store.close()
    with pytest.raises(ConfigError):
        open_store("s3://my-bucket/p", region="r")

    for option, default in defaults(Downloads).items():  # the Downloads table: each keyword
        if option != "store":
            shown = "none" if default is None else f"`{default}`"
            assert f"| `{option}` | {shown} |" in SECTION, option


def test_every_cli_option_the_section_names_exists():
    helps = {
        action: shell(f"scalekit uploads {action} --help").stdout for action in ("migrate", "gc")
    }
    commands = SECTION.split("### Benchmark")[0]  # the benchmark's own options are its own
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-[jv])\b", commands))
    assert {"--from", "--to", "--move", "--older-than", "--dry-run", "-j"} <= options
    for option in options:
        assert any(re.search(rf"(?<![\w-]){option}\b", text) for text in helps.values()), option
    assert "(default 1d" in helps["gc"]  # "--older-than, default 1d"
