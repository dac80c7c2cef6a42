"""Fixtures for the task tests: one engine per backend, each on its real server.

``make_engine(app_name=None, **options)`` opens an engine of the backend under test (a fresh
app unless ``app_name`` is given; ``visibility_timeout`` 5 s unless given) and closes it after
the test. An engine whose module is not in the tree fails its tests, naming the module: it is
never skipped. Select the ones there with ``-k``, e.g. ``-k 'redis or sqlite'``.
"""

from __future__ import annotations

import pytest

from scalekit.tasks.engines import Engine, open_engine
from scalekit.testing import fresh_app_name
from tests.servers import free_port

#: Every backend the conformance suite runs on.
ENGINE_KINDS = ["redis", "sqlite", "postgres", "mariadb"]


def engine_url_for(kind: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a working engine of ``kind``, starting its server if needed."""
    if kind == "redis":
        return request.getfixturevalue("redis_url")
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/tasks.sqlite"
    if kind == "postgres":
        return request.getfixturevalue("postgres_url")
    if kind == "mariadb":
        return request.getfixturevalue("mysql_url")
    raise AssertionError(kind)


def down_url_for(kind: str, tmp_path) -> str:
    """A URL of ``kind`` whose server is not there (a free port, an unusable path), with the
    password ``hunter2`` where the URL has one."""
    port = free_port()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    return {
        "redis": f"redis://:hunter2@127.0.0.1:{port}/0",
        "sqlite": f"sqlite://{blocker}/tasks.sqlite",
        "postgres": f"postgres://postgres:hunter2@127.0.0.1:{port}/scalekit_test",
        "mariadb": f"mysql://scalekit:hunter2@127.0.0.1:{port}/scalekit_test",
    }[kind]


@pytest.fixture(params=ENGINE_KINDS)
def engine_kind(request) -> str:
    return request.param


@pytest.fixture
def engine_url(engine_kind, request, tmp_path) -> str:
    return engine_url_for(engine_kind, request, tmp_path)


@pytest.fixture
def make_engine(engine_kind, engine_url):
    """``make_engine(app_name=None, **options)``: a new engine on the backend under test."""
    opened: list[Engine] = []

    def make(app_name: str | None = None, **options) -> Engine:
        options.setdefault("visibility_timeout", 5.0)
        try:
            engine = open_engine(engine_url, app_name=app_name or fresh_app_name(), **options)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("scalekit.tasks.engines"):
                raise
            missing = f"the {engine_kind} engine is not in the tree yet: {exc}"
        else:
            opened.append(engine)
            return engine
        pytest.fail(missing, pytrace=False)

    yield make
    for engine in opened:
        engine.close()


@pytest.fixture
def make_unreachable_engine(engine_kind, tmp_path):
    """``make_unreachable_engine(app_name)``: an engine whose server is not there."""
    opened: list[Engine] = []

    def make(app_name: str) -> Engine:
        opened.append(open_engine(down_url_for(engine_kind, tmp_path), app_name=app_name))
        return opened[-1]

    yield make
    for engine in opened:
        engine.close()


@pytest.fixture
def folder(tmp_path) -> str:
    """A folder where the tasks of :mod:`tests.tasks.jobs` record their runs."""
    path = tmp_path / "runs"
    path.mkdir()
    return str(path)
