"""The manifest: the one document that makes a save visible.

A key is committed exactly when its ``manifest.json`` exists. The manifest names the attempt
(the Zarr group) whose segments it commits and says how to read every array without listing
anything or reading any Zarr metadata: dtype, codecs, chunking, and the partition table. It
carries a sha256 of its own canonical content, so a truncated or edited manifest is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataCorrupted
from .keys import DataKey, canonical_json
from .records import dtype_from_json

__all__ = ["FORMAT", "Manifest", "Partition", "Segment", "now_iso"]

FORMAT = "strata.manifest.v1"


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Partition:
    """One row of the partition table: ``[start, end)``, where its rows live, and its size."""

    start: int
    end: int
    rows: int
    nbytes: int
    segment: str | None  # None for an empty partition
    offset: int  # first row within the segment

    def to_json(self) -> list[Any]:
        """Compact JSON row."""
        return [self.start, self.end, self.rows, self.nbytes, self.segment, self.offset]

    @classmethod
    def from_json(cls, row: list[Any]) -> Partition:
        """Inverse of :meth:`to_json`."""
        start, end, rows, nbytes, segment, offset = row
        return cls(int(start), int(end), int(rows), int(nbytes), segment, int(offset))


@dataclass(frozen=True)
class Segment:
    """A Zarr group of one array per field, written by exactly one task."""

    name: str
    rows: int
    chunk_rows: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "rows": self.rows, "chunk_rows": self.chunk_rows}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        """Inverse of :meth:`to_json`."""
        return cls(str(d["name"]), int(d["rows"]), {k: int(v) for k, v in d["chunk_rows"].items()})


@dataclass(frozen=True)
class Manifest:
    """Everything needed to read one committed data type."""

    key: DataKey
    dtype: list[list[Any]]  # records.dtype_to_json
    arrays: dict[str, dict[str, Any]]  # per field: Zarr v3 metadata less shape and chunks
    attempt: str
    partitions: list[Partition]
    segments: list[Segment]
    writing_started: str
    writing_ended: str
    metadata: dict[str, Any] = field(default_factory=dict)
    strata_version: str = ""

    @property
    def np_dtype(self) -> np.dtype[Any]:
        """The record dtype."""
        return dtype_from_json(self.dtype)

    @property
    def rows(self) -> int:
        """Total number of records."""
        return sum(p.rows for p in self.partitions)

    @property
    def nbytes(self) -> int:
        """Total uncompressed bytes."""
        return sum(p.nbytes for p in self.partitions)

    @property
    def start(self) -> int | None:
        """Start of the first partition."""
        return self.partitions[0].start if self.partitions else None

    @property
    def end(self) -> int | None:
        """End of the last partition."""
        return self.partitions[-1].end if self.partitions else None

    def segment(self, name: str) -> Segment:
        """The segment called ``name``."""
        for s in self.segments:
            if s.name == name:
                return s
        raise DataCorrupted(f"manifest of {self.key} names unknown segment {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with its checksum."""
        body = {
            "format": FORMAT,
            "key": self.key.to_dict(),
            "lineage_hash": self.key.lineage_hash,
            "dtype": self.dtype,
            "arrays": self.arrays,
            "attempt": self.attempt,
            "partitions": [p.to_json() for p in self.partitions],
            "segments": [s.to_json() for s in self.segments],
            "rows": self.rows,
            "nbytes": self.nbytes,
            "writing_started": self.writing_started,
            "writing_ended": self.writing_ended,
            "metadata": self.metadata,
            "strata_version": self.strata_version,
        }
        body["checksum"] = _checksum(body)
        return body

    def to_bytes(self) -> bytes:
        """Pretty JSON bytes, ready to write."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        """Parse and verify a manifest; raise ``DataCorrupted`` naming ``where`` if it is bad."""
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise DataCorrupted(
                f"manifest {where} is not valid JSON (truncated or damaged: {e}); "
                "remove the key and save again"
            ) from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataCorrupted(f"manifest {where} is not a {FORMAT} document")
        stored = d.pop("checksum", None)
        if stored != _checksum(d):
            raise DataCorrupted(
                f"manifest {where} fails its checksum: it was edited or damaged after commit"
            )
        try:
            key = DataKey.from_dict(d["key"])
            m = cls(
                key=key,
                dtype=d["dtype"],
                arrays=d["arrays"],
                attempt=str(d["attempt"]),
                partitions=[Partition.from_json(p) for p in d["partitions"]],
                segments=[Segment.from_json(s) for s in d["segments"]],
                writing_started=d["writing_started"],
                writing_ended=d["writing_ended"],
                metadata=d.get("metadata") or {},
                strata_version=d.get("strata_version", ""),
            )
            m.np_dtype  # noqa: B018 - validates the dtype description
        except (KeyError, TypeError, ValueError) as e:
            raise DataCorrupted(f"manifest {where} is malformed: {e!r}") from e
        if d.get("lineage_hash") != key.lineage_hash:
            raise DataCorrupted(f"manifest {where}: lineage hash does not match its lineage")
        return m


def _checksum(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()
