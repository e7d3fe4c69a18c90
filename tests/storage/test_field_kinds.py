"""Every field kind strata accepts is stored as a Zarr v3 core data type and reads back as the
original numpy dtype; arrays carry their numpy dtype, description and units as attributes."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import zarr

from strata.storage import DataKey, DirectoryFrontend
from tests.helpers import lineage

DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("endtime", "<i8"),
        ("flag", "?"),
        ("small", "<i2"),
        ("value", "<f8"),
        ("z", "<c8"),
        ("name", "S7"),
        ("names", "S3", (2,)),
        ("label", "<U5"),
        ("when", "<M8[ns]"),
        ("dur", "<m8[us]"),
    ]
)
CORE = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float32", "float64", "complex64", "complex128"}  # fmt: skip
KEY = DataKey("run_1", "kinds", lineage("kinds"))


def _records(n: int, start: int) -> np.ndarray:
    rng = np.random.default_rng(start)
    x = np.zeros(n, dtype=DTYPE)
    x["time"] = start + np.arange(n) * 10
    x["endtime"] = x["time"] + 5
    x["flag"] = rng.random(n) > 0.5
    x["small"] = rng.integers(-300, 300, n)
    x["value"] = rng.normal(size=n)
    x["z"] = rng.normal(size=n) + 1j * rng.normal(size=n)
    x["name"] = [f"n{i:05d}".encode() for i in range(n)]
    if n:
        x["names"] = [[b"ab", f"{i % 999}".encode()] for i in range(n)]
    x["label"] = [f"é{i % 100:02d}ü" for i in range(n)]
    x["when"] = np.datetime64("2026-01-01T00:00:00", "ns") + np.arange(n).astype("m8[ms]")
    x["dur"] = np.arange(n).astype("m8[us]") * 7
    return x


@pytest.fixture
def stored(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "s"), chunk_target_mb=0.001)
    parts = [_records(300, 0), _records(0, 10_000), _records(123, 20_000)]
    iv = [(0, 10_000), (10_000, 20_000), (20_000, 30_000)]
    meta = {"field_help": {"value": "a value [pe]"}, "field_units": {"value": "pe", "time": "ns"}}
    m = fe.saver(KEY, DTYPE, metadata=meta).save(parts, iv).compute()
    return fe, m, np.concatenate(parts), tmp_path / "s"


@pytest.mark.parametrize("how", ["to_numpy", "dask", "fields", "field_dask", "time_range"])
def test_every_kind_reads_back_exactly(stored, how):
    fe, _, ref, _ = stored
    if how == "to_numpy":
        got = fe.loader(KEY).to_numpy()
    elif how == "dask":
        with dask.config.set(scheduler="threads"):
            got = fe.loader(KEY).array.compute()
    elif how == "time_range":
        got = fe.loader(KEY, time_range=(100, 20_050)).to_numpy()
        ref = ref[(ref["time"] >= 100) & (ref["time"] < 20_050)]
    else:
        lazy = fe.loader(KEY, fields=["name", "names", "label", "when", "dur"])
        if how == "fields":
            got = lazy.to_numpy()
        else:
            got = {f: a.compute() for f, a in lazy.fields.items()}
            for f, a in got.items():
                assert (
                    a.dtype == DTYPE[f].base
                    and a.tobytes() == np.ascontiguousarray(ref[f]).tobytes()
                )
            return
        from numpy.lib.recfunctions import repack_fields

        ref = repack_fields(ref[list(got.dtype.names)])
    assert got.dtype == ref.dtype
    assert got.tobytes() == np.ascontiguousarray(ref).tobytes()


def test_stored_arrays_are_core_types_with_attributes(stored):
    _, m, ref, root = stored
    seg = m.segments[0]
    base = root / "data" / KEY.run_id / KEY.name / m.attempt / seg.name
    for f in DTYPE.names:
        doc = json.loads((base / f / "zarr.json").read_text())
        assert doc["data_type"] in CORE, (f, doc["data_type"])
        arr = zarr.open_array(str(base / f), mode="r")  # a plain reader
        rows = ref[: seg.rows][f]
        if DTYPE[f].base.kind in "SUMm":
            assert doc["attributes"]["numpy_dtype"] == DTYPE[f].base.str
            view = np.ascontiguousarray(arr[:]).view(DTYPE[f].base)
            if DTYPE[f].base.kind in "SU":
                view = view[..., 0]
            assert view.tobytes() == np.ascontiguousarray(rows).tobytes()
        else:
            assert arr[:].tobytes() == np.ascontiguousarray(rows).tobytes()
    value = json.loads((base / "value" / "zarr.json").read_text())["attributes"]
    assert value == {"description": "a value [pe]", "units": "pe"}


def test_xarray_view_carries_descriptions_units_and_time_coordinate(stored):
    fe, _, ref, _ = stored
    ds = fe.loader(KEY, fields=["time", "value"]).to_xarray()
    assert "time" in ds.coords and list(ds.data_vars) == ["value"]
    assert ds["value"].attrs == {"description": "a value [pe]", "units": "pe"}
    assert ds["time"].attrs == {"units": "ns"}
    np.testing.assert_array_equal(ds["value"].values, ref["value"])
