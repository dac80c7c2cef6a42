"""What the trusted proxies say about the client, applied to the environ; what anybody else
says, removed from it.

Only when the TCP peer (``REMOTE_ADDR``) is one of ``trusted_proxies`` are its forwarding
headers believed, and then one family of them:

- ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` when the peer sent any of the three (every
  common balancer sets them: haproxy, nginx, Apache, cloud load balancers), else
- RFC 7239 ``Forwarded`` (``for=``, ``proto=``, ``host=``).

Never both: a balancer that sets X-Forwarded-* usually passes a client's own ``Forwarded``
on untouched, and mixing the two would let the client's fill what the balancer left out.

The client is the first hop, read right to left, that is not a trusted proxy
(:func:`scalekit.wsgi.proxies.client_hop`); its scheme and host are those the same hop's
proxy recorded: ``Forwarded``'s element of that hop, or the X-Forwarded-Proto/-Host entry at
the same position when the header has one entry per X-Forwarded-For hop, else its right-most
entry (the one our nearest proxy wrote). A client that is not an address (garbage, an
RFC 7239 ``unknown`` or obfuscated ``_name``, a chain longer than the walk reads) is
``unknown`` (or that ``_name``) in ``REMOTE_ADDR``: never the proxy's address, which
allow-lists may hold. A scheme other than http/https and a host that is not ``host[:port]``
are ignored. Every other forwarding header (X-Real-IP, X-Forwarded-Ssl, ...) is removed, from
trusted peers too: nothing below can be fooled by one the balancer did not set.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

from scalekit.wsgi.environ import PEER_KEY
from scalekit.wsgi.proxies import (
    CUT,
    client_hop,
    forwarded_hops,
    networks,
    parse_address,
    within,
)

__all__ = ["FORWARDING_HEADERS", "Forwarding", "strip_hop_by_hop"]

_X_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")
_FORWARDED = "HTTP_FORWARDED"
#: Every header a proxy may use to tell the app about the client, as environ keys: those
#: read here and those that other software believes (gunicorn, werkzeug, Django, Rails...).
FORWARDING_HEADERS = frozenset(
    {
        *_X_FORWARDED,
        _FORWARDED,
        "HTTP_X_FORWARDED_PORT",
        "HTTP_X_FORWARDED_PREFIX",
        "HTTP_X_FORWARDED_SERVER",
        "HTTP_X_FORWARDED_SSL",
        "HTTP_X_FORWARDED_PROTOCOL",
        "HTTP_X_FORWARDED_SCHEME",
        "HTTP_X_URL_SCHEME",
        "HTTP_FRONT_END_HTTPS",
        "HTTP_X_REAL_IP",
        "HTTP_X_CLIENT_IP",
        "HTTP_TRUE_CLIENT_IP",
        "HTTP_X_CLUSTER_CLIENT_IP",
        "HTTP_CF_CONNECTING_IP",
        "HTTP_FASTLY_CLIENT_IP",
        "HTTP_X_ORIGINAL_FORWARDED_FOR",
        "HTTP_X_ORIGINAL_HOST",
    }
)
_UNBELIEVED_X = tuple(FORWARDING_HEADERS - set(_X_FORWARDED))
_UNBELIEVED_FORWARDED = tuple(FORWARDING_HEADERS - {_FORWARDED})
_ALL = tuple(FORWARDING_HEADERS)
_SCHEMES = frozenset({"http", "https"})
_PORTS = {"http": "80", "https": "443"}
# host[:port]: a name (letters, digits, . _ -) or a bracketed IPv6 address; nothing else (no
# space, /, @, \, comma): a forged host cannot smuggle a path or credentials into a URL.
_HOST = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::([0-9]{1,5}))?")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]{1,63}")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


class Forwarding:
    """The trusted proxies' headers applied to one request's environ (see the module
    docstring). ``trusted_proxies``: addresses and networks of the balancers that set them;
    none (the default): nobody's are believed, and they are removed from every request."""

    def __init__(self, trusted_proxies: Iterable[str] | str = ()):
        self.trusted = networks(trusted_proxies, "trusted_proxies")
        # The peers are the balancers: a few addresses, each parsed once.
        self._peer_trusted = functools.lru_cache(maxsize=256)(self._check_peer)

    def trusts(self, environ: dict) -> bool:
        """Whether the TCP peer is a trusted proxy, or there are no trusted proxies at all
        (the app faces its clients): may its headers be believed? The same answer before and
        after :meth:`apply` (which keeps the peer in ``environ[PEER_KEY]``)."""
        if not self.trusted:
            return True
        return self._peer_trusted(environ.get(PEER_KEY, environ.get("REMOTE_ADDR", "")))

    def apply(self, environ: dict) -> None:
        """From a trusted peer, its client, scheme and host in ``REMOTE_ADDR``,
        ``wsgi.url_scheme``, ``HTTP_HOST``, ``SERVER_NAME``/``SERVER_PORT``; from any other
        peer, the forwarding headers removed. The peer is kept in ``environ[PEER_KEY]``; a
        second call on the same environ does nothing."""
        if PEER_KEY in environ:
            return
        peer = environ[PEER_KEY] = environ.get("REMOTE_ADDR", "")
        if self.trusted and self._peer_trusted(peer):
            self._apply_trusted(environ)
        elif not FORWARDING_HEADERS.isdisjoint(environ):
            for key in _ALL:
                environ.pop(key, None)

    def _check_peer(self, peer: str) -> bool:
        address = parse_address(peer)
        return address is not None and within(address, self.trusted)

    def _apply_trusted(self, environ: dict) -> None:
        if any(key in environ for key in _X_FORWARDED):
            hops = forwarded_hops(environ.get("HTTP_X_FORWARDED_FOR", ""))
            index, address = client_hop(hops, self.trusted)
            proto = _aligned(environ.get("HTTP_X_FORWARDED_PROTO", ""), index, len(hops))
            host = _aligned(environ.get("HTTP_X_FORWARDED_HOST", ""), index, len(hops))
            unbelieved = _UNBELIEVED_X
        elif _FORWARDED in environ:
            elements = [_element(entry) for entry in forwarded_hops(environ[_FORWARDED])]
            hops = [element.get("for") or CUT for element in elements]
            index, address = client_hop(hops, self.trusted)
            chosen = elements[index] if index >= 0 else {}
            proto, host = chosen.get("proto"), chosen.get("host")
            unbelieved = _UNBELIEVED_FORWARDED
        else:  # nothing of what is read here: the others (X-Real-IP...) go all the same
            unbelieved, index, proto, host = _ALL, -1, None, None
        for key in unbelieved:
            environ.pop(key, None)
        if index >= 0:
            environ["REMOTE_ADDR"] = str(address) if address is not None else _unknown(hops[index])
            environ.pop("REMOTE_PORT", None)  # the peer's, not the client's
        scheme = (proto or "").strip().lower()
        if scheme in _SCHEMES:
            environ["wsgi.url_scheme"] = scheme
        if host and _split_host(host):
            environ["HTTP_HOST"] = host
        server = _split_host(environ.get("HTTP_HOST", ""))
        if server:
            name, port = server
            environ["SERVER_NAME"] = name
            environ["SERVER_PORT"] = port or _PORTS.get(environ.get("wsgi.url_scheme"), "80")


def _aligned(value: str, index: int, hops: int) -> str | None:
    """The entry of X-Forwarded-Proto/-Host ``value`` recorded with the client's hop: at
    ``index`` when there is one entry per hop, else the right-most; None when empty."""
    entries = forwarded_hops(value)
    if not entries:
        return None
    return entries[index] if len(entries) == hops and index >= 0 else entries[-1]


def _element(text: str) -> dict[str, str]:
    """One ``Forwarded`` element's for/proto/host (``for=1.2.3.4;proto=https``), quoted
    strings unquoted; {} for a malformed element (a parameter twice, broken quotes)."""
    params: dict[str, str] = {}
    for pair in text.split(";"):
        name, equals, value = pair.partition("=")
        name = name.strip().lower()
        if not equals or name in params:
            return {}
        value = value.strip()
        if value.startswith('"'):
            quoted = _QUOTED.fullmatch(value)
            if quoted is None:
                return {}
            value = _UNESCAPE.sub(r"\1", quoted.group(1))
        params[name] = value
    return params


def _unknown(hop: str) -> str:
    """``REMOTE_ADDR`` for a client's hop that is not an address: its RFC 7239 obfuscated
    identifier (``_name``), else ``unknown``."""
    name = hop.partition(":")[0]
    return name if _OBFUSCATED.fullmatch(name) else CUT


def _split_host(host: str) -> tuple[str, str | None] | None:
    """``(name, port or None)`` of a valid ``host[:port]``, else None."""
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    name, port = match.groups()
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
    if port is not None and not 0 < int(port) < 65536:
        return None
    return name, port


# -- hop-by-hop request headers -------------------------------------------------------------
_HOP_BY_HOP = (
    "HTTP_CONNECTION",
    "HTTP_KEEP_ALIVE",
    "HTTP_PROXY_AUTHORIZATION",
    "HTTP_PROXY_CONNECTION",
    "HTTP_TE",
    "HTTP_TRAILER",
    "HTTP_TRANSFER_ENCODING",
    "HTTP_UPGRADE",
)
_HOP_BY_HOP_KEYS = frozenset(_HOP_BY_HOP)
# Never removed because Connection lists them: the message's framing and host, and what the
# balancer adds for the app (a client could otherwise have a proxy's value dropped).
_END_TO_END = frozenset(
    {
        "HTTP_HOST",
        "HTTP_CONTENT_LENGTH",
        "HTTP_CONTENT_TYPE",
        "HTTP_X_REQUEST_ID",
        "HTTP_TRACEPARENT",
        "HTTP_TRACESTATE",
        *_X_FORWARDED,
        _FORWARDED,
    }
)
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_LISTED = 16  # names read from Connection: bounded work whatever it holds


def strip_hop_by_hop(environ: dict) -> None:
    """Remove the hop-by-hop request headers: Connection and the headers it names (not the
    host, the body's framing, nor what the balancer adds: see ``_END_TO_END``), Keep-Alive,
    Proxy-Authorization, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade. They
    were meant for the server that read the request (the body is already de-chunked); the
    app never needs them, and a proxy's credentials never reach it."""
    if _HOP_BY_HOP_KEYS.isdisjoint(environ):
        return
    for key in _listed(environ.get("HTTP_CONNECTION", "")):
        environ.pop(key, None)
    for key in _HOP_BY_HOP:
        environ.pop(key, None)


@functools.lru_cache(maxsize=64)
def _listed(connection: str) -> tuple[str, ...]:
    """The environ keys of the headers a Connection value names that may be removed (the
    values are few: keep-alive, close, Upgrade; each is parsed once)."""
    keys = []
    for name in connection.split(",", _LISTED)[:_LISTED]:
        name = name.strip()
        key = "HTTP_" + name.upper().replace("-", "_")
        if key not in _END_TO_END and _TOKEN.fullmatch(name):
            keys.append(key)
    return tuple(keys)
