"""Small WSGI applications the session tests drive."""

from __future__ import annotations

import json

from scalekit import sessions

#: The secret the session tests sign with (32 bytes and more, as scalekit requires).
SECRET = "test-secret-0123456789abcdef-0123456789"


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


def mount_py4web(app_name: str, path: str, session, view, monkeypatch):
    """Mount ``view`` as the py4web action ``/<app_name>/<path>`` using ``session`` (a py4web
    Session), as py4web's app loader would; a client for py4web's WSGI app."""
    from py4web import action
    from py4web.core import bottle

    from tests.wsgi import Client

    monkeypatch.setattr(action, "app_name", app_name)  # what py4web's app loader sets
    action_view = action.uses(session)(view)
    action_view.__module__ = f"apps.{app_name}.controllers"  # where py4web expects actions
    action(path)(action_view)
    return Client(bottle.default_app())
