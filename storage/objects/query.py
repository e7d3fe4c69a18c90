"""Queries over stored objects (the openff-evaluator contract).

A query is a pydantic model deriving from :class:`BaseDataQuery` that names the class it looks
for with :meth:`BaseDataQuery.data_class`. Its fields left as ``None`` match anything; the
others must equal the attribute of the same name. :meth:`BaseDataQuery.apply` returns the
tuple of matched values (which groups the results of ``query()``) or ``None``.

>>> from storage.objects.arrays import StoredArrayData, StoredArrayQuery
>>> obj = StoredArrayData.example()
>>> StoredArrayQuery(run_id="run_1").apply(obj)
('run_1',)
>>> StoredArrayQuery(run_id="run_2").apply(obj) is None
True
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..keys import canonical_json
from .base import BaseStoredData

__all__ = ["BaseDataQuery", "freeze"]


def freeze(value: Any) -> Any:
    """A hashable form of a JSON-like value (lists to tuples, dicts to sorted item tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, BaseModel):
        return freeze(value.model_dump(mode="json"))
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, BaseModel):
        a = a.model_dump(mode="json")
    if isinstance(b, BaseModel):
        b = b.model_dump(mode="json")
    if a == b:
        return True
    try:
        return canonical_json(a) == canonical_json(b)
    except (ValueError, TypeError):
        return False


class BaseDataQuery(BaseModel):
    """Base class of queries: every field set (not ``None``) must match the stored object.

    Subclasses declare fields named like attributes of :meth:`data_class`. A query for a base
    class also finds objects of its registered subclasses.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    @abstractmethod
    def data_class(cls) -> type[BaseStoredData]:
        """The class of stored objects this query looks for."""

    def set_fields(self) -> dict[str, Any]:
        """The fields that constrain the query (those not ``None``), in declaration order."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if getattr(self, name) is not None
        }

    def equality_constraints(self) -> dict[str, Any]:
        """Attribute values a match must equal exactly.

        Backends use them to read only part of their index. A subclass whose :meth:`apply`
        matches some field otherwise than by equality leaves that field out here.
        """
        return self.set_fields()

    def apply(self, obj: BaseStoredData) -> tuple[Any, ...] | None:
        """The tuple of matched values if ``obj`` matches, else ``None``."""
        if not isinstance(obj, self.data_class()):
            return None
        out = []
        for name, want in self.set_fields().items():
            have = getattr(obj, name, _MISSING)
            if have is _MISSING or not _same(have, want):
                return None
            out.append(freeze(have))
        return tuple(out)


_MISSING = object()
