"""The database store on real SQLite files and a real PostgreSQL server: the rows it writes,
upgrading web2py's existing session table, running inside the app's own transaction,
options, and connection failures."""

from __future__ import annotations

import base64
import contextlib
import datetime
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterator

import psycopg2
import pymysql
import pytest
from pydal import DAL, Field

from scalekit.core import urls
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.sessions.stores import ANY, open_store
from scalekit.sessions.stores.database import DatabaseStore
from tests.servers import free_port

SID = "AbCdEfGhIjKlMnOpQrStUvWx"
WEB2PY_KEY = "0e5e3bb2-bf8f-4b5a-9d4e-2b1d3f0a9c7e"  # a web2py unique_key (a uuid4)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        (tmp_path / "databases").mkdir()
        return f"sqlite://{tmp_path}/databases/storage.sqlite"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(db_url, app_name):
    opened = open_store(db_url, app_name=app_name)
    yield opened
    opened.close()


@contextlib.contextmanager
def connection(url: str) -> Iterator:
    """A plain DB-API connection, to look at what the store really wrote."""
    settings = urls.parse(url)
    if isinstance(settings, urls.SQLiteURL):
        conn = sqlite3.connect(settings.path)
    elif settings.dialect == "mysql":
        conn = pymysql.connect(
            host=settings.host, port=settings.port, user=settings.user,
            password=settings.password, database=settings.database,
        )  # fmt: skip
    else:
        conn = psycopg2.connect(
            host=settings.host, port=settings.port, user=settings.user, dbname=settings.database
        )
    try:
        yield conn
    finally:
        conn.close()


def query(url: str, sql: str) -> list[tuple]:
    with connection(url) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        conn.commit()
        return rows


def columns(url: str, table: str) -> set[str]:
    if url.startswith("sqlite"):
        return {row[1] for row in query(url, f"PRAGMA table_info({table})")}
    sql = f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
    return {row[0] for row in query(url, sql)}


def indexes(url: str, table: str) -> dict[str, str]:
    """Each index's definition, as SQL text (MySQL's are made up from SHOW INDEX rows:
    ``UNIQUE (a)``, ``(a, b)``)."""
    if url.startswith("sqlite"):
        sql = f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}'"
    elif url.startswith("mysql"):
        made: dict[str, tuple[bool, list[str]]] = {}
        for row in query(url, f"SHOW INDEX FROM {table}"):  # rows in column order
            _, non_unique, name, _, column = row[:5]
            made.setdefault(name, (not non_unique, []))[1].append(column)
        return {name: ("UNIQUE " if unique else "") + f"({', '.join(cols)})"
                for name, (unique, cols) in made.items()}  # fmt: skip
    else:
        sql = f"SELECT indexname, indexdef FROM pg_indexes WHERE tablename = '{table}'"
    return {name: definition or "" for name, definition in query(url, sql)}


def as_datetime(value) -> datetime.datetime:
    return value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)


def blob(value) -> bytes:
    """pydal stores blobs base64-encoded, as web2py always did."""
    return base64.b64decode(bytes(value) if not isinstance(value, str) else value)


def test_sessions_are_rows_of_web2pys_table(store, db_url, app_name):
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    store.save(SID, b"payload", 60, None)
    table = f"web2py_session_{app_name}"
    [row] = query(
        db_url,
        "SELECT unique_key, version, locked, client_ip, created_datetime, "
        f"modified_datetime, expires_datetime, session_data FROM {table}",
    )
    key, version, locked, client_ip, created, modified, expires, data = row
    assert (key, version, client_ip, blob(data)) == (SID, 1, None, b"payload")
    assert locked in ("F", False)
    modified, expires = as_datetime(modified), as_datetime(expires)
    assert abs((modified - before).total_seconds()) < 2  # naive UTC
    assert as_datetime(created) == modified
    assert 60 <= (expires - modified).total_seconds() <= 62
    store.save(SID, b"forever", None, ANY)
    [(version, expires)] = query(db_url, f"SELECT version, expires_datetime FROM {table}")
    assert (version, expires) == (2, None)


def test_indexes_on_unique_key_and_modified_datetime(store, db_url, app_name):
    store.save(SID, b"x", 60, None)
    store.try_lease(SID, "owner", 5)
    table, locks = f"web2py_session_{app_name}", f"scalekit_session_lock_{app_name}"
    found = indexes(db_url, table)
    assert "UNIQUE" in found[f"{table}_unique_key"]
    assert f"{table}_modified_datetime" in found
    composite = found[f"{table}_expires_modified"].replace('"', "")
    assert "(expires_datetime, modified_datetime)" in composite
    assert "UNIQUE" in indexes(db_url, locks)[f"{locks}_session_id"]


def test_lock_rows(store, db_url, app_name):
    assert store.try_lease(SID, "owner-1", 30)
    table = f"scalekit_session_lock_{app_name}"
    [(sid, token, expires)] = query(db_url, f"SELECT session_id, token, expires_at FROM {table}")
    assert (sid, token) == (SID, "owner-1") and time.time() + 25 < expires < time.time() + 31
    query(db_url, f"UPDATE {table} SET expires_at = {time.time() - 1}")  # its holder died
    assert store.try_lease(SID, "owner-2", 30) is True
    store.release_lease(SID, "owner-2")
    assert query(db_url, f"SELECT * FROM {table}") == []


def test_a_version_from_before_expiry_never_matches_the_new_record(store):
    store.save(SID, b"old", 1, None)
    old = store.load(SID).version
    time.sleep(2.2)
    assert store.save(SID, b"new", 60, None) is True
    assert store.load(SID).version != old
    assert store.save(SID, b"stale writer", 60, old) is False


def _web2py_table(db: DAL, app: str) -> None:
    """The table web2py's ``session.connect(request, response, db=db)`` defines."""
    db.define_table(
        f"web2py_session_{app}",
        Field("locked", "boolean", default=False),
        Field("client_ip", length=64),
        Field("created_datetime", "datetime", default=datetime.datetime.now()),
        Field("modified_datetime", "datetime"),
        Field("unique_key", length=64),
        Field("session_data", "blob"),
    )


def _check_upgraded(url: str, app: str, **options) -> None:
    store = open_store(url, app_name=app, **options)
    try:
        record = store.load(WEB2PY_KEY)  # web2py's row: no version, no expiry
        assert pickle.loads(record.data) == {"user": 1} and record.version == 0
        assert store.save(WEB2PY_KEY, b"rewritten", 60, 1) is False
        assert store.save(WEB2PY_KEY, b"rewritten", 60, 0) is True
        assert store.load(WEB2PY_KEY).version == 1
        assert store.save(SID, b"new session", 60, None) is True
        assert store.load(SID).data == b"new session"
    finally:
        store.close()
    table = f"web2py_session_{app}"
    assert {"version", "expires_datetime"} <= columns(url, table)
    assert query(url, f"SELECT count(*) FROM {table}") == [(2,)]
    if url.startswith("mysql"):
        assert mysql_precision(url, table) == {"created_datetime": 6, "modified_datetime": 6}


def mysql_precision(url: str, table: str) -> dict[str, int]:
    """The fractional digits of each session datetime column of a MySQL table."""
    rows = query(
        url,
        "SELECT column_name, datetime_precision FROM information_schema.columns WHERE "
        f"table_schema = DATABASE() AND table_name = '{table}' "
        "AND column_name IN ('created_datetime', 'modified_datetime')",
    )
    return {name.lower(): precision for name, precision in rows}


def test_mysql_session_times_keep_microseconds(mysql_url, app_name):
    with contextlib.closing(open_store(mysql_url, app_name=app_name)) as store:
        for n in range(5):  # one save may fall on a whole second, not five in a row
            store.save(f"{SID[:-1]}{n}", b"x", 60, None)
    table = f"web2py_session_{app_name}"
    assert mysql_precision(url=mysql_url, table=table) == {
        "created_datetime": 6, "modified_datetime": 6,
    }  # fmt: skip
    stamps = [as_datetime(v) for (v,) in query(mysql_url, f"SELECT modified_datetime FROM {table}")]
    assert len(stamps) == 5 and any(stamp.microsecond for stamp in stamps)


def test_upgrades_a_web2py_table_made_by_pydal(db_url, app_name, tmp_path):
    settings = urls.parse(db_url)
    folder = tmp_path / "databases"
    folder.mkdir(exist_ok=True)
    web2py = DAL(settings.dal_uri, folder=str(folder))
    _web2py_table(web2py, app_name)
    web2py[f"web2py_session_{app_name}"].insert(
        unique_key=WEB2PY_KEY,
        session_data=pickle.dumps({"user": 1}),
        modified_datetime=datetime.datetime.now(),
    )
    web2py.commit()
    web2py.close()
    assert "version" not in columns(db_url, f"web2py_session_{app_name}")
    # sqlite keeps .table files beside the database, as web2py's databases/ folder does
    options = {} if db_url.startswith("sqlite") else {"folder": str(folder)}
    _check_upgraded(db_url, app_name, **options)


def test_upgrades_a_web2py_table_without_its_table_files(db_url, app_name):
    table = f"web2py_session_{app_name}"
    serial, when, blob_type = {  # the column types web2py's DAL gave the table
        "sqlite": ("INTEGER PRIMARY KEY AUTOINCREMENT", "TIMESTAMP", "BLOB"),
        "postgres": ("SERIAL PRIMARY KEY", "TIMESTAMP", "BYTEA"),
        "mysql": ("INT AUTO_INCREMENT PRIMARY KEY", "DATETIME", "LONGBLOB"),
    }[db_url.split(":")[0]]
    query(
        db_url,
        f"CREATE TABLE {table} (id {serial}, locked CHAR(1), client_ip VARCHAR(64), "
        f"created_datetime {when}, modified_datetime {when}, "
        f"unique_key VARCHAR(64), session_data {blob_type})",
    )
    data = base64.b64encode(pickle.dumps({"user": 1})).decode()
    query(
        db_url,
        f"INSERT INTO {table} (locked, unique_key, session_data, modified_datetime) "
        f"VALUES ('F', '{WEB2PY_KEY}', '{data}', '2024-01-02 03:04:05')",
    )
    _check_upgraded(db_url, app_name)


@pytest.fixture
def app_db(db_url, tmp_path, app_name) -> Iterator[DAL]:
    """The app's own DAL, as a web2py model file makes it, with one table of the app's."""
    db = DAL(urls.parse(db_url).dal_uri, folder=str(tmp_path))
    db.define_table("thing", Field("name"), rname=f"thing_{app_name}")
    db.commit()
    yield db
    db.rollback()
    db.close()


def test_on_the_apps_dal_without_commit_the_session_follows_the_apps_transaction(
    app_db, db_url, app_name
):
    store = DatabaseStore(db=app_db, app_name=app_name, commit=False)
    other = open_store(db_url, app_name=app_name)  # another connection: another server
    try:
        store.save(SID, b"in the app's transaction", 60, None)
        app_db.thing.insert(name="order 1")
        assert store.load(SID).data == b"in the app's transaction"  # seen by the app itself
        assert other.load(SID) is None  # not committed
        app_db.rollback()
        assert other.load(SID) is None and store.load(SID) is None
        assert app_db(app_db.thing).count() == 0

        store.save(SID, b"committed with the app", 60, None)
        app_db.thing.insert(name="order 2")
        app_db.commit()
        assert other.load(SID).data == b"committed with the app"

        store.delete(SID)
        assert other.load(SID).data == b"committed with the app"
        app_db.rollback()
        assert store.load(SID).data == b"committed with the app"
    finally:
        other.close()


def test_on_the_apps_dal_with_commit_each_operation_commits(app_db, db_url, app_name):
    store = DatabaseStore(db=app_db, app_name=app_name)
    other = open_store(db_url, app_name=app_name)
    try:
        store.save(SID, b"at once", 60, None)
        assert other.load(SID).data == b"at once"
        assert store.try_lease(SID, "owner", 10) is True
        assert other.try_lease(SID, "someone else", 10) is False
        store.release_lease(SID, "owner")
        store.close()  # the app's DAL stays open: it is the app's
        assert store.load(SID).data == b"at once"
    finally:
        other.close()


def test_a_store_opened_by_url_commits_every_operation(db_url, app_name):
    first, second = open_store(db_url, app_name=app_name), open_store(db_url, app_name=app_name)
    try:
        first.save(SID, b"x", 60, None)
        assert second.load(SID).data == b"x"
        assert first.try_lease(SID, "first", 10) and not second.try_lease(SID, "second", 10)
        first.close()
        assert first.load(SID).data == b"x"  # reopens after close
    finally:
        first.close()
        second.close()


def test_migrate_false_expects_the_tables(db_url, app_name):
    unmigrated = open_store(db_url, app_name=app_name, migrate=False)
    with pytest.raises(StoreUnavailable, match=f"web2py_session_{app_name}"):
        unmigrated.load(SID)
    unmigrated.close()
    with contextlib.closing(open_store(db_url, app_name=app_name)) as creator:
        creator.load(SID)  # creates them on first use
    with contextlib.closing(open_store(f"{db_url}?migrate=false", app_name=app_name)) as store:
        store.save(SID, b"x", 60, None)
        assert store.load(SID).data == b"x"


def test_the_table_option_names_both_tables(db_url, app_name):
    table = f"sessions_{app_name}"
    with contextlib.closing(open_store(db_url, app_name=app_name, table=table)) as store:
        store.save(SID, b"x", 60, None)
        store.try_lease(SID, "owner", 5)
    assert query(db_url, f"SELECT unique_key FROM {table}") == [(SID,)]
    assert query(db_url, f"SELECT session_id FROM {table}_lock") == [(SID,)]


def test_the_folder_option_holds_pydals_table_files(postgres_url, app_name, tmp_path):
    folder = tmp_path / "migrations"
    with contextlib.closing(
        open_store(f"{postgres_url}?folder={folder}", app_name=app_name)
    ) as store:
        store.save(SID, b"x", 60, None)
    assert any(path.name.endswith(f"_web2py_session_{app_name}.table") for path in folder.iterdir())


def test_a_relative_sqlite_path_is_relative_to_the_folder_or_cwd(tmp_path, app_name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with contextlib.closing(open_store("sqlite://here.sqlite", app_name=app_name)) as store:
        store.save(SID, b"x", 60, None)
    assert (tmp_path / "here.sqlite").exists()
    folder = tmp_path / "data"
    with contextlib.closing(
        open_store("sqlite://there.sqlite", app_name=app_name, folder=str(folder))
    ) as store:
        store.save(SID, b"x", 60, None)
    assert (folder / "there.sqlite").exists()


def test_a_lost_connection_fails_once_then_reconnects(postgres_url, app_name):
    with contextlib.closing(open_store(postgres_url, app_name=app_name)) as store:
        store.save(SID, b"x", 60, None)
        query(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        with pytest.raises(StoreUnavailable, match="session database"):
            store.load(SID)
        assert store.load(SID).data == b"x"


def test_a_server_that_is_down_fails_fast_and_hides_the_password(app_name):
    url = f"postgres://scalekit:hunter2@127.0.0.1:{free_port()}/scalekit_test"
    store = open_store(url, app_name=app_name, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.load(SID)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "hunter2" not in message and "scalekit:***@127.0.0.1" in message
    assert "Connection refused" in message


@pytest.mark.parametrize(
    ("url_suffix", "options", "problem"),
    [
        ("", {"table": "no spaces"}, "table="),
        ("", {"pool_size": -1}, "pool_size"),
        ("", {"connect_timeout": 0}, "connect_timeout"),
        ("?migrate=maybe", {}, "migrate"),
        ("?pool_size=many", {}, "pool_size"),
        ("", {"commit": False}, "unknown"),
    ],
)
def test_bad_options_are_config_errors(db_url, app_name, url_suffix, options, problem):
    with pytest.raises(ConfigError, match=problem):
        open_store(db_url + url_suffix, app_name=app_name, **options)


def test_constructor_checks(app_db, db_url, app_name):
    with pytest.raises(ConfigError, match="URL or db="):
        DatabaseStore(db_url, app_name=app_name, db=app_db)
    with pytest.raises(ConfigError, match="URL or db="):
        DatabaseStore(app_name=app_name)
    with pytest.raises(ConfigError, match="app's DAL"):
        DatabaseStore(db=app_db, app_name=app_name, folder="/tmp")
    with pytest.raises(ConfigError, match="in-memory"):
        open_store("sqlite:memory", app_name=app_name)
    explicit = DatabaseStore(db_url, app_name=app_name, connect_timeout=3)
    assert explicit.kind == "database" and explicit.table == f"web2py_session_{app_name}"
    explicit.close()


def test_long_app_names_get_short_table_names(db_url):
    app = "a" * 64
    with contextlib.closing(open_store(db_url, app_name=app)) as store:
        store.save(SID, b"x", 60, None)
        assert store.load(SID).data == b"x"
        assert len(store.table) <= 63 and len(store.lock_table) <= 63
        assert store.table.startswith("web2py_session_aaaa")


def test_on_in_memory_and_lazy_app_dals(app_name, tmp_path):
    for _ in range(2):  # every in-memory DAL is a new database that needs its tables
        memory = DAL("sqlite:memory")
        store = DatabaseStore(db=memory, app_name=app_name)
        assert store.save(SID, b"x", 60, None) and store.load(SID).data == b"x"
        memory.close()
    lazy = DAL(f"sqlite://{tmp_path}/lazy.sqlite", folder=str(tmp_path), lazy_tables=True)
    store = DatabaseStore(db=lazy, app_name=app_name, commit=False)
    assert store.save(SID, b"lazy", 60, None) and store.load(SID).data == b"lazy"
    lazy.commit()
    lazy.close()


def test_each_thread_gets_its_own_connection(postgres_url, app_name):
    count = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    with contextlib.closing(open_store(postgres_url, app_name=app_name)) as store:
        store.save(SID, b"x", 60, None)
        before = query(postgres_url, count)[0][0]
        barrier, seen, errors = threading.Barrier(4), [], []

        def use():
            try:
                seen.append(store.load(SID).data)
                barrier.wait(10)  # all three connections are open now
                barrier.wait(10)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=use) for _ in range(3)]
        for thread in threads:
            thread.start()
        barrier.wait(10)
        during = query(postgres_url, count)[0][0]
        barrier.wait(10)
        for thread in threads:
            thread.join(10)
        assert not errors and seen == [b"x"] * 3
        assert during - before == 3
