"""The read path of :class:`~strata.storage.backends.zarr.ZarrBackend`: from a manifest to Dask.

Everything is planned from the manifest alone (no listing, no ``zarr.json`` read): which
segments and rows a ``time_range`` selects, and one Dask task per stored chunk (the Dask graphs
are built on first use: :meth:`LazyData.to_numpy` reads without them). Chunks are fetched on
zarr's event loop, many in flight, verified against the manifest and decoded into place by
the calling threads (:mod:`.chunks`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ...fs import redact_url
from ...lazy import LazyData, select_fields
from ...manifest import Digest, Manifest
from .arrays import array_meta, chunk_bounds
from .chunks import ChunkRead, plan_for, read_chunks
from .dtypes import is_mapped, storage_view, to_field

if TYPE_CHECKING:
    from .backend import ZarrBackend

__all__ = ["Piece", "build_loader", "select_pieces"]


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
    values (all of them at once: one round trip to the store).
    """
    if time_range is not None:
        t0, t1 = (int(t) for t in time_range)
        if t1 < t0:
            raise ValueError(f"time_range end {t1} is before its start {t0}")
    chosen = []  # (partition, its time values are needed)
    for p in m.partitions:
        if p.rows == 0 or p.segment is None:
            continue
        if time_range is not None:
            if p.end <= t0 or p.start >= t1:
                if not (p.start == p.end == t0):
                    continue
            chosen.append((p, not (p.start >= t0 and p.end < t1)))
        else:
            chosen.append((p, False))
    times: dict[int, np.ndarray] = {}
    targets: list[Target] = []
    for i, (p, cut) in enumerate(chosen):
        if cut and p.segment is not None:
            col = _column(backend, bk, m, p.segment, "time")
            times[i] = np.empty(p.rows, dtype=m.np_dtype["time"].base)
            targets.append(col.target(times[i], p.offset, p.offset + p.rows))
    if targets:
        _fill_rows(backend, targets, str(m.key))
    pieces: list[Piece] = []
    for i, (p, _) in enumerate(chosen):
        assert p.segment is not None
        lo, hi = p.offset, p.offset + p.rows
        if i in times:
            lo = p.offset + int(np.searchsorted(times[i], t0, "left"))
            hi = p.offset + int(np.searchsorted(times[i], t1, "left"))
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
        plan = plan_for(backend.store, col.path, col.meta)
        stored = np.empty((hi - lo, *plan.row_shape), dtype=plan.dtype)
        _fill_rows(backend, [Target(col.path, col.meta, stored, lo, hi, col.digests)], key)
        return to_field(stored, col.mapped) if col.mapped is not None else stored
    _fill_rows(backend, [col.target(out, lo, hi)], key)
    return out


def _read_task(backend: ZarrBackend, col: Column, lo: int, hi: int, key: str) -> np.ndarray:
    return read_rows(backend, col, lo, hi, key)


def _fill_rows(backend: ZarrBackend, targets: Sequence[Target], key: str, threads: int = 1) -> None:
    """Read rows ``[lo, hi)`` of stored arrays into ``out`` arrays (fields of one structured
    array, say), for every target: every chunk fetched concurrently, verified against the
    manifest and decoded into place on ``threads`` threads (:mod:`.chunks`).
    """
    read_chunks(_chunk_reads(backend, targets), key, redact_url(backend.url), threads)


def _chunk_reads(backend: ZarrBackend, targets: Sequence[Target]) -> list[ChunkRead]:
    """One read per stored chunk the targets touch, in the order first needed (a chunk that
    several targets need, such as a small field's chunk under many row blocks, once).
    """
    parts: dict[tuple[str, int], list[tuple[int, int, np.ndarray]]] = {}
    heads: dict[tuple[str, int], tuple[Any, Target]] = {}
    for t in targets:
        plan = plan_for(backend.store, t.path, t.meta)
        if t.out.shape != (t.hi - t.lo, *plan.row_shape):
            raise ValueError(
                f"out has shape {t.out.shape}; rows {t.lo}..{t.hi} of {t.path} do not fit"
            )
        n = plan.chunk_rows
        for c in range(t.lo // n, -(-t.hi // n)):
            a, b = max(t.lo, c * n), min(t.hi, (c + 1) * n)
            k = (t.path, c)
            if k not in parts:
                parts[k] = []
                heads[k] = (plan, t)
            parts[k].append((a, b, t.out[a - t.lo : b - t.lo]))
    return [
        ChunkRead(plan, path, c, tuple(parts[path, c]), t.digests)
        for (path, c), (plan, t) in heads.items()
    ]


def _read_struct(
    backend: ZarrBackend, columns: list[Column], lo: int, hi: int, dtype: np.dtype[Any], key: str
) -> np.ndarray:
    out = np.empty(hi - lo, dtype=dtype)
    _fill_rows(backend, [c.target(out[c.field], lo, hi) for c in columns], key)
    return out


def _build_lazy(
    backend: ZarrBackend, bk: str, m: Manifest, fields: list[str], pieces: list[Piece]
) -> LazyData:
    dtype = m.np_dtype
    key = str(m.key)
    out_dtype = np.dtype([(f, dtype[f].base, dtype[f].shape) for f in fields])
    # every piece's arrays, validated now; the Dask graphs are built on first use only
    columns = {p.segment: [_column(backend, bk, m, p.segment, f) for f in fields] for p in pieces}
    jobs: list[Job] = []
    offset = 0
    for piece in pieces:
        jobs.append(Job(offset, columns[piece.segment], piece.lo, piece.hi))
        offset += piece.hi - piece.lo
    reader = functools.partial(_fill_struct, backend, jobs, key)
    graph = functools.partial(_graphs, backend, bk, m, fields, pieces, columns, out_dtype)
    return LazyData(
        key=m.key, manifest=m, reader=reader, graph=graph, dtype=out_dtype, length=offset
    )


def _graphs(
    backend: ZarrBackend,
    bk: str,
    m: Manifest,
    fields: list[str],
    pieces: list[Piece],
    columns: dict[str, list[Column]],
    out_dtype: np.dtype[Any],
) -> tuple[Any, dict[str, Any]]:
    """The Dask arrays of a load: the structured array and one array per field."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    dtype = m.np_dtype
    key = str(m.key)
    token = tokenize(backend._token(), bk, m.attempt, pieces)

    field_arrays = {}
    for i, f in enumerate(fields):
        name = f"{m.key.data_type}-{f}-{token}"
        ft = dtype[f]
        dsk: dict[Any, Any] = {}
        sizes: list[int] = []
        for piece in pieces:
            col = columns[piece.segment][i]
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
    for piece in pieces:
        seg = m.segment(piece.segment)
        step = min(seg.chunk_rows[f] for f in fields)
        cols = columns[piece.segment]
        for a, b in chunk_bounds(piece.lo, piece.hi, step):
            dsk[(name, len(sizes))] = (_read_struct, backend, cols, a, b, out_dtype, key)
            sizes.append(b - a)
    if sizes:
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        struct = da.Array(graph, name, (tuple(sizes),), dtype=out_dtype)
    else:
        struct = da.from_array(np.zeros(0, dtype=out_dtype), chunks=-1)
    return struct, field_arrays


def _fill_struct(
    backend: ZarrBackend, jobs: list[Job], key: str, out: np.ndarray, threads: int
) -> None:
    """Decode every job's rows straight into their place in ``out``, on ``threads`` threads.

    The same reads as the tasks of :attr:`LazyData.array`, without Dask's per-task blocks and
    their final concatenation: one output array is written once, and every chunk is fetched
    ahead of its decoding (many requests in flight on a remote store) and decoded by one of
    ``threads`` threads.
    """
    targets: list[Target] = []
    for job in jobs:
        block = out[job.offset : job.offset + job.hi - job.lo]
        targets.extend(c.target(block[c.field], job.lo, job.hi) for c in job.columns)
    _fill_rows(backend, targets, key, threads)
