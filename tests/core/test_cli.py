"""The ``scalekit`` command: version, help listing commands, exit codes, the url command."""

import os
import subprocess
import sys

import pytest

import scalekit
from scalekit.cli import main

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "scalekit")


def run(*args):
    return subprocess.run(
        [CONSOLE_SCRIPT, *args], check=False, capture_output=True, text=True, timeout=60
    )


def test_version_from_the_installed_console_script():
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"scalekit {scalekit.__version__}"


def test_help_lists_the_registered_commands():
    done = run("--help")
    assert done.returncode == 0
    assert "commands:" in done.stdout
    assert "url" in done.stdout and "check backend URLs" in done.stdout


def test_python_dash_m_runs_the_same_cli():
    done = subprocess.run(
        [sys.executable, "-m", "scalekit", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and scalekit.__version__ in done.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "<command>" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    done = run("no-such-command")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_url_shows_settings_with_the_password_masked():
    done = run("url", "redis://:hunter2@cache:6380/2", "memcache://m1,m2:11212")
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "redis://:***@cache:6380/2" in done.stdout
    for line in ("kind: redis", "host: cache", "port: 6380", "db: 2", "password: ***",
                 "kind: memcache", "servers: (('m1', 11211), ('m2', 11212))"):  # fmt: skip
        assert f"  {line}\n" in done.stdout
    assert done.stdout.rstrip().endswith("2 URL(s) ok, 0 bad")


def test_url_with_a_bad_url_exits_1_and_still_checks_the_rest():
    done = run("url", "redis://:hunter2@h:99999/0", "file:///var/app/sessions")
    assert done.returncode == 1
    assert "error:" in done.stderr and "port must be a number" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "path: /var/app/sessions" in done.stdout
    assert "1 URL(s) ok, 1 bad" in done.stdout


@pytest.mark.parametrize("argv", [["url"], ["--no-such-flag"]])
def test_missing_or_unknown_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
