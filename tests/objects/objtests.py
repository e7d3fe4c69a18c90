"""The object-store conformance suites.

- :class:`ObjectStoreTests` needs a ``store`` fixture (an empty object store) and a ``state``
  fixture (a callable returning a comparable snapshot of everything stored).
- :class:`FsObjectStoreTests` adds what a ``ZarrBackend`` at a ``url`` fixture promises:
  layout, index partitions, arrays as objects, concurrent processes and crashes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import pickle
import threading

import fsspec
import pytest

from strata.storage import (
    DataCorrupted,
    DataKey,
    DataNotAvailable,
    InvalidKey,
    ReadOnlyError,
    ZarrBackend,
)
from strata.storage.objects import (
    InvalidObject,
    StoredArrayData,
    StoredArrayQuery,
    UnknownObjectClass,
    object_key,
)
from tests.helpers import STRAX_DTYPE, lineage, make_run
from tests.objects.models import (
    DetailedMeasurement,
    DetailedQuery,
    Measurement,
    MeasurementQuery,
    SimulationQuery,
    SimulationResult,
)
from tests.objects.workers import make_ancillary, store_at_once, store_until_killed


def read(store, path: str, name: str) -> bytes:
    """A file of a returned ancillary directory (a local path or a URL of the store's scheme)."""
    opts = getattr(store, "storage_options", {}) if "://" in path else {}
    with fsspec.open(f"{path}/{name}", "rb", **opts) as f:
        return f.read()


class ObjectStoreTests:
    @pytest.fixture
    def scratch(self, tmp_path):
        d = tmp_path / "scratch"
        d.mkdir()
        return str(d)

    def test_round_trip(self, store):
        m = Measurement(run_id="r1", name="gain", value=2.5, tags=["pmt"])
        key = store.store_object(m)
        got, path = store.retrieve_object(key)
        assert got == m
        assert type(got) is Measurement
        assert path is None
        assert store.retrieve_object(key, Measurement)[0] == m
        assert store.has_object(m) == key
        assert store.has_object(Measurement(run_id="r1", name="gain", value=2.6)) is None

    def test_identical_object_returns_first_key_and_rewrites_nothing(self, store, scratch, state):
        m = Measurement(run_id="r1", name="gain", value=2.5)
        key = store.store_object(m, make_ancillary(scratch, "first"))
        before = state()
        again = Measurement(run_id="r1", name="gain", value=2.5)
        assert store.store_object(again, make_ancillary(scratch, "second")) == key
        assert state() == before
        _, path = store.retrieve_object(key)
        assert read(store, path, "sub/note.txt") == b"first"

    def test_keys_are_unique(self, store):
        keys = {
            store.store_object(Measurement(run_id="r1", name=f"m{i}", value=i)) for i in range(20)
        }
        assert len(keys) == 20

    def test_replaceable_keeps_most_information(self, store, scratch):
        first = SimulationResult(substance="water", temperature=300, samples=10, note="a")
        key = store.store_object(first, make_ancillary(scratch, "ten"))
        better = SimulationResult(substance="water", temperature=300, samples=20, note="b")
        assert store.store_object(better, make_ancillary(scratch, "twenty")) == key
        got, path = store.retrieve_object(key)
        assert got == better
        assert read(store, path, "sub/note.txt") == b"twenty"
        worse = SimulationResult(substance="water", temperature=300, samples=5, note="c")
        assert store.store_object(worse, make_ancillary(scratch, "five")) == key
        got, path = store.retrieve_object(key)
        assert got == better
        assert read(store, path, "sub/note.txt") == b"twenty"
        other = SimulationResult(substance="water", temperature=310, samples=1)
        assert store.store_object(other) != key

    def test_replaceable_tie_keeps_stored_and_its_files(self, store, scratch, state):
        first = SimulationResult(substance="ethanol", temperature=298, samples=10, note="stored")
        key = store.store_object(first, make_ancillary(scratch, "stored"))
        before = state()
        tie = SimulationResult(substance="ethanol", temperature=298, samples=10, note="newcomer")
        assert store.store_object(tie, make_ancillary(scratch, "newcomer")) == key
        assert state() == before
        got, path = store.retrieve_object(key)
        assert got.note == "stored"
        assert read(store, path, "sub/note.txt") == b"stored"

    def test_query_base_class_finds_subclasses(self, store):
        a = Measurement(run_id="r1", name="gain", value=1)
        b = DetailedMeasurement(run_id="r1", name="gain", value=2, detail="x")
        c = Measurement(run_id="r2", name="gain", value=3)
        ka, kb, _kc = (store.store_object(o) for o in (a, b, c))
        res = store.query(MeasurementQuery(run_id="r1"))
        assert list(res) == [("r1",)]
        assert sorted((k, o) for k, o, _ in res[("r1",)]) == sorted([(ka, a), (kb, b)])
        assert store.query(DetailedQuery()) == {(): [(kb, b, None)]}
        assert set(store.query(MeasurementQuery(name="gain"))) == {("gain",)}
        assert sum(len(v) for v in store.query(MeasurementQuery()).values()) == 3
        assert store.query(MeasurementQuery(run_id="r3")) == {}
        assert store.query(SimulationQuery()) == {}

    def test_query_groups_by_matched_values(self, store):
        for run in ("r1", "r2"):
            for v in (1.0, 2.0):
                store.store_object(Measurement(run_id=run, name="g", value=v))
        res = store.query(MeasurementQuery(name="g", value=2.0))
        assert list(res) == [("g", 2.0)]
        assert len(res[("g", 2.0)]) == 2

    def test_ancillary_is_copied_not_moved(self, store, scratch):
        src = make_ancillary(scratch, "mine")
        key = store.store_object(Measurement(run_id="r1", name="a", value=1), src)
        assert os.path.exists(os.path.join(src, "payload.bin"))
        with open(os.path.join(src, "sub", "note.txt"), "w") as f:
            f.write("changed afterwards")
        _, path = store.retrieve_object(key)
        assert path != src
        assert read(store, path, "sub/note.txt") == b"mine"
        assert read(store, path, "payload.bin").startswith(b"mine")

    def test_remove_object(self, store, scratch):
        m = Measurement(run_id="r1", name="a", value=1)
        key = store.store_object(m, make_ancillary(scratch, "x"))
        store.remove_object(key)
        assert store.has_object(m) is None
        assert store.query(MeasurementQuery()) == {}
        with pytest.raises(DataNotAvailable):
            store.retrieve_object(key)
        with pytest.raises(DataNotAvailable):
            store.remove_object(key)
        assert store.store_object(m) == key  # can be stored again

    def test_invalid_object_changes_nothing(self, store, scratch, state):
        before = state()
        bad = Measurement.model_construct(run_id="r1", name="a", value="not a number")
        with pytest.raises(InvalidObject, match="fails validation"):
            store.store_object(bad, make_ancillary(scratch, "bad"))
        with pytest.raises(InvalidObject, match="JSON"):
            store.store_object(Measurement(run_id="r1", name="a", value=math.nan))
        with pytest.raises(InvalidObject, match="not an existing local directory"):
            store.store_object(Measurement(run_id="r1", name="a", value=1), f"{scratch}/nope")
        with pytest.raises(TypeError, match="BaseStoredData"):
            store.store_object({"run_id": "r1"})
        with pytest.raises(TypeError):
            store.query(Measurement(run_id="r1", name="a", value=1))
        assert state() == before
        with pytest.raises(Exception, match="validation error"):
            Measurement(run_id="r1", name="a", value="x")

    @pytest.mark.parametrize("key", ["../x", "a/b", "..", "", ".hidden", "x" * 200, "a b", 7])
    def test_bad_keys(self, store, key, state):
        before = state()
        with pytest.raises(InvalidKey):
            store.retrieve_object(key)
        with pytest.raises(InvalidKey):
            store.remove_object(key)
        assert state() == before

    def test_expected_type(self, store):
        key = store.store_object(Measurement(run_id="r1", name="a", value=1))
        with pytest.raises(TypeError, match="not a SimulationResult"):
            store.retrieve_object(key, SimulationResult)

    def test_threads_store_at_once(self, store):
        errors = []

        def work(t):
            try:
                for i in range(10):
                    store.store_object(Measurement(run_id=f"t{t}", name=f"m{i}", value=i))
                    store.store_object(Measurement(run_id="same", name=f"m{i}", value=i))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sum(len(v) for v in store.query(MeasurementQuery()).values()) == 50


class FsObjectStoreTests(ObjectStoreTests):
    @pytest.fixture
    def storage_options(self):
        return {}

    @pytest.fixture
    def store(self, url, storage_options):
        return ZarrBackend(url, storage_options=storage_options, chunk_target_mb=0.25)

    @pytest.fixture
    def state(self, store):
        def snapshot():
            root = store.path()
            store._invalidate(root)
            try:
                files = store.fs.find(root)
            except FileNotFoundError:
                return {}
            return {p: store.fs.cat_file(p) for p in files}

        return snapshot

    def test_layout_and_registered_name(self, store):
        m = DetailedMeasurement(run_id="r1", name="a", value=1, detail="d")
        key = store.store_object(m)
        doc = store.fs.cat_file(store.path("objects", f"{key}.json"))
        assert b'"class":"test.DetailedMeasurement"' in doc
        index = store.path("objects", "_index", "test.DetailedMeasurement", "r1", f"{key}.json")
        assert store.fs.cat_file(index) == doc
        assert key == object_key(m)

    def test_unknown_class_in_stored_json(self, store, state, caplog):
        key = store.store_object(Measurement(run_id="r1", name="a", value=1))
        path = store.path("objects", f"{key}.json")
        raw = store.fs.cat_file(path)
        import json

        from strata.storage.objects.base import _checksum

        doc = json.loads(raw)
        doc.pop("checksum")
        doc["class"] = "os.system"
        doc["checksum"] = _checksum(doc)
        store.fs.pipe_file(path, json.dumps(doc).encode())
        before = state()
        with pytest.raises(UnknownObjectClass, match=r"'os\.system' is not registered"):
            store.retrieve_object(key)
        assert state() == before

    def test_damaged_documents(self, store):
        key = store.store_object(Measurement(run_id="r1", name="a", value=1))
        path = store.path("objects", f"{key}.json")
        raw = store.fs.cat_file(path)
        store.fs.pipe_file(path, raw[: len(raw) // 2])
        with pytest.raises(DataCorrupted, match="not valid JSON"):
            store.retrieve_object(key)
        store.fs.pipe_file(path, raw.replace(b'"value":1.0', b'"value":2.0'))
        with pytest.raises(DataCorrupted, match="checksum"):
            store.retrieve_object(key)

    def test_index_partitions_are_read_alone(self, store, caplog):
        k1 = store.store_object(Measurement(run_id="r1", name="a", value=1))
        k2 = store.store_object(Measurement(run_id="r2", name="a", value=1))
        # damage r1's index entry: a query of r2 must not even read it
        store.fs.pipe_file(
            store.path("objects", "_index", "test.Measurement", "r1", f"{k1}.json"), b"{trunc"
        )
        with caplog.at_level(logging.WARNING):
            assert [k for k, _, _ in store.query(MeasurementQuery(run_id="r2"))[("r2",)]] == [k2]
        assert "damaged index entry" not in caplog.text
        with caplog.at_level(logging.WARNING):
            res = store.query(MeasurementQuery())
        assert "damaged index entry" in caplog.text
        assert [k for v in res.values() for k, _, _ in v] == [k2]
        # storing it again repairs the index
        store.store_object(Measurement(run_id="r1", name="a", value=1))
        assert len(store.query(MeasurementQuery())[()]) == 2

    def test_temporary_files_are_invisible(self, store):
        key = store.store_object(Measurement(run_id="r1", name="a", value=1))
        for d in (store.path("objects"), store.path("objects", "_index", "test.Measurement", "r1")):
            store.fs.pipe_file(f"{d}/{key}.json.0123abcd.tmp", b'{"format": "strata.obj')
        assert len(store.query(MeasurementQuery())[()]) == 1
        assert store.retrieve_object(key)[0].name == "a"
        removed = store.gc_objects(min_age_seconds=0)
        assert len(removed) == 2
        assert all(r.endswith(".tmp") for r in removed)

    def test_readonly(self, url, storage_options):
        ro = ZarrBackend(url, storage_options=storage_options, readonly=True)
        with pytest.raises(ReadOnlyError):
            ro.store_object(Measurement(run_id="r1", name="a", value=1))

    def test_pickled_backend_sees_objects(self, store, scratch):
        key = store.store_object(
            Measurement(run_id="r1", name="a", value=1), make_ancillary(scratch, "p")
        )
        clone = pickle.loads(pickle.dumps(store))
        got, path = clone.retrieve_object(key)
        assert got.name == "a"
        assert read(store, path, "sub/note.txt") == b"p"

    def test_arrays_are_stored_objects(self, store):
        def save(run, threshold, sizes=(10, 5), overwrite=False):
            lin = {
                "peaks": ["Peaks", "0.2", {"threshold": threshold}],
                "records": ["Records", "0.1", {"gain_model": "doc"}],
            }
            key = DataKey(run, "peaks", lin)
            parts, iv = make_run(list(sizes))
            store.saver(store.backend_key(key), key, STRAX_DTYPE, overwrite=overwrite).save(
                parts, iv
            ).compute()
            return key

        k3 = save("run_1", 3)
        save("run_1", 4)
        save("run_2", 3)
        rec = DataKey("run_1", "records", lineage("records"))
        store.saver(store.backend_key(rec), rec, STRAX_DTYPE).save(*make_run([3])).compute()
        res = store.query(
            StoredArrayQuery(run_id="run_1", data_type="peaks", options={"threshold": 3})
        )
        [(okey, obj, path)] = res[("run_1", "peaks", (("threshold", 3),))]
        assert isinstance(obj, StoredArrayData)
        assert obj.key == k3
        assert obj.rows == 15
        assert obj.plugin == "Peaks"
        assert obj.version == "0.2"
        # the ancillary directory is the committed Zarr group: zarr opens it (strata's
        # zarr_store only builds the store: zarr cannot open ssh:// URLs by itself)
        import zarr

        from strata.storage.fs import zarr_store

        group = zarr.open_group(store=zarr_store(path, store.storage_options), mode="r")
        assert group.attrs["strata"]["key"]["run_id"] == "run_1"
        assert store.retrieve_object(okey)[0] == obj
        assert (
            len(
                store.query(StoredArrayQuery(options={"gain_model": "doc"}))[
                    ((("gain_model", "doc"),),)
                ]
            )
            == 3
        )
        assert len(store.query(StoredArrayQuery(run_id="run_1"))[("run_1",)]) == 3
        # overwrite updates the object; remove removes it
        save("run_1", 3, sizes=(7,), overwrite=True)
        res = store.query(StoredArrayQuery(run_id="run_1", options={"threshold": 3}))
        assert [o.rows for _, o, _ in res[next(iter(res))]] == [7]
        with pytest.raises(InvalidKey, match="remove the data itself"):
            store.remove_object(okey)
        store.remove(store.backend_key(k3))
        assert store.query(StoredArrayQuery(run_id="run_1", options={"threshold": 3})) == {}
        with pytest.raises(DataNotAvailable):
            store.retrieve_object(okey)
        # a lost index is rebuilt from documents and manifests
        store.fs.rm(store.path("objects", "_index"), recursive=True)
        assert store.query(StoredArrayQuery()) == {}
        store.rebuild_object_index()
        assert sum(len(v) for v in store.query(StoredArrayQuery()).values()) == 3

    def test_concurrent_processes(self, url, storage_options, scratch):
        if url.startswith("memory://"):
            pytest.skip("memory:// is private to a process")
        n = 3
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [
            ctx.Process(
                target=store_at_once, args=(url, storage_options, scratch, w, barrier, results)
            )
            for w in range(n)
        ]
        for p in procs:
            p.start()
        outs = [results.get(timeout=240) for _ in procs]
        for p in procs:
            p.join(60)
        assert not [tb for _, _, tb in outs if tb], next(tb for _, _, tb in outs if tb)
        store = ZarrBackend(url, storage_options=storage_options)
        by_worker = {w: keys for w, keys, _ in outs}
        for i in range(4):  # identical objects met at one key
            assert len({by_worker[w][f"shared{i}"] for w in range(n)}) == 1
        assert len({by_worker[w]["sim"] for w in range(n)}) == 1
        res = store.query(MeasurementQuery())
        found = {k: o for v in res.values() for k, o, _ in v}
        assert len(found) == n * 6 + 4
        for w in range(n):
            for i in range(6):
                obj, path = store.retrieve_object(by_worker[w][f"own{i}"])
                assert (obj.run_id, obj.name) == (f"r{w}", f"m{i}")
                assert read(store, path, "sub/note.txt") == f"w{w}_{i}".encode()
        for i in range(4):
            _, path = store.retrieve_object(by_worker[0][f"shared{i}"])
            assert read(store, path, "sub/note.txt") in {f"s{w}_{i}".encode() for w in range(n)}
        sim, _ = store.retrieve_object(by_worker[0]["sim"])
        assert sim.samples in range(1, n + 1)
        # the losers of the exclusive creates removed their uploads
        assert store.gc_objects(min_age_seconds=0) == []

    def test_killed_writer_leaves_no_partial_object(self, url, storage_options, scratch):
        if url.startswith("memory://"):
            pytest.skip("memory:// is private to a process")
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        p = ctx.Process(
            target=store_until_killed, args=(url, storage_options, scratch, child), daemon=True
        )
        p.start()
        for _ in range(4):
            parent.recv()
        p.kill()  # somewhere inside the next store_object
        p.join(60)
        store = ZarrBackend(url, storage_options=storage_options)
        store._invalidate(store.path("objects"))
        docs = [
            f for f in store.fs.ls(store.path("objects"), detail=False) if str(f).endswith(".json")
        ]
        assert len(docs) >= 4
        for f in docs:  # every visible document is whole and names whole ancillary files
            key = str(f).rsplit("/", 1)[1][: -len(".json")]
            obj, path = store.retrieve_object(key)
            assert read(store, path, "payload.bin") == obj.name.replace("n", "c").encode().ljust(
                1_000_000, b"."
            )
        res = store.query(MeasurementQuery(run_id="crash"))
        assert len(res[("crash",)]) >= 4
        store.gc_objects(min_age_seconds=0)
        store.rebuild_object_index()
        assert len(store.query(MeasurementQuery(run_id="crash"))[("crash",)]) == len(docs)
        assert store.gc_objects(min_age_seconds=0) == []
