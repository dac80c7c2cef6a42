"""What this server and this deploy are called: App Engine's INSTANCE_ID and CURRENT_VERSION_ID.

The request front end puts both in the environ, the access log and ``X-Node``; tickets
record them. Both are read from the process environment, so one systemd unit or container
variable names them for every piece:

- :func:`node_name`: ``$SCALEKIT_NODE`` (``node1``: the name haproxy gives the server),
  else the host name.
- :func:`app_version`: ``$SCALEKIT_VERSION`` (a release tag or a commit, set by the
  deploy), else :data:`UNKNOWN_VERSION`: a deploy that does not say which code it runs
  gets a value that says so rather than a guess (a git call at import time would be slow,
  and wrong in an unpacked release).
"""

from __future__ import annotations

import os
import socket

__all__ = ["NODE_VARIABLE", "UNKNOWN_VERSION", "VERSION_VARIABLE", "app_version", "node_name"]

#: The environment variable naming this server in a cluster (``node1``); else the host name.
NODE_VARIABLE = "SCALEKIT_NODE"
#: The environment variable naming the deployed version of the app (``2026.12.1``, a commit).
VERSION_VARIABLE = "SCALEKIT_VERSION"
#: The version of an app whose deploy did not set ``$SCALEKIT_VERSION``.
UNKNOWN_VERSION = "unknown"


def node_name() -> str:
    """This server's name: ``$SCALEKIT_NODE``, else the host name."""
    return os.environ.get(NODE_VARIABLE, "").strip() or socket.gethostname()


def app_version() -> str:
    """The app's deployed version: ``$SCALEKIT_VERSION``, else ``"unknown"``."""
    return os.environ.get(VERSION_VARIABLE, "").strip() or UNKNOWN_VERSION
