"""The manifest: the one document that makes a save visible.

A key is committed exactly when its commit document exists: the key's own ``zarr.json``
(format v3), a Zarr v3 group whose ``attributes.strata`` is the manifest and whose consolidated
metadata lists exactly the committed arrays, so plain Zarr readers open the key and see the
commit (:mod:`strata.storage.layout` has the layout). Keys committed by strata before format v3
have a ``manifest.json`` instead (formats v1 and v2), which still reads.

The manifest names the attempt (the Zarr group) whose segments it commits and says how to read
every array without listing anything or reading any other Zarr metadata: dtype, codecs,
chunking, and the partition table. Its checksum (:func:`seal`) makes a truncated or edited
commit document fail: ``checksum`` is ``sha256:`` followed by the lowercase hex SHA-256 of the
file's bytes with those 64 hex digits replaced by ``0`` characters.

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
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from . import layout
from .errors import DataCorrupted, InvalidKey
from .jsonio import MAX_MANIFEST_BYTES, load_document
from .keys import DataKey, canonical_json
from .records import dtype_from_json

__all__ = [
    "CHECKSUM_PLACEHOLDER",
    "FORMAT",
    "INT64_MAX",
    "INT64_MIN",
    "PARTITION_COLUMNS",
    "Digest",
    "Manifest",
    "Partition",
    "Segment",
    "now_iso",
    "seal",
    "unseal",
]

FORMAT = "strata.manifest.v3"
LEGACY_FORMATS = ("strata.manifest.v1", "strata.manifest.v2")
"""Formats of ``manifest.json`` files this version reads (v1 carries no object digests)."""
FORMATS_READ = (*LEGACY_FORMATS, FORMAT)
"""Every format this version reads."""
PARTITION_COLUMNS = ["start", "end", "rows", "nbytes", "segment", "offset"]
"""The columns of the partition table (v3: one list per column; v2: rows in this order)."""
CHECKSUM_PLACEHOLDER = "sha256:" + "0" * 64
"""The ``checksum`` value while the commit document's SHA-256 is computed (:func:`seal`)."""
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
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

    @classmethod
    def from_json(cls, row: list[Any]) -> Partition:
        """A partition from its values in the order of :data:`PARTITION_COLUMNS`."""
        start, end, rows, nbytes, segment, offset = row
        if segment is not None and not isinstance(segment, str):
            raise ValueError(f"partition segment {segment!r} is not a name")
        return cls(int(start), int(end), int(rows), int(nbytes), segment, int(offset))


@dataclass(frozen=True)
class Segment:
    """A Zarr group of one array per field, written by exactly one task.

    ``chunks`` holds, per field, the :class:`Digest` of every chunk in order; ``metadata`` the
    digests of the segment's ``zarr.json`` documents (keys relative to the segment: ``zarr.json``
    and ``<field>/zarr.json``). Both are empty in manifests of format v1. ``shard_chunks``
    names the fields whose chunks are stored that many to an object (Zarr v3 sharding, see
    :mod:`strata.storage.backends.zarr.shards`); other fields store one object per chunk.
    """

    name: str
    rows: int
    chunk_rows: dict[str, int]
    chunks: dict[str, list[Digest]] = field(default_factory=dict)
    metadata: dict[str, Digest] = field(default_factory=dict)
    shard_chunks: dict[str, int] = field(default_factory=dict)

    def n_chunks(self, field_name: str) -> int:
        """How many chunks the array of ``field_name`` has."""
        return math.ceil(self.rows / max(1, self.chunk_rows[field_name]))

    def shard(self, field_name: str) -> int:
        """Chunks per stored object of ``field_name``'s array (1: unsharded)."""
        return self.shard_chunks.get(field_name, 1)

    def n_objects(self, field_name: str) -> int:
        """How many chunk objects (shards, or chunks if unsharded) ``field_name``'s array has."""
        return math.ceil(self.n_chunks(field_name) / self.shard(field_name))

    def to_json(self) -> dict[str, Any]:
        """JSON form (v3): per field, the chunks' sizes and crc32c as two lists."""
        return {
            "name": self.name,
            "rows": self.rows,
            "chunk_rows": self.chunk_rows,
            "chunks": {
                f: {"size": [d.size for d in ds], "crc32c": [d.crc32c for d in ds]}
                for f, ds in self.chunks.items()
            },
            "metadata": {k: _digest_json(d) for k, d in self.metadata.items()},
            **({"shard_chunks": self.shard_chunks} if self.shard_chunks else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        """Inverse of :meth:`to_json`."""
        chunks = {}
        for f, cols in d["chunks"].items():
            sizes, crcs = cols["size"], cols["crc32c"]
            if not isinstance(sizes, list) or not isinstance(crcs, list):
                raise ValueError(f"chunk digests of field {f!r} are not two lists")
            chunks[str(f)] = [Digest(_int(a), _int(b)) for a, b in zip(sizes, crcs, strict=True)]
        meta = {str(k): _digest_from_json(v) for k, v in d["metadata"].items()}
        shards = d.get("shard_chunks", {})
        if not isinstance(shards, dict):
            raise ValueError(f"shard_chunks {shards!r} is not an object")
        shard_chunks = {str(f): _int(k) for f, k in shards.items()}
        return cls(str(d["name"]), _int(d["rows"]), _chunk_rows(d), chunks, meta, shard_chunks)

    @classmethod
    def from_legacy_json(cls, d: dict[str, Any]) -> Segment:
        """A segment of a format v1/v2 manifest (v2: flat ``[size, crc, ...]`` per field)."""
        chunks = {}
        for f, flat in (d.get("chunks") or {}).items():
            if not isinstance(flat, list) or len(flat) % 2:
                raise ValueError(f"chunk digests of field {f!r} are not [size, crc, ...] pairs")
            pairs = zip(flat[::2], flat[1::2], strict=True)
            chunks[str(f)] = [Digest(int(a), int(b)) for a, b in pairs]
        meta = {str(k): Digest(int(v[0]), int(v[1])) for k, v in (d.get("metadata") or {}).items()}
        return cls(str(d["name"]), int(d["rows"]), _chunk_rows(d), chunks, meta)


def _int(v: object) -> int:
    """An integer from JSON (not a bool, a float or a string)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{v!r} is not an integer")
    return v


def _chunk_rows(d: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in d["chunk_rows"].items()}


def _digest_json(d: Digest | None) -> dict[str, int] | None:
    return None if d is None else {"size": d.size, "crc32c": d.crc32c}


def _digest_from_json(v: Any) -> Digest:
    return Digest(_int(v["size"]), _int(v["crc32c"]))


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

    def __getstate__(self) -> dict[str, Any]:
        # what was built from the fields (np_dtype, array documents) is rebuilt on demand
        return {k: v for k, v in self.__dict__.items() if k not in ("np_dtype", "_array_meta")}

    @cached_property
    def np_dtype(self) -> np.dtype[Any]:
        """The record dtype (built once)."""
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
        """The format v3 manifest (labelled fields; no checksum: :func:`seal` adds it)."""
        return {
            "format": FORMAT,
            "key": self.key.to_dict(),
            "lineage_hash": self.key.lineage_hash,
            "dtype": [{"name": n, "dtype": b, "shape": list(sh)} for n, b, sh in self.dtype],
            "arrays": self.arrays,
            "attempt": self.attempt,
            "partitions": {
                "start": [p.start for p in self.partitions],
                "end": [p.end for p in self.partitions],
                "rows": [p.rows for p in self.partitions],
                "nbytes": [p.nbytes for p in self.partitions],
                "segment": [p.segment for p in self.partitions],
                "offset": [p.offset for p in self.partitions],
            },
            "segments": [s.to_json() for s in self.segments],
            "rows": self.rows,
            "nbytes": self.nbytes,
            "writing_started": self.writing_started,
            "writing_ended": self.writing_ended,
            "metadata": self.metadata,
            "strata_version": self.strata_version,
            "attempt_metadata": _digest_json(self.attempt_metadata),
        }

    def to_document(self, consolidated: dict[str, Any]) -> bytes:
        """The commit document: the key's Zarr v3 group ``zarr.json``, with this manifest as
        ``attributes.strata`` and ``consolidated`` (path below the key -> Zarr metadata of
        every committed node) as its inline consolidated metadata; sealed (:func:`seal`).
        """
        doc = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"strata": {**self.to_dict(), "checksum": CHECKSUM_PLACEHOLDER}},
            "consolidated_metadata": {
                "kind": "inline",
                "must_understand": False,
                "metadata": consolidated,
            },
        }
        return seal(doc)

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        """Parse and verify a commit document (format v3 ``zarr.json``) or a ``manifest.json``
        of formats v1/v2; raise ``DataCorrupted`` naming ``where`` if it is bad.
        """
        d = load_document(raw, f"manifest {where}", max_bytes=MAX_MANIFEST_BYTES)
        if isinstance(d, dict) and "zarr_format" in d:
            attrs = d.get("attributes")
            body = attrs.get("strata") if isinstance(attrs, dict) else None
            if not isinstance(body, dict) or body.get("format") != FORMAT:
                raise DataCorrupted(f"{where} is a Zarr node but not a strata commit ({FORMAT})")
            if not unseal(raw, body.get("checksum")):
                raise DataCorrupted(
                    f"manifest {where} fails its checksum: it was edited or damaged after commit"
                )
            m = cls._parse(body, where, v3=True)
        else:
            if not isinstance(d, dict) or d.get("format") not in LEGACY_FORMATS:
                raise DataCorrupted(f"manifest {where} is not a {FORMAT} document")
            stored = d.pop("checksum", None)
            if stored != legacy_checksum(d):
                raise DataCorrupted(
                    f"manifest {where} fails its checksum: it was edited or damaged after commit"
                )
            m = cls._parse(d, where, v3=False)
        m.check(f"manifest {where}")
        return m

    @classmethod
    def _parse(cls, d: dict[str, Any], where: str, v3: bool) -> Manifest:
        try:
            key = DataKey.from_dict(d["key"])
            if v3:
                dtype = [[f["name"], f["dtype"], f["shape"]] for f in d["dtype"]]
                cols = d["partitions"]
                table = zip(*(cols[c] for c in PARTITION_COLUMNS), strict=True)
                partitions = [Partition.from_json(list(row)) for row in table]
                segments = [Segment.from_json(s) for s in d["segments"]]
                am = d.get("attempt_metadata")
                attempt_metadata = _digest_from_json(am) if am is not None else None
            else:
                dtype = d["dtype"]
                partitions = [Partition.from_json(p) for p in d["partitions"]]
                segments = [Segment.from_legacy_json(s) for s in d["segments"]]
                am = d.get("attempt_metadata")
                attempt_metadata = Digest(int(am[0]), int(am[1])) if am else None
            m = cls(
                key=key,
                dtype=dtype,
                arrays=d["arrays"],
                attempt=str(d["attempt"]),
                partitions=partitions,
                segments=segments,
                writing_started=str(d["writing_started"]),
                writing_ended=str(d["writing_ended"]),
                metadata=d.get("metadata") or {},
                strata_version=str(d.get("strata_version", "")),
                attempt_metadata=attempt_metadata,
                format=str(d["format"]),
            )
            if not isinstance(m.arrays, dict) or not isinstance(m.metadata, dict):
                raise TypeError("arrays and metadata must be objects")
            m.np_dtype  # noqa: B018 - validates the dtype description
        except (KeyError, TypeError, ValueError, IndexError, InvalidKey) as e:
            raise DataCorrupted(f"manifest {where} is malformed: {e!r}") from e
        if d.get("lineage_hash") != key.lineage_hash:
            raise DataCorrupted(f"manifest {where}: lineage hash does not match its lineage")
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
            # a segment of 0 rows is the zero-length arrays of an empty data type, alone
            empty_ok = seg.rows == 0 and len(self.segments) == 1 and self.format == FORMAT
            if (seg.rows <= 0 and not empty_ok) or set(seg.chunk_rows) != set(names):
                raise bad(f"segment {seg.name} has {seg.rows} rows or chunking of other fields")
            if any(n < 1 for n in seg.chunk_rows.values()):
                raise bad(f"segment {seg.name} has a chunk of fewer than one row")
            if seg.shard_chunks:
                _shard_rules(self, seg, names, bad)
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


SHARDED_CODECS = (["bytes", "crc32c"], ["bytes", "blosc", "crc32c"])
"""The codec chains of templates whose chunks may be stored in shards."""

MAX_SHARD_CHUNKS = 2**16
"""Chunks per shard at most in a manifest that strata reads."""


def _shard_rules(m: Manifest, seg: Segment, names: list[str], bad: Any) -> None:
    """Fields stored in shards: known fields, of a chain strata decodes, with digests."""
    for f, k in seg.shard_chunks.items():
        if f not in names:
            raise bad(f"segment {seg.name} shards {f!r}, which is not a field")
        if not 2 <= k <= MAX_SHARD_CHUNKS:
            raise bad(
                f"segment {seg.name} stores {k} chunks of {f!r} per shard (rule: 2 to "
                f"{MAX_SHARD_CHUNKS}; unsharded fields are not listed)"
            )
        codecs = m.arrays[f].get("codecs") if isinstance(m.arrays[f], dict) else None
        chain = [c.get("name") for c in codecs if isinstance(c, dict)] if codecs else []
        if chain not in SHARDED_CODECS or not m.has_digests:
            raise bad(
                f"segment {seg.name} shards {f!r}, whose codecs {chain} are not one of "
                f"{list(SHARDED_CODECS)} with chunk digests"
            )


def seal(doc: dict[str, Any]) -> bytes:
    """Compact JSON bytes of ``doc``, whose one ``checksum`` is :data:`CHECKSUM_PLACEHOLDER`,
    with the placeholder's zeros replaced by the SHA-256 of those bytes.
    """
    raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    zeros = CHECKSUM_PLACEHOLDER.encode()
    if raw.count(zeros) != 1:
        raise ValueError(f"the document must hold {CHECKSUM_PLACEHOLDER!r} exactly once")
    digest = hashlib.sha256(raw).hexdigest()
    return raw.replace(zeros, f"sha256:{digest}".encode())


def unseal(raw: bytes, checksum: object) -> bool:
    """Whether ``raw`` (a sealed document whose checksum field reads ``checksum``) is intact:
    the SHA-256 of ``raw`` with the checksum's hex digits replaced by zeros is those digits.
    """
    if not isinstance(checksum, str) or not checksum.startswith("sha256:"):
        return False
    hexd = checksum[len("sha256:") :]
    if not _HEX64.match(hexd):
        return False
    if raw.count(hexd.encode()) != 1:
        return False
    zeroed = raw.replace(hexd.encode(), b"0" * 64)
    return hashlib.sha256(zeroed).hexdigest() == hexd


def legacy_checksum(body: dict[str, Any]) -> str:
    """The checksum of a format v1/v2 ``manifest.json``: sha256 of its canonical JSON without
    the checksum (:func:`strata.storage.keys.canonical_json`).
    """
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()
