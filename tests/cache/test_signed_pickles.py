"""serializer="pickle" signs every pickle: an entry planted by whoever can write the cache
(unsigned, or signed with another secret, or moved from another key) is a miss, logged, and
never unpickled. Planted in the real storage: disk files, Redis hashes, memcached items."""

from __future__ import annotations

import logging
import os
import pickle
import time

import pytest
import redis
from pymemcache.client.base import Client

from scalekit.cache import open_backend
from scalekit.cache.backends import _diskfile
from scalekit.core.errors import ConfigError
from tests.cache.conftest import backend_url_for

SECRET = "cache-secret-" + "x" * 32


class Planted:
    """Unpickling this creates the file ``path``: the proof that a pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def plant(backend, key: str, fmt: str, data: bytes, request) -> None:
    """Replace the stored bytes of ``key`` (already set through ``backend``) in place."""
    if backend.kind == "disk":
        for folder, _, names in os.walk(backend.folder):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as file:
                    head = file.read(_diskfile.HEADER_MAX + len(key) + 1)
                if not name.endswith(".locks") and _diskfile.read_key(head) == key:
                    with open(path, "wb") as file:
                        file.write(_diskfile.build(key, fmt, data, time.time(), None))
                    return
    elif backend.kind == "redis":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        (name,) = client.keys(f"*c:{backend.app_name}:v:{key}")
        client.hset(name, mapping={"f": fmt, "v": data})
        client.close()
        return
    else:  # memcache: the item on whichever node holds it
        name = f"scalekit:c:{backend.app_name}:v:{key}"
        for server in request.getfixturevalue("memcached_servers"):
            node = Client(("127.0.0.1", server.port))
            if node.get(name) is not None:
                record = _diskfile.build(key, fmt, data, time.time(), None)
                node.set(name, record, 60, noreply=False)
                node.close()
                return
            node.close()
    raise AssertionError(f"no stored entry for {key!r}")


@pytest.fixture(params=["disk", "memcache", "redis"])
def url(request, tmp_path) -> str:
    return backend_url_for(request.param, request, tmp_path)


def test_a_planted_pickle_is_a_miss_and_never_runs(url, app_name, request, tmp_path, caplog):
    backend = open_backend(url, app_name=app_name, serializer="pickle", secret=SECRET)
    other = open_backend(url, app_name=app_name, serializer="pickle", secret="other" * 8)
    _, signed_elsewhere = backend._codec.dump("moved", Planted(tmp_path / "moved"))
    _, wrong_secret = other._codec.dump("k", Planted(tmp_path / "other"))
    planted = {
        "unsigned": pickle.dumps(Planted(tmp_path / "unsigned")),
        "wrong secret": wrong_secret,
        "from another key": signed_elsewhere,
    }
    for how, data in planted.items():
        backend.set("k", "a real value", 60)
        assert backend.get("k").value == "a real value"
        plant(backend, "k", "p", data, request)
        with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
            assert backend.get("k") is None, how
        assert "without a valid signature" in caplog.text
        caplog.clear()
    assert not [name for name in ("unsigned", "other", "moved") if (tmp_path / name).exists()]
    backend.set("k", {"signed": ["by", SECRET[:3]]}, 60)
    assert backend.get("k").value == {"signed": ["by", "cac"]}  # its own pickles still read
    backend.close()
    other.close()


def test_pickles_need_a_secret(url, app_name):
    with pytest.raises(ConfigError, match="serializer='pickle' needs a secret"):
        open_backend(url, app_name=app_name, serializer="pickle")
    with pytest.raises(ConfigError, match="unknown option secret"):
        open_backend(f"{url}?secret=in-the-url", app_name=app_name)
