"""How record fields map to Zarr v3 core data types, so that every Zarr reader reads them.

zarr-python stores numpy's bytes, unicode, datetime64 and timedelta64 fields with data types of
its own (``null_terminated_bytes``, ``fixed_length_utf32``, ``numpy.datetime64``, ...) that other
readers (tensorstore, zarrita) do not know. strata stores them as core types instead, and says
in the array's attributes how to view them (``numpy_dtype``):

=================  ===============================  =============================
numpy field        stored array                     read back as
=================  ===============================  =============================
``S<n>``           ``uint8``, one extra axis of n   ``.view("S<n>")`` of each row
``U<n>``           ``uint32`` (code points), n      ``.view("<U<n>")``
``M8[unit]``       ``int64`` (``numpy_dtype``)      ``.view("M8[unit]")``
``m8[unit]``       ``int64``                        ``.view("m8[unit]")``
anything else      itself                           itself
=================  ===============================  =============================

Arrays written before this mapping (their template has no ``numpy_dtype`` attribute) are read
as they were written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_mapped", "storage_dtype", "storage_view", "to_field", "to_storage"]

NUMPY_DTYPE = "numpy_dtype"
"""The array attribute that names the numpy dtype a stored array is a view of."""


def storage_dtype(base: np.dtype[Any]) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The stored (core) dtype of a field's base dtype, and the axes it adds."""
    order = "<" if base.byteorder in ("=", "|") or base.isnative else base.byteorder
    if base.kind in "Mm":
        return np.dtype(f"{order}i8"), ()
    if base.kind == "S":
        return np.dtype("u1"), (base.itemsize,)
    if base.kind == "U":
        return np.dtype(f"{order}u4"), (base.itemsize // 4,)
    return base, ()


def is_mapped(template: dict[str, Any]) -> bool:
    """Whether an array template was written with this mapping (for legacy manifests)."""
    attrs = template.get("attributes") or {}
    return isinstance(attrs, dict) and NUMPY_DTYPE in attrs


def needs_mapping(base: np.dtype[Any]) -> bool:
    """Whether fields of ``base`` are stored as another dtype."""
    return base.kind in "MmSU"


def to_storage(column: np.ndarray, base: np.dtype[Any]) -> np.ndarray:
    """A view of a (contiguous) field column in its stored dtype."""
    if not needs_mapping(base):
        return column
    stored, extra = storage_dtype(base)
    if not extra:
        return column.view(stored)
    return column[..., None].view(stored)


def storage_view(out: np.ndarray, base: np.dtype[Any]) -> np.ndarray:
    """A writable view of ``out`` (a field of a structured array, say) in the stored dtype, to
    decode stored chunks into.
    """
    return to_storage(out, base)


def to_field(stored: np.ndarray, base: np.dtype[Any]) -> np.ndarray:
    """Rows read in the stored dtype, as the field's own dtype."""
    if not needs_mapping(base):
        return stored
    _, extra = storage_dtype(base)
    if not extra:
        return stored.view(base)
    return np.ascontiguousarray(stored).view(base)[..., 0]
