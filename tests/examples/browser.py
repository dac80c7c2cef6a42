"""A minimal browser for the example tests: keeps cookies, never follows redirects."""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlencode, urlsplit


class Browser:
    """One user agent talking to ``base`` (``http://127.0.0.1:<port>``)."""

    def __init__(self, base: str) -> None:
        address = urlsplit(base)
        self.host, self.port = address.hostname, address.port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None):
        """``(status, headers, text)`` of one request on a new connection."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = urlencode(form).encode() if form is not None else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, value = cookie.split(";")[0].partition("=")
            self.cookies[name.strip()] = value
        return response.status, response.headers, text

    def get(self, path: str = "/"):
        return self.request("GET", path)

    def post(self, path: str, **form: str):
        return self.request("POST", path, form)


def field(page: str, element_id: str) -> str | None:
    """The text of the element with ``id=element_id`` in the guestbook page, or None."""
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    return found.group(1) if found else None
