"""Sessions that any server behind the load balancer can read.

from scalekit import sessions
store = sessions.open_store("redis://cache:6379/0", app_name="shop")
application = sessions.SessionMiddleware(application, store, secret=SECRETS)
# in a view: session = sessions.current(); session.user_id = 42
"""

from scalekit.sessions.engine import SessionEngine
from scalekit.sessions.middleware import ENVIRON_KEY, SessionMiddleware, current, with_session
from scalekit.sessions.session import Session
from scalekit.sessions.stores import ANY, Record, SessionStore, open_store

__all__ = [
    "ANY",
    "ENVIRON_KEY",
    "DatabaseStore",
    "FileStore",
    "MemcacheStore",
    "Record",
    "RedisStore",
    "Session",
    "SessionEngine",
    "SessionMiddleware",
    "SessionStore",
    "current",
    "open_store",
    "with_session",
]


def __getattr__(name: str):
    """The store classes, imported on first use (each pulls in its client library)."""
    from scalekit.sessions import stores

    return getattr(stores, name)
