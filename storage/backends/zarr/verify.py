"""Verify committed data against its manifest (``strata verify``, :meth:`ZarrBackend.verify`).

A load checks the chunks it reads; verification reads every object a commit names, without
decoding anything: the manifest must parse, and every chunk of every array of every segment,
and the ``zarr.json`` of each segment, array and of the attempt group, must exist with the
size and crc32c the manifest recorded (format v2). A manifest of format v1 records no digests:
then every chunk must exist and end with a valid crc32c of its own bytes (Zarr's ``crc32c``
codec), and every array's ``zarr.json`` must state the rows and chunking the manifest says;
the report notes that no digests could be compared.

Whole segments are checked a batch at a time (:data:`BATCH_OBJECTS`), their objects fetched
concurrently through the backend's Zarr store with a bound on the objects and bytes in flight
(:data:`IN_FLIGHT_OBJECTS`, :data:`IN_FLIGHT_BYTES`), and each object is dropped as soon as
its size and crc32c are known: memory stays bounded whatever the size of the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ... import _zarr
from ...errors import DataCorrupted
from ...jsonio import load_document
from ...keys import DataKey
from ...manifest import Digest, Manifest, Segment
from . import shards
from .arrays import array_meta

if TYPE_CHECKING:
    from .backend import ZarrBackend

__all__ = ["BATCH_OBJECTS", "IN_FLIGHT_BYTES", "IN_FLIGHT_OBJECTS", "KeyReport", "verify_key"]

IN_FLIGHT_OBJECTS = 16
"""Objects fetched at once while verifying (requests in flight)."""
IN_FLIGHT_BYTES = 128 * 2**20
"""Bytes of fetched objects held at once while verifying (one larger object goes alone)."""
BATCH_OBJECTS = 1024
"""Objects (of whole segments) checked in one round trip to zarr's event loop."""

NO_DIGESTS = (
    "no digests (format v1): checked that every object exists and that every chunk matches "
    "its own crc32c; save the key again to record digests"
)


@dataclass(frozen=True)
class KeyReport:
    """What verifying one committed key found.

    Attributes
    ----------
    backend_key
        Where the key is stored in its backend (``<run_id>/<data_type>-<hash>``).
    key
        The key its manifest names (``None`` if the manifest cannot be read).
    problems
        One line per problem, naming the array, chunk or document and its path below the
        store root. Empty if the key is intact.
    notes
        What is worth knowing but is not a problem (a manifest without digests).
    objects
        Objects checked (chunks and ``zarr.json`` documents the manifest names).
    bytes_read
        Bytes of those objects read.
    backend
        The name of the backend in its frontend (set by
        :meth:`~strata.storage.frontends.base.StorageFrontend.verify`).

    """

    backend_key: str
    key: DataKey | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    objects: int = 0
    bytes_read: int = 0
    backend: str = ""

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


class _Object(NamedTuple):
    """One stored object to check: what it is (for messages), its Zarr-store key, the digest
    the manifest recorded, and for chunks the array; for arrays' ``zarr.json`` of format v1,
    the ``(rows, chunk rows)`` the manifest says.
    """

    what: str
    store_key: str
    digest: Digest | None
    expect_size: int  # for the byte budget: the digest's size, or an estimate
    arr: Any = None
    shape: tuple[int, int] | None = None
    inner: tuple[Digest, ...] = ()  # a shard: the digests of its stored inner chunks
    shard: int = 1  # a shard: inner chunks per shard (its index's entries)
    first: int = 0  # a shard: the number of its first inner chunk


class _Budget:
    """At most ``objects`` fetches and about ``nbytes`` bytes in flight (asyncio)."""

    def __init__(self, objects: int, nbytes: int) -> None:
        self.objects, self.nbytes, self.total = objects, nbytes, nbytes
        self.cond = asyncio.Condition()

    async def acquire(self, n: int) -> int:
        n = min(n, self.total)  # an object larger than the budget waits to go alone
        async with self.cond:
            await self.cond.wait_for(lambda: self.objects > 0 and self.nbytes >= n)
            self.objects -= 1
            self.nbytes -= n
        return n

    async def release(self, n: int) -> None:
        async with self.cond:
            self.objects += 1
            self.nbytes += n
            self.cond.notify_all()


class _Result(NamedTuple):
    """What checking one object found: bytes read, and the problem (``None`` if intact)."""

    nbytes: int
    problem: str | None = None
    missing: bool = False


def _own_crc32c_ok(raw: np.ndarray) -> bool:
    """Whether stored chunk bytes end with the little-endian crc32c of the rest."""
    return raw.size >= 4 and np.uint32(_zarr.crc32c(raw[:-4])).tobytes() == bytes(raw[-4:])


def _check(obj: _Object, buf: Any) -> _Result:
    """Check ``obj`` read as ``buf`` (``None``: absent)."""
    where = f"({obj.store_key})"
    if buf is None:
        return _Result(0, f"{obj.what} is missing {where}", missing=True)
    raw = buf.as_numpy_array()
    size = int(raw.nbytes)
    if obj.inner:
        return _Result(size, _check_shard(obj, raw))
    # A chunk's digest is its own trailing crc32c (see _zarr.object_crc32c): a digest that
    # matches says the chunk is the one committed, and that its bytes still match that
    # checksum is checked here, with or without a digest.
    has_own = obj.arr is not None and _zarr.has_crc32c(obj.arr)
    own = _own_crc32c_ok(raw) if has_own else None
    if obj.digest is not None:
        got = Digest(size, _zarr.object_crc32c(raw, has_own))
        if got != obj.digest:
            if own is False:
                why = "damaged or truncated (it fails its own crc32c too)"
            elif own:
                why = "swapped with or replaced by another chunk (its own crc32c holds)"
            else:
                why = "truncated, damaged or replaced"
            return _Result(
                size,
                f"{obj.what} is not the object the manifest committed: {got.size:,} bytes, "
                f"crc32c {got.crc32c & 0xFFFFFFFF:08x}; the manifest says {obj.digest.size:,} "
                f"bytes, crc32c {obj.digest.crc32c:08x}: {why} {where}",
            )
    if own is False:
        return _Result(size, f"{obj.what} fails its own crc32c: damaged {where}")
    if obj.shape is not None:
        return _Result(size, _check_array_meta(obj, bytes(raw)))
    return _Result(size)


def _check_shard(obj: _Object, raw: np.ndarray) -> str | None:
    """A shard object against the manifest: its size, its index (what plain Zarr readers go
    by) and every inner chunk's size and crc32c, and that each still matches its own crc32c.
    """
    where = f"({obj.store_key})"
    sizes = [d.size for d in obj.inner]
    want = obj.expect_size  # exactly: shards.object_size of the manifest's sizes
    if raw.nbytes != want:
        return (
            f"{obj.what} is {raw.nbytes:,} bytes; the manifest's chunks and index make "
            f"{want:,}: truncated, swapped or replaced {where}"
        )
    index = shards.index_bytes(sizes, obj.shard)
    if bytes(raw[raw.nbytes - len(index) :]) != index:
        return (
            f"{obj.what} has an index other than the manifest's chunk sizes make: Zarr readers "
            f"would read other bytes {where}"
        )
    at = 0
    for i, d in enumerate(obj.inner):
        part = raw[at : at + d.size]
        at += d.size
        chunk = f"chunk {obj.first + i} (in {obj.what})"
        if _zarr.object_crc32c(part, True) != d.crc32c:
            own = "its own crc32c holds" if _own_crc32c_ok(part) else "it fails its own crc32c"
            return (
                f"{chunk} is not the chunk the manifest committed (crc32c "
                f"{_zarr.object_crc32c(part, True) & 0xFFFFFFFF:08x}, the manifest says "
                f"{d.crc32c:08x}; {own}) {where}"
            )
        if not _own_crc32c_ok(part):
            return f"{chunk} fails its own crc32c: damaged {where}"
    return None


def _check_array_meta(obj: _Object, raw: bytes) -> str | None:
    """For a v1 manifest: does an array's ``zarr.json`` state the manifest's rows and chunks?"""
    assert obj.shape is not None
    rows, chunk_rows = obj.shape
    try:
        doc = load_document(raw, obj.store_key)
        got = (int(doc["shape"][0]), int(doc["chunk_grid"]["configuration"]["chunk_shape"][0]))
    except (DataCorrupted, KeyError, TypeError, ValueError, IndexError) as e:
        return f"{obj.what} is not Zarr v3 array metadata ({e}) ({obj.store_key})"
    if got != (rows, chunk_rows):
        return (
            f"{obj.what} describes {got[0]:,} rows in chunks of {got[1]:,}; the manifest says "
            f"{rows:,} rows in chunks of {chunk_rows:,} ({obj.store_key})"
        )
    return None


def _segment_objects(
    backend: ZarrBackend, bk: str, m: Manifest, seg: Segment, problems: list[str]
) -> list[_Object]:
    """Every object of segment ``seg``; adds to ``problems`` what the manifest itself lacks."""
    lay, where = backend.layout, f"manifest of {m.key}"
    prefix = lay.segment_prefix(bk, m.attempt, seg.name, where)
    dtype = m.np_dtype

    def meta_digest(name: str, what: str) -> Digest | None:
        d = seg.metadata.get(name)
        if d is None and m.has_digests:
            problems.append(f"the manifest lists no digest of {what}")
        return d

    seg_what = f"zarr.json of segment {seg.name}"
    out = [_Object(seg_what, f"{prefix}/zarr.json", meta_digest("zarr.json", seg_what), 1024)]
    for f in dtype.names or ():
        path = lay.array_prefix(bk, m.attempt, seg.name, f, where)
        what = f"zarr.json of array {f!r} in segment {seg.name}"
        out.append(
            _Object(
                what,
                f"{path}/zarr.json",
                meta_digest(f"{f}/zarr.json", what),
                4096,
                shape=None if m.has_digests else (seg.rows, seg.chunk_rows[f]),
            )
        )
        arr = _zarr.async_array(backend.store, path, array_meta(m, seg, f))
        n = seg.n_chunks(f)
        digests: Sequence[Digest] = seg.chunks.get(f, ())
        if m.has_digests and len(digests) != n:
            problems.append(
                f"the manifest lists {len(digests)} chunk digest(s) of array {f!r} in segment "
                f"{seg.name}; its {seg.rows:,} rows in chunks of {seg.chunk_rows[f]:,} make {n}"
            )
        raw_chunk = seg.chunk_rows[f] * dtype[f].itemsize + 4
        k = seg.shard(f)
        if k > 1:
            for j in range(seg.n_objects(f)):
                inner = tuple(digests[j * k : (j + 1) * k])
                out.append(
                    _Object(
                        f"shard {j} of array {f!r} in segment {seg.name}",
                        f"{path}/{_zarr.chunk_key(arr, j)}",
                        None,
                        shards.object_size(digests, k, j),
                        arr=arr,
                        inner=inner,
                        shard=k,
                        first=j * k,
                    )
                )
            continue
        for i in range(n):
            d = digests[i] if i < len(digests) else None
            out.append(
                _Object(
                    f"chunk {i} of array {f!r} in segment {seg.name}",
                    f"{path}/{_zarr.chunk_key(arr, i)}",
                    d,
                    d.size if d is not None else raw_chunk,
                    arr=arr,
                )
            )
    return out


async def _check_all(store: Any, objects: list[_Object]) -> list[_Result]:
    """Fetch and check ``objects`` concurrently, within the in-flight bounds."""
    budget = _Budget(IN_FLIGHT_OBJECTS, IN_FLIGHT_BYTES)

    async def one(obj: _Object) -> _Result:
        held = await budget.acquire(obj.expect_size)
        try:
            try:
                buf = await _zarr.fetch_key(store, obj.store_key)
            except OSError as e:  # unreadable is not verified: a problem of this object
                why = f"{type(e).__name__}: {e}"
                return _Result(0, f"{obj.what} cannot be read ({why}) ({obj.store_key})")
            return _check(obj, buf)
        finally:
            await budget.release(held)

    return list(await asyncio.gather(*(one(o) for o in objects)))


def _batches(
    segments: Sequence[Segment], objects_of: Callable[[Segment], list[_Object]]
) -> Iterator[list[tuple[Segment, list[_Object]]]]:
    """Whole segments with their objects, about :data:`BATCH_OBJECTS` objects at a time (a
    larger segment alone): few round trips for many small segments, bounded lists for many
    large ones.
    """
    batch: list[tuple[Segment, list[_Object]]] = []
    size = 0
    for seg in segments:
        objs = objects_of(seg)
        if batch and size + len(objs) > BATCH_OBJECTS:
            yield batch
            batch, size = [], 0
        batch.append((seg, objs))
        size += len(objs)
    if batch:
        yield batch


def verify_key(backend: ZarrBackend, backend_key: str) -> KeyReport:
    """Check the key committed at ``backend_key`` against its manifest; see the module notes.

    Returns a :class:`KeyReport` (a damaged manifest is a failed report, not an error);
    raises ``DataNotAvailable`` if nothing is committed there.
    """
    try:
        m = backend.get_metadata(backend_key)
    except DataCorrupted as e:
        return KeyReport(backend_key, problems=[f"manifest: {e}"])
    lay, store, where = backend.layout, backend.store, f"manifest of {m.key}"
    listed: list[str] = []  # what the manifest itself lacks
    attempt = lay.attempt_prefix(backend_key, m.attempt, where)
    group_what = f"zarr.json of attempt {m.attempt}"
    if m.has_digests and m.attempt_metadata is None:
        listed.append(f"the manifest lists no digest of {group_what}")
    group = _Object(group_what, f"{attempt}/zarr.json", m.attempt_metadata, 1024)
    (group_result,) = _zarr.run(_check_all(store, [group]))
    objects, nbytes = 1, group_result.nbytes
    found: list[str] = []
    gone = 0
    for batch in _batches(
        m.segments, lambda seg: _segment_objects(backend, backend_key, m, seg, listed)
    ):
        results = _zarr.run(_check_all(store, [o for _, objs in batch for o in objs]))
        at = 0
        for seg, seg_objects in batch:
            seg_results, at = results[at : at + len(seg_objects)], at + len(seg_objects)
            objects += len(seg_objects)
            nbytes += sum(r.nbytes for r in seg_results)
            if all(r.missing for r in seg_results):  # one line for a segment that is gone
                gone += 1
                prefix = lay.segment_prefix(backend_key, m.attempt, seg.name, where)
                found.append(
                    f"segment {seg.name} is missing: none of its {len(seg_objects)} objects "
                    f"exist ({prefix})"
                )
            else:
                found.extend(r.problem for r in seg_results if r.problem is not None)
    if group_result.missing and m.segments and gone == len(m.segments):
        found = [
            f"attempt {m.attempt} is missing: none of the {objects} objects of its "
            f"{len(m.segments)} segment(s) exist ({attempt})"
        ]
    elif group_result.problem is not None:
        found.insert(0, group_result.problem)
    return KeyReport(
        backend_key,
        m.key,
        problems=[*listed, *found],
        notes=[] if m.has_digests else [NO_DIGESTS],
        objects=objects,
        bytes_read=nbytes,
    )
