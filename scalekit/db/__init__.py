"""Replica selection and per-request database scope for pydal apps on many servers.

from scalekit import db
replicas = db.ReplicaSet("postgres://app:pw@db1/app", ["postgres://app:pw@db2/app"])
application = db.DBMiddleware(application, replicas, define=define_tables)
# in a view: rows = db.current().db(...).select()   (a replica for GET, the primary for POST)
"""

from scalekit.db.health import HealthMemory, HostEvent
from scalekit.db.middleware import (
    DBMiddleware,
    autocommit,
    manual,
    read_only,
    read_write,
    with_db,
)
from scalekit.db.replicas import ReplicaSet, fail_safe_round_robin
from scalekit.db.routing import SAFE_METHODS, Router
from scalekit.db.scope import ENVIRON_KEY, DBScope, current

__all__ = [
    "ENVIRON_KEY",
    "SAFE_METHODS",
    "DBMiddleware",
    "DBScope",
    "HealthMemory",
    "HostEvent",
    "ReplicaSet",
    "Router",
    "autocommit",
    "current",
    "fail_safe_round_robin",
    "manual",
    "read_only",
    "read_write",
    "with_db",
]
