"""The ``scalekit`` command: version, help listing commands, the url command, one exit code
per failure in every command, lazy imports, and the cron loop's runner."""

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

import scalekit
from scalekit.cli import EXIT_FAILURE, EXIT_USAGE, cron, main
from scalekit.core.errors import StoreUnavailable
from tests.servers import free_port

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


def test_url_with_a_bad_url_exits_2_and_still_checks_the_rest():
    done = run("url", "redis://:hunter2@h:99999/0", "file:///var/app/sessions")
    assert done.returncode == 2  # a bad URL is a usage error, as in every command
    assert "error:" in done.stderr and "port must be a number" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "path: /var/app/sessions" in done.stdout
    assert "1 URL(s) ok, 1 bad" in done.stdout


def test_url_masks_secret_options_and_malformed_urls():
    done = run("url", "redis://h/0?sentinel_password=hunter2", "redis:/u:hunter2@h/0",
               "redis://us/er:hunter2@h/0")  # fmt: skip
    assert "hunter2" not in done.stdout + done.stderr
    assert "'sentinel_password': '***'" in done.stdout
    assert "0 URL(s) ok, 3 bad" in done.stdout  # no opener takes sentinel_password


@pytest.mark.parametrize("argv", [["url"], ["--no-such-flag"]])
def test_missing_or_unknown_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


# -- one exit code for one failure, whatever the command ------------------------------------
def a_ticket_folder(tmp_path) -> str:
    """A folder with one ticket: tickets2db then has to reach its database."""
    from scalekit.tickets import FolderStore
    from tests.tickets.conftest import raise_value_error, ticket_of

    folder = FolderStore(tmp_path / "errors")
    folder.save(ticket_of(raise_value_error))
    return folder.folder


DOWN_REDIS, DOWN_POSTGRES = "redis://127.0.0.1:{port}/0", "postgres://u@127.0.0.1:{port}/app"
FAILURES = {  # the same failure, one command line per command
    "a bad URL": (EXIT_USAGE, [
        ["sessions2trash", "--store", "ftp://nowhere", "-o"],
        ["tickets2db", "--folder", "{folder}", "--db", "ftp://nowhere", "-o"],
        ["tickets", "--store", "ftp://nowhere", "list"],
        ["maintenance", "on", "--flag", "ftp://nowhere"],
        ["sessions2trash", "--store", "redis://127.0.0.1/0?colour=blue", "-o"],
        ["maintenance", "on", "--flag", "redis://127.0.0.1/0?colour=blue"],
    ]),
    "a missing setting": (EXIT_USAGE, [
        ["sessions2trash", "-o"],
        ["tickets2db", "--folder", "{folder}", "-o"],
        ["maintenance", "on"],
    ]),
    "a store that does not exist": (EXIT_FAILURE, [
        ["sessions2trash", "--store", "file://{missing}", "-o"],
        ["sessions2trash", "--store", "sqlite://{missing}.sqlite", "-o"],
        ["tickets", "--store", "file://{missing}", "list"],
        ["tickets", "--store", "sqlite://{missing}.sqlite", "list"],
        ["zip-static", "{missing}"],
    ]),
    "a store that cannot be reached": (EXIT_FAILURE, [
        ["sessions2trash", "--store", DOWN_REDIS, "-o"],
        ["tickets2db", "--folder", "{folder}", "--db", DOWN_POSTGRES, "-o"],
        ["tickets", "--store", DOWN_POSTGRES, "list"],
        ["maintenance", "on", "--flag", DOWN_REDIS],
    ]),
}  # fmt: skip


@pytest.mark.parametrize(
    "failure, code, argv",
    [(failure, code, argv) for failure, (code, cases) in FAILURES.items() for argv in cases],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_same_failure_exits_with_the_same_code_in_every_command(
    failure, code, argv, tmp_path, monkeypatch, capsys
):
    for variable in ("SCALEKIT_SESSION_STORE", "SCALEKIT_TICKET_DB", "SCALEKIT_MAINTENANCE_FLAG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    where = {"port": free_port(), "missing": str(tmp_path / "missing")}
    if "{folder}" in argv:
        where["folder"] = a_ticket_folder(tmp_path)
    assert main([arg.format(**where) for arg in argv]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"scalekit {argv[0]}: ") and "Traceback" not in err


@pytest.mark.parametrize("failure, code, argv", [
    (failure, code, argv) for failure, (code, cases) in FAILURES.items() for argv in cases
    if failure == "a store that does not exist"
], ids=lambda value: value if isinstance(value, str) else None)  # fmt: skip
def test_a_store_that_does_not_exist_is_named_and_not_created(failure, code, argv, tmp_path):
    done = run(*(arg.format(missing=tmp_path / "missing") for arg in argv))
    assert done.returncode == code
    assert f"{tmp_path / 'missing'}" in done.stderr and "does not exist" in done.stderr
    assert list(tmp_path.iterdir()) == []


#: (command line, the parser whose usage the error shows): each number option of each
#: command with 0 or a negative number, last, and an option the command does not know.
USAGE_ERRORS = [
    (["sessions2trash", "--store", DOWN_REDIS, "-o", "--batch", "0"], "sessions2trash"),
    (["sessions2trash", "--store", DOWN_REDIS, "-s", "0"], "sessions2trash"),
    (["sessions2trash", "--store", DOWN_REDIS, "-o", "-x", "-3"], "sessions2trash"),
    (["tickets2db", "--folder", "errors", "-s", "-3"], "tickets2db"),
    (["tickets", "list", "-n", "0"], "tickets list"),
    (["tickets", "list", "-n", "-3"], "tickets list"),
    (["tickets", "purge", "--older-than", "0"], "tickets purge"),
    (["tickets", "serve", "--port", "-3"], "tickets serve"),
    (["maintenance", "on", "--flag", DOWN_REDIS, "--retry-after", "0"], "maintenance"),
    (["zip-static", ".", "-j", "0"], "zip-static"),
    (["zip-static", ".", "--level", "0"], "zip-static"),
    (["zip-static", ".", "--min-size", "-3"], "zip-static"),
    (["sessions2trash", "--bogus"], "sessions2trash"),
    (["tickets2db", "--bogus"], "tickets2db"),
    (["tickets", "list", "--bogus"], "tickets list"),
    (["tickets", "--bogus", "list"], "tickets"),
    (["maintenance", "status", "--bogus"], "maintenance"),
    (["url", "redis://h/0", "--bogus"], "url"),
    (["zip-static", ".", "--bogus"], "zip-static"),
]


@pytest.mark.parametrize("argv, command", USAGE_ERRORS, ids=" ".join)
def test_a_bad_number_or_option_is_the_commands_usage_error(argv, command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([arg.format(port=free_port()) for arg in argv])
    assert caught.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"usage: scalekit {command} ")
    problem = "unrecognized arguments: --bogus" if "--bogus" in argv else f": {argv[-1]} is "
    assert f"scalekit {command}: error: " in err and problem in err.splitlines()[-1]


def test_a_file_system_error_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "errors").write_text("a file where the ticket folder should be")
    database = f"sqlite://{tmp_path}/tickets.sqlite"
    argv = ["tickets2db", "--folder", str(tmp_path / "errors"), "--db", database, "-o"]
    assert main(argv) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("scalekit tickets2db: ") and "Not a directory" in err


# -- the url command and --help load no piece and no driver ---------------------------------
LOADED_MODULES = """
import sys
from scalekit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(*sys.modules, sep="\\n", file=sys.stderr)
"""
PIECES = ("sessions", "cache", "tickets", "db", "static", "maintenance", "connect", "wsgi")
DRIVERS = ("redis", "pydal", "pymemcache", "psycopg2", "pymysql", "brotli", "zopfli", "deflate")


@pytest.mark.parametrize("argv", [["--help"], ["url", "--help"]])
def test_help_imports_no_piece_and_no_driver(argv):
    done = subprocess.run([sys.executable, "-c", LOADED_MODULES, *argv], check=False,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    loaded = set(done.stderr.split())
    assert "scalekit.cli.url" in loaded and "scalekit.cli.zip_static" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in DRIVERS) == []
    assert sorted(m for m in loaded if m.split(".")[:2] in [["scalekit", p] for p in PIECES]) == []


def test_url_imports_the_openers_of_the_pieces_it_checks_only():
    done = subprocess.run([sys.executable, "-c", LOADED_MODULES, "url", "--for", "flag",
                           "redis://h/0"], check=False, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    loaded = set(done.stderr.split())
    assert "scalekit.maintenance.flags" in loaded
    assert not {"scalekit.sessions", "scalekit.cache", "pydal", "pymemcache"} & loaded


# -- url checks a URL with the openers: it fails exactly when they refuse it ----------------
URLS = [
    "redis://h/0", "redis://h/0?colour=blue", "redis://h/0?client_cache=true",
    "redis://h/0?socket_timeout=abc", "redis://h/0?serializer=pickle", "redis://h:99999/0",
    "unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1&max_connections=x",
    "memcache://m1,m2:11212", "memcache://m?timeout=x", "memcache://m?colour=blue",
    "file://{tmp}/x", "file://{tmp}/x?fsync=maybe", "file://{tmp}/x?serializer=pickle",
    "file://{tmp}/x?fsync=true", "sqlite://{tmp}/x.sqlite?table=1bad", "sqlite:memory",
    "sqlite://{tmp}/x.sqlite?migrate=false", "postgres://u:pw@h/db?statement_timeout=0",
    "mysql://u@h/db?pool_size=-1", "ram://?max_entries=5", "ram://?max_entries=x",
    "ram://host", "ftp://x", "",
]  # fmt: skip


def refusal(piece: str, url: str) -> str | None:
    """The ConfigError of ``piece``'s opener for ``url``, or None if it opens it."""
    import importlib

    from scalekit.cli.url import OPENERS
    from scalekit.core.errors import ConfigError

    module, function = OPENERS[piece]
    try:
        getattr(importlib.import_module(module), function)(url).close()
    except ConfigError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("url", URLS)
def test_url_fails_exactly_when_the_opener_refuses_with_its_message(url, tmp_path, capsys):
    from scalekit.cli.url import OPENERS

    url = url.format(tmp=tmp_path)
    refusals = {piece: refusal(piece, url) for piece in OPENERS}
    for piece, expected in refusals.items():
        code = main(["url", "--for", piece, url])
        out, err = capsys.readouterr()
        if expected is None:
            assert (code, err) == (0, ""), piece
            assert f"opens as: {piece}" in out
        else:
            assert (code, err) == (EXIT_USAGE, f"error: {expected}\n"), piece
    code = main(["url", url])
    out, err = capsys.readouterr()
    assert code == (EXIT_USAGE if all(refusals.values()) else 0)
    for expected in filter(None, refusals.values()):
        assert expected in (err if code else out)
    assert list(tmp_path.iterdir()) == []  # checked, never opened for real


def test_url_shows_a_unix_sockets_path_not_a_host_and_port():
    done = run("url", "unix:///run/redis.sock?db=2")
    assert done.returncode == 0, done.stderr
    assert "  unix_socket: /run/redis.sock\n" in done.stdout and "  db: 2\n" in done.stdout
    assert "host:" not in done.stdout and "port:" not in done.stdout
    assert "ssl:" not in done.stdout


# -- the cron loop: one pass per command, the runner does the rest --------------------------
def loop_args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"command": "demo", "once": False, "sleep": 0.01, "verbose": 1,
                                 **given})  # fmt: skip


def test_the_loop_retries_an_outage_and_a_signal_ends_it_after_the_pass(capsys, caplog):
    before = signal.getsignal(signal.SIGTERM)
    passes = []

    def one_pass(progress):
        passes.append(len(passes))
        if len(passes) == 1:
            raise StoreUnavailable("redis://h/0 is down")
        progress("half way")
        os.kill(os.getpid(), signal.SIGTERM)  # the pass goes on to its end
        return cron.Outcome("moved 3", 3, "things")

    assert cron.run_passes(loop_args(), "here -> there", one_pass) == 0
    assert passes == [0, 1]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "  half way"
    assert out[1].startswith("demo: here -> there: moved 3 in ") and out[1].endswith(" things/s)")
    assert "pass failed, retrying in 0.01 s: redis://h/0 is down" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is before


def test_once_runs_one_pass_and_quiet_prints_only_what_is_notable(capsys):
    quiet, notable = cron.Outcome("moved 0"), cron.Outcome("1 file moved to bad/", notable=True)
    assert cron.run_passes(loop_args(once=True, verbose=0), "here", lambda _: quiet) == 0
    assert cron.run_passes(loop_args(once=True, verbose=0), "here", lambda _: notable) == 0
    assert capsys.readouterr().out == "demo: here: 1 file moved to bad/\n"

    def down(progress):
        raise StoreUnavailable("redis://h/0 is down")

    with pytest.raises(StoreUnavailable):  # -o: an outage fails the run (exit 1 in main)
        cron.run_passes(loop_args(once=True), "here", down)


def test_a_last_outcome_ends_the_loop(capsys):
    passes = []

    def one_pass(progress):
        passes.append(1)
        return cron.Outcome("memcached expires sessions by itself", notable=True, last=True)

    assert cron.run_passes(loop_args(verbose=0), "here", one_pass) == 0
    assert passes == [1]
    assert capsys.readouterr().out == "demo: here: memcached expires sessions by itself\n"


def test_sigterm_stops_a_sleeping_loop_at_once(tmp_path):
    (tmp_path / "app").mkdir()  # the app's session folder: sessions2trash creates none
    loop = subprocess.Popen(
        [sys.executable, "-m", "scalekit", "sessions2trash", "--store", f"file://{tmp_path}",
         "-s", "600", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert loop.stdout.readline().startswith("sessions2trash: ")  # the first pass is done
        time.sleep(0.2)
        started = time.monotonic()
        loop.send_signal(signal.SIGTERM)
        _, stderr = loop.communicate(timeout=10)
    finally:
        loop.kill()
    assert (loop.returncode, stderr) == (0, "")
    assert time.monotonic() - started < 5


# -- the shared argument types -----------------------------------------------------------
@pytest.mark.parametrize("text", ["0", "-3", "0.0", "x"])
def test_positive_refuses_zero_negative_and_junk_naming_the_value(text):
    from scalekit.cli.arguments import positive

    with pytest.raises((argparse.ArgumentTypeError, ValueError), match=repr(text)[1:-1]):
        positive(int if "." not in text else float)(text)


DURATIONS = [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000), ("1w", 604800),
             ("2.5", 2.5), ("1h30m", 5400), ("0", 0)]  # fmt: skip


@pytest.mark.parametrize("text, seconds", DURATIONS)
def test_duration_reads_a_number_and_a_unit(text, seconds):
    from scalekit.cli.arguments import duration

    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "30 days", "1y", "1h30", "1h 30m", "."])
def test_duration_refuses_what_is_not_one(text):
    from scalekit.cli.arguments import duration

    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        duration(text)
