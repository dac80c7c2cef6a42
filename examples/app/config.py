"""The demo's settings: environment variables holding URLs, embedded defaults when unset.

With none set, everything lives under ``$SCALEKIT_DATA`` (default ``examples/app/data``):
sqlite sessions, data and deferred tasks, a disk cache, a local tickets folder, a
maintenance flag file, the receipts the tasks write, the guestbook's pictures.
"""

from __future__ import annotations

import os
import secrets

from scalekit.core.instance import app_version, node_name

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
DATA = os.path.abspath(os.environ.get("SCALEKIT_DATA") or os.path.join(HERE, "data"))
APP = os.environ.get("SCALEKIT_APP") or "guestbook"
NODE = node_name()  # $SCALEKIT_NODE, else the host name
VERSION = app_version()  # $SCALEKIT_VERSION (the deploy's tag or commit), else "unknown"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


SESSION_STORE = _env("SCALEKIT_SESSION_STORE", f"sqlite://{DATA}/sessions.sqlite")
CACHE = _env("SCALEKIT_CACHE", f"file://{DATA}/cache")
MEMCACHE = os.environ.get("SCALEKIT_MEMCACHE") or None
TICKETS = _env("SCALEKIT_TICKETS", f"file://{DATA}/errors")
DB_PRIMARY = _env("SCALEKIT_DB_PRIMARY", f"sqlite://{DATA}/storage.sqlite")
DB_REPLICAS = os.environ.get("SCALEKIT_DB_REPLICAS", "").replace(",", " ").split()
MAINTENANCE_FLAG = _env("SCALEKIT_MAINTENANCE_FLAG", f"file://{DATA}/MAINTENANCE")
MAINTENANCE_SECRET = os.environ.get("SCALEKIT_MAINTENANCE_SECRET") or None
#: The balancers whose X-Forwarded-For, -Proto, -Host and X-Request-ID are believed (by the
#: front end; gunicorn.conf.py trusts the same ones for the scheme).
TRUSTED_PROXIES = _env("SCALEKIT_TRUSTED_PROXIES", "127.0.0.1,::1").replace(",", " ").split()
#: gunicorn's worker timeout (gunicorn.conf.py sets ``timeout`` from it): a sync worker still
#: in a request after it is killed, with no answer and no ticket.
SERVER_TIMEOUT = int(_env("SCALEKIT_TIMEOUT", "30"))
#: The front end's deadline per request, in seconds: DeadlineExceeded in the view, then a 503
#: page and a ticket after 1 s of grace. With the grace it must end before SERVER_TIMEOUT
#: (the front end refuses to start otherwise) and before haproxy's ``timeout server 30s``.
DEADLINE = float(_env("SCALEKIT_DEADLINE", "25"))
#: Where the front end writes its JSON access log: "-" stdout, a file's path, "" none.
ACCESS_LOG = os.environ.get("SCALEKIT_ACCESSLOG", "-")
#: "1": every response names the node that served it in X-Node (``make cluster`` sets it).
NODE_HEADER = os.environ.get("SCALEKIT_NODE_HEADER", "0") == "1"
#: "0" on app servers of a cluster: the deploy step ``python models.py`` migrates once.
MIGRATE = os.environ.get("SCALEKIT_MIGRATE", "1") != "0"
#: Deferred tasks (the receipts, see jobs.py): SQLite on one machine, Redis or PostgreSQL
#: on a cluster. The receipts are files of the node whose worker wrote them.
TASKS = _env("SCALEKIT_TASKS", f"sqlite://{DATA}/tasks.sqlite")
RECEIPTS = os.path.join(DATA, "receipts")
#: Where the guestbook's pictures are kept (scalekit.uploads): a folder on one machine; on
#: a cluster a store every node reads (``make cluster``: PostgreSQL; an S3 bucket, a shared
#: folder).
UPLOADS = _env("SCALEKIT_UPLOADS", f"file://{DATA}/uploads")
#: The largest picture taken, in bytes: a larger request is refused (413) while it is read.
MAX_PICTURE = int(_env("SCALEKIT_MAX_PICTURE", str(5 * 1024 * 1024)))


def session_secrets() -> list[str]:
    """``$SCALEKIT_SECRET`` (comma-separated, the first signs), else a key made once and kept
    in ``DATA/secret``: every worker of this machine then signs with the same key."""
    if os.environ.get("SCALEKIT_SECRET"):
        return os.environ["SCALEKIT_SECRET"].split(",")
    return [_kept_secret("secret")]


def tasks_secret() -> str:
    """``$SCALEKIT_TASKS_SECRET`` (it signs every task), else a key kept in
    ``DATA/tasks-secret`` like the session key: the app and its task worker share it."""
    return os.environ.get("SCALEKIT_TASKS_SECRET") or _kept_secret("tasks-secret")


def _kept_secret(name: str) -> str:
    """The random key in ``DATA/name``, made by the first process that needs it."""
    path = os.path.join(DATA, name)
    os.makedirs(DATA, exist_ok=True)
    if not os.path.exists(path):  # write aside, then link: no reader sees a partial key
        temp = f"{path}.{os.getpid()}"
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as new:
            new.write(secrets.token_urlsafe(32))
        try:
            os.link(temp, path)
        except FileExistsError:  # another process was first: use its key
            pass
        finally:
            os.unlink(temp)
    with open(path) as kept:
        return kept.read().strip()
