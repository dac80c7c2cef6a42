"""What the cache stores beyond plain JSON, on every backend: dicts with int (and other
non-string) keys read back as pickle gives them, errors that speak of the cache, and
web2py's ``cache.with_prefix``."""

from __future__ import annotations

import datetime
import decimal

import pytest

from scalekit.cache import Cache
from scalekit.core.errors import SerializationError

KEYED = {
    1: "one",
    2: {3: ["three"], "name": "mixed"},
    -7: None,
    1.5: "float",
    False: "bool",
    None: "none",
    (1, "a"): "tuple",
    datetime.date(2026, 12, 4): "date",
    decimal.Decimal("2.50"): "decimal",
    frozenset({1, 2}): "frozenset",
    (frozenset({"x"}), 2): "nested",
}


def test_dicts_with_non_string_keys_read_back_with_their_keys(model):
    model.set("keyed", KEYED, 60)
    assert model.get("keyed") == KEYED
    assert model("by-call", lambda: {1: "a", 2: "b"}, 60) == {1: "a", 2: "b"}
    assert model("by-call", lambda: "recomputed", 60) == {1: "a", 2: "b"}
    assert {repr(key): type(key) for key in model.get("keyed")} == {
        repr(key): type(key) for key in KEYED
    }


def test_a_dict_that_looks_like_a_tag_stays_a_dict(model):
    looks = {" items": [[1, 2]], "n": {" rows": 1}, "m": {" memoryview": "AA=="}}
    model.set("looks", looks, 60)
    assert model.get("looks") == looks


@pytest.mark.shared
def test_an_unstorable_value_is_told_as_a_cache_error(model):
    with pytest.raises(SerializationError) as raised:
        model.set("bad", {"user": {7: object()}}, 60)
    message = str(raised.value)
    assert "cache key 'bad'" in message and "session" not in message
    assert "at .user[7] holds a object" in message and "serializer='pickle'" in message


def test_with_prefix_puts_the_prefix_before_every_key(make_model, app_name):
    model = make_model(app_name)
    cache = Cache(app_name)
    blog = cache.with_prefix(model, "blog:")
    assert blog("post", lambda: "cached", 60) == "cached"
    assert model.get("blog:post") == "cached"
    assert blog("post", lambda: "recomputed", 60) == "cached"
    model.set("other", "kept", 60)
    assert blog.clear() == 1
    assert model.get("other") == "kept" and model.get("blog:post") is None
    assert blog.time_expire == model.time_expire and blog.on_error == model.on_error


def test_with_prefix_can_replace_a_model_like_in_web2py(tmp_path):
    cache = Cache("shop", folder=str(tmp_path))
    plain = cache.ram
    cache.ram = cache.with_prefix(cache.ram, "v2:")
    assert cache.ram("menu", lambda: ["home"], 60) == ["home"]
    assert plain.get("v2:menu") == ["home"] and plain.get("menu") is None

    @cache("price:{item}", time_expire=60)
    def price(item):
        return len(item)

    assert price("book") == 4
    assert plain.get("v2:price:book") == 4
