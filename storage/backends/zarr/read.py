"""The read path of :class:`~strata.storage.backends.zarr.ZarrBackend`: from a manifest to Dask.

Everything is planned from the manifest alone (no listing, no ``zarr.json`` read): which
segments and rows a ``time_range`` selects, and one Dask task per stored chunk. Chunks are
fetched and decoded concurrently on zarr's event loop; rows are copied into place in the
calling (Dask worker) thread, so the copies of concurrent tasks run in parallel.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ... import _zarr
from ...errors import DataCorrupted
from ...fs import redact_url
from ...lazy import LazyData, select_fields
from ...manifest import Digest, Manifest
from .arrays import array_meta, chunk_bounds
from .dtypes import is_mapped, storage_view, to_field

if TYPE_CHECKING:
    from .backend import ZarrBackend

__all__ = ["GROUP_READ_BYTES", "Piece", "build_loader", "select_pieces"]

GROUP_READ_BYTES = 16 * 2**20
"""Output bytes up to which :meth:`LazyData.to_numpy` reads consecutive pieces together."""


class Piece(NamedTuple):
    """Rows ``[lo, hi)`` of one segment that a load selects."""

    segment: str
    lo: int
    hi: int


class Column(NamedTuple):
    """One field's array of one segment: its name, its Zarr-store path, its metadata, the
    digests of its chunks (empty for manifests that list none) and, for a field stored as
    another core dtype (:mod:`.dtypes`), the field's own base dtype.
    """

    field: str
    path: str
    meta: dict[str, Any]
    digests: tuple[Digest, ...] = ()
    mapped: np.dtype[Any] | None = None

    def target(self, out: np.ndarray, lo: int, hi: int) -> Target:
        """Rows ``[lo, hi)`` of this array to decode into ``out`` (in the field's dtype)."""
        view = storage_view(out, self.mapped) if self.mapped is not None else out
        return Target(self.path, self.meta, view, lo, hi, self.digests)


class Target(NamedTuple):
    """Rows ``[lo, hi)`` of the array at ``path`` to decode into ``out``."""

    path: str
    meta: dict[str, Any]
    out: np.ndarray
    lo: int
    hi: int
    digests: tuple[Digest, ...] = ()


class Job(NamedTuple):
    """Rows ``[lo, hi)`` of a segment's ``columns``, placed at ``offset`` of the output."""

    offset: int
    columns: list[Column]
    lo: int
    hi: int


def _where(m: Manifest, backend: ZarrBackend, bk: str) -> str:
    return f"manifest of {m.key} in {redact_url(backend.url)}"


def _column(backend: ZarrBackend, bk: str, m: Manifest, segment: str, field: str) -> Column:
    seg = m.segment(segment)
    path = backend.layout.array_prefix(bk, m.attempt, seg.name, field, _where(m, backend, bk))
    tpl = m.arrays[field]
    mapped = m.np_dtype[field].base if is_mapped(tpl) else None
    return Column(field, path, array_meta(m, seg, field), tuple(seg.chunks.get(field, ())), mapped)


def select_pieces(
    backend: ZarrBackend, bk: str, m: Manifest, time_range: tuple[int, int] | None
) -> list[Piece]:
    """The segment rows that hold the records of ``time_range`` (``t0 <= time < t1``).

    Reads nothing but, for partitions that straddle an end of the range, their ``time``
    values.
    """
    pieces: list[Piece] = []
    if time_range is not None:
        t0, t1 = (int(t) for t in time_range)
        if t1 < t0:
            raise ValueError(f"time_range end {t1} is before its start {t0}")
    for p in m.partitions:
        if p.rows == 0 or p.segment is None:
            continue
        lo, hi = p.offset, p.offset + p.rows
        if time_range is not None:
            if p.end <= t0 or p.start >= t1:
                if not (p.start == p.end == t0):
                    continue
            if not (p.start >= t0 and p.end < t1):
                col = _column(backend, bk, m, p.segment, "time")
                times = read_rows(backend, col, lo, hi, str(m.key))
                lo, hi = (
                    p.offset + int(np.searchsorted(times, t0, "left")),
                    p.offset + int(np.searchsorted(times, t1, "left")),
                )
                if hi <= lo:
                    continue
        if pieces and pieces[-1].segment == p.segment and pieces[-1].hi == lo:
            pieces[-1] = Piece(p.segment, pieces[-1].lo, hi)
        else:
            pieces.append(Piece(p.segment, lo, hi))
    return pieces


def build_loader(
    backend: ZarrBackend,
    bk: str,
    m: Manifest,
    fields: Sequence[str] | None = None,
    time_range: tuple[int, int] | None = None,
) -> LazyData:
    """Lazy Dask collections over the data ``m`` commits at ``bk``."""
    dtype = m.np_dtype
    sel = select_fields(dtype, fields, m.key)
    if backend.is_local and m.segments:
        backend._checked(backend.layout.attempt_dir(bk, m.attempt, _where(m, backend, bk)))
    pieces = select_pieces(backend, bk, m, time_range)
    return _build_lazy(backend, bk, m, sel, pieces)


def read_rows(
    backend: ZarrBackend, col: Column, lo: int, hi: int, key: str, out: np.ndarray | None = None
) -> np.ndarray:
    """Read rows ``[lo, hi)`` of one stored array, into ``out`` (which may be a field of a
    structured array) if given; checksum failures become DataCorrupted.
    """
    if out is None:
        md = _zarr.async_array(backend.store, col.path, col.meta).metadata
        stored = np.empty((hi - lo, *md.shape[1:]), dtype=md.dtype.to_native_dtype())
        _fill_rows(backend, [Target(col.path, col.meta, stored, lo, hi, col.digests)], key)
        return to_field(stored, col.mapped) if col.mapped is not None else stored
    _fill_rows(backend, [col.target(out, lo, hi)], key)
    return out


def _read_task(backend: ZarrBackend, col: Column, lo: int, hi: int, key: str) -> np.ndarray:
    return read_rows(backend, col, lo, hi, key)


def _fill_rows(backend: ZarrBackend, targets: Sequence[Target], key: str) -> None:
    """Read rows ``[lo, hi)`` of stored arrays into ``out`` arrays (fields of one structured
    array, say), for every target.

    Zarr's event loop fetches and decodes every chunk concurrently (its codecs run in its
    threads), in one round trip; copying the decoded rows into place happens here.
    """

    where = redact_url(backend.url)

    async def one(arr: Any, t: Target, c: int) -> np.ndarray:
        buf = await _zarr.fetch_chunk(arr, c)
        if buf is None:  # committed data never reads as the fill value
            raise DataCorrupted(
                f"{key}: chunk {c} of {t.path} is missing from {where} (deleted, or its "
                "attempt was collected after an overwrite); the committed data is incomplete"
            )
        if t.digests:
            want = t.digests[c] if c < len(t.digests) else None
            raw = buf.as_numpy_array()
            got = _zarr.object_crc32c(raw, _zarr.has_crc32c(arr))
            if want is None or raw.nbytes != want.size or got != want.crc32c:
                raise DataCorrupted(
                    f"{key}: chunk {c} of {t.path} in {where} is not the chunk the manifest "
                    f"committed ({raw.nbytes} bytes, crc32c {got:08x}; expected "
                    f"{want.size if want else '?'} bytes, crc32c "
                    f"{f'{want.crc32c:08x}' if want else '?'}): truncated, swapped or replaced"
                )
        try:
            decoded = await _zarr.decode_chunk(arr, c, buf)
        except _zarr.ChecksumMismatch as e:
            raise DataCorrupted(
                f"{key}: stored chunk {c} of {t.path} fails its crc32c checksum "
                f"({where}); the data on storage is damaged"
            ) from e
        except Exception as e:  # the bytes do not decode to the rows the manifest says
            raise DataCorrupted(
                f"{key}: chunk {c} of {t.path} in {where} does not decode to the rows the "
                f"manifest says ({type(e).__name__}: {e})"
            ) from e
        return decoded

    # (array, path, chunk index, chunk rows, target): one per chunk to read
    jobs: list[tuple[Any, str, int, int, Target]] = []
    for t in targets:
        arr = _zarr.async_array(backend.store, t.path, t.meta)
        md = arr.metadata
        if t.out.shape != (t.hi - t.lo, *md.shape[1:]):
            raise ValueError(
                f"out has shape {t.out.shape}; rows {t.lo}..{t.hi} of {t.path} do not fit"
            )
        n = max(1, int(md.chunks[0]))
        jobs.extend((arr, t.path, c, n, t) for c in range(t.lo // n, -(-t.hi // n)))
    if not jobs:
        return

    async def fetch() -> list[Any]:
        return list(await asyncio.gather(*(one(j[0], j[4], j[2]) for j in jobs)))

    for (_, _, c, n, t), decoded in zip(jobs, _zarr.run(fetch()), strict=True):
        a, b = max(t.lo, c * n), min(t.hi, (c + 1) * n)
        if decoded.shape[0] != n:
            raise DataCorrupted(f"{key}: chunk {c} of {t.path} decodes to {decoded.shape[0]} rows")
        t.out[a - t.lo : b - t.lo] = decoded[a - c * n : b - c * n]


def _read_struct(
    backend: ZarrBackend, columns: list[Column], lo: int, hi: int, dtype: np.dtype[Any], key: str
) -> np.ndarray:
    out = np.empty(hi - lo, dtype=dtype)
    _fill_rows(backend, [c.target(out[c.field], lo, hi) for c in columns], key)
    return out


def _build_lazy(
    backend: ZarrBackend, bk: str, m: Manifest, fields: list[str], pieces: list[Piece]
) -> LazyData:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    dtype = m.np_dtype
    key = str(m.key)
    token = tokenize(backend._token(), bk, m.attempt, pieces)
    out_dtype = np.dtype([(f, dtype[f].base, dtype[f].shape) for f in fields])

    field_arrays = {}
    for f in fields:
        name = f"{m.key.data_type}-{f}-{token}"
        ft = dtype[f]
        dsk: dict[Any, Any] = {}
        sizes: list[int] = []
        for piece in pieces:
            col = _column(backend, bk, m, piece.segment, f)
            rows = m.segment(piece.segment).chunk_rows[f]
            for a, b in chunk_bounds(piece.lo, piece.hi, rows):
                dsk[(name, len(sizes), *([0] * ft.ndim))] = (_read_task, backend, col, a, b, key)
                sizes.append(b - a)
        if not sizes:
            field_arrays[f] = da.from_array(np.zeros((0, *ft.shape), dtype=ft.base), chunks=-1)
            continue
        chunks = (tuple(sizes), *[(d,) for d in ft.shape])
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        field_arrays[f] = da.Array(graph, name, chunks, dtype=ft.base)

    name = f"{m.key.data_type}-records-{token}"
    dsk = {}
    sizes = []
    jobs: list[Job] = []
    for piece in pieces:
        seg = m.segment(piece.segment)
        step = min(seg.chunk_rows[f] for f in fields)
        columns = [_column(backend, bk, m, piece.segment, f) for f in fields]
        for a, b in chunk_bounds(piece.lo, piece.hi, step):
            dsk[(name, len(sizes))] = (_read_struct, backend, columns, a, b, out_dtype, key)
            jobs.append(Job(sum(sizes), columns, a, b))
            sizes.append(b - a)
    if sizes:
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        struct = da.Array(graph, name, (tuple(sizes),), dtype=out_dtype)
    else:
        struct = da.from_array(np.zeros(0, dtype=out_dtype), chunks=-1)
    reader = functools.partial(_fill_struct, backend, jobs, key)
    return LazyData(key=m.key, manifest=m, array=struct, fields=field_arrays, reader=reader)


def _fill_struct(
    backend: ZarrBackend, jobs: list[Job], key: str, out: np.ndarray, threads: int
) -> None:
    """Decode every job's rows straight into their place in ``out``, on ``threads`` threads.

    The same reads as the tasks of :attr:`LazyData.array`, without Dask's per-task blocks and
    their final concatenation: one output array is written once. Consecutive jobs are read
    together (their chunks fetched and decoded concurrently in one round trip to zarr's event
    loop) up to about a chunk's worth of output, so reading a small field costs little more
    than its bytes.
    """
    from concurrent.futures import ThreadPoolExecutor

    groups: list[list[Job]] = []
    size = 0
    for job in jobs:
        nbytes = (job.hi - job.lo) * out.dtype.itemsize
        if not groups or size + nbytes > GROUP_READ_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(job)
        size += nbytes

    def run(group: list[Job]) -> None:
        targets: list[Target] = []
        for job in group:
            block = out[job.offset : job.offset + job.hi - job.lo]
            targets.extend(c.target(block[c.field], job.lo, job.hi) for c in job.columns)
        _fill_rows(backend, targets, key)

    if threads <= 1 or len(groups) <= 1:
        for group in groups:
            run(group)
        return
    with ThreadPoolExecutor(min(threads, len(groups)), thread_name_prefix="strata-read") as pool:
        for _ in pool.map(run, groups):
            pass
