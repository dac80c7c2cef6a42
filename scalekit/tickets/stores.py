"""The ticket store protocol, and ``open_store(url)`` choosing a store by URL.

``file:///var/app/errors`` (or ``file://errors``, relative) is a :class:`FolderStore`;
``sqlite://...``, ``postgres://...`` and ``mysql://...`` a :class:`DatabaseStore`.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any

from scalekit.core.urls import FileURL, parse
from scalekit.tickets.ticket import Entry, Group

DEFAULT_URL = "file://errors"


@dataclass(frozen=True)
class Selection:
    """Which tickets a list or a purge takes: of ``app``, of the exception type
    ``error_type`` (as the ticket has it: ``ValueError``, ``module.Name``), created at or
    after the Unix time ``since`` and before ``until`` (to the second). None: any."""

    app: str | None = None
    error_type: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, item: Entry) -> bool:
        return (
            (self.app is None or item.app == self.app)
            and (self.error_type is None or item.error_type == self.error_type)
            and (self.since is None or item.created >= stamp(self.since))
            and (self.until is None or item.created < stamp(self.until))
        )


EVERY = Selection()


def stamp(at: float) -> str:
    """A Unix time as an :class:`Entry`'s ``created``: ``YYYY-mm-dd HH:MM:SS`` UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


class TicketStore(abc.ABC):
    """Where tickets are kept: write one, read one, list them, group them."""

    @abc.abstractmethod
    def save(self, ticket: dict[str, Any]) -> None:
        """Keep ``ticket`` (as built by :func:`scalekit.tickets.build`)."""

    @abc.abstractmethod
    def load(self, ticket_id: str) -> dict[str, Any] | None:
        """The ticket with this id, or None; :class:`CorruptData` if it cannot be read."""

    @abc.abstractmethod
    def entries(self, limit: int | None = None, selection: Selection = EVERY) -> list[Entry]:
        """The newest ``limit`` tickets (all with None) of ``selection``, newest first."""

    @abc.abstractmethod
    def summary(self) -> list[Group]:
        """Tickets grouped by exception type and location, the most frequent first."""

    @abc.abstractmethod
    def purge(self, before: float) -> int:
        """Delete the tickets created before the Unix time ``before``; how many went (the
        ones ``entries(selection=Selection(until=before))`` lists)."""

    def close(self) -> None:  # noqa: B027 (optional: stores without connections keep it)
        """Release connections; the store reopens them on next use."""


def open_store(url: str = DEFAULT_URL, *, create: bool = True, **options: Any) -> TicketStore:
    """The ticket store for ``url``; ``options`` go to the store's constructor. Without
    ``create`` (the commands that read or clean up) only an existing folder, database and
    table are opened: a missing one is :class:`~scalekit.core.errors.StoreNotFound` and
    nothing is created."""
    settings = parse(url, kinds=("file", "sqlite", "database"))
    if isinstance(settings, FileURL):
        from scalekit.tickets.folder import FolderStore

        settings.check_options(())
        return FolderStore(settings.path, create=create, **options)
    from scalekit.tickets.database import DatabaseStore

    return DatabaseStore(settings, create=create, **options)
