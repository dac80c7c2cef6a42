"""The ticket store protocol, and ``open_store(url)`` choosing a store by URL.

``file:///var/app/errors`` (or ``file://errors``, relative) is a :class:`FolderStore`;
``sqlite://...``, ``postgres://...`` and ``mysql://...`` a :class:`DatabaseStore`.
"""

from __future__ import annotations

import abc
from typing import Any

from scalekit.core.urls import FileURL, parse
from scalekit.tickets.ticket import Entry, Group

DEFAULT_URL = "file://errors"


class TicketStore(abc.ABC):
    """Where tickets are kept: write one, read one, list them, group them."""

    @abc.abstractmethod
    def save(self, ticket: dict[str, Any]) -> None:
        """Keep ``ticket`` (as built by :func:`scalekit.tickets.build`)."""

    @abc.abstractmethod
    def load(self, ticket_id: str) -> dict[str, Any] | None:
        """The ticket with this id, or None; :class:`CorruptData` if it cannot be read."""

    @abc.abstractmethod
    def entries(self, limit: int | None = None) -> list[Entry]:
        """The newest ``limit`` tickets (all with None), newest first."""

    @abc.abstractmethod
    def summary(self) -> list[Group]:
        """Tickets grouped by exception type and location, the most frequent first."""

    def close(self) -> None:  # noqa: B027 (optional: stores without connections keep it)
        """Release connections; the store reopens them on next use."""


def open_store(url: str = DEFAULT_URL, **options: Any) -> TicketStore:
    """The ticket store for ``url``; ``options`` go to the store's constructor."""
    settings = parse(url, kinds=("file", "sqlite", "database"))
    if isinstance(settings, FileURL):
        from scalekit.tickets.folder import FolderStore

        settings.check_options(())
        return FolderStore(settings.path, **options)
    from scalekit.tickets.database import DatabaseStore

    return DatabaseStore(settings, **options)
