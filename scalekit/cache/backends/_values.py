"""What the cache stores as tagged JSON beyond :mod:`scalekit.core.tagged_json`'s defaults:
dicts with any keys (``{1: "a"}`` reads back with its int key, as pickle keeps it),
pydal's ``Rows`` and ``Row``, so ``db(q).select(cache=(cache.redis, 60), cacheable=True)``
works on every backend without pickles, and ``memoryview`` (psycopg2's blobs, in the raw
rows pydal caches when ``cacheable`` is not given).

A ``Rows`` is kept as its column names, its records (each ``Row`` a dict of values and of
one ``Row`` per table) and its DAL's ``db_uid``, as pydal's own pickling keeps it: read back,
it belongs to this thread's DAL of that uid, and pydal's ``_cached_select`` gives it its
fields again. Reference values become plain ints, as with pickle. pydal is imported only to
read a ``Rows`` back (an app that stores one has imported it already).
"""

from __future__ import annotations

from typing import Any

from scalekit.core import tagged_json


def _rows_to_plain(rows: Any) -> dict[str, Any]:
    db = rows.db
    return {
        "db": None if db is None else db._db_uid,
        "colnames": list(rows.colnames),
        "compact": bool(rows.compact),
        "records": list(rows.records),
    }


def _rows_from_plain(plain: dict[str, Any]) -> Any:
    from pydal import DAL
    from pydal.objects import Rows

    uid = plain["db"]
    db = None if uid is None else DAL("<zombie>", db_uid=str(uid))
    rows = Rows(db, list(plain["records"]), list(plain["colnames"]), bool(plain["compact"]))
    del rows.fields  # as a pickle leaves it: pydal's _cached_select restores them
    return rows


def _row_to_plain(row: Any) -> dict[str, Any]:
    plain = dict(row)
    if "update_record" in plain:  # pydal adds it, and reference sets, unless cacheable=True
        raise tagged_json.NotJSON(
            "is a pydal Row with update_record; select with cacheable=True to cache it"
        )
    return plain


def _row_from_plain(plain: dict[str, Any]) -> Any:
    from pydal.objects import Row

    return Row(plain)


#: The tagged JSON of every cache backend that serializes (``serializer="json"``).
CACHE_JSON = tagged_json.Extension(any_keys=True)
CACHE_JSON.register("pydal.objects.Rows", " rows", _rows_to_plain, _rows_from_plain, "pydal Rows")
CACHE_JSON.register("pydal.objects.Row", " row", _row_to_plain, _row_from_plain, "pydal Row")
CACHE_JSON.register("builtins.memoryview", " memoryview", bytes, memoryview, "memoryview")
