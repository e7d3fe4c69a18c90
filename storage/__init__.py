"""strata's storage layer: lineage keys, Zarr v3 savers and loaders, catalogs.

The roles follow strax: a :class:`StorageFrontend` is a catalog that finds data by key, a
:class:`StorageBackend` loads it lazily and makes :class:`Saver` objects, which write it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from collections.abc import Callable

from .backends.base import StorageBackend
from .backends.zarr import ZarrBackend, ZarrSaver
from .backends.zarr.verify import KeyReport
from .codecs import PRESETS, codec_chain
from .copy import copy_data
from .errors import (
    AccessDenied,
    AuthenticationFailed,
    BucketNotFound,
    DataCorrupted,
    DataExistsError,
    DataNotAvailable,
    InvalidKey,
    MissingDependency,
    ReadOnlyError,
    RemoteStorageError,
    StorageError,
    StorageFull,
    StorageUnreachable,
)
from .frontends.base import Entry, Location, StorageFrontend
from .frontends.directory import DirectoryFrontend
from .keys import DataKey, canonical_json, lineage_hash, lineage_matches
from .lazy import LazyData
from .manifest import Manifest, Partition, Segment
from .objects import (
    BaseDataQuery,
    BaseStoredData,
    InvalidObject,
    ReplaceableData,
    StoredArrayData,
    StoredArrayQuery,
    UnknownObjectClass,
)
from .registry import open_backend, open_frontend, register_frontend
from .saver import Saver

__all__ = [
    "PRESETS",
    "AccessDenied",
    "AuthenticationFailed",
    "BucketNotFound",
    "RemoteStorageError",
    "StorageFull",
    "StorageUnreachable",
    "copy_data",
    "BaseDataQuery",
    "BaseStoredData",
    "InvalidObject",
    "ReplaceableData",
    "SQLFrontend",
    "StoredArrayData",
    "StoredArrayQuery",
    "UnknownObjectClass",
    "DataCorrupted",
    "DataExistsError",
    "DataKey",
    "DataNotAvailable",
    "DirectoryFrontend",
    "Entry",
    "InvalidKey",
    "KeyReport",
    "LazyData",
    "Location",
    "Manifest",
    "MissingDependency",
    "Partition",
    "ReadOnlyError",
    "Saver",
    "Segment",
    "StorageBackend",
    "StorageError",
    "StorageFrontend",
    "ZarrBackend",
    "ZarrSaver",
    "__version__",
    "canonical_json",
    "codec_chain",
    "gc",
    "lineage_hash",
    "lineage_matches",
    "open_backend",
    "open_frontend",
    "register_frontend",
    "verify",
]


def gc(
    url: str,
    min_age_seconds: float = 3600.0,
    dry_run: bool = False,
    grace_seconds: float = 24 * 3600.0,
    **kwargs: object,
) -> list[str]:
    """Remove what failed, killed and overwritten saves left under ``url``; returns the
    removed paths (with ``dry_run``, what would be removed).

    Attempts whose lease is younger than ``min_age_seconds`` are kept (a running save renews
    it); attempts an overwrite superseded are kept for ``grace_seconds`` after it (readers).
    """
    backend = open_backend(url, **kwargs)
    return backend.gc(min_age_seconds=min_age_seconds, dry_run=dry_run, grace_seconds=grace_seconds)


def verify(
    url: str | StorageFrontend,
    run_id: str | None = None,
    target: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: object,
) -> list[KeyReport]:
    """Check the data committed under ``url`` (of ``run_id``, of data type ``target``, or
    all) against its manifests: one :class:`KeyReport` per key, ``ok`` if every object the
    manifest names exists with its recorded size and digest. ``kwargs`` (``storage_options``,
    ...) go to :func:`open_frontend`; see :meth:`StorageFrontend.verify`.
    """
    frontend = open_frontend(url, **kwargs)
    return frontend.verify(run_id=run_id, target=target, progress=progress)


def __getattr__(name: str) -> object:
    # SQLFrontend needs SQLAlchemy, an extra: import it only when asked for
    if name == "SQLFrontend":
        from .frontends.sql import SQLFrontend

        return SQLFrontend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
