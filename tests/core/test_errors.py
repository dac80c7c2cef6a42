"""The exception hierarchy: one base to catch everything, stdlib bases where they fit."""

import pytest

import scalekit.core
from scalekit.core import errors


@pytest.mark.parametrize(
    "error, stdlib_base",
    [
        (errors.ConfigError, ValueError),
        (errors.StoreUnavailable, ConnectionError),
        (errors.SerializationError, TypeError),
        (errors.CorruptData, Exception),
        (errors.ConflictError, Exception),
        (errors.NotAFolder, NotADirectoryError),
        (errors.NotAFolder, errors.ConfigError),
        (errors.StoreNotFound, FileNotFoundError),
        (errors.InvalidArgument, ValueError),
        (errors.InvalidArgumentType, TypeError),
        (errors.MissingContext, LookupError),
    ],
)
def test_every_error_is_a_scalekit_error_and_its_natural_stdlib_kind(error, stdlib_base):
    assert issubclass(error, errors.ScalekitError)
    assert issubclass(error, stdlib_base)
    with pytest.raises(errors.ScalekitError, match="redis://h/0 is down"):
        raise error("redis://h/0 is down")


def test_every_error_class_is_also_importable_from_scalekit_core():
    classes = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.ScalekitError)}  # fmt: skip
    assert classes <= set(scalekit.core.__all__)
    assert all(getattr(scalekit.core, name) is getattr(errors, name) for name in classes)
