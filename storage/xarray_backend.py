"""The xarray backend: ``xr.open_dataset(url, engine="strata")`` opens committed strata data.

Installed through the entry-point group ``xarray.backends`` (name ``strata``), so xarray finds
it without an import. Two forms name the data:

1. the URL or path of a key directory, ``<root>/data/<run_id>/<data_type>-<hash>``::

       xr.open_dataset("s3://bucket/strata/data/run_1/peaks-abcdefghijkl", engine="strata",
                       storage_options={...})

2. the store's root plus ``run_id=`` and ``data_type=`` (and ``lineage_hash=`` when the run holds
   that data type under several lineages)::

       xr.open_dataset("/data/strata", engine="strata", run_id="run_1", data_type="peaks")

   The root may be any catalog :func:`~strata.storage.open_frontend` opens (a directory layout
   at an fsspec URL, an SQL catalog).

The Dataset has dimension ``row`` (plus ``<field>_dim_<i>`` for multi-dimensional fields), one
variable per field, ``time`` as a coordinate, and the attributes ``run_id``, ``data_type``,
``lineage_hash`` and ``lineage`` (canonical JSON). Opening reads the manifest only; every
variable reads through the loader's Dask graph (one task per stored chunk), so nothing is read
until values are asked for, and then only the chunks they lie in. With ``chunks={}`` the
variables are Dask arrays in the stored chunks (xarray's convention for ``open_dataset``).
``fields=`` and ``time_range=`` select as in
:meth:`~strata.storage.backends.base.StorageBackend.loader`; ``drop_variables`` removes fields
before anything is read. A missing key raises ``DataNotAvailable``, damaged data
``DataCorrupted``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from . import layout
from .errors import DataNotAvailable, InvalidKey
from .keys import canonical_json
from .lazy import LazyData
from .registry import open_backend, open_frontend

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

__all__ = ["StrataBackendEntrypoint", "split_key_url"]


def split_key_url(url: str) -> tuple[str, str]:
    """Split the URL or path of a key directory into ``(root, backend key)``.

    ``<root>/data/<run_id>/<data_type>-<hash>`` (a trailing ``/``, ``/zarr.json`` or
    ``/manifest.json`` is allowed) gives ``(<root>, "<run_id>/<data_type>-<hash>")``; anything
    else raises ``InvalidKey``.

    >>> split_key_url("s3://bucket/strata/data/run_1/peaks-abcdefghijkl/")
    ('s3://bucket/strata', 'run_1/peaks-abcdefghijkl')
    """
    path = url.rstrip("/")
    for name in (layout.COMMIT, layout.MANIFEST):
        if path.endswith("/" + name):
            path = path[: -len(name) - 1]
    parts = path.rsplit("/", 3)
    if len(parts) != 4 or parts[1] != layout.DATA:
        raise InvalidKey(
            f"{url!r} is not the URL of a strata key directory "
            f"'<root>/{layout.DATA}/<run_id>/<data_type>-<hash>'; to open by run and data "
            "type, pass the root with run_id= and data_type="
        )
    bk = f"{parts[2]}/{parts[3]}"
    layout.parse_backend_key(bk)
    root = parts[0]
    if not root or root.endswith(":/"):  # "data/..." relative, or "s3://data/..."
        root = root + "/" if root else "."
    return root, bk


class StrataBackendEntrypoint(BackendEntrypoint):
    """xarray's entry point for strata data (``engine="strata"``); see the module docstring."""

    description = "Open committed strata data (Zarr v3 + manifest) as a lazy, Dask-backed Dataset"
    url = ""  # no documentation site yet: the README's "xarray" section is the reference
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "run_id",
        "data_type",
        "lineage_hash",
        "fields",
        "time_range",
        "storage_options",
    )

    def open_dataset(
        self,
        filename_or_obj: str | os.PathLike[Any] | Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        run_id: str | None = None,
        data_type: str | None = None,
        lineage_hash: str | None = None,
        fields: str | Sequence[str] | None = None,
        time_range: Sequence[int] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> xr.Dataset:
        """Open one committed key as a lazy Dataset.

        Parameters
        ----------
        filename_or_obj
            The URL or path of a key directory, or (with ``run_id`` and ``data_type``) the root
            of a store or catalog.
        drop_variables
            Fields not to read (names the data lacks are ignored).
        run_id, data_type, lineage_hash
            Select the key below a root. Without ``lineage_hash`` exactly one stored key of that
            run and data type must exist, else ``ValueError`` lists the candidates.
        fields
            The fields to read (default: all); ``time`` is a coordinate only if read.
        time_range
            ``(t0, t1)``: records with ``t0 <= time < t1`` only.
        storage_options
            fsspec options of the store (credentials are never shown).

        """
        url = _to_url(filename_or_obj)
        tr = _time_range(time_range)
        opts = {"storage_options": storage_options} if storage_options else {}
        if run_id is None and data_type is None:
            if lineage_hash is not None:
                raise ValueError("lineage_hash= needs run_id= and data_type= (and a root URL)")
            root, bk = split_key_url(url)
            backend = open_backend(root, **opts)
            manifest = backend.get_metadata(bk)
            sel = _selection(manifest.np_dtype.names or (), fields, drop_variables, bk)
            lazy = backend.loader_from_manifest(bk, manifest, fields=sel, time_range=tr)
        elif run_id is None or data_type is None:
            raise ValueError(
                "pass both run_id= and data_type= with a root URL, or neither with the URL "
                f"of a key directory (got run_id={run_id!r}, data_type={data_type!r})"
            )
        else:
            frontend = open_frontend(url, **opts)
            entries = [
                e
                for e in frontend.list(run_id)
                if e.key.data_type == data_type
                and (lineage_hash is None or e.key.lineage_hash == lineage_hash)
            ]
            wanted = f"{data_type!r} of run {run_id!r}" + (
                f" with lineage hash {lineage_hash!r}" if lineage_hash else ""
            )
            if len(entries) != 1:
                skipped = f"; unreadable: {frontend.skipped}" if frontend.skipped else ""
                if not entries:
                    raise DataNotAvailable(f"no stored {wanted} in {frontend!r}{skipped}")
                hashes = sorted(e.key.lineage_hash for e in entries)
                raise ValueError(
                    f"{len(entries)} stored keys of {wanted} in {frontend!r} (lineage hashes "
                    f"{hashes}): pass lineage_hash= to choose one, or open its key directory"
                )
            (entry,) = entries
            manifest = frontend.manifest_at(entry.location)
            sel = _selection(manifest.np_dtype.names or (), fields, drop_variables, str(entry.key))
            lazy = frontend.loader_at(entry.location, fields=sel, time_range=tr)
        return _dataset(lazy)

    def guess_can_open(self, filename_or_obj: str | os.PathLike[Any] | Any) -> bool:
        """Whether ``filename_or_obj`` is a key directory (``.../data/<run_id>/<data_type>-
        <hash>``) with a committed manifest (read once). Never raises: xarray asks the next
        engine.
        """
        try:
            root, bk = split_key_url(_to_url(filename_or_obj))
        except (InvalidKey, TypeError):
            return False
        try:
            return open_backend(root).exists(bk)
        # guessing must not fail: an unreachable or unauthorised store is "not mine to say"
        except Exception:
            return False


def _to_url(filename_or_obj: object) -> str:
    if isinstance(filename_or_obj, os.PathLike):
        filename_or_obj = os.fspath(filename_or_obj)
    if not isinstance(filename_or_obj, str):
        raise TypeError(
            f"engine='strata' opens a URL or path, not a {type(filename_or_obj).__name__}"
        )
    return filename_or_obj


def _time_range(time_range: Sequence[int] | None) -> tuple[int, int] | None:
    if time_range is None:
        return None
    t = tuple(time_range)
    if len(t) != 2:
        raise ValueError(f"time_range must be (t0, t1), got {time_range!r}")
    return int(t[0]), int(t[1])


def _selection(
    names: Sequence[str],
    fields: str | Sequence[str] | None,
    drop_variables: str | Iterable[str] | None,
    where: str,
) -> list[str] | None:
    """The fields to load: ``fields`` (or all) less ``drop_variables``; ``None`` for all."""
    chosen = [fields] if isinstance(fields, str) else None if fields is None else list(fields)
    if drop_variables is None:
        return chosen
    drop = {drop_variables} if isinstance(drop_variables, str) else set(drop_variables)
    sel = [f for f in (list(names) if chosen is None else chosen) if f not in drop]
    if not sel:
        raise ValueError(f"drop_variables={sorted(drop)} leaves no field of {where} to read")
    return sel


class _FieldArray(BackendArray):
    """One field as xarray's lazily indexed backend array, read through its Dask array.

    xarray wraps what a backend returns in its own lazy indexing layers and, given a Dask
    array there, would hand the Dask array back from ``.load()`` unread: so each field is a
    backend array whose reads compute the needed part of the loader's graph (one task per
    stored chunk it touches), and ``chunks=`` makes xarray's Dask arrays in the stored chunks.
    """

    def __init__(self, array: da.Array) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        # local threads, not the default scheduler: under chunks= this runs inside a task of
        # xarray's graph, where a blocking call to a distributed client could starve it
        return np.asarray(self.array[key].compute(scheduler="threads"))


def _dataset(lazy: LazyData) -> xr.Dataset:
    import xarray as xr

    plain = lazy.to_xarray()
    variables = {}
    for name, var in plain.variables.items():
        arr = lazy.fields[str(name)]
        variables[name] = xr.Variable(
            var.dims,
            indexing.LazilyIndexedArray(_FieldArray(arr)),
            attrs=var.attrs,
            encoding={"preferred_chunks": dict(zip(var.dims, arr.chunks, strict=True))},
        )
    attrs = {**plain.attrs, "lineage": canonical_json(lazy.key.lineage)}
    ds = xr.Dataset(variables, attrs=attrs)
    if "time" in ds.variables:
        ds = ds.set_coords("time")
    return ds
