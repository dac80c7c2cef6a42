"""Floor 0, under every piece: backend URLs, errors, signing, tagged JSON, option merging,
name and TTL checks, and the per-process holder that makes every client fork-safe.

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
    "StoreUnavailable",
]
