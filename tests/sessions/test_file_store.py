"""The file store on a real folder: layout, hostile ids, damaged and leftover files,
unusable folders, expiry from the file's time, and compare-and-set across processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pwd
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.sessions.stores import ANY, open_store
from scalekit.sessions.stores.file import FileStore

SID = "AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def store(root, app_name):
    opened = open_store(f"file://{root}", app_name=app_name)
    yield opened
    opened.close()


def session_file(root: Path, app: str, sid: str = SID) -> Path:
    return root / app / sid[:2] / sid


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        found[str(path)] = None if path.is_dir() else path.read_bytes()
    return found


def test_one_file_per_session_in_a_shard_folder(store, root, app_name):
    store.save(SID, b"payload", 60, None)
    path = session_file(root, app_name)
    header, _, payload = path.read_bytes().partition(b"\n")
    assert header.startswith(b"SKS1 ") and payload == b"payload"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [".mutex", SID]  # no temp file


def test_records_are_replaced_whole_never_rewritten_in_place(store, root, app_name):
    store.save(SID, b"first", 60, None)
    before = session_file(root, app_name).stat().st_ino
    store.save(SID, b"second", 60, ANY)
    assert session_file(root, app_name).stat().st_ino != before  # a new file renamed over
    assert store.load(SID).data == b"second"


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "AbCdEfGhIjKlMnOp/../../../x",
        "..",
        "." * 20,
        "AbCdEfGhIjKlMnOp\\..\\..\\x",
        "AbCdEfGhIjKlMnOp%2e%2e%2f",
        "AbCdEfGhIjKlMnOpQ\n",
        "AbCdEfGhIjKlMnOp.lock",
        "AbCdEfGhIjKlMnOp.tmp-1",
    ],
)
def test_hostile_ids_never_touch_a_file(tmp_path, root, app_name, bad_id):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0")
    before = tree(tmp_path)
    store = open_store(f"file://{root}", app_name=app_name)
    for call in (
        lambda: store.load(bad_id),
        lambda: store.save(bad_id, b"x", 60, None),
        lambda: store.save(bad_id, b"x", 60, ANY),
        lambda: store.touch(bad_id, 60),
        lambda: store.delete(bad_id),
        lambda: store.try_lease(bad_id, "token", 5),
        lambda: store.release_lease(bad_id, "token"),
    ):
        with pytest.raises(ValueError, match="malformed session id"):
            call()
    assert tree(tmp_path) == before  # not even the root folder was created


def test_odd_but_valid_ids_stay_inside_the_root(tmp_path, root, app_name, store):
    for sid in ("-" * 16, "_" * 16, "--AbCdEfGhIjKlMn"):
        store.save(sid, b"x", 60, None)
        assert store.load(sid).data == b"x"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(root / app_name in p.parents for p in written)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage without a header",
        b"SKS1 abc 60 7 00000000\npayload",  # bad checksum
        b"SKS1 abc 60 100 00000000\ntruncated",
        b"SKS1 abc sixty 7 0\npayload",
        b"SKS2 abc 60 7 0\npayload",
        b"\xff" * 300,
    ],
    ids=["empty", "no-header", "checksum", "truncated", "bad-ttl", "magic", "binary"],
)
def test_a_corrupt_file_loads_as_none_logged_and_left_in_place(
    store, root, app_name, caplog, content
):
    path = session_file(root, app_name)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
        assert store.load(SID) is None
    assert path.read_bytes() == content  # left for inspection
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and str(path) in warnings[0].getMessage()
    store.touch(SID, 60)  # no crash either
    assert path.read_bytes() == content
    # a compare-and-set against it is a conflict; creating replaces it
    assert store.save(SID, b"new", 60, "abc") is False
    assert store.save(SID, b"new", 60, None) is True
    assert store.load(SID).data == b"new"


def test_a_truncated_write_of_a_real_record_is_detected(store, root, app_name, caplog):
    store.save(SID, b"a longer payload that gets cut", 60, None)
    path = session_file(root, app_name)
    path.write_bytes(path.read_bytes()[:-5])
    with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
        assert store.load(SID) is None
    assert "corrupt session file" in caplog.text


def test_leftover_temp_and_lock_files_do_not_break_anything(store, root, app_name, caplog):
    shard = session_file(root, app_name).parent
    shard.mkdir(parents=True)
    (shard / f"{SID}.tmp-0123456789ab").write_bytes(b"half a write from a crash")
    (shard / f"{SID}.lock").write_bytes(b"\xff\xfe not a lock")
    assert store.load(SID) is None
    assert store.save(SID, b"data", 60, None) is True
    assert store.load(SID).data == b"data"
    with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
        assert store.try_lease(SID, "owner", 10) is True  # a damaged lock counts as expired
    assert "corrupt session lock file" in caplog.text
    store.release_lease(SID, "owner")
    assert not (shard / f"{SID}.lock").exists()
    assert (shard / f"{SID}.tmp-0123456789ab").exists()  # left for sessions2trash


def test_folders_are_created_on_first_write(root, app_name, store):
    assert store.load(SID) is None
    store.touch(SID, 60)
    store.delete(SID)
    store.release_lease(SID, "owner")
    assert not root.exists()  # reads and no-op writes create nothing
    store.save(SID, b"x", 60, None)
    shard = session_file(root, app_name).parent
    assert stat.S_IMODE(shard.stat().st_mode) == 0o700  # session ids are not listed to others
    assert session_file(root, app_name).exists()


def test_a_root_that_is_a_file_raises_store_unavailable_naming_it(tmp_path, app_name):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    store = open_store(f"file://{blocker}/sessions", app_name=app_name)
    for call in (
        lambda: store.save(SID, b"x", 60, None),
        lambda: store.load(SID),
        lambda: store.delete(SID),
        lambda: store.try_lease(SID, "owner", 5),
    ):
        with pytest.raises(StoreUnavailable, match=f"{blocker} is a file, not a folder"):
            call()
    assert blocker.read_text() == "a file"


def _check_read_only(folder: str, app: str) -> None:
    """As a user who cannot write ``folder``: writes fail clearly, reads still work."""
    store = FileStore(folder, app_name=app)
    assert store.load(SID).data == b"readable"
    for call in (
        lambda: store.save(OTHER_SID, b"x", 60, None),
        lambda: store.save(SID, b"x", 60, ANY),
        lambda: store.try_lease(OTHER_SID, "owner", 5),
    ):
        try:
            call()
        except StoreUnavailable as exc:
            assert folder in str(exc) and "Permission denied" in str(exc), str(exc)
        else:
            raise AssertionError("a write to a read-only folder succeeded")


OTHER_SID = "ZyXwVuTsRqPoNmLkJiHgFeDc"


def test_a_folder_this_user_cannot_write_raises_store_unavailable(app_name):
    top = tempfile.mkdtemp(prefix="scalekit-ro-")
    try:
        folder = os.path.join(top, "sessions")
        FileStore(folder, app_name=app_name).save(SID, b"readable", 60, None)
        os.chmod(top, 0o755)
        for dirpath, _, filenames in os.walk(folder):
            os.chmod(dirpath, 0o555)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
        if os.geteuid() != 0:
            _check_read_only(folder, app_name)
            return
        # root writes anywhere: check as nobody, in a child process
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgid(pwd.getpwnam("nobody").pw_gid)
                os.setuid(pwd.getpwnam("nobody").pw_uid)
                _check_read_only(folder, app_name)
                code = 0
            except BaseException as exc:  # noqa: BLE001 - the forked child reports and exits
                print(f"child failed: {exc!r}")
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        for dirpath, _, _ in os.walk(top):
            os.chmod(dirpath, 0o700)
        shutil.rmtree(top)


def test_expiry_comes_from_the_file_time(store, root, app_name):
    store.save(SID, b"x", 60, None)
    path = session_file(root, app_name)
    thirty_ago = time.time() - 30
    os.utime(path, (thirty_ago, thirty_ago))
    assert store.load(SID).touched_at == pytest.approx(thirty_ago, abs=0.01)
    os.utime(path, (time.time() - 61, time.time() - 61))
    assert store.load(SID) is None
    store.touch(SID, 60)  # an expired record is not brought back
    assert store.load(SID) is None
    assert path.exists()  # expired files are left for sessions2trash


def test_touch_changes_the_file_time_not_the_file(store, root, app_name):
    store.save(SID, b"x", 60, None)
    path = session_file(root, app_name)
    os.utime(path, (time.time() - 10, time.time() - 10))
    before, content = path.stat(), path.read_bytes()
    store.touch(SID, 60)
    after = path.stat()
    assert after.st_ino == before.st_ino and path.read_bytes() == content
    assert after.st_mtime > before.st_mtime + 9


def test_touch_with_another_ttl_rewrites_the_header_and_keeps_the_version(store, root, app_name):
    store.save(SID, b"x", 60, None)
    version = store.load(SID).version
    store.touch(SID, 3600)
    path = session_file(root, app_name)
    assert path.read_bytes().split(b" ")[2] == b"3600"
    old = time.time() - 120
    os.utime(path, (old, old))
    assert store.load(SID).data == b"x"  # 3600 s now, not 60
    assert store.save(SID, b"y", 60, version) is True


def test_lock_file_holds_the_owner_and_expiry(store, root, app_name):
    assert store.try_lease(SID, "owner-1", 30)
    lock = session_file(root, app_name).with_name(f"{SID}.lock")
    token, expires = lock.read_text().split("\n")[:2]
    assert token == "owner-1" and time.time() + 25 < float(expires) < time.time() + 31
    lock.write_text(f"crashed\n{time.time() - 1!r}\n")  # a holder that died
    assert store.try_lease(SID, "owner-2", 30) is True
    store.release_lease(SID, "crashed")
    assert lock.exists()
    store.release_lease(SID, "owner-2")
    assert not lock.exists()


@pytest.mark.parametrize("token", ["", "two\nlines", "x" * 129, None])
def test_bad_lock_tokens_are_refused(store, token):
    with pytest.raises(ValueError, match="lock token"):
        store.try_lease(SID, token, 5)


def _increment(folder: str, app: str, times: int) -> None:
    store = FileStore(folder, app_name=app)
    for _ in range(times):
        while True:
            record = store.load(SID)
            if store.save(SID, str(int(record.data) + 1).encode(), 60, record.version):
                break


def test_compare_and_set_across_processes_loses_no_update(root, app_name, store):
    store.save(SID, b"0", 60, None)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_increment, args=(str(root), app_name, 25)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert store.load(SID).data == b"100"


def test_options(tmp_path, app_name, monkeypatch):
    assert open_store(f"file://{tmp_path}?fsync=false", app_name=app_name).fsync is False
    assert open_store(f"file://{tmp_path}", app_name=app_name, fsync=False).fsync is False
    assert open_store(f"file://{tmp_path}", app_name=app_name).fsync is True
    with pytest.raises(ConfigError, match="fsync"):
        open_store(f"file://{tmp_path}?fsync=maybe", app_name=app_name)
    monkeypatch.chdir(tmp_path)
    relative = open_store("file://var/sessions", app_name=app_name)
    assert relative.folder == str(tmp_path / "var" / "sessions" / app_name)
    relative.save(SID, b"x", 60, None)
    assert session_file(tmp_path / "var" / "sessions", app_name).exists()


def test_payloads_must_be_bytes(store):
    with pytest.raises(TypeError, match="bytes"):
        store.save(SID, "text", 60, None)
    assert store.save(SID, bytearray(b"ok"), 60, None)
    assert store.load(SID).data == b"ok"
