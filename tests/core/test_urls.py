"""scalekit.core.urls: every scheme, every kind of bad URL, and passwords kept out of sight;
the Redis-using openers take the ``valkey://`` alias."""

import contextlib
import uuid

import pytest

from scalekit.cache.backends import open_backend
from scalekit.core import urls
from scalekit.core.errors import ConfigError, ScalekitError
from scalekit.core.urls import DatabaseURL, FileURL, MemcacheURL, RedisURL, SQLiteURL
from scalekit.sessions.stores import open_store
from scalekit.tasks.engines import open_engine


def test_file_absolute_and_relative():
    assert urls.parse("file:///var/app/sessions") == FileURL(
        url="file:///var/app/sessions", path="/var/app/sessions"
    )
    assert urls.parse("file://sessions/app").path == "sessions/app"
    assert urls.parse("file:///srv/my%20app?shards=2").path == "/srv/my app"


def test_file_options_are_read_only_strings():
    settings = urls.parse("file:///var/s?shards=2&fsync=1")
    assert dict(settings.options) == {"shards": "2", "fsync": "1"}
    assert settings.option("shards", convert=int) == 2
    assert settings.option("missing", default=7) == 7
    with pytest.raises(TypeError):
        settings.options["shards"] = "3"


def test_sqlite_paths_and_memory():
    relative = urls.parse("sqlite://storage.sqlite")
    assert isinstance(relative, SQLiteURL)
    assert (relative.path, relative.dal_uri) == ("storage.sqlite", "sqlite://storage.sqlite")
    absolute = urls.parse("sqlite:///var/app/db.sqlite")
    assert absolute.path == "/var/app/db.sqlite"
    for memory in ("sqlite:memory", "sqlite://:memory:"):
        settings = urls.parse(memory)
        assert settings.memory and settings.dal_uri == "sqlite:memory"


@pytest.mark.parametrize(
    "url, dialect, driver, port",
    [
        ("postgres://app:pw@db.local/appdb", "postgres", None, 5432),
        ("postgresql://app:pw@db.local:6432/appdb", "postgres", None, 6432),
        ("postgres:psycopg2://app:pw@db.local/appdb", "postgres", "psycopg2", 5432),
        ("mysql://app:pw@db.local/appdb", "mysql", None, 3306),
        ("mysql:pymysql://app:pw@db.local:3307/appdb", "mysql", "pymysql", 3307),
    ],
)
def test_database_urls(url, dialect, driver, port):
    settings = urls.parse(url)
    assert isinstance(settings, DatabaseURL)
    assert (settings.dialect, settings.driver, settings.port) == (dialect, driver, port)
    assert (settings.host, settings.user, settings.password) == ("db.local", "app", "pw")
    assert settings.database == "appdb"
    assert settings.kind == "database"


def test_database_credentials_are_decoded_and_reencoded_for_pydal():
    settings = urls.parse("postgres://app%40corp:p%40ss%2Fw%3Ard@[::1]:5433/app?sslmode=require")
    assert (settings.user, settings.password, settings.host) == ("app@corp", "p@ss/w:rd", "::1")
    assert settings.options["sslmode"] == "require"
    assert settings.dal_uri == "postgres://app%40corp:p%40ss%2Fw%3Ard@[::1]:5433/app"


def test_redis_tcp():
    settings = urls.parse("redis://cache.local")
    assert settings == RedisURL(url="redis://cache.local", host="cache.local")
    assert (settings.port, settings.db, settings.ssl, settings.password) == (6379, 0, False, None)
    full = urls.parse("redis://worker:s3cret@10.0.0.5:6380/3?socket_timeout=0.5")
    assert (full.host, full.port, full.db) == ("10.0.0.5", 6380, 3)
    assert (full.username, full.password) == ("worker", "s3cret")
    assert full.option("socket_timeout", convert=float) == 0.5
    assert urls.parse("redis://:only-pw@h/1").username is None
    assert urls.parse("redis://h?db=4").db == 4


def test_rediss_means_tls():
    settings = urls.parse("rediss://:pw@cache.example.com:6380/0")
    assert settings.ssl and settings.port == 6380 and settings.password == "pw"


@pytest.mark.parametrize(
    "alias, redis",
    [
        ("valkey://cache.local", "redis://cache.local"),
        ("valkey://worker:pw@10.0.0.5:6380/3?socket_timeout=0.5",
         "redis://worker:pw@10.0.0.5:6380/3?socket_timeout=0.5"),
        ("VALKEYS://:pw@h:6380/1", "rediss://:pw@h:6380/1"),
        ("valkey://h?db=4&password=pw", "redis://h?db=4&password=pw"),
    ],
)  # fmt: skip
def test_valkey_schemes_are_aliases_of_redis_keeping_the_users_url(alias, redis):
    settings = urls.parse(alias, kinds={"redis"})
    assert settings == urls.parse(redis) and isinstance(settings, RedisURL)
    assert settings.ssl == redis.startswith("rediss")
    assert settings.url == alias and settings.masked.lower().startswith("valkey")


def test_redis_unix_socket():
    settings = urls.parse("unix:///run/redis/redis.sock?db=2")
    assert isinstance(settings, RedisURL)
    assert (settings.unix_socket, settings.db, settings.host) == ("/run/redis/redis.sock", 2, "")
    with_password = urls.parse("unix://:pw@/run/redis.sock")
    assert (with_password.password, with_password.unix_socket) == ("pw", "/run/redis.sock")
    assert urls.parse("unix:///run/redis.sock?password=pw2").password == "pw2"
    assert "password" not in urls.parse("unix:///run/redis.sock?password=pw2").options


def test_memcache_one_or_many_nodes():
    one = urls.parse("memcache://127.0.0.1")
    assert isinstance(one, MemcacheURL) and one.servers == (("127.0.0.1", 11211),)
    many = urls.parse("memcached://h1:11211,h2:11212,[::1]:11213")
    assert many.servers == (("h1", 11211), ("h2", 11212), ("::1", 11213))
    assert many.kind == "memcache"


def test_scheme_is_case_insensitive_and_outer_whitespace_ignored():
    assert urls.parse("  REDIS://h/1\n").db == 1


def test_kinds_limits_what_a_setting_accepts():
    assert urls.parse("redis://h", kinds={"redis", "memcache"}).kind == "redis"
    with pytest.raises(ConfigError, match=r"is a file URL; this setting takes memcache or redis"):
        urls.parse("file:///tmp/x", kinds={"redis", "memcache"})


def test_check_options_names_the_unknown_and_the_known():
    settings = urls.parse("redis://h/0?socket_timeout=1&sokcet_timeout=2")
    settings.check_options({"socket_timeout", "sokcet_timeout"})
    with pytest.raises(ConfigError, match=r"unknown option sokcet_timeout; .*takes socket_timeout"):
        settings.check_options({"socket_timeout"})


def test_bad_option_value_is_a_config_error():
    settings = urls.parse("redis://h/0?socket_timeout=soon")
    with pytest.raises(ConfigError, match=r"redis://h/0\?socket_timeout=soon: option socket_time"):
        settings.option("socket_timeout", convert=float)


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "no backend URL given"),
        ("   ", "no backend URL given"),
        (None, "no backend URL given"),
        ("localhost:6379", "is not a URL"),
        ("ftp://host/x", "unknown scheme 'ftp'; use one of file, sqlite"),
        ("redis://h /0", "cannot contain spaces"),
        ("redis://h\x00/0", "control characters"),
        ("redis://h:0/0", "port must be a number from 1 to 65535"),
        ("redis://h:65536/0", "port must be a number from 1 to 65535"),
        ("redis://h:63a9/0", "port must be a number from 1 to 65535"),
        ("redis://h/zero", "database must be a number"),
        ("redis://h/1?db=2", "database number once"),
        ("redis:///0", "no host given"),
        ("valkey:///0", "no host given"),
        ("valkeys://h/zero", "database must be a number"),
        ("redis:hiredis://h/0", "takes no driver"),
        ("redis://:a@h/0?password=b", "password once"),
        ("redis://h/0?a=1&a=2", "option 'a' is given twice"),
        ("redis://h/0?novalue", "must look like a=1&b=2"),
        ("redis://[::1/0", "IPv6 address"),
        ("unix://host/run/redis.sock", "a unix URL has no host"),
        ("unix://", "no socket path"),
        ("file://", "no path given"),
        ("sqlite://", "no path given"),
        ("postgres://u@h", "name one database"),
        ("postgres://u@h/a/b", "name one database"),
        ("postgres://h/appdb", "name the user"),
        ("mysql://u@h:99999/db", "port must be a number"),
        ("memcache://u:pw@h1", "takes no user or password"),
        ("memcache://h1,,h2", "every server needs a host"),
        ("memcache://h1,h1:11211", "listed twice"),
        ("memcache://h1/cache", "has no path"),
    ],
)
def test_bad_urls_raise_config_error_naming_the_url(url, message):
    with pytest.raises(ConfigError, match=message) as caught:
        urls.parse(url)
    assert isinstance(caught.value, ScalekitError) and isinstance(caught.value, ValueError)
    if url and url.strip():
        assert urls.mask(url.strip())[:8] in str(caught.value)


SECRET_URLS = [
    "redis://:hunter2-secret@h:6379/0",
    "redis://user:hunter2-secret@h/0?socket_timeout=1",
    "rediss://:hunter2-secret@h:6380/0",
    "valkey://user:hunter2-secret@h/0",
    "valkeys://:hunter2-secret@h:6380/0",
    "unix://:hunter2-secret@/run/redis.sock",
    "unix:///run/redis.sock?db=1&password=hunter2-secret",
    "postgres://app:hunter2-secret@db/appdb",
    "mysql:pymysql://app:hunter2-secret@db:3306/appdb",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_password_never_in_repr_str_or_masked(url):
    settings = urls.parse(url)
    assert settings.password == "hunter2-secret"
    for text in (repr(settings), str(settings), settings.masked, repr([settings])):
        assert "hunter2" not in text
        assert urls.MASK in text


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2-secret@h:99999/0",  # bad port
        "redis://:hunter2-secret@h/x",  # bad db
        "postgres://app:hunter2-secret@db",  # no database
        "redis://:hunter2/secret@h/0",  # unencoded / in the password
        "redis://:hunter2?secret@h/0",  # unencoded ? in the password
        "redis://h/0?password=hunter2-secret&db=1&db=2",  # duplicate option
        "ftp://u:hunter2-secret@h/0",  # unknown scheme
        "redis://:hunter2 secret@h/0",  # whitespace
    ],
)
def test_password_never_in_error_messages(url):
    with pytest.raises(ConfigError) as caught:
        urls.parse(url)
    assert "hunter2" not in str(caught.value)
    assert "secret@" not in str(caught.value)


def test_mask_keeps_what_identifies_the_server():
    assert urls.mask("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert urls.mask("redis://h:6379/0") == "redis://h:6379/0"
    assert urls.mask("valkeys://user:pw@h/0") == "valkeys://user:***@h/0"
    assert urls.mask("unix:///run/redis@2.sock") == "unix:///run/redis@2.sock"
    assert urls.mask("x?a=1&PASSWORD=pw&b=2") == "x?a=1&PASSWORD=***&b=2"


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0?password=hunter2-secret",
        "redis://h/0?db=1&sentinel_password=hunter2-secret",
        "redis://h/0?pass%77ord=hunter2-secret",  # a percent-encoded option name
        "redis://h/0?auth_token=hunter2-secret&db=1",
        "redis://h/0?password=hunter2&-secret",  # an unencoded & in the value
        "redis:/:hunter2-secret@h/0",  # no ://
        "redis:hunter2-secret@h/0",
        "localhost:hunter2-secret@h",
        "redis://us/er:hunter2-secret@h/0",  # a / in the user
        "redis://user:hunter2#secret@h/0",  # an unencoded # in the password
    ],
)
def test_mask_hides_every_credential_parsed_or_not(url):
    assert "hunter2" not in urls.mask(url) and "secret" not in urls.mask(url)
    try:
        settings = urls.parse(url)
    except ConfigError as exc:
        assert "hunter2" not in str(exc)
    else:
        assert "hunter2" not in repr(settings) + str(settings) + repr(settings.masked_options)


def test_bad_secret_option_value_is_not_echoed():
    settings = urls.parse("redis://h/0?sentinel_password=hunter2")
    with pytest.raises(ConfigError) as caught:
        settings.option("sentinel_password", convert=int)
    assert "hunter2" not in str(caught.value) and "sentinel_password" in str(caught.value)


def test_settings_are_immutable_and_comparable():
    first, second = urls.parse("redis://h/1"), urls.parse("redis://h:6379/1")
    assert first == second
    with pytest.raises(AttributeError):
        first.db = 2  # type: ignore[misc]


def _valkey(redis_url: str) -> str:
    """The test Redis's URL written as ``valkey://``."""
    return "valkey://" + redis_url.partition("://")[2]


def test_a_session_store_opened_by_valkey_url_saves_and_loads(redis_url):
    app_name = f"valkey_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(open_store(_valkey(redis_url), app_name=app_name)) as store:
        sid = uuid.uuid4().hex
        assert store.save(sid, b"payload", 60, None)
        assert store.load(sid).data == b"payload"
        store.delete(sid)


def test_a_cache_opened_by_valkey_url_sets_and_gets(redis_url):
    backend = open_backend(_valkey(redis_url), app_name=f"valkey_{uuid.uuid4().hex[:8]}")
    with contextlib.closing(backend):
        backend.set("greeting", "hello", 60)
        assert backend.get("greeting").value == "hello"
        backend.delete("greeting")


def test_a_task_engine_opened_by_valkey_url_takes_a_lease(redis_url):
    engine = open_engine(_valkey(redis_url), app_name=f"valkey_{uuid.uuid4().hex[:8]}")
    with contextlib.closing(engine):
        assert engine.try_lease("nightly", "worker-1", 5)
        assert not engine.try_lease("nightly", "worker-2", 5)
        engine.release_lease("nightly", "worker-1")
        assert engine.try_lease("nightly", "worker-2", 5)


def test_a_maintenance_flag_opened_by_valkey_url_is_seen_through_redis(redis_url):
    from scalekit.maintenance import State, open_flag

    app_name = f"valkey_{uuid.uuid4().hex[:8]}"
    flag = open_flag(_valkey(redis_url), app_name=app_name)
    try:
        flag.write(State(mode="down", message="upgrade"))
        assert open_flag(redis_url, app_name=app_name).read().message == "upgrade"
    finally:
        flag.clear()
        flag.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://s1:26379", "name the service"),
        ("redis+sentinel://s1/app/x", "must be a number"),
        ("redis+sentinel://s1/app/1/2", "name the service"),
        ("redis+sentinel://s1,s1:26379/app", "listed twice"),
        ("redis+sentinel://s1,/app", "every server needs a host"),
        ("redis+sentinel:hiredis://s1/app", "no driver"),
        ("redis+sentinel://:pw@s1/app?password=pw2", "give the password once"),
        ("redis+cluster://n1:7000/1", "database 0 only"),
        ("redis+cluster://n1:7000?db=2", "database 0 only"),
        ("redis+cluster://n1:7000,n1:7000", "listed twice"),
        ("redis+cluster://n1,", "every server needs a host"),
        ("redis+cluster:hiredis://n1", "no driver"),
        ("redis+cluster://:pw@n1?password=pw", "give the password once"),
    ],
)
def test_a_bad_sentinel_or_cluster_url_is_a_config_error_without_its_password(url, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        urls.parse(url)
    assert "pw" not in str(caught.value).replace("password", "")
