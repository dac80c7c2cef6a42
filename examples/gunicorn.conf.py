"""gunicorn settings for the demo and for each app server: ``gunicorn -c gunicorn.conf.py``.

Environment: SCALEKIT_BIND (default 127.0.0.1:8000), SCALEKIT_WORKERS (default 3),
SCALEKIT_ACCESSLOG (the front end's JSON access log: default "-", stdout; a file's path;
empty: off), SCALEKIT_TIMEOUT (gunicorn's worker timeout, default 30 s) and
SCALEKIT_DEADLINE (the front end's, default 25 s), SCALEKIT_TRUSTED_PROXIES (the load
balancers' addresses or networks, comma-separated; default 127.0.0.1,::1),
SCALEKIT_TASK_WORKERS (default 0; ``make demo``: 1), and the app's own variables (see
examples/app/config.py).
"""

import os
import signal
import subprocess
import sys

chdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app")
sys.path.insert(0, chdir)
import config as app_config  # noqa: E402 - the app's settings (examples/app/config.py): one source

wsgi_app = "wsgi:application"
bind = [os.environ.get("SCALEKIT_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("SCALEKIT_WORKERS", "3"))
# The deadline and gunicorn's timeout. A sync worker still in a request after `timeout`
# seconds is killed by the arbiter: no answer, no traceback, no ticket. The front end's
# deadline (app_config.DEADLINE, 25 s) raises DeadlineExceeded in the view first, gives it 1 s of
# grace, then answers 503 with a ticket holding the stuck stack; it is given this timeout
# (server_timeout) and refuses to start unless deadline + grace + ~1 s end before it. So set
# `timeout` here, explicitly, and lower the deadline with it (SCALEKIT_TIMEOUT,
# SCALEKIT_DEADLINE). haproxy's `timeout server 30s` is the same bound seen from the balancer.
timeout = app_config.SERVER_TIMEOUT
# One access line per request, the front end's: JSON with the request id (the one in
# X-Request-ID, the app's log lines and tickets), the real client behind the balancer, the
# node and version, the bytes sent compressed and the highest level the app logged. gunicorn's
# own access log is off (accesslog None, and no handler for its logger below): with both,
# every request would be logged twice.
accesslog = None
_handlers = {  # on stderr: gunicorn's own lines as gunicorn writes them, and the app's
    # records, WARNING and up, with the id of the request that made each ("-" outside one)
    "gunicorn": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                 "formatter": "gunicorn"},
    "app": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "app",
            "filters": ["request_id"]},
}  # fmt: skip
if app_config.ACCESS_LOG == "-":
    _handlers["access"] = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                           "formatter": "line"}  # fmt: skip
elif app_config.ACCESS_LOG:  # a file: WatchedFileHandler reopens it after logrotate moved it
    _handlers["access"] = {"class": "logging.handlers.WatchedFileHandler",
                           "filename": app_config.ACCESS_LOG, "formatter": "line"}  # fmt: skip
# gunicorn applies this with logging.config.dictConfig over its own defaults, whose root
# logger would print every INFO record on stdout: only WARNING and up reach it here.
logconfig_dict = {
    "root": {"level": "WARNING", "handlers": ["app"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["gunicorn"], "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
        "scalekit.access": {"level": "INFO", "handlers": ["access"] if "access" in _handlers
                            else [], "propagate": False},
    },
    "filters": {"request_id": {"()": "scalekit.frontend.RequestIdFilter"}},
    "handlers": _handlers,
    "formatters": {
        "app": {"format": "%(asctime)s [%(process)d] [%(levelname)s] [%(request_id)s] "
                          "%(name)s: %(message)s", "datefmt": "[%Y-%m-%d %H:%M:%S %z]"},
        "gunicorn": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                     "datefmt": "[%Y-%m-%d %H:%M:%S %z]"},
        "line": {"format": "%(message)s"},
    },
}  # fmt: skip
# Import the app once in the master (migration, settings), then fork the workers.
preload_app = True
# Behind haproxy: a stopped node finishes its requests while haproxy's checks fail it.
graceful_timeout = 10
# TLS ends at the load balancer, which sends X-Forwarded-Proto (https or http) and
# replaces any the client sent. From the balancers only, "X-Forwarded-Proto: https" makes
# wsgi.url_scheme https, and the sessions' secure="auto" cookies get Secure. gunicorn's
# default also believes X-Forwarded-Ssl and X-Forwarded-Protocol, which the example
# balancers pass on untouched from the client: only the header they set counts here.
forwarded_allow_ips = os.environ.get("SCALEKIT_TRUSTED_PROXIES") or "127.0.0.1,::1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
# No WSGI variable from a header: gunicorn's default takes SCRIPT_NAME from one, which the
# balancers pass on from the client.
forwarder_headers = ""
# Each worker's heartbeat touches a file per request: on a RAM file system, not the disk's
# journal (gunicorn's own advice; /dev/shm is tmpfs on Linux).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# No control socket (gunicorn 24+): several nodes on one machine would share its path.
control_socket_disable = True

# Pooled clients after fork. scalekit's Redis and memcached clients are created lazily in
# the process that uses them (a new pool whenever the pid changed), and scalekit's own pydal
# pools (scalekit.db, database session stores) hide the master's connections from each child.
# What is left is any pydal pool the application opened itself before the fork, e.g.
# ``DAL(uri, pool_size=10)`` in a model imported by preload_app: two workers would share one
# socket and mix their queries. The hook hands each worker empty pools.
_inherited_pools = []  # the master's connections: referenced, never closed in a child (a
# psycopg2 close sends Terminate over the socket the master still owns)


def post_fork(server, worker):
    """In a new worker: set aside every pydal connection pool inherited from the master."""
    from pydal.connection import ConnectionPool

    _inherited_pools.extend(ConnectionPool.POOLS.values())
    ConnectionPool.POOLS.clear()


# The deferred tasks' worker on one machine (``make demo``): SCALEKIT_TASK_WORKERS=N starts
# ``scalekit tasks worker --concurrency N`` beside the app once it is ready, on the app's
# tasks URL and secret, and stops it with gunicorn (Ctrl-C, SIGTERM). 0, the default: the
# workers run as a service of their own (examples/systemd/scalekit-worker.service; one per
# node in ``make cluster``), and gunicorn serves only.
task_workers = int(os.environ.get("SCALEKIT_TASK_WORKERS") or "0")
TASK_GRACE = 10  # seconds a running task gets when the demo stops
_task_worker: list[subprocess.Popen] = []


def when_ready(server):
    """Start the task worker (with the app's settings, imported above)."""
    if not task_workers:
        return
    env = dict(os.environ, SCALEKIT_TASKS=app_config.TASKS, SCALEKIT_APP=app_config.APP,
               SCALEKIT_TASKS_SECRET=app_config.tasks_secret(),
               PYTHONPATH=app_config.HERE)  # fmt: skip
    scalekit = os.path.join(os.path.dirname(sys.executable), "scalekit")
    command = [scalekit, "tasks", "worker", "--concurrency", str(task_workers),
               "--grace", str(TASK_GRACE), "--tickets", app_config.TICKETS]  # fmt: skip
    _task_worker.append(subprocess.Popen(command, cwd=app_config.HERE, env=env))
    server.log.info("Started the task worker (pid %d)", _task_worker[-1].pid)


def on_exit(server):
    """Stop the task worker: its running task gets TASK_GRACE seconds (Ctrl-C sent it
    SIGINT already, as to every process of the terminal: SIGTERM again is harmless)."""
    for worker in _task_worker:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(TASK_GRACE + 5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
