"""scalekit.uploads.stores.s3 against moto's S3-compatible server: one PUT or a multipart
upload, checksums kept, prefixes kept apart, leftovers of failed writes aborted, and a
server frozen (SIGSTOP) or killed mid-write and mid-read: a clear StoreUnavailable naming
the masked URL, never the secret key, and nothing partial visible."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.uploads import UploadNotFound, UploadTooLarge, open_store
from scalekit.uploads.names import new_name
from scalekit.uploads.stores.s3 import MIN_PART, S3Store
from tests.servers import S3Server

PART = MIN_PART  # 5 MiB: the smallest part S3 takes
#: short timeouts and one retry: a stopped server is reported within a few seconds
QUICK = {"read_timeout": 1, "connect_timeout": 1, "retries": 1}


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from one offset to the next (a misplaced range shows)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB
    return (block * (size // len(block) + 1))[:size]


def in_pieces(data: bytes, piece: int = 300_000):
    """``data`` as a stream of odd-sized chunks, as a request body arrives."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def bucket_of(url: str) -> str:
    return url.split("@", 1)[1].split("/", 1)[0]


@pytest.fixture
def store(s3_url):
    with contextlib.closing(open_store(s3_url, part_size=PART)) as opened:
        yield opened


@pytest.fixture
def s3(s3_server, s3_url):
    """A boto3 client and the bucket: to look behind the store."""
    return s3_server.client(), bucket_of(s3_url)


def unfinished(s3) -> list[dict]:
    client, bucket = s3
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def keys(s3) -> list[str]:
    client, bucket = s3
    return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


# -- opening ------------------------------------------------------------------------------
def test_opened_by_url_with_options_from_the_url_and_keywords(s3_url):
    store = open_store(s3_url + "&part_size=6291456&read_timeout=3", retries=0)
    assert isinstance(store, S3Store) and store.part_size == 6 << 20
    assert "moto-secret-key" not in repr(store) and "***" in store.url


@pytest.mark.parametrize(
    "option, problem",
    [
        ({"part_size": 1 << 20}, "part_size must be"),
        ({"part_size": "big"}, "part_size must be an int"),
        ({"read_timeout": 0}, "read_timeout must be"),
        ({"retries": -1}, "retries must be"),
        ({"addressing_style": "sideways"}, "addressing_style must be"),
        ({"colour": "blue"}, "unknown option colour"),
    ],
)
def test_bad_options_are_config_errors(s3_url, option, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        open_store(s3_url, **option)
    assert "moto-secret-key" not in str(caught.value)


def test_a_url_option_that_is_not_a_number_is_a_config_error(s3_url):
    with pytest.raises(ConfigError, match=r"option part_size='lots' .* is invalid"):
        open_store(s3_url + "&part_size=lots")


# -- writes -------------------------------------------------------------------------------
def test_a_small_upload_is_one_put_with_its_sha256(store, s3):
    name = store.save(b"hello", "hello.txt", table="person", field="image")
    client, bucket = s3
    head = client.head_object(Bucket=bucket, Key=name)
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert "-" not in head["ETag"]  # not a multipart upload
    assert store.info(name).sha256 == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("size", [PART - 1, PART, PART + 1, 2 * PART + 12345])
def test_part_boundaries_round_trip(store, s3, size):
    data = pattern(size, size)
    name = store.save(in_pieces(data), "big.bin")
    info = store.info(name)
    assert (info.size, info.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert b"".join(store.read(name)) == data
    assert b"".join(store.read(name, PART - 3, PART + 3)) == data[PART - 3 : PART + 3]
    assert all(len(chunk) <= 1 << 20 for chunk in store.read(name))
    assert unfinished(s3) == []


def test_a_multipart_upload_keeps_its_sha256_as_a_tag(store, s3):
    data = pattern(2 * PART + 1)
    name = store.save(data, "three-parts.bin")
    client, bucket = s3
    assert client.head_object(Bucket=bucket, Key=name)["ETag"].endswith('-3"')
    tags = client.get_object_tagging(Bucket=bucket, Key=name)["TagSet"]
    assert tags == [{"Key": "sha256", "Value": hashlib.sha256(data).hexdigest()}]


def test_a_source_failing_half_way_leaves_nothing(store, s3):
    def failing():
        yield pattern(PART + 100)
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        store.save(failing(), "half.bin")
    assert list(store.names()) == [] and keys(s3) == [] and unfinished(s3) == []


def test_the_size_limit_passed_mid_upload_leaves_nothing(store, s3):
    with pytest.raises(UploadTooLarge):
        store.save(in_pieces(pattern(3 * PART)), "huge.bin", max_size=2 * PART)
    assert keys(s3) == [] and unfinished(s3) == []


def test_concurrent_writers_and_readers(store):
    blobs = [pattern(1000 + i * 7919, i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda data: store.save(data, "t.bin"), blobs))
        read = list(pool.map(lambda name: b"".join(store.read(name)), names))
    assert read == blobs


# -- reads and names ----------------------------------------------------------------------
def test_empty_upload_and_spans_past_the_end(store):
    empty = store.save(b"", "empty.txt")
    assert store.info(empty).size == 0
    assert list(store.read(empty)) == [] and list(store.read(empty, 0, 10)) == []
    name = store.save(b"0123456789", "digits.txt")
    assert b"".join(store.read(name, 8, 100)) == b"89"
    assert list(store.read(name, 10)) == [] and list(store.read(name, 50, 60)) == []
    assert list(store.read(name, 4, 4)) == []
    missing = new_name("gone.txt")
    for span in ((0, None), (3, 3), (5, 9)):
        with pytest.raises(UploadNotFound, match="no upload"):
            store.read(missing, *span)  # raised by the call, before any chunk
    with pytest.raises(UploadNotFound, match="no upload"):
        store.info(missing)


@pytest.fixture
def range_ignoring_proxy(s3_server):
    """An HTTP proxy to the S3 server that drops the ``Range`` header of a GET (as a
    misconfigured cache may): its endpoint URL."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            upstream = http.client.HTTPConnection("127.0.0.1", s3_server.port, timeout=5)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "range"}
            upstream.request("GET", self.path, headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
            self.send_response(answer.status)
            for header, value in answer.getheaders():
                if header.lower() not in ("connection", "transfer-encoding", "date", "server"):
                    self.send_header(header, value)
            self.end_headers()
            self.wfile.write(body)
            upstream.close()

        def log_message(self, *args):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}"
    proxy.shutdown()
    proxy.server_close()


def test_a_server_ignoring_range_is_an_error_not_the_wrong_bytes(
    s3_server, s3_url, range_ignoring_proxy
):
    name = open_store(s3_url).save(b"0123456789", "digits.txt")
    proxied = open_store(s3_url.replace(s3_server.endpoint_url, range_ignoring_proxy))
    assert b"".join(proxied.read(name)) == b"0123456789"  # no Range asked: the whole
    with pytest.raises(StoreUnavailable, match="answered the whole object to bytes=2-4"):
        proxied.read(name, 2, 5)


def test_prefixes_keep_stores_apart_and_other_objects_are_ignored(s3_server, s3, s3_url):
    client, bucket = s3
    outer = open_store(s3_server.url(bucket, "app"))
    inner = open_store(s3_server.url(bucket, "app/old"))
    mine, theirs = outer.save(b"outer", "o.txt"), inner.save(b"inner", "i.txt")
    for key in ("app/notes.txt", "app/../etc/passwd", "app/" + mine + ".tmp", "root.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=b"not an upload")
    assert [info.name for info in outer.names()] == [mine]
    assert [info.name for info in inner.names()] == [theirs]
    assert (outer.delete(theirs), inner.delete(mine)) == (False, False)
    assert sorted(keys(s3)) == sorted(
        ["app/notes.txt", "app/../etc/passwd", f"app/{mine}.tmp", "root.txt",
         f"app/{mine}", f"app/old/{theirs}"]
    )  # fmt: skip


def test_names_reads_every_page_and_filters_by_prefix(store, s3):
    client, bucket = s3
    names = [new_name("x.txt", table="many") for _ in range(1005)] + [new_name("y.txt")]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: client.put_object(Bucket=bucket, Key=name, Body=b"x"), names))
    assert sorted(info.name for info in store.names()) == sorted(names)
    assert len(list(store.names("many."))) == 1005
    assert all(info.size == 1 and info.sha256 is None for info in store.names("upload."))


def test_a_forged_checksum_is_not_trusted(store, s3):
    client, bucket = s3
    name = new_name("f.txt")
    client.put_object(Bucket=bucket, Key=name, Body=b"x", Metadata={"sha256": "../../etc"})
    assert store.info(name).sha256 is None


def test_delete(store, s3):
    name = store.save(b"bye", "bye.txt")
    assert store.delete(name) is True and store.delete(name) is False
    assert store.delete("../../etc/passwd") is False and keys(s3) == []
    with pytest.raises(UploadNotFound):
        store.info(name)


# -- buckets and credentials --------------------------------------------------------------
def test_a_missing_bucket_says_so_and_create_makes_it(s3_server):
    url = s3_server.url(f"nothing-here-{os.getpid()}-{time.time_ns()}")
    with pytest.raises(StoreNotFound, match="does not exist; create it"):
        open_store(url).save(b"x", "x.txt")
    store = open_store(url + "&create=true")
    name = store.save(b"made", "x.txt")
    assert b"".join(store.read(name)) == b"made"
    assert b"".join(open_store(url).read(name)) == b"made"  # created once, seen by all


def test_create_makes_the_bucket_in_the_urls_region(s3_server):
    bucket = f"made-in-eu-{time.time_ns()}"
    url = s3_server.url(bucket, region="eu-west-1", create="true")
    open_store(url).save(b"x", "x.txt")
    assert s3_server.client().get_bucket_location(Bucket=bucket)["LocationConstraint"] == (
        "eu-west-1"
    )


@pytest.fixture
def no_aws_config(monkeypatch, tmp_path):
    """No key pair anywhere boto3 looks, and no instance metadata service to ask."""
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_without_a_key_pair_boto3_finds_one_or_the_error_says_how(
    s3_server, s3, no_aws_config, monkeypatch
):
    _, bucket = s3
    url = f"s3://{bucket}?endpoint_url={s3_server.endpoint_url}&region=us-east-1"
    with pytest.raises(ConfigError, match="no S3 key pair: write s3://KEY:SECRET@bucket"):
        open_store(url).save(b"x", "x.txt")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    store = open_store(url)
    assert b"".join(store.read(store.save(b"env", "e.txt"))) == b"env"


def test_a_forked_child_makes_its_own_client(store):
    name = store.save(b"parent", "p.txt")
    assert b"".join(store.read(name)) == b"parent"  # the parent's client is made
    pid = os.fork()
    if pid == 0:  # the child: read the parent's upload, write one of its own
        ok = b"".join(store.read(name)) == b"parent" and store.save(b"child", "c.txt")
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(list(store.names())) == 2
    store.close()  # and a closed store opens a client again when used
    assert b"".join(store.read(name)) == b"parent"


# -- leftovers ----------------------------------------------------------------------------
def test_remove_leftovers_aborts_only_old_unfinished_uploads_of_the_store(s3_server, s3):
    client, bucket = s3
    store = open_store(s3_server.url(bucket, "app"))
    ours = client.create_multipart_upload(Bucket=bucket, Key="app/" + new_name("a.bin"))
    for key in ("app/not-an-upload", "other/" + new_name("b.bin")):
        client.create_multipart_upload(Bucket=bucket, Key=key)
    assert store.remove_leftovers(0) == 0  # none begun before 1970 (moto says 2010 for all)
    assert store.remove_leftovers(time.time() + 60, dry_run=True) == 1
    assert len(unfinished(s3)) == 3
    assert store.remove_leftovers(time.time() + 60) == 1
    left = {upload["UploadId"] for upload in unfinished(s3)}
    assert len(left) == 2 and ours["UploadId"] not in left


# -- a server stopped or killed mid-transfer ----------------------------------------------
@pytest.fixture
def fragile(private_s3):
    """A store on the private server with short timeouts; the server runs again after."""
    if private_s3.process.poll() is not None:
        private_s3.restart()
    bucket = private_s3.create_bucket(f"fragile-{time.time_ns()}")
    with contextlib.closing(
        open_store(private_s3.url(bucket, "up"), part_size=PART, **QUICK)
    ) as store:
        yield store
    if private_s3.process.poll() is None:
        private_s3.thaw()  # a test that failed while it was frozen
    else:
        private_s3.restart()


def patient(store: S3Store) -> S3Store:
    """The same store with the default timeouts: to set up and check what a test does
    with short ones (a busy machine may be slow, never the cause of a failure here)."""
    return open_store(store.settings.url, part_size=PART)


def assert_clear(error: BaseException, store: S3Store, doing: str) -> None:
    """The message names the store by its masked URL and what failed, and no secret."""
    message = str(error)
    assert message.startswith(store.url) and f"cannot {doing}" in message
    assert S3Server.secret_key not in message


def then(action, *, during):
    """A stream of 1 MiB chunks that runs ``during()`` (freeze, kill) once ``action`` bytes
    have been handed over, then goes on."""
    for index in range(4 * PART // (1 << 20)):
        if index == action:
            during()
        yield pattern(1 << 20, index)


@pytest.mark.parametrize("stop", ["freeze", "kill"])
def test_server_stopped_mid_write_is_unavailable_and_nothing_is_visible(
    private_s3, fragile, stop, caplog
):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailable) as caught:
        fragile.save(then(7, during=getattr(private_s3, stop)), "cut.bin")  # in the 2nd part
    assert_clear(caught.value, fragile, "store")
    if stop == "freeze":
        private_s3.thaw()
        store = patient(fragile)
        assert list(store.names()) == []  # parts were stored, but no object
        store.remove_leftovers(time.time() + 60)  # what the failed abort may have left
        bucket = fragile.bucket
        assert private_s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads") is None
    else:
        private_s3.restart()  # moto keeps nothing: a new bucket, and the store works again
        private_s3.create_bucket(fragile.bucket)
        assert list(fragile.names()) == []
        assert b"".join(fragile.read(fragile.save(b"again", "a.txt"))) == b"again"
    assert S3Server.secret_key not in caplog.text


@pytest.mark.parametrize("stop", ["freeze", "kill"])
def test_server_stopped_mid_read_is_unavailable_never_a_short_read(private_s3, fragile, stop):
    data = pattern(32 << 20)  # more than the sockets' buffers hold: the server still sends
    name = patient(fragile).save(data, "long.bin")
    chunks = fragile.read(name)
    received = len(next(chunks))
    getattr(private_s3, stop)()
    with pytest.raises(StoreUnavailable) as caught:
        for chunk in chunks:
            received += len(chunk)
    assert received < len(data)
    assert_clear(caught.value, fragile, "read")
    if stop == "freeze":
        private_s3.thaw()
        assert b"".join(patient(fragile).read(name)) == data  # a new read once it runs


def test_server_down_before_a_call_is_unavailable(private_s3, fragile):
    private_s3.kill()
    for call, doing in (
        (lambda: fragile.info(new_name("x.txt")), "look up"),
        (lambda: fragile.read(new_name("x.txt")), "read"),
        (lambda: list(fragile.names()), "list uploads"),
        (lambda: fragile.delete(new_name("x.txt")), "delete"),
        (lambda: fragile.save(b"x", "x.txt"), "store"),
        (lambda: fragile.remove_leftovers(time.time()), "list unfinished uploads"),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert_clear(caught.value, fragile, doing)
