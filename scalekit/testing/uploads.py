"""The upload store protocol as a test suite any store runs (scalekit's own run it on every
backend in ``tests/uploads/test_conformance.py``).

Subclass :class:`UploadStoreSuite` in a test module (a class named ``Test...``) and give the
fixture ``make_store``: a function ``make_store()`` that opens an
:class:`~scalekit.uploads.stores.UploadStore` as your users open it, on a place of the
test's own (a folder, a table, a bucket prefix) that is empty when the test starts; every
call in one test opens that same place again (a second handle, as a second server opens it),
and what it opened is closed after the test. A store other processes reach (a server, a
shared folder) subclasses :class:`SharedUploadStoreSuite`, whose tests fork: ``make_store()``
is also called in the child, as a forked worker opens its store. Imports pytest: for tests
only.

The big round trip streams :data:`BIG` bytes (200 MB) in and out, hashed on the fly, and
checks that the test process's peak memory (``VmHWM``) grows less than :data:`MEMORY_BOUND`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import signal
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from scalekit.testing import run_in_children, run_threads
from scalekit.uploads.errors import UploadNotFound, UploadTooLarge
from scalekit.uploads.names import new_name, original_filename, parse_name
from scalekit.uploads.stores.base import CHUNK, Source, UploadStore

__all__ = [
    "BAD_NAMES",
    "BIG",
    "CLIENT_FILENAMES",
    "MEMORY_BOUND",
    "SharedUploadStoreSuite",
    "UploadStoreSuite",
    "Watermark",
    "digest",
    "generated",
    "stalled_writer",
]

#: The size of the big round trip: 200 MB.
BIG = 200 * 1000 * 1000
#: How much the test process's peak resident memory may grow while streaming :data:`BIG`.
MEMORY_BOUND = 64 * 1024 * 1024
#: Names no store would make, so none holds: a read is UploadNotFound, a write ValueError.
_GOOD = "upload.file.0123456789abcdef.eA==.txt"
BAD_NAMES = [
    "", "../etc/passwd", "/etc/passwd", "upload.file/../../etc/passwd", _GOOD + "/../../x.txt",
    _GOOD.replace("txt", "t\x00xt"), _GOOD + "\n", _GOOD + " ", "upload.file.../x.txt",
    "upload.file." + "a" * 300 + ".txt", _GOOD.replace("eA==", "eA==" * 70),  # over 255
    _GOOD.replace("file", "fi le"), _GOOD.replace(".", "\\", 1), _GOOD + ".tmp-0123456789ab",
    None, 42,
]  # fmt: skip
#: File names clients send, and the file name a download shows for each.
CLIENT_FILENAMES = {
    "photo.jpg": "photo.jpg",
    "../../x.html": "x.html",
    "C:\\a\\b.png": "b.png",
    "é 🎉.txt": "é_🎉.txt",
    "evil\r\nSet-Cookie: a=b.html": "evil_Set-Cookie:_a=b.html",
    'quote"; filename=x.exe.txt': "quote_filename=x.exe.txt",
    "nul\x00.txt": "nul_.txt",
    "": "upload.bin",
    ".htaccess": "htaccess.htaccess",
    "no extension": "no_extension.bin",
    "a" * 300 + ".pdf": None,  # cut to fit a name: shown shorter, still a .pdf
}

MakeStore = Callable[[], UploadStore]


def generated(size: int, seed: int = 0) -> Iterator[bytes]:
    """``size`` pseudo-random bytes, the same for the same ``seed``, in blocks of an
    uneven length (a store meets block edges that are not its chunks')."""
    rand = random.Random(seed)
    block = CHUNK + 4099
    for start in range(0, size, block):
        yield rand.randbytes(min(block, size - start))


def digest(chunks: Iterable[bytes]) -> tuple[int, str, int]:
    """(size, hex SHA-256, longest chunk) of a stream, read as it comes."""
    hashed, size, longest = hashlib.sha256(), 0, 0
    for chunk in chunks:
        hashed.update(chunk)
        size += len(chunk)
        longest = max(longest, len(chunk))
    return size, hashed.hexdigest(), longest


class Watermark:
    """How much this process's peak resident memory grew inside a ``with`` block: the
    peak (``VmHWM``) is reset to the current size by writing 5 to ``/proc/self/clear_refs``
    on entry, and read back on exit (Linux)."""

    growth = 0

    def __enter__(self) -> Watermark:  # noqa: PYI034 - typing.Self needs Python 3.11
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        self._start = self._kib("VmRSS")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.growth = (self._kib("VmHWM") - self._start) * 1024

    @staticmethod
    def _kib(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/self/status")


def read_all(store: UploadStore, name: str, start: int = 0, end: int | None = None) -> bytes:
    """The bytes of a read, each chunk checked to be at most :data:`CHUNK` long."""
    chunks = list(store.read(name, start, end))
    assert all(len(chunk) <= CHUNK for chunk in chunks)
    return b"".join(chunks)


def listed(store: UploadStore, prefix: str = "") -> dict[str, int]:
    """``{name: size}`` of what ``store.names(prefix)`` lists (each name once)."""
    infos = list(store.names(prefix))
    assert len({info.name for info in infos}) == len(infos), "a name listed twice"
    return {info.name: info.size for info in infos}


def failing(chunks: int, error: BaseException) -> Iterator[bytes]:
    """A source that gives ``chunks`` chunks, then raises ``error`` (a client gone)."""
    for _ in range(chunks):
        yield b"x" * CHUNK
    raise error


def stalled_writer(make_store: MakeStore, name: str, size: int = 3 * CHUNK) -> int:
    """Fork a process that writes ``name`` to a store of ``make_store`` and stops after
    ``size`` bytes until it is killed; its pid, once it has given them to the store."""
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready)

            def stalled() -> Iterator[bytes]:
                yield from generated(size)
                os.write(told, b"!")
                time.sleep(60)

            make_store().put(name, stalled())
        finally:
            os._exit(1)
    os.close(told)
    with contextlib.closing(os.fdopen(ready, "rb")) as pipe:
        given = pipe.read(1)
    if given != b"!":
        os.waitpid(pid, 0)
        raise AssertionError("the writer died before it had written")
    return pid


class UploadStoreSuite:
    """What every store does: round trips from empty to 200 MB streamed in bounded memory,
    byte ranges, names the store makes from any client file name, names no store holds,
    deletes, listing by prefix, the size limit and failing sources leaving nothing, replace
    under one name, closing and reopening, threads."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> UploadStore:
        return make_store()

    # -- round trips -----------------------------------------------------------------
    def test_is_an_upload_store_that_starts_empty(self, store):
        assert isinstance(store, UploadStore)
        assert listed(store) == {}

    def test_round_trips_from_empty_to_a_few_chunks(self, store):
        sizes = [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]
        names = {}
        for size in sizes:
            data = b"".join(generated(size, seed=size))
            name = store.save(data, "data.bin", table="person", field="image")
            names[name] = size
            assert parse_name(name)[:2] == ("person", "image")
            assert read_all(store, name) == data, size
            info = store.info(name)
            assert (info.name, info.size) == (name, size)
            assert info.sha256 in (None, hashlib.sha256(data).hexdigest())
            assert abs(info.modified - time.time()) < 600  # seconds since the epoch
        assert listed(store) == names

    def test_big_round_trip_streams_in_bounded_memory(self, store):
        # the store's client made first (boto3's models load once, ~30 MiB): what is
        # measured is what streaming 200 MB costs, not a library's first import
        store.delete(store.save(b"warm", "warm.bin"))
        with Watermark() as writing:
            name = store.save(generated(BIG), "big.bin")
        with Watermark() as reading:
            size, sha256, longest = digest(store.read(name))
        assert (size, sha256) == digest(generated(BIG))[:2]
        assert longest <= CHUNK
        assert store.info(name).size == BIG
        assert store.info(name).sha256 in (None, sha256)
        assert writing.growth < MEMORY_BOUND, f"writing grew {writing.growth >> 20} MiB"
        assert reading.growth < MEMORY_BOUND, f"reading grew {reading.growth >> 20} MiB"
        assert store.delete(name)

    def test_sources_bytes_files_and_iterables(self, store):
        name = new_name("a.txt")
        for source in (b"abc", io.BytesIO(b"abc"), [b"a", b"", b"bc"], iter([b"ab", b"c"])):
            info = store.put(name, source)
            assert (info.name, info.size) == (name, 3)
            assert read_all(store, name) == b"abc"

    def test_names_are_new_each_time_and_in_the_given_table_and_field(self, store):
        names = {store.save(b"same", "same.txt", table="doc", field="file_1") for _ in range(5)}
        assert len(names) == 5
        assert {parse_name(name)[:2] for name in names} == {("doc", "file_1")}
        with pytest.raises(ValueError):
            store.save(b"x", "x.txt", table="doc; drop table", field="file")

    # -- ranges ----------------------------------------------------------------------
    def test_ranges(self, store):
        data = b"".join(generated(2 * CHUNK + 10, seed=7))
        size = len(data)
        name = store.save(data, "ranges.bin")
        spans = [
            (0, None), (0, 1), (1, 2), (CHUNK - 1, CHUNK + 1), (CHUNK, 2 * CHUNK),
            (CHUNK, None), (2 * CHUNK, size), (size - 1, None), (0, size + 100),
            (5, 5), (size, None), (size + 5, None), (size + 5, size + 10),
        ]  # fmt: skip
        for start, end in spans:
            assert read_all(store, name, start, end) == data[start:end], (start, end)

    def test_bad_spans_are_value_errors(self, store):
        name = store.save(b"0123456789", "digits.txt")
        for start, end in [(-1, None), (5, 3), (-5, -1)]:
            with pytest.raises(ValueError):
                store.read(name, start, end)

    def test_reading_a_missing_upload_fails_at_the_call(self, store):
        with pytest.raises(UploadNotFound):
            store.read(new_name("missing.txt"))  # before any chunk is asked for
        with pytest.raises(UploadNotFound):
            store.info(new_name("missing.txt"))

    def test_a_read_stopped_early_leaves_the_store_usable(self, store):
        name = store.save(generated(3 * CHUNK), "three.bin")
        chunks = store.read(name)
        assert len(next(chunks)) > 0
        chunks.close()
        unread = store.read(name)  # opened, never iterated, dropped
        del unread
        assert digest(store.read(name))[:2] == digest(generated(3 * CHUNK))[:2]
        assert store.delete(name)

    # -- names -----------------------------------------------------------------------
    def test_any_client_file_name_makes_a_safe_name(self, store):
        names = {}
        for filename, expected in CLIENT_FILENAMES.items():
            name = names[filename] = store.save(filename.encode(), filename)
            assert parse_name(name) is not None and len(name) <= 255, filename
            shown = original_filename(name)
            assert shown == expected if expected else shown.endswith(".pdf") and "aaa" in shown
            assert not any(char in shown for char in "/\\\"';\r\n\x00"), shown
            assert read_all(store, name) == filename.encode()
        assert listed(store) == {name: len(filename.encode()) for filename, name in names.items()}

    def test_bad_names_are_in_no_store(self, store):
        there = store.save(b"content", "x.txt")  # something a traversal could reach
        for bad in BAD_NAMES:
            with pytest.raises(UploadNotFound):
                store.info(bad)
            with pytest.raises(UploadNotFound):
                store.read(bad)
            assert store.delete(bad) is False, bad
            assert store.local_path(bad) is None, bad
            with pytest.raises(ValueError):
                store.put(bad, b"content")
        assert listed(store) == {there: 7}

    def test_hostile_prefixes_list_nothing(self, store):
        store.save(b"content", "x.txt")
        hostile = [
            "../", "/", "%", "_", "*", "upload.file.%", "\x00", "upload.file..", "!", "'",
            "\\", "upload_file.", "upload.fil_.", "upload%", "[u]pload", "upload.*",
        ]  # fmt: skip
        for prefix in hostile:  # LIKE's wildcards and escapes, glob's, paths: taken as text
            assert listed(store, prefix) == {}, prefix

    # -- deletes and listing -----------------------------------------------------------
    def test_delete(self, store):
        name = store.save(b"content", "x.txt")
        other = store.save(b"other", "y.txt")
        assert store.delete(name) is True
        assert store.delete(name) is False
        with pytest.raises(UploadNotFound):
            store.info(name)
        with pytest.raises(UploadNotFound):
            store.read(name)
        assert store.local_path(name) is None
        assert store.delete(new_name("never.txt")) is False
        assert listed(store) == {other: 5}

    def test_names_by_prefix(self, store):
        saved = {
            store.save(b"1", "a.png", table="person", field="image"): 1,
            store.save(b"22", "b.png", table="person", field="image"): 2,
            store.save(b"333", "c.pdf", table="person", field="cv"): 3,
            store.save(b"4444", "d.png", table="pet", field="image"): 4,
            store.save(b"55555", "e.png", table="personnel", field="image"): 5,
        }
        assert listed(store) == saved
        assert listed(store, "person.") == {n: s for n, s in saved.items() if s <= 3}
        assert listed(store, "person.image.") == {n: s for n, s in saved.items() if s <= 2}
        assert listed(store, "pet") == {n: s for n, s in saved.items() if s == 4}
        assert listed(store, "nobody.") == {}
        some = next(iter(saved))
        assert listed(store, some) == {some: saved[some]}

    def test_many_uploads_are_all_listed(self, store):
        saved = {store.save(str(index).encode(), f"{index}.txt"): len(str(index))
                 for index in range(60)}  # fmt: skip
        assert listed(store) == saved
        assert listed(store, "upload.file.") == saved

    # -- all or nothing ----------------------------------------------------------------
    def test_the_size_limit_stops_the_read_and_leaves_nothing(self, store):
        pulled = []

        def source() -> Iterator[bytes]:
            for index in range(40):
                pulled.append(index)
                yield b"x" * (100 * 1024)

        with pytest.raises(UploadTooLarge) as caught:
            store.save(source(), "big.bin", max_size=250 * 1024)
        assert caught.value.limit == 250 * 1024
        assert len(pulled) < 40, "the whole source was read"
        assert listed(store) == {}
        name = store.save(b"x" * 1000, "exact.bin", max_size=1000)
        assert listed(store) == {name: 1000}

    @pytest.mark.parametrize(
        "error", [RuntimeError("client gone"), ConnectionResetError(104, "reset")]
    )
    def test_a_source_that_fails_half_way_leaves_nothing(self, store, error):
        with pytest.raises(type(error)) as caught:
            store.save(failing(3, error), "half.bin")
        assert caught.value is error  # the source's own error, not a store's
        assert listed(store) == {}

    def test_replace_under_the_same_name(self, store):
        name = new_name("v.txt")
        store.put(name, b"first")
        info = store.put(name, generated(CHUNK + 3, seed=3))
        assert (info.name, info.size) == (name, CHUNK + 3)
        assert read_all(store, name) == b"".join(generated(CHUNK + 3, seed=3))
        assert listed(store) == {name: CHUNK + 3}

    def test_a_failed_replace_keeps_the_old_upload(self, store):
        name = new_name("v.txt")
        store.put(name, b"old")
        with pytest.raises(RuntimeError):
            store.put(name, failing(2, RuntimeError("client gone")))
        with pytest.raises(UploadTooLarge):
            store.put(name, Source(generated(3 * CHUNK), max_size=CHUNK))
        assert read_all(store, name) == b"old"
        assert listed(store) == {name: 3}

    # -- life cycle ----------------------------------------------------------------------
    def test_close_then_use_again(self, store):
        name = store.save(b"before", "x.txt")
        store.close()
        store.close()
        assert read_all(store, name) == b"before"
        other = store.save(b"after", "y.txt")
        store.close()
        assert listed(store) == {name: 6, other: 5}

    def test_threads_write_and_read_at_once(self, store):
        made: dict[str, bytes] = {}

        def work(index: int) -> None:
            for round_ in range(4):
                data = b"".join(generated(CHUNK // 2 + index * 1000 + round_, seed=index))
                name = store.save(data, f"{index}-{round_}.bin")
                assert read_all(store, name) == data
                made[name] = data

        run_threads(6, work)
        assert listed(store) == {name: len(data) for name, data in made.items()}


class SharedUploadStoreSuite(UploadStoreSuite):
    """A store other processes reach: two handles see one store, a write from another
    process is read here and is invisible until its last byte is stored, and a writer
    SIGKILLed half-way leaves nothing visible."""

    def test_two_handles_see_one_store(self, make_store):
        first, second = make_store(), make_store()
        name = first.save(b"shared", "s.txt")
        assert read_all(second, name) == b"shared"
        assert second.info(name).size == 6
        assert listed(second) == {name: 6}
        assert second.delete(name)
        with pytest.raises(UploadNotFound):
            first.info(name)

    def test_an_upload_written_by_another_process(self, make_store):
        store = make_store()
        listed(store)  # connected before the fork
        name = new_name("child.bin")
        expected = digest(generated(2 * CHUNK + 1, seed=5))[:2]

        def write(_: int) -> None:
            make_store().put(name, generated(2 * CHUNK + 1, seed=5))

        assert run_in_children(1, write) == [0]
        assert digest(store.read(name))[:2] == expected

    def test_an_upload_is_invisible_to_another_process_until_complete(self, make_store):
        store = make_store()
        listed(store)  # connected before the fork
        name, size = new_name("slow.bin"), 10 * CHUNK  # past an S3 part (8 MiB)
        (from_writer, to_reader), (from_reader, to_writer) = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: after each chunk, waits for the reader's look
            code = 1
            try:
                os.close(from_writer)
                os.close(to_writer)

                def lockstep() -> Iterator[bytes]:
                    for chunk in generated(size):
                        yield chunk
                        os.write(to_reader, b".")
                        os.read(from_reader, 1)

                make_store().put(name, lockstep())
                code = 0
            finally:
                os._exit(code)
        os.close(to_reader)
        os.close(from_reader)
        try:
            for _ in generated(size):
                assert os.read(from_writer, 1) == b".", "the writer died"
                with pytest.raises(UploadNotFound):
                    store.info(name)
                assert listed(store) == {}
                os.write(to_writer, b".")
        finally:  # a writer left waiting sees its pipes closed, and ends
            os.close(from_writer)
            os.close(to_writer)
            status = os.waitpid(pid, 0)[1]
        assert os.waitstatus_to_exitcode(status) == 0
        assert digest(store.read(name))[:2] == digest(generated(size))[:2]

    def test_a_writer_killed_half_way_leaves_nothing_visible(self, make_store):
        store = make_store()
        listed(store)  # connected before the fork
        name = new_name("killed.bin")
        pid = stalled_writer(make_store, name)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with pytest.raises(UploadNotFound):
            store.info(name)
        assert listed(store) == {}
        store.put(name, b"again")  # the name is free to write
        assert read_all(store, name) == b"again"
