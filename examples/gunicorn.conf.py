"""gunicorn settings for the demo and for each app server: ``gunicorn -c gunicorn.conf.py``.

Environment: SCALEKIT_BIND (default 127.0.0.1:8000), SCALEKIT_WORKERS (default 3),
SCALEKIT_ACCESSLOG (default "-", stdout; empty: off), SCALEKIT_TRUSTED_PROXIES (the load
balancers' addresses or networks, comma-separated; default 127.0.0.1,::1),
SCALEKIT_TASK_WORKERS (default 0; ``make demo``: 1), and the app's own variables (see
examples/app/config.py).
"""

import os
import signal
import subprocess
import sys

chdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app")
wsgi_app = "wsgi:application"
bind = [os.environ.get("SCALEKIT_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("SCALEKIT_WORKERS", "3"))
accesslog = os.environ.get("SCALEKIT_ACCESSLOG", "-") or None
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
    """Start the task worker (with the app's settings: preload_app imported them here)."""
    if not task_workers:
        return
    import config  # the app's (examples/app, gunicorn's chdir)

    env = dict(os.environ, SCALEKIT_TASKS=config.TASKS, SCALEKIT_APP=config.APP,
               SCALEKIT_TASKS_SECRET=config.tasks_secret(), PYTHONPATH=config.HERE)  # fmt: skip
    scalekit = os.path.join(os.path.dirname(sys.executable), "scalekit")
    command = [scalekit, "tasks", "worker", "--concurrency", str(task_workers),
               "--grace", str(TASK_GRACE), "--tickets", config.TICKETS]  # fmt: skip
    _task_worker.append(subprocess.Popen(command, cwd=config.HERE, env=env))
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
