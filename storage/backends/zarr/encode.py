"""Chunk encoding of the write path without zarr's codec pipeline: the same bytes, less cost.

zarr encodes a chunk through its codec pipeline: buffer wrappers, one ``asyncio.to_thread``
per codec, and a contiguous copy of every field taken out of the structured records first. For
the chains of strata's presets but gzip (``bytes``, then ``blosc``, ``zstd`` or nothing, then
``crc32c``, all Zarr v3 core codecs) :class:`ChunkEncoder` produces the identical bytes with
numcodecs' Blosc / Zstd and google-crc32c directly, in the calling thread (they release the
GIL, so the Dask worker threads compress in parallel), copying a strided field into a buffer
the thread reuses instead of a fresh array each time. Other chains (gzip, numcodecs
extensions, several compressors) return ``None`` from :func:`encoder_for` and go through zarr
as before. A test compares both paths byte for byte.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import google_crc32c
import numpy as np

__all__ = ["ChunkEncoder", "encode_threads", "encoder_for", "in_order"]

T = TypeVar("T")

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


_SCRATCH = threading.local()
"""One reused buffer per calling thread, shared by every encoder: encoders live as long as the
saver copies of a worker's finished tasks (kept while their results are), a buffer each would
add up to a chunk per task held."""


class ChunkEncoder:
    """Encodes chunks of one array template (``bytes`` [+ ``blosc`` or ``zstd``] + ``crc32c``).

    Parameters
    ----------
    blosc
        The ``configuration`` of the template's ``blosc`` codec, or ``None`` for none.
    fill_value
        The template's fill value: an edge chunk is padded with it, as zarr stores edge chunks
        whole.
    zstd
        The ``configuration`` of the template's ``zstd`` codec (instead of ``blosc``).

    """

    def __init__(
        self, blosc: dict[str, Any] | None, fill_value: Any, zstd: dict[str, Any] | None = None
    ) -> None:
        self.codec: Any = None
        if zstd is not None:
            from numcodecs import Zstd

            self.codec = Zstd(level=int(zstd["level"]), checksum=bool(zstd.get("checksum", False)))
        elif blosc is not None:
            from numcodecs import Blosc

            self.codec = Blosc(
                cname=str(blosc["cname"]),
                clevel=int(blosc["clevel"]),
                shuffle=_SHUFFLE[str(blosc["shuffle"])],
                blocksize=int(blosc.get("blocksize", 0)),
                typesize=int(blosc["typesize"]),
            )
        self.fill_value = fill_value

    def _buffer(self, nbytes: int) -> np.ndarray:
        buf: np.ndarray | None = getattr(_SCRATCH, "buf", None)
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(nbytes, np.uint8)
            _SCRATCH.buf = buf
        return buf[:nbytes]

    def encode(self, rows: np.ndarray, chunk_rows: int) -> bytes:
        """The stored bytes of a chunk of ``chunk_rows`` rows holding ``rows`` (padded with
        the fill value if shorter): the encoded data followed by its crc32c (little endian).
        """
        data, crc = self.encode_parts(rows, chunk_rows)
        return data + crc

    def encode_parts(self, rows: np.ndarray, chunk_rows: int) -> tuple[bytes, bytes]:
        """As :meth:`encode`, as ``(encoded data, its 4-byte crc32c)``: the stored object is
        their concatenation (a writer that takes parts spares copying the data once more).
        """
        dtype = rows.dtype.newbyteorder("<") if rows.dtype.byteorder == ">" else rows.dtype
        shape = (chunk_rows, *rows.shape[1:])
        if len(rows) == chunk_rows and rows.flags.c_contiguous and dtype == rows.dtype:
            flat = rows.reshape(-1).view(np.uint8)
        else:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            flat = self._buffer(nbytes)
            out = flat.view(dtype).reshape(shape)
            out[: len(rows)] = rows
            if len(rows) < chunk_rows:
                out[len(rows) :] = self.fill_value
        data = bytes(self.codec.encode(flat)) if self.codec is not None else flat.tobytes()
        crc = int(google_crc32c.value(data))
        return data, crc.to_bytes(4, "little")


def encoder_for(template: dict[str, Any]) -> ChunkEncoder | None:
    """A :class:`ChunkEncoder` for a field's array template, or ``None`` if its codec chain is
    not ``bytes`` [+ ``blosc`` or ``zstd``] + ``crc32c`` (zarr's pipeline encodes it then).
    """
    codecs = template.get("codecs") or []
    names = [c.get("name") if isinstance(c, dict) else None for c in codecs]
    if len(names) < 2 or names[0] != "bytes" or names[-1] != "crc32c":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if endian != "little" or template.get("storage_transformers"):
        return None
    middle = codecs[1:-1]
    if not middle:
        return ChunkEncoder(None, template.get("fill_value", 0))
    if len(middle) != 1 or middle[0].get("name") not in ("blosc", "zstd"):
        return None
    cfg = middle[0].get("configuration") or {}
    if middle[0]["name"] == "zstd":
        if "level" not in cfg:
            return None
        return ChunkEncoder(None, template.get("fill_value", 0), zstd=cfg)
    if not {"cname", "clevel", "shuffle", "typesize"} <= set(cfg) or cfg["shuffle"] not in _SHUFFLE:
        return None
    return ChunkEncoder(cfg, template.get("fill_value", 0))


# -- the encoding pool ---------------------------------------------------------------------
_POOL: tuple[int, ThreadPoolExecutor, int] | None = None
"""(pid, pool, its threads): a forked child makes its own."""
_POOL_LOCK = threading.Lock()

MIN_PARALLEL_BYTES = 2**20
"""Bytes of a segment below which its chunks are encoded in the calling thread (handing a
small chunk to another thread costs more than encoding it)."""


def encode_threads() -> int:
    """Threads of the encoding pool: the threads of this process's Dask worker, if it is one,
    else the CPUs this process may run on (its affinity: a batch job's share, not the node's).
    """
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool() -> tuple[ThreadPoolExecutor, int]:
    """The process's encoding pool and its number of threads."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            n = encode_threads()
            _POOL = (os.getpid(), ThreadPoolExecutor(n, "strata-encode"), n)
        return _POOL[1], _POOL[2]


def in_order(jobs: Iterable[Callable[[], T]], parallel: bool = True) -> Generator[T, None, None]:
    """The results of ``jobs``, in order, computed on the process's encoding pool a few ahead
    of the one being consumed (or one by one in the calling thread if not ``parallel``).

    Every task that saves hands its chunks to the same pool, so the cores stay busy to the
    end of a save: when one task is left, its chunks are encoded on every thread, not on its
    own one. At most twice the pool's threads are encoded ahead of the consumer, which bounds
    what is held; the jobs not yet started are cancelled if the consumer stops.
    """
    if not parallel:
        for job in jobs:
            yield job()
        return
    pool, threads = _pool()
    ahead = 2 * threads
    it = iter(jobs)
    futures: collections.deque[Future[T]] = collections.deque()
    try:
        for job in it:
            futures.append(pool.submit(job))
            if len(futures) >= ahead:
                break
        while futures:
            done = futures.popleft()
            more = next(it, None)
            if more is not None:
                futures.append(pool.submit(more))
            yield done.result()
    finally:
        for f in futures:
            f.cancel()
