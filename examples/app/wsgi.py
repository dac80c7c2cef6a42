"""The demo application: for now one page that says which scalekit serves it."""

import html
import os
import socket

import scalekit


def application(environ, start_response):
    """Answer every path with a small HTML page naming the scalekit version and the server."""
    if environ.get("PATH_INFO", "/") not in ("/", "/index.html"):
        body = b"not found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])  # fmt: skip
        return [body]
    served_by = html.escape(f"{socket.gethostname()} pid {os.getpid()}")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>scalekit demo</title></head>"
        f"<body><h1>scalekit demo</h1><p>Served by scalekit {scalekit.__version__}"
        f" on {served_by}.</p></body></html>\n"
    )
    body = page.encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]
