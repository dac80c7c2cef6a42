"""The distribution: ``python -m build`` makes a wheel and an sdist named scalekit-wsgi (the
name ``scalekit`` on PyPI is another project) that install into a fresh venv and work there.

The venvs have no pip and no site packages of their own: pip of this venv installs into them
(``--python``, ``--no-deps``, offline), and a ``.pth`` file lends them this venv's
dependencies (pydal, redis, pymemcache) without its editable scalekit (a ``.pth`` file only
runs in a site folder, and this venv's folder is only put on their path).
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "scalekit-wsgi"

#: Run by the installed interpreter, away from the source tree: a real round trip through the
#: ram and disk caches and a file session store in the folder given as its argument.
SMOKE = """
import os, sys
from importlib.metadata import distribution

import scalekit, scalekit.cache, scalekit.sessions
from scalekit.sessions.cookies import new_session_id

root = sys.argv[1]
assert scalekit.__file__.startswith(sys.prefix), scalekit.__file__
assert distribution("scalekit-wsgi").version == scalekit.__version__
cache = scalekit.cache.Cache("smoke", folder=os.path.join(root, "cache"))
assert cache.ram("k", lambda: {"n": 1}, time_expire=60) == {"n": 1}
assert cache.ram("k", lambda: {"n": 2}, time_expire=60) == {"n": 1}
cache.disk.set("d", [1, 2], time_expire=60)
assert cache.disk.get("d") == [1, 2]
store = scalekit.sessions.open_store(f"file://{root}/sessions", app_name="smoke")
sid = new_session_id()
assert store.save(sid, b"payload", 60, None)
assert store.load(sid).data == b"payload"
print("smoke ok")
"""


def run(*command: str, cwd: str = ROOT) -> str:
    """stdout of ``command``; its output in the failure if it fails."""
    done = subprocess.run(
        command, check=False, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``{"wheel": path, "sdist": path}``: ``python -m build``'s outputs (the wheel is built
    from the sdist), built with this venv's setuptools."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), ROOT)
    built = sorted(os.listdir(out))  # name-version.tar.gz, name-version-py3-none-any.whl
    assert len(built) == 2 and built[0].endswith(".tar.gz") and built[1].endswith(".whl"), built
    return {"sdist": str(out / built[0]), "wheel": str(out / built[1])}


def fresh_venv(path: str) -> str:
    """A venv at ``path`` with this venv's dependencies on its path; its interpreter."""
    run(sys.executable, "-m", "venv", "--without-pip", path)
    python = os.path.join(path, "bin", "python")
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    with open(os.path.join(site, "deps-from-project-venv.pth"), "w") as pth:
        pth.write("".join(f"{folder}\n" for folder in sorted(ours)))
    return python


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_and_runs_in_a_fresh_venv(dist: dict[str, str], kind: str, tmp_path) -> None:
    python = fresh_venv(str(tmp_path / "venv"))
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps"]
    run(*pip, "--no-index", "--no-build-isolation", dist[kind])
    work = tmp_path / "work"
    work.mkdir()
    assert run(python, "-I", "-c", SMOKE, str(work), cwd=str(work)) == "smoke ok\n"
    assert (work / "sessions").is_dir() and (work / "cache").is_dir()

    console = os.path.join(os.path.dirname(python), "scalekit")
    version = run(python, "-I", "-c", "import scalekit; print(scalekit.__version__)").strip()
    assert run(console, "--version", cwd=str(work)).strip() == f"scalekit {version}"
    shown = run(console, "url", "redis://127.0.0.1:6379/0?socket_timeout=1", cwd=str(work))
    assert "kind: redis" in shown and "1 URL(s) ok, 0 bad" in shown


def test_metadata_name_and_contents(dist: dict[str, str]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
        assert email.message_from_bytes(wheel.read(metadata))["Name"] == NAME
    packages = {os.path.dirname(name) for name in names if name.endswith("/__init__.py")}
    source = {
        os.path.relpath(folder, ROOT)
        for folder, _, files in os.walk(os.path.join(ROOT, "scalekit"))
        if "__init__.py" in files
    }
    assert packages == source
    assert {name.split("/")[0] for name in names} <= {"scalekit", metadata.split("/")[0]}

    with tarfile.open(dist["sdist"]) as sdist:
        top, *_ = sdist.getnames()[0].split("/")
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        info = sdist.extractfile(f"{top}/PKG-INFO")
        assert email.message_from_bytes(info.read())["Name"] == NAME
    assert {"README.md", "setup.cfg", "pyproject.toml", "scalekit/__init__.py"} <= members
