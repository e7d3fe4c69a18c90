"""The manifest: the one document that makes a save visible.

A key is committed exactly when its ``manifest.json`` exists. The manifest names the attempt
(the Zarr group) whose segments it commits and says how to read every array without listing
anything or reading any Zarr metadata: dtype, codecs, chunking, and the partition table. It
carries a sha256 of its own canonical content, so a truncated or edited manifest is refused.

Committed means complete: the manifest lists every object of the commit with its size and
crc32c (:class:`Digest`) — each chunk of each array of each segment, in chunk order, and the
``zarr.json`` documents — so a reader checks every chunk it fetches against the manifest
before decoding it: a missing, truncated, swapped or foreign chunk is ``DataCorrupted``, never
a fill value. Parsing checks the structure too (names against the layout grammar, partition
rows against segment rows, int64 bounds), since a manifest's checksum only proves that
whoever wrote it could compute a sha256.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import layout
from .errors import DataCorrupted, InvalidKey
from .jsonio import MAX_MANIFEST_BYTES, load_document
from .keys import DataKey, canonical_json
from .records import dtype_from_json

__all__ = [
    "FORMAT",
    "INT64_MAX",
    "INT64_MIN",
    "PARTITION_COLUMNS",
    "Digest",
    "Manifest",
    "Partition",
    "Segment",
    "now_iso",
]

FORMAT = "strata.manifest.v2"
FORMATS_READ = ("strata.manifest.v1", FORMAT)
"""Formats this version reads (v1 manifests carry no object digests)."""
PARTITION_COLUMNS = ["start", "end", "rows", "nbytes", "segment", "offset"]
"""The columns of a row of the partition table, as the manifest also states them."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Digest(NamedTuple):
    """Size in bytes and crc32c of one stored object (see
    :func:`strata.storage._zarr.object_crc32c`: for a chunk ending with its own crc32c, that
    trailing checksum).
    """

    size: int
    crc32c: int


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
        """Compact JSON row (columns :data:`PARTITION_COLUMNS`)."""
        return [self.start, self.end, self.rows, self.nbytes, self.segment, self.offset]

    @classmethod
    def from_json(cls, row: list[Any]) -> Partition:
        """Inverse of :meth:`to_json`."""
        start, end, rows, nbytes, segment, offset = row
        if segment is not None and not isinstance(segment, str):
            raise ValueError(f"partition segment {segment!r} is not a name")
        return cls(int(start), int(end), int(rows), int(nbytes), segment, int(offset))


@dataclass(frozen=True)
class Segment:
    """A Zarr group of one array per field, written by exactly one task.

    ``chunks`` holds, per field, the :class:`Digest` of every chunk in order; ``metadata`` the
    digests of the segment's ``zarr.json`` documents (keys relative to the segment: ``zarr.json``
    and ``<field>/zarr.json``). Both are empty in manifests of format v1.
    """

    name: str
    rows: int
    chunk_rows: dict[str, int]
    chunks: dict[str, list[Digest]] = field(default_factory=dict)
    metadata: dict[str, Digest] = field(default_factory=dict)

    def n_chunks(self, field_name: str) -> int:
        """How many chunks the array of ``field_name`` has."""
        return math.ceil(self.rows / max(1, self.chunk_rows[field_name]))

    def to_json(self) -> dict[str, Any]:
        """JSON form: chunk digests as one flat ``[size, crc, size, crc, ...]`` list per field."""
        return {
            "name": self.name,
            "rows": self.rows,
            "chunk_rows": self.chunk_rows,
            "chunks": {f: [v for d in ds for v in d] for f, ds in self.chunks.items()},
            "metadata": {k: list(d) for k, d in self.metadata.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        """Inverse of :meth:`to_json`."""
        chunks = {}
        for f, flat in (d.get("chunks") or {}).items():
            if not isinstance(flat, list) or len(flat) % 2:
                raise ValueError(f"chunk digests of field {f!r} are not [size, crc, ...] pairs")
            pairs = zip(flat[::2], flat[1::2], strict=True)
            chunks[str(f)] = [Digest(int(a), int(b)) for a, b in pairs]
        meta = {str(k): Digest(int(v[0]), int(v[1])) for k, v in (d.get("metadata") or {}).items()}
        return cls(
            str(d["name"]),
            int(d["rows"]),
            {str(k): int(v) for k, v in d["chunk_rows"].items()},
            chunks,
            meta,
        )


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
    attempt_metadata: Digest | None = None
    """Digest of the attempt group's ``zarr.json`` (``None`` in format v1)."""
    format: str = FORMAT

    @property
    def has_digests(self) -> bool:
        """Whether this manifest lists the digest of every stored object (format v2)."""
        return self.format != "strata.manifest.v1"

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
            "partition_columns": PARTITION_COLUMNS,
            "partitions": [p.to_json() for p in self.partitions],
            "segments": [s.to_json() for s in self.segments],
            "rows": self.rows,
            "nbytes": self.nbytes,
            "writing_started": self.writing_started,
            "writing_ended": self.writing_ended,
            "metadata": self.metadata,
            "strata_version": self.strata_version,
            "attempt_metadata": list(self.attempt_metadata) if self.attempt_metadata else None,
        }
        body["checksum"] = _checksum(body)
        return body

    def to_bytes(self) -> bytes:
        """Compact JSON bytes, ready to write (small enough for one GET at 100,000 chunks)."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        """Parse and verify a manifest; raise ``DataCorrupted`` naming ``where`` if it is bad."""
        d = load_document(raw, f"manifest {where}", max_bytes=MAX_MANIFEST_BYTES)
        if not isinstance(d, dict) or d.get("format") not in FORMATS_READ:
            raise DataCorrupted(f"manifest {where} is not a {FORMAT} document")
        stored = d.pop("checksum", None)
        if stored != _checksum(d):
            raise DataCorrupted(
                f"manifest {where} fails its checksum: it was edited or damaged after commit"
            )
        try:
            key = DataKey.from_dict(d["key"])
            am = d.get("attempt_metadata")
            m = cls(
                key=key,
                dtype=d["dtype"],
                arrays=d["arrays"],
                attempt=str(d["attempt"]),
                partitions=[Partition.from_json(p) for p in d["partitions"]],
                segments=[Segment.from_json(s) for s in d["segments"]],
                writing_started=str(d["writing_started"]),
                writing_ended=str(d["writing_ended"]),
                metadata=d.get("metadata") or {},
                strata_version=str(d.get("strata_version", "")),
                attempt_metadata=Digest(int(am[0]), int(am[1])) if am else None,
                format=str(d["format"]),
            )
            m.np_dtype  # noqa: B018 - validates the dtype description
        except (KeyError, TypeError, ValueError, IndexError, InvalidKey) as e:
            raise DataCorrupted(f"manifest {where} is malformed: {e!r}") from e
        if d.get("lineage_hash") != key.lineage_hash:
            raise DataCorrupted(f"manifest {where}: lineage hash does not match its lineage")
        m.check(f"manifest {where}")
        return m

    def check(self, where: str) -> None:
        """Check the structure that a checksum cannot vouch for: every name against the layout
        grammar, the partition table against the segments, sizes, bounds and digests.
        ``DataCorrupted`` naming ``where`` and the rule if anything is off.
        """

        def bad(msg: str) -> DataCorrupted:
            return DataCorrupted(f"{where}: {msg}; not reading it")

        layout.check_attempt(self.attempt, where)
        dtype = self.np_dtype
        names = list(dtype.names or ())
        for f in names:
            layout.check_field(f, where)
        if set(self.arrays) != set(names):
            raise bad(f"arrays {sorted(self.arrays)} do not match the fields {names}")
        segments: dict[str, Segment] = {}
        for seg in self.segments:
            layout.check_segment(seg.name, where)
            if seg.name in segments:
                raise bad(f"segment {seg.name} is listed twice")
            segments[seg.name] = seg
            if seg.rows <= 0 or set(seg.chunk_rows) != set(names):
                raise bad(f"segment {seg.name} has {seg.rows} rows or chunking of other fields")
            if any(n < 1 for n in seg.chunk_rows.values()):
                raise bad(f"segment {seg.name} has a chunk of fewer than one row")
            if self.has_digests:
                for f in names:
                    if len(seg.chunks.get(f, ())) != seg.n_chunks(f):
                        raise bad(
                            f"segment {seg.name} lists {len(seg.chunks.get(f, ()))} chunk "
                            f"digests of {f!r}, its rows need {seg.n_chunks(f)}"
                        )
        filled = dict.fromkeys(segments, 0)
        prev_end: int | None = None
        for i, p in enumerate(self.partitions):
            if not INT64_MIN <= p.start <= p.end <= INT64_MAX:
                raise bad(f"partition {i} [{p.start}, {p.end}) is not an int64 interval")
            if prev_end is not None and p.start < prev_end:
                raise bad(f"partition {i} starts before partition {i - 1} ends")
            prev_end = p.end
            if p.rows < 0 or p.nbytes != p.rows * dtype.itemsize:
                raise bad(f"partition {i} has {p.rows} rows of {p.nbytes} bytes")
            if p.rows == 0:
                continue
            if p.segment not in segments:
                raise bad(f"partition {i} names segment {p.segment!r}, which is not listed")
            if p.offset != filled[p.segment]:
                raise bad(
                    f"partition {i} starts at row {p.offset} of {p.segment}, not at "
                    f"{filled[p.segment]}"
                )
            filled[p.segment] += p.rows
        for name, seg in segments.items():
            if filled[name] != seg.rows:
                raise bad(f"segment {name} has {seg.rows} rows, its partitions {filled[name]}")


def _checksum(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()
