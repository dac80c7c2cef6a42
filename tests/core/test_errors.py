"""The exception hierarchy: one base to catch everything, stdlib bases where they fit."""

import pytest

from scalekit.core import errors


@pytest.mark.parametrize(
    "error, stdlib_base",
    [
        (errors.ConfigError, ValueError),
        (errors.StoreUnavailable, ConnectionError),
        (errors.SerializationError, TypeError),
        (errors.CorruptData, Exception),
        (errors.ConflictError, Exception),
    ],
)
def test_every_error_is_a_scalekit_error_and_its_natural_stdlib_kind(error, stdlib_base):
    assert issubclass(error, errors.ScalekitError)
    assert issubclass(error, stdlib_base)
    with pytest.raises(errors.ScalekitError, match="redis://h/0 is down"):
        raise error("redis://h/0 is down")
