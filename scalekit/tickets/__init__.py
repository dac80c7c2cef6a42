"""Error tickets: capture failures locally, collect them into a database, browse them.

from scalekit import tickets
application = tickets.TicketMiddleware(application, "file:///srv/app/errors", app_name="shop")
# cron: */5 * * * * scalekit tickets2db --folder /srv/app/errors --db postgres://... -o
# retention: 30 3 * * * scalekit tickets --store postgres://... purge --older-than 30d
# browse: scalekit tickets --store postgres://... summary (or serve), or mount TicketViewer
"""

from scalekit.tickets.folder import FolderStore
from scalekit.tickets.middleware import ENVIRON_KEY, TicketMiddleware, error_body, with_tickets
from scalekit.tickets.stores import Selection, TicketStore, open_store
from scalekit.tickets.ticket import SCHEMA_VERSION, Entry, Group, build, summarize
from scalekit.tickets.viewer import TicketViewer

__all__ = [
    "ENVIRON_KEY",
    "SCHEMA_VERSION",
    "DatabaseStore",
    "Entry",
    "FolderStore",
    "Group",
    "Selection",
    "TicketMiddleware",
    "TicketStore",
    "TicketViewer",
    "build",
    "collect",
    "error_body",
    "open_store",
    "summarize",
    "with_tickets",
]


def __getattr__(name: str):
    """The database pieces, imported on first use (they pull in pydal)."""
    if name == "DatabaseStore":
        from scalekit.tickets.database import DatabaseStore

        return DatabaseStore
    if name == "collect":
        from scalekit.tickets.transfer import collect

        return collect
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
