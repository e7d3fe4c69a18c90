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

Operations on whole stores (openff-evaluator's ``MutableLocalFileStorage``):
:meth:`~ObjectStore.update` (also ``store += other``) merges another store into this one,
object by object through :meth:`~ObjectStore.store_object`, so the deduplication and
replaceable-data rules apply; :meth:`~ObjectStore.subset` copies the objects of some keys or
of a query into another store. Both copy ancillary directories (never move them) and leave
array data types alone (those are copied with ``copy_data`` / ``strata copy``).

An optional in-memory cache of retrieved objects (:meth:`~ObjectStore.enable_object_cache`,
off by default) saves the read and validation of objects retrieved again.
"""

from __future__ import annotations

import enum
import logging
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ..errors import DataCorrupted, DataNotAvailable, ReadOnlyError
from .arrays import StoredArrayData
from .base import (
    BaseStoredData,
    InvalidObject,
    ReplaceableData,
    object_key,
    registered_classes,
    subclasses_of,
    validate_object_key,
)
from .query import BaseDataQuery

__all__ = ["MergeReport", "ObjectStore", "QueryResult", "StoreOutcome"]

logger = logging.getLogger(__name__)

QueryResult = dict[tuple[Any, ...], list[tuple[str, BaseStoredData, str | None]]]
"""``{matched values: [(key, object, ancillary path or None), ...]}``."""

_LOCK_GUARD = threading.Lock()


class _ObjectKeys(BaseStoredData, stored_name="strata.ObjectKeys"):
    """The default index: keys of the stored objects of each class."""

    internal = True
    keys: dict[str, list[str]] = Field(default_factory=dict)


_KEYS_KEY = "strata_object_keys"


class StoreOutcome(enum.Enum):
    """What storing one object did."""

    STORED = "stored"
    """Nothing with its identity was stored: it is now."""
    REPLACED = "replaced"
    """A stored :class:`ReplaceableData` with less information was replaced by it."""
    KEPT = "kept"
    """The stored object stays (the same object, or one with at least as much information)."""


@dataclass
class MergeReport:
    """What :meth:`ObjectStore.update` or :meth:`ObjectStore.subset` did, object by object.

    ``outcomes`` maps each key written to its :class:`StoreOutcome`; ``skipped`` names what was
    not copied and why (objects of classes not registered in this process, damaged ones).
    """

    outcomes: dict[str, StoreOutcome] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def count(self, outcome: StoreOutcome) -> int:
        """How many objects had ``outcome``."""
        return sum(1 for o in self.outcomes.values() if o is outcome)

    def __str__(self) -> str:
        parts = [f"{self.count(o)} {o.value}" for o in StoreOutcome]
        return ", ".join(parts) + (f", {len(self.skipped)} skipped" if self.skipped else "")


class _ObjectCache:
    """Retrieved objects by key, least recently used dropped first, optionally aged out."""

    def __init__(self, max_objects: int, max_age_seconds: float | None) -> None:
        self.max_objects = max_objects
        self.max_age_seconds = max_age_seconds
        self._items: OrderedDict[str, tuple[float, BaseStoredData, str | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[BaseStoredData, str | None] | None:
        item = self._items.get(key)
        if item is not None and (
            self.max_age_seconds is None or time.monotonic() - item[0] <= self.max_age_seconds
        ):
            self._items.move_to_end(key)
            self.hits += 1
            return item[1].model_copy(deep=True), item[2]  # callers may mutate their copy
        if item is not None:
            del self._items[key]
        self.misses += 1
        return None

    def put(self, key: str, obj: BaseStoredData, path: str | None) -> None:
        self._items[key] = (time.monotonic(), obj.model_copy(deep=True), path)
        self._items.move_to_end(key)
        while len(self._items) > self.max_objects:
            self._items.popitem(last=False)

    def discard(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


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

    def _index_class_names(self) -> set[str]:
        """Stored names of the classes the index holds objects of (registered here or not)."""
        return {name for name, keys in self._load_keys().keys.items() if keys}

    def _fetch_ancillary(self, location: str, dest: str) -> str:
        """A local directory with the files of the ancillary ``location`` (as
        :meth:`retrieve_object` returned it): the directory itself if it is local, else a copy
        made under ``dest``.
        """
        if os.path.isdir(location):
            return location
        raise DataNotAvailable(f"ancillary directory {location!r} of {self!r} is not local")

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def _object_lock(self) -> threading.RLock:
        lock = self.__dict__.get("_strata_object_lock")
        if lock is None:
            with _LOCK_GUARD:
                lock = self.__dict__.setdefault("_strata_object_lock", threading.RLock())
        return lock

    @property
    def _object_cache(self) -> _ObjectCache | None:
        cache: _ObjectCache | None = self.__dict__.get("_strata_object_cache")
        return cache

    def _cache_discard(self, key: str) -> None:
        cache = self._object_cache
        if cache is not None:
            cache.discard(key)

    def enable_object_cache(
        self, max_objects: int = 10_000, max_age_seconds: float | None = None
    ) -> None:
        """Keep retrieved objects in memory (off by default): :meth:`retrieve_object` of a key
        retrieved before returns a copy of the cached object without reading the store.

        The cache is invalidated, key by key, by every write through this object (storing,
        replacing, removing, :meth:`update`, :meth:`subset` into it, committing or removing
        array data). Writes by other processes or other backend objects are not seen: a cached
        object stays until ``max_age_seconds`` have passed since it was read (``None``: for
        ever), the cache drops it as least recently used (beyond ``max_objects``), or
        :meth:`clear_object_cache` is called. The cache stays in this process: a backend
        pickled to a worker starts without one.
        """
        if not isinstance(max_objects, int) or max_objects < 1:
            raise ValueError(f"max_objects must be a positive integer, got {max_objects!r}")
        if max_age_seconds is not None and not max_age_seconds >= 0:
            raise ValueError(f"max_age_seconds must be >= 0 or None, got {max_age_seconds!r}")
        with self._object_lock:
            self.__dict__["_strata_object_cache"] = _ObjectCache(max_objects, max_age_seconds)

    def disable_object_cache(self) -> None:
        """Stop caching retrieved objects (and drop the cached ones)."""
        with self._object_lock:
            self.__dict__.pop("_strata_object_cache", None)

    def clear_object_cache(self) -> None:
        """Drop every cached object (the cache stays enabled)."""
        with self._object_lock:
            cache = self._object_cache
            if cache is not None:
                self.__dict__["_strata_object_cache"] = _ObjectCache(
                    cache.max_objects, cache.max_age_seconds
                )

    @property
    def object_cache_info(self) -> dict[str, Any] | None:
        """``{"objects", "hits", "misses", "max_objects", "max_age_seconds"}`` of the cache, or
        ``None`` when it is off.
        """
        cache = self._object_cache
        if cache is None:
            return None
        return {
            "objects": len(cache),
            "hits": cache.hits,
            "misses": cache.misses,
            "max_objects": cache.max_objects,
            "max_age_seconds": cache.max_age_seconds,
        }

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
        return self._store(object_to_store, ancillary_data_path)[0]

    def _store(
        self,
        object_to_store: BaseStoredData,
        ancillary_data_path: str | os.PathLike[str] | None = None,
    ) -> tuple[str, StoreOutcome]:
        """:meth:`store_object`, also saying what it did."""
        obj = self._check_object(object_to_store)
        self._check_objects_writable(f"store {type(obj).__name__}")
        anc = self._check_ancillary(obj, ancillary_data_path)
        key = object_key(obj)  # validates and serialises the object first
        with self._object_lock:
            self._cache_discard(key)
            if not self._object_exists(key) and self._create_object(obj, key, anc):
                self._index_add(key, obj)
                return key, StoreOutcome.STORED
            existing, _ = self._retrieve_object(key)
            if existing is None:  # removed between the two calls: store it now
                self._store_object(obj, key, anc)
                self._index_add(key, obj)
                return key, StoreOutcome.STORED
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
                    return key, StoreOutcome.REPLACED
            if not self._index_contains(key, existing):  # a crash came between two writes
                self._index_add(key, existing)
            return key, StoreOutcome.KEPT

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
            cache = self._object_cache
            cached = cache.get(storage_key) if cache is not None else None
            if cached is not None:
                hit, hit_path = cached
                if expected_type is not None and not isinstance(hit, expected_type):
                    raise TypeError(
                        f"stored object {storage_key} is a {type(hit).__name__}, "
                        f"not a {expected_type.__name__}"
                    )
                return hit, hit_path
            obj, path = self._retrieve_object(storage_key, expected_type)
            if obj is not None and cache is not None:
                cache.put(storage_key, obj, path)
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
            self._cache_discard(storage_key)
            obj, _ = self._retrieve_object(storage_key)
            if obj is None:
                raise DataNotAvailable(f"no stored object {storage_key!r} in {self!r}")
            self._index_discard(storage_key, obj)
            self._remove_object(storage_key)

    # -- whole stores (openff-evaluator's MutableLocalFileStorage) ---------------------------
    def _all_objects(self, report: MergeReport) -> list[tuple[str, BaseStoredData, str | None]]:
        """Every stored object but array data types (a snapshot taken under the lock);
        classes not registered in this process are named in ``report.skipped``.
        """
        with self._object_lock:
            names = self._index_class_names()
            known = registered_classes()
            for name in sorted(names - set(known)):
                report.skipped.append(
                    f"objects of class {name!r} (not registered in this process: import the "
                    "module that defines it)"
                )
            classes = [c for c in subclasses_of(BaseStoredData) if c.stored_name in names]
            classes = [c for c in classes if not issubclass(c, StoredArrayData)]
            # exact classes only: a subclass's objects are listed under its own name
            return [
                (k, o, p)
                for cls in classes
                for k, o, p in self._index_search([cls], {})
                if type(o) is cls
            ]

    def _copy_in(
        self,
        source: ObjectStore,
        items: Iterable[tuple[str, BaseStoredData, str | None]],
        report: MergeReport,
    ) -> MergeReport:
        for key, obj, location in items:
            with tempfile.TemporaryDirectory(prefix="strata-ancillary-") as tmp:
                local = source._fetch_ancillary(location, tmp) if location else None
                new_key, outcome = self._store(obj, local)
            if new_key != key:
                logger.info("%s of %r is stored as %s here", key, source, new_key)
            report.outcomes[new_key] = outcome
        for why in report.skipped:
            logger.warning("copying objects from %r into %r skipped %s", source, self, why)
        return report

    def update(self, other: ObjectStore) -> MergeReport:
        """Store every object of ``other`` here (openff-evaluator's ``update``; also
        ``self += other``); ``other`` is not changed.

        Each object goes through :meth:`store_object`: one already stored is kept, a
        :class:`~strata.storage.objects.base.ReplaceableData` replaces the stored one when it
        holds more information (``most_information``), and ancillary directories are copied.
        Array data types are not merged (copy them with ``copy_data`` or ``strata copy``);
        objects of classes not registered in this process are skipped and named in the
        report. Returns what happened to each key.
        """
        if not isinstance(other, ObjectStore):
            raise TypeError(f"can only merge another object store, got {type(other).__name__}")
        self._check_objects_writable("merge another store into it")
        report = MergeReport()
        return self._copy_in(other, other._all_objects(report), report)

    def __iadd__(self, other: ObjectStore) -> ObjectStore:
        """``self += other``: :meth:`update`."""
        self.update(other)
        return self

    def subset(
        self,
        destination: ObjectStore | str,
        keys: str | Iterable[str] | None = None,
        query: BaseDataQuery | None = None,
        require_empty: bool = True,
    ) -> ObjectStore:
        """Copy some stored objects into ``destination`` (a store, or a URL for a new
        ``ZarrBackend``) and return it (openff-evaluator's ``subset``).

        Copies the objects of ``keys``, or those ``query`` matches, or (neither given) every
        object; ancillary directories are copied, the rules of :meth:`store_object` apply.
        With ``require_empty`` (the default) a destination that already holds objects is
        refused, so the result holds exactly the subset. Array data types are not objects to
        copy here: naming one raises ``TypeError`` (copy them with ``copy_data``).
        """
        if keys is not None and query is not None:
            raise ValueError("give keys= or query=, not both")
        if isinstance(destination, str):
            from ..registry import open_backend  # the registry imports the backends

            dest: object = open_backend(destination)
        else:
            dest = destination
        if not isinstance(dest, ObjectStore):
            raise TypeError(f"destination must be an object store or URL, got {dest!r}")
        if dest is self:
            raise ValueError("the destination of a subset must be another store")
        dest._check_objects_writable("receive a subset")
        report = MergeReport()
        if require_empty:
            probe = MergeReport()
            if dest._all_objects(probe) or probe.skipped:
                raise ValueError(
                    f"{dest!r} already holds stored objects: give an empty store, or "
                    "require_empty=False to merge the subset into it"
                )
        items: list[tuple[str, BaseStoredData, str | None]]
        if query is not None:
            if issubclass(query.data_class(), StoredArrayData):
                raise TypeError(
                    f"{type(query).__name__} finds array data types, which subset() does not "
                    "copy: copy them with copy_data or `strata copy`"
                )
            items = [row for rows in self.query(query).values() for row in rows]
        elif keys is not None:
            items = []
            for key in [keys] if isinstance(keys, str) else list(keys):
                obj, path = self.retrieve_object(key)
                if isinstance(obj, StoredArrayData):
                    raise TypeError(
                        f"object {key} describes array data {obj.key}, which subset() does "
                        "not copy: copy it with copy_data or `strata copy`"
                    )
                items.append((key, obj, path))
        else:
            items = self._all_objects(report)
        dest._copy_in(self, items, report)
        return dest


def _index_values(obj: BaseStoredData) -> list[Any]:
    data = obj.model_dump(mode="json")
    return [data[f] for f in type(obj).index_fields]
