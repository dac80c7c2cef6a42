"""A tiny WSGI client for tests: calls an app in-process, keeps cookies like a browser."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from http.cookies import SimpleCookie


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Client:
    """Sends requests to ``app`` and stores the cookies it sets (``Max-Age=0`` removes)."""

    app: object
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, path="/", method="GET", headers=None, https=False, cookie=None):
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "testserver", "SERVER_PORT": "443" if https else "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "https" if https else "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }  # fmt: skip
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        if cookie is None and self.cookies:
            cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if cookie is not None:
            environ["HTTP_COOKIE"] = cookie
        started = []

        def start_response(status, response_headers, exc_info=None):
            started[:] = [status, response_headers]
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        response = Response(int(started[0].split()[0]), list(started[1]), body)
        for line in response.all("Set-Cookie"):
            jar = SimpleCookie(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    get = request
