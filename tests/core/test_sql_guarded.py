"""The connect.sql floor's guarded use of a DAL (what uploads, tasks and gc share): a block
in one transaction of a thread's DAL, a new connection's session defaults, a DAL of its own
from a URL, driver errors as StoreUnavailable without the password."""

from __future__ import annotations

import pytest

from scalekit.connect import sql
from scalekit.core.errors import StoreNotFound, StoreUnavailable
from scalekit.core.urls import parse


def _dals(url: str, folder: str) -> sql.ThreadDAL:
    options = sql.dal_options(parse(url), folder=folder, timeout=2)

    def prepare(db):
        sql.session_defaults(db, 3, wal=True)
        db.executesql("CREATE TABLE IF NOT EXISTS guarded_t (n INTEGER);")
        db.commit()
        return db

    return sql.ThreadDAL(lambda: sql.open_dal(options, "test"), prepare)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return sql.unavailable("test database", exc, None)


@pytest.fixture(params=["sqlite", "mysql"])
def dals(request, tmp_path):
    url = f"sqlite://{tmp_path}/g.sqlite"
    if request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
    opened = _dals(url, str(tmp_path / "dal"))
    with opened.transaction(_unavailable, write=True) as db:
        db.executesql("DELETE FROM guarded_t;")
    yield opened
    opened.close()


def test_a_block_commits_or_rolls_back(dals):
    with dals.transaction(_unavailable, write=True) as db:
        db.executesql("INSERT INTO guarded_t (n) VALUES (1);")
    with pytest.raises(KeyError), dals.transaction(_unavailable, write=True) as db:
        db.executesql("INSERT INTO guarded_t (n) VALUES (2);")
        raise KeyError("the block failed")
    with dals.transaction(_unavailable) as db:
        assert [tuple(row) for row in db.executesql("SELECT n FROM guarded_t;")] == [(1,)]


def test_a_driver_error_is_unavailable_and_the_next_block_reconnects(dals):
    failing = dals.transaction(_unavailable)
    with pytest.raises(StoreUnavailable, match=r"test database: .*nothing_here"), failing as db:
        db.executesql("SELECT * FROM nothing_here;")
    with dals.transaction(_unavailable) as again:
        assert again is not db  # a new DAL: the failed one was dropped
        assert again.executesql("SELECT COUNT(*) FROM guarded_t;")[0][0] == 0


def test_session_defaults(dals):
    with dals.transaction(_unavailable) as db:
        if db._adapter.dbengine == "sqlite":
            assert db.executesql("PRAGMA journal_mode;")[0][0] == "wal"
        else:
            (level,) = db.executesql("SELECT @@SESSION.tx_isolation;")[0]
            assert level == "READ-COMMITTED"
            waits = db.executesql("SELECT @@SESSION.innodb_lock_wait_timeout, @@lock_wait_timeout;")
            assert tuple(map(int, waits[0])) == (3, 3)


def test_opened_creates_nothing_and_masks_the_password(tmp_path, postgres_url):
    with pytest.raises(StoreNotFound), sql.opened(f"sqlite://{tmp_path}/none.sqlite"):
        pass
    assert not (tmp_path / "none.sqlite").exists()
    unreachable = sql.opened("postgres://app:s3cret-pw@127.0.0.1:1/app", "outbox database")
    with pytest.raises(StoreUnavailable) as failed, unreachable:
        pass
    assert "outbox database postgres://app:***@127.0.0.1:1/app" in str(failed.value)
    assert "s3cret-pw" not in str(failed.value)
    with pytest.raises(StoreUnavailable, match="nothing_here"), sql.opened(postgres_url) as db:
        db.executesql("SELECT * FROM nothing_here;")
