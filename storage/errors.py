"""The error hierarchy of strata's storage layer.

Every error derives from :class:`StorageError` and, where it fits, from the builtin a caller
would naturally catch (``KeyError`` for missing data, ``FileExistsError`` for a key that is
already committed, ...). Messages say what went wrong, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "DataCorrupted",
    "DataExistsError",
    "DataNotAvailable",
    "InvalidKey",
    "ReadOnlyError",
    "StorageError",
]


class StorageError(Exception):
    """Base class of every error raised by :mod:`storage`."""


class DataNotAvailable(StorageError, KeyError):
    """The requested data is not stored where it was looked for."""

    def __str__(self) -> str:
        # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else ""


class DataExistsError(StorageError, FileExistsError):
    """Data is already committed under this key and overwriting was not asked for."""


class DataCorrupted(StorageError):
    """Stored bytes fail their checksum or a manifest cannot be parsed."""


class InvalidKey(StorageError, ValueError):
    """A run id, data type, key or option value breaks the rules for keys."""


class ReadOnlyError(StorageError, PermissionError):
    """A write was attempted through a read-only frontend or backend."""
