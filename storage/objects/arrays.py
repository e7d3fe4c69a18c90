"""Committed array data types seen as stored objects, so object queries find them too.

When a save commits, its backend indexes a :class:`StoredArrayData` describing it; the object's
ancillary directory is the committed Zarr attempt group. A :class:`StoredArrayQuery` then finds,
for instance, every stored ``peaks`` of a run made with a given option value.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..keys import DataKey, canonical_json
from ..manifest import Manifest
from .base import BaseStoredData
from .query import BaseDataQuery, _same, freeze

__all__ = ["StoredArrayData", "StoredArrayQuery"]


class StoredArrayData(BaseStoredData, stored_name="strata.StoredArrayData"):
    """A committed data type: its key, lineage and a summary of its manifest.

    The identity is ``(run_id, data_type, lineage_hash)``: a save with ``overwrite=True``
    replaces the object of the data it replaced.
    """

    identity_fields = ("run_id", "data_type", "lineage_hash")
    index_fields = ("run_id", "data_type")

    run_id: str
    data_type: str
    lineage_hash: str
    lineage: dict[str, list[Any]]
    plugin: str | None = None
    version: str | None = None
    backend_key: str
    attempt: str
    rows: int
    nbytes: int
    start: int | None = None
    end: int | None = None
    partitions: int
    dtype: list[list[Any]]
    metadata: dict[str, Any] = Field(default_factory=dict)
    writing_started: str = ""
    writing_ended: str = ""
    strata_version: str = ""

    @property
    def key(self) -> DataKey:
        """The :class:`~strata.storage.keys.DataKey` of the stored data."""
        return DataKey(self.run_id, self.data_type, self.lineage)

    @classmethod
    def from_manifest(cls, manifest: Manifest, backend_key: str) -> StoredArrayData:
        """The object describing committed ``manifest`` at ``backend_key``."""
        key = manifest.key
        own = key.lineage.get(key.data_type)
        return cls(
            run_id=key.run_id,
            data_type=key.data_type,
            lineage_hash=key.lineage_hash,
            lineage=key.lineage,
            plugin=own[0] if own else None,
            version=(own[1] if isinstance(own[1], str) else canonical_json(own[1]))
            if own
            else None,
            backend_key=backend_key,
            attempt=manifest.attempt,
            rows=manifest.rows,
            nbytes=manifest.nbytes,
            start=manifest.start,
            end=manifest.end,
            partitions=len(manifest.partitions),
            dtype=manifest.dtype,
            metadata=manifest.metadata,
            writing_started=manifest.writing_started,
            writing_ended=manifest.writing_ended,
            strata_version=manifest.strata_version,
        )

    @classmethod
    def example(cls) -> StoredArrayData:
        """A small example object (for documentation and tests)."""
        lineage = {
            "peaks": ["Peaks", "0.2", {"threshold": 3}],
            "records": ["Records", "0.1", {"gain_model": "run_doc"}],
        }
        key = DataKey("run_1", "peaks", lineage)
        return cls(
            run_id="run_1",
            data_type="peaks",
            lineage_hash=key.lineage_hash,
            lineage=key.lineage,
            plugin="Peaks",
            version="0.2",
            backend_key=f"run_1/{key.name}",
            attempt="a20260101T000000000000Z_000000000000",
            rows=10,
            nbytes=1000,
            start=0,
            end=100,
            partitions=1,
            dtype=[["time", "<i8", []]],
        )


def option_values(lineage: dict[str, list[Any]], option: str) -> list[Any]:
    """Values of ``option`` in every lineage entry that has it."""
    return [entry[2][option] for entry in lineage.values() if option in entry[2]]


class StoredArrayQuery(BaseDataQuery):
    """Finds committed array data types.

    Fields other than ``options`` must equal the stored attribute. ``options`` maps option
    names to values: each named option must occur in the lineage (in the data type's own
    entry or a dependency's) and have that value wherever it occurs.
    """

    run_id: str | None = None
    data_type: str | None = None
    lineage_hash: str | None = None
    plugin: str | None = None
    version: str | None = None
    options: dict[str, Any] | None = None

    @classmethod
    def data_class(cls) -> type[BaseStoredData]:
        """:class:`StoredArrayData`."""
        return StoredArrayData

    def equality_constraints(self) -> dict[str, Any]:
        """All set fields but ``options``."""
        out = self.set_fields()
        out.pop("options", None)
        return out

    def apply(self, obj: BaseStoredData) -> tuple[Any, ...] | None:
        """The matched values (``options`` as a sorted tuple of items) or ``None``."""
        if not isinstance(obj, StoredArrayData):
            return None
        out = []
        for name, want in self.set_fields().items():
            if name == "options":
                for opt, value in want.items():
                    found = option_values(obj.lineage, opt)
                    if not found or not all(_same(v, value) for v in found):
                        return None
                out.append(freeze(want))
                continue
            have = getattr(obj, name)
            if not _same(have, want):
                return None
            out.append(freeze(have))
        return tuple(out)
