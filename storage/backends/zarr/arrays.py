"""Zarr v3 metadata of the arrays of a segment, derived from a manifest or a saver's dtype.

Every array a save writes is described by the manifest alone: its template (codecs, dtype,
fill value, dimension names) plus the segment's rows and chunk rows. Readers build array
metadata from that and never read a ``zarr.json``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ...manifest import Manifest, Segment
from .dtypes import NUMPY_DTYPE, is_mapped, needs_mapping, storage_dtype
from .shards import sharded_meta

__all__ = [
    "ATTEMPT_RULE",
    "array_meta",
    "attempt_attributes",
    "array_templates",
    "chunk_bounds",
    "consolidated",
    "dim_names",
    "SegmentDocuments",
    "stored_shape",
]


ATTEMPT_RULE = (
    "An attempt of a save. Its data is committed only if the zarr.json of the folder above "
    "names it (attributes.strata.attempt) and lists it in its consolidated metadata; open that "
    "group, not this folder."
)
"""The rule every attempt group states in its attributes, for readers that walk folders."""


def attempt_attributes(key: Any, attempt: str) -> dict[str, Any]:
    """The attributes of an attempt's group: its key, its name and :data:`ATTEMPT_RULE`."""
    return {"strata": {"key": key.to_dict(), "attempt": attempt, "rule": ATTEMPT_RULE}}


def consolidated(m: Manifest, docs: SegmentDocuments | None = None) -> dict[str, Any]:
    """The consolidated metadata of a commit: path below the key -> ``zarr.json`` document of
    the committed attempt's group, its segment groups and their arrays, exactly as written
    (by ``docs``, the saver's :class:`SegmentDocuments`, if given).
    """
    from ... import _zarr

    out: dict[str, Any] = {
        m.attempt: _zarr.node_document(_zarr.group_metadata(attempt_attributes(m.key, m.attempt)))
    }
    segment_group = _zarr.node_document(_zarr.group_metadata({}))
    if docs is None:
        docs = SegmentDocuments(m.arrays, m.np_dtype)
    for seg in m.segments:
        out[f"{m.attempt}/{seg.name}"] = segment_group
        for f in m.arrays:
            out[f"{m.attempt}/{seg.name}/{f}"] = docs.document(seg, f)
    return out


class SegmentDocuments:
    """The ``zarr.json`` documents of the arrays of a save's segments, as zarr writes them.

    zarr normalises a document (parses it, fills in defaults) at a cost of ~0.5 ms an array:
    a save of many segments paid that for every field of every segment. Here zarr normalises
    one document per field (and per sharded or not); a segment's document is that one with
    the numbers of its shape and chunks put in, which are all that change between segments.
    A test compares both ways for many shapes.

    Parameters
    ----------
    templates
        Per field, the array template (a saver's, or a manifest's ``arrays``).
    dtype
        The records' numpy dtype.

    """

    def __init__(self, templates: dict[str, dict[str, Any]], dtype: np.dtype[Any]) -> None:
        self.templates = templates
        self.dtype = dtype
        self._normal: dict[tuple[str, bool], dict[str, Any]] = {}
        self._meta: dict[str, Any] = {}

    def _normalised(self, field: str, sharded: bool) -> dict[str, Any]:
        from ... import _zarr

        doc = self._normal.get((field, sharded))
        if doc is None:
            tpl = self.templates[field]
            shape = stored_shape(tpl, self.dtype[field])
            doc = _zarr.node_document(
                _zarr.metadata_from_dict(_with_shape(tpl, 0, 1, shape, 2 if sharded else 1))
            )
            self._normal[(field, sharded)] = doc
        return doc

    def document(self, seg: Segment, field: str) -> dict[str, Any]:
        """The normalised ``zarr.json`` document of ``field``'s array in ``seg``."""
        shard = seg.shard(field)
        doc = self._normalised(field, shard > 1)
        rows = max(1, seg.chunk_rows[field])
        grid = doc["chunk_grid"]
        out = {
            **doc,
            "shape": [seg.rows, *doc["shape"][1:]],
            "chunk_grid": {
                **grid,
                "configuration": {
                    **grid["configuration"],
                    "chunk_shape": [rows * shard, *grid["configuration"]["chunk_shape"][1:]],
                },
            },
        }
        if shard > 1:
            codec = doc["codecs"][0]
            cfg = codec["configuration"]
            out["codecs"] = [
                {**codec, "configuration": {**cfg, "chunk_shape": [rows, *cfg["chunk_shape"][1:]]}},
                *doc["codecs"][1:],
            ]
        return out

    def document_bytes(self, seg: Segment, field: str) -> bytes:
        """:meth:`document` as the bytes zarr writes for it."""
        from ... import _zarr

        return _zarr.document_bytes(self.document(seg, field))

    def chunk_key(self, field: str, index: int) -> str:
        """The store key (below the array) of object ``index`` of ``field``'s arrays (it
        depends on the chunk key encoding and the number of dimensions alone).
        """
        from ... import _zarr

        meta = self._meta.get(field)
        if meta is None:
            meta = self._meta[field] = _zarr.metadata_from_dict(self._normalised(field, False))
        return _zarr.chunk_key_of(meta, index)


def dim_names(field: str, extra: int) -> list[str]:
    """``["row", "<field>_dim_1", ...]``: the dimension names of a field's array."""
    return ["row", *[f"{field}_dim_{i}" for i in range(1, extra + 1)]]


def _with_shape(
    tpl: dict[str, Any], rows: int, chunk_rows: int, shape: tuple[int, ...], shard: int = 1
) -> Any:
    doc = {
        **tpl,
        "shape": [rows, *shape],
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, chunk_rows), *shape]},
        },
    }
    return sharded_meta(doc, shard)


def stored_shape(template: dict[str, Any], field_dtype: np.dtype[Any]) -> tuple[int, ...]:
    """The shape of one row of a field's stored array (a mapped dtype adds an axis)."""
    if is_mapped(template):
        return (*field_dtype.shape, *storage_dtype(field_dtype.base)[1])
    return tuple(field_dtype.shape)


def array_meta(m: Manifest, seg: Segment, field: str) -> dict[str, Any]:
    """The Zarr v3 metadata document of ``field``'s array in segment ``seg`` of ``m``.

    Built once per manifest object, segment and field (a manifest is parsed once per process
    for identical bytes, so every read of it shares the documents and the read plans made from
    them); callers must not change the returned dict.
    """
    memo: dict[tuple[int, str], dict[str, Any]] = m.__dict__.setdefault("_array_meta", {})
    k = (id(seg), field)  # the manifest holds its segments: their ids stay theirs
    doc = memo.get(k)
    if doc is None:
        tpl = m.arrays[field]
        shape = stored_shape(tpl, m.np_dtype[field])
        doc = memo[k] = _with_shape(tpl, seg.rows, seg.chunk_rows[field], shape, seg.shard(field))
    return doc


def array_templates(
    dtype: np.dtype[Any],
    compressors: list[Any],
    descriptions: dict[str, str] | None = None,
    units: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per field, the Zarr v3 array metadata written for ``dtype``, less shape and chunks.

    Fields of numpy kinds S, U, M and m are stored as core data types (:mod:`.dtypes`), with a
    ``numpy_dtype`` attribute; ``descriptions`` and ``units`` become ``description`` and
    ``units`` attributes, so the arrays describe themselves to any Zarr reader.
    """
    import zarr
    from zarr.storage import MemoryStore

    out = {}
    store = MemoryStore()
    assert dtype.names is not None
    for name in dtype.names:
        ft = dtype[name]
        attrs: dict[str, Any] = {}
        base, shape = ft.base, tuple(ft.shape)
        if needs_mapping(base):
            stored, extra = storage_dtype(base)
            attrs[NUMPY_DTYPE] = base.str
            base, shape = stored, (*shape, *extra)
        if descriptions and descriptions.get(name):
            attrs["description"] = str(descriptions[name])
        if units and units.get(name):
            attrs["units"] = str(units[name])
        arr = zarr.create_array(
            store,
            name=name,
            shape=(0, *shape),
            dtype=base,
            chunks=(1, *shape),
            compressors=compressors,
            fill_value=0,
            dimension_names=dim_names(name, len(shape)),
            zarr_format=3,
            attributes=attrs or None,
        )
        md = arr.metadata.to_dict()
        for k in ("shape", "chunk_grid"):
            md.pop(k)
        out[name] = json.loads(json.dumps(md))
    return out


def chunk_bounds(lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` at multiples of ``chunk``."""
    chunk = max(1, chunk)
    out = []
    a = lo
    while a < hi:
        b = min(hi, (a // chunk + 1) * chunk)
        out.append((a, b))
        a = b
    return out
