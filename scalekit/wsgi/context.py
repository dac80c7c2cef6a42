"""``RequestVar``: the object a middleware gives one request, for ``current()`` to find.

It lives in :mod:`scalekit.core.context` (with the context variables every piece shares);
this module keeps its old import path.
"""

from scalekit.core.context import RequestVar

__all__ = ["RequestVar"]
