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
    "StorageFull",
    "StorageUnreachable",
    "os_error",
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
        "strax": "pip install 'strata-lineage[strax]' (zstandard, lz4)",
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


class StorageFull(StorageError, OSError):
    """The file system or quota has no room for what is being written (ENOSPC, EDQUOT)."""


def os_error(exc: OSError, what: str, path: str) -> StorageError | None:
    """A strata error for an OS-level failure of ``what`` at ``path`` (full disk, permission
    denied, name too long), naming both; ``None`` for errors that need no translation.
    """
    import errno

    code = exc.errno
    if isinstance(exc, StorageError) or code is None:
        return None
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageFull(
            code, f"no space left to {what} at {path}: {exc.strerror}; nothing was committed"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AccessDenied(code, f"permission denied to {what} at {path}: {exc.strerror}")
    if code == errno.ENAMETOOLONG:
        return InvalidKey(f"cannot {what}: a name in {path} is too long for the file system")
    return None


class BucketNotFound(RemoteStorageError):
    """The S3 bucket does not exist.

    Deliberately not a ``FileNotFoundError``: that would read as "no data stored here".
    """
