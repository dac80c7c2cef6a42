"""Downloads: a 100 MB upload served by ``Downloads`` from each store, beside the same file
served from disk by a plain WSGI file wrapper.

What the uploads issue claims, measured in one run: through a real gunicorn (sync worker,
one per case), a client on this machine downloads the file whole, and the throughput of
``scalekit.uploads.Downloads`` over the file store is at least 0.9x that of the plain app
``wsgi.file_wrapper(open(path, "rb"))``. The other stores are reported beside it: sqlite,
PostgreSQL and MariaDB (chunk rows through pydal) and S3 (moto's server standing in for
the service, ranged ``get_object`` through boto3).

This process (the client) and the store servers run on one CPU, every gunicorn on another
(``taskset``); the servers are private ones started here (``tests/servers.py``). The file is
made from a fixed seed and stored once in each store; every case's first download is
checked (SHA-256, headers) and untimed. 1. the claim: the file store and the baseline alone,
taking turns; 2. every store beside the baseline. The cases take turns in each round, one
later each round, a turn downloading the file as often as fits in a second; figures are
medians over the rounds, a ratio the median of the per-round ratios to the baseline, a
spread the middle half of the per-round values. The worker's CPU per download (user +
system) shows what the server does for the bytes (sendfile costs little), the store
server's what the store costs.
Run: ``.venv/bin/python benchmarks/uploads.py [--quick] [--cases file,s3]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from harness import interleaved, median, spread, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TARGET = 0.9  # the file store's throughput over the baseline's, at least
TURN = 1.0  # seconds: a case's turn downloads the file as often as fits (at least once)
FILENAME = "bench-download.bin"  # the client's file name the upload is saved under
STORE_VAR, PATH_VAR = "SCALEKIT_BENCH_STORE", "SCALEKIT_BENCH_FILE"  # what a worker serves
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
MB = 1_000_000


@dataclass(frozen=True)
class Plan:
    size: int  # bytes of the file
    claim_rounds: int  # 1.: the file store and the baseline alone
    rounds: int  # 2.: every case


FULL = Plan(size=100 * MB, claim_rounds=31, rounds=21)
QUICK = Plan(size=100 * MB, claim_rounds=5, rounds=3)


# -- what each gunicorn serves (imported by the worker: ``uploads:served()``) ---------------
def plain_file(path: str) -> Callable:
    """The baseline: the file from disk as the server's ``wsgi.file_wrapper`` (sendfile)."""

    def app(environ, start_response):
        file = open(path, "rb")  # noqa: SIM115 - closed by the server through the wrapper
        size = os.fstat(file.fileno()).st_size
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        return environ["wsgi.file_wrapper"](file)

    return app


def served() -> Callable:
    """The WSGI app of one case, from the environment gunicorn was started with: the plain
    app on ``SCALEKIT_BENCH_FILE``, or ``Downloads`` on the store ``SCALEKIT_BENCH_STORE``."""
    if PATH_VAR in os.environ:
        return plain_file(os.environ[PATH_VAR])
    from scalekit.uploads import Downloads, open_store

    return Downloads(open_store(os.environ[STORE_VAR]))


# -- the cases -------------------------------------------------------------------------------
@dataclass
class Case:
    """One gunicorn serving the file at ``path``; each call (a turn, timed by the caller)
    downloads it ``repeat`` times and records the worker's CPU seconds per download."""

    label: str
    port: int
    path: str
    worker: int  # the pid of gunicorn's worker
    server: int | None = None  # the pid of the store's server
    repeat: int = 1
    cpu: list[float] = field(default_factory=list)  # the worker's, per download
    server_cpu: list[float] = field(default_factory=list)  # the store server's, per download

    def __call__(self) -> None:
        worker = cpu_seconds(self.worker)
        server = tree_cpu(self.server) if self.server else 0.0
        for _ in range(self.repeat):
            download(self.port, self.path, BUFFER)
        self.cpu.append((cpu_seconds(self.worker) - worker) / self.repeat)
        if self.server:
            self.server_cpu.append((tree_cpu(self.server) - server) / self.repeat)


BUFFER = memoryview(bytearray(1 << 20))


def download(
    port: int, path: str, buffer: memoryview, digest: Any = None
) -> http.client.HTTPResponse:
    """GET ``path`` whole, as a client saving it would read it (``readinto`` a buffer); the
    bytes fed to ``digest`` when given. Its response (read); a status other than 200 or a
    short body raise."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path} on {port}: {response.status} {response.read()[:300]!r}")
        total, length = 0, int(response.getheader("Content-Length", -1))
        while count := response.readinto(buffer):
            total += count
            if digest is not None:
                digest.update(buffer[:count])
        if total != length:
            raise RuntimeError(f"GET {path} on {port}: {total} bytes of {length}")
        return response
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its children (a PostgreSQL server's backends)."""
    total = cpu_seconds(pid)
    with contextlib.suppress(OSError):  # exited meanwhile
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                total += sum(tree_cpu(int(child)) for child in children.read().split())
    return total


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def gunicorn(env: dict[str, str], cpu: int, folder: str, label: str) -> Iterator[tuple[int, int]]:
    """gunicorn (one sync worker) on ``cpu`` serving ``served()`` with ``env`` added; yields
    its port and its worker's pid once it answers, stops it after."""
    from tests.servers import free_port

    port, log_path = free_port(), os.path.join(folder, f"gunicorn-{label}.log")
    command = ["taskset", "-c", str(cpu), GUNICORN, "--workers", "1", "--worker-class", "sync",
               "--timeout", "600", "--bind", f"127.0.0.1:{port}", "uploads:served()"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, ROOT]), **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=HERE, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        yield port, wait_for_worker(process, port, log_path)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_worker(process: subprocess.Popen, port: int, log_path: str) -> int:
    """The pid of gunicorn's worker, once the port accepts connections."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        children = f"/proc/{process.pid}/task/{process.pid}/children"
        with open(children) as found:
            workers = found.read().split()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2):
            if workers:
                return int(workers[0])
        time.sleep(0.1)
    with open(log_path, errors="replace") as log:
        raise RuntimeError(f"gunicorn on {port} did not start:\n{log.read()[-3000:]}")


# -- the file and the stores -----------------------------------------------------------------
def make_file(path: str, size: int) -> str:
    """``size`` bytes from a fixed seed written to ``path``; their hex SHA-256."""
    rng, digest = random.Random(22), hashlib.sha256()
    with open(path, "wb") as file:
        for start in range(0, size, 1 << 20):
            block = rng.randbytes(min(1 << 20, size - start))
            digest.update(block)
            file.write(block)
    return digest.hexdigest()


#: case: its label (the store URLs are made in ``store_urls``)
STORES = {
    "file": "Downloads, file store",
    "sqlite": "Downloads, sqlite store",
    "postgres": "Downloads, PostgreSQL store",
    "mysql": "Downloads, MariaDB store",
    "s3": "Downloads, S3 store (moto)",
}
LABELS = {"baseline": "baseline: wsgi.file_wrapper(open(path)), sendfile", **STORES}


@dataclass(frozen=True)
class Store:
    url: str
    server: int | None = None  # the pid of its server process (None: in the worker)


def stores(stack: contextlib.ExitStack, cases: list[str], folder: str) -> dict[str, Store]:
    """Each store case's URL and server; the servers (private ones) started on ``stack``."""
    from tests.servers import MariaDBServer, PostgresServer, S3Server

    found = {}
    for case in cases:
        if case == "file":
            found[case] = Store(f"file://{folder}/uploads")
        elif case == "sqlite":
            found[case] = Store(f"sqlite://{folder}/uploads.sqlite")
        elif case == "postgres":
            postgres = stack.enter_context(PostgresServer().running())
            with open(os.path.join(postgres.datadir, "postmaster.pid")) as pid:
                found[case] = Store(postgres.url, int(pid.readline()))
        elif case == "mysql":
            mariadb = stack.enter_context(MariaDBServer().running())
            found[case] = Store(mariadb.url, mariadb.process.pid)
        elif case == "s3":
            moto = stack.enter_context(S3Server().running())
            url = moto.url(moto.create_bucket("scalekit-bench"), "uploads")
            found[case] = Store(url, moto.process.pid)
    return found


def server_versions(cases: list[str]) -> str:
    """What the stores run on, for the header."""
    from tests.servers import find_binary

    named = []
    for case in cases:
        if case == "sqlite":
            named.append(f"sqlite {sqlite3.sqlite_version}")
        elif case in ("postgres", "mysql"):
            program = find_binary("postgres" if case == "postgres" else "mariadbd")
            run = subprocess.run([program, "--version"], capture_output=True, text=True,
                                 check=False)  # fmt: skip
            named.append(run.stdout.strip().split("\n")[0])
        elif case == "s3":
            named.append(f"moto {version('moto')} (server), boto3 {version('boto3')}")
    return ", ".join(named)


def fill(url: str, path: str) -> str:
    """Store the file at ``path`` in the store ``url``; the name it is kept under."""
    from scalekit.uploads import open_store

    store = open_store(url)
    try:
        with open(path, "rb") as file:
            return store.save(file, FILENAME, table="bench", field="file")
    finally:
        store.close()


def checked(case: Case, digest: str, size: int) -> None:
    """The first download of a case, untimed: the bytes are the file's, the headers a
    download's."""
    sha = hashlib.sha256()
    response = download(case.port, case.path, BUFFER, sha)
    if sha.hexdigest() != digest:
        raise RuntimeError(f"{case.label}: the bytes served are not the file's")
    if case.label != "baseline" and response.getheader("X-Content-Type-Options") != "nosniff":
        raise RuntimeError(f"{case.label}: not a download's headers: {response.getheaders()}")
    if int(response.getheader("Content-Length")) != size:
        raise RuntimeError(f"{case.label}: Content-Length {response.getheader('Content-Length')}")


# -- the report ------------------------------------------------------------------------------
def report(
    title: str, size: int, cases: dict[str, Case], times: dict[str, list[float]], claim: bool
) -> None:
    """A table: each case's MB/s and spread, its ratio to the baseline (with the middle half
    of the per-round ratios), the worker's and the store server's CPU per download; the
    file store's verdict for the ``claim``."""
    speeds = {
        name: [size * case.repeat / MB / (us / 1e6) for us in times[name]]
        for name, case in cases.items()
    }
    print(f"\n{title} (median of {len(times['baseline'])} rounds)")
    print(
        f"   {'case':<50}{'MB/s':>7}{'spread':>16}{'ratio':>8}{'ratio spread':>14}"
        f"{'worker CPU':>12}{'server CPU':>12}{'turn':>6}"
    )
    for name, case in cases.items():
        mbs = speeds[name]
        ratios = [c / b for c, b in zip(mbs, speeds["baseline"], strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(
            f"   {LABELS[name]:<50}{median(mbs):7.0f}{spread(mbs):>16}"
            + (f"{'':22}" if name == "baseline" else f"{median(ratios):7.2f}x{q1:8.2f}..{q3:.2f}")
            + f"{median(case.cpu) * 1000:9.0f} ms"
            + (f"{median(case.server_cpu) * 1000:9.0f} ms" if case.server else f"{'-':>12}")
            + f"{case.repeat:5}x"
            + (
                f"   target >= {TARGET:g}x {verdict(median(ratios) >= TARGET)}"
                if name == "file" and claim
                else ""
            )
        )


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer rounds")
    every = ",".join(STORES)
    parser.add_argument("--cases", default=every, help=f"the stores measured (default: {every})")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    chosen = [case for case in args.cases.split(",") if case]
    unknown = set(chosen) - set(STORES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {','.join(STORES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: gunicorns, servers
    first, *others = sorted(os.sched_getaffinity(0))
    client_cpu, server_cpu = first, (others or [first])[-1]
    os.sched_setaffinity(0, {client_cpu})  # the store servers started below inherit it

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="scalekit-bench-"))
        path = os.path.join(folder, FILENAME)
        digest = make_file(path, plan.size)
        found = stores(stack, chosen, folder)
        print(
            f"uploads downloads ({'quick' if plan is QUICK else 'full'} run): Python "
            f"{sys.version.split()[0]}, gunicorn {version('gunicorn')} (sync worker, one per "
            f"case, on CPU {server_cpu}), pydal {version('pydal')}; the client and the store "
            f"servers on CPU {client_cpu} of {os.cpu_count()}; load average "
            f"{os.getloadavg()[0]:.1f}\nstores: {server_versions(list(found)) or 'none'}"
        )
        cases: dict[str, Case] = {}
        port, worker = stack.enter_context(gunicorn({PATH_VAR: path}, server_cpu, folder, "plain"))
        cases["baseline"] = Case("baseline", port, "/", worker)
        for name, store in found.items():
            start = time.perf_counter()
            stored = fill(store.url, path)
            print(f"   stored in {name}: {time.perf_counter() - start:.1f} s", flush=True)
            env = {STORE_VAR: store.url}
            port, worker = stack.enter_context(gunicorn(env, server_cpu, folder, name))
            cases[name] = Case(name, port, f"/download/{stored}", worker, store.server)
        for case in cases.values():  # a fast case downloads more in a turn: steadier
            checked(case, digest, plan.size)
            start = time.perf_counter()
            download(case.port, case.path, BUFFER)
            case.repeat = max(1, round(TURN / (time.perf_counter() - start)))
        print(
            f"\nA {plan.size / MB:.0f} MB upload downloaded whole, cases taking turns (a turn: "
            f"the downloads that fit in {TURN:g} s, at least one); spread: the middle half of the "
            "per-round MB/s;\nratio: the median of the per-round MB/s over the baseline's; CPU: "
            "user + system per download of the gunicorn worker and of the store's server"
        )
        if "file" in cases:
            claim = {name: cases[name] for name in ("baseline", "file")}
            times = interleaved(claim, number=1, rounds=plan.claim_rounds)
            report(
                "1. The claim: the file store beside the baseline", plan.size, claim, times, True
            )
        for case in cases.values():
            case.cpu.clear()
            case.server_cpu.clear()
        times = interleaved(cases, number=1, rounds=plan.rounds)
        report("2. Every store beside the baseline", plan.size, cases, times, False)
        memory = (f"{name} {peak_rss(case.worker) / MB:.0f} MB" for name, case in cases.items())
        print(f"   peak memory of each gunicorn worker (VmHWM): {', '.join(memory)}")
        print(f"   load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
