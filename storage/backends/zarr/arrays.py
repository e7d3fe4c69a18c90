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

__all__ = ["array_meta", "array_templates", "chunk_bounds", "dim_names"]


def dim_names(field: str, extra: int) -> list[str]:
    """``["row", "<field>_dim_1", ...]``: the dimension names of a field's array."""
    return ["row", *[f"{field}_dim_{i}" for i in range(1, extra + 1)]]


def _with_shape(tpl: dict[str, Any], rows: int, chunk_rows: int, shape: tuple[int, ...]) -> Any:
    return {
        **tpl,
        "shape": [rows, *shape],
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, chunk_rows), *shape]},
        },
    }


def array_meta(m: Manifest, seg: Segment, field: str) -> dict[str, Any]:
    """The Zarr v3 metadata document of ``field``'s array in segment ``seg`` of ``m``."""
    return _with_shape(m.arrays[field], seg.rows, seg.chunk_rows[field], m.np_dtype[field].shape)


def segment_array_meta(
    templates: dict[str, dict[str, Any]], seg: Segment, field: str, dtype: np.dtype[Any]
) -> dict[str, Any]:
    """As :func:`array_meta`, from a saver's templates and dtype (before a manifest exists)."""
    return _with_shape(templates[field], seg.rows, seg.chunk_rows[field], dtype[field].shape)


def array_templates(dtype: np.dtype[Any], compressors: list[Any]) -> dict[str, dict[str, Any]]:
    """Per field, the Zarr v3 array metadata written for ``dtype``, less shape and chunks."""
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
            compressors=compressors,
            fill_value=0,
            dimension_names=dim_names(name, len(ft.shape)),
            zarr_format=3,
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
