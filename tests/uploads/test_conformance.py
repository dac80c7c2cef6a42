"""The upload store protocol (:mod:`scalekit.testing.uploads`) run against every backend on
its real server: file, SQLite, PostgreSQL, MariaDB and moto's S3-compatible server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from scalekit.core.errors import ConfigError
from scalekit.testing.uploads import SharedUploadStoreSuite
from scalekit.uploads import open_store


class TestStores(SharedUploadStoreSuite):
    """Every backend of ``STORE_KINDS`` (the ``make_store`` fixture of the conftest)."""

    def test_an_unknown_option_is_a_config_error_naming_it(self, store_url):
        url = store_url + ("&" if "?" in store_url else "?") + "colour=blue"
        with pytest.raises(ConfigError, match="colour"):
            open_store(url)
        with pytest.raises(ConfigError, match="shade"):
            open_store(store_url, shade="dark")

    def test_the_url_shows_no_secret(self, make_store, store_url):
        store = make_store()
        secret = urlsplit(store_url).password
        if secret:  # PostgreSQL's test server has none
            assert secret not in store.url and secret not in repr(store)
