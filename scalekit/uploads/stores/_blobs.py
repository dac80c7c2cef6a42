"""web2py's single-blob layouts that :class:`~scalekit.uploads.stores.database.DatabaseStore`
reads (``blobs=person.image:image_data``): an app's table whose upload field holds the name
and whose blob field the bytes, base 64 encoded as pydal stores a blob. Read only: the app's
rows are the app's."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydal import DAL

from scalekit.connect import sql
from scalekit.connect.sql.tables import MAX_IDENTIFIER
from scalekit.core.errors import ConfigError
from scalekit.uploads.errors import UploadCorrupt
from scalekit.uploads.names import parse_name
from scalekit.uploads.stores._tables import Tables, like
from scalekit.uploads.stores.base import UploadInfo

_LAYOUT = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*):([A-Za-z][A-Za-z0-9_]*)")
#: The upload field, the blob's length and its last two bytes (its base 64 padding) of the
#: rows of an app's table with a blob; a condition on the upload field ``{0}`` follows.
_SIZES = (
    "SELECT {0}, LENGTH({1}), SUBSTR({1}, LENGTH({1}) - 1, 2) FROM {table} "
    "WHERE {1} IS NOT NULL AND {0} "
)

#: (table, upload field)
Layout = tuple[str, str]


def parse_blobs(spec: str | dict[Layout, str], where: str) -> dict[Layout, str]:
    """``person.image:image_data,doc.file:file_data`` as ``{(table, upload field): blob
    field}``; :class:`ConfigError` naming ``where`` for anything else."""
    if isinstance(spec, dict):
        return dict(spec)
    layouts: dict[Layout, str] = {}
    for item in filter(None, (part.strip() for part in str(spec).split(","))):
        match = _LAYOUT.fullmatch(item)
        if match is None or any(len(part) > MAX_IDENTIFIER for part in match.groups()):
            raise ConfigError(
                f"{where}: blobs={item!r:.80} must be <table>.<upload field>:<blob field>, "
                "e.g. blobs=person.image:image_data"
            )
        layouts[(match[1], match[2])] = match[3]
    return layouts


class Blobs:
    """The ``blobs`` layouts of a store, and how to read them on its connections."""

    def __init__(self, spec: str | dict[Layout, str], where: str):
        #: {(table, upload field): blob field}
        self.layouts = parse_blobs(spec, where)
        self.where = where

    def __bool__(self) -> bool:
        return bool(self.layouts)

    def check(self, db: DAL) -> None:
        """:class:`ConfigError` for a layout whose table or columns are not in ``db``."""
        for (table, field), blob in self.layouts.items():
            found = sql.columns(db, table) or set()
            missing = [column for column in (field, blob) if column.lower() not in found]
            if missing:
                raise ConfigError(
                    f"{self.where}: blobs={table}.{field}:{blob}: table {table} has no column "
                    f"{', '.join(missing)} in this database"
                )

    def under(self, prefix: str) -> list[Layout]:
        """The layouts whose names may start with ``prefix``."""
        return [
            (table, field)
            for table, field in self.layouts
            if f"{table}.{field}.".startswith(prefix) or prefix.startswith(f"{table}.{field}.")
        ]

    def value(self, tables: Tables, name: str) -> bytes | None:
        """The bytes of ``name`` (read whole: one value), or None when no layout has it."""
        layout = self._layout(name)
        if layout is None:
            return None
        table, field, blob = layout
        rows = tables.run_on(
            "SELECT {0}, {1} FROM {table} WHERE {0} = ?;", table, field, blob, params=(name,)
        ).fetchall()
        values = [value for key, value in rows if key == name and value is not None]
        if not values:
            return None
        try:
            return base64.b64decode(_bytes(values[0]), validate=True)
        except (binascii.Error, ValueError):
            raise UploadCorrupt(
                f"{self.where}: upload {name}: {table}.{blob} does not hold base 64 "
                "(pydal's encoding of a blob)"
            ) from None

    def info(self, tables: Tables, name: str) -> UploadInfo | None:
        """Size of ``name`` without reading it (no time, no checksum), or None."""
        layout = self._layout(name)
        if layout is None:
            return None
        table, field, blob = layout
        rows = tables.run_on(_SIZES + "= ?;", table, field, blob, params=(name,))
        found = _infos(rows.fetchall(), f"{table}.{field}.")
        return next((info for info in found if info.name == name), None)

    def page(
        self, tables: Tables, layout: Layout, prefix: str, after: str, limit: int
    ) -> tuple[list[UploadInfo], str | None]:
        """Up to ``limit`` rows of ``layout`` whose name starts with ``prefix`` and sorts
        after ``after``: their uploads but those in the store's upload table (a copy made
        by ``scalekit uploads migrate`` is listed once), and where the next page starts
        (None: no more)."""
        (table, field), head = layout, f"{layout[0]}.{layout[1]}."
        rows = tables.run_on(
            _SIZES + "> ? AND {0} LIKE ? ESCAPE '!' ORDER BY {0} LIMIT ?;",
            table, field, self.layouts[layout],
            params=(after, like(max(prefix, head, key=len)), limit),
        ).fetchall()  # fmt: skip
        found = list(_infos(rows, head))
        copied = tables.uploads_among([info.name for info in found])
        return [info for info in found if info.name not in copied], (
            rows[-1][0] if len(rows) == limit else None
        )

    def _layout(self, name: str) -> tuple[str, str, str] | None:
        """(table, upload field, blob field) of the layout ``name`` belongs to."""
        parsed = parse_name(name)
        blob = parsed and self.layouts.get((parsed.table, parsed.field))
        return (parsed.table, parsed.field, blob) if blob else None


def _infos(rows: Iterable[tuple], head: str) -> Iterator[UploadInfo]:
    """:class:`UploadInfo` of the rows whose name is well formed and starts with ``head``:
    the size from the base 64's length and padding, no time (0)."""
    for key, length, tail in rows:
        if key.startswith(head) and parse_name(key):
            padding = _bytes(tail or b"").count(b"=") if length else 0
            yield UploadInfo(key, int(length) // 4 * 3 - padding, 0.0)


def _bytes(value: Any) -> bytes:
    """A value as the driver returned it (str, bytes, memoryview) as bytes."""
    return value.encode("ascii") if isinstance(value, str) else bytes(value)
