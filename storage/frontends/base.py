"""The StorageFrontend role: the catalog that says where data lives."""

from __future__ import annotations

import builtins
import fnmatch
import functools
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
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

__all__ = [
    "PATTERN_TYPES",
    "STORAGE_KINDS",
    "Entry",
    "Location",
    "RunQuery",
    "RunRecord",
    "StorageFrontend",
    "as_patterns",
    "nearest_first",
    "pattern_matches",
    "project",
    "validate_field_path",
    "validate_storage_kind",
]

logger = logging.getLogger(__name__)


def _rebuild(
    cls: type[StorageFrontend], kwargs: dict[str, Any], storage_kind: str | None = None
) -> StorageFrontend:
    fe = cls(**kwargs)
    if storage_kind is not None:  # set after construction: any subclass keeps its kind
        fe.storage_kind = storage_kind
    return fe


# -- storage kinds ------------------------------------------------------------------------
STORAGE_KINDS: Mapping[str, int] = MappingProxyType(
    {"memory": 0, "local": 1, "online": 2, "compressed": 3, "remote": 4, "tape": 10}
)
"""How far a frontend's data is, nearest first (strax's ``StorageType``): the name of each kind
and its distance. ``memory``: in this process; ``local``: a disk of this machine or a cluster
file system mounted here; ``online``: a catalog database (SQL) in front of its data;
``compressed``: data that needs slow decoding first; ``remote``: fetched over the network from
another host (S3, SSH, other fsspec protocols); ``tape``: slower than anything else."""


def validate_storage_kind(kind: object) -> str:
    """Return ``kind`` if it is one of :data:`STORAGE_KINDS`, else raise ``ValueError``."""
    if not isinstance(kind, str) or kind not in STORAGE_KINDS:
        raise ValueError(
            f"invalid storage kind {kind!r}: must be one of {', '.join(map(repr, STORAGE_KINDS))} "
            "(nearest first)"
        )
    return kind


def nearest_first(frontends: Iterable[StorageFrontend]) -> builtins.list[StorageFrontend]:
    """``frontends`` sorted by :attr:`StorageFrontend.distance`; the given order breaks ties
    (the sort is stable).
    """
    return sorted(frontends, key=lambda fe: fe.distance)


# -- run documents: fields, projections and queries ---------------------------------------
PATTERN_TYPES = ("fnmatch", "re")
"""How run-selection patterns match: ``fnmatch`` (shell wildcards ``*``, ``?``, ``[seq]``,
``[!seq]``, case-sensitive, whole value) or ``re`` (Python regular expressions matched at the
start of the value, as ``re.match``)."""

_FIELD_PART = re.compile(r'^[^."\\\x00-\x1f]{1,255}\Z')
_ABSENT = object()


def validate_field_path(path: object) -> str:
    """Return ``path`` if it is a dotted path into a run document (``"calibration.gains"``),
    else raise ``ValueError``: non-empty keys separated by ``.``, without ``"``, backslashes
    or control characters.
    """
    if isinstance(path, str) and all(_FIELD_PART.match(p) for p in path.split(".")):
        return path
    raise ValueError(
        f"invalid run document field {path!r}: a dotted path of non-empty keys "
        "(e.g. 'calibration.gains') without '\"', backslashes or control characters"
    )


def _get(doc: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``doc`` (through objects only), or ``_ABSENT``."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def project(doc: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The part of ``doc`` at the dotted ``paths``, nested as in ``doc`` (MongoDB's projection):
    ``project({"a": {"b": 1, "c": 2}, "d": 3}, ["a.b"]) == {"a": {"b": 1}}``. Paths that are
    not in ``doc`` are left out.
    """
    out: dict[str, Any] = {}
    for path in paths:
        value = _get(doc, validate_field_path(path))
        if value is _ABSENT:
            continue
        *parents, last = path.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = value
    return out


def _strings(value: Any) -> tuple[str, ...]:
    """A string as a 1-tuple, the strings of a list, else nothing."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _tag_names(value: Any) -> tuple[str, ...]:
    """Tag names of a ``tags`` value: strings, or objects with a string ``name`` (strax)."""
    if not isinstance(value, list):
        return ()
    out = []
    for t in value:
        if isinstance(t, dict):
            t = t.get("name")
        if isinstance(t, str):
            out.append(t)
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def pattern_matches(pattern_type: str, pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` (see :data:`PATTERN_TYPES`)."""
    if pattern_type == "fnmatch":
        return fnmatch.fnmatchcase(value, pattern)
    return _compiled(pattern).match(value) is not None


def as_patterns(value: object, what: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings: ``None`` is empty, a string is one; ``TypeError``
    naming ``what`` for anything else than strings.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        out = tuple(value)
        if all(isinstance(v, str) for v in out):
            return out
    raise TypeError(f"{what} must be a string or a list of strings, got {value!r}")


@dataclass(frozen=True)
class RunRecord:
    """One run as a run query returns it.

    ``mode`` and ``tags`` are the strings of the document's ``mode`` (a string or a list of
    them) and the names of its ``tags`` (strings, or objects with a ``name`` as strax writes
    them); ``fields`` maps each requested dotted path to its value (``None`` where the
    document has none). ``has_metadata`` is false for a run that has stored data but no run
    document.
    """

    run_id: str
    has_metadata: bool
    mode: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(
        cls,
        run_id: str,
        has_metadata: bool,
        mode: Any,
        tags: Any,
        fields: Mapping[str, Any],
    ) -> RunRecord:
        """A record from the raw ``mode`` and ``tags`` values of a document."""
        return cls(run_id, has_metadata, _strings(mode), _tag_names(tags), dict(fields))


@dataclass(frozen=True)
class RunQuery:
    """Which runs to select and which fields of their documents to return (strax's
    ``select_runs`` filters).

    Every filter left empty selects everything. A run is selected when its id matches one of
    ``run_id``, one of its modes matches one of ``run_mode`` (a run without a mode has mode
    ``""``), one of its tags matches one of ``include_tags``, and none of its tags matches one
    of ``exclude_tags`` (exclusion wins). With ``ignore_underscore`` a tag ``_x`` is matched as
    ``x`` unless the pattern starts with ``_`` too. Strings are taken as one pattern.

    Parameters
    ----------
    run_id, run_mode, include_tags, exclude_tags
        Patterns (a string or a sequence of strings).
    pattern_type
        ``"fnmatch"`` or ``"re"`` (see :data:`PATTERN_TYPES`).
    ignore_underscore
        Match tags with a leading underscore without it.
    fields
        Dotted paths into the run document to return (see :func:`validate_field_path`).

    """

    run_id: tuple[str, ...] = ()
    run_mode: tuple[str, ...] = ()
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    pattern_type: str = "fnmatch"
    ignore_underscore: bool = True
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pattern_type not in PATTERN_TYPES:
            raise ValueError(
                f"invalid pattern_type {self.pattern_type!r}: must be one of "
                f"{', '.join(map(repr, PATTERN_TYPES))}"
            )
        for name in ("run_id", "run_mode", "include_tags", "exclude_tags"):
            patterns = as_patterns(getattr(self, name), name)
            object.__setattr__(self, name, patterns)
            if self.pattern_type == "re":
                for p in patterns:
                    try:
                        _compiled(p)
                    except re.error as e:
                        raise ValueError(f"invalid regular expression {p!r} in {name}: {e}") from e
        fields = tuple(dict.fromkeys(as_patterns(self.fields, "fields")))
        object.__setattr__(self, "fields", tuple(validate_field_path(f) for f in fields))
        object.__setattr__(self, "ignore_underscore", bool(self.ignore_underscore))

    @property
    def filters(self) -> bool:
        """Whether any filter is set (else every run is selected)."""
        return bool(self.run_id or self.run_mode or self.include_tags or self.exclude_tags)

    def tag_matches(self, pattern: str, tag: str) -> bool:
        """Whether ``tag`` matches ``pattern`` (``ignore_underscore`` applied)."""
        if self.ignore_underscore and tag.startswith("_") and not pattern.startswith("_"):
            tag = tag[1:]
        return pattern_matches(self.pattern_type, pattern, tag)

    def matches_record(self, record: RunRecord) -> bool:
        """Whether the run of ``record`` is selected."""
        pt = self.pattern_type
        if self.run_id and not any(pattern_matches(pt, p, record.run_id) for p in self.run_id):
            return False
        if self.run_mode:
            modes = record.mode or ("",)
            if not any(pattern_matches(pt, p, m) for p in self.run_mode for m in modes):
                return False
        if self.include_tags and not any(
            self.tag_matches(p, t) for p in self.include_tags for t in record.tags
        ):
            return False
        return not any(self.tag_matches(p, t) for p in self.exclude_tags for t in record.tags)

    def record(self, run_id: str, doc: Mapping[str, Any] | None) -> RunRecord:
        """The record of run ``run_id`` with document ``doc`` (``None``: no document)."""
        if doc is None:
            return RunRecord(run_id, False, fields=dict.fromkeys(self.fields))
        values = {}
        for f in self.fields:
            v = _get(doc, f)
            values[f] = None if v is _ABSENT else v
        return RunRecord.from_values(run_id, True, doc.get("mode"), doc.get("tags"), values)


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

    @classmethod
    def of(cls, m: Manifest, location: Location, stored_bytes: int | None = None) -> Entry:
        """The entry of the key that manifest ``m`` commits at ``location``."""
        return cls(
            key=m.key,
            location=location,
            rows=m.rows,
            nbytes=m.nbytes,
            stored_bytes=stored_bytes,
            start=m.start,
            end=m.end,
            partitions=len(m.partitions),
            writing_ended=m.writing_ended,
        )


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
    storage_kind
        How far the data is (one of :data:`STORAGE_KINDS`); default the class's
        ``storage_kind`` (a subclass may derive it from its URL).

    """

    backends: dict[str, StorageBackend]
    _kwargs: dict[str, Any]
    """Constructor arguments: frontends pickle and compare by them (set by subclasses)."""

    storage_kind: str = "local"
    """How far this frontend's data is: one of :data:`STORAGE_KINDS` (nearest first). A class
    attribute (checked when the class is defined), overridden per instance by the constructor's
    ``storage_kind=`` or by assignment (checked too). Loads prefer the nearest frontend."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "storage_kind" in cls.__dict__:
            validate_storage_kind(cls.__dict__["storage_kind"])

    def __init__(
        self,
        readonly: bool = False,
        take_only: Iterable[str] = (),
        exclude: Iterable[str] = (),
        storage_kind: str | None = None,
    ) -> None:
        self.readonly = readonly
        self.skipped: builtins.list[str] = []
        """What the last :meth:`list` or run query skipped because it could not be read
        (damaged manifests or run documents), one message each: listing goes on, and
        ``strata ls`` reports them."""
        self.take_only = tuple([take_only] if isinstance(take_only, str) else take_only)
        self.exclude = tuple([exclude] if isinstance(exclude, str) else exclude)
        if storage_kind is not None:
            self.storage_kind = storage_kind

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "storage_kind":
            value = validate_storage_kind(value)
        super().__setattr__(name, value)

    @property
    def distance(self) -> int:
        """The distance of :attr:`storage_kind` (:data:`STORAGE_KINDS`): smaller is nearer."""
        return STORAGE_KINDS[self.storage_kind]

    # -- identity ---------------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        kind = self.storage_kind if self.storage_kind != self._default_storage_kind() else None
        return (_rebuild, (type(self), self._kwargs, kind))

    def _default_storage_kind(self) -> str:
        """The kind this frontend has unless one is given (the class's; subclasses may look
        at their URL).
        """
        return type(self).storage_kind

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StorageFrontend):
            return NotImplemented
        return (
            type(self) is type(other)
            and repr(self._kwargs) == repr(other._kwargs)
            and self.storage_kind == other.storage_kind
        )

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
        checked_absent: bool = False,
    ) -> Saver:
        """A Saver committing ``key`` here; ``ReadOnlyError`` if this frontend is read-only or
        does not take the data type, ``DataExistsError`` if it is stored and not overwritten.
        ``lost_race`` says what the saver does if another saver commits ``key`` first (see
        :class:`~strata.storage.commit.LostRace`). ``checked_absent=True`` says the caller has
        just found ``key`` not stored here (:meth:`find` raised ``DataNotAvailable``): the
        existence check is not made again (on an object store, a round trip less per save).
        """
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot save {key}")
        if not self.takes(key.data_type):
            raise ReadOnlyError(f"{self!r} does not take {key.data_type!r} (take_only/exclude)")
        name = self._backend_for_save(key)
        backend = self.backends[name]
        saver = backend.saver(
            backend.backend_key(key), key, dtype, metadata, overwrite, checked_absent=checked_absent
        )
        saver.lost_race = LostRace(lost_race)
        if type(self)._register is not StorageFrontend._register:
            saver.on_commit = (self, Location(name, backend.backend_key(key)))
        return saver

    def which_stored(
        self,
        keys: Sequence[DataKey],
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> builtins.list[bool]:
        """Per key, whether it is stored here (as :meth:`find_several`; catalogs that index
        saves may answer from the index alone, without reading the backends, as :meth:`list`
        does).
        """
        return [loc is not None for loc in self.find_several(keys, fuzzy_for, fuzzy_for_options)]

    def run_metadata(
        self, run_id: str, projection: str | Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The run-level metadata document of ``run_id`` (``DataNotAvailable`` if none).

        ``projection``: dotted paths (a string is one path) to return, nested as in the
        document (MongoDB's projection): ``projection=["calibration.gains"]`` gives
        ``{"calibration": {"gains": [...]}}``. Paths the document lacks are left out.
        """
        doc = self._read_run_metadata(validate_run_id(run_id))
        if projection is None:
            return doc
        return project(doc, as_patterns(projection, "projection"))

    def write_run_metadata(self, run_id: str, doc: dict[str, Any]) -> None:
        """Write (replace) the run-level metadata document of ``run_id``."""
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot write run metadata of {run_id!r}")
        if not isinstance(doc, dict):
            raise TypeError(f"run metadata must be a dict, got {type(doc).__name__}")
        self._write_run_metadata(validate_run_id(run_id), doc)

    def write_run_metadata_many(self, docs: Mapping[str, dict[str, Any]]) -> None:
        """Write (replace) the run documents of several runs, ``{run_id: document}``: an SQL
        catalog writes them in one transaction; others write one after the other.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot write run metadata")
        for run_id, doc in docs.items():
            if not isinstance(doc, dict):
                raise TypeError(
                    f"run metadata of {run_id!r} must be a dict, got {type(doc).__name__}"
                )
            validate_run_id(run_id)
        self._write_run_metadata_many(dict(docs))

    def _write_run_metadata_many(self, docs: dict[str, dict[str, Any]]) -> None:
        """Write validated run documents (default: one :meth:`_write_run_metadata` each)."""
        for run_id, doc in docs.items():
            self._write_run_metadata(run_id, doc)

    def list_runs(self) -> builtins.list[str]:
        """Run ids known here."""
        return self._list_runs()

    # -- run queries ------------------------------------------------------------------------
    def iter_run_documents(
        self, projection: Iterable[str] | None = None
    ) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """``(run_id, document)`` of every run known here, sorted by run id; the document is
        ``None`` for a run with stored data but no run document, and only the dotted paths of
        ``projection`` if given (see :meth:`run_metadata`). A damaged document is left out and
        named in :attr:`skipped`.
        """
        paths = None if projection is None else as_patterns(projection, "projection")
        if paths is not None:
            paths = tuple(validate_field_path(p) for p in paths)
        self.skipped = []
        for run_id, doc in self._iter_run_documents():
            yield run_id, doc if doc is None or paths is None else project(doc, paths)

    def _iter_run_documents(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Primitive of :meth:`iter_run_documents` (whole documents). The default reads the
        document of each run of :meth:`_list_runs`; catalogs override it to read in bulk.
        """
        for run_id in sorted(self._list_runs()):
            try:
                yield run_id, self._read_run_metadata(validate_run_id(run_id))
            except DataNotAvailable:
                yield run_id, None
            except DataCorrupted as e:
                logger.warning("run query: %s", e)
                self.skipped.append(str(e))

    def run_ids_with_documents(self) -> set[str]:
        """Run ids that have a run document here (not only stored data)."""
        return {r for r, doc in self._iter_run_documents() if doc is not None}

    def query_runs(self, query: RunQuery | None = None) -> builtins.list[RunRecord]:
        """The runs known here that ``query`` selects (all if ``None``), sorted by run id, with
        the fields it asks for. Runs with stored data but no run document are included (with
        ``has_metadata=False``) when the filters allow it. SQL catalogs evaluate the query in
        the database; damaged documents are left out and named in :attr:`skipped`.
        """
        query = RunQuery() if query is None else query
        if not isinstance(query, RunQuery):
            raise TypeError(f"expected a RunQuery, got {type(query).__name__}")
        self.skipped = []
        return self._query_runs(query)

    def _query_runs(self, query: RunQuery) -> builtins.list[RunRecord]:
        """Primitive of :meth:`query_runs`: the default filters :meth:`_iter_run_documents`."""
        out = []
        for run_id, doc in self._iter_run_documents():
            record = query.record(run_id, doc)
            if query.matches_record(record):
                out.append(record)
        return out

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
