"""The StorageFrontend role: the catalog that says where data lives."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends.base import StorageBackend
from ..commit import LostRace
from ..errors import DataCorrupted, DataNotAvailable, ReadOnlyError
from ..jsonio import load_document
from ..keys import DataKey, validate_run_id
from ..lazy import LazyData
from ..manifest import Manifest
from ..saver import Saver

if TYPE_CHECKING:
    from ..backends.zarr.verify import KeyReport

__all__ = ["Entry", "Location", "StorageFrontend"]


def _rebuild(cls: type[StorageFrontend], kwargs: dict[str, Any]) -> StorageFrontend:
    return cls(**kwargs)


@dataclass(frozen=True)
class Location:
    """Where a key's data lives: the name of a backend of the frontend and its backend key.

    ``manifest`` is the committed manifest when finding the key read it anyway (a directory
    catalog does): loading from this location then reads nothing more before the chunks.
    It takes no part in comparisons.
    """

    backend: str
    backend_key: str
    manifest: Manifest | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Entry:
    """A catalog entry: a committed key, where it is, and a summary of what it holds."""

    key: DataKey
    location: Location
    rows: int
    nbytes: int
    stored_bytes: int | None
    start: int | None
    end: int | None
    partitions: int
    writing_ended: str


class StorageFrontend(ABC):
    """A catalog of stored data (strax's StorageFrontend).

    Subclasses implement the primitives :meth:`_find`, :meth:`_list`, :meth:`_backend_for_save`,
    :meth:`_read_run_metadata`, :meth:`_write_run_metadata` and :meth:`_list_runs`. The public
    methods here add the rules shared by every catalog: ``readonly``, ``take_only`` /
    ``exclude``, validation, and fuzzy-matching arguments.

    Parameters
    ----------
    readonly
        Refuse savers and run-metadata writes with ``ReadOnlyError``.
    take_only
        If given, only these data types are found or saved here.
    exclude
        Data types never found or saved here.

    """

    backends: dict[str, StorageBackend]
    _kwargs: dict[str, Any]
    """Constructor arguments: frontends pickle and compare by them (set by subclasses)."""

    def __init__(
        self,
        readonly: bool = False,
        take_only: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> None:
        self.readonly = readonly
        self.skipped: builtins.list[str] = []
        """What the last :meth:`list` skipped because it could not be read (damaged
        manifests), one message each: listing goes on, and ``strata ls`` reports them."""
        self.take_only = tuple([take_only] if isinstance(take_only, str) else take_only)
        self.exclude = tuple([exclude] if isinstance(exclude, str) else exclude)

    # -- identity ---------------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._kwargs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StorageFrontend):
            return NotImplemented
        return type(self) is type(other) and repr(self._kwargs) == repr(other._kwargs)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self._kwargs)))

    # -- primitives -------------------------------------------------------------------------
    @abstractmethod
    def _find(
        self, key: DataKey, fuzzy_for: tuple[str, ...], fuzzy_for_options: tuple[str, ...]
    ) -> tuple[Location, DataKey]:
        """Locate committed data for ``key``; return its location and the stored key."""

    @abstractmethod
    def _list(self, run_id: str | None) -> list[Entry]:
        """Entries of committed data, optionally of one run."""

    @abstractmethod
    def _backend_for_save(self, key: DataKey) -> str:
        """Name of the backend new data for ``key`` goes to."""

    @abstractmethod
    def _read_run_metadata(self, run_id: str) -> dict[str, Any]:
        """The run document; ``DataNotAvailable`` if there is none."""

    @abstractmethod
    def _write_run_metadata(self, run_id: str, doc: dict[str, Any]) -> None:
        """Write the run document atomically."""

    @abstractmethod
    def _list_runs(self) -> list[str]:
        """Run ids that have a run document or stored data."""

    def _parse_run_document(self, run_id: str, raw: str | bytes) -> dict[str, Any]:
        """A stored run document, or ``DataCorrupted`` naming the run if it is not a JSON
        object.
        """
        doc = load_document(raw, f"run metadata {run_id!r} in {self!r}")
        if not isinstance(doc, dict):
            raise DataCorrupted(f"run metadata {run_id!r} in {self!r} is not a JSON object")
        return doc

    def _register(self, key: DataKey, location: Location, manifest: Manifest) -> None:  # noqa: B027
        """Called after a save commits; catalogs that index saves (SQL) override it."""

    # -- public API -------------------------------------------------------------------------
    def takes(self, data_type: str) -> bool:
        """Whether this frontend finds and saves ``data_type`` (``take_only`` / ``exclude``)."""
        if self.take_only and data_type not in self.take_only:
            return False
        return data_type not in self.exclude

    def find(
        self,
        key: DataKey,
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> Location:
        """Where ``key`` is stored; raises ``DataNotAvailable`` if it is not.

        ``fuzzy_for`` (data types) and ``fuzzy_for_options`` (option names) loosen the lineage
        match; see :func:`strata.storage.keys.lineage_matches`.
        """
        return self.find_key(key, fuzzy_for, fuzzy_for_options)[0]

    def find_key(
        self,
        key: DataKey,
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> tuple[Location, DataKey]:
        """As :meth:`find`, also returning the stored key (which differs for a fuzzy match)."""
        if not self.takes(key.data_type):
            raise DataNotAvailable(f"{self!r} does not take {key.data_type!r}")
        return self._find(key, tuple(fuzzy_for), tuple(fuzzy_for_options))

    def find_several(
        self,
        keys: Sequence[DataKey],
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> list[Location | None]:
        """:meth:`find` for several keys; ``None`` for each key not stored."""
        out: list[Location | None] = []
        for k in keys:
            try:
                out.append(self.find(k, fuzzy_for, fuzzy_for_options))
            except DataNotAvailable:
                out.append(None)
        return out

    def is_stored(self, key: DataKey, **fuzzy: Any) -> bool:
        """Whether ``key`` is stored here."""
        try:
            self.find(key, **fuzzy)
        except DataNotAvailable:
            return False
        return True

    def list(self, run_id: str | None = None) -> list[Entry]:
        """Committed entries, optionally of one run, that this frontend takes."""
        if run_id is not None:
            validate_run_id(run_id)
        self.skipped = []
        return [e for e in self._list(run_id) if self.takes(e.key.data_type)]

    def get_metadata(self, key: DataKey, **fuzzy: Any) -> Manifest:
        """The manifest of stored ``key``."""
        return self.manifest_at(self.find(key, **fuzzy))

    def manifest_at(self, location: Location) -> Manifest:
        """The committed manifest at ``location`` (not read again if the location holds it)."""
        if location.manifest is not None:
            return location.manifest
        return self.backends[location.backend].get_metadata(location.backend_key)

    def loader(
        self,
        key: DataKey,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> LazyData:
        """Lazy Dask collections over stored ``key`` (see ``StorageBackend.loader``)."""
        loc = self.find(key, fuzzy_for, fuzzy_for_options)
        return self.loader_at(loc, fields=fields, time_range=time_range)

    def loader_at(
        self,
        location: Location,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over the data at ``location`` (as :meth:`find` returned it):
        the manifest is read only if the location does not hold it already.
        """
        backend = self.backends[location.backend]
        return backend.loader_from_manifest(
            location.backend_key, self.manifest_at(location), fields=fields, time_range=time_range
        )

    def stored_bytes(self, key: DataKey) -> int | None:
        """Bytes on storage of stored ``key``, or ``None`` if its backend cannot tell."""
        loc = self.find(key)
        backend = self.backends[loc.backend]
        return backend.stored_bytes(loc.backend_key, self.manifest_at(loc))

    def remove(self, key: DataKey) -> None:
        """Remove stored ``key`` (catalogs that index saves drop their entry too)."""
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot remove {key}")
        try:
            loc = self.find(key)
        except DataCorrupted:
            # a damaged manifest: removing the key is the fix the error suggests, and removal
            # reads nothing it would have to trust
            backend = self.backends[self._backend_for_save(key)]
            backend.remove(backend.backend_key(key))
            return
        self.backends[loc.backend].remove(loc.backend_key)

    def restore(self, key: DataKey, manifest: Manifest) -> None:
        """Commit ``manifest`` (an earlier commit of ``key``, whose attempt still exists) again,
        undoing an overwrite: what ``copy_data`` does when an in-place rewrite fails its check.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot restore {key}")
        if manifest.key != key:
            raise ValueError(f"the manifest to restore commits {manifest.key}, not {key}")
        loc = self.find(key)
        self.backends[loc.backend].restore(loc.backend_key, manifest)
        self._register(key, Location(loc.backend, loc.backend_key, manifest), manifest)

    def gc(
        self,
        min_age_seconds: float = 3600.0,
        dry_run: bool = False,
        grace_seconds: float = 24 * 3600.0,
    ) -> builtins.list[str]:
        """Remove what failed or killed saves left, and what overwrites superseded, in every
        backend that can (see ``StorageBackend.gc``); returns what was (or would be) removed.
        """
        if not dry_run and self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot gc")
        removed: builtins.list[str] = []
        for backend in self.backends.values():
            if backend.supports_gc:
                removed.extend(
                    backend.gc(
                        min_age_seconds=min_age_seconds,
                        dry_run=dry_run,
                        grace_seconds=grace_seconds,
                    )
                )
        return removed

    def saver(
        self,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        lost_race: LostRace = LostRace.RAISE,
    ) -> Saver:
        """A Saver committing ``key`` here; ``ReadOnlyError`` if this frontend is read-only or
        does not take the data type, ``DataExistsError`` if it is stored and not overwritten.
        ``lost_race`` says what the saver does if another saver commits ``key`` first (see
        :class:`~strata.storage.commit.LostRace`).
        """
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot save {key}")
        if not self.takes(key.data_type):
            raise ReadOnlyError(f"{self!r} does not take {key.data_type!r} (take_only/exclude)")
        name = self._backend_for_save(key)
        backend = self.backends[name]
        saver = backend.saver(backend.backend_key(key), key, dtype, metadata, overwrite)
        saver.lost_race = LostRace(lost_race)
        if type(self)._register is not StorageFrontend._register:
            saver.on_commit = (self, Location(name, backend.backend_key(key)))
        return saver

    def run_metadata(self, run_id: str) -> dict[str, Any]:
        """The run-level metadata document of ``run_id`` (``DataNotAvailable`` if none)."""
        return self._read_run_metadata(validate_run_id(run_id))

    def write_run_metadata(self, run_id: str, doc: dict[str, Any]) -> None:
        """Write (replace) the run-level metadata document of ``run_id``."""
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot write run metadata of {run_id!r}")
        if not isinstance(doc, dict):
            raise TypeError(f"run metadata must be a dict, got {type(doc).__name__}")
        self._write_run_metadata(validate_run_id(run_id), doc)

    def list_runs(self) -> builtins.list[str]:
        """Run ids known here."""
        return self._list_runs()

    def verify(
        self,
        run_id: str | None = None,
        target: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> builtins.list[KeyReport]:
        """Check committed data (of ``run_id``, of data type ``target``, or all) against its
        manifests; one :class:`~strata.storage.backends.zarr.verify.KeyReport` per key.

        The keys are the entries of :meth:`list` and, in backends that can list what they
        store, every key directory with a manifest, so a damaged manifest (which :meth:`list`
        skips) is a failed report too, and so is an entry the catalog lists without committed
        data behind it. Keys of backends that cannot verify are reported as not verified.
        ``progress(done, total)`` is called after each key.
        """
        from dataclasses import replace

        # imported here: the generic catalog needs them only to verify
        from ..backends.zarr.verify import KeyReport
        from ..errors import InvalidKey, StorageError
        from ..layout import parse_backend_key

        if run_id is not None:
            validate_run_id(run_id)
        catalog = {
            (e.location.backend, e.location.backend_key)
            for e in self.list(run_id)
            if target is None or e.key.data_type == target
        }
        todo = set(catalog)
        for name, backend in self.backends.items():
            if not backend.supports_listing:
                continue
            for bk in backend.list_backend_keys(run_id):
                try:
                    data_type = parse_backend_key(bk)[1]
                except InvalidKey:
                    continue
                if (target is None or data_type == target) and self.takes(data_type):
                    todo.add((name, bk))
        reports: builtins.list[KeyReport] = []
        for done, (name, bk) in enumerate(sorted(todo), 1):
            backend = self.backends[name]
            try:
                if backend.supports_verify:
                    report = backend.verify(bk)
                else:
                    m = backend.get_metadata(bk)
                    report = KeyReport(
                        bk, m.key, [f"not verified: {backend!r} cannot verify (supports_verify)"]
                    )
            except DataNotAvailable as e:
                if (name, bk) in catalog:
                    reports.append(
                        KeyReport(bk, problems=[f"the catalog lists it, but {e}"], backend=name)
                    )
                # else: a key directory without a commit (a save in progress, or failed)
            except DataCorrupted as e:
                reports.append(KeyReport(bk, problems=[f"manifest: {e}"], backend=name))
            except (StorageError, OSError) as e:  # one unreadable key is a problem of its own
                why = f"{type(e).__name__}: {e}"
                reports.append(KeyReport(bk, problems=[f"cannot be verified: {why}"], backend=name))
            else:
                reports.append(replace(report, backend=name))
            if progress is not None:
                progress(done, len(todo))
        return reports
