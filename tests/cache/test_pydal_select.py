"""pydal's cached selects, ``db(q).select(cache=(cache.redis, 60), cacheable=True)``, on every
backend and on SQLite and PostgreSQL: the second select gives the same rows, values and types
without reading the database, until ``time_expire``; a tampered entry is a miss."""

from __future__ import annotations

import datetime
import decimal
import logging
import time
import uuid

import pytest
from pydal import DAL, Field

from scalekit.core import urls
from scalekit.core.errors import SerializationError
from tests.cache.test_signed_pickles import plant

BORN = datetime.datetime(1990, 5, 17, 8, 30, 15)
FIELDS = ("name", "born", "day", "at", "pay", "active", "photo", "meta", "tags")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """A DAL on SQLite or PostgreSQL with a person and a dog table of their own, filled."""
    if request.param == "sqlite":
        uri = f"sqlite://{tmp_path}/app.sqlite"
    else:
        uri = urls.parse(request.getfixturevalue("postgres_url")).dal_uri
    opened = DAL(uri, folder=str(tmp_path), pool_size=0)
    suffix = uuid.uuid4().hex[:8]
    person = opened.define_table(
        f"person_{suffix}",
        Field("name"),
        Field("born", "datetime"),
        Field("day", "date"),
        Field("at", "time"),
        Field("pay", "decimal(10,2)"),
        Field("active", "boolean"),
        Field("photo", "blob"),
        Field("meta", "json"),
        Field("tags", "list:string"),
    )
    dog = opened.define_table(
        f"dog_{suffix}", Field("name"), Field("owner", f"reference {person._tablename}")
    )
    ann = person.insert(
        name="ann", born=BORN, day=BORN.date(), at=BORN.time(), pay=decimal.Decimal("1234.50"),
        active=True, photo=b"\x89PNG\x00\xff", meta={"langs": ["it", "en"], "n": 2},
        tags=["admin", "staff"],
    )  # fmt: skip
    dog.insert(name="rex", owner=ann)
    dog.insert(name="fido", owner=ann)
    opened.commit()
    yield opened
    opened.rollback()
    dog.drop()
    person.drop()
    opened.commit()
    opened.close()


def tables(db):
    person, dog = (db[name] for name in db.tables)
    return person, dog


def joined(db, model, time_expire=60, cacheable=True):
    person, dog = tables(db)
    query = dog.owner == person.id
    return db(query).select(
        person.ALL, dog.ALL, orderby=dog.id, cache=(model, time_expire), cacheable=cacheable
    )


def change(db):
    """Change the tables under the cache: a cached select does not see it."""
    person, dog = tables(db)
    db(person).update(name="bob")
    dog.insert(name="third", owner=db(person).select().first().id)
    db.commit()


def values(rows, table):
    return [[(name, row[table][name], type(row[table][name])) for name in FIELDS] for row in rows]


@pytest.mark.parametrize("cacheable", [True, False], ids=["cacheable", "pydal-default"])
def test_a_cached_select_gives_the_same_rows_without_the_database(db, model, cacheable):
    person, dog = tables(db)
    first = joined(db, model, cacheable=cacheable)
    change(db)
    second = joined(db, model, cacheable=cacheable)

    assert len(second) == len(first) == 2
    assert second.colnames == first.colnames
    assert values(second, person._tablename) == values(first, person._tablename)
    row = second.first()
    assert row[person._tablename].name == "ann"  # the cached value, not the database's
    assert row[dog._tablename].owner == row[person._tablename].id
    assert isinstance(row[person._tablename].born, datetime.datetime)
    assert isinstance(row[person._tablename].pay, decimal.Decimal)
    assert row[person._tablename].active is True
    assert row[person._tablename].meta == {"langs": ["it", "en"], "n": 2}
    assert row[person._tablename].tags == ["admin", "staff"]
    assert second.as_list() == first.as_list()
    assert [r[dog._tablename].name for r in second.find(lambda r: True)] == ["rex", "fido"]

    time.sleep(0.3)  # older than the next call's time_expire: read from the database again
    fresh = joined(db, model, time_expire=0.2, cacheable=cacheable)
    assert [r[person._tablename].name for r in fresh] == ["bob"] * 3


def test_a_cached_select_of_one_table_reads_its_fields_directly(db, model):
    person, _ = tables(db)
    first = db(person).select(cache=(model, 60), cacheable=True)
    change(db)
    second = db(person).select(cache=(model, 60), cacheable=True)
    assert second.first().name == "ann" and second.first().photo == first.first().photo
    assert second.first().born == BORN and second.first().pay == decimal.Decimal("1234.50")
    assert second.as_dict() == first.as_dict()
    assert str(second) == str(first)  # the CSV export: fields and their types are back


@pytest.mark.shared
def test_a_tampered_entry_is_a_miss_not_code_or_a_traceback(db, model, request, caplog):
    keys = []

    def recording(key, f, time_expire):  # pydal calls its cache model like this
        keys.append(key)
        return model(key, f, time_expire)

    joined(db, recording)
    change(db)
    for planted in (b'{" rows":{"db":null,"records":5}}', b'{" rows":7}', b"\x80junk"):
        plant(model.backend, keys[0], "j", planted, request)
        with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
            rows = joined(db, recording)
        assert [row[tables(db)[0]._tablename].name for row in rows] == ["bob"] * 3
        assert "treated as a miss" in caplog.text
        caplog.clear()


@pytest.mark.shared
def test_caching_rows_that_carry_methods_says_to_select_with_cacheable(db, model):
    person, _ = tables(db)
    with pytest.raises(SerializationError, match=r"\[0\]\.person_\w+ is a pydal Row with upd"):
        model("rows", lambda: db(person).select(), 60)
    model("rows", lambda: db(person).select(cacheable=True), 60)
    change(db)
    assert model("rows", lambda: None, 60).first().name == "ann"  # a Rows, from the cache
