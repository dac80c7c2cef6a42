"""What the database upload store's tests share beside their fixtures: data, sizes, and
how to look at the store's rows through a connection of the test's own."""

from __future__ import annotations

import hashlib

from pydal import DAL

#: Longest wait for a call that should end (a guard against a hang, not a timing).
GUARD = 30
SMALL = 1000  # chunk_size of most tests: many rows from a few kB
#: Which chunk rows are the upload ``?``'s, in a WHERE clause (``.format(table)``).
OF_UPLOAD = "write_id = (SELECT write_id FROM {} WHERE name = ?)"


def data(size: int, seed: str = "x") -> bytes:
    """``size`` deterministic, incompressible bytes."""
    count = -(-size // 32)
    return b"".join(hashlib.sha256(f"{seed}{n}".encode()).digest() for n in range(count))[:size]


def run(db: DAL, statement: str, *params) -> list:
    """Run one statement (``?`` marks parameters) and commit; its rows, if any."""
    marker = "?" if db._adapter.driver.paramstyle == "qmark" else "%s"
    db._adapter.execute(statement.replace("?", marker), params)
    rows = db._adapter.cursor.fetchall() if db._adapter.cursor.description else []
    db.commit()
    return rows


def chunk_rows(db: DAL, table: str, name: str) -> list[tuple[int, int]]:
    """(seq, length) of the chunk rows of the upload ``name``."""
    rows = run(
        db,
        f"SELECT c.seq, c.data FROM {table}_chunk c JOIN {table} u ON c.write_id = u.write_id "
        "WHERE u.name = ? ORDER BY c.seq;",
        name,
    )
    return [(seq, len(data)) for seq, data in rows]


def all_chunk_rows(db: DAL, table: str) -> int:
    """How many chunk rows the store's table holds, whoever's."""
    return run(db, f"SELECT COUNT(*) FROM {table}_chunk;")[0][0]
