"""Record dtypes and partitions: the rules every stored partition obeys.

A record dtype is a numpy structured dtype with an int64 ``time`` field (ns) and either an
``endtime`` field or ``length`` and ``dt`` fields (as in strax). A partition ``[start, end)``
holds records sorted by ``time`` with ``start <= time`` and ``endtime <= end``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidKey
from .layout import check_field

__all__ = [
    "check_dtype",
    "check_partition",
    "dtype_from_json",
    "dtype_to_json",
    "endtime",
]


def check_dtype(dtype: Any) -> np.dtype[Any]:
    """Return ``dtype`` as a numpy record dtype, or raise ``ValueError`` naming the rule broken."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"{dtype!r} is not a numpy dtype: {e}") from e
    if dt.names is None:
        raise ValueError(f"record dtype must be structured (have named fields), got {dt}")
    if "time" not in dt.names or dt["time"] != np.dtype("int64"):
        raise ValueError(f"record dtype needs an int64 'time' field, got fields {dt.names}")
    for name in dt.names:
        base = dt[name].base
        if base.kind not in "biufcSUmM" or base.hasobject or base.names is not None:
            raise ValueError(
                f"field {name!r} has dtype {dt[name]}: only fixed-size numeric, bool, "
                "bytes and unicode fields can be stored"
            )
        if name.startswith("_"):
            raise InvalidKey(f"field name {name!r} cannot be stored: no leading '_'")
        check_field(name)  # becomes an array name: the layout's grammar
    return dt


def dtype_to_json(dtype: np.dtype[Any]) -> list[list[Any]]:
    """``[[name, base dtype string, shape], ...]``: a JSON description of a record dtype."""
    assert dtype.names is not None
    return [[n, dtype[n].base.str, list(dtype[n].shape)] for n in dtype.names]


def dtype_from_json(desc: list[list[Any]]) -> np.dtype[Any]:
    """Inverse of :func:`dtype_to_json`."""
    return np.dtype([(str(n), np.dtype(b), tuple(s)) for n, b, s in desc])


def endtime(x: np.ndarray) -> np.ndarray:
    """End times of records: ``endtime`` if present, else ``time + length * dt``, else ``time``."""
    names = x.dtype.names or ()
    if "endtime" in names:
        return x["endtime"].astype(np.int64, copy=False)
    if "length" in names and "dt" in names:
        et = x["length"].astype(np.int64)  # in place from here: one temporary, not three
        et *= x["dt"]
        et += x["time"]
        return et
    return x["time"]


def check_partition(
    data: Any, dtype: np.dtype[Any], start: int, end: int, where: str
) -> np.ndarray:
    """Validate one partition and return it as a numpy array of ``dtype``.

    Raises ``ValueError`` naming ``where`` (key and partition) if the dtype differs, if the
    array is not one-dimensional, if times are not sorted, or if a record lies outside
    ``[start, end)``.
    """
    if not isinstance(data, np.ndarray):
        raise ValueError(
            f"{where}: partition data must be a numpy array, got {type(data).__name__}"
        )
    if data.dtype != dtype:
        raise ValueError(f"{where}: partition dtype {data.dtype} differs from the declared {dtype}")
    if data.ndim != 1:
        raise ValueError(f"{where}: partition must be one-dimensional, got shape {data.shape}")
    if len(data) == 0:
        return data
    t = data["time"]
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        i = int(np.argmax(t[1:] < t[:-1]))
        raise ValueError(f"{where}: times are not sorted (row {i + 1}: {t[i + 1]} < {t[i]})")
    if t[0] < start:
        raise ValueError(
            f"{where}: record at time {t[0]} starts before the partition start {start}"
        )
    et = endtime(data)
    if et.max() <= end:
        return data
    bad = np.flatnonzero(et > end)
    if len(bad):
        raise ValueError(
            f"{where}: record {int(bad[0])} ends at {int(et[bad[0]])}, "
            f"after the partition end {end}"
        )
    return data
