"""Old names kept working for one release: the one way a public keyword is renamed, and
the one way a module keeps answering at its old import path."""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from scalekit.core.errors import ConfigError

__all__ = ["moved_module", "renamed_keyword"]

Function = TypeVar("Function", bound=Callable[..., Any])


def renamed_keyword(old: str, new: str) -> Callable[[Function], Function]:
    """Let a function still take its keyword argument ``old``, now named ``new``.

    A call passing ``old=`` gets a ``DeprecationWarning`` pointing at the caller and is
    passed on as ``new=``; passing both raises :class:`ConfigError`. A call without
    ``old=`` costs one dict membership test.
    """

    def rename(function: Function) -> Function:
        name = function.__qualname__.removesuffix(".__init__")
        message = f"{name}: {old}= is now {new}="

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise ConfigError(f"{name}: pass {new}= only ({old}= is its former name)")
                warnings.warn(message, DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return call  # type: ignore[return-value]

    return rename


def moved_module(old: str, new: str) -> None:
    """Make the module being imported as ``old`` the module ``new``, with a
    ``DeprecationWarning`` pointing at the import: ``import old`` then gives the very same
    module object (its classes, its state), not a copy."""
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
