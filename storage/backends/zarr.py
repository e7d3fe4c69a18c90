"""ZarrBackend: compressed Zarr v3 over any fsspec URL.

Layout under the root URL (see ``DESIGN.md``)::

    data/<run_id>/<data_type>-<hash>/manifest.json     written last: the commit
    data/<run_id>/<data_type>-<hash>/<attempt>/        Zarr v3 group of one save attempt
        <segment>/<field>                              one array per field

Every array is plain Zarr v3 with ``dimension_names``, so zarr-python and xarray open it
without strata.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from zarr.codecs import Crc32cCodec

from .. import __version__
from ..codecs import CompressorLike, compressors
from ..errors import DataCorrupted, DataExistsError, DataNotAvailable, InvalidKey, ReadOnlyError
from ..fs import atomic_write, exclusive_write, open_fs, redact, redact_url, split_url, zarr_store
from ..keys import DataKey, validate_data_type, validate_run_id
from ..lazy import LazyData
from ..manifest import Manifest, Partition, Segment, now_iso
from ..objects.fsstore import FsObjectStore  # stored objects (issue 5): see that module
from ..records import dtype_to_json
from ..saver import Saver
from .base import StorageBackend

__all__ = ["ZarrBackend", "ZarrSaver"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_HASH_RE = re.compile(r"^[a-z2-7]{8,64}$")
_ATTEMPT_RE = re.compile(r"^a(\d{8}T\d{12})Z_[0-9a-f]{12}$")

# Filesystems and Zarr stores are built once per process and URL: tasks on a worker share them.
_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def _rebuild(cls: type[ZarrBackend], kwargs: dict[str, Any]) -> ZarrBackend:
    return cls(**kwargs)


class ZarrBackend(FsObjectStore, StorageBackend):
    """Stores data types as Zarr v3 groups under an fsspec URL.

    Parameters
    ----------
    url
        A local path, ``file://``, ``memory://``, ``s3://bucket/prefix``, ``ssh://host/path``
        or any fsspec URL.
    storage_options
        Passed to fsspec (credentials, endpoints). Never shown in reprs or errors.
    compressor
        A preset name (see :data:`strata.storage.codecs.PRESETS`), a zarr or numcodecs codec, or a
        list of them. A crc32c checksum is always appended.
    chunk_target_mb
        Uncompressed size of a chunk in MiB; much smaller partitions are merged.
    readonly
        Refuse savers and removals.

    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        compressor: CompressorLike = None,
        chunk_target_mb: float = 32,
        readonly: bool = False,
    ) -> None:
        self.protocol, self.root = split_url(url)
        self.url = url if "://" in url else self.root
        self.storage_options = dict(storage_options or {})
        self.compressor = compressor
        # the checksum is always the last codec: decoded first, it refuses damaged chunks
        self.compressors = [*compressors(compressor), Crc32cCodec()]
        if not chunk_target_mb > 0:
            raise ValueError(f"chunk_target_mb must be positive, got {chunk_target_mb!r}")
        self.chunk_target_mb = chunk_target_mb
        self.readonly = readonly

    # -- identity ---------------------------------------------------------------------------
    def _init_kwargs(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "compressor": self.compressor,
            "chunk_target_mb": self.chunk_target_mb,
            "readonly": self.readonly,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._init_kwargs()))

    def _token(self) -> str:
        return json.dumps([self.url, repr(sorted(self.storage_options.items()))])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ZarrBackend):
            return NotImplemented
        return type(self) is type(other) and repr(self._init_kwargs()) == repr(other._init_kwargs())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._token()))

    def __repr__(self) -> str:
        opts = f", storage_options={redact(self.storage_options)!r}" if self.storage_options else ""
        return f"{type(self).__name__}({redact_url(self.url)!r}{opts})"

    @property
    def chunk_target_bytes(self) -> int:
        """Target uncompressed chunk size in bytes."""
        return max(1, int(self.chunk_target_mb * 2**20))

    # -- plumbing ---------------------------------------------------------------------------
    def _cached(self, kind: str, make: Any) -> Any:
        k = (kind, type(self).__name__, self._token())
        with _CACHE_LOCK:
            if k not in _CACHE:
                _CACHE[k] = make()
            return _CACHE[k]

    @property
    def fs(self) -> Any:
        """The synchronous fsspec filesystem (cached per process)."""
        return self._cached("fs", lambda: open_fs(self.url, self.storage_options)[0])

    @property
    def fs_root(self) -> str:
        """The root path within :attr:`fs`."""
        root: str = self._cached("root", lambda: open_fs(self.url, self.storage_options)[1])
        return root

    @property
    def store(self) -> Any:
        """The Zarr store rooted at the URL (cached per process)."""
        return self._cached("store", lambda: zarr_store(self.url, self.storage_options))

    def close(self) -> None:
        """Forget this process's cached filesystem and store for this URL (closing
        connections where the filesystem can); the next use opens new ones.
        """
        with _CACHE_LOCK:
            items = [k for k in _CACHE if k[1:] == (type(self).__name__, self._token())]
            objs = [_CACHE.pop(k) for k in items]
        for obj in objs:
            closer = getattr(obj, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception as e:  # closing is best effort
                    logger.debug("closing %r: %s", obj, e)

    def path(self, *parts: str) -> str:
        """An fsspec path below the root."""
        return "/".join([self.fs_root.rstrip("/"), *parts])

    def _invalidate(self, path: str) -> None:
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(path)

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot {what}")

    # -- keys -------------------------------------------------------------------------------
    def backend_key(self, key: DataKey) -> str:
        """``<run_id>/<data_type>-<lineage hash>``."""
        return f"{key.run_id}/{key.name}"

    @staticmethod
    def parse_backend_key(backend_key: str) -> tuple[str, str, str]:
        """Split and validate a backend key into ``(run_id, data_type, lineage_hash)``."""
        if not isinstance(backend_key, str) or backend_key.count("/") != 1:
            raise InvalidKey(f"backend key {backend_key!r} is not '<run_id>/<data_type>-<hash>'")
        run_id, name = backend_key.split("/")
        validate_run_id(run_id)
        data_type, sep, h = name.rpartition("-")
        if not sep or not _HASH_RE.match(h):
            raise InvalidKey(f"backend key {backend_key!r} is not '<run_id>/<data_type>-<hash>'")
        validate_data_type(data_type)
        return run_id, data_type, h

    def _key_dir(self, backend_key: str) -> str:
        self.parse_backend_key(backend_key)
        return self.path("data", backend_key)

    def _zarr_prefix(self, backend_key: str) -> str:
        return f"data/{backend_key}"

    # -- metadata ---------------------------------------------------------------------------
    def get_metadata(self, backend_key: str) -> Manifest:
        """Read and verify the manifest of ``backend_key``."""
        path = f"{self._key_dir(backend_key)}/{MANIFEST}"
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            raise DataNotAvailable(
                f"nothing committed at {backend_key!r} in {redact_url(self.url)}"
            ) from None
        where = f"{redact_url(self.url)}/data/{backend_key}/{MANIFEST}"
        m = Manifest.from_bytes(raw, where)
        run_id, data_type, h = self.parse_backend_key(backend_key)
        if (m.key.run_id, m.key.data_type, m.key.lineage_hash) != (run_id, data_type, h):
            raise DataCorrupted(f"manifest {where} describes {m.key}, not {backend_key}")
        return m

    def list_backend_keys(self, run_id: str | None = None) -> list[str]:
        """Backend keys of committed (or partly written) data, optionally of one run."""
        runs = (
            [validate_run_id(run_id)] if run_id is not None else self._ls_names(self.path("data"))
        )
        out = []
        for run in runs:
            for name in self._ls_names(self.path("data", run)):
                out.append(f"{run}/{name}")
        return sorted(out)

    def _ls_names(self, path: str) -> list[str]:
        self._invalidate(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    # -- saving -----------------------------------------------------------------------------
    def saver(
        self,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> ZarrSaver:
        """A saver for ``key``; raises ``DataExistsError`` at once if it is already committed."""
        self._check_writable(f"save {key}")
        if self.backend_key(key) != backend_key:
            raise InvalidKey(f"backend key {backend_key!r} does not belong to {key}")
        if not overwrite and self.exists(backend_key):
            raise DataExistsError(
                f"{key} is already stored in {redact_url(self.url)}; "
                "pass overwrite=True to replace it"
            )
        return ZarrSaver(self, backend_key, key, dtype, metadata=metadata, overwrite=overwrite)

    def array_templates(self, dtype: np.dtype[Any]) -> dict[str, dict[str, Any]]:
        """Per field, the Zarr v3 array metadata this backend writes, less shape and chunks."""
        import zarr
        from zarr.storage import MemoryStore

        out = {}
        store = MemoryStore()
        assert dtype.names is not None
        for name in dtype.names:
            ft = dtype[name]
            arr = zarr.create_array(
                store,
                name=name,
                shape=(0, *ft.shape),
                dtype=ft.base,
                chunks=(1, *ft.shape),
                compressors=self.compressors,
                fill_value=0,
                dimension_names=_dim_names(name, len(ft.shape)),
                zarr_format=3,
            )
            md = arr.metadata.to_dict()
            for k in ("shape", "chunk_grid"):
                md.pop(k)
            out[name] = json.loads(json.dumps(md))
        return out

    def remove(self, backend_key: str) -> None:
        """Remove committed data: the manifest first, then the attempt directories."""
        self._check_writable(f"remove {backend_key}")
        d = self._key_dir(backend_key)
        self._unindex_array(backend_key)  # stored-object index first (FsObjectStore)
        try:
            self.fs.rm_file(f"{d}/{MANIFEST}")
        except FileNotFoundError:
            raise DataNotAvailable(f"nothing committed at {backend_key!r}") from None
        self._invalidate(d)
        if self.fs.exists(d):
            self.fs.rm(d, recursive=True)
        self._invalidate(d)

    # -- garbage collection -----------------------------------------------------------------
    def gc(self, min_age_seconds: float = 3600.0, dry_run: bool = False) -> list[str]:
        """Remove what failed or killed saves left: attempts no manifest references.

        Only attempts older than ``min_age_seconds`` are removed (younger ones may belong to a
        save in progress). Returns the removed paths (relative to the root).
        """
        if not dry_run:
            self._check_writable("gc")
        removed = []
        now = _dt.datetime.now(_dt.UTC)
        for bk in self.list_backend_keys():
            try:
                self.parse_backend_key(bk)
            except InvalidKey:
                logger.warning("gc: skipping %r, which is not a strata key directory", bk)
                continue
            d = self.path("data", bk)
            try:
                live = self.get_metadata(bk).attempt
            except DataNotAvailable:
                live = None
            except DataCorrupted:
                logger.warning("gc: %s has a damaged manifest; leaving it for inspection", bk)
                continue
            names = self._ls_names(d)
            for name in names:
                if name == MANIFEST or name == live:
                    continue
                m = _ATTEMPT_RE.match(name)
                if m:
                    started = _dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S%f").replace(
                        tzinfo=_dt.UTC
                    )
                    if (now - started).total_seconds() < min_age_seconds:
                        continue
                elif not name.endswith(".tmp"):
                    continue
                removed.append(f"data/{bk}/{name}")
                if not dry_run:
                    self.fs.rm(f"{d}/{name}", recursive=True)
            if live is None and not dry_run and not self._ls_names(d):
                try:
                    self.fs.rmdir(d)
                except (FileNotFoundError, OSError):
                    pass
        return removed

    # -- loading ----------------------------------------------------------------------------
    def loader(
        self,
        backend_key: str,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over ``backend_key``.

        Reads the manifest only (plus, with ``time_range``, the ``time`` values of the
        partitions that straddle its ends). ``fields`` selects arrays to read; ``time_range``
        ``(t0, t1)`` selects records with ``t0 <= time < t1``, reading only overlapping
        partitions. The graph has one task per stored chunk.
        """
        m = self.get_metadata(backend_key)
        return self.loader_from_manifest(backend_key, m, fields=fields, time_range=time_range)

    def loader_from_manifest(
        self,
        backend_key: str,
        m: Manifest,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """As :meth:`loader`, for a manifest already read."""
        dtype = m.np_dtype
        names = list(dtype.names or ())
        if fields is None:
            sel = names
        else:
            if isinstance(fields, str):
                fields = [fields]
            sel = list(dict.fromkeys(fields))
            unknown = [f for f in sel if f not in names]
            if unknown:
                raise ValueError(f"{m.key} has no field(s) {unknown}; its fields are {names}")
            if not sel:
                raise ValueError("fields= must name at least one field")
        pieces = self._select(backend_key, m, time_range)
        prefix = f"{self._zarr_prefix(backend_key)}/{m.attempt}"
        return _build_lazy(self, m, prefix, sel, pieces, backend_key)

    def _select(
        self, backend_key: str, m: Manifest, time_range: tuple[int, int] | None
    ) -> list[tuple[str, int, int]]:
        pieces: list[tuple[str, int, int]] = []
        if time_range is not None:
            t0, t1 = (int(t) for t in time_range)
            if t1 < t0:
                raise ValueError(f"time_range end {t1} is before its start {t0}")
        prefix = f"{self._zarr_prefix(backend_key)}/{m.attempt}"
        for p in m.partitions:
            if p.rows == 0 or p.segment is None:
                continue
            lo, hi = p.offset, p.offset + p.rows
            if time_range is not None:
                if p.end <= t0 or p.start >= t1:
                    if not (p.start == p.end == t0):
                        continue
                if not (p.start >= t0 and p.end < t1):
                    seg = m.segment(p.segment)
                    times = _read_rows(
                        self,
                        f"{prefix}/{seg.name}/time",
                        _array_meta(m, seg, "time"),
                        lo,
                        hi,
                        str(m.key),
                    )
                    lo, hi = (
                        p.offset + int(np.searchsorted(times, t0, "left")),
                        p.offset + int(np.searchsorted(times, t1, "left")),
                    )
                    if hi <= lo:
                        continue
            if pieces and pieces[-1][0] == p.segment and pieces[-1][2] == lo:
                pieces[-1] = (p.segment, pieces[-1][1], hi)
            else:
                pieces.append((p.segment, lo, hi))
        return pieces


def _dim_names(field: str, extra: int) -> list[str]:
    return ["row", *[f"{field}_dim_{i}" for i in range(1, extra + 1)]]


def _array_meta(m: Manifest, seg: Segment, field: str) -> dict[str, Any]:
    tpl = m.arrays[field]
    dt = m.np_dtype[field]
    return {
        **tpl,
        "shape": [seg.rows, *dt.shape],
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, seg.chunk_rows[field]), *dt.shape]},
        },
    }


def _array_meta_obj(
    templates: dict[str, dict[str, Any]], seg: Segment, field: str, dtype: np.dtype[Any]
) -> Any:
    from zarr.core.metadata.v3 import ArrayV3Metadata

    shape = dtype[field].shape
    return ArrayV3Metadata.from_dict(
        {
            **templates[field],
            "shape": [seg.rows, *shape],
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [max(1, seg.chunk_rows[field]), *shape]},
            },
        }
    )


def _group_meta(attributes: dict[str, Any]) -> Any:
    from zarr.core.group import GroupMetadata

    return GroupMetadata(attributes=attributes, zarr_format=3)


async def _put_metadata(store: Any, path: str, meta: Any) -> None:
    """Write Zarr metadata documents (``zarr.json``) for the node at ``path``, and nothing else."""
    from zarr.core.buffer import default_buffer_prototype

    for name, buf in meta.to_buffer_dict(default_buffer_prototype()).items():
        await store.set(f"{path}/{name}", buf)


def _read_rows(
    backend: ZarrBackend,
    path: str,
    meta: dict[str, Any],
    lo: int,
    hi: int,
    key: str,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read rows ``[lo, hi)`` of one stored array, into ``out`` (which may be a field of a
    structured array) if given; checksum failures become DataCorrupted.
    """
    if out is None:
        md = _async_array(backend.store, path, meta).metadata
        out = np.empty((hi - lo, *md.shape[1:]), dtype=md.dtype.to_native_dtype())
    _fill_rows(backend, [(path, meta, out, lo, hi)], key)
    return out


def _fill_rows(
    backend: ZarrBackend,
    targets: Sequence[tuple[str, dict[str, Any], np.ndarray, int, int]],
    key: str,
) -> None:
    """Read rows ``[lo, hi)`` of stored arrays into ``out`` arrays (fields of one structured
    array, say), for every ``(path, metadata, out, lo, hi)`` of ``targets``.

    Zarr's event loop fetches and decodes every chunk concurrently (its codecs run in its
    threads), in one round trip; copying the decoded rows into place happens here, in the
    calling (Dask worker) thread, so the copies of concurrent tasks run in parallel instead of
    one after another in the loop.
    """
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    proto = default_buffer_prototype()

    async def one(arr: Any, path: str, c: int) -> Any:
        md = arr.metadata
        coords = (c, *[0] * (len(md.shape) - 1))
        buf = await (arr.store_path / md.encode_chunk_key(coords)).get(prototype=proto)
        if buf is None:
            return None  # never written: the fill value
        try:
            spec = md.get_chunk_spec(coords, arr.config, prototype=proto)
            (decoded,) = await arr.codec_pipeline.decode([(buf, spec)])
        except ValueError as e:
            if "checksum" not in str(e).lower():
                raise
            raise DataCorrupted(
                f"{key}: stored chunk {c} of {path} fails its crc32c checksum "
                f"({redact_url(backend.url)}); the data on storage is damaged"
            ) from e
        return decoded

    # (array, path, chunk index, chunk rows, out, lo, hi): one per chunk to read
    jobs: list[tuple[Any, str, int, int, np.ndarray, int, int]] = []
    for path, meta, out, lo, hi in targets:
        arr = _async_array(backend.store, path, meta)
        md = arr.metadata
        if out.shape != (hi - lo, *md.shape[1:]):
            raise ValueError(f"out has shape {out.shape}; rows {lo}..{hi} of {path} do not fit")
        n = max(1, int(md.chunks[0]))
        jobs.extend((arr, path, c, n, out, lo, hi) for c in range(lo // n, -(-hi // n)))
    if not jobs:
        return

    async def fetch() -> list[Any]:
        return list(await asyncio.gather(*(one(j[0], j[1], j[2]) for j in jobs)))

    for (arr, _, c, n, out, lo, hi), decoded in zip(jobs, sync(fetch()), strict=True):
        a, b = max(lo, c * n), min(hi, (c + 1) * n)
        if decoded is None:
            out[a - lo : b - lo] = arr.metadata.fill_value
        else:
            out[a - lo : b - lo] = decoded.as_numpy_array()[a - c * n : b - c * n]


_ARRAYS: dict[tuple[int, str, str], Any] = {}
_ARRAYS_LOCK = threading.Lock()
_ARRAYS_MAX = 4096


def _async_array(store: Any, path: str, meta: dict[str, Any]) -> Any:
    """A zarr ``AsyncArray`` for ``meta`` at ``path``, parsed once per process (parsing the
    metadata and building the codec pipeline costs more than reading a small chunk).
    """
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    k = (id(store), path, json.dumps(meta, sort_keys=True))
    with _ARRAYS_LOCK:
        arr = _ARRAYS.get(k)
    if arr is None:
        arr = AsyncArray(meta, StorePath(store, path))  # type: ignore[call-overload]
        with _ARRAYS_LOCK:
            if len(_ARRAYS) >= _ARRAYS_MAX:
                _ARRAYS.clear()
            _ARRAYS[k] = arr
    return arr


def _read_struct(
    backend: ZarrBackend,
    parts: list[tuple[str, str, dict[str, Any]]],
    lo: int,
    hi: int,
    dtype: np.dtype[Any],
    key: str,
) -> np.ndarray:
    out = np.empty(hi - lo, dtype=dtype)
    _fill_rows(backend, [(path, meta, out[field], lo, hi) for field, path, meta in parts], key)
    return out


def _build_lazy(
    backend: ZarrBackend,
    m: Manifest,
    prefix: str,
    fields: list[str],
    pieces: list[tuple[str, int, int]],
    backend_key: str,
) -> LazyData:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    dtype = m.np_dtype
    key = str(m.key)
    token = tokenize(backend._token(), backend_key, m.attempt, pieces)
    out_dtype = np.dtype([(f, dtype[f].base, dtype[f].shape) for f in fields])

    field_arrays = {}
    for f in fields:
        name = f"{m.key.data_type}-{f}-{token}"
        ft = dtype[f]
        dsk: dict[Any, Any] = {}
        sizes: list[int] = []
        for seg_name, lo, hi in pieces:
            seg = m.segment(seg_name)
            meta = _array_meta(m, seg, f)
            for a, b in _chunk_bounds(lo, hi, seg.chunk_rows[f]):
                dsk[(name, len(sizes), *([0] * ft.ndim))] = (
                    _read_rows,
                    backend,
                    f"{prefix}/{seg_name}/{f}",
                    meta,
                    a,
                    b,
                    key,
                )
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
    jobs: list[_Job] = []
    for seg_name, lo, hi in pieces:
        seg = m.segment(seg_name)
        step = min(seg.chunk_rows[f] for f in fields)
        parts = [(f, f"{prefix}/{seg_name}/{f}", _array_meta(m, seg, f)) for f in fields]
        for a, b in _chunk_bounds(lo, hi, step):
            dsk[(name, len(sizes))] = (_read_struct, backend, parts, a, b, out_dtype, key)
            jobs.append((sum(sizes), parts, a, b))
            sizes.append(b - a)
    if sizes:
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        struct = da.Array(graph, name, (tuple(sizes),), dtype=out_dtype)
    else:
        struct = da.from_array(np.zeros(0, dtype=out_dtype), chunks=-1)
    reader = functools.partial(_fill_struct, backend, jobs, key)
    return LazyData(key=m.key, manifest=m, array=struct, fields=field_arrays, reader=reader)


# (offset in the output, [(field, path, array metadata)], first row, end row) of a segment
_Job = tuple[int, list[tuple[str, str, dict[str, Any]]], int, int]


def _fill_struct(
    backend: ZarrBackend, jobs: list[_Job], key: str, out: np.ndarray, threads: int
) -> None:
    """Decode every job's rows straight into their place in ``out``, on ``threads`` threads.

    The same reads as the tasks of :attr:`LazyData.array`, without Dask's per-task blocks and
    their final concatenation: one output array is written once. Consecutive jobs are read
    together (their chunks fetched and decoded concurrently in one round trip to zarr's event
    loop) up to about a chunk's worth of output, so reading a small field costs little more
    than its bytes.
    """
    from concurrent.futures import ThreadPoolExecutor

    groups: list[list[_Job]] = []
    size = 0
    for job in jobs:
        nbytes = (job[3] - job[2]) * out.dtype.itemsize
        if not groups or size + nbytes > GROUP_READ_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(job)
        size += nbytes

    def run(group: list[_Job]) -> None:
        targets: list[tuple[str, dict[str, Any], np.ndarray, int, int]] = []
        for offset, parts, a, b in group:
            block = out[offset : offset + b - a]
            targets.extend((path, meta, block[field], a, b) for field, path, meta in parts)
        _fill_rows(backend, targets, key)

    if threads <= 1 or len(groups) <= 1:
        for group in groups:
            run(group)
        return
    with ThreadPoolExecutor(min(threads, len(groups)), thread_name_prefix="strata-read") as pool:
        for _ in pool.map(run, groups):
            pass


GROUP_READ_BYTES = 16 * 2**20
"""Output bytes up to which :meth:`LazyData.to_numpy` reads consecutive pieces together."""


def _chunk_bounds(lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` at multiples of ``chunk``."""
    chunk = max(1, chunk)
    out = []
    a = lo
    while a < hi:
        b = min(hi, (a // chunk + 1) * chunk)
        out.append((a, b))
        a = b
    return out


_WRITE_CONFIG: Any = {"write_empty_chunks": True}
"""Zarr array config of written arrays: chunks equal to the fill value are written too."""


def _new_attempt() -> str:
    t = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"a{t}Z_{uuid.uuid4().hex[:12]}"


class ZarrSaver(Saver):
    """Writes one data type as a new attempt group of a :class:`ZarrBackend`, then commits it
    with an exclusively created manifest.
    """

    def __init__(
        self,
        backend: ZarrBackend,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__(
            key,
            dtype,
            chunk_target_bytes=backend.chunk_target_bytes,
            metadata=metadata,
            overwrite=overwrite,
        )
        json.dumps(self.metadata, allow_nan=False)  # metadata must be plain JSON
        self.backend = backend
        self.backend_key = backend_key
        self.attempt = _new_attempt()
        self.prefix = f"{backend._zarr_prefix(backend_key)}/{self.attempt}"
        self.templates = backend.array_templates(self.dtype)

    def _chunk_rows(self, row_bytes: int, rows: int) -> int:
        max_rows = max(1, self.chunk_target_bytes // max(1, row_bytes))
        nchunks = max(1, math.ceil(rows / max_rows))
        return max(1, math.ceil(rows / nchunks))

    def _clear_rerun_leftovers(self, name: str) -> None:
        """On local disk, remove what an earlier run of this segment's task left (a task rerun
        after its worker was killed: zarr's ``*.partial`` temporary files). The segment has
        one writer, this task, so nothing else can be writing there. Object stores write
        whole objects and leave no such files; one ``stat`` is the whole cost otherwise.
        """
        from fsspec.implementations.local import LocalFileSystem

        if isinstance(self.backend.fs, LocalFileSystem):
            path = self.backend.path("data", self.backend_key, self.attempt, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)

    def _write_segment(self, name: str, data: np.ndarray) -> Segment:
        import asyncio

        from zarr.core.array import AsyncArray
        from zarr.core.sync import sync
        from zarr.storage import StorePath

        store = self.backend.store
        gpath = f"{self.prefix}/{name}"
        names = list(self.dtype.names or ())
        seg = Segment(
            name, len(data), {f: self._chunk_rows(self.dtype[f].itemsize, len(data)) for f in names}
        )

        # Fields are copied out of the records here, in the calling (Dask worker) thread, not in
        # zarr's single event-loop thread; each chunk is then set on its own with exactly its
        # rows, so zarr neither allocates a fill-valued chunk to merge into nor scans the chunk
        # for emptiness (write_empty_chunks: the manifest, not chunk presence, says what exists).
        columns = {f: np.ascontiguousarray(data[f]) for f in names}
        self._clear_rerun_leftovers(name)

        async def one(f: str) -> None:
            # Metadata is written without zarr's parent-group creation: every object under the
            # segment has exactly one writer (this task), and no request is spent on parents.
            meta = _array_meta_obj(self.templates, seg, f, self.dtype)
            arr = AsyncArray(meta, StorePath(store, f"{gpath}/{f}"), config=_WRITE_CONFIG)
            await _put_metadata(store, f"{gpath}/{f}", meta)
            col = columns[f]
            await asyncio.gather(
                *(
                    arr.setitem(slice(a, b), col[a:b])
                    for a, b in _chunk_bounds(0, len(col), seg.chunk_rows[f])
                )
            )

        async def write() -> None:
            await asyncio.gather(
                _put_metadata(store, gpath, _group_meta({})), *(one(f) for f in names)
            )

        sync(write())
        return seg

    def _commit(self, partitions: list[Partition], segments: list[Segment]) -> Manifest:
        b = self.backend
        from zarr.core.sync import sync

        attrs = {"strata": {"key": self.key.to_dict(), "attempt": self.attempt}}
        sync(_put_metadata(b.store, self.prefix, _group_meta(attrs)))
        manifest = Manifest(
            key=self.key,
            dtype=dtype_to_json(self.dtype),
            arrays=self.templates,
            attempt=self.attempt,
            partitions=partitions,
            segments=segments,
            writing_started=self.started,
            writing_ended=now_iso(),
            metadata=self.metadata,
            strata_version=__version__,
        )
        raw = manifest.to_bytes()
        d = b._key_dir(self.backend_key)
        path = f"{d}/{MANIFEST}"
        if self.overwrite:
            try:
                old: Manifest | None = b.get_metadata(self.backend_key)
            except (DataNotAvailable, DataCorrupted):
                old = None
            atomic_write(b.fs, path, raw)
            if old is not None and old.attempt != self.attempt:
                b.fs.rm(f"{d}/{old.attempt}", recursive=True)
        else:
            try:
                exclusive_write(b.fs, path, raw)
            except FileExistsError:
                mine = self._already_committed()
                if mine is not None:
                    # A rerun of this attempt's commit task (its worker died after writing
                    # the manifest): the commit stands; finish it (the index is idempotent).
                    b._index_array(self.backend_key, mine)
                    return mine
                self.abort()
                raise DataExistsError(
                    f"{self.key} was committed by another saver while this one was writing; "
                    "this attempt was discarded"
                ) from None
            except BaseException:
                self.abort()  # e.g. permission denied: leave nothing behind
                raise
        b._invalidate(d)
        b._index_array(self.backend_key, manifest)  # as a stored object (FsObjectStore)
        logger.info("committed %s (%d rows, %d segments)", self.key, manifest.rows, len(segments))
        return manifest

    def _already_committed(self) -> Manifest | None:
        """The committed manifest if it commits this very attempt, else ``None``."""
        b = self.backend
        b._invalidate(b._key_dir(self.backend_key))
        try:
            m = b.get_metadata(self.backend_key)
        except (DataNotAvailable, DataCorrupted):
            return None
        return m if m.attempt == self.attempt else None

    def abort(self) -> None:
        """Remove this attempt's directory (its uncommitted segments). Does nothing if this
        attempt was committed (by this object or a copy of it on a worker).
        """
        b = self.backend
        d = f"{b._key_dir(self.backend_key)}/{self.attempt}"
        try:
            if b.get_metadata(self.backend_key).attempt == self.attempt:
                return
        except (DataNotAvailable, DataCorrupted):
            pass
        try:
            b._invalidate(d)
            if b.fs.exists(d):
                b.fs.rm(d, recursive=True)
            parent = b._key_dir(self.backend_key)
            b._invalidate(parent)
            if not b.fs.exists(f"{parent}/{MANIFEST}") and not b._ls_names(parent):
                b.fs.rmdir(parent)
        except (FileNotFoundError, OSError) as e:
            logger.debug("abort of %s: %s", self.attempt, e)
