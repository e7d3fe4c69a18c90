"""Conformance suites for the storage roles, written once and subclassed per implementation.

In the manner of zarr's ``zarr/testing/store.py``: a test module subclasses a suite and
provides fixtures; the suites know no implementation.

- :class:`BackendTests` and :class:`SaverTests` need a ``make_backend`` fixture: a callable
  ``(**kwargs) -> StorageBackend`` whose backends all see the same (initially empty) store in
  one test (``kwargs``: ``readonly``, ``chunk_target_mb``), and an ``oob`` fixture: an
  out-of-band view of that store (:class:`OutOfBand`) that reads and writes what a backend
  stored without going through it.
- :class:`FrontendTests` needs a ``make_frontend`` fixture: a callable ``(**kwargs) ->
  StorageFrontend`` whose frontends all see the same (initially empty) catalog in one test;
  ``kwargs`` are ``readonly``, ``take_only`` and ``exclude``.

:class:`tests.stores.URLStore` provides all three for ``ZarrBackend`` / ``DirectoryFrontend``
at a ``url`` fixture.
"""

from __future__ import annotations

import pickle
from typing import Protocol

import dask
import numpy as np
import pytest

from strata.storage import (
    DataCorrupted,
    DataExistsError,
    DataKey,
    DataNotAvailable,
    InvalidKey,
    ReadOnlyError,
    StorageBackend,
)
from strata.storage.saver import MERGE_GROUP, SEGMENT_CHUNKS
from tests.helpers import PARTITION_NS, STRAX_DTYPE, lineage, make_records, make_run

CHUNK_MB = 0.25  # small chunks, so tests exercise several chunks and merges


def _key(run: str = "run_1", data_type: str = "records", **opts: object) -> DataKey:
    return DataKey(run, data_type, lineage(data_type, **opts))


class OutOfBand(Protocol):
    """What a suite may read and write behind a backend's back (a test's own view of the
    store, not the backend's code path)."""

    def manifest(self, backend_key: str) -> bytes:
        """The stored manifest of ``backend_key``."""

    def put_manifest(self, backend_key: str, data: bytes) -> None:
        """Replace the stored manifest of ``backend_key``."""


class BackendTests:
    """Round trips, laziness-relevant selection, pickling and removal of a backend."""

    @pytest.fixture
    def backend(self, make_backend) -> StorageBackend:
        return make_backend(chunk_target_mb=CHUNK_MB)

    def _save(self, backend: StorageBackend, sizes: list[int], key: DataKey | None = None, seed=0):
        key = key or _key()
        parts, intervals = make_run(sizes, seed=seed)
        saver = backend.saver(backend.backend_key(key), key, STRAX_DTYPE)
        manifest = saver.save([dask.delayed(p) for p in parts], intervals).compute()
        return key, np.concatenate(parts), manifest

    def test_round_trip_bit_identical(self, backend):
        key, ref, m = self._save(backend, [300, 1000, 0, 17, 2, 900])
        got = backend.loader(backend.backend_key(key)).to_numpy()
        assert got.dtype == STRAX_DTYPE
        assert got.tobytes() == ref.tobytes()
        assert m.rows == len(ref)
        assert m.nbytes == ref.nbytes
        for name, meta in m.arrays.items():  # every array ends with its checksum
            assert meta["codecs"][-1]["name"] == "crc32c", name

    def test_fields_are_plain_arrays(self, backend):
        key, ref, _ = self._save(backend, [500, 700])
        lazy = backend.loader(backend.backend_key(key), fields=["data", "time"])
        assert set(lazy.fields) == {"data", "time"}
        assert lazy.fields["data"].shape == (len(ref), 110)
        np.testing.assert_array_equal(lazy.fields["data"].compute(), ref["data"])
        np.testing.assert_array_equal(lazy.to_numpy()["time"], ref["time"])
        assert lazy.dtype.names == ("data", "time")

    def test_unknown_field_is_named(self, backend):
        key, _, _ = self._save(backend, [10])
        with pytest.raises(ValueError, match="nope"):
            backend.loader(backend.backend_key(key), fields=["nope"])

    @pytest.mark.parametrize(
        ("t0", "t1"),
        [
            (0, 6 * PARTITION_NS),  # everything
            (PARTITION_NS + 12345, 3 * PARTITION_NS + 777),  # straddles partitions
            (2 * PARTITION_NS, 3 * PARTITION_NS),  # exactly one partition
            (10 * PARTITION_NS, 11 * PARTITION_NS),  # nothing
            (5, 5),  # empty range
        ],
    )
    def test_time_range_trims_exactly(self, backend, t0, t1):
        key, ref, _ = self._save(backend, [300, 400, 0, 250, 5, 600])
        got = backend.loader(backend.backend_key(key), time_range=(t0, t1)).to_numpy()
        want = ref[(ref["time"] >= t0) & (ref["time"] < t1)]
        assert got.tobytes() == want.tobytes()

    def test_small_partitions_are_merged(self, backend):
        key, ref, m = self._save(backend, [3] * 40)
        assert len(m.segments) < 10
        assert len(m.partitions) == 40
        assert backend.loader(backend.backend_key(key)).to_numpy().tobytes() == ref.tobytes()

    def test_medium_partitions_are_not_held_for_merging(self, backend):
        # 1,200 records = 552 kB >= segment target (8 chunks)/16: written by their own stage
        # task, so a merge task never accumulates many partitions in memory
        assert 1200 * STRAX_DTYPE.itemsize * MERGE_GROUP >= CHUNK_MB * 2**20 * SEGMENT_CHUNKS
        _, _, m = self._save(backend, [1200] * 6)
        assert len(m.segments) == 6

    def test_empty_partitions_store_only_their_entry(self, backend):
        key, _, m = self._save(backend, [0, 0, 0])
        # an empty data type is zero-length arrays of every field: one segment of 0 rows
        assert m.rows == 0 and [s.rows for s in m.segments] == [0]
        assert [p.rows for p in m.partitions] == [0, 0, 0]
        got = backend.loader(backend.backend_key(key)).to_numpy()
        assert len(got) == 0 and got.dtype == STRAX_DTYPE

    def test_streaming_form_equals_dask_form(self, backend):
        parts, intervals = make_run([200, 3, 0, 1500, 4, 4])
        k1, k2 = _key(data_type="a"), _key(data_type="b")
        backend.saver(backend.backend_key(k1), k1, STRAX_DTYPE).save(parts, intervals).compute()
        with backend.saver(backend.backend_key(k2), k2, STRAX_DTYPE) as s:
            for p, (a, b) in zip(parts, intervals, strict=True):
                s.save_partition(p, a, b)
        m1, m2 = (backend.get_metadata(backend.backend_key(k)) for k in (k1, k2))
        assert m1.partitions == m2.partitions
        a1 = backend.loader(backend.backend_key(k1)).to_numpy()
        a2 = backend.loader(backend.backend_key(k2)).to_numpy()
        assert a1.tobytes() == a2.tobytes() == np.concatenate(parts).tobytes()

    def test_pickle_round_trip(self, backend):
        clone = pickle.loads(pickle.dumps(backend))
        assert clone == backend
        key, ref, _ = self._save(backend, [50])
        assert clone.loader(clone.backend_key(key)).to_numpy().tobytes() == ref.tobytes()

    def test_missing_key(self, backend):
        with pytest.raises(DataNotAvailable):
            backend.get_metadata(backend.backend_key(_key()))
        assert not backend.exists(backend.backend_key(_key()))

    def test_remove(self, backend):
        key, _, _ = self._save(backend, [10])
        bk = backend.backend_key(key)
        backend.remove(bk)
        assert not backend.exists(bk)
        with pytest.raises(DataNotAvailable):
            backend.remove(bk)

    @pytest.mark.parametrize("bad", ["../etc", "run/../x-abcdefgh", "run", "a/b/c", "r/x-UPPER123"])
    def test_bad_backend_keys(self, backend, bad):
        with pytest.raises(InvalidKey):
            backend.get_metadata(bad)

    def test_readonly_backend(self, make_backend):
        ro = make_backend(readonly=True)
        key = _key()
        with pytest.raises(ReadOnlyError):
            ro.saver(ro.backend_key(key), key, STRAX_DTYPE)

    def test_xarray_and_pandas(self, backend):
        key, ref, _ = self._save(backend, [100, 50])
        lazy = backend.loader(backend.backend_key(key))
        ds = lazy.to_xarray()
        assert ds["data"].dims == ("row", "data_dim_1")
        np.testing.assert_array_equal(ds["area"].values, ref["area"])
        df = lazy.to_pandas()
        assert list(df.columns) == ["time", "length", "dt", "channel", "area"]
        np.testing.assert_array_equal(df["time"].to_numpy(), ref["time"])


class SaverTests:
    """The commit protocol and the Saver's validation."""

    @pytest.fixture
    def backend(self, make_backend) -> StorageBackend:
        return make_backend(chunk_target_mb=CHUNK_MB)

    def _saver(self, backend, key=None, **kw):
        key = key or _key()
        return backend.saver(backend.backend_key(key), key, STRAX_DTYPE, **kw)

    def test_nothing_visible_before_commit(self, backend):
        key = _key()
        parts, intervals = make_run([100, 100])
        lazy = self._saver(backend, key).save(parts, intervals)
        assert not backend.exists(backend.backend_key(key))
        lazy.compute()
        assert backend.exists(backend.backend_key(key))

    def test_second_saver_raises(self, backend):
        key = _key()
        parts, intervals = make_run([10])
        self._saver(backend, key).save(parts, intervals).compute()
        with pytest.raises(DataExistsError, match="overwrite"):
            self._saver(backend, key)

    def test_concurrent_savers_one_commits(self, backend):
        key = _key()
        pa, iv = make_run([100, 20], seed=1)
        pb, _ = make_run([100, 20], seed=2)
        s1, s2 = self._saver(backend, key), self._saver(backend, key)
        s1.save(pa, iv).compute()
        with pytest.raises(DataExistsError):
            s2.save(pb, iv).compute()
        got = backend.loader(backend.backend_key(key)).to_numpy()
        assert got.tobytes() == np.concatenate(pa).tobytes()
        # the loser removed its attempt
        assert backend.gc(min_age_seconds=0) == []

    def test_overwrite_replaces(self, backend):
        key = _key()
        pa, iv = make_run([30], seed=1)
        pb, _ = make_run([40], seed=2)
        old = self._saver(backend, key).save(pa, iv).compute()
        reader = backend.loader(backend.backend_key(key))  # opened before the overwrite
        self._saver(backend, key, overwrite=True).save(pb, iv).compute()
        got = backend.loader(backend.backend_key(key)).to_numpy()
        assert got.tobytes() == np.concatenate(pb).tobytes()
        # the replaced attempt stays for readers of the old manifest, for the grace period
        assert reader.to_numpy().tobytes() == np.concatenate(pa).tobytes()
        assert backend.gc(min_age_seconds=0) == []
        [gone] = backend.gc(min_age_seconds=0, grace_seconds=0)
        assert old.attempt in gone
        with pytest.raises(DataCorrupted, match="missing"):
            reader.to_numpy()  # collected: a named error, never zeros
        assert backend.loader(backend.backend_key(key)).to_numpy().tobytes() == got.tobytes()

    def test_wrong_dtype_partition(self, backend):
        key = _key()
        parts, intervals = make_run([10, 10])
        parts[1] = parts[1].astype(
            [
                (n, STRAX_DTYPE[n].base.str.replace("4", "8"), STRAX_DTYPE[n].shape)
                for n in STRAX_DTYPE.names
            ]
        )
        with pytest.raises(ValueError, match=r"partition 1.*dtype"):
            self._saver(backend, key).save(parts, intervals).compute()
        assert not backend.exists(backend.backend_key(key))

    def test_records_outside_interval(self, backend):
        key = _key()
        parts, intervals = make_run([10, 10])
        intervals[1] = (intervals[1][0] + 10**9, intervals[1][1] + 10**9)
        with pytest.raises(ValueError, match=r"partition 1 .*before the partition start"):
            self._saver(backend, key).save(parts, intervals).compute()
        parts, intervals = make_run([10])
        intervals[0] = (intervals[0][0], intervals[0][0] + 5)
        with pytest.raises(ValueError, match="after the partition end"):
            self._saver(backend, key).save(parts, intervals).compute()
        assert not backend.exists(backend.backend_key(key))

    def test_unsorted_times(self, backend):
        key = _key()
        parts, intervals = make_run([10])
        parts[0] = parts[0][::-1].copy()
        with pytest.raises(ValueError, match="not sorted"):
            self._saver(backend, key).save(parts, intervals).compute()

    def test_overlapping_intervals(self, backend):
        parts, _ = make_run([1, 1])
        with pytest.raises(ValueError, match="overlaps"):
            self._saver(backend).save(parts, [(0, 10), (5, 20)])
        with pytest.raises(ValueError, match="2 partitions but 1 intervals"):
            self._saver(backend).save(parts, [(0, 10)])

    def test_bad_dtypes(self, backend):
        key = _key()
        for bad in [
            np.dtype("f8"),
            np.dtype([("x", "i8")]),
            np.dtype([("time", "i4")]),
            np.dtype([("time", "i8"), ("o", "O")]),
        ]:
            with pytest.raises(ValueError):
                backend.saver(backend.backend_key(key), key, bad)

    def test_failed_save_leaves_nothing_and_gc_cleans(self, backend):
        key = _key()
        parts, intervals = make_run([2000, 2000, 10])
        bad = parts[2][::-1].copy()
        saver = self._saver(backend, key)
        saver.save_partition(parts[0], *intervals[0])
        saver.save_partition(parts[1], *intervals[1])
        with pytest.raises(ValueError, match="not sorted"):
            saver.save_partition(bad, *intervals[2])
        assert not backend.exists(backend.backend_key(key))
        leftovers = backend.gc(min_age_seconds=0)
        assert len(leftovers) == 1 and saver.attempt in leftovers[0]
        assert backend.gc(min_age_seconds=0) == []
        # the Dask form: a failing task leaves nothing visible either
        with pytest.raises(ValueError, match="not sorted"):
            # (sync scheduler: no task of the failed graph is still running when gc runs)
            self._saver(backend, key).save([*parts[:2], bad], intervals).compute(scheduler="sync")
        assert not backend.exists(backend.backend_key(key))
        backend.gc(min_age_seconds=0)
        self._saver(backend, key).save(parts, intervals).compute()
        got = backend.loader(backend.backend_key(key)).to_numpy()
        assert got.tobytes() == np.concatenate(parts).tobytes()
        assert backend.gc(min_age_seconds=0) == []

    def test_gc_keeps_young_attempts(self, backend):
        key = _key()
        saver = self._saver(backend, key)
        saver.save_partition(make_records(3000, 0), 0, PARTITION_NS)  # written, not committed
        assert backend.gc(min_age_seconds=3600) == []
        assert len(backend.gc(min_age_seconds=0)) == 1

    def test_abort_removes_attempt(self, backend):
        key = _key()

        def fail_mid_save():
            with self._saver(backend, key) as s:
                s.save_partition(make_records(3000, 0), 0, PARTITION_NS)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_mid_save()
        assert not backend.exists(backend.backend_key(key))
        assert backend.gc(min_age_seconds=0) == []

    def test_abort_after_commit_keeps_the_data(self, backend):
        key = _key()
        parts, intervals = make_run([2000, 10])
        saver = self._saver(backend, key)
        saver.save(parts, intervals).compute()
        saver.abort()  # e.g. a pipeline cleaning up after another type failed
        got = backend.loader(backend.backend_key(key)).to_numpy()
        assert got.tobytes() == np.concatenate(parts).tobytes()

    def test_writing_started_is_the_first_write(self, backend):
        key = _key()
        parts, intervals = make_run([20])
        saver = self._saver(backend, key)
        created = saver.started
        m = saver.save(parts, intervals).compute()
        assert created <= m.writing_started <= m.writing_ended

    def test_metadata_is_stored(self, backend):
        key = _key()
        parts, intervals = make_run([5])
        self._saver(backend, key, metadata={"note": "hi", "n": 3}).save(parts, intervals).compute()
        m = backend.get_metadata(backend.backend_key(key))
        assert m.metadata == {"note": "hi", "n": 3}
        assert m.key == key
        assert m.writing_started <= m.writing_ended

    def test_tampered_manifest(self, backend, oob):
        key = _key()
        bk = backend.backend_key(key)
        parts, intervals = make_run([5])
        self._saver(backend, key).save(parts, intervals).compute()
        raw = oob.manifest(bk)
        assert b'"rows":5' in raw.replace(b" ", b"")
        oob.put_manifest(
            bk, raw.replace(b'"rows": 5', b'"rows": 6').replace(b'"rows":5', b'"rows":6')
        )
        with pytest.raises(DataCorrupted, match="checksum"):
            backend.get_metadata(bk)
        oob.put_manifest(bk, raw[: len(raw) // 2])
        with pytest.raises(DataCorrupted, match="not valid JSON"):
            backend.loader(bk)
        oob.put_manifest(bk, raw)
        assert len(backend.loader(bk).to_numpy()) == 5


class FrontendTests:
    """The catalog contract: find (exact and fuzzy), list, run metadata, readonly, take_only."""

    def _save(self, frontend, key, sizes=(20, 30), seed=0):
        parts, intervals = make_run(list(sizes), seed=seed)
        frontend.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
        return np.concatenate(parts)

    def test_find_exact(self, make_frontend):
        fe = make_frontend()
        key = _key(threshold=3)
        with pytest.raises(DataNotAvailable):
            fe.find(key)
        ref = self._save(fe, key)
        loc = fe.find(key)
        assert loc.backend in fe.backends
        assert fe.is_stored(key)
        assert fe.loader(key).to_numpy().tobytes() == ref.tobytes()
        assert fe.get_metadata(key).key == key
        assert not fe.is_stored(_key(threshold=4))

    def test_fuzzy_for_options(self, make_frontend):
        fe = make_frontend()
        stored = _key(threshold=3, other=1)
        self._save(fe, stored)
        wanted = _key(threshold=5, other=1)
        with pytest.raises(DataNotAvailable):
            fe.find(wanted)
        _, found = fe.find_key(wanted, fuzzy_for_options=("threshold",))
        assert found == stored
        with pytest.raises(DataNotAvailable):
            fe.find(_key(threshold=5, other=2), fuzzy_for_options=("threshold",))

    def test_fuzzy_for_data_types(self, make_frontend):
        fe = make_frontend()
        lin = {"peaks": ["Peaks", "1", {}], "records": ["Records", "1", {"gain": 1}]}
        stored = DataKey("run_1", "peaks", lin)
        self._save(fe, stored)
        lin2 = {"peaks": ["Peaks", "1", {}], "records": ["Records", "2", {"gain": 2}]}
        wanted = DataKey("run_1", "peaks", lin2)
        assert not fe.is_stored(wanted)
        assert fe.find_key(wanted, fuzzy_for=("records",))[1] == stored
        assert fe.loader(wanted, fuzzy_for=("records",)).key == stored

    def test_find_several(self, make_frontend):
        fe = make_frontend()
        a, b = _key(data_type="a"), _key(data_type="b")
        self._save(fe, a)
        res = fe.find_several([a, b])
        assert res[0] is not None and res[1] is None

    def test_list(self, make_frontend):
        fe = make_frontend()
        self._save(fe, _key("run_1", "a"), sizes=(10, 0, 5))
        self._save(fe, _key("run_2", "b"))
        entries = fe.list("run_1")
        assert [e.key for e in entries] == [_key("run_1", "a")]
        assert entries[0].rows == 15 and entries[0].partitions == 3
        assert {str(e.key) for e in fe.list()} == {str(_key("run_1", "a")), str(_key("run_2", "b"))}
        assert {"run_1", "run_2"} <= set(fe.list_runs())

    def test_run_metadata(self, make_frontend):
        fe = make_frontend()
        with pytest.raises(DataNotAvailable):
            fe.run_metadata("run_7")
        doc = {"gains": [1.0, 2.5], "start": 123, "tags": {"source": "Kr83m"}}
        fe.write_run_metadata("run_7", doc)
        assert fe.run_metadata("run_7") == doc
        assert "run_7" in fe.list_runs()
        doc["gains"] = [3.0]
        fe.write_run_metadata("run_7", doc)
        assert fe.run_metadata("run_7")["gains"] == [3.0]
        with pytest.raises(InvalidKey):
            fe.write_run_metadata("../x", doc)
        with pytest.raises(InvalidKey):
            fe.run_metadata("a/b")

    def test_readonly(self, make_frontend):
        fe = make_frontend()
        key = _key()
        self._save(fe, key)
        ro = make_frontend(readonly=True)
        assert ro.is_stored(key)
        with pytest.raises(ReadOnlyError):
            ro.saver(_key(data_type="other"), STRAX_DTYPE)
        with pytest.raises(ReadOnlyError):
            ro.write_run_metadata("run_1", {})

    def test_take_only_and_exclude(self, make_frontend):
        fe = make_frontend()
        a, b = _key(data_type="a"), _key(data_type="b")
        self._save(fe, a)
        self._save(fe, b)
        only_a = make_frontend(take_only=("a",))
        assert only_a.is_stored(a) and not only_a.is_stored(b)
        with pytest.raises(ReadOnlyError):
            only_a.saver(_key(data_type="c"), STRAX_DTYPE)
        no_a = make_frontend(exclude=("a",))
        assert not no_a.is_stored(a) and no_a.is_stored(b)
        assert [e.key.data_type for e in no_a.list("run_1")] == ["b"]

    def test_existing_key_raises(self, make_frontend):
        fe = make_frontend()
        key = _key()
        self._save(fe, key)
        with pytest.raises(DataExistsError):
            fe.saver(key, STRAX_DTYPE)

    def test_pickle(self, make_frontend):
        fe = make_frontend()
        clone = pickle.loads(pickle.dumps(fe))
        key = _key()
        self._save(fe, key)
        assert clone.is_stored(key)
