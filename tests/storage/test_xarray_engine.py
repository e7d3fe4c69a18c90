"""``xr.open_dataset(..., engine="strata")``: the xarray backend found through its entry point."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import xarray as xr

from strata.storage import (
    DataCorrupted,
    DataKey,
    DataNotAvailable,
    DirectoryFrontend,
    InvalidKey,
    canonical_json,
)
from strata.storage.xarray_backend import StrataBackendEntrypoint, split_key_url
from tests.helpers import PARTITION_NS, STRAX_DTYPE, lineage, make_run
from tests.storage.test_laziness import CountingFS

SIZES = [400, 300, 0, 350, 500, 250]
KEY = DataKey("run_1", "records", lineage())


def _save(fe, key=KEY, sizes=SIZES, seed=0):
    parts, intervals = make_run(sizes, seed=seed)
    fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    return np.concatenate(parts)


def _key_url(root, key=KEY):
    return f"{root}/data/{key.run_id}/{key.name}"


def _assert_equal(ds, ref, fields=STRAX_DTYPE.names):
    assert set(ds.variables) == set(fields)
    for name in fields:
        np.testing.assert_array_equal(ds[name].values, ref[name])
        assert ds[name].dtype == ref.dtype[name].base


@pytest.fixture(params=["path", "file_url"])
def local(request, tmp_path):
    root = str(tmp_path / "store")
    fe = DirectoryFrontend(root, chunk_target_mb=0.1)
    ref = _save(fe)
    url_root = root if request.param == "path" else f"file://{root}"
    return fe, url_root, ref


def test_entry_point_is_installed():
    engines = xr.backends.list_engines()
    assert "strata" in engines
    assert isinstance(engines["strata"], StrataBackendEntrypoint)


def test_key_directory_equals_loader_field_by_field(local):
    fe, root, _ = local
    ds = xr.open_dataset(_key_url(root), engine="strata")
    ref = fe.loader(KEY).to_numpy()
    _assert_equal(ds, ref)
    assert ds["data"].dims == ("row", "data_dim_1")
    assert ds["data"].shape == (len(ref), 110)
    assert ds["area"].dims == ("row",)
    assert "time" in ds.coords and "time" not in ds.data_vars
    assert set(ds.dims) == {"row", "data_dim_1"}
    assert ds.attrs["run_id"] == "run_1"
    assert ds.attrs["data_type"] == "records"
    assert ds.attrs["lineage_hash"] == KEY.lineage_hash
    assert ds.attrs["lineage"] == canonical_json(KEY.lineage)
    assert json.loads(ds.attrs["lineage"]) == json.loads(canonical_json(KEY.lineage))
    # a trailing slash and the manifest's own path name the same key
    ds2 = xr.open_dataset(_key_url(root) + "/zarr.json", engine="strata")
    np.testing.assert_array_equal(ds2["channel"].values, ref["channel"])


def test_chunks_give_dask_arrays_in_the_stored_chunks(local):
    fe, root, ref = local
    lazy = fe.loader(KEY)
    ds = xr.open_dataset(_key_url(root), engine="strata", chunks={})
    import dask.array as da

    assert isinstance(ds["area"].data, da.Array)
    assert ds["area"].data.chunks == lazy.fields["area"].chunks
    assert ds["data"].data.chunks == lazy.fields["data"].chunks
    np.testing.assert_array_equal(ds["data"].values, ref["data"])


def test_fields_and_drop_variables(local):
    _, root, ref = local
    ds = xr.open_dataset(_key_url(root), engine="strata", fields=["area", "time"])
    _assert_equal(ds, ref, ["area", "time"])
    ds = xr.open_dataset(_key_url(root), engine="strata", fields="area")
    _assert_equal(ds, ref, ["area"])
    assert "time" not in ds.variables
    ds = xr.open_dataset(_key_url(root), engine="strata", drop_variables=["data", "dt", "nope"])
    _assert_equal(ds, ref, ["time", "length", "channel", "area"])
    ds = xr.open_dataset(
        _key_url(root), engine="strata", fields=["area", "channel"], drop_variables="channel"
    )
    _assert_equal(ds, ref, ["area"])
    with pytest.raises(ValueError, match="leaves no field"):
        xr.open_dataset(_key_url(root), engine="strata", drop_variables=list(STRAX_DTYPE.names))
    with pytest.raises(ValueError, match="no field"):
        xr.open_dataset(_key_url(root), engine="strata", fields=["nope"])


def test_time_range_exact_rows(local):
    _, root, ref = local
    t0, t1 = 1 * PARTITION_NS + 1000, 4 * PARTITION_NS - 1000
    ds = xr.open_dataset(_key_url(root), engine="strata", time_range=(t0, t1))
    want = ref[(ref["time"] >= t0) & (ref["time"] < t1)]
    assert ds.sizes["row"] == len(want)  # before any compute
    _assert_equal(ds, want)
    ds = xr.open_dataset(_key_url(root), engine="strata", time_range=[t0, t0])
    assert ds.sizes["row"] == 0


def test_root_with_run_id_and_data_type(local):
    fe, root, ref = local
    ds = xr.open_dataset(root, engine="strata", run_id="run_1", data_type="records")
    _assert_equal(ds, ref)
    assert ds.attrs["lineage_hash"] == KEY.lineage_hash
    other = DataKey("run_1", "records", lineage(x=1))
    ref2 = _save(fe, other, sizes=[20, 30], seed=3)
    with pytest.raises(ValueError, match="lineage_hash=") as e:
        xr.open_dataset(root, engine="strata", run_id="run_1", data_type="records")
    assert KEY.lineage_hash in str(e.value) and other.lineage_hash in str(e.value)
    ds = xr.open_dataset(
        root,
        engine="strata",
        run_id="run_1",
        data_type="records",
        lineage_hash=other.lineage_hash,
        fields=["time", "data"],
    )
    _assert_equal(ds, ref2, ["time", "data"])
    with pytest.raises(DataNotAvailable, match="peaks"):
        xr.open_dataset(root, engine="strata", run_id="run_1", data_type="peaks")
    with pytest.raises(ValueError, match="both run_id= and data_type="):
        xr.open_dataset(root, engine="strata", run_id="run_1")


def test_bad_urls_and_missing_keys(local):
    _, root, _ = local
    with pytest.raises(InvalidKey, match="key directory"):
        xr.open_dataset(root, engine="strata")
    with pytest.raises(DataNotAvailable):
        xr.open_dataset(_key_url(root, DataKey("run_2", "records", lineage())), engine="strata")
    assert split_key_url("s3://bucket/data/run_1/peaks-abcdefghijkl") == (
        "s3://bucket",
        "run_1/peaks-abcdefghijkl",
    )
    with pytest.raises(InvalidKey):
        split_key_url("s3://bucket/data/run_1/peaks-NOTAHASH")


def test_guess_can_open(local, tmp_path):
    _, root, _ = local
    entry = StrataBackendEntrypoint()
    assert entry.guess_can_open(_key_url(root))
    assert not entry.guess_can_open(root)
    assert not entry.guess_can_open(_key_url(root, DataKey("run_2", "records", lineage())))
    assert not entry.guess_can_open(str(tmp_path / "x.nc"))
    # without engine=, xarray asks every engine and picks this one
    ds = xr.open_dataset(_key_url(root))
    assert ds.attrs["lineage_hash"] == KEY.lineage_hash


def test_opening_reads_the_manifest_only():
    root = f"countmem://xr-{uuid.uuid4().hex}"
    fe = DirectoryFrontend(root, chunk_target_mb=0.1)
    ref = _save(fe)
    CountingFS.reset()
    ds = xr.open_dataset(_key_url(root), engine="strata")
    assert len(CountingFS.reads) == 1
    assert next(iter(CountingFS.reads)).endswith(f"{KEY.run_id}/{KEY.name}/zarr.json")
    assert sum(CountingFS.reads.values()) == 1
    assert CountingFS.listings == []
    assert ds.sizes["row"] == len(ref)
    # a selection reads only the chunk it lies in
    np.testing.assert_array_equal(ds["area"][:10].values, ref["area"][:10])
    chunks = [p for p in CountingFS.reads if "/c/" in p]
    assert len(chunks) == 1 and "/s000000/area/c/" in chunks[0]
    # .load() reads everything, once: afterwards the values are in memory
    ds = ds.load()
    assert any("/s000005/data/c/" in p for p in CountingFS.reads)
    CountingFS.reset()
    _assert_equal(ds, ref)
    assert sum(CountingFS.reads.values()) == 0


def test_deleted_chunk_raises_on_load(tmp_path):
    root = str(tmp_path / "store")
    fe = DirectoryFrontend(root, chunk_target_mb=0.1)
    _save(fe)
    m = fe.get_metadata(KEY)
    attempt = fe.backend.path("data", fe.backend.backend_key(KEY), m.attempt)
    chunks = sorted(f for f in fe.backend.fs.find(attempt) if "/area/c/" in f)
    fe.backend.fs.rm(chunks[len(chunks) // 2])
    ds = xr.open_dataset(_key_url(root), engine="strata")  # the manifest is intact
    with pytest.raises(DataCorrupted, match="area"):
        ds.load()


def test_s3(s3_url, s3_options):
    fe = DirectoryFrontend(s3_url, storage_options=s3_options, chunk_target_mb=0.1)
    ref = _save(fe)
    ds = xr.open_dataset(_key_url(s3_url), engine="strata", storage_options=s3_options)
    _assert_equal(ds, ref)
    ds = xr.open_dataset(
        s3_url,
        engine="strata",
        backend_kwargs={"storage_options": s3_options},
        run_id="run_1",
        data_type="records",
        fields=["data"],
    )
    _assert_equal(ds, ref, ["data"])
