"""Stored objects: typed JSON documents with an optional directory of ancillary files.

A stored object is a pydantic model deriving from :class:`BaseStoredData`. Every subclass
registers itself, when it is defined, under a *stored name* (its class name unless given with
``class Foo(BaseStoredData, stored_name="pkg.Foo")``). A stored document names its class by
that name only; reading it looks the name up in the registry and never imports anything named
by the stored data.

>>> class Calibration(BaseStoredData, stored_name="doctest.Calibration"):
...     run_id: str
...     gain: float
>>> doc = Calibration(run_id="run_1", gain=2.5).to_document("k")
>>> from_document(doc).gain
2.5
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import logging
import re
import threading
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from ..errors import DataCorrupted, InvalidKey, StorageError
from ..jsonio import load_document
from ..keys import canonical_json, validate_name

if TYPE_CHECKING:
    from .query import BaseDataQuery

__all__ = [
    "FORMAT",
    "BaseStoredData",
    "InvalidObject",
    "ReplaceableData",
    "UnknownObjectClass",
    "document_bytes",
    "from_document",
    "key_for_identity",
    "object_key",
    "parse_document",
    "registered_classes",
    "stored_class",
    "subclasses_of",
    "validate_object_key",
]

logger = logging.getLogger(__name__)

FORMAT = "strata.object.v1"
KEY_LENGTH = 32
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")

_REGISTRY: dict[str, type[BaseStoredData]] = {}
_REGISTRY_LOCK = threading.Lock()

T = TypeVar("T", bound="BaseStoredData")


class InvalidObject(StorageError, ValueError):
    """An object fails validation or cannot be serialised to JSON; nothing was stored."""


class UnknownObjectClass(StorageError, LookupError):
    """A stored document names a class that is not registered in this process."""


def validate_object_key(key: object) -> str:
    """Return ``key`` if it is a valid stored-object key, else raise ``InvalidKey``.

    A key is 1 to 128 letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit
    and never containing ``..``: it is always a single, safe path component.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a string, got {key!r} ({type(key).__name__})")
    if not _KEY_RE.match(key) or ".." in key:
        raise InvalidKey(
            f"invalid object key {key!r}: 1-128 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (no '/', '\\', '..', whitespace)"
        )
    return key


def _check_identity(cls: type[BaseStoredData]) -> None:
    """Refuse, when it is defined, a class whose objects could never be replaced or found as
    the class means: a concrete :class:`ReplaceableData` with neither ``identity_fields`` nor
    :meth:`~BaseStoredData.to_storage_query` (every field would be identity, so a better
    version is never "the same" object), or a class with both.
    """
    if cls.uses_storage_query() and cls.identity_fields is not None:
        raise TypeError(
            f"{cls.__qualname__} has identity_fields {cls.identity_fields} and defines "
            "to_storage_query(): say which object this is one way, not both (set "
            "identity_fields = None, or drop to_storage_query)"
        )
    replaceable = globals().get("ReplaceableData")
    if (
        replaceable is not None
        and issubclass(cls, replaceable)
        and not inspect.isabstract(cls)
        and cls.identity_fields is None
        and not cls.uses_storage_query()
    ):
        raise TypeError(
            f"{cls.__qualname__} is ReplaceableData without identity_fields: every field "
            "would say which object it is, so a version with more information could never "
            "replace the stored one. Set identity_fields = (the names of the fields that say "
            "which object this is, e.g. ('substance', 'temperature')), or define "
            "to_storage_query() returning the query that finds it"
        )


class BaseStoredData(BaseModel):
    """Base class of stored objects: a validated pydantic model serialised to JSON.

    Fields are annotated class attributes. Class-level settings:

    ``identity_fields``
        Names of the fields that say which object this is. ``None`` (the default) means all
        fields: only an identical object is "the same". Two objects with equal identity get the
        same key; storing the second returns the first key (and, for
        :class:`ReplaceableData`, keeps the one with most information).
    :meth:`to_storage_query`
        Instead of ``identity_fields`` (not both), as openff-evaluator decides "the same
        object": the query that finds this object. Objects whose queries set the same values
        are the same object.
    ``index_fields``
        Fields, in order, that a backend's object index is partitioned by, so that a query
        fixing them reads only that part of the index (e.g. ``("run_id", "data_type")``).

    Subclasses register under their class name, or ``stored_name=`` given as a class keyword.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    identity_fields: ClassVar[tuple[str, ...] | None] = None
    index_fields: ClassVar[tuple[str, ...]] = ()
    stored_name: ClassVar[str] = "BaseStoredData"
    internal: ClassVar[bool] = False

    def __init_subclass__(cls, *, stored_name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = kwargs.get("stored_name") or cls.__name__
        validate_name(name, "stored class name")
        for what in ("identity_fields", "index_fields"):
            names = getattr(cls, what)
            unknown = [f for f in names or () if f not in cls.model_fields]
            if unknown:
                raise TypeError(f"{cls.__qualname__}.{what} names unknown field(s) {unknown}")
        _check_identity(cls)
        cls.stored_name = name
        with _REGISTRY_LOCK:
            old = _REGISTRY.get(name)
            if (
                old is not None
                and old is not cls
                and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__)
            ):
                raise TypeError(
                    f"stored class name {name!r} is already registered by "
                    f"{old.__module__}.{old.__qualname__}; give {cls.__qualname__} another "
                    f"name with `class {cls.__name__}(..., stored_name='...')`"
                )
            _REGISTRY[name] = cls  # a redefinition (module reload) replaces the old class

    # -- identity ---------------------------------------------------------------------------
    def json_data(self) -> dict[str, Any]:
        """The fields as plain JSON values (validated again: raises :class:`InvalidObject`)."""
        try:
            data = self.model_dump(mode="json", warnings=False)
            # A model built with model_construct or mutated around validate_assignment is
            # checked here, before anything is written.
            type(self).model_validate(data)
            json.dumps(data, allow_nan=False)
        except pydantic.ValidationError as e:
            raise InvalidObject(f"{type(self).__name__} fails validation: {e}") from e
        except (ValueError, TypeError) as e:
            raise InvalidObject(
                f"{type(self).__name__} cannot be stored as JSON (no NaN, infinity or "
                f"non-JSON values): {e}"
            ) from e
        return data

    def to_storage_query(self) -> BaseDataQuery | None:
        """The query that finds this object in a store (openff-evaluator's matching), or
        ``None`` (the default): then ``identity_fields`` say which object this is.

        A class that defines it gives up ``identity_fields``: two of its objects are the same
        when their queries set the same fields to the same values (the query must find the
        object it was made from).
        """
        return None

    @classmethod
    def uses_storage_query(cls) -> bool:
        """Whether the class defines :meth:`to_storage_query` (its identity is its query)."""
        return cls.to_storage_query is not BaseStoredData.to_storage_query

    def identity(self) -> dict[str, Any]:
        """The values that say which object this is (see ``identity_fields`` and
        :meth:`to_storage_query`).
        """
        data = self.json_data()
        if type(self).uses_storage_query():
            return {"storage_query": self._query_identity()}
        fields = type(self).identity_fields
        return data if fields is None else {f: data[f] for f in fields}

    def _query_identity(self) -> dict[str, Any]:
        from .query import BaseDataQuery

        query = self.to_storage_query()
        name = type(self).__name__
        if not isinstance(query, BaseDataQuery):
            raise InvalidObject(
                f"{name}.to_storage_query() must return a BaseDataQuery, got {query!r}"
            )
        if query.apply(self) is None:
            raise InvalidObject(
                f"{name}.to_storage_query() returned {query!r}, which does not match the "
                "object itself: it must find the object it describes"
            )
        dumped = query.model_dump(mode="json")
        return {
            "query": type(query).__name__,
            "values": {f: dumped[f] for f in query.set_fields()},
        }

    def to_document(self, key: str, ancillary: str | None = None) -> dict[str, Any]:
        """The stored JSON document of this object under ``key``."""
        body = {
            "format": FORMAT,
            "class": type(self).stored_name,
            "key": validate_object_key(key),
            "data": self.json_data(),
            "ancillary": ancillary,
        }
        body["checksum"] = _checksum(body)
        return body

    @classmethod
    def has_ancillary_data(cls) -> bool:
        """Whether objects of this class need an ancillary directory (default: no)."""
        return False


class ReplaceableData(BaseStoredData, stored_name="strata.ReplaceableData"):
    """Stored data of which a better version may replace the stored one (more samples, ...).

    Subclasses set ``identity_fields`` and implement :meth:`most_information`. Storing an
    object whose identity is already stored keeps whichever of the two has most information;
    on a tie the stored one is kept and its ancillary files are never touched.
    """

    @classmethod
    @abstractmethod
    def most_information(cls, stored: ReplaceableData, other: ReplaceableData) -> ReplaceableData:
        """Return whichever of ``stored`` and ``other`` holds more information; on a tie,
        return ``stored``.
        """


def object_key(obj: BaseStoredData) -> str:
    """The deterministic key of ``obj``: a hash of its stored class name and identity.

    Objects with equal identity have equal keys in every process and machine, so two writers
    storing the same object meet at one key.
    """
    return key_for_identity(type(obj).stored_name, obj.identity())


def key_for_identity(stored_name: str, identity: dict[str, Any]) -> str:
    """The key of an object of class ``stored_name`` with these identity values."""
    ident = {"class": stored_name, "identity": identity}
    digest = hashlib.sha256(canonical_json(ident).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:KEY_LENGTH]


def registered_classes() -> dict[str, type[BaseStoredData]]:
    """A copy of the registry: stored name -> class."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def stored_class(name: str) -> type[BaseStoredData]:
    """The class registered as ``name``; :class:`UnknownObjectClass` if there is none."""
    with _REGISTRY_LOCK:
        cls = _REGISTRY.get(name)
    if cls is None:
        raise UnknownObjectClass(
            f"stored object class {name!r} is not registered in this process; import the "
            "module that defines it (classes are never imported from stored data)"
        )
    return cls


def subclasses_of(cls: type[BaseStoredData]) -> list[type[BaseStoredData]]:
    """Registered classes that are ``cls`` or derive from it (internal classes left out)."""
    return [
        c for _, c in sorted(registered_classes().items()) if issubclass(c, cls) and not c.internal
    ]


def _checksum(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()


def document_bytes(doc: dict[str, Any]) -> bytes:
    """The bytes written for a document."""
    return json.dumps(doc, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()


def parse_document(raw: bytes, where: str) -> dict[str, Any]:
    """Parse and verify a stored document; ``DataCorrupted`` naming ``where`` if it is bad."""
    doc = load_document(raw, f"stored object {where}")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataCorrupted(f"stored object {where} is not a {FORMAT} document")
    body = dict(doc)
    stored = body.pop("checksum", None)
    if stored != _checksum(body):
        raise DataCorrupted(f"stored object {where} fails its checksum: it was edited or damaged")
    return doc


def from_document(
    doc: dict[str, Any], expected_type: type[T] | None = None, where: str = ""
) -> BaseStoredData:
    """Rebuild the object of a parsed document, by its registered class name.

    Raises :class:`UnknownObjectClass` for a class not registered here, ``TypeError`` if the
    class is not ``expected_type`` or a subclass of it, and ``DataCorrupted`` if the stored
    fields fail validation.
    """
    cls = stored_class(str(doc.get("class")))
    if expected_type is not None and not issubclass(cls, expected_type):
        raise TypeError(
            f"stored object {where or doc.get('key')} is a {cls.__name__}, "
            f"not a {expected_type.__name__}"
        )
    try:
        return cls.model_validate(doc["data"])
    except (pydantic.ValidationError, KeyError) as e:
        raise DataCorrupted(
            f"stored object {where or doc.get('key')} does not validate as {cls.__name__}: {e}"
        ) from e
