"""StraxDirectoryFrontend on data the real strax 2.2.3 wrote: strax's lineage hash, finding,
listing, lazy loads (fields, time ranges, one task per chunk), run metadata, read-only, a
strata Context over strax data, and workers of a real multi-process cluster reading it."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from strata.pipeline import Context
from strata.storage import DataCorrupted, DataKey, DataNotAvailable, InvalidKey, ReadOnlyError
from strata.storage.backends.strax import StraxBackend, parse_folder_name, strax_lineage_hash
from strata.storage.frontends.strax import StraxDirectoryFrontend, strax_directory_url
from tests.strax.lineages import CASES
from tests.strax.mirror import PLUGINS
from tests.strax.spec import CHUNK_NS, COMPRESSORS, R2_GAIN, ROWS

RECORDS = [f"records_{c}" for c in COMPRESSORS]


def same_bytes(got: np.ndarray, want: np.ndarray) -> bool:
    """Bit-exact: the same fields, in order, and the same bytes."""
    return got.dtype.names == want.dtype.names and got.tobytes() == want.tobytes()


# -- strax's lineage hash ---------------------------------------------------------------------
def test_lineage_hash_is_straxs_on_every_case(strax_written):
    ours = [strax_lineage_hash(c) for c in CASES]
    assert ours == strax_written.expected["hashes"]
    assert len(set(ours)) == len(ours)  # the cases differ, and so do their hashes


def test_every_folder_is_named_by_the_hash_of_its_stored_lineage(strax_written):
    for folder, k in strax_written.expected["keys"].items():
        assert folder == f"{k['run_id']}-{k['data_type']}-{strax_lineage_hash(k['lineage'])}"
        assert parse_folder_name(folder) == (k["run_id"], k["data_type"], folder[-10:])


def test_folder_names_that_are_no_keys():
    assert parse_folder_name("r1-records-abcdefghij_temp") is None  # a save in progress
    assert parse_folder_name("r1-records") is None
    assert parse_folder_name("r-1-records-abcdefghij") is None
    assert parse_folder_name("..-records-abcdefghij") is None
    assert parse_folder_name("r1-records-ABCDEFGHIJ") is None


# -- finding and listing ----------------------------------------------------------------------
def test_exact_lineage_is_found_by_straxs_hash(strax_written):
    fe = strax_written.frontend()
    key = strax_written.key("r2", "records_blosc")  # gain 2.5: strata's lineage is strax's
    folder = strax_written.folder("r2", "records_blosc")
    assert fe.backend.backend_key(key) == folder
    loc, stored = fe.find_key(key)
    assert (loc.backend, loc.backend_key, stored) == ("strax", folder, key)
    assert loc.manifest is not None and loc.manifest.key == key


def test_integral_float_options_are_found_by_lineage(strax_written):
    # strata keeps gain=1.0 as 1, which strax's hash tells apart: the run's folders of the type
    # are compared by lineage instead
    fe = strax_written.frontend()
    key = strax_written.key("r1", "records_lz4")
    assert key.lineage["records_lz4"][2]["gain"] == 1
    assert fe.backend.backend_key(key) != strax_written.folder("r1", "records_lz4")
    assert fe.find(key).backend_key == strax_written.folder("r1", "records_lz4")


def test_other_lineages_are_not_found_unless_fuzzy(strax_written):
    fe = strax_written.frontend()
    stored = strax_written.key("r2", "records_blosc")
    lineage = json.loads(json.dumps(stored.lineage))
    lineage["records_blosc"][2]["gain"] = 9.5
    other = DataKey("r2", "records_blosc", lineage)
    with pytest.raises(DataNotAvailable, match=r"r2-records_blosc-\w+ is not stored") as e:
        fe.find(other)
    assert fe.backend.backend_key(other) in str(e.value)  # names the folder it looked for
    assert not fe.is_stored(other)
    loc, found = fe.find_key(other, fuzzy_for_options=("gain",))
    assert found == stored and loc.backend_key == strax_written.folder("r2", "records_blosc")
    assert fe.find(other, fuzzy_for=("records_blosc",)).backend_key == loc.backend_key
    with pytest.raises(DataNotAvailable):
        fe.find(DataKey("r3", "records_blosc", stored.lineage))


def test_list_runs_and_skipped(strax_data):
    # a save in progress and stray entries are no keys
    folder = strax_data.folder("r1", "records_zstd")
    shutil.copytree(strax_data.path / folder, strax_data.path / f"{folder}_temp")
    (strax_data.path / "notes.txt").write_text("not strax")
    (strax_data.path / "r1-x").mkdir()
    fe = strax_data.frontend()
    entries = fe.list()
    assert {e.location.backend_key for e in entries} == set(strax_data.expected["keys"])
    by_folder = {e.location.backend_key: e for e in entries}
    e = by_folder[strax_data.folder("r1", "records_blosc")]
    assert (e.rows, e.partitions, e.start, e.end) == (sum(ROWS), 4, 0, 4 * CHUNK_NS)
    assert e.nbytes == sum(ROWS) * strax_data.array("r1", "records_blosc").dtype.itemsize
    assert e.stored_bytes == sum(
        p.stat().st_size for p in (strax_data.path / e.location.backend_key).glob("*-0*")
    )
    (broken,) = fe.skipped  # strax's save of 'broken' ended with an exception
    assert strax_data.expected["broken"] in broken and "exception" in broken
    assert [e.key.data_type for e in fe.list("r2")] == ["records_blosc"]
    assert fe.list_runs() == ["r1", "r2"]
    only = StraxDirectoryFrontend(str(strax_data.path), take_only=["sums"])
    assert [e.key.data_type for e in only.list()] == ["sums"]
    assert not only.is_stored(strax_data.key("r1", "records_blosc"))
    ex = StraxDirectoryFrontend(str(strax_data.path), exclude=["sums"])
    assert "sums" not in {e.key.data_type for e in ex.list()}


def test_a_failed_strax_save_is_not_available(strax_written):
    fe = strax_written.frontend()
    with pytest.raises(DataNotAvailable, match="ended with an exception"):
        fe.backend.get_metadata(strax_written.expected["broken"])


# -- loading ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data_type", [*RECORDS, "sums"])
def test_every_compressor_reads_bit_exact(strax_written, data_type):
    fe = strax_written.frontend()
    want = strax_written.array("r1", data_type)  # strax's own get_array
    lazy = fe.loader(strax_written.key("r1", data_type))
    assert len(lazy) == len(want)
    assert same_bytes(lazy.to_numpy(), want)
    assert same_bytes(lazy.array.compute(scheduler="threads"), want)
    assert same_bytes(lazy.array.compute(scheduler="sync"), want)
    for name in want.dtype.names:
        got = lazy.fields[name].compute()
        assert got.shape == want[name].shape and got.tobytes() == want[name].tobytes()


def test_one_task_per_strax_chunk_and_the_partition_table(strax_written):
    fe = strax_written.frontend()
    lazy = fe.loader(strax_written.key("r1", "records_bz2"))
    nonempty = sum(1 for n in ROWS if n)
    assert lazy.array.numblocks == (nonempty,)
    assert len(dict(lazy.array.__dask_graph__())) == nonempty
    assert lazy.array.chunks == (tuple(n for n in ROWS if n),)
    assert lazy.fields["data"].chunks == (tuple(n for n in ROWS if n), (4,), (3,))
    parts = lazy.manifest.partitions
    assert [(p.start, p.end, p.rows) for p in parts] == [
        (i * CHUNK_NS, (i + 1) * CHUNK_NS, n) for i, n in enumerate(ROWS)
    ]
    assert parts[2].segment is None  # the empty chunk: no file, an empty partition
    lazy.manifest.check("strax manifest")  # a consistent strata description


def test_manifest_says_what_strax_recorded(strax_written):
    fe = strax_written.frontend()
    key = strax_written.key("r1", "records_lz4")
    m = fe.get_metadata(key)
    assert m.np_dtype.names == ("time", "endtime", "channel", "area", "data", "flag")
    assert m.np_dtype["data"].shape == (4, 3)
    assert m.metadata["field_help"]["area"] == "Integral [PE]"
    assert m.metadata["strax"]["compressor"] == "lz4"
    assert m.metadata["strax"]["strax_version"] == "2.2.3"
    assert m.metadata["strax"]["folder"] == strax_written.folder("r1", "records_lz4")
    assert m.metadata["data_kind"] == "records_lz4"
    assert m.writing_ended.startswith("20") and m.writing_started <= m.writing_ended
    ds = fe.loader(key).to_xarray()
    assert ds["area"].attrs["description"] == "Integral [PE]"
    assert ds["data"].dims == ("row", "data_dim_1", "data_dim_2")


def test_fields_are_selected(strax_written):
    fe = strax_written.frontend()
    key = strax_written.key("r1", "records_zstd")
    want = strax_written.array("r1", "records_zstd")
    lazy = fe.loader(key, fields=["data", "time"])
    assert lazy.dtype.names == ("data", "time") and set(lazy.fields) == {"data", "time"}
    got = lazy.to_numpy()
    assert got["data"].tobytes() == want["data"].tobytes()
    assert got["time"].tobytes() == want["time"].tobytes()
    assert lazy.array.compute()["data"].tobytes() == want["data"].tobytes()
    assert list(fe.loader(key, fields="area").to_pandas().columns) == ["area"]
    with pytest.raises(ValueError, match=r"no field\(s\) \['nope'\]"):
        fe.loader(key, fields=["nope"])


@pytest.mark.parametrize("data_type", ["records_blosc", "records_lz4"])
def test_time_ranges_select_exactly(strax_written, data_type):
    fe = strax_written.frontend()
    key = strax_written.key("r1", data_type)
    want = strax_written.array("r1", data_type)
    t = want["time"]
    ranges = [
        (0, 10 * CHUNK_NS),
        (int(t[3]), int(t[10])),  # from one record's time to another's, across chunks
        (int(t[3]) + 1, int(t[3]) + 2),
        (1500, 3500),  # across the empty chunk
        (2100, 2900),  # inside the empty chunk
        (5000, 6000),  # after the run
        (int(t[-1]), int(t[-1]) + 1),
        (int(t[0]), int(t[0])),
    ]
    for t0, t1 in ranges:
        sel = want[(t >= t0) & (t < t1)]
        lazy = fe.loader(key, time_range=(t0, t1))
        assert len(lazy) == len(sel), (t0, t1)  # exact before anything is computed
        assert same_bytes(lazy.to_numpy(), sel), (t0, t1)
        assert same_bytes(lazy.array.compute(), sel), (t0, t1)
        assert lazy.fields["area"].compute().tobytes() == sel["area"].tobytes()
    with pytest.raises(ValueError, match="before its start"):
        fe.loader(key, time_range=(10, 5))


def test_time_ranges_read_only_overlapping_chunks(strax_data):
    # out of band: the last chunk's file is gone, so any read of it fails
    key = strax_data.key("r1", "records_zstd")
    folder = strax_data.folder("r1", "records_zstd")
    (strax_data.path / folder / f"{folder.split('-', 1)[1]}-000003").unlink()
    fe = strax_data.frontend()
    want = strax_data.array("r1", "records_zstd")
    inside = want[want["time"] < 2 * CHUNK_NS]
    assert same_bytes(fe.loader(key, time_range=(0, 2 * CHUNK_NS)).to_numpy(), inside)
    with pytest.raises(DataCorrupted, match=r"chunk 3 \(records_zstd-\w+-000003\).* missing"):
        fe.loader(key).to_numpy()
    first = int(want["time"][sum(ROWS[:3])])  # of chunk 3
    lazy = fe.loader(key, time_range=(first, 4 * CHUNK_NS))  # holds all of chunk 3: lazy
    with pytest.raises(DataCorrupted, match="chunk 3"):
        lazy.to_numpy()
    with pytest.raises(DataCorrupted, match="chunk 3"):
        fe.loader(key, time_range=(first + 1, 4 * CHUNK_NS))  # straddles: read at once


# -- run metadata, read-only, identity --------------------------------------------------------
def test_run_metadata_is_straxs_run_document(strax_written):
    fe = strax_written.frontend()
    doc = fe.run_metadata("r1")
    assert doc["calibration"] == {"gain": 2.0, "lifetime_us": 650.5}
    assert doc["mode"] == "background" and doc["name"] == "r1"
    assert doc["start"] == {"$date": "2026-01-02T03:04:05Z"}  # bson's JSON form, as stored
    with pytest.raises(DataNotAvailable, match="no run metadata for run 'r2'"):
        fe.run_metadata("r2")
    with pytest.raises(InvalidKey):
        fe.run_metadata("../r1")


def test_run_metadata_damaged_is_named(strax_data):
    (strax_data.path / "r1-metadata.json").write_text('{"mode": "backgr')
    with pytest.raises(DataCorrupted, match="run metadata 'r1'"):
        strax_data.frontend().run_metadata("r1")


def test_every_write_is_refused(strax_written):
    fe = strax_written.frontend()
    key = strax_written.key("r1", "records_blosc")
    dtype = fe.get_metadata(key).np_dtype
    with pytest.raises(ReadOnlyError):
        fe.saver(key, dtype)
    with pytest.raises(ReadOnlyError):
        fe.saver(DataKey("r9", "records_blosc", key.lineage), dtype)
    with pytest.raises(ReadOnlyError):
        fe.write_run_metadata("r1", {"mode": "x"})
    with pytest.raises(ReadOnlyError):
        fe.remove(key)
    with pytest.raises(ReadOnlyError):
        fe.gc()
    with pytest.raises(ReadOnlyError):
        fe.backend.saver("x", key, dtype)
    with pytest.raises(ReadOnlyError):
        fe.backend.remove(strax_written.folder("r1", "records_blosc"))
    with pytest.raises(ValueError, match="read-only"):
        StraxDirectoryFrontend(str(strax_written.path), readonly=False)
    assert fe.is_stored(key)  # nothing was touched
    assert fe.gc(dry_run=True) == []


def test_urls_pickling_and_repr(strax_written, tmp_path):
    path = str(strax_written.path)
    assert strax_directory_url(f"strax://{path}") == path
    assert strax_directory_url("strax+s3://bucket/strax") == "s3://bucket/strax"
    assert strax_directory_url(path) == path
    fe = StraxDirectoryFrontend(f"strax://{path}")
    assert repr(fe) == f"StraxDirectoryFrontend({path!r})"
    assert fe.storage_kind == "local"
    again = pickle.loads(pickle.dumps(fe))
    assert again == fe and hash(again) == hash(fe)
    assert again != StraxDirectoryFrontend(str(tmp_path))
    b = pickle.loads(pickle.dumps(fe.backend))
    assert b == fe.backend and isinstance(b, StraxBackend)
    key = strax_written.key("r1", "records_blosc")
    assert same_bytes(again.loader(key).to_numpy(), strax_written.array("r1", "records_blosc"))


def test_verify_reads_every_chunk(strax_data):
    folder = strax_data.folder("r1", "records_lz4")
    chunk = strax_data.path / folder / f"{folder.split('-', 1)[1]}-000001"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    reports = {r.backend_key: r for r in strax_data.frontend().verify()}
    assert set(reports) == set(strax_data.expected["keys"])
    bad = reports[folder]
    assert len(bad.problems) == 1 and "chunk 1" in bad.problems[0]
    assert all(not r.problems for k, r in reports.items() if k != folder)
    assert reports[strax_data.folder("r1", "sums")].objects == 3


# -- strata on top --------------------------------------------------------------------------
def test_a_strata_context_loads_straxs_data(strax_written):
    # plugins that mirror strax's (class, version, options): their keys are strax's, and
    # nothing is computed (their compute raises)
    ctx = Context(storage=[strax_written.frontend()], register=PLUGINS)
    for data_type in [*RECORDS, "sums"]:
        want = strax_written.array("r1", data_type)
        got = ctx.get_array("r1", data_type)
        assert got.tobytes() == want.tobytes(), data_type
    df = ctx.get_df("r1", "sums", fields=["time", "scaled"])
    np.testing.assert_array_equal(
        df["scaled"].to_numpy(), strax_written.array("r1", "sums")["scaled"]
    )
    ctx.set_config({"gain": R2_GAIN})
    got = ctx.get_array("r2", "records_blosc")
    assert got.tobytes() == strax_written.array("r2", "records_blosc").tobytes()


def test_workers_of_a_process_cluster_read_strax_files(strax_written):
    distributed = pytest.importorskip("distributed")
    fe = strax_written.frontend()
    key = strax_written.key("r1", "records_blosc")
    want = strax_written.array("r1", "records_blosc")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = fe.loader(key, fields=["time", "data"], time_range=(0, 2 * CHUNK_NS))
        got = lazy.array.compute(scheduler=client)
        pids = client.run(lambda: __import__("os").getpid())
    sel = want[want["time"] < 2 * CHUNK_NS]
    assert got["data"].tobytes() == sel["data"].tobytes()
    assert got["time"].tobytes() == sel["time"].tobytes()
    assert __import__("os").getpid() not in pids.values()


def test_strax_data_on_s3_is_read_in_place(strax_written, s3_bucket, s3_options):
    import fsspec

    fs = fsspec.filesystem("s3", **s3_options)
    fs.put(str(strax_written.path), f"{s3_bucket}/strax", recursive=True)
    fe = StraxDirectoryFrontend(f"strax+s3://{s3_bucket}/strax", storage_options=s3_options)
    assert fe.storage_kind == "remote"
    assert {e.location.backend_key for e in fe.list()} == set(strax_written.expected["keys"])
    for data_type in ("records_zstd", "sums"):
        got = fe.loader(strax_written.key("r1", data_type)).to_numpy()
        assert same_bytes(got, strax_written.array("r1", data_type))
    assert fe.run_metadata("r1")["mode"] == "background"
    assert s3_options["secret"] not in repr(fe) + repr(fe.backend)
