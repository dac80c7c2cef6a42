"""``make cluster``: the demo on three gunicorn nodes behind haproxy, all on loopback.

Shared services: Redis (sessions, cache, maintenance flag), memcached (the cached page
fragment), PostgreSQL (a primary and a streaming replica). The cron jobs run as loops in
the background: sessions2trash on the shared store, tickets2db for each node's errors
folder. Pids, ports and folders are kept in ``<state>/state.json`` so that
``python -m examples.cluster stop`` (``make cluster-stop``) ends everything.

Run from the repository root: ``python -m examples.cluster start [--sessions memcache]``.
The services are started by the test suite's helpers (``tests/servers.py``): private
servers on free loopback ports, each in a temporary folder, never one already running.
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

from tests.servers import (
    MemcachedServer,
    PostgresReplica,
    PostgresServer,
    RedisServer,
    find_binary,
    free_port,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(ROOT, "examples", "app")
BIN = os.path.dirname(sys.executable)
APP = "guestbook"
START_TIMEOUT = 30.0


class Cluster:
    """The cluster whose state lives in ``state_dir``: :meth:`start` it, :meth:`stop` it."""

    def __init__(self, state_dir: str = ".cluster", *, nodes: int = 3, workers: int = 2,
                 sessions: str = "redis", cron_sleep: int = 5) -> None:  # fmt: skip
        self.state_dir = os.path.abspath(state_dir)
        self.nodes, self.workers, self.sessions = nodes, workers, sessions
        self.cron_sleep = cron_sleep
        self.state: dict = {}

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    @property
    def url(self) -> str:
        """haproxy's address: the cluster's front door."""
        return f"http://127.0.0.1:{self.state['haproxy']['port']}"

    def node_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.state['nodes'][index]['port']}"

    # -- starting -------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything, or stop what started and raise."""
        if os.path.exists(self.state_path):
            raise RuntimeError(f"a cluster runs from {self.state_dir}: stop it first")
        os.makedirs(self.state_dir, exist_ok=True)
        self.state = {"servers": [], "processes": [], "nodes": []}
        try:
            self._start_services()
            self._deploy()
            for index in range(self.nodes):
                self.state["nodes"].append({"name": f"node{index + 1}", "port": free_port()})
                self.start_node(index)
            self._start_cron()
            self._start_haproxy()
        except BaseException:
            self.stop()
            raise

    def _start_services(self) -> None:
        redis, memcached = RedisServer(), MemcachedServer()
        primary = PostgresServer()
        replica = PostgresReplica(primary)
        primary.database = replica.database = APP
        for server in (redis, memcached, primary, replica):
            try:
                server.start()
            finally:  # recorded even when it failed: stop() removes its folder
                pid = server.process.pid if server.process else None
                self.state["servers"].append(
                    {"name": server.name, "workdir": server.workdir, "pid": pid}
                )
                self._save()
        memcache = f"memcache://{memcached.address}"
        self.state["env"] = {
            "SCALEKIT_APP": APP,
            "SCALEKIT_SESSION_STORE": (
                f"{redis.url}?client_cache=true" if self.sessions == "redis" else memcache
            ),
            "SCALEKIT_CACHE": redis.url,
            "SCALEKIT_MEMCACHE": memcache,
            "SCALEKIT_DB_PRIMARY": primary.url,
            "SCALEKIT_DB_REPLICAS": replica.url,
            "SCALEKIT_MAINTENANCE_FLAG": redis.url,
            "SCALEKIT_TICKET_DB": primary.url,
            "SCALEKIT_SECRET": secrets.token_urlsafe(32),
            "SCALEKIT_MIGRATE": "0",
            "SCALEKIT_ACCESSLOG": "",
        }
        self._save()

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the app and of the cron jobs: every URL of the cluster."""
        return {**os.environ, **self.state["env"], **extra}

    def _deploy(self) -> None:
        """The deploy steps, once for all servers: precompress the static files, migrate."""
        folder = os.path.join(self.state_dir, "deploy")
        self._run(os.path.join(BIN, "scalekit"), "zip-static", "--brotli",
                  os.path.join(APP_DIR, "static"))  # fmt: skip
        self._run(sys.executable, "models.py", cwd=APP_DIR, SCALEKIT_DATA=folder)

    def _run(self, *command: str, cwd: str = ROOT, **env: str) -> None:
        subprocess.run(command, cwd=cwd, env=self.env(**env), check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def start_node(self, index: int) -> None:
        """Start (or restart) gunicorn node ``index`` on its port; wait until it answers."""
        node = self.state["nodes"][index]
        data = os.path.join(self.state_dir, node["name"])
        os.makedirs(os.path.join(data, "errors"), exist_ok=True)
        env = self.env(SCALEKIT_NODE=node["name"], SCALEKIT_DATA=data,
                       SCALEKIT_BIND=f"127.0.0.1:{node['port']}",
                       SCALEKIT_WORKERS=str(self.workers))  # fmt: skip
        command = [os.path.join(BIN, "gunicorn"), "-c", "examples/gunicorn.conf.py"]
        node["pid"] = self._spawn(node["name"], command, env)
        _wait_answering(self.node_url(index) + "/healthz", node["pid"])

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (its master and workers at once), as a crash would."""
        _end(self.state["nodes"][index]["pid"], signal.SIGKILL)

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

    def _start_haproxy(self) -> None:
        """examples/haproxy.cfg with loopback addresses for the frontend and the nodes."""
        port = free_port()
        with open(os.path.join(ROOT, "examples", "haproxy.cfg")) as example:
            config = _replace(example.read(), "bind :80", f"bind 127.0.0.1:{port}")
        for index, node in enumerate(self.state["nodes"]):
            config = _replace(config, f"app{index + 1}.internal:8000", f"127.0.0.1:{node['port']}")
        path = os.path.join(self.state_dir, "haproxy.cfg")
        with open(path, "w") as out:
            out.write(config)
        pid = self._spawn("haproxy", [find_binary("haproxy"), "-db", "-f", path], os.environ)
        self.state["haproxy"] = {"port": port, "pid": pid}
        self._save()
        _wait_answering(self.url + "/healthz", pid)

    def _spawn(self, name: str, command: list[str], env) -> int:
        """Start a long-running process in its own session (so that closing the terminal
        does not end it), output to ``<state>/<name>.log``; recorded for stop()."""
        with open(os.path.join(self.state_dir, f"{name}.log"), "ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.state["processes"].append({"name": name, "pid": process.pid})
        self._save()
        return process.pid

    def _save(self) -> None:
        with open(self.state_path + ".tmp", "w") as out:
            json.dump(self.state, out, indent=1)
        os.replace(self.state_path + ".tmp", self.state_path)

    # -- stopping -------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process and server the state names (newest first), remove the folder."""
        if not self.state and os.path.exists(self.state_path):
            with open(self.state_path) as saved:
                self.state = json.load(saved)
        for process in reversed(self.state.get("processes", [])):
            _end(process["pid"], signal.SIGTERM)
        for server in reversed(self.state.get("servers", [])):
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
        env = self.state["env"]
        nodes = ", ".join(f"{n['name']} {self.node_url(i)}" for i, n in
                          enumerate(self.state["nodes"]))  # fmt: skip
        return (
            f"scalekit cluster on {self.url}/ (haproxy, round robin over {nodes})\n"
            f"  sessions {env['SCALEKIT_SESSION_STORE']}, cache + maintenance flag "
            f"{env['SCALEKIT_CACHE']}, fragments {env['SCALEKIT_MEMCACHE']}\n"
            f"  PostgreSQL primary {env['SCALEKIT_DB_PRIMARY']}, replica "
            f"{env['SCALEKIT_DB_REPLICAS']}\n"
            f"  logs and state in {self.state_dir}/; stop everything with `make cluster-stop`\n"
            f"  read-only for everyone: .venv/bin/scalekit maintenance on --mode read-only "
            f"--flag {env['SCALEKIT_MAINTENANCE_FLAG']} --app {APP}"
        )


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise RuntimeError(
            f"examples/haproxy.cfg no longer has {old!r}: update examples/cluster.py"
        )
    return text.replace(old, new)


def _wait_answering(url: str, pid: int) -> None:
    """Wait until ``url`` answers 200; raise if process ``pid`` exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        if _gone(pid) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer (see the logs in the state folder)")
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
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--state", default=".cluster", help="state folder (default .cluster)")
    parser.add_argument("--sessions", choices=["redis", "memcache"], default="redis",
                        help="the session store (default redis)")  # fmt: skip
    args = parser.parse_args(argv)
    cluster = Cluster(args.state, sessions=args.sessions)
    if args.command == "stop":
        cluster.stop()
        print("scalekit cluster stopped")
        return 0
    try:
        cluster.start()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    print(cluster.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
