"""Secrets out of free text: URL passwords, ``Bearer``/``Basic`` credentials and the values
of secret-looking pairs masked, for what is kept or shown after a failure (error tickets,
a dead task's traceback). Every pattern is bounded, so scrubbing stays linear in the text's
length whatever the text."""

from __future__ import annotations

import re

from scalekit.core.urls import MASK

__all__ = ["MASK", "MAX_TEXT", "SECRET_NAME", "scrub_text"]

#: A name that says its value is a secret (header, query parameter, local, dict key).
SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|key|auth|cookie|credential|csrf|signature|private", re.IGNORECASE
)
# Every repetition below is bounded, so that scrubbing stays linear in the text's length
# whatever the text (a request body in a local, a message an attacker shaped).
_URL_PASSWORD = re.compile(
    r"\b[a-z][\w+.-]{0,30}://[^\s:/@'\"]{0,200}:(?P<value>[^\s@/'\"]{1,500})@", re.IGNORECASE
)
_AUTH_VALUE = re.compile(r"\b(?:bearer|basic)\s+(?P<value>[\w.~+/=-]{6,4000})", re.IGNORECASE)
#: ``name=value``, ``name: value``, ``'name': 'value'``, ``"name": "value"`` (JSON) and
#: ``('name', 'value')`` with a secret-looking name (of at most 80 characters, not an
#: exception's: ``KeyError: 'x'``); the value quoted (an unclosed quote: its first 1,000
#: characters), bracketed or bare.
_SECRET_PAIR = re.compile(
    rf"""((?P<q>['"])?\b[\w.-]{{0,40}}(?:{SECRET_NAME.pattern})[\w.-]{{0,40}}"""
    r"""(?<!error)(?<!exception)(?<!warning)(?(q)(?P=q))"""
    r"""\s{0,10}(?:=(?!=)|:(?!//)|(?(q),|(?!)))\s{0,10})"""
    r"""(?P<value>'(?:[^'\\]|\\.){0,1000}'|"(?:[^"\\]|\\.){0,1000}"|['"][^'"\n]{0,1000}"""
    r"""|\[[^\[\]]{0,1000}\]|\([^()]{0,1000}\)|\{[^{}]{0,1000}\}|<[^<>]{0,1000}>"""
    r"""|[^&;,\s'"()<>\[\]{}]{1,4000})""",
    re.IGNORECASE,
)
#: Longer text is scrubbed and kept as its first and last MAX_TEXT // 2 characters.
MAX_TEXT = 64 * 1024


def scrub_text(text: str) -> str:
    """``text`` with URL passwords, ``Bearer``/``Basic`` credentials and the values of
    secret-looking pairs (``name=value``, ``"name": value``...) replaced by ***; past
    ``MAX_TEXT`` characters, its middle cut out (the tail from a line's start, so that no
    value is kept without the name before it)."""
    if len(text) > MAX_TEXT:
        tail = text[-MAX_TEXT // 2 :]
        tail = tail[tail.index("\n") + 1 :] if "\n" in tail else ""
        cut = len(text) - MAX_TEXT // 2 - len(tail)
        text = f"{text[: MAX_TEXT // 2]}\n... {cut} characters cut ...\n{tail}"
    if "://" in text:
        text = _URL_PASSWORD.sub(_masked, text)
    return _SECRET_PAIR.sub(_masked, _AUTH_VALUE.sub(_masked, text))


def _masked(match: re.Match) -> str:
    """The match with its ``value`` group (the secret) replaced by ***."""
    whole, start = match.group(0), match.start()
    return whole[: match.start("value") - start] + MASK + whole[match.end("value") - start :]
