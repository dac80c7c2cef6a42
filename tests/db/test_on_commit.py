"""DBScope.on_commit and the request's transaction in ``scalekit.core.context``, through
WSGI requests on SQLite and PostgreSQL: what the callbacks saw, and what the primary kept."""

from __future__ import annotations

import logging
import uuid

import pytest
from pydal import DAL, Field

from scalekit import db as scalekit_db
from scalekit.core import context
from scalekit.core.errors import MissingContext
from scalekit.db import DBMiddleware, ReplicaSet, autocommit, manual
from tests.wsgi import Client


class Boom(Exception):
    pass


def define(db: DAL) -> None:
    db.define_table("on_commit_item", Field("name"))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/app.sqlite"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def replicas(url, folder) -> ReplicaSet:
    """The primary at ``url``, its table created (and committed) before the test."""
    replicas = ReplicaSet(url, folder=folder, pool_size=2)
    db = replicas.connect(pool_size=0)
    define(db)
    db.commit()
    db.close()
    return replicas


@pytest.fixture
def count(replicas):
    """``count(name)``: the rows named ``name`` the primary has committed, read through a
    connection of the test's own."""

    def count(name: str) -> int:
        db = replicas.connect(pool_size=0)
        define(db)
        try:
            return db(db.on_commit_item.name == name).count()
        finally:
            db.close()

    return count


def fresh() -> str:
    return uuid.uuid4().hex


def inserting(name: str, callbacks, fail: bool = False, status: str = "200 OK"):
    """A view that inserts ``name``, registers ``callbacks`` through the core context, then
    raises (``fail``) or answers ``status``."""

    def view(environ, start_response):
        transaction = context.transaction.get()
        assert transaction is scalekit_db.current()
        transaction.writer.on_commit_item.insert(name=name)
        for callback in callbacks:
            transaction.on_commit(callback)
        if fail:
            raise Boom(name)
        start_response(status, [("Content-Type", "text/plain")])
        return [b"done"]

    return view


def test_callbacks_run_in_order_after_the_commit(replicas, count):
    name, seen = fresh(), []
    callbacks = [lambda: seen.append(("first", count(name))), lambda: seen.append(("second",))]
    client = Client(DBMiddleware(inserting(name, callbacks), replicas, define=define))
    assert client.request("/", method="POST").status == 200
    assert seen == [("first", 1), ("second",)]  # the row was committed when they ran


def test_a_rollback_drops_the_callbacks(replicas, count):
    name, seen = fresh(), []
    client = Client(
        DBMiddleware(inserting(name, [seen.append], fail=True), replicas, define=define)
    )
    with pytest.raises(Boom):
        client.request("/", method="POST")
    error = fresh()
    view = inserting(error, [lambda: seen.append(error)], status="503 Service Unavailable")
    assert Client(DBMiddleware(view, replicas, define=define)).request("/").status == 503
    assert seen == [] and count(name) == 0 and count(error) == 0


def test_a_failing_callback_is_logged_and_rolled_back_not_raised(replicas, count, caplog):
    name, late, seen = fresh(), fresh(), []

    def failing():
        context.transaction.get().writer.on_commit_item.insert(name=late)
        raise Boom("callback")

    def writing():
        context.transaction.get().writer.on_commit_item.insert(name=late + "-kept")

    callbacks = [failing, writing, lambda: seen.append("ran")]
    client = Client(DBMiddleware(inserting(name, callbacks), replicas, define=define))
    with caplog.at_level(logging.ERROR, "scalekit.db"):
        assert client.request("/", method="POST").status == 200
    assert seen == ["ran"]
    assert "on_commit callback" in caplog.text and "Boom: callback" in caplog.text
    assert (count(name), count(late), count(late + "-kept")) == (1, 0, 1)


def test_a_callback_may_register_more_that_run_after_its_commit(replicas, count):
    name, seen = fresh(), []

    def chained():
        context.transaction.get().writer.on_commit_item.insert(name=name + "-later")
        context.transaction.get().on_commit(lambda: seen.append(count(name + "-later")))

    client = Client(DBMiddleware(inserting(name, [chained]), replicas, define=define))
    client.request("/", method="POST")
    assert seen == [1]


def test_autocommit_runs_the_callback_at_once_and_manual_refuses_it(replicas, count):
    name, seen = fresh(), []

    @autocommit
    def now(environ, start_response):
        scope = scalekit_db.current()
        scope.writer.on_commit_item.insert(name=name)
        scope.on_commit(lambda: seen.append(count(name)))
        seen.append("view returns")
        start_response("200 OK", [])
        return [b""]

    Client(DBMiddleware(now, replicas, define=define)).request("/", method="POST")
    assert seen == [1, "view returns"]

    @manual
    def refused(environ, start_response):
        with pytest.raises(MissingContext, match="manual view"):
            scalekit_db.current().on_commit(lambda: None)
        start_response("200 OK", [])
        return [b"refused"]

    assert Client(DBMiddleware(refused, replicas, define=define)).request("/").text == "refused"


def test_the_transaction_is_known_only_inside_the_request(replicas):
    with pytest.raises(MissingContext, match="DBMiddleware or @with_db"):
        context.transaction.get()
    Client(DBMiddleware(inserting(fresh(), []), replicas, define=define)).request("/")
    with pytest.raises(MissingContext):
        context.transaction.get()
