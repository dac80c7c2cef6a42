"""The Flask app the Flask session tests drive, in-process and under gunicorn (which serves
``application``, built from ``SCALEKIT_TEST_STORE`` and ``SCALEKIT_TEST_APP``)."""

from __future__ import annotations

import os
import threading
import time

from flask import Flask, jsonify, session

from scalekit.sessions.flask import FlaskSessionInterface
from tests.sessions.apps import SECRET


def make_app(store, barrier: threading.Barrier | None = None, config=None, **options) -> Flask:
    """A Flask app on ``store`` using ``flask.session``. With ``barrier``, ``/set`` loads the
    session and waits for the other request of the barrier before changing it."""
    app = Flask(__name__)
    app.secret_key = SECRET
    app.config.update(config or {})
    FlaskSessionInterface(store, app, **options)

    @app.post("/login/<user>")
    def login(user):
        app.session_interface.regenerate(session)  # a new id on login
        session["user"] = user
        return "welcome"

    @app.post("/logout")
    def logout():
        session.clear()
        return "bye"

    @app.get("/me")
    def me():
        return jsonify(user=session.get("user"), pid=os.getpid())

    @app.post("/set/<key>/<value>/<delay>")
    def set_value(key, value, delay):
        session.get(key)  # loaded: a concurrent request may save before this one
        if barrier is not None:
            barrier.wait(10)
        time.sleep(float(delay))
        session[key] = value
        return jsonify(pid=os.getpid())

    @app.get("/all")
    def everything():
        return jsonify(dict(session))

    @app.post("/permanent/<int:flag>")
    def permanent(flag):
        session.permanent = bool(flag)
        return "ok"

    @app.post("/cart/<item>")
    def add_to_cart(item):
        session.setdefault("cart", []).append(item)  # a nested change, no session.modified
        return "ok"

    @app.get("/boom")
    def boom():
        session.get("user")
        raise RuntimeError("the view failed")

    @app.get("/plain")
    def plain():
        return "no session used"

    return app


if "SCALEKIT_TEST_STORE" in os.environ:
    application = make_app(
        os.environ["SCALEKIT_TEST_STORE"], app_name=os.environ["SCALEKIT_TEST_APP"]
    )
