"""Callables named by import path, so that a worker on another server finds them again.

A task stores ``"package.module:Qual.name"`` and, for a method bound to an object, the
object (its *target*). Deferrable: module-level functions, classes, builtins (``os.remove``
is ``posix:remove``), static methods, class methods (``"mod:Class.method"``, bound to the
class again), methods bound to an object (the function's path, the object as target), and
callable objects (their ``__call__``). Refused with :class:`NotDeferrable`, at defer time:
lambdas, closures and nested functions, anything defined in ``__main__`` (a worker cannot
import the web app's ``__main__``), ``functools.partial`` (defer the function with its
arguments instead), and any object whose path does not lead back to the same object.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
from collections.abc import Callable
from typing import Any

from scalekit.tasks.errors import NotDeferrable

__all__ = ["class_path", "function_path", "reference", "resolve"]


def reference(fn: Any) -> tuple[str, object | None]:
    """``(path, target)`` naming ``fn`` for a worker; :class:`NotDeferrable` says why not."""
    if isinstance(fn, functools.partial):
        raise NotDeferrable(
            f"{fn!r:.80} is a functools.partial: defer its function with the arguments "
            "instead (defer(fn, *args, **kwargs))"
        )
    if inspect.ismethod(fn) or _is_bound_builtin(fn):
        owner = fn.__self__
        if isinstance(owner, type):  # a class method, bound to its class (or a subclass)
            path, target = f"{class_path(owner)}.{fn.__name__}", None
        elif inspect.ismethod(fn):
            path, target = _path_of(fn.__func__), owner
        else:
            raise NotDeferrable(
                f"{fn!r:.80} is a method of a builtin {type(owner).__name__}: defer a "
                "function that takes the object as an argument"
            )
    elif inspect.isfunction(fn) or inspect.isclass(fn) or inspect.isbuiltin(fn):
        path, target = _path_of(fn), None
    elif callable(fn) and not isinstance(fn, types.ModuleType):
        return reference(fn.__call__)  # a callable object: its __call__, bound to it
    else:
        raise NotDeferrable(f"{fn!r:.80} is not callable")
    if resolve(path, target) != fn:
        raise NotDeferrable(f"{fn!r:.80}: its import path {path!r} leads to another object")
    return path, target


def function_path(fn: Callable[..., Any]) -> str:
    """The import path a plain function will have, checked only for what can be seen while
    its module is still being imported (a decorator registering it): a lambda, a nested
    function, ``__main__``. :func:`reference` checks the rest when the task is deferred."""
    if not inspect.isfunction(fn):
        raise NotDeferrable(f"{fn!r:.80} is not a function")
    return _path_of(fn)


def class_path(cls: type) -> str:
    """The import path of a class (a bound method's target's, a class method's)."""
    return _path_of(cls)


def resolve(path: str, target: object | None = None) -> Callable[..., Any]:
    """Import ``path`` again and return the callable (bound to ``target`` if given), checking
    that it is callable and that its own module and name are ``path``: a path that names
    something else (``os:system`` is ``posix.system``) is :class:`NotDeferrable`."""
    module, _, qualname = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not module or not qualname or "<" in qualname:
        raise NotDeferrable(f"{path!r:.120} is not an import path 'package.module:Qual.name'")
    parent, found = _lookup(module, qualname)
    if not callable(found) or not _named(found, module, qualname):
        raise NotDeferrable(f"{path!r:.120} names {found!r:.80}, not a callable of that name")
    if target is None:
        return found
    if not (inspect.isfunction(found) and isinstance(parent, type)):
        raise NotDeferrable(f"{path!r:.120} is not a method: it cannot be bound to an object")
    if not isinstance(target, parent):
        raise NotDeferrable(f"{path!r:.120} cannot be bound to a {type(target).__name__}")
    return found.__get__(target, type(target))


def _path_of(obj: Any) -> str:
    """``module:qualname`` of a function or class, refusing what a worker cannot import."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise NotDeferrable(f"{obj!r:.80} has no module and name to import it by")
    if "<lambda>" in qualname:
        raise NotDeferrable(f"{obj!r:.80} is a lambda: define a module-level function")
    if "<locals>" in qualname:
        raise NotDeferrable(
            f"{obj!r:.80} is a nested function or closure ({qualname}): a worker cannot "
            "import it; define it at module level"
        )
    if module == "__main__":
        raise NotDeferrable(
            f"{obj!r:.80} is defined in __main__: a worker cannot import the web app's "
            "__main__; move it to a module"
        )
    return f"{module}:{qualname}"


def _lookup(module: str, qualname: str) -> tuple[Any, Any]:
    """``(parent, object)`` at ``module:qualname``; :class:`NotDeferrable` if not there."""
    try:
        found: Any = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - whatever importing the module raises
        raise NotDeferrable(
            f"module {module!r:.80} cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    parent = found
    for part in qualname.split("."):
        parent = found
        try:
            found = getattr(found, part)
        except AttributeError:
            raise NotDeferrable(f"{module}:{qualname} does not exist") from None
    return parent, found


def _named(found: Any, module: str, qualname: str) -> bool:
    """Is ``found`` itself ``module:qualname`` (a class method: its class, then its name)?"""
    owner = getattr(found, "__self__", None)
    if isinstance(owner, type) and (inspect.ismethod(found) or _is_bound_builtin(found)):
        head, _, name = qualname.rpartition(".")
        return (owner.__module__, owner.__qualname__, found.__name__) == (module, head, name)
    own_module = getattr(found, "__module__", None)
    return (own_module, getattr(found, "__qualname__", None)) == (module, qualname)


def _is_bound_builtin(fn: Any) -> bool:
    """A builtin method bound to an object (``dict.fromkeys``, ``[].append``), not a
    builtin function (whose ``__self__`` is its module)."""
    owner = getattr(fn, "__self__", None)
    return inspect.isbuiltin(fn) and owner is not None and not isinstance(owner, types.ModuleType)
