"""One parser for every backend URL scalekit accepts.

``parse("redis://:pw@cache:6379/2")`` returns a typed, immutable settings object
(:class:`RedisURL` here). A URL that cannot be used raises :class:`ConfigError` naming the
URL and what is wrong. Passwords never show in ``repr``/``str`` or in error messages:
both use :func:`mask`.

Schemes::

    file:///var/app/sessions          file://relative/folder
    sqlite://storage.sqlite           sqlite:///abs/path.sqlite   sqlite:memory
    postgres://user:pw@host:5432/db   postgresql://...  postgres:psycopg2://...
    mysql://user:pw@host:3306/db      mysql:pymysql://...
    redis://[user:pw@]host[:port][/db]   rediss://... (TLS)   unix://[:pw@]/run/redis.sock?db=0
    valkey://...   valkeys://... (TLS)  the same as redis:// and rediss:// (Valkey speaks Redis)
    redis+sentinel://[:pw@]s1:26379,s2:26379/service[/db][?sentinel_password=...]
    redis+cluster://[user:pw@]n1:7000,n2:7000 (seed nodes; database 0 only)
    valkey+sentinel://...   valkey+cluster://...   the same as redis+sentinel, redis+cluster
    memcache://h1:11211,h2:11211      memcached://...
    s3://bucket[/prefix][?endpoint_url=http://127.0.0.1:9000&region=eu-west-1]
    s3://KEY:SECRET@bucket/prefix     (no key pair: boto3's own chain, e.g. AWS_* variables)

An alias gives the same settings as the scheme it stands for (``parse("valkey://h/1") ==
parse("redis://h/1")``); ``url`` and ``masked`` keep the scheme the user wrote.

Anything after ``?`` becomes ``options`` (a read-only mapping of strings) for the piece
that uses the URL to interpret with :meth:`BackendURL.option`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

from scalekit.core.errors import ConfigError

__all__ = [
    "S3URL",
    "BackendURL",
    "ClusterURL",
    "DatabaseURL",
    "FileURL",
    "MemcacheURL",
    "RedisURL",
    "SQLiteURL",
    "SentinelURL",
    "is_secret",
    "mask",
    "parse",
]

MASK = "***"
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|credential", re.IGNORECASE)
_T = TypeVar("_T")


def is_secret(name: str) -> bool:
    """Whether an option named ``name`` (e.g. ``sentinel_password``) holds a credential."""
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def mask(url: str) -> str:
    """Return ``url`` with every credential (userinfo password, secret options) as ***.

    Works on any string, a URL or not: with a malformed one it hides more rather than less
    (everything after the first ``:`` before the last ``@``, a secret option's value up to
    the next ``&name=``).
    """
    userinfo, at, rest = url.rpartition("@")
    scheme, sep, user = userinfo.partition("://")
    if not sep:
        scheme, user = "", userinfo
    name, colon, _password = user.partition(":")
    if at and colon:
        url = f"{scheme}{sep}{name}:{MASK}@{rest}"
    head, question, query = url.partition("?")
    return head + question + _mask_query(query) if question else url


def _mask_query(query: str) -> str:
    """``a=1&password=x&b=2`` -> ``a=1&password=***&b=2``; a piece without ``=`` after a
    secret (an unencoded ``&`` in it) is hidden with it."""
    pieces, hiding = [], False
    for piece in query.split("&"):
        name, equals, _value = piece.partition("=")
        if equals:
            hiding = is_secret(name)
            pieces.append(f"{name}={MASK}" if hiding else piece)
        elif not hiding:
            pieces.append(piece)
    return "&".join(pieces)


@dataclass(frozen=True, repr=False)
class BackendURL:
    """Settings common to every backend URL; subclasses add the typed fields."""

    url: str = field(compare=False)
    options: Mapping[str, str] = field(default_factory=dict, hash=False)

    kind = "backend"

    @property
    def masked(self) -> str:
        """The URL as given, password hidden: safe for logs and messages."""
        return mask(self.url)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.masked}>"

    @property
    def masked_options(self) -> dict[str, str]:
        """The options, a secret one's value (see :func:`is_secret`) as ***."""
        return {name: MASK if is_secret(name) else v for name, v in self.options.items()}

    def option(self, name: str, default: _T | None = None, convert: Callable[[str], _T] = str):
        """The option ``name`` converted with ``convert``, or ``default`` when absent."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except (TypeError, ValueError) as exc:
            shown = MASK if is_secret(name) else f"{raw!r} ({exc})"
            problem = f"option {name}={shown} is invalid"
            raise ConfigError(f"{self.masked}: {problem}") from None

    def check_options(self, allowed: Iterable[str]) -> None:
        """Raise :class:`ConfigError` if the URL has an option not in ``allowed``."""
        allowed = set(allowed)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            takes = ", ".join(sorted(allowed)) or "no options"
            problem = f"unknown option {', '.join(unknown)}; a {self.kind} URL takes {takes}"
            raise ConfigError(f"{self.masked}: {problem}")


@dataclass(frozen=True, repr=False)
class FileURL(BackendURL):
    """A folder on the local (or a shared) file system."""

    path: str = ""
    kind = "file"


@dataclass(frozen=True, repr=False)
class SQLiteURL(BackendURL):
    """An SQLite database file; a relative path is resolved by pydal against its folder."""

    path: str = ""
    kind = "sqlite"

    @property
    def memory(self) -> bool:
        return self.path == ":memory:"

    @property
    def dal_uri(self) -> str:
        """The URI to give ``pydal.DAL``."""
        return "sqlite:memory" if self.memory else f"sqlite://{self.path}"


@dataclass(frozen=True, repr=False)
class DatabaseURL(BackendURL):
    """A PostgreSQL or MySQL server database."""

    dialect: str = ""
    driver: str | None = None
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = ""
    kind = "database"

    @property
    def dal_uri(self) -> str:
        """The URI to give ``pydal.DAL`` (credentials percent-encoded: pass
        ``credential_decoder=urllib.parse.unquote`` to the DAL)."""
        scheme = f"{self.dialect}:{self.driver}" if self.driver else self.dialect
        auth = quote(self.user or "", safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{scheme}://{auth}@{host}{port}/{self.database}"


@dataclass(frozen=True, repr=False)
class RedisURL(BackendURL):
    """A Redis server over TCP (``ssl`` for ``rediss://``) or a unix socket."""

    host: str = ""
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    unix_socket: str | None = None
    kind = "redis"


@dataclass(frozen=True, repr=False)
class SentinelURL(RedisURL):
    """The primary that Redis Sentinels name for ``service``: ``sentinels`` as ``(host,
    port)`` pairs (26379 by default); ``password`` is the primary's and replicas',
    ``sentinel_password`` the Sentinels' own. ``host`` and ``port`` are unused."""

    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, repr=False)
class ClusterURL(RedisURL):
    """A Redis Cluster reached through its seed ``nodes``, ``(host, port)`` pairs (6379 by
    default): any of them tells where the others are. ``host`` and ``port`` are the first
    seed's; the database is always 0 (a Cluster has no other)."""

    nodes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, repr=False)
class MemcacheURL(BackendURL):
    """One or more memcached servers, as ``(host, port)`` pairs in the order given."""

    servers: tuple[tuple[str, int], ...] = ()
    kind = "memcache"


@dataclass(frozen=True, repr=False)
class S3URL(BackendURL):
    """A bucket of an S3-compatible object store, and a key prefix in it (``""``: the whole
    bucket; else without slashes at either end). No key pair (``access_key`` None): boto3
    finds one itself (environment, config files, an instance role). ``endpoint_url``
    None: AWS itself; ``region`` None: boto3's default."""

    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    kind = "s3"


def parse(url: str, kinds: Iterable[str] | None = None) -> BackendURL:
    """Parse a backend URL; ``kinds`` (e.g. ``{"redis", "memcache"}``) limits what is accepted."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"no backend URL given (got {url!r}); e.g. redis://localhost:6379/0")
    url = url.strip()
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ConfigError(f"{mask(url)!r}: a URL cannot contain spaces or control characters")
    if url in ("sqlite:memory", "sqlite::memory:"):
        settings: BackendURL = SQLiteURL(url=url, path=":memory:")
    else:
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ConfigError(f"{mask(url)!r} is not a URL: write scheme://..., e.g. {_EXAMPLES}")
        name, _, driver = scheme.lower().partition(":")
        name = _ALIASES.get(name, name)
        parser = _PARSERS.get(name)
        if parser is None:
            raise ConfigError(
                f"{mask(url)!r}: unknown scheme {scheme!r}; use one of {', '.join(_SCHEMES)}"
            )
        settings = parser(_Parts(url, name, driver, rest))
    if kinds is not None and settings.kind not in set(kinds):
        raise ConfigError(
            f"{settings.masked!r} is a {settings.kind} URL; this setting takes "
            f"{' or '.join(sorted(kinds))}"
        )
    return settings


class _Parts:
    """The pieces of ``scheme[:driver]://userinfo@hosts/path?query`` (RFC 3986 split)."""

    def __init__(self, url: str, scheme: str, driver: str, rest: str):
        self.url, self.scheme, self.driver = url, scheme, driver or None
        rest, _, _fragment = rest.partition("#")
        rest, _, query = rest.partition("?")
        netloc_end = len(rest) if "/" not in rest else rest.index("/")
        self.netloc, self.path = rest[:netloc_end], rest[netloc_end:]
        userinfo, at, self.hosts = self.netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        self.user = unquote(user) if at and user else None
        self.password = unquote(password) if colon else None
        self.options = self._options(query)

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{mask(self.url)!r}: {problem}")

    def _options(self, query: str) -> dict[str, str]:
        options: dict[str, str] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise self.error("the options after '?' must look like a=1&b=2") from None
        for name, value in pairs:
            if name in options:
                raise self.error(f"option {name!r} is given twice")
            options[name] = value
        return options

    def pop_secret(self, option: str) -> str | None:
        """The password after ``user:``, or the ``option`` that may give it instead."""
        given = self.options.pop(option, None)
        if given is not None and self.password is not None:
            raise self.error(f"give the {option.replace('_', ' ')} once, either before '@' "
                             f"or as ?{option}=")  # fmt: skip
        return self.password if given is None else given

    def host_port(self, text: str, default_port: int | None) -> tuple[str, int | None]:
        if text.startswith("["):
            host, bracket, after = text[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise self.error("an IPv6 address must be written [addr] or [addr]:port")
            port_text = after[1:]
        else:
            host, _, port_text = text.partition(":")
        if not port_text:
            return unquote(host), default_port
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise self.error("the port must be a number from 1 to 65535")
        return unquote(host), int(port_text)

    def reject_userinfo(self) -> None:
        if self.user is not None or self.password is not None or "@" in self.netloc:
            raise self.error(f"a {self.scheme} URL takes no user or password")

    def reject_driver(self) -> None:
        if self.driver:
            raise self.error(f"a {self.scheme} URL takes no driver (':{self.driver}')")

    def local_path(self) -> str:
        """Everything between ``://`` and ``?``: a path, relative unless it starts with /."""
        self.reject_driver()
        path = unquote(self.netloc + self.path)
        if not path:
            raise self.error(f"no path given; e.g. {self.scheme}:///var/app/data")
        return path


def _parse_file(parts: _Parts) -> FileURL:
    return FileURL(url=parts.url, options=_frozen(parts.options), path=parts.local_path())


def _parse_sqlite(parts: _Parts) -> SQLiteURL:
    return SQLiteURL(url=parts.url, options=_frozen(parts.options), path=parts.local_path())


_DATABASE_DEFAULTS = {"postgres": ("postgres", 5432), "postgresql": ("postgres", 5432),
                      "mysql": ("mysql", 3306)}  # fmt: skip


def _parse_database(parts: _Parts) -> DatabaseURL:
    dialect, default_port = _DATABASE_DEFAULTS[parts.scheme]
    host, port = parts.host_port(parts.hosts, default_port)
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise parts.error(f"name one database as the path, e.g. {dialect}://user@host/app")
    if not parts.user:
        raise parts.error(f"name the user before the host, e.g. {dialect}://user:password@host/db")
    return DatabaseURL(
        url=parts.url,
        options=_frozen(parts.options),
        dialect=dialect,
        driver=parts.driver,
        host=host,
        port=port,
        user=parts.user,
        password=parts.password,
        database=database,
    )


def _parse_redis(parts: _Parts) -> RedisURL:
    parts.reject_driver()
    password = parts.pop_secret("password")
    db_option = parts.options.pop("db", None)
    if parts.scheme == "unix":
        if parts.hosts:
            raise parts.error("a unix URL has no host: unix:///run/redis.sock?db=0")
        host, port, socket_path, db_text = "", 6379, unquote(parts.path), db_option
        if not socket_path:
            raise parts.error("no socket path given; e.g. unix:///run/redis/redis.sock")
    else:
        host, port = parts.host_port(parts.hosts, 6379)
        if not host:
            raise parts.error("no host given; e.g. redis://localhost:6379/0")
        socket_path, db_text = None, parts.path.strip("/") or None
        if db_text is not None and db_option is not None:
            raise parts.error("give the database number once, as /N or as ?db=N")
        db_text = db_text if db_text is not None else db_option
    if db_text is not None and not db_text.isdigit():
        raise parts.error("the Redis database must be a number, e.g. redis://host:6379/0")
    return RedisURL(
        url=parts.url,
        options=_frozen(parts.options),
        host=host,
        port=port or 6379,
        db=int(db_text or 0),
        username=parts.user,
        password=password,
        ssl=parts.scheme == "rediss",
        unix_socket=socket_path,
    )


def _parse_sentinel(parts: _Parts) -> SentinelURL:
    parts.reject_driver()
    example = "redis+sentinel://s1:26379,s2:26379,s3:26379/service/0"
    password = parts.pop_secret("password")
    sentinel_password = parts.options.pop("sentinel_password", None)
    service, _, db_text = parts.path.strip("/").partition("/")
    if not service or "/" in db_text:
        raise parts.error(f"name the service, and after it the database if not 0: {example}")
    if db_text and not db_text.isdigit():
        raise parts.error(f"the Redis database must be a number: {example}")
    return SentinelURL(
        url=parts.url,
        options=_frozen(parts.options),
        db=int(db_text or 0),
        username=parts.user,
        password=password,
        sentinels=_servers(parts, 26379, example),
        service=unquote(service),
        sentinel_password=sentinel_password,
    )


def _parse_cluster(parts: _Parts) -> ClusterURL:
    parts.reject_driver()
    example = "redis+cluster://n1:7000,n2:7000,n3:7000"
    password = parts.pop_secret("password")
    for db_text in (parts.path.strip("/"), parts.options.pop("db", "")):
        if db_text not in ("", "0"):
            raise parts.error(f"a Redis Cluster has database 0 only, not {db_text!r}")
    nodes = _servers(parts, 6379, example)
    return ClusterURL(
        url=parts.url,
        options=_frozen(parts.options),
        host=nodes[0][0],
        port=nodes[0][1],
        username=parts.user,
        password=password,
        nodes=nodes,
    )


def _servers(parts: _Parts, default_port: int, example: str) -> tuple[tuple[str, int], ...]:
    """The comma-separated ``host:port`` list of a URL, each named once."""
    servers: list[tuple[str, int]] = []
    for text in parts.hosts.split(","):
        host, port = parts.host_port(text.strip(), default_port)
        if not host:
            raise parts.error(f"every server needs a host: {example}")
        if (host, port) in servers:
            raise parts.error(f"server {host}:{port} is listed twice")
        servers.append((host, port))
    return tuple(servers)


def _parse_memcache(parts: _Parts) -> MemcacheURL:
    parts.reject_driver()
    parts.reject_userinfo()
    if parts.path.strip("/"):
        raise parts.error("a memcache URL has no path: memcache://h1:11211,h2:11211")
    servers = _servers(parts, 11211, "memcache://h1:11211,h2:11211")
    return MemcacheURL(url=parts.url, options=_frozen(parts.options), servers=servers)


#: S3's rule for bucket names: 3 to 63 lowercase letters, digits, dots and hyphens,
#: starting and ending with a letter or digit
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _parse_s3(parts: _Parts) -> S3URL:
    parts.reject_driver()
    example = "s3://bucket/uploads?endpoint_url=https://s3.example.com&region=eu-west-1"
    bucket = unquote(parts.hosts)
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise parts.error(  # the name not echoed: a secret key's unencoded '/' cuts it in it
            "no bucket name before the path (3-63 of a-z 0-9 . -; write a '/' in the secret "
            f"key as %2F): {example}"
        )
    prefix = unquote(parts.path).strip("/")
    if prefix and any(piece in ("", ".", "..") for piece in prefix.split("/")):
        raise parts.error("the prefix cannot hold an empty, '.' or '..' folder")
    access_key = parts.user or parts.options.pop("access_key", None)
    secret_key = parts.pop_secret("secret_key")
    if (access_key is None) != (secret_key is None):
        raise parts.error("give both the access key and the secret key (KEY:SECRET@bucket), "
                          "or neither to let boto3 find them")  # fmt: skip
    endpoint_url = parts.options.pop("endpoint_url", None)
    if endpoint_url is not None and not re.fullmatch(r"https?://[^/?#@\s]+/?", endpoint_url):
        raise parts.error(f"endpoint_url must be http(s)://host[:port]: {example}")
    region = parts.options.pop("region", None) or None
    session_token = parts.options.pop("session_token", None)
    return S3URL(
        url=parts.url,
        options=_frozen(parts.options),
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
    )


def _frozen(options: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(options))


_PARSERS: dict[str, Callable[[_Parts], Any]] = {
    "file": _parse_file,
    "sqlite": _parse_sqlite,
    "postgres": _parse_database,
    "postgresql": _parse_database,
    "mysql": _parse_database,
    "redis": _parse_redis,
    "rediss": _parse_redis,
    "unix": _parse_redis,
    "redis+sentinel": _parse_sentinel,
    "redis+cluster": _parse_cluster,
    "memcache": _parse_memcache,
    "memcached": _parse_memcache,
    "s3": _parse_s3,
}
#: Other names of a scheme: Valkey is a fork of Redis and speaks its protocol.
_ALIASES = {
    "valkey": "redis",
    "valkeys": "rediss",
    "valkey+sentinel": "redis+sentinel",
    "valkey+cluster": "redis+cluster",
}
_SCHEMES = (*_PARSERS, *_ALIASES)
_EXAMPLES = "redis://localhost:6379/0 or file:///var/app/sessions"
