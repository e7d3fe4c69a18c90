"""The error hierarchy of strata's storage layer.

Every error derives from :class:`StorageError` and, where it fits, from the builtin a caller
would naturally catch (``KeyError`` for missing data, ``FileExistsError`` for a key that is
already committed, ...). Messages say what went wrong, where, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "INSTALL_HINTS",
    "AccessDenied",
    "AuthenticationFailed",
    "BucketNotFound",
    "DataCorrupted",
    "DataExistsError",
    "DataNotAvailable",
    "InvalidKey",
    "MissingDependency",
    "ReadOnlyError",
    "RemoteStorageError",
    "StorageError",
    "StorageUnreachable",
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


# -- optional dependencies -------------------------------------------------------------------
INSTALL_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "s3": "pip install 'strata-lineage[s3]' (s3fs)",
        "s3a": "pip install 'strata-lineage[s3]' (s3fs)",
        "ssh": "pip install 'strata-lineage[ssh]' (sshfs)",
        "sftp": "pip install 'strata-lineage[ssh]' (sshfs)",
        "sqlite": "pip install 'strata-lineage[sql]' (SQLAlchemy)",
        "postgresql": "pip install 'strata-lineage[sql]' (SQLAlchemy, psycopg)",
        "postgres": "pip install 'strata-lineage[sql]' (SQLAlchemy, psycopg)",
    }
)
"""URL scheme -> the command that installs what it needs: the one table of install hints."""


class MissingDependency(StorageError, ImportError):
    """A URL scheme needs an optional dependency (an extra of ``strata-lineage``) that is
    not installed. The message names the ``pip install`` command from :data:`INSTALL_HINTS`.
    """

    def __init__(self, scheme: str, detail: str = "") -> None:
        hint = INSTALL_HINTS.get(scheme, f"install the package that provides {scheme!r}")
        msg = f"{scheme}:// URLs need an optional dependency: {hint}"
        super().__init__(f"{msg} ({detail})" if detail else msg)
        self.scheme = scheme
        self.detail = detail

    def __reduce__(self) -> tuple[type[MissingDependency], tuple[str, str]]:
        # rebuilt from its arguments, not from the message (errors travel from Dask workers)
        return type(self), (self.scheme, self.detail)


# -- remote stores ---------------------------------------------------------------------------
class RemoteStorageError(StorageError, OSError):
    """A remote store failed in a way that is neither "not found" nor "already exists"."""


class StorageUnreachable(RemoteStorageError, ConnectionError):
    """The server cannot be reached: refused, unresolvable, timed out or disconnected."""


class AuthenticationFailed(RemoteStorageError, PermissionError):
    """The server refused the credentials (or none could be found, or a key did not load)."""


class AccessDenied(RemoteStorageError, PermissionError):
    """The credentials were accepted but do not permit the operation."""


class BucketNotFound(RemoteStorageError):
    """The S3 bucket does not exist.

    Deliberately not a ``FileNotFoundError``: that would read as "no data stored here".
    """
