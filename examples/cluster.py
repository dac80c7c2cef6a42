"""``make cluster``: the demo on three gunicorn nodes behind haproxy, all on loopback.

Shared services: Redis (sessions, cache, maintenance flag, deferred tasks), memcached (the
cached page fragment), PostgreSQL (a primary and a streaming replica; the primary also keeps
the guestbook's pictures, so every node serves each one). With ``--redis
sentinel`` Redis is examples/sentinel/'s deploy on loopback: a primary (redis1), its replica
(redis2) and three Sentinels; with ``--redis cluster`` examples/redis-cluster/'s six-node
Redis Cluster (redis1..6), each started from those very files; every Redis user of the demo
gets the deploy's ``redis+sentinel://`` or ``redis+cluster://`` URL. Each node runs a task
worker beside gunicorn (``worker-node1``...: ``scalekit tasks worker``, as
scalekit-worker.service does), so a receipt deferred through any node is written by any
node's worker. The cron jobs run as loops in the background: sessions2trash on the shared
store, tickets2db for each node's errors folder, the tasks' relay, uploads gc. Pids, ports
and folders are kept in ``<state>/state.json``.

Run from the repository root:
  python -m examples.cluster start [--sessions memcache] [--redis sentinel|cluster]
                                                           start it, or show it if it runs
  python -m examples.cluster status                        each process: up or down, pid, URL
  python -m examples.cluster restart node2                 restart one node (gunicorn, worker)
  python -m examples.cluster restart redis1                or a Redis server (or Sentinel)
  python -m examples.cluster stop                          stop everything, remove the state
The services are private servers on free loopback ports, never one already running: Redis,
memcached and PostgreSQL started by the test suite's helpers (``tests/servers.py``), each in a
temporary folder; a Sentinel group or a Redis Cluster in the state folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

from scalekit.core.urls import mask
from tests.servers import (
    MemcachedServer,
    PostgresReplica,
    PostgresServer,
    RedisServer,
    Server,
    find_binary,
    free_port,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(ROOT, "examples", "app")
BIN = os.path.dirname(sys.executable)
APP = "guestbook"
START_TIMEOUT = 30.0
#: The service the Sentinels of examples/sentinel/sentinel.conf watch.
SERVICE = "scalekit"
_S = TypeVar("_S", bound=Server)
#: The Redis deploys ``--redis`` chooses from.
REDIS_DEPLOYS = ("single", "sentinel", "cluster")


class Cluster:
    """The cluster whose state lives in ``state_dir``: :meth:`start` it, :meth:`stop` it."""

    def __init__(self, state_dir: str = ".cluster", *, nodes: int = 3, workers: int = 2,
                 sessions: str = "redis", redis: str = "single",
                 cron_sleep: int = 5) -> None:  # fmt: skip
        self.state_dir = os.path.abspath(state_dir)
        self.nodes, self.workers, self.sessions = nodes, workers, sessions
        self.redis = redis
        self.cron_sleep = cron_sleep
        self.state: dict = {}

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    @property
    def url(self) -> str:
        """haproxy's address: the cluster's front door."""
        return f"http://127.0.0.1:{self.state['haproxy']['port']}"

    @property
    def stats_url(self) -> str:
        """haproxy's statistics page (``listen stats``), on loopback."""
        return f"http://127.0.0.1:{self.state['haproxy']['stats_port']}/"

    def node_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.state['nodes'][index]['port']}"

    def load(self) -> bool:
        """Read the state of a cluster started earlier; False if there is none."""
        if not os.path.exists(self.state_path):
            return False
        with open(self.state_path) as saved:
            self.state = json.load(saved)
        return True

    def processes(self) -> list[tuple[str, int | None, str]]:
        """``(name, pid, url)`` of every long-running process, services first."""
        found = [(s["name"], s["pid"], s.get("url", "")) for s in self.state.get("servers", [])]
        addresses = {node["name"]: self.node_url(i) + "/" for i, node in
                     enumerate(self.state.get("nodes", []))}  # fmt: skip
        if "haproxy" in self.state:
            addresses["haproxy"] = f"{self.url}/ (stats {self.stats_url})"
        for node in self.state.get("nodes", []):
            tasks = mask(self.state["env"]["SCALEKIT_TASKS"])
            addresses[f"worker-{node['name']}"] = f"tasks of {tasks}"
        found += [(p["name"], p["pid"], addresses.get(p["name"], "")) for p in
                  self.state.get("processes", [])]  # fmt: skip
        return found

    def up(self) -> list[bool]:
        """For each of :meth:`processes`: does it run?"""
        return [pid is not None and not _gone(pid) for _, pid, _ in self.processes()]

    def status(self) -> str:
        """One line per process: name, up or down, pid, URL."""
        return "\n".join(
            f"{name:<20} {'up' if up else 'down':<5} pid {pid or '-':<8} {url}".rstrip()
            for (name, pid, url), up in zip(self.processes(), self.up(), strict=True)
        )

    def server(self, name: str) -> dict:
        """The state of the service ``name`` (redis1, sentinel1, memcached...): its pid, url,
        folder."""
        return next(server for server in self.state["servers"] if server["name"] == name)

    def node_index(self, name: str) -> int:
        """The index of the node called ``name``; ValueError names the nodes there are."""
        names = [node["name"] for node in self.state["nodes"]]
        if name not in names:
            raise ValueError(f"no node {name!r}: the nodes are {', '.join(names)}")
        return names.index(name)

    # -- starting -------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything, or stop what started and raise."""
        with self._starting():
            self._start_services(self._start_redis_deploy())
            self._deploy()
            for index in range(self.nodes):
                self.state["nodes"].append({"name": f"node{index + 1}", "port": free_port()})
                self.start_node(index)
            self._start_cron()
            self._start_haproxy()

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """A new state for the body; if it fails, stop what it started."""
        if os.path.exists(self.state_path):
            raise RuntimeError(f"a cluster runs from {self.state_dir}: stop it first")
        os.makedirs(self.state_dir, exist_ok=True)
        self.state = {"servers": [], "processes": [], "nodes": [], "redis": self.redis}
        try:
            yield
        except BaseException:
            self.stop()
            raise

    def _start_redis_deploy(self) -> str:
        """The Redis deploy ``redis`` names; its URL."""
        if self.redis == "sentinel":
            return self._start_sentinel_group()
        if self.redis == "cluster":
            return self._start_cluster_group()
        return self._start_server(RedisServer()).url

    def _start_server(self, server: _S) -> _S:
        """Start one of the test suite's servers; recorded even when it fails (stop() removes
        its folder)."""
        try:
            return server.start()
        finally:
            pid = server.process.pid if server.process else _postmaster_pid(server)
            memcached = isinstance(server, MemcachedServer)
            url = f"memcache://{server.address}" if memcached else server.url
            self._record_server(server.name, server.workdir, pid, url)

    def _start_services(self, redis_url: str) -> None:
        """memcached, PostgreSQL and its replica; every URL of the cluster."""
        memcached, primary = MemcachedServer(), PostgresServer()
        replica = PostgresReplica(primary)
        primary.database = replica.database = APP
        for server in (memcached, primary, replica):
            self._start_server(server)
        memcache = f"memcache://{memcached.address}"
        sessions = _with_option(redis_url, "client_cache=true")
        self.state["env"] = {
            "SCALEKIT_APP": APP,
            "SCALEKIT_SESSION_STORE": sessions if self.sessions == "redis" else memcache,
            "SCALEKIT_CACHE": redis_url,
            "SCALEKIT_MEMCACHE": memcache,
            "SCALEKIT_DB_PRIMARY": primary.url,
            "SCALEKIT_DB_REPLICAS": replica.url,
            "SCALEKIT_MAINTENANCE_FLAG": redis_url,
            "SCALEKIT_TICKET_DB": primary.url,
            "SCALEKIT_TASKS": redis_url,
            "SCALEKIT_UPLOADS": primary.url,  # the pictures: chunk rows every node reads
            "SCALEKIT_TASKS_SECRET": secrets.token_urlsafe(32),
            "SCALEKIT_TASK_WORKERS": "0",  # gunicorn only serves: each node's worker is apart
            "SCALEKIT_SECRET": secrets.token_urlsafe(32),
            "SCALEKIT_MIGRATE": "0",
            "SCALEKIT_NODE_HEADER": "1",  # X-Node: which node served each response
        }
        self._save()

    def _record_server(self, name: str, workdir: str, pid: int | None, url: str,
                       **more: object) -> None:  # fmt: skip
        """Note a started service for status() and stop(); its URL masked (status shows it),
        ``more`` kept too."""
        self.state["servers"].append({"name": name, "workdir": workdir, "pid": pid,
                                      "url": mask(url), **more})  # fmt: skip
        self._save()

    def _start_sentinel_group(self) -> str:
        """examples/sentinel/ on loopback: redis1 (the primary), redis2 (its replica) and three
        Sentinels, each started from the example's file with its address, port, folder and
        passwords made local, quick to sync and to fail over (down after 1 s). Returns once the
        replica is in sync and every Sentinel knows the replica and the other two, with the
        ``redis+sentinel://`` URL of the service."""
        password, sentinel_password = secrets.token_hex(16), secrets.token_hex(16)
        primary, replica = free_port(), free_port()
        node = {"requirepass": password, "masterauth": password, "repl-diskless-sync-delay": "0"}
        self._start_redis_server("redis1", "sentinel/redis.conf", primary, password, node)
        self._start_redis_server("redis2", "sentinel/redis.conf", replica, password,
                                 {**node, "# replicaof": f"127.0.0.1 {primary}"})  # fmt: skip
        sentinels = [free_port() for _ in range(3)]
        watch = {
            "requirepass": sentinel_password,
            f"sentinel monitor {SERVICE}": f"127.0.0.1 {primary} 2",
            f"sentinel auth-pass {SERVICE}": password,
            f"sentinel down-after-milliseconds {SERVICE}": "1000",
            f"sentinel failover-timeout {SERVICE}": "3000",
        }
        for number, port in enumerate(sentinels, 1):
            self._start_redis_server(f"sentinel{number}", "sentinel/sentinel.conf", port,
                                     sentinel_password, watch, "--sentinel")  # fmt: skip

        def settled(port: int) -> bool:
            with _redis(port, sentinel_password) as sentinel:
                state = sentinel.sentinel_master(SERVICE)
            return (state["port"], state["num-slaves"], state["num-other-sentinels"]) == (
                primary, 1, 2,
            )  # fmt: skip

        _wait_for(lambda: all(settled(port) for port in sentinels), "the Sentinels",
                  [s["pid"] for s in self.state["servers"]])  # fmt: skip
        addresses = ",".join(f"127.0.0.1:{port}" for port in sentinels)
        return (f"redis+sentinel://:{password}@{addresses}/{SERVICE}/0"
                f"?sentinel_password={sentinel_password}")  # fmt: skip

    def _start_cluster_group(self) -> str:
        """examples/redis-cluster/ on loopback: six nodes redis1..6 started from its redis.conf
        (address, port, folder and password made local, the cluster bus on a free port of its
        own, quick to sync and to fail over: node timeout 1 s), made one cluster of three
        primaries with a replica each by its create-cluster.sh. Returns once every node says
        ``cluster_state:ok`` and knows the five others and every replica is in sync, with the
        ``redis+cluster://`` URL."""
        password, ports = secrets.token_hex(16), [free_port() for _ in range(6)]
        node = {"requirepass": password, "masterauth": password, "cluster-node-timeout": "1000",
                "repl-diskless-sync-delay": "0"}  # fmt: skip
        for number, port in enumerate(ports, 1):
            self._start_redis_server(
                f"redis{number}", "redis-cluster/redis.conf", port, password,
                {**node, "cluster-config-file": f"nodes-{port}.conf"},
                "--cluster-port", str(free_port()),
            )  # fmt: skip
        nodes = [f"127.0.0.1:{port}" for port in ports]
        script = os.path.join(ROOT, "examples", "redis-cluster", "create-cluster.sh")
        with open(os.path.join(self.state_dir, "create-cluster.log"), "ab") as log:
            subprocess.run(["/bin/sh", script, "--cluster-yes"], stdout=log, check=True,
                           stderr=subprocess.STDOUT, env={**os.environ, "NODES": " ".join(nodes),
                           "REDISCLI_AUTH": password})  # fmt: skip

        def formed(port: int) -> bool:
            with _redis(port, password) as node:
                info = node.execute_command("CLUSTER", "INFO").decode()
                formed = "cluster_state:ok" in info and "cluster_known_nodes:6" in info
                return formed and _in_sync(node)

        _wait_for(lambda: all(map(formed, ports)), "the Redis Cluster",
                  [s["pid"] for s in self.state["servers"]])  # fmt: skip
        return f"redis+cluster://:{password}@{','.join(nodes)}"

    def _start_redis_server(self, name: str, example: str, port: int, password: str,
                            settings: dict[str, str], *flags: str) -> None:  # fmt: skip
        """``redis-server`` with ``examples/<example>`` on 127.0.0.1:``port``, in the folder
        ``<state>/<name>``, ``settings`` changed too; wait until it answers (a replica: until
        it is :func:`_in_sync`)."""
        folder = os.path.join(self.state_dir, name)
        os.makedirs(folder)
        path = os.path.join(folder, os.path.basename(example))
        with open(path, "w") as out:  # Sentinel and CONFIG REWRITE write to it later
            out.write(redis_config(example, {"bind": "127.0.0.1", "port": str(port),
                                             "dir": folder, **settings}))  # fmt: skip
        self._record_server(name, folder, None, f"redis://:{password}@127.0.0.1:{port}",
                            command=[find_binary("redis-server"), path, *flags], port=port,
                            password=password)  # fmt: skip
        self._run_redis(self.state["servers"][-1])

    def _run_redis(self, server: dict) -> None:
        """Launch the Redis server (or Sentinel) ``server`` of the state; wait until it is
        :func:`_in_sync`."""
        server["pid"] = self._launch(server["name"], server["command"], os.environ)
        self._save()

        def answers() -> bool:
            with _redis(server["port"], server["password"]) as client:
                return _in_sync(client)

        _wait_for(answers, f"{server['name']} on port {server['port']}", [server["pid"]])

    def restart_redis(self, name: str) -> None:
        """Stop the Redis server (or Sentinel) ``name`` if it runs, start it again with its
        config file and data; a primary that was replaced comes back as a replica (the
        Sentinels or the cluster make it one)."""
        server = self.server(name)
        _end(server["pid"], signal.SIGTERM, group=False)
        self._run_redis(server)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the app and of the cron jobs: every URL of the cluster."""
        return {**os.environ, **self.state["env"], **extra}

    def _deploy(self) -> None:
        """The deploy steps, once for all servers: precompress the static files, migrate
        (the tasks' outbox table is made by the first transactional defer)."""
        folder, scalekit = os.path.join(self.state_dir, "deploy"), os.path.join(BIN, "scalekit")
        self._run(scalekit, "zip-static", "--brotli", os.path.join(APP_DIR, "static"))
        self._run(sys.executable, "models.py", cwd=APP_DIR, SCALEKIT_DATA=folder)

    def _run(self, *command: str, cwd: str = ROOT, **env: str) -> None:
        subprocess.run(command, cwd=cwd, env=self.env(**env), check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def start_node(self, index: int) -> None:
        """Start (or restart) gunicorn node ``index`` on its port and its task worker; wait
        until it answers."""
        node = self.state["nodes"][index]
        data = os.path.join(self.state_dir, node["name"])
        os.makedirs(os.path.join(data, "errors"), exist_ok=True)
        env = self.env(SCALEKIT_NODE=node["name"], SCALEKIT_DATA=data,
                       SCALEKIT_BIND=f"127.0.0.1:{node['port']}",
                       SCALEKIT_ACCESSLOG=os.path.join(data, "access.log"),
                       SCALEKIT_WORKERS=str(self.workers))  # fmt: skip
        command = [os.path.join(BIN, "gunicorn"), "-c", "examples/gunicorn.conf.py"]
        node["pid"] = self._spawn(node["name"], command, env)
        worker = [os.path.join(BIN, "scalekit"), "tasks", "worker", "--grace", "10",
                  "--tickets", f"file://{data}/errors"]  # fmt: skip
        path = os.pathsep.join(filter(None, [APP_DIR, env.get("PYTHONPATH")]))
        node["worker_pid"] = self._spawn(f"worker-{node['name']}", worker,
                                         {**env, "PYTHONPATH": path})  # fmt: skip
        _wait_answering(self.node_url(index) + "/healthz", node["pid"])

    def stop_node(self, index: int, how: signal.Signals = signal.SIGTERM) -> None:
        """Stop node ``index``: its task worker and gunicorn. SIGKILL: at once (master,
        workers, task worker), as a crash of the machine would."""
        node = self.state["nodes"][index]
        for pid in (node.get("worker_pid"), node["pid"]):
            _end(pid, how)

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index``, as a crash would (see :meth:`stop_node`)."""
        self.stop_node(index, signal.SIGKILL)

    def _start_cron(self) -> None:
        scalekit, every = os.path.join(BIN, "scalekit"), str(self.cron_sleep)
        env = self.env()
        if self.sessions == "redis":  # memcached expires sessions itself
            self._spawn("sessions2trash", [scalekit, "sessions2trash", "--app", APP,
                        "--store", env["SCALEKIT_SESSION_STORE"], "-s", every], env)  # fmt: skip
        for node in self.state["nodes"]:
            errors = os.path.join(self.state_dir, node["name"], "errors")
            self._spawn(f"tickets2db-{node['name']}", [scalekit, "tickets2db", "--folder",
                        errors, "--db", env["SCALEKIT_TICKET_DB"], "-s", every], env)  # fmt: skip
        # The outbox's leftovers (a node killed between a commit and its relay), as the
        # crontab's relay line; it has no loop of its own.
        relay = f'"{scalekit}" tasks -v relay --db "$SCALEKIT_DB_PRIMARY"'
        self._spawn("tasks-relay", ["/bin/sh", "-c", f"while :; do {relay}; sleep {every}; done"],
                    env)  # fmt: skip
        # Pictures no entry references (a signing that failed after its picture was stored,
        # a node killed then), older than a day: as the crontab's daily line.
        gc = f'"{scalekit}" uploads gc --store "$SCALEKIT_UPLOADS" --db "$SCALEKIT_DB_PRIMARY"'
        self._spawn("uploads-gc", ["/bin/sh", "-c", f"while :; do {gc}; sleep {every}; done"],
                    env)  # fmt: skip

    def _start_haproxy(self) -> None:
        """examples/haproxy.cfg on loopback ports, plain http only (no certificate here)."""
        port, stats_port = free_port(), free_port()
        nodes = {node["name"]: node["port"] for node in self.state["nodes"]}
        path = os.path.join(self.state_dir, "haproxy.cfg")
        with open(path, "w") as out:
            out.write(haproxy_config(port=port, nodes=nodes, stats_port=stats_port))
        pid = self._spawn("haproxy", [find_binary("haproxy"), "-db", "-f", path], os.environ)
        self.state["haproxy"] = {"port": port, "stats_port": stats_port, "pid": pid}
        self._save()
        _wait_answering(self.url + "/healthz", pid)

    def _launch(self, name: str, command: list[str], env) -> int:
        """Start a long-running process in its own session (so that closing the terminal
        does not end it), output to ``<state>/<name>.log``; its pid."""
        with open(os.path.join(self.state_dir, f"{name}.log"), "ab") as log:
            return subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ).pid  # fmt: skip

    def _spawn(self, name: str, command: list[str], env) -> int:
        """:meth:`_launch` a process of the cluster, recorded for stop()."""
        entry = {"name": name, "pid": self._launch(name, command, env)}
        names = [p["name"] for p in self.state["processes"]]
        if name in names:  # a restart: same place in the stopping order
            self.state["processes"][names.index(name)] = entry
        else:
            self.state["processes"].append(entry)
        self._save()
        return entry["pid"]

    def _save(self) -> None:
        with open(self.state_path + ".tmp", "w") as out:
            json.dump(self.state, out, indent=1)
        os.replace(self.state_path + ".tmp", self.state_path)

    # -- stopping -------------------------------------------------------------------------
    def stop(self, say: Callable[[str], object] = lambda line: None) -> None:
        """Stop every process and server the state names (newest first), remove the folder;
        ``say`` is told what is being stopped."""
        if not self.state:
            self.load()
        for process in reversed(self.state.get("processes", [])):
            say(f"stopping {process['name']} (pid {process['pid']})")
            _end(process["pid"], signal.SIGTERM)
        for server in reversed(self.state.get("servers", [])):
            say(f"stopping {server['name']} (pid {server['pid']}) and removing its data")
            if server["name"].startswith("postgres"):
                postgres = PostgresServer()
                postgres.workdir = server["workdir"]
                postgres.stop()  # pg_ctl stop, then removes the folder
            else:
                _end(server["pid"], signal.SIGTERM, group=False)
                shutil.rmtree(server["workdir"], ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state = {}

    def summary(self) -> str:
        env = {name: mask(value) for name, value in self.state["env"].items()}
        nodes = ", ".join(f"{n['name']} {self.node_url(i)}" for i, n in
                          enumerate(self.state["nodes"]))  # fmt: skip
        return (
            f"scalekit cluster on {self.url}/ (haproxy, round robin over {nodes})\n"
            f"  haproxy's statistics: {self.stats_url}\n"
            f"{self._redis_summary()}"
            f"  sessions {env['SCALEKIT_SESSION_STORE']}, cache + maintenance flag "
            f"{env['SCALEKIT_CACHE']}, fragments {env['SCALEKIT_MEMCACHE']}\n"
            f"  PostgreSQL primary {env['SCALEKIT_DB_PRIMARY']}, replica "
            f"{env['SCALEKIT_DB_REPLICAS']}\n"
            f"  a task worker per node (worker-node1...), tasks on {env['SCALEKIT_TASKS']}; "
            f"sign the guestbook and see which node wrote the receipt\n"
            f"  pictures in {env['SCALEKIT_UPLOADS']} (scalekit.uploads), served by every node "
            f"at /download/\n"
            f"  X-Node names the node that served a response, X-Request-ID its line in that "
            f"node's access log ({self.state_dir}/node1/access.log...)\n"
            f"  logs and state in {self.state_dir}/; `python -m examples.cluster status`, "
            f"`restart node2`; stop everything with `make cluster-stop`\n"
            f"  read-only for everyone: .venv/bin/scalekit maintenance on --mode read-only "
            f"--flag {env['SCALEKIT_MAINTENANCE_FLAG']} --app {APP}"
            + (" (passwords in state.json)" if env != self.state["env"] else "")
        )

    def _redis_summary(self) -> str:
        deploy, pids = self.state.get("redis"), {s["name"]: s["pid"] for s in self.state["servers"]}
        if deploy == "sentinel":
            return (
                f"  Redis: redis1 (pid {pids['redis1']}) the primary, redis2 its replica, "
                f"sentinel1..3 (examples/sentinel/); kill -9 {pids['redis1']}: redis2 takes over\n"
            )
        if deploy == "cluster":
            return "  Redis: redis1..6, 3 primaries + 3 replicas (examples/redis-cluster/)\n"
        return ""


def redis_config(name: str, settings: dict[str, str]) -> str:
    """``examples/<name>`` (a redis.conf or sentinel.conf) with the line of each of
    ``settings`` (its first words: ``port``, ``sentinel monitor scalekit``; ``# replicaof``
    uncomments it) set to the value given; RuntimeError if the file has no such line."""
    with open(os.path.join(ROOT, "examples", name)) as example:
        lines = example.read().splitlines()
    for key, value in settings.items():
        found = [index for index, line in enumerate(lines) if line.startswith(key + " ")]
        if len(found) != 1:
            raise RuntimeError(f"examples/{name} has {len(found)} lines {key!r}, not one: "
                               "update examples/cluster.py")  # fmt: skip
        lines[found[0]] = f"{key.removeprefix('# ')} {value}"
    return "\n".join(lines) + "\n"


def haproxy_config(
    name: str = "haproxy.cfg", *, port: int, nodes: dict[str, int],
    stats_port: int | None = None, tls: tuple[int, str] | None = None,
) -> str:  # fmt: skip
    """``examples/<name>`` on loopback: the frontend on ``port``, server ``node`` at
    ``127.0.0.1:nodes[node]``, the stats page on ``stats_port``. With ``tls`` (a port and a
    PEM file holding certificate and key) https is there and plain http redirects to it;
    without, plain http is served and there is no https."""
    with open(os.path.join(ROOT, "examples", name)) as example:
        config = _replace(name, example.read(), "bind :80\n", f"bind 127.0.0.1:{port}\n")
    https, redirect = _line(config, "bind :443 ssl crt "), _line(config, "redirect scheme https")
    if tls is None:
        config = _replace(name, _replace(name, config, https, ""), redirect, "")
    else:
        tls_port, pem = tls
        config = _replace(name, config, https, f"    bind 127.0.0.1:{tls_port} ssl crt {pem}\n")
    for node, node_port in nodes.items():
        config = _replace(name, config, f" {node}.internal:8000", f" 127.0.0.1:{node_port}")
    if stats_port is not None:
        config = _replace(name, config, "bind 127.0.0.1:8404", f"bind 127.0.0.1:{stats_port}")
    return config


def _line(text: str, part: str) -> str:
    """The whole line of ``text`` that holds ``part`` (empty if none)."""
    return next((line + "\n" for line in text.splitlines() if part in line), "")


def _replace(name: str, text: str, old: str, new: str) -> str:
    if not old or old not in text:
        raise RuntimeError(f"examples/{name} no longer has {old!r}: update examples/cluster.py")
    return text.replace(old, new)


def _with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def _redis(port: int, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)


def _in_sync(client: redis.Redis) -> bool:
    """Is this node a primary (or a Sentinel), or a replica linked to its primary whose
    first copy is saved? (Redis ignores a SIGTERM while it writes its first append-only
    file.)"""
    info = client.info()
    return info.get("master_link_status", "up") == "up" and not (
        info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
    )


def _postmaster_pid(server) -> int | None:
    """The pid of a PostgreSQL server started by pg_ctl (first line of postmaster.pid)."""
    path = os.path.join(server.datadir, "postmaster.pid")
    with contextlib.suppress(OSError, ValueError), open(path) as pidfile:
        return int(pidfile.readline())
    return None


def _wait_answering(url: str, pid: int) -> None:
    """Wait until ``url`` answers 200 (see :func:`_wait_for`)."""

    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    _wait_for(answers, url, [pid])


def _wait_for(ready: Callable[[], bool], what: str, pids: list[int]) -> None:
    """Wait until ``ready()`` is true (OSError and RedisError count as not yet); raise if
    one of ``pids`` exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError, redis.RedisError):
            if ready():
                return
        if any(map(_gone, pids)) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready (see the logs in the state folder)")
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaped here if it is our child)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # not our child: is it still there?
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's: it exists
            return False
        return False


def _end(pid: int | None, how: signal.Signals, group: bool = True, timeout: float = 15) -> None:
    """Send ``how`` to process ``pid`` (and its process group), SIGKILL it if it lingers."""
    if pid is None or _gone(pid):
        return
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        kill(pid, how)
        deadline = time.monotonic() + timeout
        while not _gone(pid):
            if time.monotonic() > deadline:
                kill(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.cluster", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("command", choices=["start", "status", "restart", "stop"])
    parser.add_argument("node", nargs="?", help="restart: the node (node1, node2, ...) or "
                        "Redis server (redis1, sentinel1, ...)")  # fmt: skip
    parser.add_argument("--state", default=".cluster", help="state folder (default .cluster)")
    parser.add_argument("--sessions", choices=["redis", "memcache"], default="redis",
                        help="the session store (default redis)")  # fmt: skip
    parser.add_argument("--redis", choices=REDIS_DEPLOYS, default="single",
                        help="one Redis (default); sentinel: a primary, a replica and three "
                        "Sentinels (examples/sentinel/); cluster: a Redis Cluster of six "
                        "nodes (examples/redis-cluster/)")  # fmt: skip
    args = parser.parse_args(argv)
    if (args.command == "restart") != (args.node is not None):
        parser.error("restart takes a NODE, the other commands none")
    cluster = Cluster(args.state, sessions=args.sessions, redis=args.redis)
    try:
        return _COMMANDS[args.command](cluster, args.node)
    except (RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


def _start(cluster: Cluster, _node: None) -> int:
    if cluster.load():
        if any(cluster.up()):
            print(f"already running (from {cluster.state_dir}/):\n{cluster.status()}\n")
            print(cluster.summary())
            return 0
        cluster.stop(print)  # left over, e.g. by a reboot: its folders go, a new one starts
    cluster.start()
    print(cluster.summary())
    return 0


def _status(cluster: Cluster, _node: None) -> int:
    if not cluster.load():
        print(f"no cluster runs from {cluster.state_dir}/ (start one with `make cluster`)")
        return 3
    print(cluster.status())
    return 0 if all(cluster.up()) else 3  # as `systemctl status` of a unit that is down


def _restart(cluster: Cluster, node: str) -> int:
    if not cluster.load():
        raise RuntimeError(f"no cluster runs from {cluster.state_dir}/")
    if any(s["name"] == node and "command" in s for s in cluster.state["servers"]):
        cluster.restart_redis(node)
        print(f"{node} runs again (pid {cluster.server(node)['pid']})")
        return 0
    index = cluster.node_index(node)
    print(f"stopping {node} (pid {cluster.state['nodes'][index]['pid']}) and its task worker")
    cluster.stop_node(index)
    cluster.start_node(index)
    print(f"{node} answers again on {cluster.node_url(index)}/ (pid "
          f"{cluster.state['nodes'][index]['pid']})")  # fmt: skip
    return 0


def _stop(cluster: Cluster, _node: None) -> int:
    if not cluster.load():
        print(f"no cluster runs from {cluster.state_dir}/")
        return 0
    cluster.stop(print)
    print("scalekit cluster stopped")
    return 0


_COMMANDS = {"start": _start, "status": _status, "restart": _restart, "stop": _stop}


if __name__ == "__main__":
    sys.exit(main())
