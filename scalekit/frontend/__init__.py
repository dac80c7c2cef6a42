"""The request front end: what App Engine's frontend does for every request, as one WSGI
layer (:class:`FrontendMiddleware`) or a decorator for one view (:func:`with_frontend`).

Per request: the client's address, scheme and host from trusted proxies only
(:mod:`~scalekit.frontend.forwarded`), hop-by-hop headers stripped; a request id kept or
made, in the environ, a context variable (:func:`request_id`), every log record
(:class:`RequestIdFilter`) and ``X-Request-ID`` (:mod:`~scalekit.frontend.request_ids`); the
node and version in the environ; one access record (:mod:`~scalekit.frontend.logs`); a
deadline that interrupts a handler with :class:`DeadlineExceeded` (:func:`remaining` tells
the time left; :mod:`~scalekit.frontend.deadline`); on the way out, the headers cleaned,
cookies made private (:mod:`~scalekit.frontend.responses`), dynamic bodies compressed
(:mod:`~scalekit.frontend.compression`) and held to ``max_response_size``.
"""

from scalekit.frontend.deadline import DeadlineExceeded, remaining
from scalekit.frontend.logs import RequestIdFilter
from scalekit.frontend.middleware import FrontendMiddleware, with_frontend
from scalekit.frontend.request_ids import current as request_id
from scalekit.frontend.responses import ResponseTooLarge

__all__ = [
    "DeadlineExceeded",
    "FrontendMiddleware",
    "RequestIdFilter",
    "ResponseTooLarge",
    "remaining",
    "request_id",
    "with_frontend",
]
