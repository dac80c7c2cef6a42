"""Which callables a task can name, and how a worker finds them again (no server needed)."""

from __future__ import annotations

import collections
import functools
import os

import pytest

from scalekit.tasks.callables import reference, resolve
from scalekit.tasks.errors import NotDeferrable


def module_function(x):
    return x * 2


class Thing:
    def __init__(self, size):
        self.size = size

    def grow(self, by):
        return self.size + by

    @classmethod
    def make(cls, size):
        return cls(size)

    @staticmethod
    def twice(x):
        return 2 * x

    def __call__(self, x):
        return self.size * x


class Bigger(Thing):
    pass


alias = module_function


def _roundtrip(fn):
    path, target = reference(fn)
    return path, target, resolve(path, target)


@pytest.mark.parametrize(
    ("fn", "path"),
    [
        (module_function, f"{__name__}:module_function"),
        (Thing, f"{__name__}:Thing"),
        (Thing.twice, f"{__name__}:Thing.twice"),
        (Thing.make, f"{__name__}:Thing.make"),
        (Bigger.make, f"{__name__}:Bigger.make"),
        (len, "builtins:len"),
        (os.remove, f"{os.remove.__module__}:remove"),
        (dict.fromkeys, "builtins:dict.fromkeys"),
        (collections.OrderedDict, "collections:OrderedDict"),
        (alias, f"{__name__}:module_function"),
    ],
)
def test_unbound_callables_round_trip(fn, path):
    found_path, target, found = _roundtrip(fn)
    assert (found_path, target) == (path, None)
    assert found == fn


def test_builtin_whose_module_is_not_its_package_resolves_to_the_same_object():
    path, _, found = _roundtrip(os.remove)
    assert path.split(":")[0] in ("posix", "nt")
    assert found is os.remove


def test_bound_methods_keep_their_object_as_target():
    thing = Bigger(3)
    path, target, found = _roundtrip(thing.grow)
    assert (path, target) == (f"{__name__}:Thing.grow", thing)
    assert found == thing.grow and found(2) == 5


def test_a_class_method_of_a_subclass_stays_bound_to_the_subclass():
    assert type(_roundtrip(Bigger.make)[2](1)) is Bigger


def test_a_callable_object_is_its_call_method():
    thing = Thing(4)
    path, target, found = _roundtrip(thing)
    assert (path, target) == (f"{__name__}:Thing.__call__", thing)
    assert found(2) == 8


def _nested():
    def inner():
        return 1

    return inner


def _closure(n):
    return lambda: n


@pytest.mark.parametrize(
    ("fn", "problem"),
    [
        (lambda: 1, "is a lambda"),
        (_nested(), "nested function or closure"),
        (_closure(3), "is a lambda"),
        (functools.partial(module_function, 1), "functools.partial"),
        ([].append, "method of a builtin list"),
        (42, "is not callable"),
    ],
)
def test_refused_callables_name_the_problem(fn, problem):
    with pytest.raises(NotDeferrable, match=problem):
        reference(fn)


def test_functions_defined_in_main_are_refused():
    def job():
        pass

    job.__module__, job.__qualname__ = "__main__", "job"  # as `python app.py` defines it
    with pytest.raises(NotDeferrable, match="defined in __main__"):
        reference(job)


def test_a_function_whose_path_leads_elsewhere_is_refused():
    def job():
        pass

    job.__qualname__ = "module_function"  # as a decorator without functools.wraps leaves it
    job.__module__ = __name__
    with pytest.raises(NotDeferrable, match="leads to another object"):
        reference(job)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("os:system", "not a callable of that name"),  # os.system is posix.system
        ("no_such_module_x:f", "cannot be imported"),
        (f"{__name__}:missing", "does not exist"),
        (f"{__name__}:alias", "not a callable of that name"),
        ("os:sep", "not a callable of that name"),
        ("nocolon", "is not an import path"),
        (f"{__name__}:_nested.<locals>.inner", "is not an import path"),
    ],
)
def test_resolve_refuses_a_path_naming_something_else(path, problem):
    with pytest.raises(NotDeferrable, match=problem):
        resolve(path)


def test_resolve_refuses_a_target_that_does_not_fit():
    with pytest.raises(NotDeferrable, match="cannot be bound to a str"):
        resolve(f"{__name__}:Thing.grow", "not a thing")
    with pytest.raises(NotDeferrable, match="is not a method"):
        resolve(f"{__name__}:module_function", Thing(1))
