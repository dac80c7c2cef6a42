"""Floor 0, under every piece: backend URLs, errors, signing, tagged JSON, option merging,
name and TTL checks, the per-process holder that makes every client fork-safe, and
``renamed_keyword``, the one way a renamed keyword keeps working for a release.

Imports nothing of scalekit's above it; every other package may import it.
"""

from scalekit.core.errors import (
    CacheUnavailable,
    ConfigError,
    ConflictError,
    CorruptData,
    DatabaseUnavailable,
    InvalidArgument,
    InvalidArgumentType,
    MissingContext,
    NotAFolder,
    ScalekitError,
    SerializationError,
    StoreNotFound,
    StoreUnavailable,
)

__all__ = [
    "CacheUnavailable",
    "ConfigError",
    "ConflictError",
    "CorruptData",
    "DatabaseUnavailable",
    "InvalidArgument",
    "InvalidArgumentType",
    "MissingContext",
    "NotAFolder",
    "ScalekitError",
    "SerializationError",
    "StoreNotFound",
    "StoreUnavailable",
]
