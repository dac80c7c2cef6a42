"""The exceptions scalekit raises: one base class, one subclass per kind of failure.

Each is also the builtin exception a caller would naturally catch (``ConfigError`` is a
``ValueError``, ``NotAFolder`` a ``NotADirectoryError``...), so ``except ScalekitError`` and
``except ValueError`` both work. Messages name the URL, file or key involved and say how to
fix it; they never carry a password (URLs are masked with :func:`scalekit.core.urls.mask`).
"""


class ScalekitError(Exception):
    """Base class of every error scalekit raises on purpose."""


class ConfigError(ScalekitError, ValueError):
    """A setting is wrong: a bad backend URL, an unknown option, a missing secret."""


class NotAFolder(ConfigError, NotADirectoryError):
    """A setting names a folder that does not exist, or a path that is not a folder."""


class StoreNotFound(ScalekitError, FileNotFoundError):
    """A store to read or clean up does not exist: a database file, a table, a folder.
    Commands that open existing stores only raise it instead of creating one (a typo in
    ``--app`` or a path must not make a new, empty store)."""


class InvalidArgument(ScalekitError, ValueError):
    """A call got a value it cannot work with: a malformed key or session id, a negative
    time, a counter to increment that holds no int."""


class InvalidArgumentType(ScalekitError, TypeError):
    """A call got an argument of the wrong type: a delta that is not an int, a payload that
    is not bytes."""


class MissingContext(ScalekitError, LookupError):
    """A helper that needs the current request's session or database scope was called
    outside the middleware or decorator that provides it."""


class StoreUnavailable(ScalekitError, ConnectionError):
    """A backend (Redis, memcached, a database, a folder) cannot be reached right now."""


class CorruptData(ScalekitError):
    """A store handed back bytes that cannot be decoded; the record is left in place."""


class SerializationError(ScalekitError, TypeError):
    """A value cannot be serialized with the configured serializer (or is too large)."""


class ConflictError(ScalekitError):
    """A concurrent writer changed a record between our read and our write."""


class CacheUnavailable(StoreUnavailable):
    """A cache backend cannot be reached and the cache runs with ``on_error="fail_closed"``."""


class DatabaseUnavailable(StoreUnavailable):
    """No database of a :class:`scalekit.db.ReplicaSet` can serve the request: for a write,
    the primary; for a read, every replica and the primary."""
