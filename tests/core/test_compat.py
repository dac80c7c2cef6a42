"""Renamed keywords: the app name is ``app_name`` everywhere; ``app=`` still works for one
release, with a ``DeprecationWarning`` pointing at the caller."""

import contextlib
import subprocess
import sys
import warnings

import pytest

from scalekit.cache import Cache, open_backend
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError
from scalekit.maintenance import open_flag
from scalekit.sessions import open_store
from scalekit.sessions.stores import DatabaseStore, FileStore

#: name -> (opens one for ``tmp_path`` with the given keywords, the app name it took)
OPENERS = {
    "open_store": (
        lambda tmp_path, **app: open_store(f"file://{tmp_path}", **app),
        lambda store: store.app_name,
    ),
    "open_backend": (
        lambda tmp_path, **app: open_backend(f"file://{tmp_path}", **app),
        lambda backend: backend.app_name,
    ),
    "open_flag": (
        lambda tmp_path, **app: open_flag("redis://127.0.0.1:1/0", **app),
        lambda flag: flag.key.removeprefix("scalekit:m:"),
    ),
    "Cache": (
        lambda tmp_path, **app: Cache(folder=str(tmp_path), **app),
        lambda cache: cache.app_name,
    ),
    "DatabaseStore": (
        lambda tmp_path, **app: DatabaseStore(f"sqlite://{tmp_path}/s.sqlite", **app),
        lambda store: store.table.removeprefix("web2py_session_"),
    ),
    "FileStore": (
        lambda tmp_path, **app: FileStore(tmp_path, **app),
        lambda store: store.folder.rpartition("/")[2],
    ),
}


def close(opened) -> None:
    with contextlib.suppress(AttributeError):
        opened.close()


@pytest.mark.parametrize("name", OPENERS)
def test_app_name_opens_without_a_warning(name, tmp_path):
    open_one, app_name_of = OPENERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        opened = open_one(tmp_path, app_name="shop")
    assert app_name_of(opened) == "shop"
    close(opened)


@pytest.mark.parametrize("name", OPENERS)
def test_app_still_works_and_warns_at_the_caller(name, tmp_path):
    open_one, app_name_of = OPENERS[name]
    with pytest.warns(DeprecationWarning, match=f"^{name}: app= is now app_name=$") as caught:
        opened = open_one(tmp_path, app="shop")
    assert app_name_of(opened) == "shop"
    ours = [warning for warning in caught if "app= is now app_name=" in str(warning.message)]
    assert [warning.filename for warning in ours] == [__file__]  # (others: other threads')
    close(opened)


@pytest.mark.parametrize("name", OPENERS)
def test_app_and_app_name_together_are_a_config_error(name, tmp_path):
    open_one, _ = OPENERS[name]
    with pytest.raises(ConfigError, match=f"^{name}: pass app_name= only"):
        open_one(tmp_path, app="shop", app_name="shop")


def test_the_former_app_attribute_reads_app_name_with_a_warning(tmp_path):
    for opened in (
        open_store(f"file://{tmp_path}", app_name="shop"),
        open_backend("ram://", app_name="shop"),
        Cache("shop", folder=str(tmp_path)),
    ):
        with pytest.warns(DeprecationWarning, match=r"\.app is now app_name"):
            assert opened.app == "shop"
        with pytest.raises(AttributeError):
            opened.app = "other"


def test_a_renamed_keyword_passes_positional_and_other_arguments_through():
    @renamed_keyword("old", "new")
    def pair(first, new=None, *, other=None):
        """Documented."""
        return first, new, other

    assert pair(1, 2, other=3) == (1, 2, 3)
    with pytest.warns(DeprecationWarning, match="pair: old= is now new="):
        assert pair(1, old=2, other=3) == (1, 2, 3)
    assert pair.__name__ == "pair" and pair.__doc__ == "Documented."


@pytest.mark.parametrize("name", ["errors", "urls", "signing", "tagged_json"])
def test_a_moved_module_answers_at_its_old_path_with_a_warning(name):
    """``scalekit.<name>`` is ``scalekit.core.<name>`` itself, and its import warns at the
    importing line; a fresh interpreter, so the import really runs."""
    code = (
        "import warnings, importlib\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module('scalekit.{name}')\n"
        f"new = importlib.import_module('scalekit.core.{name}')\n"
        "assert old is new, (old, new)\n"
        "[warning] = caught\n"
        "assert warning.category is DeprecationWarning\n"
        "print(warning.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == f"scalekit.{name} moved to scalekit.core.{name}; import it from there"
    )
