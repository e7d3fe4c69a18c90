"""The one place that uses zarr-python's internals (checked against zarr 3.1.5 and 3.1.6).

strata writes and reads Zarr v3 arrays below zarr's public API, for speed: node metadata
written without zarr's parent-group creation (so every object has one writer), chunks set with
exactly their rows, chunks fetched and decoded concurrently in one round trip. Those calls use
``zarr.core.*`` names that zarr does not promise to keep; they are all here, so a zarr upgrade is
checked against this module alone (the test suite exercises every function).

Checksums are checked here too, by type: :func:`decode_chunk` verifies a chunk's trailing
crc32c itself before zarr decodes it, and raises :class:`ChecksumMismatch`, so no caller needs
to recognise zarr's ``ValueError`` by its message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

import google_crc32c
import numpy as np

__all__ = [
    "WRITE_CONFIG",
    "ChecksumMismatch",
    "async_array",
    "chunk_key",
    "chunk_key_of",
    "fetch_range",
    "clear_array_cache",
    "crc32c",
    "decode_chunk",
    "encode_chunk",
    "fetch_chunk",
    "fetch_key",
    "group_metadata",
    "has_crc32c",
    "metadata_buffers",
    "document_bytes",
    "node_document",
    "metadata_from_dict",
    "object_crc32c",
    "put_bytes",
    "put_chunk",
    "run",
    "submit",
    "writable_array",
]

T = TypeVar("T")


class ChecksumMismatch(ValueError):
    """A chunk's stored crc32c does not match its bytes."""


def crc32c(data: Any) -> int:
    """The crc32c of a bytes-like object or contiguous numpy array (the checksum Zarr's
    ``crc32c`` codec uses), without copying it.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    return int(google_crc32c.value(data))


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine on zarr's event loop (its I/O and codec threads) and wait for it."""
    from zarr.core.sync import sync

    return sync(coro)  # type: ignore[arg-type]


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start a coroutine on zarr's event loop and return at once: a future of its result (for
    many fetches in flight while the calling thread decodes).
    """
    import asyncio

    from zarr.core import sync

    loop = sync._get_loop()
    if sync._executor is None and sync.config.get("threading.max_workers", None) is not None:
        sync._get_executor()  # as zarr's own sync() does: its executor attached to the loop
    return asyncio.run_coroutine_threadsafe(coro, loop)


def metadata_from_dict(meta: dict[str, Any]) -> Any:
    """Parse Zarr v3 array metadata (a ``zarr.json`` document) into zarr's object."""
    from zarr.core.metadata.v3 import ArrayV3Metadata

    return ArrayV3Metadata.from_dict(meta)


def group_metadata(attributes: dict[str, Any]) -> Any:
    """Zarr v3 group metadata with ``attributes``."""
    from zarr.core.group import GroupMetadata

    return GroupMetadata(attributes=attributes, zarr_format=3)


WRITE_CONFIG: Any = {"write_empty_chunks": True}
"""Array config of written arrays: chunks equal to the fill value are written too (the
manifest, not chunk presence, says what exists)."""


def writable_array(store: Any, path: str, meta: Any) -> Any:
    """An ``AsyncArray`` to write chunks of ``meta`` at ``path`` (metadata already parsed)."""
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    return AsyncArray(meta, StorePath(store, path), config=WRITE_CONFIG)


# Parsed arrays per (process, store, path, metadata): parsing metadata and building the codec
# pipeline costs more than reading a small chunk. Keyed by pid so a forked worker never uses
# its parent's objects, bounded, and cleared by clear_array_cache() (a backend's close()).
_ARRAYS: dict[tuple[int, int, str, str], Any] = {}
_ARRAYS_LOCK = threading.Lock()
_ARRAYS_MAX = 4096


def async_array(store: Any, path: str, meta: dict[str, Any]) -> Any:
    """A zarr ``AsyncArray`` for ``meta`` at ``path`` of ``store``, parsed once per process."""
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    k = (os.getpid(), id(store), path, json.dumps(meta, sort_keys=True))
    with _ARRAYS_LOCK:
        arr = _ARRAYS.get(k)
    if arr is None:
        arr = AsyncArray(meta, StorePath(store, path))  # type: ignore[call-overload]
        with _ARRAYS_LOCK:
            if len(_ARRAYS) >= _ARRAYS_MAX:
                _ARRAYS.clear()
            _ARRAYS[k] = arr
    return arr


def clear_array_cache(store: Any = None) -> None:
    """Forget parsed arrays (of ``store`` only, if given)."""
    with _ARRAYS_LOCK:
        if store is None:
            _ARRAYS.clear()
            return
        for k in [k for k in _ARRAYS if k[1] == id(store)]:
            del _ARRAYS[k]


def chunk_key(arr: Any, index: int) -> str:
    """The store key (below the array) of chunk ``index`` along the first axis."""
    return chunk_key_of(arr.metadata, index)


def chunk_key_of(md: Any, index: int) -> str:
    """The store key (below the array) of chunk ``index`` along the first axis of an array of
    metadata ``md``.
    """
    coords = (index, *[0] * (len(md.shape) - 1))
    return str(md.encode_chunk_key(coords))


async def fetch_chunk(arr: Any, index: int) -> Any:
    """The stored bytes (a zarr ``Buffer``) of chunk ``index`` of ``arr``, or ``None`` if absent."""
    from zarr.core.buffer import default_buffer_prototype

    return await (arr.store_path / chunk_key(arr, index)).get(prototype=default_buffer_prototype())


def has_crc32c(arr: Any) -> bool:
    """Whether the last codec of ``arr`` is crc32c (so its chunks end with their checksum)."""
    from zarr.codecs import Crc32cCodec

    codecs: Any = getattr(arr.metadata, "codecs", None) or ()
    return len(codecs) > 0 and isinstance(codecs[-1], Crc32cCodec)


async def decode_chunk(arr: Any, index: int, buf: Any) -> np.ndarray:
    """Decode chunk ``index`` of ``arr`` from its stored bytes ``buf``.

    Raises :class:`ChecksumMismatch` if the chunk ends with a crc32c that does not match.
    """
    from zarr.core.buffer import default_buffer_prototype

    if has_crc32c(arr):
        raw = buf.as_numpy_array()
        if raw.size < 4 or np.uint32(crc32c(raw[:-4])).tobytes() != bytes(raw[-4:]):
            raise ChecksumMismatch(f"chunk {index}: stored and computed crc32c differ")
    md = arr.metadata
    coords = (index, *[0] * (len(md.shape) - 1))
    spec = md.get_chunk_spec(coords, arr.config, prototype=default_buffer_prototype())
    (decoded,) = await arr.codec_pipeline.decode([(buf, spec)])
    out: np.ndarray = decoded.as_numpy_array()
    return out


async def encode_chunk(arr: Any, index: int, rows: np.ndarray) -> Any:
    """The encoded bytes (a zarr ``Buffer``) of chunk ``index`` of ``arr`` holding ``rows``.

    ``rows`` may be shorter than the chunk (the last chunk of an array): it is padded with the
    fill value, as zarr stores edge chunks whole. Encoding here, instead of in zarr's
    ``setitem``, gives the caller the exact bytes it stores (to record their size and digest)
    and spares zarr's read-modify-write of a partial edge chunk.
    """
    from zarr.core.buffer import default_buffer_prototype

    md = arr.metadata
    n = int(md.chunks[0])
    if len(rows) != n:
        full = np.full((n, *rows.shape[1:]), md.fill_value, dtype=rows.dtype)
        full[: len(rows)] = rows
        rows = full
    proto = default_buffer_prototype()
    coords = (index, *[0] * (len(md.shape) - 1))
    spec = md.get_chunk_spec(coords, arr.config, prototype=proto)
    (buf,) = await arr.codec_pipeline.encode([(proto.nd_buffer.from_numpy_array(rows), spec)])
    return buf


async def put_chunk(arr: Any, index: int, buf: Any) -> None:
    """Store the encoded chunk ``index`` of ``arr``."""
    await (arr.store_path / chunk_key(arr, index)).set(buf)


def metadata_buffers(meta: Any) -> dict[str, Any]:
    """The ``zarr.json`` document(s) of a node's metadata, as zarr would write them."""
    from zarr.core.buffer import default_buffer_prototype

    return dict(meta.to_buffer_dict(default_buffer_prototype()))


def document_bytes(doc: dict[str, Any]) -> bytes:
    """The bytes zarr writes for a normalised ``zarr.json`` document (:func:`node_document`)."""
    import zarr

    return json.dumps(doc, allow_nan=True, indent=zarr.config.get("json_indent")).encode()


def node_document(meta: Any) -> dict[str, Any]:
    """The ``zarr.json`` of a node's metadata as a JSON object (what zarr would write)."""
    raw = metadata_buffers(meta)["zarr.json"].to_bytes()
    doc: dict[str, Any] = json.loads(raw)
    return doc


async def gather_started_in_turn(coros: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` of ``coros``, each started on its own turn of the event loop.

    A request's preparation (botocore: signing, event hooks; a few ms of Python each) runs
    before it first waits for a connection. Gathered at once, every preparation runs before
    the loop handles the first new connection's handshake, so no request needing a new
    connection leaves before the last one is prepared (~130 ms for 64 GETs). Started in turn,
    the loop polls its sockets between them and each request leaves once prepared.
    """
    tasks: list[asyncio.Future[T]] = []
    try:
        for c in coros:
            tasks.append(asyncio.ensure_future(c))
            await asyncio.sleep(0)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    return list(await asyncio.gather(*tasks))


async def put_bytes(store: Any, key: str, data: bytes) -> None:
    """Store ``data`` under ``key`` of ``store`` (a small file that is not a Zarr node)."""
    from zarr.core.buffer import default_buffer_prototype

    await store.set(key, default_buffer_prototype().buffer.from_bytes(data))


async def fetch_key(store: Any, key: str) -> Any:
    """The stored bytes (a zarr ``Buffer``) at ``key`` of ``store`` (any object: a chunk, a
    ``zarr.json``), or ``None`` if absent.
    """
    from zarr.core.buffer import default_buffer_prototype

    return await store.get(key, prototype=default_buffer_prototype())


async def fetch_range(store: Any, key: str, start: int, end: int) -> Any:
    """Bytes ``[start, end)`` of the object at ``key`` of ``store`` (a zarr ``Buffer``,
    shorter if the object is), or ``None`` if absent.
    """
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype

    return await store.get(
        key, prototype=default_buffer_prototype(), byte_range=RangeByteRequest(start, end)
    )


def object_crc32c(raw: np.ndarray, ends_with_crc32c: bool) -> int:
    """The crc32c a manifest records for a stored object's bytes ``raw``.

    For a chunk whose codecs end with crc32c, the last 4 bytes are that checksum and are left
    out: a crc32c over data followed by its own crc32c is the same constant for every input
    (the CRC residue), so it would tell no two chunks apart. The recorded value is then exactly
    the chunk's trailing checksum, which any reader can compare without computing anything.
    """
    if ends_with_crc32c:
        if raw.size < 4:
            return -1
        return int.from_bytes(bytes(raw[-4:]), "little")
    return crc32c(raw)
