"""Cache: web2py's ``cache`` object, with ``cache.ram``, ``cache.disk``, ``cache.memcache``
and ``cache.redis``, each a :class:`CacheModel` opened from a URL or a backend.

The models are plain attributes, so ``cache.ram = cache.disk = cache.redis`` makes every
``cache.ram(...)`` in an application use Redis: web2py's one-line answer to running on many
servers. Calling the object gives web2py's decorator, ``cache.action`` caches whole WSGI
responses.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import string
import warnings
from collections.abc import Callable
from typing import Any

from scalekit.cache.backends import open_backend
from scalekit.cache.backends.base import CacheBackend
from scalekit.cache.backends.disk import DiskBackend
from scalekit.cache.backends.prefixed import PrefixedBackend
from scalekit.cache.backends.ram import RamBackend
from scalekit.cache.model import DEFAULT, CacheModel
from scalekit.core.checks import check_app_name
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError

_MODELS = ("ram", "disk", "memcache", "redis")
_HOW = {
    "memcache": 'Cache(app_name, memcache="memcache://m1:11211,m2:11211")',
    "redis": 'Cache(app_name, redis="redis://cache:6379/0")',
}
_LONG_ARGS = 200  # default keys hash argument reprs longer than this

ModelSpec = CacheModel | CacheBackend | str
_MODEL_OPTIONS = frozenset(
    name
    for name, param in inspect.signature(CacheModel).parameters.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
)


class Cache:
    """The models of one application; ``defaults`` go to every model it opens.

    ``ram`` and ``disk`` exist always (a :class:`RamBackend`, a :class:`DiskBackend` on
    ``folder``, default ``cache`` under the current directory, like web2py's app cache
    folder); ``memcache`` and ``redis`` only when configured. Each may be given as a URL, a
    backend or a model. Model defaults: ``time_expire`` (300), ``single_flight``,
    ``lease_ttl`` (30), ``wait_timeout`` (10), ``keep_stale`` (300), ``on_error``
    ("fail_open"), ``log_interval`` (30), see :class:`CacheModel`.
    """

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        app_name: str = "app",
        ram: ModelSpec | None = None,
        disk: ModelSpec | None = None,
        memcache: ModelSpec | None = None,
        redis: ModelSpec | None = None,
        *,
        folder: str = "cache",
        **defaults: Any,
    ):
        object.__setattr__(self, "app_name", check_app_name(app_name))
        unknown = sorted(set(defaults) - _MODEL_OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown cache option {', '.join(unknown)}; "
                f"takes {', '.join(sorted(_MODEL_OPTIONS))}"
            )
        object.__setattr__(self, "defaults", dict(defaults))
        CacheModel(RamBackend(app_name), **defaults)  # reject bad values now, not on first use
        self.ram = ram if ram is not None else RamBackend(app_name)
        self.disk = disk if disk is not None else DiskBackend(folder, app_name)
        if memcache is not None:
            self.memcache = memcache
        if redis is not None:
            self.redis = redis

    @property
    def app(self) -> str:
        """The former name of :attr:`app_name`, read-only, kept for one release."""
        warnings.warn("Cache.app is now app_name", DeprecationWarning, stacklevel=2)
        return self.app_name

    def model(self, spec: ModelSpec) -> CacheModel:
        """A model for ``spec``: a model as is, a backend or a URL with this cache's defaults."""
        if isinstance(spec, CacheModel):
            return spec
        if isinstance(spec, str):
            spec = open_backend(spec, app_name=self.app_name)
        if isinstance(spec, CacheBackend):
            return CacheModel(spec, **self.defaults)
        raise ConfigError(f"a cache model is a URL, a CacheBackend or a CacheModel: {spec!r:.60}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _MODELS:
            value = self.model(value)
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name in _HOW:
            raise ConfigError(f"cache.{name} is not configured; open it with {_HOW[name]}")
        raise AttributeError(name)

    def __repr__(self) -> str:
        names = [name for name in _MODELS if name in self.__dict__]
        return f"<Cache app_name={self.app_name!r} {' '.join(names)}>"

    def close(self) -> None:
        """Close every model's backend (clients reopen on next use)."""
        for name in _MODELS:
            model = self.__dict__.get(name)
            if model is not None:
                model.backend.close()

    def resolve(self, cache_model: CacheModel | str | None) -> CacheModel:
        """The model a decorator names: a model, a name ("redis") or ``None`` (cache.ram)."""
        if cache_model is None:
            return self.ram
        if isinstance(cache_model, str):
            if cache_model not in _MODELS:
                raise ConfigError(f"cache_model={cache_model!r}: use one of {', '.join(_MODELS)}")
            return getattr(self, cache_model)
        if isinstance(cache_model, CacheModel):
            return cache_model
        raise ConfigError(f"cache_model must be a CacheModel or its name, not {cache_model!r:.60}")

    def with_prefix(self, cache_model: CacheModel | str | None, prefix: str) -> CacheModel:
        """web2py's ``cache.with_prefix(cache.ram, "blog:")``: a model on the same backend,
        with the same options, that puts ``prefix`` before every key; so
        ``cache.ram = cache.with_prefix(cache.ram, "blog:")`` prefixes every ``cache.ram``
        key, and its ``clear()`` removes only the prefixed ones."""
        model = self.resolve(cache_model)
        options = {name: getattr(model, name) for name in _MODEL_OPTIONS}
        return CacheModel(PrefixedBackend(model.backend, prefix), **options)

    # -- decorators ---------------------------------------------------------------------
    def __call__(
        self,
        key: str | Callable | None = None,
        time_expire: float | None = DEFAULT,
        cache_model: CacheModel | str | None = None,
        single_flight: bool | None = None,
    ) -> Callable:
        """``@cache("user:{user_id}", time_expire=60, cache_model=cache.redis)``.

        ``key`` may hold format fields filled from the call's arguments, by name or position
        (``"{0}"``); without fields it is one key for every call. With no key, the key is the
        function's module and qualified name plus the repr of its arguments (hashed when
        long). A model given by name ("redis") or left as ``None`` (cache.ram) is looked up
        at call time, so later reassignments of ``cache.ram`` apply.
        """
        if callable(key):  # @cache without parentheses
            return self()(key)

        def decorate(func: Callable) -> Callable:
            make_key = _key_maker(func, key)

            @functools.wraps(func)
            def cached(*args: Any, **kwargs: Any) -> Any:
                model = self.resolve(cache_model)
                return model(
                    make_key(args, kwargs), lambda: func(*args, **kwargs), time_expire,
                    single_flight,
                )  # fmt: skip

            return cached

        return decorate

    def action(
        self,
        time_expire: float | None = 300,
        cache_model: CacheModel | str | None = None,
        **options: Any,
    ) -> Callable:
        """Cache whole WSGI responses; ``options`` (``public``, ``prefix``, ``vary``,
        ``allow_cookies``, ``user_key``, ``valid_statuses``): see
        :func:`scalekit.cache.action.cache_action`."""
        from scalekit.cache.action import cache_action

        return cache_action(self, time_expire, cache_model, **options)


def _key_maker(func: Callable, key: str | None) -> Callable[[tuple, dict], str]:
    """A function from a call's ``(args, kwargs)`` to its cache key."""
    if key is None:
        name = f"{func.__module__}.{func.__qualname__}"

        def default_key(args: tuple, kwargs: dict) -> str:
            described = repr(args) + (repr(sorted(kwargs.items())) if kwargs else "")
            if len(described) > _LONG_ARGS:
                described = "#" + hashlib.sha256(described.encode("utf-8", "replace")).hexdigest()
            return f"{name}:{described}"

        return default_key
    if not isinstance(key, str):
        raise ConfigError(f"a cache key must be a str, not {key!r:.60}")
    fields = [field for _, field, _, _ in string.Formatter().parse(key) if field is not None]
    if not fields:
        return lambda args, kwargs: key
    signature = inspect.signature(func)

    def formatted_key(args: tuple, kwargs: dict) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            return key.format(*bound.args, **bound.arguments)
        except (KeyError, IndexError, AttributeError) as exc:
            params = ", ".join(signature.parameters)
            raise ConfigError(
                f"cache key {key!r} of {func.__qualname__}: {exc!r} is not among its "
                f"arguments ({params})"
            ) from None

    return formatted_key
