"""``scalekit maintenance on|off|status|schedule``: what operators type, what they see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from scalekit.cli import main
from scalekit.maintenance import MaintenanceMiddleware
from tests.maintenance.conftest import call, hello

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "scalekit")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scalekit(*args, env=None):
    return subprocess.run(
        [CONSOLE_SCRIPT, "maintenance", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_on_status_off_through_redis_flip_a_running_site(redis_url, app_name, capsys):
    site = MaintenanceMiddleware(hello, redis_url, app_name=app_name, cache_seconds=0)
    flag = ["--flag", redis_url, "--app", app_name]
    assert main(["maintenance", "status", *flag]) == 0
    assert capsys.readouterr().out.strip().endswith(": off")
    code = main(["maintenance", "on", *flag, "--mode", "read-only", "--message", "DB upgrade",
                 "--retry-after", "90", "--for", "30m"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert f"scalekit:m:{app_name}" in out and "read-only on until" in out and "DB upgrade" in out
    post = call(site, method="POST")
    assert post.status == 503 and post.header("Retry-After") == "90"
    assert main(["maintenance", "status", *flag]) == 0
    assert "read-only on until" in capsys.readouterr().out
    assert main(["maintenance", "off", *flag]) == 0
    assert "off (was read-only" in capsys.readouterr().out
    assert call(site, method="POST").status == 200


def test_schedule_through_the_console_script_and_the_environment(tmp_path):
    path = tmp_path / "MAINTENANCE"
    env = {"SCALEKIT_MAINTENANCE_FLAG": f"file://{path}"}
    before = time.time()
    done = scalekit("schedule", "--at", "+1h", "--for", "1h30m", "--mode", "down", env=env)
    assert done.returncode == 0, done.stderr
    assert "down scheduled from" in done.stdout
    stored = json.loads(path.read_text())
    assert stored["mode"] == "down"
    assert before + 3600 <= stored["start"] <= time.time() + 3600
    assert stored["end"] - stored["start"] == 5400
    done = scalekit("schedule", "--at", "2030-01-02T03:04", env=env)
    assert done.returncode == 0 and "scheduled from 2030-01-02 03:04:00 UTC" in done.stdout
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "maintenance.py"), "status"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert done.returncode == 0 and "scheduled from 2030-01-02 03:04:00 UTC" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["on"], "give the flag's URL with --flag or $SCALEKIT_MAINTENANCE_FLAG"),
    (["sideways", "--flag", "FLAG"], "invalid choice: 'sideways'"),
    (["on", "--flag", "FLAG", "--mode", "off"], "invalid choice: 'off'"),
    (["on", "--flag", "FLAG", "--for", "soon"], "'soon' is not a duration"),
    (["on", "--flag", "FLAG", "--retry-after", "-1"], "-1 is not positive: give 1 or more"),
    (["on", "--flag", "FLAG", "--retry-after", "0"], "0 is not positive: give 1 or more"),
    (["on", "--flag", "FLAG", "--retry-after", "1.5"], "invalid int value: '1.5'"),
    (["on", "--flag", "FLAG", "--for", "0"], "'0': a duration must be more than 0"),
    (["on", "--flag", "FLAG", "--for", "-3"], "'-3' is not a duration"),
    (["schedule", "--flag", "FLAG", "--at", "teatime"], "'teatime' is not a time"),
    (["schedule", "--flag", "FLAG"], "`schedule` needs --at TIME"),
    (["on", "--flag", "FLAG", "--at", "+1h"], "to start later use `schedule"),
    (["off", "--flag", "FLAG", "--mode", "down"], "`off` takes only --flag and --app"),
    (["schedule", "--flag", "FLAG", "--at", "2001-01-01", "--for", "1h"],
     "that window ended already"),
    (["on", "--flag", "memcache://localhost"], "memcached may evict a key at any time"),
    (["on", "--flag", "postgres://app:pw@db/app"], "'postgres://app:***@db/app' is a postgres"),
    (["status", "--flag", "/srv/app/MAINTENANCE"], "is not a URL; a maintenance flag is file:"),
    (["on", "--flag", "redis://localhost/0?color=blue"], "unknown option color"),
])  # fmt: skip
def test_bad_input_exits_2_with_a_clear_message(args, message, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("SCALEKIT_MAINTENANCE_FLAG", raising=False)
    flag = tmp_path / "MAINTENANCE"
    try:
        code = main(["maintenance", *(f"file://{flag}" if a == "FLAG" else a for a in args)])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not flag.exists()  # nothing was written


def test_usage_errors_from_the_console_script_have_no_traceback():
    done = scalekit("on", "--flag", "FLAG", "--for", "soon")
    assert done.returncode == 2
    assert "'soon' is not a duration" in done.stderr and "Traceback" not in done.stderr


def test_a_corrupt_flag_fails_status_with_exit_1(tmp_path, capsys):
    path = tmp_path / "flag"
    path.write_text("{oops")
    assert main(["maintenance", "status", "--flag", f"file://{path}"]) == 1
    assert "not a maintenance flag" in capsys.readouterr().err
    assert main(["maintenance", "off", "--flag", f"file://{path}"]) == 0  # off repairs it
    assert not path.exists()


def test_an_unreachable_redis_fails_with_exit_1(capsys):
    from tests.servers import free_port

    code = main(["maintenance", "on", "--flag", f"redis://127.0.0.1:{free_port()}/0"])
    assert code == 1
    assert "cannot change the maintenance flag" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing/MAINTENANCE", "a-file/MAINTENANCE"])
def test_a_flag_that_cannot_be_written_is_named_without_temp_names(where, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    done = scalekit("on", "--flag", f"file://{tmp_path / where}")
    assert done.returncode == 1
    folder = where.split("/")[0]
    why = "does not exist" if folder == "missing" else "is a file, not a folder"
    assert f"{tmp_path / folder} {why}" in done.stderr
    assert ".tmp-" not in done.stderr and "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["a-file"]  # nothing created, no temp file left


@pytest.mark.parametrize("action", ["status", "off"])
def test_status_and_off_on_a_flag_in_a_missing_folder_exit_1_naming_it(action, tmp_path):
    """A typo in the flag's folder is not "off": it names the folder and creates nothing."""
    done = scalekit(action, "--flag", f"file://{tmp_path}/missing/MAINTENANCE")
    assert done.returncode == 1, done.stdout
    assert f"{tmp_path / 'missing'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr and os.listdir(tmp_path) == []
    assert scalekit(action, "--flag", f"file://{tmp_path}/MAINTENANCE").returncode == 0
