"""gunicorn settings for the demo: ``gunicorn -c examples/gunicorn.conf.py``.

Environment: SCALEKIT_BIND (default 127.0.0.1:8000), SCALEKIT_WORKERS (default 2).
"""

import os

chdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app")
wsgi_app = "wsgi:application"
bind = [os.environ.get("SCALEKIT_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("SCALEKIT_WORKERS", "2"))
accesslog = "-"
