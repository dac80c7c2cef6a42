"""pydal upload fields kept in an upload store: ``Field("image", "upload",
**store.field_options())``.

pydal lets a field hand its files to four hooks (``custom_store``, ``custom_retrieve``,
``custom_retrieve_file_properties``, ``custom_delete``); these put them in the store instead
of the local ``uploads/`` folder, so ``insert(image=request.vars.image)``,
``field.store(file, filename)``, ``field.retrieve(name)``, web2py's ``response.download``,
py4web's ``Form`` and ``autodelete`` work unchanged on every server.

pydal calls a hook without the field: the name of a new upload must still carry the
field's table and name (``person.image.<key>...``, what ``scalekit uploads gc`` checks), so
the store hook takes them from the ``Field.store`` call that called it. ``custom_retrieve``
replaces pydal's whole ``retrieve``, its ``authorize`` check included: the retrieve hook
makes that check itself, as pydal does, on the ``Field.retrieve`` call that called it.
``autodelete`` removes a file only once the record's change has committed, when the request
runs in a ``scalekit.db`` transaction (pydal asks before its SQL runs).
"""

from __future__ import annotations

import inspect
import io
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydal.exceptions import NotAuthorizedException, NotFoundException
from pydal.objects import Field

from scalekit.core import context
from scalekit.core.errors import MissingContext
from scalekit.uploads.names import original_filename

if TYPE_CHECKING:
    from scalekit.uploads.stores.base import UploadStore

__all__ = ["UploadReader", "field_options"]

log = logging.getLogger("scalekit.uploads")

#: The file name pydal's ``Field.store`` passes on when it was given none (``"{}".format(None)``).
_NO_FILENAME = "None"


def field_options(
    store: UploadStore, *, max_size: int | None = None, autodelete: bool | None = None
) -> dict[str, Any]:
    """The keywords of a pydal ``Field(name, "upload", ...)`` that keep its files in
    ``store``: new uploads named after the field, larger than ``max_size`` bytes refused
    (:class:`~scalekit.uploads.errors.UploadTooLarge` while reading, nothing stored),
    ``autodelete`` (when given) passed to the field: the store's file removed when its
    record is deleted or its file replaced (after the commit, in a ``scalekit.db``
    request)."""
    hooks = _Hooks(store, max_size)
    options: dict[str, Any] = {
        "custom_store": hooks.store,
        "custom_retrieve": hooks.retrieve,
        "custom_retrieve_file_properties": hooks.file_properties,
        "custom_delete": hooks.delete,
    }
    if autodelete is not None:
        options["autodelete"] = autodelete
    return options


class _Hooks:
    """pydal's four upload hooks over one store."""

    def __init__(self, store: UploadStore, max_size: int | None):
        self.uploads = store
        self.max_size = max_size

    def store(self, file: Any, filename: str, path: str | None = None) -> str:
        """``custom_store``: save ``file`` (a file object, a ``FieldStorage``-like object
        with ``.file`` and ``.filename``, werkzeug's ``FileStorage``, bytes) under a new
        name; the name."""
        field = _calling_field(Field.store)
        if field is None:
            raise TypeError("an upload store's custom_store is called by pydal's Field.store")
        filename = _client_filename(file, filename)
        if hasattr(file, "file") and hasattr(file, "filename"):  # field.store(FieldStorage)
            file = file.file
        table = getattr(field, "tablename", "no_table")  # pydal's name for a field alone
        return self.uploads.save(
            file, filename, table=table, field=field.name, max_size=self.max_size
        )

    def retrieve(self, name: str, path: str | None = None) -> tuple[str, UploadReader]:
        """``custom_retrieve``: the original file name and a stream of the upload, read
        from the store as it is read (pydal's ``NotFoundException`` / ``UploadNotFound``
        when absent; the field's ``authorize(row)`` checked first when it has one)."""
        field = _calling_field(Field.retrieve)
        if field is not None and field.authorize:
            row = field.db(field == name).select().first()
            if row is None:
                raise NotFoundException(f"no record holds the upload {name!r:.80}")
            if not field.authorize(row):
                raise NotAuthorizedException(f"not authorized to read {name!r:.80}")
        stream = UploadReader(self.uploads.read(name), name)
        return original_filename(name), stream

    def file_properties(self, name: str, path: str | None = None) -> dict[str, str | None]:
        """``custom_retrieve_file_properties``: the original file name, and the folder of
        the file on this machine (``None``: not a local file, as pydal says of blobs)."""
        local = self.uploads.local_path(name)
        return {"path": os.path.dirname(local) if local else None,
                "filename": original_filename(name)}  # fmt: skip

    def delete(self, name: str) -> None:
        """``custom_delete`` (``autodelete``): remove the upload once the record's change
        is durable. pydal calls this before its SQL ``DELETE``/``UPDATE``: inside a request
        of ``scalekit.db`` (its transaction in :data:`scalekit.core.context.transaction`)
        the file goes once that transaction has committed, and a rollback keeps it for the
        record that still names it; elsewhere (no request transaction, a manual view) now,
        as pydal does with files."""
        try:
            context.transaction.get().on_commit(lambda: self._remove(name))
        except MissingContext:
            self._remove(name)

    def _remove(self, name: str) -> None:
        """Delete the upload; a store that cannot be reached leaves it (logged) for
        ``scalekit uploads gc``, which removes it once no record names it."""
        try:
            self.uploads.delete(name)
        except OSError as exc:  # StoreUnavailable among them
            log.warning("upload %s not deleted, left for gc: %s", name, exc)


def _client_filename(file: Any, given: str) -> str:
    """The file name the client gave. pydal passes ``"None"`` when it was given none, and
    the form field's name (``.name``) of an object it does not know as a form's file
    (werkzeug's ``FileStorage``): such an object's own ``.filename`` then, else the base
    name of a file's ``.name``."""
    own = getattr(file, "filename", None)
    name = getattr(file, "name", None)
    if isinstance(own, str) and given in (_NO_FILENAME, name):
        return own
    if given == _NO_FILENAME:
        return os.path.basename(str(name or ""))
    return given


def _calling_field(method: Any) -> Field | None:
    """The pydal ``Field`` whose ``method`` (``Field.store``, ``Field.retrieve``) called
    the hook that calls this; ``None`` when a hook was called some other way."""
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        if caller is None or caller.f_code is not method.__code__:
            return None
        field = caller.f_locals.get("self")
        return field if isinstance(field, Field) else None
    finally:
        del frame


class UploadReader(io.RawIOBase):
    """A read-only file object over an upload's chunks, fetched from the store as they are
    read (never the whole upload in memory unless ``read()`` asks for all of it); closing
    it closes the store's read. ``name`` is the upload's name."""

    def __init__(self, chunks: Iterator[bytes], name: str):
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        super().close()
