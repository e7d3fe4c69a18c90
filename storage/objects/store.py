"""The object store part of a backend (the openff-evaluator contract).

:class:`ObjectStore` gives a backend the public methods :meth:`~ObjectStore.store_object`,
:meth:`~ObjectStore.retrieve_object`, :meth:`~ObjectStore.has_object`,
:meth:`~ObjectStore.query` and :meth:`~ObjectStore.remove_object`, built on three abstract
primitives, all called under one reentrant lock per backend instance:

- ``_store_object(object_to_store, storage_key=None, ancillary_data_path=None)``: write (or
  replace) the object under the key, copying the ancillary directory;
- ``_retrieve_object(storage_key, expected_type=None)``: ``(object, ancillary path)``, or
  ``(None, None)`` if nothing is stored under the key;
- ``_object_exists(storage_key)``.

Keys are deterministic (see :func:`~strata.storage.objects.base.object_key`), so an object's key is
known before it is stored and two writers of the same object meet at one key. Validation,
deduplication and the replaceable-data rule live here, once.

Optional hooks let a backend do better than the defaults: ``_create_object`` (create only if
absent, atomically across processes), ``_remove_object``, and the index hooks
``_index_add`` / ``_index_discard`` / ``_index_contains`` / ``_index_search``. The default
index is one internal stored object listing the keys of each class; it is safe within a
process only. :class:`~strata.storage.objects.fsstore.FsObjectStore` (used by ``ZarrBackend``)
replaces it with one index file per object, which many processes can write at once.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from ..errors import DataCorrupted, DataNotAvailable, ReadOnlyError
from .base import (
    BaseStoredData,
    InvalidObject,
    ReplaceableData,
    object_key,
    subclasses_of,
    validate_object_key,
)
from .query import BaseDataQuery

__all__ = ["ObjectStore", "QueryResult"]

QueryResult = dict[tuple[Any, ...], list[tuple[str, BaseStoredData, str | None]]]
"""``{matched values: [(key, object, ancillary path or None), ...]}``."""

_LOCK_GUARD = threading.Lock()


class _ObjectKeys(BaseStoredData, stored_name="strata.ObjectKeys"):
    """The default index: keys of the stored objects of each class."""

    internal = True
    keys: dict[str, list[str]] = Field(default_factory=dict)


_KEYS_KEY = "strata_object_keys"


class ObjectStore(ABC):
    """Stored objects on a backend; see the module documentation."""

    # -- primitives -------------------------------------------------------------------------
    @abstractmethod
    def _store_object(
        self,
        object_to_store: BaseStoredData,
        storage_key: str | None = None,
        ancillary_data_path: str | None = None,
    ) -> str:
        """Store (or replace) ``object_to_store`` under ``storage_key`` and return the key.

        Called under the lock, after validation. The ancillary directory, if given, is copied
        (never moved). The base class always passes a key.
        """

    @abstractmethod
    def _retrieve_object(
        self, storage_key: str, expected_type: type[BaseStoredData] | None = None
    ) -> tuple[BaseStoredData | None, str | None]:
        """``(object, ancillary path or None)``, or ``(None, None)`` if nothing is stored."""

    @abstractmethod
    def _object_exists(self, storage_key: str) -> bool:
        """Whether an object is stored under ``storage_key``."""

    # -- optional hooks ---------------------------------------------------------------------
    def _create_object(
        self, object_to_store: BaseStoredData, storage_key: str, ancillary_data_path: str | None
    ) -> bool:
        """Store a new object only if ``storage_key`` is free; return whether it was stored.

        The default checks and writes under the (per-process) lock; backends shared by many
        processes override it with an atomic exclusive create.
        """
        if self._object_exists(storage_key):
            return False
        self._store_object(object_to_store, storage_key, ancillary_data_path)
        return True

    def _remove_object(self, storage_key: str) -> None:
        """Remove the object and its ancillary files (optional primitive)."""
        raise NotImplementedError(f"{type(self).__name__} cannot remove stored objects")

    def _load_keys(self) -> _ObjectKeys:
        obj, _ = self._retrieve_object(_KEYS_KEY, _ObjectKeys)
        return obj if isinstance(obj, _ObjectKeys) else _ObjectKeys()

    def _index_add(self, key: str, obj: BaseStoredData) -> None:
        """Make the stored object ``key`` findable by queries."""
        index = self._load_keys()
        keys = index.keys.setdefault(type(obj).stored_name, [])
        if key not in keys:
            keys.append(key)
            self._store_object(index, _KEYS_KEY)

    def _index_discard(self, key: str, obj: BaseStoredData) -> None:
        """Stop queries finding ``key`` (before the object itself is removed)."""
        index = self._load_keys()
        keys = index.keys.get(type(obj).stored_name, [])
        if key in keys:
            keys.remove(key)
            self._store_object(index, _KEYS_KEY)

    def _index_contains(self, key: str, obj: BaseStoredData) -> bool:
        """Whether the index is up to date for the stored object ``key``."""
        return key in self._load_keys().keys.get(type(obj).stored_name, [])

    def _index_search(
        self, classes: list[type[BaseStoredData]], constraints: dict[str, Any]
    ) -> Iterator[tuple[str, BaseStoredData, str | None]]:
        """Candidate ``(key, object, ancillary path)`` of the given classes.

        ``constraints`` are attribute values every match equals; an index may use them to read
        less, but need not (the query filters the candidates again).
        """
        index = self._load_keys()
        for cls in classes:
            for key in list(index.keys.get(cls.stored_name, [])):
                obj, path = self._retrieve_object(key)
                if obj is not None:
                    yield key, obj, path

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def _object_lock(self) -> threading.RLock:
        lock = self.__dict__.get("_strata_object_lock")
        if lock is None:
            with _LOCK_GUARD:
                lock = self.__dict__.setdefault("_strata_object_lock", threading.RLock())
        return lock

    def _check_objects_writable(self, what: str) -> None:
        if getattr(self, "readonly", False):
            raise ReadOnlyError(f"{self!r} is read-only: cannot {what}")

    @staticmethod
    def _check_object(obj: object) -> BaseStoredData:
        if not isinstance(obj, BaseStoredData):
            raise TypeError(f"only BaseStoredData objects can be stored, got {type(obj).__name__}")
        if type(obj).internal:
            raise TypeError(f"{type(obj).__name__} is internal to strata and cannot be stored")
        return obj

    @staticmethod
    def _check_ancillary(obj: BaseStoredData, path: Any) -> str | None:
        if path is None:
            if type(obj).has_ancillary_data():
                raise InvalidObject(f"{type(obj).__name__} objects need an ancillary directory")
            return None
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise InvalidObject(f"ancillary data path {path!r} is not an existing local directory")
        return os.path.abspath(path)

    # -- public API -------------------------------------------------------------------------
    def store_object(
        self,
        object_to_store: BaseStoredData,
        ancillary_data_path: str | os.PathLike[str] | None = None,
    ) -> str:
        """Store an object (and a copy of its ancillary directory); return its key.

        An object whose identity is already stored is not written again: its key is returned.
        For :class:`~strata.storage.objects.base.ReplaceableData` the one with most information is
        kept; on a tie the stored one stays and its ancillary files are not touched.

        Raises
        ------
        InvalidObject
            The object fails validation or cannot be serialised; nothing is written.
        TypeError
            ``object_to_store`` is not a stored-object class.
        ReadOnlyError
            The backend is read-only.

        """
        obj = self._check_object(object_to_store)
        self._check_objects_writable(f"store {type(obj).__name__}")
        anc = self._check_ancillary(obj, ancillary_data_path)
        key = object_key(obj)  # validates and serialises the object first
        with self._object_lock:
            if not self._object_exists(key) and self._create_object(obj, key, anc):
                self._index_add(key, obj)
                return key
            existing, _ = self._retrieve_object(key)
            if existing is None:  # removed between the two calls: store it now
                self._store_object(obj, key, anc)
                self._index_add(key, obj)
                return key
            if type(existing) is not type(obj):
                raise DataCorrupted(
                    f"object key {key} holds a {type(existing).__name__}, not a "
                    f"{type(obj).__name__}: the stored document was altered"
                )
            if isinstance(obj, ReplaceableData):
                assert isinstance(existing, ReplaceableData)
                winner = type(obj).most_information(existing, obj)
                if winner is not existing and winner != existing:
                    if _index_values(winner) != _index_values(existing):
                        self._index_discard(key, existing)
                    self._store_object(winner, key, anc if winner is obj else None)
                    self._index_add(key, winner)
                    return key
            if not self._index_contains(key, existing):  # a crash came between two writes
                self._index_add(key, existing)
            return key

    def retrieve_object(
        self, storage_key: str, expected_type: type[BaseStoredData] | None = None
    ) -> tuple[BaseStoredData, str | None]:
        """The stored object and the path of its ancillary directory (or ``None``).

        The path is a local path for local backends and a URL of the backend's scheme
        otherwise. Raises ``DataNotAvailable`` if nothing is stored under the key,
        ``InvalidKey`` for a malformed key, ``UnknownObjectClass`` if the stored class is not
        registered here and ``TypeError`` if it is not ``expected_type``.
        """
        validate_object_key(storage_key)
        with self._object_lock:
            obj, path = self._retrieve_object(storage_key, expected_type)
        if obj is None:
            raise DataNotAvailable(f"no stored object {storage_key!r} in {self!r}")
        return obj, path

    def has_object(self, storage_object: BaseStoredData) -> str | None:
        """The key of the stored object with the same identity, or ``None``."""
        obj = self._check_object(storage_object)
        key = object_key(obj)
        with self._object_lock:
            return key if self._object_exists(key) else None

    def query(self, data_query: BaseDataQuery) -> QueryResult:
        """Stored objects matching ``data_query``, grouped by the tuple of matched values.

        Objects of every registered subclass of the query's ``data_class()`` are candidates.
        Returns ``{matched values: [(key, object, ancillary path or None), ...]}``, each list
        sorted by key.
        """
        if not isinstance(data_query, BaseDataQuery):
            raise TypeError(f"expected a BaseDataQuery, got {type(data_query).__name__}")
        classes = subclasses_of(data_query.data_class())
        constraints = data_query.equality_constraints()
        results: dict[tuple[Any, ...], list[tuple[str, BaseStoredData, str | None]]]
        results = defaultdict(list)
        with self._object_lock:
            for key, obj, path in self._index_search(classes, constraints):
                matched = data_query.apply(obj)
                if matched is not None:
                    results[matched].append((key, obj, path))
        return {k: sorted(v, key=lambda r: r[0]) for k, v in results.items()}

    def remove_object(self, storage_key: str) -> None:
        """Remove a stored object and its ancillary files (``DataNotAvailable`` if none)."""
        validate_object_key(storage_key)
        self._check_objects_writable(f"remove object {storage_key}")
        if type(self)._remove_object is ObjectStore._remove_object:
            raise NotImplementedError(f"{type(self).__name__} cannot remove stored objects")
        with self._object_lock:
            obj, _ = self._retrieve_object(storage_key)
            if obj is None:
                raise DataNotAvailable(f"no stored object {storage_key!r} in {self!r}")
            self._index_discard(storage_key, obj)
            self._remove_object(storage_key)


def _index_values(obj: BaseStoredData) -> list[Any]:
    data = obj.model_dump(mode="json")
    return [data[f] for f in type(obj).index_fields]
