"""Reading stored chunks into place: fetch, verify against the manifest, decode.

The read path of :mod:`.read` in three steps per chunk:

1. **fetch** the stored bytes (the store's ``get``, on zarr's event loop, many in flight);
2. **verify** them against the manifest: present, the size and crc32c it committed, and (for
   a chunk ending with a crc32c) that trailing checksum against the bytes before it;
3. **decode** in the calling thread, straight into the destination when it is a whole chunk
   of a C-contiguous array (a field array, a single-field read), else into a reused
   per-thread buffer followed by one copy into place (a field of a structured output, a
   partial chunk). blosc and uncompressed chunks are decoded here with numcodecs (blosc
   releases the GIL, so several threads decode in parallel); any other codec chain goes
   through zarr's own codec pipeline.

The stored format is plain Zarr v3 core codecs (``bytes``, ``blosc``, ``crc32c``); only how
strata reads it differs from zarr-python. A chunk that is missing, differs from the manifest,
fails its checksum or decodes to a number of bytes other than its rows' is
:class:`~strata.storage.errors.DataCorrupted` naming key, array and chunk.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

import numpy as np

from ... import _zarr, layout
from ...errors import DataCorrupted
from ...manifest import Digest
from . import shards

__all__ = [
    "DECODE_BYTES_PER_THREAD",
    "FETCH_WINDOW",
    "FETCH_WINDOW_BYTES",
    "ChunkRead",
    "Plan",
    "clear_plans",
    "plan_for",
    "read_chunks",
]

FETCH_WINDOW = 64
"""Chunks fetched ahead of the one being decoded, per :func:`read_chunks` call."""

DECODE_BYTES_PER_THREAD = 2**20
"""Decoded bytes of a read below which it is decoded on fewer threads than offered."""

FETCH_WINDOW_BYTES = 256 * 2**20
"""Decoded bytes of the chunks fetched ahead, at most (beyond the one being decoded)."""

_DIRECT = ("blosc", "raw")


class Plan(NamedTuple):
    """How to read the chunks of one stored array (parsed once per array template).

    Attributes
    ----------
    store
        The zarr store.
    path
        The array's path in ``store``.
    encode_key
        Chunk coordinates -> chunk key below ``path`` (the array's chunk key encoding).
    dtype
        The stored (native) dtype of the array.
    row_shape
        The shape of one row.
    chunk_rows
        Rows in every chunk (edge chunks are stored whole).
    chunk_nbytes
        Decoded bytes of one chunk.
    codec
        ``"blosc"`` or ``"raw"`` to decode here, ``None`` for zarr's codec pipeline.
    crc
        Whether the stored chunk ends with its crc32c.
    arr
        zarr's ``AsyncArray`` for the codec pipeline (only when ``codec`` is ``None``).
    local
        The :class:`~strata.storage.layout.Layout` of ``store``'s root directory when it is a
        zarr ``LocalStore`` and ``codec`` decodes here: the chunk files are then read by the
        decoding thread itself (an open and a read, about 10 us), not through the store on
        zarr's event loop (a thread hop and about 0.3 ms a chunk).
    shard
        Chunks per stored object (1: one object per chunk; more: Zarr v3 shards, see
        :mod:`.shards`). ``chunk_rows``, ``chunk_nbytes`` and chunk numbers are the inner
        chunks'; a chunk lies in object ``chunk // shard`` where the manifest's sizes say.

    """

    store: Any
    path: str
    encode_key: Any
    dtype: np.dtype[Any]
    row_shape: tuple[int, ...]
    chunk_rows: int
    chunk_nbytes: int
    codec: str | None
    crc: bool
    arr: Any = None
    local: layout.Layout | None = None
    shard: int = 1

    def chunk_key(self, index: int) -> str:
        """The store key of the object holding chunk ``index`` (along the first axis)."""
        return f"{self.path}/{self.encode_key((index // self.shard, *[0] * len(self.row_shape)))}"


class _Template(NamedTuple):
    encode_key: Any
    dtype: np.dtype[Any]
    codec: str | None
    crc: bool


# parsed array templates (metadata less shape and chunks) per (process, store, template)
_TEMPLATES: dict[tuple[int, int, str], _Template] = {}
_PLANS_LOCK = threading.Lock()
# plans per (process, store, path, array document): a manifest parsed once serves the same
# document objects to every read of it, so a repeated read builds no plan again
_PLANS: dict[tuple[int, int, str, int], tuple[dict[str, Any], Plan]] = {}
_PLANS_MAX = 4096


def _codec_kind(codecs: Sequence[Any], itemsize: int) -> tuple[str | None, bool]:
    names = [c.get("name") if isinstance(c, dict) else None for c in codecs]
    crc = bool(names) and names[-1] == "crc32c"
    inner = names[:-1] if crc else names
    if not inner or inner[0] != "bytes":
        return None, crc
    cfg = codecs[0].get("configuration") or {}
    endian = cfg.get("endian")
    if itemsize > 1 and (endian != sys.byteorder):
        return None, crc
    rest = inner[1:]
    if not rest:
        return "raw", crc
    if rest == ["blosc"]:
        return "blosc", crc
    return None, crc


def _shape_of(meta: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(shape, chunk shape)`` of a regular chunk grid, or ``None`` if anything is unusual."""
    shape, grid = meta.get("shape"), meta.get("chunk_grid")
    if not isinstance(shape, list) or not isinstance(grid, dict) or grid.get("name") != "regular":
        return None
    chunks = (grid.get("configuration") or {}).get("chunk_shape")
    if not isinstance(chunks, list) or len(chunks) != len(shape) or not shape:
        return None
    dims = (*shape, *chunks)
    if not all(type(d) is int and d >= 0 for d in dims) or chunks[0] < 1:
        return None
    return tuple(shape), tuple(chunks)


def plan_for(store: Any, path: str, meta: dict[str, Any]) -> Plan:
    """The :class:`Plan` for the array ``meta`` at ``path`` of ``store``.

    The template (everything but shape and chunk grid, the same for every segment of a field)
    is parsed by zarr once per process; zarr's array object is built only for codec chains
    decoded by zarr's pipeline.
    """
    pk = (os.getpid(), id(store), path, id(meta))
    with _PLANS_LOCK:
        hit = _PLANS.get(pk)
    if hit is not None and hit[0] is meta and hit[1].store is store:
        return hit[1]
    plan = _make_plan(store, path, meta)
    with _PLANS_LOCK:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[pk] = (meta, plan)  # holding meta keeps its id from being reused
    return plan


def _make_plan(store: Any, path: str, meta: dict[str, Any]) -> Plan:
    sharded = shards.inner_of(meta)  # ValueError for shards of another form
    if sharded is not None:
        inner, per_shard = sharded
        plan = _make_plan(store, path, inner)
        if plan.codec is None:
            raise ValueError(
                f"array {path} is sharded with codecs {inner.get('codecs')!r}: strata reads "
                "shards of bytes [+ blosc] + crc32c chunks"
            )
        return plan._replace(shard=per_shard)
    tpl = {k: v for k, v in meta.items() if k not in ("shape", "chunk_grid")}
    k = (os.getpid(), id(store), json.dumps(tpl, sort_keys=True))
    with _PLANS_LOCK:
        t = _TEMPLATES.get(k)
    shapes = _shape_of(meta)
    if t is None:
        md = _zarr.metadata_from_dict(meta)  # validates the whole document, shape included
        dtype = np.dtype(md.dtype.to_native_dtype())
        codec, crc = _codec_kind(meta.get("codecs") or (), dtype.itemsize)
        if dtype.hasobject:
            codec = None
        t = _Template(md.chunk_key_encoding.encode_chunk_key, dtype, codec, crc)
        with _PLANS_LOCK:
            if len(_TEMPLATES) >= _PLANS_MAX:
                _TEMPLATES.clear()
            _TEMPLATES[k] = t
    codec = t.codec
    if shapes is None or shapes[1][1:] != shapes[0][1:]:
        codec = None
        md = _zarr.metadata_from_dict(meta)
        shapes = tuple(md.shape), tuple(md.chunks)
    shape, chunks = shapes
    row_shape = tuple(int(d) for d in shape[1:])
    n = max(1, int(chunks[0]))
    chunk_nbytes = n * int(np.prod(row_shape, dtype=np.int64)) * t.dtype.itemsize
    arr = _zarr.async_array(store, path, meta) if codec is None else None
    local = _local_layout(store) if codec is not None else None
    return Plan(
        store, path, t.encode_key, t.dtype, row_shape, n, chunk_nbytes, codec, t.crc, arr, local
    )


def _local_layout(store: Any) -> layout.Layout | None:
    from zarr.storage import LocalStore

    return layout.Layout(str(store.root)) if isinstance(store, LocalStore) else None


def clear_plans(store: Any = None) -> None:
    """Forget cached plans (of ``store`` only, if given)."""
    with _PLANS_LOCK:
        if store is None:
            _TEMPLATES.clear()
            _PLANS.clear()
            return
        for k in [k for k in _TEMPLATES if k[1] == id(store)]:
            del _TEMPLATES[k]
        for pk in [pk for pk in _PLANS if pk[1] == id(store)]:
            del _PLANS[pk]


class ChunkRead(NamedTuple):
    """One stored chunk to read: chunk number ``chunk`` of ``plan``'s array, and where its rows go.

    ``parts`` holds ``(a, b, out)`` triples: rows ``[a, b)`` (absolute rows of the array,
    within the chunk) into ``out`` (``b - a`` rows of the array's row shape). A chunk that
    several destinations need is fetched and decoded once.
    """

    plan: Plan
    path: str
    chunk: int
    parts: tuple[tuple[int, int, np.ndarray], ...]
    digests: tuple[Digest, ...]


_scratch = threading.local()


def _scratch_buffer(nbytes: int) -> np.ndarray:
    buf: np.ndarray | None = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        _scratch.buf = buf
    return buf[:nbytes]


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _read_local(key: str, r: ChunkRead, where: str) -> np.ndarray | None:
    """The stored bytes of a chunk of a local store, read by the calling thread into its
    reused buffer; ``None`` if the file is absent. The chunk's path is the array's path
    (validated by the layout when the manifest was read) and an encoded integer chunk key; a
    symbolic link in the chunk's place is not followed (the attempt's folder was checked to
    lie below the root before reading began).
    """
    assert r.plan.local is not None
    path = r.plan.local.path(r.plan.chunk_key(r.chunk))  # every component checked
    span = _span(key, r, where)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if os.path.islink(path):
            raise DataCorrupted(
                f"{key}: chunk {r.chunk} of {r.path} in {where} is a symbolic link, not a "
                "chunk strata wrote; strata does not follow it"
            ) from e
        raise
    try:
        size = os.fstat(fd).st_size
        start = 0
        if span is not None:  # an inner chunk of a shard: its bytes where the manifest says
            start, want_size, total = span
            if size != total:
                raise _wrong_shard(key, r, where, size, total)
            size = want_size
        else:
            want = r.digests[r.chunk] if r.chunk < len(r.digests) else None
            if want is not None:  # a file grown or replaced: a byte more tells, not all of it
                size = min(size, want.size + 1)
        buf = _raw_buffer(size)
        view = memoryview(buf.data)
        got = 0
        while got < size:
            k = os.preadv(fd, [view[got:size]], start + got)
            if k == 0:  # shorter than it said: the size check against the manifest tells
                break
            got += k
        return buf[:got]
    finally:
        os.close(fd)


def _span(key: str, r: ChunkRead, where: str) -> tuple[int, int, int] | None:
    """For an inner chunk of a shard, ``(offset, size, object size)`` in its shard object
    from the manifest's sizes; ``None`` for a chunk stored alone.
    """
    k = r.plan.shard
    if k == 1:
        return None
    if r.chunk >= len(r.digests):
        raise DataCorrupted(
            f"{key}: chunk {r.chunk} of {r.path} is in a shard, but {where} lists no size of it"
        )
    s = r.chunk // k
    ends = _ends(r.digests)  # once per manifest column: every span below is O(1)
    first, last = s * k, min((s + 1) * k, len(r.digests))
    base = int(ends[first - 1]) if first else 0
    start = int(ends[r.chunk - 1]) - base if r.chunk > first else 0
    total = int(ends[last - 1]) - base + shards.INDEX_ENTRY * k + 4
    return start, r.digests[r.chunk].size, total


_ENDS: dict[int, tuple[tuple[Digest, ...], np.ndarray]] = {}
_ENDS_LOCK = threading.Lock()


def _ends(digests: tuple[Digest, ...]) -> np.ndarray:
    """Cumulative stored sizes of ``digests`` (kept per digests object, which it holds)."""
    with _ENDS_LOCK:
        hit = _ENDS.get(id(digests))
    if hit is not None and hit[0] is digests:
        return hit[1]
    ends = np.cumsum(np.fromiter((d.size for d in digests), np.int64, len(digests)))
    with _ENDS_LOCK:
        if len(_ENDS) >= _PLANS_MAX:
            _ENDS.clear()
        _ENDS[id(digests)] = (digests, ends)
    return ends


def _wrong_shard(key: str, r: ChunkRead, where: str, size: int, total: int) -> DataCorrupted:
    s = r.chunk // r.plan.shard
    return DataCorrupted(
        f"{key}: shard {s} of {r.path} (holding chunk {r.chunk}) in {where} is {size} bytes, "
        f"not the {total} the manifest committed: truncated, swapped or replaced"
    )


_raw = threading.local()


def _raw_buffer(nbytes: int) -> np.ndarray:
    """A per-thread buffer for the stored bytes of one local chunk."""
    buf: np.ndarray | None = getattr(_raw, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
        _raw.buf = buf
    return buf[:nbytes]


def _missing(key: str, r: ChunkRead, where: str) -> DataCorrupted:
    return DataCorrupted(
        f"{key}: chunk {r.chunk} of {r.path} is missing from {where} (deleted, or its "
        "attempt was collected after an overwrite); the committed data is incomplete"
    )


def _check(key: str, r: ChunkRead, raw: np.ndarray, where: str) -> None:
    """Size and crc32c of the stored bytes against the manifest, and the trailing crc32c."""
    if r.digests:
        want = r.digests[r.chunk] if r.chunk < len(r.digests) else None
        got = _zarr.object_crc32c(raw, r.plan.crc)
        if want is None or raw.nbytes != want.size or got != want.crc32c:
            raise DataCorrupted(
                f"{key}: chunk {r.chunk} of {r.path} in {where} is not the chunk the manifest "
                f"committed ({raw.nbytes} bytes, crc32c {got:08x}; expected "
                f"{want.size if want else '?'} bytes, crc32c "
                f"{f'{want.crc32c:08x}' if want else '?'}): truncated, swapped or replaced"
            )
    if r.plan.crc and (
        raw.size < 4 or _zarr.crc32c(raw[:-4]) != int.from_bytes(bytes(raw[-4:]), "little")
    ):
        raise DataCorrupted(
            f"{key}: stored chunk {r.chunk} of {r.path} fails its crc32c checksum "
            f"({where}); the data on storage is damaged"
        )


def _wrong_size(key: str, r: ChunkRead, where: str, nbytes: int) -> DataCorrupted:
    p = r.plan
    row = max(1, p.chunk_nbytes // p.chunk_rows)
    return DataCorrupted(
        f"{key}: chunk {r.chunk} of {r.path} in {where} decodes to {nbytes} bytes "
        f"({nbytes / row:g} rows), not the {p.chunk_rows} rows of {p.chunk_nbytes} bytes the "
        "manifest says"
    )


def _decode_into(key: str, r: ChunkRead, raw: np.ndarray, where: str, dest: np.ndarray) -> None:
    """Decode the verified stored bytes of a chunk into ``dest`` (uint8, the chunk's bytes)."""
    import numcodecs.blosc

    p = r.plan
    body = raw[:-4] if p.crc else raw
    if p.codec == "raw":
        if body.nbytes != p.chunk_nbytes:
            raise _wrong_size(key, r, where, body.nbytes)
        dest[:] = body
        return
    # blosc's header (version, flags, typesize, then nbytes and cbytes as little-endian
    # uint32): blosc decodes into a larger buffer without a word, so check it first
    if body.nbytes < 16:
        raise _wrong_size(key, r, where, 0)
    head = bytes(body[:16])
    nbytes = int.from_bytes(head[4:8], "little")
    cbytes = int.from_bytes(head[12:16], "little")
    if nbytes != p.chunk_nbytes or cbytes != body.nbytes:
        raise _wrong_size(key, r, where, nbytes)
    try:
        numcodecs.blosc.decompress(body, dest)
    except Exception as e:
        raise DataCorrupted(
            f"{key}: chunk {r.chunk} of {r.path} in {where} does not decode to the rows the "
            f"manifest says ({type(e).__name__}: {e})"
        ) from e


def _place(key: str, r: ChunkRead, buf: Any, where: str) -> None:
    """Verify and decode one fetched chunk into every destination of ``r.parts``."""
    if buf is None:  # committed data never reads as the fill value
        raise _missing(key, r, where)
    p = r.plan
    raw = buf if isinstance(buf, np.ndarray) else buf.as_numpy_array()
    _check(key, r, raw, where)
    first = r.chunk * p.chunk_rows
    if p.codec is not None:
        if len(r.parts) == 1:
            a, b, out = r.parts[0]
            if (
                a == first
                and b == first + p.chunk_rows
                and out.dtype == p.dtype
                and out.flags.c_contiguous
            ):
                _decode_into(key, r, raw, where, out.reshape(-1).view(np.uint8))
                return
        scratch = _scratch_buffer(p.chunk_nbytes)
        _decode_into(key, r, raw, where, scratch)
        rows = scratch.view(p.dtype).reshape(p.chunk_rows, *p.row_shape)
    else:
        try:
            rows = _zarr.run(_zarr.decode_chunk(p.arr, r.chunk, buf))
        except _zarr.ChecksumMismatch as e:
            raise DataCorrupted(
                f"{key}: stored chunk {r.chunk} of {r.path} fails its crc32c checksum "
                f"({where}); the data on storage is damaged"
            ) from e
        except Exception as e:  # the bytes do not decode to the rows the manifest says
            raise DataCorrupted(
                f"{key}: chunk {r.chunk} of {r.path} in {where} does not decode to the rows "
                f"the manifest says ({type(e).__name__}: {e})"
            ) from e
        if rows.shape[0] != p.chunk_rows:
            raise _wrong_size(key, r, where, rows.nbytes)
    for a, b, out in r.parts:
        out[...] = rows[a - first : b - first]


async def _fetch_many(
    reads: Sequence[ChunkRead], futures: Sequence[Future[Any]], key: str, where: str
) -> None:
    """Fetch the chunks of ``reads`` concurrently, each into its future (one wake-up of the
    event loop for the lot, instead of one per chunk), started in turn
    (:func:`strata.storage._zarr.gather_started_in_turn`).
    """

    async def one(group: list[int]) -> None:
        running = [i for i in group if futures[i].set_running_or_notify_cancel()]
        if not running:
            return
        try:
            bufs = await _fetch_group([reads[i] for i in group], key, where)
        except BaseException as e:  # handed to the decoding thread, which raises it
            for i in running:
                futures[i].set_exception(e)
            return
        for i, buf in zip(group, bufs, strict=True):
            if i in running:
                futures[i].set_result(buf)

    await _zarr.gather_started_in_turn(one(g) for g in _groups(reads))


def _same_object(a: ChunkRead, b: ChunkRead) -> bool:
    """Whether ``b`` is the inner chunk right after ``a`` in the same shard object."""
    k = a.plan.shard
    return k > 1 and b.plan is a.plan and b.chunk == a.chunk + 1 and b.chunk // k == a.chunk // k


def _groups(reads: Sequence[ChunkRead]) -> list[list[int]]:
    """Indices of ``reads`` fetched by one request each: a chunk stored alone, or a run of
    consecutive inner chunks of one shard.
    """
    out: list[list[int]] = []
    for i, r in enumerate(reads):
        if out and _same_object(reads[out[-1][-1]], r):
            out[-1].append(i)
        else:
            out.append([i])
    return out


async def _fetch_group(group: list[ChunkRead], key: str, where: str) -> list[Any]:
    """The stored bytes of each chunk of ``group`` (one request): a chunk's object, a whole
    shard when the run is all of it, else the byte range of the run; ``None`` if absent.
    """
    r0 = group[0]
    store, okey = r0.plan.store, r0.plan.chunk_key(r0.chunk)
    if r0.plan.shard == 1:
        return [await _zarr.fetch_key(store, okey)]
    first, last = _span(key, r0, where), _span(key, group[-1], where)
    assert first is not None
    assert last is not None
    k = r0.plan.shard
    n_stored = min(k, len(r0.digests) - r0.chunk // k * k)  # beyond the rows: none stored
    whole = r0.chunk % k == 0 and len(group) == n_stored
    a, b = first[0], last[0] + last[1]
    if whole:
        buf = await _zarr.fetch_key(store, okey)
        if buf is not None and len(buf) != first[2]:
            raise _wrong_shard(key, r0, where, len(buf), first[2])
    else:
        try:
            buf = await _zarr.fetch_range(store, okey, a, b)
        except FileNotFoundError:
            buf = None
        except OSError:  # a range past a truncated object's end: the object tells which
            buf = await _zarr.fetch_key(store, okey)
            if buf is not None:
                if len(buf) != first[2]:
                    raise _wrong_shard(key, r0, where, len(buf), first[2]) from None
                raise
    if buf is None:
        return [None] * len(group)
    raw = buf.as_numpy_array()
    out = []
    for r in group:
        span = _span(key, r, where)
        assert span is not None
        at = span[0] - (first[0] if not whole else 0)
        out.append(raw[at : at + span[1]])
    return out


def read_chunks(
    reads: Sequence[ChunkRead], key: str, where: str, threads: int = 1, window: int = FETCH_WINDOW
) -> None:
    """Fetch, verify and decode every chunk of ``reads`` into its ``out``.

    Fetches run on zarr's event loop, up to ``window`` chunks ahead of the decoding (so a
    remote store sees many requests in flight while the memory held stays bounded); decoding
    runs on ``threads`` threads (the calling one among them).
    """
    n = len(reads)
    if n == 0:
        return
    if all(r.plan.local is not None for r in reads):
        _read_local_chunks(reads, key, where, threads)
        return
    futures: list[Future[Any] | None] = [None] * n
    lock = threading.Lock()
    state = {"issued": 0, "next": 0}
    window = max(1, window, threads)
    ends = np.cumsum([r.plan.chunk_nbytes for r in reads])

    def issue_upto(first: int) -> None:
        # up to `window` chunks and FETCH_WINDOW_BYTES ahead of `first` (always `first` itself)
        with lock:
            limit = ends[first] + FETCH_WINDOW_BYTES
            a = b = state["issued"]
            while b < min(first + window, n) and (b <= first or ends[b] <= limit):
                futures[b] = Future()
                b += 1
            while 0 < b < n and _same_object(reads[b - 1], reads[b]):  # a shard in one request
                futures[b] = Future()
                b += 1
            if b > a:
                state["issued"] = b
                _zarr.submit(_fetch_many(reads[a:b], futures[a:b], key, where))  # type: ignore[arg-type]

    def take() -> int | None:
        with lock:
            i = state["next"]
            if i >= n:
                return None
            state["next"] = i + 1
            return i

    failed: list[BaseException] = []

    def work() -> None:
        while not failed:
            i = take()
            if i is None:
                return
            issue_upto(i)
            fut = futures[i]
            assert fut is not None
            try:
                buf = fut.result()
                futures[i] = None
                _place(key, reads[i], buf, where)
            except BaseException as e:
                failed.append(e)
                return

    issue_upto(0)
    _run_decoders(work, reads, threads)
    if failed:
        for f in futures:  # do not leave fetches running for a read that failed
            if f is not None:
                f.cancel()
        raise failed[0]


def _read_local_chunks(reads: Sequence[ChunkRead], key: str, where: str, threads: int) -> None:
    """:func:`read_chunks` of a local store: each of ``threads`` threads reads a chunk file
    and decodes it, then takes the next (the page cache or the disk's own read-ahead is the
    window; no event loop in between).
    """
    n = len(reads)
    lock = threading.Lock()
    state = {"next": 0}
    failed: list[BaseException] = []

    def work() -> None:
        while not failed:
            with lock:
                i = state["next"]
                if i >= n:
                    return
                state["next"] = i + 1
            try:
                _place(key, reads[i], _read_local(key, reads[i], where), where)
            except BaseException as e:
                failed.append(e)
                return

    _run_decoders(work, reads, threads)
    if failed:
        raise failed[0]


def _run_decoders(work: Any, reads: Sequence[ChunkRead], threads: int) -> None:
    """Run ``work`` on the calling thread and on up to ``threads - 1`` more: one more per
    :data:`DECODE_BYTES_PER_THREAD` of decoded bytes (starting a thread costs more than
    decoding a small read).
    """
    total = sum(r.plan.chunk_nbytes for r in reads)
    extra = min(threads, len(reads), -(-total // DECODE_BYTES_PER_THREAD)) - 1
    workers = [
        threading.Thread(target=work, name="strata-decode", daemon=True) for _ in range(extra)
    ]
    for t in workers:
        t.start()
    work()
    for t in workers:
        t.join()
