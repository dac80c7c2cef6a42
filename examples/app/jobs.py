"""The guestbook's deferred work: a receipt file per entry, written by a task worker
(``scalekit tasks worker``; ``make demo`` starts one beside gunicorn, ``make cluster`` one
per node) after the request that signed has committed."""

from __future__ import annotations

import datetime
import os

import cached
import config
import models

from scalekit.tasks import Tasks

tasks = Tasks(config.TASKS, config.APP, secret=config.tasks_secret())


def receipt_path(entry_id: int) -> str:
    return os.path.join(config.RECEIPTS, f"{int(entry_id)}.txt")


def write_receipt(entry_id: int) -> None:
    """Write ``DATA/receipts/<entry id>.txt`` and mark the entry's receipt written (by this
    node); rebuild the cached entries. Safe to run twice: a task runs at least once."""
    dal = models.replicas.connect(pool_size=0)
    try:
        models.define_tables(dal)
        entry = dal.entry(entry_id)
        if entry is None:  # deleted since
            return
        os.makedirs(config.RECEIPTS, exist_ok=True)
        path = receipt_path(entry_id)
        with open(f"{path}.{os.getpid()}", "w") as out:  # aside, then renamed: never partial
            out.write(f"Entry {entry.id} by {entry.author}, signed {entry.created_on}:\n")
            out.write(f"{entry.body}\n")
        os.replace(out.name, path)
        entry.update_record(receipt_by=config.NODE, receipt_on=datetime.datetime.now())
        dal.commit()
        cached.entries(lambda: dal, refresh=True)
    finally:
        dal.close()
