"""The storage layout: every path and name of strata's format, built and parsed in one place.

Under the root of a store (a local directory, an S3 prefix, an SSH path)::

    runs/<run_id>.json                                 run-level metadata
    data/<run_id>/<data_type>-<hash>/zarr.json         written last: the commit (a Zarr group)
    data/<run_id>/<data_type>-<hash>/<attempt>/        the Zarr v3 group of one save attempt
        strata.lease                                   marker: not (yet) committed; gc reads it
        strata.superseded                              marker: an overwrite replaced it
        <segment>/<field>                              one array per field

The key's ``zarr.json`` is the commit: a Zarr v3 group created exclusively, last, whose
``attributes.strata`` is the manifest (:mod:`strata.storage.manifest`) and whose consolidated
metadata lists exactly the committed attempt, its segments and their arrays. A Zarr reader
that opens the key therefore sees the committed data only; attempts of failed, running or
superseded saves sit beside it as folders no commit names, each with a marker file (the lease
of a save that has not committed, removed once it commits; ``strata.superseded`` once an
overwrite replaced it). Keys committed before format v3 have ``manifest.json`` instead.
    objects/<key>.json                                 a stored object's document
    objects/<key>/<object attempt>/...                 its ancillary files
    objects/_index/<class>/<v1>/.../<key>.json         index entries of stored objects

Temporary files of atomic writes are ``<name>.<32 hex>.tmp`` beside the file they become.

Every name that goes into a path is checked against its grammar here (:func:`check_attempt`,
:func:`check_segment`, :func:`check_field`, ...), including names read back from manifests and
documents, which are never trusted: a bad one raises :class:`~strata.storage.errors.DataCorrupted`
(read from storage) or :class:`~strata.storage.errors.InvalidKey` (given by a caller).
:class:`Layout` then joins checked names below its root, so no path it builds can leave the root.

>>> lay = Layout("/data/strata")
>>> lay.commit("run_1/peaks-abcdefghijkl")
'/data/strata/data/run_1/peaks-abcdefghijkl/zarr.json'
>>> parse_backend_key("run_1/peaks-abcdefghijkl")
('run_1', 'peaks', 'abcdefghijkl')
>>> is_attempt("a20260101T000000000000Z_0123456789ab")
True
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from typing import TYPE_CHECKING

from .errors import DataCorrupted, InvalidKey, StorageError
from .keys import validate_data_type, validate_run_id

if TYPE_CHECKING:
    from .keys import DataKey

__all__ = [
    "DATA",
    "COMMIT",
    "INDEX",
    "LEASE",
    "MANIFEST",
    "SUPERSEDED",
    "OBJECTS",
    "RUNS",
    "Layout",
    "attempt_started",
    "backend_key",
    "check_attempt",
    "check_field",
    "check_object_attempt",
    "check_segment",
    "is_attempt",
    "is_object_attempt",
    "is_temp_file",
    "new_attempt",
    "new_object_attempt",
    "parse_backend_key",
    "segment_name",
    "temp_name",
]

DATA = "data"
RUNS = "runs"
OBJECTS = "objects"
INDEX = "_index"
COMMIT = "zarr.json"
MANIFEST = "manifest.json"
"""The commit of keys written before format v3 (still read)."""
LEASE = "strata.lease"
SUPERSEDED = "strata.superseded"
RUN_SUFFIX = ".json"

_TS = r"(\d{8}T\d{12})Z_[0-9a-f]{12}"
_ATTEMPT_RE = re.compile(rf"^a{_TS}\Z")
_OBJECT_ATTEMPT_RE = re.compile(rf"^o{_TS}\Z")
_SEGMENT_RE = re.compile(r"^s\d{6,9}\Z")
_HASH_RE = re.compile(r"^[a-z2-7]{8,64}\Z")
_TEMP_RE = re.compile(r"^.+\.[0-9a-f]{32}\.tmp\Z")
_FIELD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,63}\Z")
_TS_FORMAT = "%Y%m%dT%H%M%S%f"

# Names a field may not have: they are Zarr's own ("zarr.json", "c" holds chunks) or would
# hide in listings.
_RESERVED_FIELDS = frozenset({"zarr.json", "c", "manifest.json", LEASE, SUPERSEDED})


# -- names ------------------------------------------------------------------------------------
def _timestamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime(_TS_FORMAT)


def new_attempt() -> str:
    """A fresh attempt name, ``a<UTC time>Z_<12 hex>``: unique, and sorted by start time."""
    return f"a{_timestamp()}Z_{uuid.uuid4().hex[:12]}"


def new_object_attempt() -> str:
    """A fresh name for a stored object's ancillary directory, ``o<UTC time>Z_<12 hex>``."""
    return f"o{_timestamp()}Z_{uuid.uuid4().hex[:12]}"


def temp_name(name: str) -> str:
    """The name of a temporary file that becomes ``name`` (``<name>.<32 hex>.tmp``)."""
    return f"{name}.{uuid.uuid4().hex}.tmp"


def is_attempt(name: object) -> bool:
    """Whether ``name`` is an attempt name."""
    return isinstance(name, str) and bool(_ATTEMPT_RE.match(name))


def is_object_attempt(name: object) -> bool:
    """Whether ``name`` is the name of a stored object's ancillary directory."""
    return isinstance(name, str) and bool(_OBJECT_ATTEMPT_RE.match(name))


def is_temp_file(name: object) -> bool:
    """Whether ``name`` is the name of one of strata's temporary files."""
    return isinstance(name, str) and bool(_TEMP_RE.match(name))


def attempt_started(name: str) -> _dt.datetime | None:
    """When the attempt (or object attempt) ``name`` was created, from its name."""
    m = _ATTEMPT_RE.match(name) or _OBJECT_ATTEMPT_RE.match(name)
    if m is None:
        return None
    return _dt.datetime.strptime(m.group(1), _TS_FORMAT).replace(tzinfo=_dt.UTC)


def _check(value: object, ok: bool, what: str, rule: str, where: str | None) -> str:
    if ok and isinstance(value, str):
        return value
    if where is None:
        raise InvalidKey(f"invalid {what} {value!r}: {rule}")
    raise DataCorrupted(f"{where} names an invalid {what} {value!r} ({rule}); not reading it")


def check_attempt(name: object, where: str | None = None) -> str:
    """``name`` if it is an attempt name; else ``DataCorrupted`` naming ``where`` (a document
    it was read from) or, without ``where``, ``InvalidKey``.
    """
    return _check(name, is_attempt(name), "attempt", "a<UTC time>Z_<12 hex>", where)


def check_object_attempt(name: object, where: str | None = None) -> str:
    """As :func:`check_attempt`, for a stored object's ancillary directory."""
    return _check(name, is_object_attempt(name), "object attempt", "o<UTC time>Z_<12 hex>", where)


def segment_name(index: int) -> str:
    """The name of the segment that starts at partition ``index``."""
    if not 0 <= index < 10**9:
        raise InvalidKey(f"segment index {index} is out of range [0, 10**9)")
    return f"s{index:06d}"


def check_segment(name: object, where: str | None = None) -> str:
    """``name`` if it is a segment name (``s`` and 6 to 9 digits); see :func:`check_attempt`."""
    ok = isinstance(name, str) and bool(_SEGMENT_RE.match(name))
    return _check(name, ok, "segment", "'s' and 6 to 9 digits", where)


def check_field(name: object, where: str | None = None) -> str:
    """``name`` if a field of that name can be stored as an array; see :func:`check_attempt`.

    The rule: 1 to 64 letters, digits, ``_`` and ``.``, starting with a letter or digit, no
    ``..``, and none of Zarr's own names (``zarr.json``, ``c``).
    """
    ok = (
        isinstance(name, str)
        and bool(_FIELD_RE.match(name))
        and ".." not in name
        and name not in _RESERVED_FIELDS
    )
    return _check(
        name,
        ok,
        "field name",
        "1 to 64 letters, digits, '_' or '.', starting with a letter or digit, no '..', "
        "not 'zarr.json' or 'c'",
        where,
    )


def backend_key(key: DataKey) -> str:
    """``<run_id>/<data_type>-<lineage hash>``: where ``key`` lives below ``data/``."""
    return f"{key.run_id}/{key.name}"


def parse_backend_key(bk: object) -> tuple[str, str, str]:
    """Split and validate a backend key into ``(run_id, data_type, lineage_hash)``."""
    if not isinstance(bk, str) or bk.count("/") != 1:
        raise InvalidKey(f"backend key {bk!r} is not '<run_id>/<data_type>-<hash>'")
    run_id, name = bk.split("/")
    validate_run_id(run_id)
    data_type, sep, h = name.rpartition("-")
    if not sep or not _HASH_RE.match(h):
        raise InvalidKey(f"backend key {bk!r} is not '<run_id>/<data_type>-<hash>'")
    validate_data_type(data_type)
    return run_id, data_type, h


def _check_component(part: str) -> str:
    if (
        not isinstance(part, str)
        or not part
        or part in (".", "..")
        or "/" in part
        or "\\" in part
        or "\x00" in part
        or part.startswith("~")
    ):
        raise StorageError(f"refusing to build a path from the component {part!r}")
    return part


# -- paths ------------------------------------------------------------------------------------
class Layout:
    """Paths of one store, below ``root`` (a path of the store's filesystem, ``/``-separated).

    Methods return filesystem paths (``root/...``); :meth:`rel` gives the same path relative to
    the root, which is also the key of that node in a Zarr store rooted there. Every component
    is checked: the result always lies below the root.
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") if root not in ("/", "") else root

    def __repr__(self) -> str:
        return f"Layout({self.root!r})"

    def path(self, *parts: str) -> str:
        """``root/part/...`` after checking that no part can leave the root."""
        for part in parts:
            for p in part.split("/"):
                _check_component(p)
        if not parts:
            return self.root
        base = self.root.rstrip("/")
        return "/".join([base, *parts]) if base else "/" + "/".join(parts)

    def rel(self, path: str) -> str:
        """``path`` relative to the root (``DataCorrupted`` if it is not below it)."""
        base = self.root.rstrip("/")
        if path == base:
            return ""
        if not path.startswith(base + "/"):
            raise StorageError(f"{path!r} is not below the store root {self.root!r}")
        rel = path[len(base) + 1 :]
        for p in rel.split("/"):
            _check_component(p)
        return rel

    def check_local(self, path: str) -> str:
        """``path`` if, with every symbolic link resolved, it still lies below the root (for
        stores on a local file system); else ``StorageError``: a link must not lead strata to
        read or delete outside the store.
        """
        import os

        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise StorageError(
                f"{path!r} leads outside the store root {self.root!r} (to {real!r}, through a "
                "symbolic link); strata neither reads nor deletes there"
            )
        if os.path.islink(path):
            raise StorageError(f"{path!r} is a symbolic link; strata does not follow it")
        return path

    # data
    def data_dir(self) -> str:
        """``data/``: the data of every run."""
        return self.path(DATA)

    def run_dir(self, run_id: str) -> str:
        """``data/<run_id>/``."""
        return self.path(DATA, validate_run_id(run_id))

    def key_dir(self, bk: str) -> str:
        """``data/<run_id>/<data_type>-<hash>/``: everything of one key."""
        parse_backend_key(bk)
        return self.path(DATA, bk)

    def commit(self, bk: str) -> str:
        """The commit document of a key: its Zarr group's ``zarr.json``."""
        return f"{self.key_dir(bk)}/{COMMIT}"

    def legacy_manifest(self, bk: str) -> str:
        """The ``manifest.json`` of a key committed before format v3."""
        return f"{self.key_dir(bk)}/{MANIFEST}"

    def attempt_prefix(self, bk: str, attempt: str, where: str | None = None) -> str:
        """The Zarr-store key (relative to the root) of an attempt group."""
        parse_backend_key(bk)
        return f"{DATA}/{bk}/{check_attempt(attempt, where)}"

    def attempt_dir(self, bk: str, attempt: str, where: str | None = None) -> str:
        """The directory of one save attempt of a key."""
        return self.path(self.attempt_prefix(bk, attempt, where))

    def lease(self, bk: str, attempt: str) -> str:
        """The lease of a save attempt (its writer renews it; gc reads its age)."""
        return f"{self.attempt_dir(bk, attempt)}/{LEASE}"

    def superseded(self, bk: str, attempt: str) -> str:
        """The marker an overwrite leaves in the attempt it replaced."""
        return f"{self.attempt_dir(bk, attempt)}/{SUPERSEDED}"

    def segment_prefix(self, bk: str, attempt: str, segment: str, where: str | None = None) -> str:
        """The Zarr-store key of a segment group."""
        return f"{self.attempt_prefix(bk, attempt, where)}/{check_segment(segment, where)}"

    def array_prefix(
        self, bk: str, attempt: str, segment: str, field: str, where: str | None = None
    ) -> str:
        """The Zarr-store key of one field's array in a segment."""
        seg = self.segment_prefix(bk, attempt, segment, where)
        return f"{seg}/{check_field(field, where)}"

    # runs
    def runs_dir(self) -> str:
        """``runs/``: run documents."""
        return self.path(RUNS)

    def run_document(self, run_id: str) -> str:
        """``runs/<run_id>.json``."""
        return self.path(RUNS, f"{validate_run_id(run_id)}{RUN_SUFFIX}")

    @staticmethod
    def run_id_of_document(name: str) -> str | None:
        """The run id a file name in ``runs/`` is the document of, or ``None``."""
        if not name.endswith(RUN_SUFFIX) or is_temp_file(name):
            return None
        try:
            return validate_run_id(name[: -len(RUN_SUFFIX)])
        except InvalidKey:
            return None

    # objects
    def objects_dir(self) -> str:
        """``objects/``."""
        return self.path(OBJECTS)

    def object_document(self, key: str) -> str:
        """``objects/<key>.json`` (``key`` must already be validated as an object key)."""
        return self.path(OBJECTS, f"{key}.json")

    def object_dir(self, key: str) -> str:
        """``objects/<key>/``: the ancillary directories of one object."""
        return self.path(OBJECTS, key)

    def object_attempt_rel(self, key: str, attempt: str, where: str | None = None) -> str:
        """``objects/<key>/<object attempt>`` relative to the root."""
        _check_component(key)
        return f"{OBJECTS}/{key}/{check_object_attempt(attempt, where)}"

    def index_dir(self, *parts: str) -> str:
        """``objects/_index/<class>/<values>...``."""
        return self.path(OBJECTS, INDEX, *parts)
