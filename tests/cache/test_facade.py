"""The Cache object: default models, configuration, assignability, the decorator."""

from __future__ import annotations

import os

import pytest

from scalekit.cache import Cache, CacheModel, DiskBackend, RamBackend
from scalekit.core.errors import ConfigError


@pytest.fixture
def cache(tmp_path):
    opened = Cache("shop", folder=str(tmp_path / "cache"))
    yield opened
    opened.close()


def test_default_models(cache, tmp_path):
    assert isinstance(cache.ram, CacheModel) and isinstance(cache.ram.backend, RamBackend)
    assert isinstance(cache.disk.backend, DiskBackend)
    assert cache.disk.backend.folder == str(tmp_path / "cache" / "shop")
    assert cache.ram.single_flight is False and cache.disk.single_flight is True


def test_the_default_disk_folder_is_cache_under_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Cache("shop").disk.backend.folder == os.path.join(str(tmp_path), "cache", "shop")


def test_unconfigured_shared_models_say_how_to_configure_them(cache):
    with pytest.raises(ConfigError, match=r'redis="redis://'):
        cache.redis("k", lambda: 1)
    with pytest.raises(ConfigError, match=r'memcache="memcache://'):
        cache.memcache.get("k")


def test_models_are_opened_by_url(tmp_path):
    cache = Cache("shop", ram="ram://?max_entries=2", disk=f"file://{tmp_path}/elsewhere")
    assert cache.ram.backend.max_entries == 2
    assert cache.disk.backend.folder == str(tmp_path / "elsewhere" / "shop")


def test_bad_options_are_rejected_at_once(tmp_path):
    with pytest.raises(ConfigError, match="on_error"):
        Cache("shop", folder=str(tmp_path), on_error="ignore")
    with pytest.raises(ConfigError, match="unknown cache option colour; takes keep_stale"):
        Cache("shop", folder=str(tmp_path), colour="red")
    with pytest.raises(ConfigError, match="scheme"):
        Cache("shop", disk="ftp://x")
    with pytest.raises(ConfigError, match="app name"):
        Cache("no spaces")


def test_assigning_one_model_to_another(cache, tmp_path):
    cache.ram = cache.disk
    assert cache.ram is cache.disk
    assert cache.ram("k", lambda: "on disk", 60) == "on disk"
    assert cache.disk.get("k") == "on disk"
    assert any(name != ".locks" for _, _, names in os.walk(tmp_path / "cache") for name in names)


def test_assigning_a_url_or_backend(cache, tmp_path):
    cache.ram = f"file://{tmp_path}/shared"
    assert isinstance(cache.ram.backend, DiskBackend)
    cache.disk = RamBackend("shop")
    assert isinstance(cache.disk.backend, RamBackend)


def test_defaults_reach_every_model(tmp_path):
    cache = Cache("shop", folder=str(tmp_path), time_expire=5, on_error="fail_closed")
    assert cache.ram.time_expire == 5 and cache.disk.on_error == "fail_closed"


# -- the decorator ----------------------------------------------------------------------
def test_decorator_with_argument_fields(cache):
    calls = []

    @cache("user:{user_id}:{0}", time_expire=60, cache_model=cache.disk)
    def profile(user_id, extra="x"):
        calls.append(user_id)
        return {"id": user_id, "extra": extra}

    assert profile(1) == {"id": 1, "extra": "x"}
    assert profile(user_id=1) == {"id": 1, "extra": "x"}
    assert profile(2) == {"id": 2, "extra": "x"}
    assert calls == [1, 2]
    assert cache.disk.get("user:1:1") == {"id": 1, "extra": "x"}


def test_decorator_default_key_includes_the_arguments(cache):
    calls = []

    @cache(time_expire=60)
    def square(n):
        calls.append(n)
        return n * n

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    key = f"{__name__}.test_decorator_default_key_includes_the_arguments.<locals>.square:(3,)"
    assert cache.ram.get(key) == 9


def test_decorator_without_parentheses_and_constant_key(cache):
    @cache
    def one():
        return object()

    assert one() is one()

    @cache("constant", time_expire=None)
    def anything(n):
        return n

    assert anything(1) == 1
    assert anything(2) == 1  # no fields: one key for every call, as in web2py


def test_decorator_resolves_the_model_at_call_time(cache):
    @cache("k", time_expire=60)
    def value():
        return "v"

    cache.ram = cache.disk
    value()
    assert cache.disk.get("k") == "v"

    @cache("n", cache_model="disk")
    def by_name():
        return 1

    by_name()
    assert cache.disk.get("n") == 1


def test_decorator_key_naming_no_argument(cache):
    @cache("user:{uid}")
    def profile(user_id):
        return user_id

    with pytest.raises(ConfigError, match="uid"):
        profile(1)
    with pytest.raises(ConfigError, match="cache_model"):
        cache("k", cache_model="mongo")(lambda: 1)()
