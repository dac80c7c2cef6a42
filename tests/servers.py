"""Private redis-server, memcached, PostgreSQL, MariaDB and S3 (moto) processes for the tests.

Each server runs from a fresh temporary folder on a free loopback port. ``start()`` returns
once the server answers a real request, or raises :class:`ServerStartError` carrying the tail
of the server's log; ``stop()`` ends the process and removes its folder.
"""

from __future__ import annotations

import abc
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, TypeVar

START_TIMEOUT = 30.0
PORT_ATTEMPTS = 3
_S = TypeVar("_S", bound="Server")
_R = TypeVar("_R", bound="_Runs")


class ServerStartError(RuntimeError):
    """A test server did not start; the message ends with its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str:
    """The path of a server program, also PostgreSQL's, which Debian keeps off PATH."""
    postgres_bins = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    found = (
        shutil.which(name)
        or shutil.which(name, path="/usr/sbin:/sbin")  # mariadbd, when PATH lacks sbin
        or max(postgres_bins, key=_version_key, default=None)
    )
    if not found:
        raise ServerStartError(f"{name} is not installed; `make test` installs it with apt-get")
    return found


def give_to_nobody(*paths: str) -> None:
    """As root, make ``paths`` belong to ``nobody``, who runs the servers that refuse root."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in paths:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)


def _version_key(path: str) -> int:
    version = path.split("/")[4]
    return int(version) if version.isdigit() else 0


class _Runs(abc.ABC):
    """Something with ``start()`` and ``stop()``; :meth:`running` wraps a body in them."""

    @abc.abstractmethod
    def start(self: _R) -> _R: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @contextlib.contextmanager
    def running(self: _R) -> Iterator[_R]:  # noqa: PYI019 - typing.Self needs 3.11
        """Start, yield, and stop even when the body raises."""
        self.start()
        try:
            yield self
        finally:
            self.stop()


class Server(_Runs):
    """One server process in its own temporary folder."""

    name = "server"

    def __init__(self) -> None:
        self.port = 0
        self.workdir = ""
        self.process: subprocess.Popen | None = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}.log")

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no log written)"

    def start(self: _S) -> _S:  # noqa: PYI019 - typing.Self needs Python 3.11; we run on 3.10
        """Start on a free port (retrying if another process takes it) and wait for answers."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.workdir = tempfile.mkdtemp(prefix=f"scalekit-{self.name}-")
            self.port = free_port()
            try:
                self._launch()
                self._wait_until_answering()
                return self
            except ServerStartError as exc:
                tail = self.log_tail()
                self.stop()
                if attempt == PORT_ATTEMPTS or "in use" not in tail:
                    raise ServerStartError(
                        f"{self.name} did not start on 127.0.0.1:{self.port}: {exc}\n"
                        f"--- last lines of its log ---\n{tail}"
                    ) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the process (politely, then by force) and remove the folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _pids(self) -> list[int]:
        """The processes that make up the server (one, unless a subclass says more)."""
        return [self.process.pid]

    def freeze(self) -> None:
        """Stop every process of the server (SIGSTOP) and wait until each of their threads
        has stopped (the signal takes effect asynchronously): connections stay open,
        nothing answers."""
        pids = self._pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = []
            for pid in pids:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/stat") as stat:
                        states.append(stat.read().rsplit(")", 1)[1].split()[0])
            if all(state in "tT" for state in states):
                return
            time.sleep(0.01)
        raise ServerStartError(f"{self.name} did not stop on SIGSTOP: thread states {states}")

    def kill(self) -> None:
        """SIGKILL: gone at once, with no goodbye to its clients or replicas."""
        self.process.kill()
        self.process.wait()

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Frozen (see :meth:`freeze`) for the body, running again after it."""
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(f"it exited with code {self.process.returncode}")
            try:
                if self.answers():
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet: refused, loading, ...
                last_error = exc
            time.sleep(0.05)
        raise ServerStartError(f"no answer within {START_TIMEOUT:.0f}s (last: {last_error!r})")

    @abc.abstractmethod
    def _launch(self) -> None:
        """Start the server process in ``self.workdir``, listening on ``self.port``."""

    @abc.abstractmethod
    def answers(self) -> bool:
        """Make one real round trip; true when the server answered."""


class _ForegroundServer(Server):
    """A server that runs in the foreground as our child process."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server."""

    def _launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )


class RedisServer(_ForegroundServer):
    """redis-server without persistence, on TCP and on a unix socket."""

    name = "redis"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.workdir, "redis.sock")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def command(self) -> list[str]:
        return [
            find_binary("redis-server"),
            "--bind", "127.0.0.1", "--port", str(self.port),
            "--unixsocket", self.socket_path, "--unixsocketperm", "700",
            "--dir", self.workdir, "--save", "", "--appendonly", "no",
        ]  # fmt: skip

    def answers(self) -> bool:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
            return client.ping()


class TlsRedisServer(RedisServer):
    """redis-server answering TLS only, with a self-signed certificate for 127.0.0.1 made by
    openssl in its folder (``ca_path``: the certificate clients trust)."""

    name = "redis-tls"

    @property
    def ca_path(self) -> str:
        return os.path.join(self.workdir, "cert.pem")

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_path}"

    def command(self) -> list[str]:
        key = os.path.join(self.workdir, "key.pem")
        subprocess.run(
            [find_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", self.ca_path, "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        return [
            find_binary("redis-server"),
            "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", self.ca_path, "--tls-key-file", key,
            "--tls-ca-cert-file", self.ca_path, "--tls-auth-clients", "no",
            "--dir", self.workdir, "--save", "", "--appendonly", "no",
        ]  # fmt: skip

    def answers(self) -> bool:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, ssl=True,
                         ssl_ca_certs=self.ca_path) as client:  # fmt: skip
            return client.ping()


class SentinelNode(RedisServer):
    """A redis-server of a :class:`RedisSentinelGroup`: a replica of ``primary_port`` when
    given; it may be killed (SIGKILL) and started again on the same port."""

    name = "redis-node"

    def __init__(self, primary_port: int | None = None) -> None:
        super().__init__()
        self.primary_port = primary_port

    def command(self) -> list[str]:
        follow = ["--replicaof", "127.0.0.1", str(self.primary_port)] if self.primary_port else []
        return [*super().command(), "--repl-diskless-sync-delay", "0", *follow]

    def answers(self) -> bool:
        """A replica answers once its link to the primary is up."""
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
            link = client.info("replication").get("master_link_status")
        return self.primary_port is None or link == "up"

    def restart_as_replica_of(self, primary_port: int) -> None:
        """Start again, empty, on the same port, as a replica of ``primary_port``."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = tempfile.mkdtemp(prefix=f"scalekit-{self.name}-")
        self.primary_port = primary_port
        self._launch()
        self._wait_until_answering()


class RedisSentinel(_ForegroundServer):
    """One ``redis-server --sentinel`` watching ``service`` on ``primary_port`` (quorum 2),
    quick to act: down after 1 s without answer, failover timeout 3 s."""

    name = "redis-sentinel"

    def __init__(self, service: str, primary_port: int) -> None:
        super().__init__()
        self.service, self.primary_port = service, primary_port

    def command(self) -> list[str]:
        config, service = os.path.join(self.workdir, "sentinel.conf"), self.service
        with open(config, "w") as conf:  # Sentinel rewrites it as it learns
            conf.write(
                f"bind 127.0.0.1\nport {self.port}\ndir {self.workdir}\n"
                f"sentinel monitor {service} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 3000\n"
            )
        return [find_binary("redis-server"), config, "--sentinel"]

    def answers(self) -> bool:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
            return client.ping()


class ServerGroup(_Runs):
    """Servers started together (a Sentinel group, a cluster): :meth:`stop` stops each
    member, :meth:`running` starts, yields and stops like one server's."""

    @abc.abstractmethod
    def members(self) -> list[Any]:
        """Every server of the group."""

    @abc.abstractmethod
    def start(self: _R) -> _R:
        """Start every member; return when the group is ready (stopped again on failure)."""

    def stop(self) -> None:
        for member in self.members():
            member.stop()


class RedisSentinelGroup(ServerGroup):
    """A primary redis-server, one replica and three Sentinels watching them as ``service``.

    ``start()`` returns once the replica's link is up and every Sentinel knows the primary,
    the replica and the two other Sentinels; ``stop()`` ends every process and folder.
    :meth:`primary_killed` kills the primary for failover tests and, after the body, brings
    it back as a replica of the promoted one, so the group serves the next test whole.
    """

    service = "scalekit"

    def __init__(self) -> None:
        self.nodes: list[SentinelNode] = []
        self.sentinels: list[RedisSentinel] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The Sentinels' ``(host, port)``."""
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming the three Sentinels and the service, database 0."""
        sentinels = ",".join(f"{host}:{port}" for host, port in self.addresses)
        return f"redis+sentinel://{sentinels}/{self.service}/0"

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [server.process for server in (*self.nodes, *self.sentinels) if server.process]

    def start(self) -> RedisSentinelGroup:
        try:
            primary = SentinelNode().start()
            self.nodes.append(primary)
            self.nodes.append(SentinelNode(primary.port).start())
            for _ in range(3):
                self.sentinels.append(RedisSentinel(self.service, primary.port).start())
            self.wait_settled(primary)
        except BaseException:
            self.stop()
            raise
        return self

    def members(self) -> list[Any]:
        return [*self.sentinels, *self.nodes]

    def named_primaries(self) -> set[int]:
        """The primary's port as each Sentinel names it (one port when they agree)."""
        import redis

        ports = set()
        for _, port in self.addresses:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as sentinel:
                ports.add(int(sentinel.sentinel_get_master_addr_by_name(self.service)[1]))
        return ports

    def primary(self) -> SentinelNode:
        """The node every Sentinel names as the primary now."""
        (port,) = self.named_primaries()
        return next(node for node in self.nodes if node.port == port)

    def replica(self) -> SentinelNode:
        """The node that is not the primary now."""
        primary = self.primary()
        return next(node for node in self.nodes if node is not primary)

    def wait_settled(
        self, primary: SentinelNode | None = None, timeout: float = START_TIMEOUT
    ) -> None:
        """Wait until every Sentinel names ``primary`` (without one: the same node, which
        may fail over again meanwhile), sees the other node as a healthy replica and knows
        the two other Sentinels, and the nodes agree: the other one a replica of it, its
        link up (after a spurious second failover, two primaries until Sentinel converts
        one)."""
        import redis

        deadline, state = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            named = set()
            settled = True
            for _, port in self.addresses:
                with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as sentinel:
                    state = sentinel.sentinel_master(self.service)
                    replicas = sentinel.sentinel_slaves(self.service)
                healthy = [
                    r["port"] for r in replicas if not (r["is_sdown"] or r["is_disconnected"])
                ]
                (replica,) = (node.port for node in self.nodes if node.port != state["port"])
                named.add(state["port"])
                settled &= state["num-other-sentinels"] == 2 and replica in healthy
            if settled and named == {primary.port if primary else state["port"]}:
                (other,) = (node for node in self.nodes if node.port != state["port"])
                with redis.Redis(host="127.0.0.1", port=other.port, socket_timeout=1) as node:
                    replication = node.info("replication")
                if (
                    replication["role"] == "slave"
                    and replication["master_port"] == state["port"]
                    and replication["master_link_status"] == "up"
                ):
                    return
            time.sleep(0.1)
        raise ServerStartError(f"the Sentinels did not settle within {timeout:.0f}s: {state}")

    @contextlib.contextmanager
    def primary_killed(self, timeout: float = START_TIMEOUT) -> Iterator[SentinelNode]:
        """SIGKILL the primary for the body; after it, wait for the Sentinels to promote the
        replica and start the killed node again as its replica."""
        killed = self.primary()
        (promoted,) = (node for node in self.nodes if node is not killed)
        killed.kill()
        try:
            yield killed
        finally:
            deadline = time.monotonic() + timeout
            while self.named_primaries() != {promoted.port}:
                if time.monotonic() > deadline:
                    raise ServerStartError("the Sentinels did not promote the replica")
                time.sleep(0.1)
            killed.restart_as_replica_of(promoted.port)
            self.wait_settled(timeout=timeout)  # a loaded machine may fail over once more


class RedisClusterNode(RedisServer):
    """One redis-server of a :class:`RedisCluster`: cluster mode, its ``nodes.conf`` and a
    cluster bus on a free port of its own (not port + 10000, which may be out of range)."""

    name = "redis-cluster-node"

    def __init__(self, node_timeout_ms: int = 2000) -> None:
        super().__init__()
        self.bus_port = 0
        self.node_timeout_ms = node_timeout_ms

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        self.bus_port = self.bus_port or free_port()  # the same after a restart
        return [
            *super().command(), "--cluster-enabled", "yes",
            "--cluster-config-file", os.path.join(self.workdir, "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip

    def restart(self) -> None:
        """Start again after :meth:`kill`, on the same ports with the same ``nodes.conf``
        (no data): it rejoins the cluster, as a replica if its slots went to another."""
        self._launch()
        self._wait_until_answering()


class RedisCluster(ServerGroup):
    """A Redis Cluster of ``primaries`` primaries with one replica each, made by
    ``redis-cli --cluster create``; a node missing ``node_timeout_ms`` is failing.

    ``start()`` returns once every node says ``cluster_state:ok`` and knows every other node,
    and every replica's link to its primary is up (its initial sync done); ``stop()`` ends
    every process and folder. :meth:`primary_killed` kills the primary of a key for failover
    tests and, after the body, brings it back as a replica.
    """

    def __init__(self, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        self.nodes = [RedisClusterNode(node_timeout_ms) for _ in range(2 * primaries)]

    @property
    def seeds(self) -> tuple[str, ...]:
        """Every node's ``host:port``, to give a cluster client as its seeds."""
        return tuple(node.address for node in self.nodes)

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node as a seed."""
        return "redis+cluster://" + ",".join(self.seeds)

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [node.process for node in self.nodes if node.process]

    def serving(
        self, key: str | bytes | None = None
    ) -> tuple[RedisClusterNode, RedisClusterNode | None]:
        """The primary that serves ``key``'s slot (slot 0 without a key), as the first live
        node that answers says, and its replica (``None`` while it has none) as it says."""
        import redis
        from redis.crc import key_slot

        slot = 0 if key is None else key_slot(key.encode() if isinstance(key, str) else key)
        by_port = {node.port: node for node in self.nodes}
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1) as client:
                    ranges = client.execute_command("CLUSTER", "SLOTS")
                primary = next(by_port[r[2][1]] for r in ranges if r[0] <= slot <= r[1])
                with redis.Redis(host="127.0.0.1", port=primary.port, socket_timeout=1) as client:
                    replication = client.info("replication")  # its own word on its replicas
            except (redis.RedisError, StopIteration):
                continue
            replica = replication.get("slave0", {}).get("port")
            return primary, by_port.get(replica)
        raise ServerStartError(f"no live node names a primary for slot {slot}")

    @contextlib.contextmanager
    def primary_killed(
        self, key: str | bytes | None = None, timeout: float = START_TIMEOUT
    ) -> Iterator[RedisClusterNode]:
        """SIGKILL the primary of ``key``'s slot (see :meth:`serving`) for the body; after
        it, wait until its replica is promoted, start the killed node again (it rejoins as
        a replica) and wait until the cluster is whole (:meth:`wait_formed`)."""
        killed, replica = self.serving(key)
        deadline = time.monotonic() + timeout
        while replica is None:  # one being resynced: wait for it, there is nothing to promote
            if time.monotonic() > deadline:
                raise ServerStartError(f"{killed.address} has no replica to promote")
            time.sleep(0.05)
            killed, replica = self.serving(key)
        killed.kill()
        try:
            yield killed
        finally:
            self.wait_promoted(replica, key, timeout)
            killed.restart()
            self.wait_formed(timeout)

    def wait_promoted(
        self, node: RedisClusterNode, key: str | bytes | None, timeout: float = START_TIMEOUT
    ) -> None:
        """Wait until ``node`` serves ``key``'s slot."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(ServerStartError):
                if self.serving(key)[0] is node:
                    return
            if time.monotonic() > deadline:
                raise ServerStartError(f"{node.address} was not promoted within {timeout:.0f}s")
            time.sleep(0.05)

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [find_binary("redis-cli"), "--cluster", "create", *self.seeds,
                 "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                output = (created.stdout + created.stderr)[-2000:]
                raise ServerStartError(f"redis-cli --cluster create failed:\n{output}")
            self.wait_formed()
        except BaseException:
            self.stop()
            raise
        return self

    def members(self) -> list[Any]:
        return list(self.nodes)

    def waiting_for(self) -> list[str]:
        """What the cluster is not yet: one line per node that is not ready."""
        import redis

        waiting = []
        for node in self.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO").decode()
                replication = client.info("replication")
            state = dict(line.split(":", 1) for line in info.split() if ":" in line)
            known = int(state["cluster_known_nodes"])
            if state["cluster_state"] != "ok" or known != len(self.nodes):
                waiting.append(f"{node.address}: {state['cluster_state']}, knows {known} nodes")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                waiting.append(f"{node.address}: replica link {replication['master_link_status']}")
        return waiting

    def wait_formed(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until :meth:`waiting_for` is empty."""
        deadline = time.monotonic() + timeout
        while waiting := self.waiting_for():
            if time.monotonic() > deadline:
                raise ServerStartError(f"the cluster did not form within {timeout:.0f}s: {waiting}")
            time.sleep(0.05)


class MemcachedServer(_ForegroundServer):
    """memcached on TCP only (no UDP), 64 MB of memory."""

    name = "memcached"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        return [
            find_binary("memcached"),
            "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64", *user,
        ]  # fmt: skip

    def answers(self) -> bool:
        from pymemcache.client.base import Client

        client = Client(("127.0.0.1", self.port), connect_timeout=1, timeout=1)
        try:
            return bool(client.version())
        finally:
            client.close()


class PostgresServer(Server):
    """A PostgreSQL cluster made by initdb, started by pg_ctl, with one database created.

    PostgreSQL refuses to run as root, so as root the cluster belongs to ``nobody``.
    Durability settings are off: the data is thrown away after the tests.
    """

    name = "postgres"
    database = "scalekit_test"
    superuser = "postgres"

    @property
    def datadir(self) -> str:
        return os.path.join(self.workdir, "data")

    @property
    def url(self) -> str:
        return f"postgres://{self.superuser}@127.0.0.1:{self.port}/{self.database}"

    def _run_as_owner(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        owner = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            owner = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        with open(self.log_path, "ab") as log:
            done = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=self.workdir,
                **owner,
            )
        if check and done.returncode != 0:
            raise ServerStartError(f"{os.path.basename(command[0])} exited with {done.returncode}")
        return done

    def _launch(self) -> None:
        self._own_workdir()
        self._run_as_owner(
            find_binary("initdb"), "-D", self.datadir, "-U", self.superuser,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        self.start_cluster()

    def _own_workdir(self) -> None:
        """Create the log file; as root, give both to ``nobody``, who runs the cluster."""
        open(self.log_path, "ab").close()
        give_to_nobody(self.workdir, self.log_path)  # pg_ctl, run as nobody, writes the log

    def start_cluster(self) -> None:
        """``pg_ctl start`` on the existing cluster, waiting until it accepts connections."""
        settings = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run_as_owner(
            find_binary("pg_ctl"), "-D", self.datadir, "-l", self.log_path, "-o", settings,
            "-w", "-t", str(int(START_TIMEOUT)), "start",
        )  # fmt: skip

    def _pids(self) -> list[int]:
        """The postmaster and its children (a backend per connection, background workers):
        pg_ctl started them, so there is no process of ours to signal."""
        with open(os.path.join(self.datadir, "postmaster.pid")) as pidfile:
            postmaster = int(pidfile.readline())
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as children:
            return [postmaster, *map(int, children.read().split())]

    def stop_cluster(self, check: bool = True) -> None:
        """``pg_ctl stop -m fast``: the data stays on disk for ``start_cluster``."""
        self._run_as_owner(
            find_binary("pg_ctl"), "-D", self.datadir, "-m", "fast", "-w", "stop", check=check
        )

    def answers(self) -> bool:
        import psycopg2

        admin = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres",
            connect_timeout=2,
        )  # fmt: skip
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            admin.close()
        return True

    def stop(self) -> None:
        if self.workdir and os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self.stop_cluster(check=False)
        super().stop()


class MariaDBServer(_ForegroundServer):
    """A MariaDB (MySQL) server made by mariadb-install-db, with one database and one user
    with a password, on TCP; durability off, the data is thrown away after the tests.

    As root, the server and its folder belong to ``nobody``. Setup goes through the unix
    socket as the passwordless root; the tests connect over TCP as ``user``.
    """

    name = "mariadb"
    database = "scalekit_test"
    user = "scalekit"
    password = "maria-secret"

    @property
    def datadir(self) -> str:
        return os.path.join(self.workdir, "data")

    @property
    def socket_path(self) -> str:
        return os.path.join(self.workdir, "mariadb.sock")

    @property
    def url(self) -> str:
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _owner(self) -> list[str]:
        return ["--user=nobody"] if os.geteuid() == 0 else []

    def _launch(self) -> None:
        give_to_nobody(self.workdir)
        with open(self.log_path, "ab") as log:
            subprocess.run(
                [find_binary("mariadb-install-db"), "--no-defaults", f"--datadir={self.datadir}",
                 "--auth-root-authentication-method=normal", "--skip-test-db", *self._owner()],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, check=True,
            )  # fmt: skip
        super()._launch()

    def command(self) -> list[str]:
        return [
            find_binary("mariadbd"), "--no-defaults", f"--datadir={self.datadir}",
            f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket_path}",
            f"--pid-file={os.path.join(self.workdir, 'mariadb.pid')}", "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=64M",
            *self.replication_options(), *self._owner(),
        ]  # fmt: skip

    def replication_options(self) -> list[str]:
        """A server that replicates neither way keeps no binary log."""
        return ["--skip-log-bin"]

    def answers(self) -> bool:
        with contextlib.closing(self.admin()) as admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            cursor.execute(f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' "
                           f"IDENTIFIED BY '{self.password}'")  # fmt: skip
            cursor.execute(f"GRANT ALL ON {self.database}.* TO '{self.user}'@'127.0.0.1'")
            self.set_up(cursor)
            admin.commit()
        return True

    def admin(self):
        """A connection as the server's root user (the unix socket, no password)."""
        import pymysql

        return pymysql.connect(unix_socket=self.socket_path, user="root", connect_timeout=2)

    def set_up(self, cursor) -> None:
        """What a primary or a replica adds to the database and the user every server has."""

    def sql(self, query: str, *args) -> list[dict]:
        """Run one statement as root; its rows as dicts (if any)."""
        import pymysql

        with contextlib.closing(self.admin()) as admin:
            with admin.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute(query, args or None)
                rows = list(cursor.fetchall()) if cursor.description else []
            admin.commit()
        return rows


class MariaDBPrimary(MariaDBServer):
    """A MariaDB server that keeps a binary log (row format) for :class:`MariaDBReplica`."""

    name = "mariadb-primary"
    replicator = "replicator"
    replicator_password = "replicate-secret"

    def replication_options(self) -> list[str]:
        return ["--log-bin=binlog", "--server-id=1", "--binlog-format=ROW"]

    def set_up(self, cursor) -> None:
        cursor.execute(f"CREATE USER IF NOT EXISTS '{self.replicator}'@'127.0.0.1' "
                       f"IDENTIFIED BY '{self.replicator_password}'")  # fmt: skip
        cursor.execute(f"GRANT REPLICATION SLAVE ON *.* TO '{self.replicator}'@'127.0.0.1'")

    def position(self) -> str:
        """The GTID position of everything written so far."""
        return self.sql("SELECT @@gtid_binlog_pos AS pos")[0]["pos"]


class MariaDBReplica(MariaDBServer):
    """A read-only replica of ``primary`` that replays its binary log from the start (GTID).

    The replica's user may read the replication status (``SLAVE MONITOR``), as
    ``ReplicaSet(max_lag=...)`` needs; ``monitor=False`` leaves that privilege out.
    """

    name = "mariadb-replica"
    _ids = itertools.count(2)

    def __init__(self, primary: MariaDBPrimary, monitor: bool = True) -> None:
        super().__init__()
        self.primary, self.monitor = primary, monitor
        self.server_id = next(self._ids)

    def replication_options(self) -> list[str]:
        return ["--skip-log-bin", f"--server-id={self.server_id}", "--read-only",
                "--skip-slave-start"]  # fmt: skip

    def set_up(self, cursor) -> None:
        if self.monitor:
            cursor.execute(f"GRANT SLAVE MONITOR ON *.* TO '{self.user}'@'127.0.0.1'")
        cursor.execute("SHOW SLAVE STATUS")
        if cursor.fetchone() is None:  # first time: point it at the primary
            primary = self.primary
            cursor.execute(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %s, "
                "MASTER_USER = %s, MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, "
                "MASTER_CONNECT_RETRY = 1",
                (primary.port, primary.replicator, primary.replicator_password),
            )
        cursor.execute("START SLAVE")

    def wait_replayed(self, timeout: float = 10) -> None:
        """Wait until this replica has replayed all the primary has written so far."""
        position = self.primary.position()
        found = self.sql("SELECT MASTER_GTID_WAIT(%s, %s) AS done", position, timeout)
        if found[0]["done"] != 0:
            raise AssertionError(f"replica on {self.port} did not replay up to {position}")


class PostgresReplica(PostgresServer):
    """A hot standby of ``primary``: ``pg_basebackup -R`` into its own folder, streaming.

    initdb's default pg_hba.conf already lets local connections replicate, and PostgreSQL's
    defaults (wal_level=replica, max_wal_senders=10, hot_standby=on) make any
    :class:`PostgresServer` a primary. The replica answers reads only; writes raise.
    """

    name = "postgres-replica"

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__()
        self.primary = primary

    def _launch(self) -> None:
        self._own_workdir()
        self._run_as_owner(
            find_binary("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", self.superuser, "-D", self.datadir, "-R", "-X", "stream", "--no-sync",
            "-c", "fast",
        )  # fmt: skip
        self.start_cluster()

    def answers(self) -> bool:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.superuser, dbname=self.database,
            connect_timeout=2,
        )  # fmt: skip
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_is_in_recovery()")
                return bool(cursor.fetchone()[0])
        finally:
            connection.close()


class _WebServer(_ForegroundServer):
    """A web server run from a config file it writes in its work folder around ``site``
    (which may name ``{port}``): subclasses give ``config_name``, ``config`` and ``argv``."""

    config_name = ""

    def __init__(self, site: str) -> None:
        super().__init__()
        self.site = site

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, self.config_name)

    def site_block(self) -> str:
        return self.site.replace("{port}", str(self.port))

    @abc.abstractmethod
    def config(self) -> str:
        """The whole config file."""

    @abc.abstractmethod
    def argv(self) -> list[str]:
        """The command line that runs the server on ``config_path``."""

    def command(self) -> list[str]:
        with open(self.config_path, "w") as conf:
            conf.write(self.config())
        return self.argv()

    def answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True


class NginxServer(_WebServer):
    """nginx in the foreground (``daemon off``) serving ``site``, a ``server { }`` block.

    Logs, pid and temp folders live in the work folder. As root the workers run as
    ``nobody``, so served files must be world-readable. The Debian brotli_static module is
    loaded when installed.
    """

    name = "nginx"
    config_name = "nginx.conf"
    brotli_module = "/usr/lib/nginx/modules/ngx_http_brotli_static_module.so"

    def config(self) -> str:
        """The whole nginx.conf around ``site``."""
        load = f"load_module {self.brotli_module};" if os.path.exists(self.brotli_module) else ""
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        temps = "\n".join(
            f"    {kind}_temp_path {self.workdir}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{load}\n{user}\ndaemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\n"
            f"error_log {self.log_path} info;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n    include /etc/nginx/mime.types;\n    access_log off;\n{temps}\n"
            f"{self.site_block()}\n}}\n"
        )

    def argv(self) -> list[str]:
        return [find_binary("nginx"), "-c", self.config_path, "-p", self.workdir]


class ApacheServer(_WebServer):
    """Apache httpd (Debian's ``apache2``) in the foreground with ``site`` in its config;
    the modules it needs are loaded from Debian's folder."""

    name = "apache"
    config_name = "apache.conf"
    modules = ("mpm_event", "authz_core", "alias", "dir", "mime", "rewrite", "headers", "env")

    def config(self) -> str:
        """The whole httpd config around ``site``."""
        load = "\n".join(
            f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in self.modules
        )
        user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
        return (
            f"ServerRoot {self.workdir}\nServerName 127.0.0.1\nListen 127.0.0.1:{self.port}\n"
            f"{load}\n{user}PidFile {self.workdir}/apache.pid\nErrorLog {self.log_path}\n"
            f"LogLevel warn\nTypesConfig /etc/mime.types\nDocumentRoot {self.workdir}\n"
            f"{self.site_block()}\n"
        )

    def argv(self) -> list[str]:
        return [find_binary("apache2"), "-f", self.config_path, "-DFOREGROUND"]


class S3Server(_ForegroundServer):
    """moto's ``moto_server``: an S3-compatible server (in memory, large objects spooled to
    files in its own folder) standing in for the real service; any key pair is accepted.

    :meth:`url` names a bucket (and a prefix) on it for ``scalekit.uploads.open_store``;
    :meth:`create_bucket` makes one, :meth:`client` is a boto3 client to look behind a store.
    """

    name = "moto-s3"
    access_key = "scalekit-test"
    secret_key = "moto-secret-key"
    region = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str, prefix: str = "", **options: str) -> str:
        """``s3://KEY:SECRET@bucket/prefix?endpoint_url=...&region=...`` (+ ``options``)."""
        query = {"endpoint_url": self.endpoint_url, "region": self.region, **options}
        return f"s3://{self.access_key}:{self.secret_key}@{bucket}/{prefix}?" + "&".join(
            f"{name}={value}" for name, value in query.items()
        )

    def command(self) -> list[str]:
        moto_server = os.path.join(os.path.dirname(sys.executable), "moto_server")
        if not os.path.exists(moto_server):
            moto_server = find_binary("moto_server")
        return [moto_server, "-H", "127.0.0.1", "-p", str(self.port)]

    def _launch(self) -> None:
        environment = {**os.environ, "TMPDIR": self.workdir}  # its spooled objects: ours
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env=environment,
            )  # fmt: skip

    def client(self, timeout: float = 5):
        """A boto3 S3 client of this server (path-style addressing, one attempt)."""
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        )  # fmt: skip
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
        )  # fmt: skip

    def restart(self) -> None:
        """Start again after :meth:`kill`, on the same port, empty (moto keeps nothing)."""
        self._launch()
        self._wait_until_answering()

    def create_bucket(self, bucket: str) -> str:
        """Make ``bucket`` (already there: fine); return its name."""
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def answers(self) -> bool:
        self.client(timeout=1).list_buckets()
        return True
