"""Stored objects: typed JSON documents with optional ancillary files, found by key or query.

See :class:`BaseStoredData`, :class:`ReplaceableData`, :class:`BaseDataQuery` and the
object-store methods every :class:`~strata.storage.backends.base.StorageBackend` has
(:class:`ObjectStore`).
"""

from __future__ import annotations

from .arrays import StoredArrayData, StoredArrayQuery
from .base import (
    BaseStoredData,
    InvalidObject,
    ReplaceableData,
    UnknownObjectClass,
    key_for_identity,
    object_key,
    registered_classes,
    stored_class,
    validate_object_key,
)
from .query import BaseDataQuery
from .store import ObjectStore, QueryResult

__all__ = [
    "BaseDataQuery",
    "BaseStoredData",
    "InvalidObject",
    "ObjectStore",
    "QueryResult",
    "ReplaceableData",
    "StoredArrayData",
    "StoredArrayQuery",
    "UnknownObjectClass",
    "key_for_identity",
    "object_key",
    "registered_classes",
    "stored_class",
    "validate_object_key",
]
