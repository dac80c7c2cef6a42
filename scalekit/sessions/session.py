"""The ``Session`` object an application sees: a lazy dict with attribute access."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scalekit.sessions.engine import SessionEngine
    from scalekit.sessions.stores import Record


class Session(MutableMapping):
    """One user's session for one request.

    A mapping whose keys also read as attributes; a missing attribute reads as ``None``
    (``session.user_id`` before sign-in), as web2py's Storage does. Nothing is read from
    the store until the data is first used, and nothing is written unless it changed.
    """

    __slots__ = (
        "_body",
        "_created",
        "_data",
        "_degraded",
        "_dirty",
        "_engine",
        "_failure",
        "_forgotten",
        "_https",
        "_lock",
        "_record",
        "_renew",
        "_resend",
        "_secure",
        "_sid",
    )

    def __init__(self, engine: SessionEngine, sid: str | None, https: bool):
        setattr_ = object.__setattr__
        setattr_(self, "_engine", engine)
        setattr_(self, "_sid", sid)
        setattr_(self, "_https", https)
        setattr_(self, "_data", None)
        setattr_(self, "_record", None)
        setattr_(self, "_body", None)
        setattr_(self, "_created", None)
        setattr_(self, "_failure", None)
        setattr_(self, "_lock", None)
        setattr_(self, "_renew", False)
        setattr_(self, "_degraded", False)
        setattr_(self, "_dirty", False)  # a key was set or deleted in this request
        setattr_(self, "_forgotten", False)
        setattr_(self, "_secure", False)
        setattr_(self, "_resend", False)  # the cookie must be sent again (its attributes changed)

    # -- loading ---------------------------------------------------------------------------
    @property
    def _items(self) -> dict[str, Any]:
        if self._data is None:
            self._engine.load(self)
        return self._data

    def _loaded(self, record: Record | None, body: bytes | None, created: float, data: dict):
        object.__setattr__(self, "_record", record)
        object.__setattr__(self, "_body", body)
        object.__setattr__(self, "_created", created)
        object.__setattr__(self, "_data", data)

    # -- the mapping -----------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value
        object.__setattr__(self, "_dirty", True)

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        object.__setattr__(self, "_dirty", True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._items.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"session attributes cannot start with '_': {name}")
        self[name] = value

    def __delattr__(self, name: str) -> None:
        self._items.pop(name, None)
        object.__setattr__(self, "_dirty", True)

    def __repr__(self) -> str:
        state = "not loaded" if self._data is None else repr(self._data)
        return f"<Session {self._sid[:6] + '...' if self._sid else 'new'} {state}>"

    # -- what web2py's session offers ------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        """The id of the stored session: ``None`` for one not stored yet, one whose record
        is gone (expired, deleted, altered), and a degraded one. Reading it loads the
        session, so the id is never reported before its record was found."""
        if self._sid is not None and self._data is None:
            self._engine.load(self)
        return None if self._degraded else self._sid

    @property
    def degraded(self) -> bool:
        """True when the store failed and this request runs on an empty, unsaved session."""
        return self._degraded

    def forget(self) -> None:
        """Do not save (or touch) this session at the end of this request."""
        object.__setattr__(self, "_forgotten", True)

    def renew(self, clear: bool = False) -> None:
        """Give the session a new id at the end of the request, deleting the old record.

        Call it on sign-in and sign-out against session fixation; ``clear=True`` also drops
        the data.
        """
        data = self._items  # loaded now: the data moves to the new id
        if clear:
            data.clear()
        object.__setattr__(self, "_renew", True)
        object.__setattr__(self, "_forgotten", False)

    def clear(self) -> None:
        """Remove all data; an emptied stored session is deleted and its cookie removed."""
        self._items.clear()
        object.__setattr__(self, "_dirty", True)

    def secure(self) -> None:
        """Send this session's cookie with the Secure flag (HTTPS only) from now on."""
        object.__setattr__(self, "_secure", True)
        object.__setattr__(self, "_resend", True)
