"""Shards: several chunks of one array in one stored object (Zarr v3 ``sharding_indexed``).

An array of a segment whose rows make several chunks stores them ``shard`` chunks to an
object: Zarr v3's core sharding codec, so any Zarr reader opens it. The array's chunk grid is
the shard (``shard * chunk_rows`` rows); its one codec is ``sharding_indexed`` with the inner
chunk shape, the inner codecs of the field's template (``bytes``, ``blosc``, ``crc32c``) and
the index codecs ``bytes`` + ``crc32c`` at the end. A shard object is its inner chunks' stored
bytes back to back in chunk order, then the index (an ``(offset, nbytes)`` pair of
little-endian uint64 per inner chunk; ``2**64 - 1`` twice for an inner chunk beyond the
array's rows) and the index's crc32c.

The manifest records every inner chunk's size and crc32c, as for unsharded chunks, and the
number of chunks per shard (``Segment.shard_chunks``): a reader knows where every inner chunk
lies without reading the index, fetches a whole shard in one request, or a run of inner chunks
in one byte range, and checks each inner chunk against the manifest as before.

Why: on an object store every request costs a round trip and its share of client and server
time (a few ms of Python per GET on botocore), so fewer, larger objects read faster, while a
time range still reads only the inner chunks it touches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ... import _zarr
from ...manifest import SHARDED_CODECS, Digest

__all__ = [
    "EMPTY",
    "INDEX_CODECS",
    "index_bytes",
    "inner_of",
    "object_size",
    "shard_chunks_for",
    "shardable",
    "sharded_meta",
]

EMPTY = 2**64 - 1
"""The index entry (offset and size) of an inner chunk that is not stored."""

INDEX_CODECS: list[dict[str, Any]] = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "crc32c"},
]
"""The codecs of a shard's index, as zarr writes them."""

INDEX_ENTRY = 16
"""Bytes of one index entry (two uint64)."""


def shardable(template: dict[str, Any]) -> bool:
    """Whether a field's array template is stored in shards when it has several chunks: a
    chain strata encodes and decodes itself (``bytes`` little-endian [+ ``blosc``] +
    ``crc32c``); other chains keep one object per chunk.
    """
    codecs = template.get("codecs") or []
    names = [c.get("name") if isinstance(c, dict) else None for c in codecs]
    if names not in SHARDED_CODECS:  # the one rule, also what a manifest may claim
        return False
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    return bool(endian == "little" and not template.get("storage_transformers"))


def shard_chunks_for(n_chunks: int, chunk_nbytes: int, target: int) -> int:
    """Chunks per shard for an array of ``n_chunks`` chunks of ``chunk_nbytes`` decoded bytes:
    1 (no shards) for a single chunk or a ``target`` of 0, else shards of at most about
    ``target`` bytes (the backend's ``shard_target_mb``), of equal chunk counts (20 chunks of
    a 16-chunk target make two shards of 10).
    """
    if n_chunks <= 1 or target <= 0:
        return 1
    per = max(1, target // max(1, chunk_nbytes))
    shards = math.ceil(n_chunks / per)
    return max(1, math.ceil(n_chunks / shards))


def sharded_meta(meta: dict[str, Any], shard: int) -> dict[str, Any]:
    """The array document ``meta`` (one object per chunk) with ``shard`` chunks an object."""
    if shard <= 1:
        return meta
    chunk_shape = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
    return {
        **meta,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [chunk_shape[0] * shard, *chunk_shape[1:]]},
        },
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": chunk_shape,
                    "codecs": meta["codecs"],
                    "index_codecs": INDEX_CODECS,
                    "index_location": "end",
                },
            }
        ],
    }


def inner_of(meta: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """For a sharded array document as :func:`sharded_meta` makes it, ``(the document with one
    object per inner chunk, chunks per shard)``; ``None`` for an unsharded one.

    Raises ``ValueError`` for a sharded document of another form (index elsewhere or encoded
    otherwise, a shard that is not a whole number of inner chunks along the rows alone).
    """
    codecs = meta.get("codecs")
    if not (isinstance(codecs, list) and codecs and isinstance(codecs[0], dict)):
        return None
    if codecs[0].get("name") != "sharding_indexed":
        return None
    cfg = codecs[0].get("configuration")
    if len(codecs) != 1 or not isinstance(cfg, dict):
        raise ValueError("a sharded array has one codec, sharding_indexed, with a configuration")
    if cfg.get("index_location", "end") != "end" or cfg.get("index_codecs") != INDEX_CODECS:
        raise ValueError(
            f"shard index {cfg.get('index_codecs')!r} at {cfg.get('index_location')!r}: strata "
            "reads shards indexed at the end with bytes + crc32c"
        )
    inner, grid = cfg.get("chunk_shape"), meta.get("chunk_grid")
    outer = (grid.get("configuration") or {}).get("chunk_shape") if isinstance(grid, dict) else None
    if not (isinstance(inner, list) and isinstance(outer, list) and len(inner) == len(outer)):
        raise ValueError(f"inner chunk shape {inner!r} does not match the shard {outer!r}")
    if not all(type(d) is int and d >= 1 for d in (*inner, *outer)):
        raise ValueError(f"inner chunk shape {inner!r} or shard {outer!r} is not positive")
    if inner[1:] != outer[1:] or outer[0] % inner[0]:
        raise ValueError(f"shard {outer!r} is not a whole number of chunks {inner!r} along rows")
    doc = {
        **meta,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(inner)}},
        "codecs": cfg.get("codecs"),
    }
    return doc, outer[0] // inner[0]


def object_size(digests: Sequence[Digest], shard: int, index: int) -> int:
    """Bytes of shard object ``index``: its inner chunks, the index and the index's crc32c."""
    return sum(d.size for d in digests[index * shard : (index + 1) * shard]) + (
        INDEX_ENTRY * shard + 4
    )


def index_bytes(sizes: Sequence[int], shard: int) -> bytes:
    """The index of a shard of inner chunks of ``sizes`` (fewer than ``shard``: the rest are
    beyond the array's rows), followed by its crc32c: what closes the shard object.
    """
    entries = np.full((shard, 2), EMPTY, dtype="<u8")
    at = 0
    for i, n in enumerate(sizes):
        entries[i] = (at, n)
        at += n
    raw = entries.tobytes()
    return raw + int(_zarr.crc32c(np.frombuffer(raw, np.uint8))).to_bytes(4, "little")
