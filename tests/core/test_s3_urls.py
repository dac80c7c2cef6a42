"""scalekit.core.urls: the ``s3://`` kind: bucket, prefix, endpoint, region and key pair,
bad URLs refused with a clear message, secret keys never shown."""

import pytest

from scalekit.core import urls
from scalekit.core.errors import ConfigError
from scalekit.core.urls import S3URL


def test_bucket_prefix_endpoint_region_and_keys():
    settings = urls.parse(
        "s3://AKIAEXAMPLE:s3cr%2Ft@my-bucket/app/uploads/?endpoint_url=http://127.0.0.1:9000"
        "&region=eu-west-1&part_size=16777216"
    )
    assert isinstance(settings, S3URL) and settings.kind == "s3"
    assert (settings.bucket, settings.prefix) == ("my-bucket", "app/uploads")
    assert (settings.endpoint_url, settings.region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert (settings.access_key, settings.secret_key) == ("AKIAEXAMPLE", "s3cr/t")
    assert dict(settings.options) == {"part_size": "16777216"}  # what is left for the store


def test_no_keys_no_endpoint_leaves_them_to_boto3():
    settings = urls.parse("s3://bucket.example")
    assert (settings.bucket, settings.prefix, settings.endpoint_url) == ("bucket.example", "", None)
    assert settings.access_key is settings.secret_key is settings.region is None


def test_keys_as_options():
    settings = urls.parse("s3://b0b/p?access_key=AK&secret_key=SK&session_token=TOKEN")
    assert (settings.access_key, settings.secret_key, settings.session_token) == (
        "AK", "SK", "TOKEN"
    )  # fmt: skip
    assert dict(settings.options) == {}


def test_an_endpoint_with_a_trailing_slash_is_the_same():
    with_slash = urls.parse("s3://bkt?endpoint_url=https://s3.example.com/")
    assert with_slash.endpoint_url == "https://s3.example.com"


def test_s3_is_a_kind_a_setting_may_refuse():
    assert urls.parse("s3://bkt", kinds={"s3"}).bucket == "bkt"
    with pytest.raises(ConfigError, match="is a s3 URL; this setting takes file"):
        urls.parse("s3://bkt", kinds={"file"})


@pytest.mark.parametrize(
    "url, problem",
    [
        ("s3://", "no bucket name before the path"),
        ("s3://ab", "no bucket name before the path"),
        ("s3://My_Bucket/x", "no bucket name before the path"),
        ("s3://a..b/x", "no bucket name before the path"),
        ("s3://-bucket", "no bucket name before the path"),
        ("s3://" + "b" * 64, "no bucket name before the path"),
        ("s3://bucket:9000/x", "no bucket name before the path"),
        ("s3://bucket/a//b", "empty, '.' or '..' folder"),
        ("s3://bucket/a/../b", "empty, '.' or '..' folder"),
        ("s3://AK@bucket", "give both the access key and the secret key"),
        ("s3://bucket?secret_key=SK", "give both the access key and the secret key"),
        ("s3://AK:SK@bucket?secret_key=SK2", "give the secret key once"),
        ("s3://bucket?endpoint_url=ftp://host", "endpoint_url must be http"),
        ("s3://bucket?endpoint_url=http://user:pw@host", "endpoint_url must be http"),
        ("s3://bucket?endpoint_url=http://host/path", "endpoint_url must be http"),
        ("s3:boto://bucket", "takes no driver"),
    ],
)
def test_bad_s3_urls_are_config_errors(url, problem):
    with pytest.raises(ConfigError, match=problem):
        urls.parse(url)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AK:TOPSECRET@bucket/p?endpoint_url=http://127.0.0.1:9000",
        "s3://bucket/p?access_key=AK&secret_key=TOPSECRET",
        "s3://bucket/p?access_key=AK&secret_key=TOPSECRET&session_token=TOPSECRET",
    ],
)
def test_secret_key_never_in_repr_str_or_masked(url):
    settings = urls.parse(url)
    for shown in (repr(settings), str(settings), settings.masked, str(settings.masked_options)):
        assert "TOPSECRET" not in shown
    assert "bucket" in settings.masked and "AK" in settings.masked


@pytest.mark.parametrize(
    "url",
    [
        "s3://AK:TOPSECRET@bad_bucket/p",
        "s3://AK:TOPSECRET@bucket/a/../b",
        "s3://AK:TOPSECRET@bucket?endpoint_url=ftp://x",
        "s3://AK:TOPSECRET@bucket?secret_key=TOPSECRET",
        "s3://AK:TOP/SECRET@bucket/p",  # an unencoded '/' ends the host in the secret
        "s3://AK:TOP?SECRET@bucket/p",
    ],
)
def test_secret_key_never_in_error_messages(url):
    with pytest.raises(ConfigError) as caught:
        urls.parse(url)
    assert "TOP" not in str(caught.value) and "SECRET" not in str(caught.value)
