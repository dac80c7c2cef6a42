"""Small WSGI applications the session tests drive."""

from __future__ import annotations

import json

from scalekit import sessions


def route(actions):
    """A WSGI app that runs ``actions[PATH_INFO](session, environ)`` and returns its text."""

    def application(environ, start_response):
        session = sessions.current()
        assert environ[sessions.ENVIRON_KEY] is session
        result = actions[environ["PATH_INFO"]](session, environ)
        body = (
            result if isinstance(result, str) else json.dumps(result, default=str, sort_keys=True)
        ).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])  # fmt: skip
        return [body]

    return application


def set_values(**values):
    def action(session, environ):
        session.update(values)
        return "ok"

    return action


def read_all(session, environ):
    return dict(session)


def untouched(session, environ):
    return "no session use"
