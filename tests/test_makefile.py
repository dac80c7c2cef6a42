"""The Makefile's setup: what each target installs (pip extras, apt-get packages), the venv
on a Debian python3 without python3-venv, and ``make bench BENCH=... ARGS=...``.

The install wiring is read from ``make -n`` (a dry run) with a venv that does not exist yet,
so every install step shows; the venv rule and the bench loop run for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The packages only the tests use: `make cluster` and `make demo` must not install them.
TEST_ONLY = {"apache2", "chromium", "mariadb-server", "nginx", "libnginx-mod-http-brotli-static"}


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", ROOT, *args],
        check=False, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def dry_run(target: str, tmp_path) -> tuple[set[str], set[str], str]:
    """``(pip extras, apt-get packages, commands)`` that ``make target`` would install/run."""
    done = make("-n", target, f"VENV={tmp_path / 'venv'}")
    assert done.returncode == 0, done.stderr
    extras = set(re.findall(r"pip install --quiet -e '\.\[([^]]*)\]'", done.stdout))
    checked = re.findall(r"for dep in ([^;]*); do", done.stdout)
    packages = {dep.split("=")[0] for deps in checked for dep in deps.split()}
    return extras, packages, done.stdout


def test_demo_installs_no_test_tools_and_no_servers(tmp_path) -> None:
    extras, packages, commands = dry_run("demo", tmp_path)
    assert extras == {"all"}
    assert packages == set()
    assert "bin/gunicorn -c examples/gunicorn.conf.py" in commands


def test_cluster_installs_only_what_examples_cluster_starts(tmp_path) -> None:
    extras, packages, commands = dry_run("cluster", tmp_path)
    assert extras == {"all"}
    assert packages == {"redis-server", "memcached", "postgresql", "haproxy"}
    assert "-m examples.cluster start" in commands


def test_test_and_bench_install_their_own_lists(tmp_path) -> None:
    cluster = dry_run("cluster", tmp_path)[1]
    test_extras, test_packages, _ = dry_run("test", tmp_path)
    bench_extras, bench_packages, _ = dry_run("bench", tmp_path)
    assert test_extras == {"all,test"} and bench_extras == {"all,bench"}
    assert test_packages >= cluster | TEST_ONLY and "wrk" not in test_packages
    bench_servers = {"mariadb-server"}  # benchmarks/uploads.py starts a private MariaDB
    assert bench_packages >= cluster | bench_servers | {"wrk", "npm"}
    assert not bench_packages & (TEST_ONLY - bench_servers)


@pytest.fixture
def debian_python(tmp_path) -> tuple[list[str], dict[str, str], str]:
    """``(make arguments, environment, apt-get log)`` for a python3 that, like Debian's
    without python3.X-venv, has no ensurepip and leaves a venv without pip behind, until the
    fake ``apt-get`` (first on PATH, logging its arguments) "installs" a package; a fake
    ``sudo`` runs its command. Past that, python3 is the interpreter of this venv."""
    fakes, missing, log = tmp_path / "bin", tmp_path / "no-ensurepip", tmp_path / "apt-get.log"
    fakes.mkdir()
    missing.touch()
    real = os.path.realpath(sys.executable)
    (fakes / "python3").write_text(
        f'#!/bin/sh\n[ -e {missing} ] && case "$*" in\n'
        "  *ensurepip*) echo 'No module named ensurepip' >&2; exit 1;;\n"
        f'  "-m venv "*) mkdir -p "$3/bin" && ln -s {real} "$3/bin/python"; exit 1;;\n'
        f'esac\nexec {real} "$@"\n'
    )
    (fakes / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        f'case "$*" in *install*) [ -n "$FAKE_APT_BROKEN" ] || rm {missing};; esac\n'
    )
    (fakes / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for fake in fakes.iterdir():
        fake.chmod(0o755)
    venv = tmp_path / "venv"
    args = [f"PYTHON={fakes / 'python3'}", f"VENV={venv}", f"{venv}/bin/python"]
    return args, {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}"}, str(log)


def test_venv_installs_python3_venv_when_ensurepip_is_missing(debian_python, tmp_path) -> None:
    args, env, log = debian_python
    done = make(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    wanted = "python3.%d-venv" % sys.version_info[1]  # noqa: UP031 (the Debian package)
    assert f"cannot make a venv with pip: installing {wanted}" in done.stdout
    with open(log) as calls:
        assert calls.read().splitlines() == [
            "update -qq",
            f"install -y -qq --no-install-recommends {wanted}",
        ]
    subprocess.run([tmp_path / "venv" / "bin" / "python", "-m", "pip", "--version"], check=True)


def test_a_failed_venv_leaves_no_half_venv(debian_python, tmp_path) -> None:
    args, env, _ = debian_python
    done = make(*args, env={**env, "FAKE_APT_BROKEN": "1"})
    assert done.returncode != 0
    assert not (tmp_path / "venv").exists()  # the next `make` tries again


def test_bench_runs_the_benchmarks_named_with_args() -> None:
    # this venv, its bench extra and the bench servers taken as installed (-o): the tests'
    # redis-server is all that benchmarks/maintenance.py needs
    venv = sys.prefix
    skip_setup = [f"VENV={venv}", "-o", f"{venv}/.extras-all,bench", "-o", "sysdeps-bench"]
    done = make(*skip_setup, "bench", "BENCH=maintenance", "ARGS=--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.findall(r"^== (.*)$", done.stdout, re.MULTILINE) == [
        "benchmarks/maintenance.py --quick"
    ]
    assert "(quick run)" in done.stdout

    missing = make(*skip_setup, "bench", "BENCH=no_such_benchmark")
    assert missing.returncode != 0
    assert "no benchmark benchmarks/no_such_benchmark.py" in missing.stdout
