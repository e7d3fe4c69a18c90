"""Lazily loaded data: Dask collections over stored arrays, and conversions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .keys import DataKey
from .manifest import Manifest

if TYPE_CHECKING:
    import dask.array as da
    import pandas as pd
    import xarray as xr

__all__ = ["LazyData"]


@dataclass
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

    """

    key: DataKey
    manifest: Manifest
    array: da.Array
    fields: dict[str, da.Array]

    @property
    def dtype(self) -> np.dtype[Any]:
        """The structured dtype of :attr:`array`."""
        return self.array.dtype

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def to_numpy(self, **compute_kwargs: Any) -> np.ndarray:
        """Read everything selected into one structured numpy array."""
        return self.array.compute(**compute_kwargs)

    def to_pandas(self, **compute_kwargs: Any) -> pd.DataFrame:
        """A pandas DataFrame of the scalar fields (multi-dimensional fields are left out)."""
        import dask
        import pandas as pd

        scalar = {k: v for k, v in self.fields.items() if v.ndim == 1}
        values = dask.compute(scalar, **compute_kwargs)[0]
        return pd.DataFrame(values)

    def to_xarray(self) -> xr.Dataset:
        """A lazy xarray Dataset: dimension ``row``, plus ``<field>_dim_<i>`` for N-D fields."""
        import xarray as xr

        data_vars = {}
        for name, arr in self.fields.items():
            dims = ("row", *[f"{name}_dim_{i}" for i in range(1, arr.ndim)])
            data_vars[name] = (dims, arr)
        attrs = {
            "run_id": self.key.run_id,
            "data_type": self.key.data_type,
            "lineage_hash": self.key.lineage_hash,
        }
        return xr.Dataset(data_vars, attrs=attrs)
