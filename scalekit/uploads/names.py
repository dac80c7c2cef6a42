"""Upload names: made by the store, never taken from the client, the same in every store.

A name is web2py's ``<table>.<field>.<key>.<encoded file name>.<extension>``: pydal's
``Field.retrieve_file_properties`` and web2py's ``response.download`` read the original file
name back from it, and ``uploadseparate``'s folders (``<table>.<field>/<key[:2]>/``) come from
it. scalekit's key is 128 random bits (32 hex digits; web2py's are 16), and the file name is
encoded URL-safe base64 (web2py's older names: base 16), cut so the whole name fits one file
system name (255 bytes). Every part is ASCII letters, digits, ``_``, ``-`` or ``=``: a name
cannot hold a ``/``, a ``..``, a space or a control character, so it is safe as a file name,
an object key or a URL segment. A name that does not match :data:`NAME` is in no store.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import unicodedata
from typing import NamedTuple

from scalekit.wsgi.conditional import shown_name

__all__ = ["MAX_NAME", "NAME", "Parsed", "new_name", "original_filename", "parse_name"]

#: The longest name made or read: one file system name.
MAX_NAME = 255
NAME = re.compile(
    r"(?P<table>[A-Za-z0-9_]{1,64})\.(?P<field>[A-Za-z0-9_]{1,64})\.(?P<key>[A-Za-z0-9_-]{1,64})"
    r"(?:\.(?P<encoded>[A-Za-z0-9_=-]*))?\.(?P<extension>[A-Za-z0-9_]{1,16})"
)
_PREFIX = re.compile(r"[A-Za-z0-9_]{1,64}")
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,16})$")
_UNSAFE_IN_FILENAME = re.compile(r"['\"\s;\\/\x00-\x1f\x7f]+")  # pydal's cleanup, and more
_DEFAULT_EXTENSION = "bin"


class Parsed(NamedTuple):
    table: str
    field: str
    key: str
    encoded: str
    extension: str


def parse_name(name: object) -> Parsed | None:
    """The parts of a well-formed upload name; ``None`` for anything else (not a str, too
    long, a path, a traversal, a character outside the alphabet)."""
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return None
    match = NAME.fullmatch(name)
    if match is None:
        return None
    return Parsed(*(match.group(part) or "" for part in Parsed._fields))


def new_name(filename: str, table: str = "upload", field: str = "file") -> str:
    """A new, unguessable name for a file the client called ``filename`` (only its last
    path segment is kept, and only to be encoded: nothing of it reaches a path)."""
    if not (_PREFIX.fullmatch(table) and _PREFIX.fullmatch(field)):
        raise ValueError(f"table and field must be 1-64 letters, digits or _: {table!r}.{field!r}")
    base = _last_segment(filename)
    match = _EXTENSION.search(base)
    extension = match.group(1).lower() if match else _DEFAULT_EXTENSION
    key = secrets.token_hex(16)
    head = f"{table}.{field}.{key}."
    room = MAX_NAME - len(head) - 1 - len(extension)
    room -= room % 4  # whole base 64 quads: a cut name still decodes
    encoded = base64.urlsafe_b64encode(base.encode("utf-8")).decode("ascii")[:room]
    return f"{head}{encoded}.{extension}"


def original_filename(name: str) -> str:
    """The file name the client gave, read back from the name (base 64, or web2py's older
    base 16), made safe to show: no path, quote, semicolon, control or bidi character, ending
    in the name's extension (a long name was cut); ``<table>.<extension>`` when nothing of
    it can be read."""
    parsed = parse_name(name)
    if parsed is None:
        raise ValueError(f"not an upload name: {name!r:.80}")
    decoded = _decode(parsed.encoded)
    cleaned = shown_name(_UNSAFE_IN_FILENAME.sub("_", decoded)).strip("._ ") if decoded else ""
    if not cleaned:
        return f"{parsed.table}.{parsed.extension}"
    suffix = "." + parsed.extension
    return cleaned if cleaned.lower().endswith(suffix.lower()) else cleaned + suffix


def _decode(encoded: str) -> str | None:
    """The UTF-8 text a name's file-name part encodes, ``None`` when it does not (cut short)."""
    for decode in (_b16, _b64):
        try:
            return unicodedata.normalize("NFC", decode(encoded).decode("utf-8"))
        except (binascii.Error, ValueError):
            continue
    return None


def _b16(text: str) -> bytes:
    return base64.b16decode(text, casefold=True)


def _b64(text: str) -> bytes:
    """URL-safe base 64; a name cut inside a character loses that character only."""
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return decoded.decode("utf-8", "ignore").encode("utf-8")


def _last_segment(filename: str) -> str:
    """The file name without any folder (``/`` or ``\\``), as browsers and web2py keep it."""
    return re.split(r"[\\/]", str(filename or ""))[-1].strip()
