"""The demo's tables and the deploy step that creates them: ``python models.py``.

Only the primary is migrated, once per deploy; app servers start with
``SCALEKIT_MIGRATE=0`` and never alter the schema (replicas cannot).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os

import config
import pictures
from pydal import DAL, Field

from scalekit import db

#: pydal's migration files. Made on app servers too: the tasks' outbox table is created
#: by the first request that defers a transactional task (scalekit.tasks.outbox).
FOLDER = os.path.join(config.DATA, "databases")
os.makedirs(FOLDER, exist_ok=True)
replicas = db.ReplicaSet(
    config.DB_PRIMARY, config.DB_REPLICAS, folder=FOLDER, pool_size=4, max_lag=5
)


def define_tables(dal: DAL, migrate: bool = False) -> None:
    """The users who signed in and their guestbook entries (with their receipts and
    pictures: the picture's file is in the upload store, the field holds its name)."""
    dal.define_table(
        "auth_user", Field("name", length=64, unique=True), Field("password_hash", length=128),
        migrate=migrate,
    )  # fmt: skip
    dal.define_table(
        "entry", Field("author", length=64), Field("body", "text"),
        Field("created_on", "datetime"),
        # its receipt (jobs.py): the task deferred when it was signed (None for entries
        # signed before receipts), then the node whose worker wrote it, and when
        Field("receipt_task", length=32), Field("receipt_by", length=64),
        Field("receipt_on", "datetime"),
        Field("picture", "upload", **pictures.store.field_options(
            max_size=config.MAX_PICTURE, autodelete=True)),
        migrate=migrate,
    )  # fmt: skip


def migrate() -> None:
    """Create or alter the tables on the primary, then close the connection. The pictures'
    store is made ready too: a database store makes its own tables when first used, and
    ``scalekit uploads gc`` opens it without making anything (a mistyped URL is an error)."""
    dal = replicas.connect(pool_size=0)
    try:
        define_tables(dal, migrate=True)
        dal.commit()
    finally:
        dal.close()
    with contextlib.closing(pictures.store.names()) as stored:  # its first use
        next(stored, None)
    pictures.store.close()


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``salt$digest`` in hex: PBKDF2-SHA256, 100 000 rounds."""
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, _ = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


if __name__ == "__main__":
    migrate()
