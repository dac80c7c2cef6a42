"""DBMiddleware and the view markers, through WSGI requests on the real cluster: where
each request read and wrote, and what the request's outcome left in the primary."""

from __future__ import annotations

import uuid

import pytest

from scalekit import db as scalekit_db
from scalekit.db import DBMiddleware, ReplicaSet, autocommit, manual, read_only, read_write
from scalekit.sessions import SessionMiddleware
from tests.db.conftest import Cluster, connections, define, names, server_port, wait_replayed
from tests.servers import free_port
from tests.wsgi import Client


class Boom(Exception):
    pass


def respond(start_response, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode()]


def view(environ, start_response):
    """``/add/<name>`` inserts; ``/fail/<name>`` inserts and raises; ``/error/<name>``
    inserts and answers 500; ``/find/<name>`` answers the server port and whether the row
    is there."""
    scope = scalekit_db.current()
    action, name = environ["PATH_INFO"].strip("/").split("/")[-2:]
    db = scope.db
    if action == "find":
        found = db(db.item.name == name).count()
        return respond(start_response, "200 OK", f"{server_port(db)} {found}")
    db.item.insert(name=name)
    if action == "fail":
        raise Boom(name)
    status = "500 Internal Server Error" if action == "error" else "200 OK"
    return respond(start_response, status, str(server_port(db)))


@pytest.fixture(params=["postgres_cluster", "mysql_cluster"], ids=["postgres", "mariadb"])
def cluster(request) -> Cluster:
    """Every test here runs on PostgreSQL and on MariaDB."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def replicas(cluster, folder) -> ReplicaSet:
    return ReplicaSet(cluster.primary.url, cluster.replica_urls, folder=folder, pool_size=2)


def app_for(replicas, target=view, **options) -> DBMiddleware:
    return DBMiddleware(target, replicas, define=define, **options)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def test_reads_go_to_replicas_and_writes_to_the_primary(cluster, replicas):
    client = Client(app_for(replicas, pin_seconds=0))
    replica_ports = {r.port for r in cluster.replicas}
    ports = {int(client.get("/find/x").text.split()[0]) for _ in range(4)}
    assert ports == replica_ports
    name = fresh("post")
    assert client.request(f"/add/{name}", method="POST").text == str(cluster.primary.port)
    assert names(cluster.primary, name) == {name}


def test_a_read_after_a_write_sees_the_write(cluster, replicas):
    client = Client(app_for(replicas))
    name = fresh("ryw")
    response = client.request(f"/add/{name}", method="POST")
    assert "Max-Age=10" in response.header("Set-Cookie")
    assert "private" in response.header("Cache-Control")
    assert client.get(f"/find/{name}").text == f"{cluster.primary.port} 1"
    stranger = Client(client.app)  # no pin: reads from a replica
    assert int(stranger.get(f"/find/{name}").text.split()[0]) != cluster.primary.port


def test_the_pin_lives_in_the_session_when_there_is_one(cluster, replicas, tmp_path):
    app = SessionMiddleware(app_for(replicas), f"file://{tmp_path}/sessions", secret="s" * 32)
    client = Client(app)
    name = fresh("sess")
    response = client.request(f"/add/{name}", method="POST")
    assert not any("scalekit_db_pin" in c for c in response.all("Set-Cookie"))
    assert client.get(f"/find/{name}").text == f"{cluster.primary.port} 1"


def test_success_commits_and_failures_roll_back(cluster, replicas):
    client = Client(app_for(replicas))
    added, failed, errored = fresh("ok"), fresh("raise"), fresh("5xx")
    assert client.request(f"/add/{added}", method="POST").status == 200
    with pytest.raises(Boom):
        client.request(f"/fail/{failed}", method="POST")
    assert client.request(f"/error/{errored}", method="POST").status == 500
    assert names(cluster.primary, "") >= {added}
    assert not names(cluster.primary, failed) and not names(cluster.primary, errored)


def test_an_autocommit_view_keeps_its_writes_when_it_fails(cluster, replicas):
    client = Client(app_for(replicas, target=autocommit(view)))
    name = fresh("auto")
    with pytest.raises(Boom):
        client.request(f"/fail/{name}", method="POST")
    assert names(cluster.primary, name) == {name}


def test_a_manual_view_keeps_what_it_committed_only(cluster, replicas):
    first, second = fresh("manual1"), fresh("manual2")

    @manual
    def by_hand(environ, start_response):
        db = scalekit_db.current().writer
        db.item.insert(name=first)
        db.commit()
        db.item.insert(name=second)
        return respond(start_response, "200 OK", "done")

    assert Client(app_for(replicas, target=by_hand)).get("/").status == 200
    assert names(cluster.primary, first) == {first}
    assert not names(cluster.primary, second)


def test_markers_and_read_only_actions_choose_the_database(cluster, replicas):
    primary = str(cluster.primary.port)
    client = Client(app_for(replicas, target=read_write(view), pin_seconds=0))
    assert client.get("/find/x").text.split()[0] == primary
    client = Client(app_for(replicas, target=read_only(view), pin_seconds=0))
    assert client.request("/find/x", method="POST").text.split()[0] != primary
    client = Client(app_for(replicas, read_only_actions=["find"], pin_seconds=0))
    assert client.request("/app/default/find/x", method="POST").text.split()[0] != primary
    assert client.request("/app/default/add/y", method="POST").text == primary


def test_reads_inside_a_request_that_wrote_use_the_primary(cluster, replicas):
    name = fresh("same")

    def write_then_read(environ, start_response):
        scope = scalekit_db.current()
        assert server_port(scope.reader) != cluster.primary.port  # a GET: a replica
        scope.writer.item.insert(name=name)
        reader = scope.reader
        found = reader(reader.item.name == name).count()
        return respond(start_response, "200 OK", f"{server_port(reader)} {found}")

    client = Client(app_for(replicas, target=write_then_read))
    assert client.get("/").text == f"{cluster.primary.port} 1"
    assert names(cluster.primary, name) == {name}


def test_a_streamed_body_commits_once_complete(cluster, replicas):
    name = fresh("stream")

    def streaming(environ, start_response):
        db = scalekit_db.current().db
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        db.item.insert(name=name)
        yield b"b"

    assert Client(app_for(replicas, target=streaming)).request("/", method="POST").text == "ab"
    assert names(cluster.primary, name) == {name}


def test_connections_go_back_to_the_pool(cluster, replicas):
    client = Client(app_for(replicas))
    for _ in range(10):
        client.request(f"/add/{fresh('pool')}", method="POST")
    wait_replayed(cluster.primary, cluster.replicas)
    assert connections(cluster.primary) <= 2


def test_an_unreachable_primary_answers_503(folder):
    down = f"postgres://postgres@127.0.0.1:{free_port()}/scalekit_test"
    client = Client(app_for(ReplicaSet(down, folder=folder), retry_after=7))
    response = client.request("/add/x", method="POST")
    assert response.status == 503 and response.header("Retry-After") == "7"


def test_one_sqlite_database_serves_a_single_machine(tmp_path):
    """The embedded default: no replicas, a SQLite file; requests still commit or roll back."""

    def app(environ, start_response):
        dal = scalekit_db.current().db
        action, name = environ["PATH_INFO"].strip("/").split("/")
        if action != "count":
            dal.item.insert(name=name)
        if action == "fail":
            raise Boom(name)
        return respond(start_response, "200 OK", str(dal(dal.item).count()))

    replicas = ReplicaSet("sqlite://storage.sqlite", folder=str(tmp_path))
    client = Client(DBMiddleware(app, replicas, define=define))
    assert client.request("/add/a", method="POST").text == "1"
    with pytest.raises(Boom):
        client.request("/fail/b", method="POST")
    assert client.get("/count/-").text == "1"  # the failed request's row was rolled back
    assert (tmp_path / "storage.sqlite").is_file()
