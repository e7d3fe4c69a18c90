"""Record dtypes for plugins: the usual time fields, field help texts, and side-by-side merging.

As in strax, a plugin may document its fields with numpy field titles::

    dtype = time_fields() + [(("Peak area [PE]", "area"), np.float32)]

Titles are help text only: what is stored and compared is the dtype without them
(:func:`strip_titles`), and :func:`field_help` recovers the texts for ``Context.data_info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import IncompatibleTargets, InvalidRequest

__all__ = [
    "field_help",
    "merge_arrays",
    "merged_dtype",
    "strip_titles",
    "time_dt_fields",
    "time_fields",
]


def time_fields() -> list[tuple[Any, ...]]:
    """``time`` and ``endtime`` (int64 ns), with help titles, for interval records."""
    return [
        (("Start time since unix epoch [ns]", "time"), np.int64),
        (("Exclusive end time since unix epoch [ns]", "endtime"), np.int64),
    ]


def time_dt_fields() -> list[tuple[Any, ...]]:
    """``time``, ``length`` and ``dt`` with help titles, for sampled records (strax style)."""
    return [
        (("Start time since unix epoch [ns]", "time"), np.int64),
        (("Length of the interval in samples", "length"), np.int32),
        (("Width of one sample [ns]", "dt"), np.int16),
    ]


def strip_titles(dtype: Any) -> np.dtype[Any]:
    """``dtype`` without field titles (the form that is stored and compared).

    >>> strip_titles(time_fields()).names
    ('time', 'endtime')
    """
    dt = np.dtype(dtype)
    if dt.names is None:
        return dt
    return np.dtype([(n, dt[n].base, dt[n].shape) for n in dt.names])


def field_help(dtype: Any) -> dict[str, str]:
    """``{field: help title}`` of a dtype declared with titles (``""`` where there is none)."""
    dt = np.dtype(dtype)
    out = {}
    for name in dt.names or ():
        field = dt.fields[name] if dt.fields else None
        title = field[2] if field is not None and len(field) > 2 else None
        out[name] = str(title) if title is not None else ""
    return out


def merged_dtype(dtypes: Sequence[np.dtype[Any]]) -> np.dtype[Any]:
    """Fields of the first dtype, then fields of each next dtype not seen yet."""
    fields: list[tuple[str, Any, tuple[int, ...]]] = []
    seen: set[str] = set()
    for dt in dtypes:
        for name in dt.names or ():
            if name not in seen:
                seen.add(name)
                fields.append((name, dt[name].base, dt[name].shape))
    return np.dtype(fields)


def merge_arrays(arrays: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Merge record arrays of one data kind side by side (one row per same thing).

    Every array must have the same length and, if it has a ``time`` field, the same times
    (else ``IncompatibleTargets``); a field present in several arrays is taken from the first.
    ``names`` name the arrays in error messages.
    """
    if not arrays:
        raise InvalidRequest("merge_arrays: nothing to merge (no arrays given)")
    n = len(arrays[0])
    for a, name in zip(arrays[1:], names[1:], strict=True):
        if len(a) != n:
            raise IncompatibleTargets(
                f"cannot merge {names[0]!r} ({n} rows) with {name!r} ({len(a)} rows): "
                "data types merged side by side must have one row per same thing"
            )
        if (
            "time" in (a.dtype.names or ())
            and "time" in (arrays[0].dtype.names or ())
            and not np.array_equal(a["time"], arrays[0]["time"])
        ):
            raise IncompatibleTargets(
                f"cannot merge {names[0]!r} with {name!r}: their 'time' fields differ, "
                "so their rows do not describe the same things"
            )
    dtype = merged_dtype([a.dtype for a in arrays])
    out = np.empty(n, dtype=dtype)
    done: set[str] = set()
    for a in arrays:
        for name in a.dtype.names or ():
            if name not in done:
                out[name] = a[name]
                done.add(name)
    return out
