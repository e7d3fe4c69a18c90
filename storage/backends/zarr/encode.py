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

import threading
from typing import Any

import google_crc32c
import numpy as np

__all__ = ["ChunkEncoder", "encoder_for"]

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
