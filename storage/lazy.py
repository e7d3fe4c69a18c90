"""Lazily loaded data: Dask collections over stored arrays, and conversions."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .keys import DataKey
from .manifest import Manifest

if TYPE_CHECKING:
    import dask.array as da
    import pandas as pd
    import xarray as xr

__all__ = ["LazyData", "select_fields"]


class LazyData:
    """The lazy result of a load: nothing has been read but the manifest (and, for a
    ``time_range``, the times of its boundary partitions).

    Attributes
    ----------
    key
        The key the data was stored under (for a fuzzy load, the stored key, not the asked one).
    manifest
        The committed manifest.
    array
        A one-dimensional structured Dask array of the selected fields.
    fields
        One plain Dask array per selected field (multi-dimensional fields are N-D), one task per
        stored chunk.
    reader
        ``reader(out, threads)`` fills a preallocated structured array of :attr:`dtype` with
        what :attr:`array` holds, decoding on ``threads`` threads (used by :meth:`to_numpy`);
        ``None`` if the backend has no such reader.

    Parameters
    ----------
    key, manifest, array, fields, reader
        As the attributes. ``array`` and ``fields`` may be left out when ``graph`` is given.
    graph
        ``graph() -> (array, fields)``, called once on first use of :attr:`array` or
        :attr:`fields` (building Dask graphs costs more than a small read through ``reader``).
    dtype, length
        :attr:`dtype` and ``len()`` without building the graphs (required with ``graph``).

    """

    def __init__(
        self,
        key: DataKey,
        manifest: Manifest,
        array: da.Array | None = None,
        fields: dict[str, da.Array] | None = None,
        reader: Callable[[np.ndarray, int], None] | None = None,
        *,
        graph: Callable[[], tuple[da.Array, dict[str, da.Array]]] | None = None,
        dtype: np.dtype[Any] | None = None,
        length: int | None = None,
    ) -> None:
        if (array is None or fields is None) and (graph is None or dtype is None or length is None):
            raise TypeError("LazyData needs array and fields, or graph, dtype and length")
        self.key = key
        self.manifest = manifest
        self.reader = reader
        self._array = array
        self._fields = fields
        self._graph = graph
        self._dtype = dtype
        self._length = length
        self._lock = threading.Lock()

    def _built(self) -> tuple[da.Array, dict[str, da.Array]]:
        with self._lock:
            if self._array is None or self._fields is None:
                assert self._graph is not None
                self._array, self._fields = self._graph()
            return self._array, self._fields

    @property
    def array(self) -> da.Array:
        """A one-dimensional structured Dask array of the selected fields."""
        return self._array if self._array is not None else self._built()[0]

    @property
    def fields(self) -> dict[str, da.Array]:
        """One Dask array per selected field, one task per stored chunk."""
        return self._fields if self._fields is not None else self._built()[1]

    def __getstate__(self) -> dict[str, Any]:
        self._built()  # a copy elsewhere gets the graphs, not the closure that builds them
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_graph")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _graph=None, _lock=threading.Lock())

    def __repr__(self) -> str:
        return f"LazyData(key={self.key!r}, rows={len(self)}, dtype={self.dtype!r})"

    @property
    def dtype(self) -> np.dtype[Any]:
        """The structured dtype of :attr:`array`."""
        return self._dtype if self._dtype is not None else self.array.dtype

    def __len__(self) -> int:
        return int(self._length) if self._length is not None else int(self.array.shape[0])

    def to_numpy(self, **compute_kwargs: Any) -> np.ndarray:
        """Read everything selected into one structured numpy array.

        Computed here (no ``compute_kwargs``, and Dask's scheduler is its threads or no
        distributed client is active), the stored chunks are decoded straight into one
        preallocated array on Dask's number of threads: no per-chunk blocks to concatenate,
        so about half the memory and time. Otherwise the Dask graph of :attr:`array` is
        computed with ``compute_kwargs``.
        """
        threads = None if compute_kwargs or self.reader is None else _local_threads()
        if threads is None:
            return self.array.compute(**compute_kwargs)
        assert self.reader is not None
        out = np.empty(len(self), dtype=self.dtype)
        self.reader(out, threads)
        return out

    def to_pandas(self, **compute_kwargs: Any) -> pd.DataFrame:
        """A pandas DataFrame of the scalar fields (multi-dimensional fields are left out)."""
        import dask
        import pandas as pd

        scalar = {k: v for k, v in self.fields.items() if v.ndim == 1}
        values = dask.compute(scalar, **compute_kwargs)[0]
        return pd.DataFrame(values)

    def to_xarray(self) -> xr.Dataset:
        """A lazy xarray Dataset: dimension ``row``, plus ``<field>_dim_<i>`` for N-D fields;
        ``time`` (when selected) is a coordinate, and each variable carries the description and
        units its stored array has.
        """
        import xarray as xr

        data_vars = {}
        for name, arr in self.fields.items():
            dims = ("row", *[f"{name}_dim_{i}" for i in range(1, arr.ndim)])
            stored = (self.manifest.arrays.get(name) or {}).get("attributes") or {}
            attrs = {k: v for k, v in stored.items() if k in ("description", "units")}
            data_vars[name] = xr.Variable(dims, arr, attrs=attrs)
        attrs = {
            "run_id": self.key.run_id,
            "data_type": self.key.data_type,
            "lineage_hash": self.key.lineage_hash,
        }
        ds = xr.Dataset(data_vars, attrs=attrs)
        return ds.set_coords("time") if "time" in ds.variables else ds


def select_fields(dtype: np.dtype[Any], fields: Any, where: object) -> list[str]:
    """The fields a load reads: all of ``dtype``'s for ``None``, else ``fields`` (a name or a
    sequence of names, duplicates dropped); ``ValueError`` naming ``where`` for unknown ones.
    """
    names = list(dtype.names or ())
    if fields is None:
        return names
    if isinstance(fields, str):
        fields = [fields]
    sel = list(dict.fromkeys(fields))
    unknown = [f for f in sel if f not in names]
    if unknown:
        raise ValueError(f"{where} has no field(s) {unknown}; its fields are {names}")
    if not sel:
        raise ValueError("fields= must name at least one field")
    return sel


def _local_threads() -> int | None:
    """Threads Dask's local scheduler would use now, or ``None`` if it would not compute
    locally (a distributed client is active, or another scheduler is configured).
    """
    import dask
    from dask.system import CPU_COUNT

    scheduler = dask.config.get("scheduler", None)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return 1
    if scheduler not in (None, "threads", "threading"):
        return None
    if scheduler is None and "distributed" in sys.modules:
        from distributed import default_client

        try:
            default_client()
            return None
        except ValueError:
            pass
    return int(dask.config.get("num_workers", None) or CPU_COUNT)
