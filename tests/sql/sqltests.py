"""SQL-catalog behaviour beyond the frontend conformance suite, for SQLite and PostgreSQL.

A test class mixes :class:`SQLCatalogTests` in and provides ``make_frontend`` (as for
``FrontendTests``), ``db_url`` (an empty catalog) and uses ``tmp_path``.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import random

import numpy as np
import pytest
import sqlalchemy as sa

from strata.storage import (
    DataExistsError,
    DataKey,
    DataNotAvailable,
    InvalidKey,
    Location,
    ReadOnlyError,
    ZarrBackend,
    canonical_json,
    lineage_matches,
    open_frontend,
)
from strata.storage.frontends.sql import SCHEMA_VERSION, SchemaVersionError, SQLFrontend, info_table
from strata.storage.manifest import Manifest
from strata.storage.objects import StoredArrayQuery
from tests.helpers import STRAX_DTYPE, make_run
from tests.sql.workers import equal_records, key_for, save_and_hang, save_many


def _save(fe, key, sizes=(20, 30), seed=0):
    parts, iv = make_run(list(sizes), seed=seed)
    fe.saver(key, STRAX_DTYPE).save(parts, iv).compute()
    return np.concatenate(parts)


def _fake_manifest(key: DataKey) -> Manifest:
    return Manifest(
        key=key,
        dtype=[["time", "<i8", []]],
        arrays={},
        attempt="a20260101T000000000000Z_000000000000",
        partitions=[],
        segments=[],
        writing_started="",
        writing_ended="",
    )


def _random_lineage(rng: random.Random) -> dict:
    values = [1, 2, "x", [1, 2], {"k": 1}, 2.5]
    lin = {}
    for dt in ["peaks", *rng.sample(["records", "raw", "hits"], rng.randint(0, 2))]:
        opts = {o: rng.choice(values) for o in rng.sample(["a", "b", "c"], rng.randint(0, 3))}
        lin[dt] = [rng.choice(["P", "Q"]), rng.choice(["1", "2"]), opts]
    return lin


class SQLCatalogTests:
    def test_open_frontend_by_url(self, db_url, tmp_path):
        fe = open_frontend(db_url, data_url=str(tmp_path / "d"))
        assert isinstance(fe, SQLFrontend)
        assert fe.schema_version == SCHEMA_VERSION
        assert "secret" not in repr(fe)

    def test_several_locations_in_backend_order(self, db_url, tmp_path):
        a, b = ZarrBackend(str(tmp_path / "a")), ZarrBackend(str(tmp_path / "b"))
        fe = SQLFrontend(db_url, backends={"a": a, "b": b})
        key = key_for("run_1", "peaks", threshold=3)
        ref = _save(fe, key)
        assert fe.find(key) == Location("a", a.backend_key(key))
        # a second copy in b, registered: a is still preferred
        parts, iv = make_run([20, 30])
        b.saver(b.backend_key(key), key, STRAX_DTYPE).save(parts, iv).compute()
        fe.add_location(key, "b")
        assert [loc.backend for loc in fe.locations(key)] == ["a", "b"]
        assert fe.find(key).backend == "a"
        # b first in the configured order
        fe_b = SQLFrontend(db_url, backends={"b": b, "a": a})
        assert fe_b.find(key).backend == "b"
        # the copy in a disappears (scratch cleaned): find falls back to b
        a.remove(a.backend_key(key))
        assert fe.find(key).backend == "b"
        assert fe.loader(key).to_numpy().tobytes() == ref.tobytes()
        # trusting the catalog, the first location is returned unverified
        assert (
            SQLFrontend(db_url, backends={"a": a, "b": b}, verify_locations=False).find(key).backend
            == "a"
        )

    def test_add_location_needs_committed_data(self, make_frontend, db_url, tmp_path):
        a, b = ZarrBackend(str(tmp_path / "a")), ZarrBackend(str(tmp_path / "b"))
        fe = SQLFrontend(db_url, backends={"a": a, "b": b})
        key = key_for("run_1", "peaks")
        _save(fe, key)
        with pytest.raises(DataNotAvailable):
            fe.add_location(key, "b")
        assert [loc.backend for loc in fe.locations(key)] == ["a"]
        with pytest.raises(ValueError, match="no backend 'c'"):
            fe.add_location(key, "c")

    def test_fuzzy_matching_in_sql_equals_lineage_matches(self, db_url, tmp_path):
        fe = SQLFrontend(db_url, data_url=str(tmp_path / "d"), verify_locations=False)
        rng = random.Random(5)
        stored = {}
        while len(stored) < 80:
            k = DataKey("run_1", "peaks", _random_lineage(rng))
            stored[k.lineage_hash] = k
        fe._register_many(
            [(k, Location("data", f"run_1/{k.name}"), _fake_manifest(k)) for k in stored.values()]
        )
        fuzzies = [
            ((), ("a",)),
            (("records",), ()),
            (("records", "raw"), ("b",)),
            (("hits",), ("a", "c")),
            (("peaks",), ()),
            ((), ("a", "b", "c")),
        ]
        checked = matched = 0
        wanted_keys = [
            *list(stored.values())[:20],
            *(DataKey("run_1", "peaks", _random_lineage(rng)) for _ in range(40)),
        ]
        with fe.engine.connect() as conn:
            for wanted in wanted_keys:
                for ff, ffo in fuzzies:
                    rows = fe._fuzzy_rows(conn, wanted, ff, ffo)
                    got = {r.lineage for r in rows}
                    want = {
                        canonical_json(k.lineage)
                        for k in stored.values()
                        if lineage_matches(k.lineage, wanted.lineage, ff, ffo)
                    }
                    assert got == want, (wanted.lineage, ff, ffo)
                    checked += 1
                    matched += bool(want)
        assert checked == 60 * len(fuzzies)
        assert matched > 20

    def test_fuzzy_find_prefers_exact_then_newest(self, make_frontend):
        fe = make_frontend()
        old = key_for("run_1", "peaks", threshold=1, other=1)
        new = key_for("run_1", "peaks", threshold=2, other=1)
        _save(fe, old)
        _save(fe, new)
        wanted = key_for("run_1", "peaks", threshold=9, other=1)
        assert fe.find_key(wanted, fuzzy_for_options=("threshold",))[1] == new
        assert fe.find_key(old, fuzzy_for_options=("threshold",))[1] == old
        res = fe.find_several(
            [old, wanted, key_for("run_2", "x")], fuzzy_for_options=("threshold",)
        )
        assert [r is not None for r in res] == [True, True, False]

    def test_find_several_many_keys(self, make_frontend):
        fe = make_frontend()
        keys = [key_for("run_1", f"t{i}") for i in range(3)]
        for k in keys:
            _save(fe, k, sizes=(3,))
        probe = [*keys, *(key_for("run_1", f"t{i}") for i in range(3, 450))]
        res = fe.find_several(probe)
        assert [r is not None for r in res] == [True] * 3 + [False] * 447
        assert res[1] == fe.find(keys[1])

    def test_schema_version_is_checked(self, make_frontend):
        fe = make_frontend()
        with fe.engine.begin() as conn:
            conn.execute(
                info_table.update()
                .where(info_table.c.name == "schema_version")
                .values(value=str(SCHEMA_VERSION + 1))
            )
        with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
            make_frontend()

    def test_failed_or_killed_saves_are_never_registered(self, make_frontend, db_url, tmp_path):
        fe = make_frontend()
        key = key_for("run_1", "peaks")
        parts, iv = make_run([10, 10])
        parts[1] = parts[1][::-1].copy()
        with pytest.raises(ValueError, match="not sorted"):
            fe.saver(key, STRAX_DTYPE).save(parts, iv).compute()
        saver = fe.saver(key, STRAX_DTYPE)
        saver.save_partition(parts[0], *iv[0])
        with pytest.raises(ValueError, match="not sorted"):
            saver.save_partition(parts[1], *iv[1])
        # a process killed after writing a partition, before committing
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        p = ctx.Process(
            target=save_and_hang, args=(fe.db_url, fe.backends["data"].url, child), daemon=True
        )
        p.start()
        attempt = parent.recv()
        p.kill()
        p.join(60)
        assert not fe.is_stored(key)
        assert not fe.is_stored(key_for("run_9", "killed"))
        assert fe.list() == []
        assert [e for e in fe.backends["data"].gc(min_age_seconds=0) if attempt in e]

    def test_concurrent_processes_lose_nothing(self, db_url, tmp_path):
        data_url = str(tmp_path / "data")
        n = 3
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(n), ctx.Queue()
        shared = [("run_s", "shared_a"), ("run_s", "shared_b")]
        procs = [
            ctx.Process(
                target=save_many,
                args=(
                    db_url,
                    data_url,
                    w,
                    [(f"run_{w}", f"own_{j}") for j in range(4)],
                    shared,
                    barrier,
                    results,
                ),
            )
            for w in range(n)
        ]
        for p in procs:
            p.start()
        outs = [results.get(timeout=240) for _ in procs]
        for p in procs:
            p.join(60)
        errors = [tb for _, _, tb in outs if tb]
        assert not errors, errors[0]
        fe = SQLFrontend(db_url, data_url=data_url)
        merged: dict = {}
        for _, out, _ in outs:
            for k, v in out.items():
                merged.setdefault(k, []).append(v)
        assert len(merged) == 4 * n + len(shared)
        for k, outcomes in merged.items():
            assert sum(o == "ok" for o, _ in outcomes) == 1, (k, outcomes)
        entries = {str(e.key): e for e in fe.list()}
        assert set(entries) == set(merged)
        backend = fe.backends["data"]
        for k, outcomes in merged.items():
            (seed,) = [s for o, s in outcomes if o == "ok"]
            e = entries[k]
            assert backend.exists(e.location.backend_key)  # registered => committed
            parts, _ = make_run([40, 0, 25], seed=seed)
            assert equal_records(fe.loader(e.key).to_numpy(), np.concatenate(parts))
        assert backend.gc(min_age_seconds=0) == []
        # the backend's object index saw every commit as well
        found = backend.query(StoredArrayQuery())
        assert sum(len(v) for v in found.values()) == len(merged)

    def test_query_arrays_in_sql(self, make_frontend):
        fe = make_frontend()
        lin = {"peaks": ["Peaks", "1", {"threshold": 3}], "records": ["Records", "2", {"gain": 1}]}
        k3 = DataKey("run_1", "peaks", lin)
        k4 = DataKey("run_1", "peaks", {**lin, "peaks": ["Peaks", "1", {"threshold": 4}]})
        k5 = DataKey("run_2", "peaks", lin)
        for k in (k3, k4, k5):
            _save(fe, k)
        q = StoredArrayQuery(run_id="run_1", data_type="peaks", options={"threshold": 3})
        res = fe.query(q)
        assert list(res) == [("run_1", "peaks", (("threshold", 3),))]
        [(_okey, obj, path)] = res[next(iter(res))]
        assert obj.key == k3
        assert obj.rows == 50
        assert path.endswith(obj.attempt)
        # the same answer as the backend's own object index
        assert fe.backends["data"].query(q) == res
        assert len(fe.query(StoredArrayQuery(options={"gain": 1}))[((("gain", 1),),)]) == 3
        assert fe.query(StoredArrayQuery(plugin="Peaks", version="1", run_id="run_2"))
        assert fe.query(StoredArrayQuery(options={"gain": 2})) == {}

    def test_remove(self, make_frontend):
        fe = make_frontend()
        key = key_for("run_1", "peaks")
        _save(fe, key)
        bk = fe.find(key).backend_key
        fe.remove(key)
        assert not fe.is_stored(key)
        assert not fe.backends["data"].exists(bk)
        with pytest.raises(DataNotAvailable):
            fe.remove(key)
        _save(fe, key)  # can be saved again
        assert fe.is_stored(key)
        with pytest.raises(ReadOnlyError):
            make_frontend(readonly=True).remove(key)

    def test_overwrite_updates_the_entry(self, make_frontend):
        fe = make_frontend()
        key = key_for("run_1", "peaks")
        _save(fe, key, sizes=(5,))
        parts, iv = make_run([7, 8], seed=3)
        fe.saver(key, STRAX_DTYPE, overwrite=True).save(parts, iv).compute()
        [e] = fe.list()
        assert e.stored_bytes > 0
        assert e.rows == 15
        assert e.partitions == 2
        assert fe.loader(key).to_numpy().tobytes() == np.concatenate(parts).tobytes()

    def test_scan_imports_a_directory_store(self, db_url, tmp_path):
        from strata.storage import DirectoryFrontend

        d = DirectoryFrontend(str(tmp_path / "dir"))
        keys = [key_for("run_1", "a"), key_for("run_2", "b")]
        for k in keys:
            _save(d, k)
        fe = SQLFrontend(db_url, data_url=str(tmp_path / "dir"))
        assert not fe.is_stored(keys[0])
        assert fe.scan() == 2
        assert all(fe.is_stored(k) for k in keys)
        assert fe.scan() == 2  # idempotent
        assert len(fe.list()) == 2

    def test_run_metadata_and_runs(self, make_frontend):
        fe = make_frontend()
        _save(fe, key_for("run_d", "a"))
        fe.write_run_metadata("run_m", {"t": 1})
        assert fe.list_runs() == ["run_d", "run_m"]
        with pytest.raises(ValueError, match="plain JSON"):
            fe.write_run_metadata("run_m", {"t": float("nan")})
        assert make_frontend().run_metadata("run_m") == {"t": 1}

    def test_pickle_and_equality(self, make_frontend):
        fe = make_frontend()
        clone = pickle.loads(pickle.dumps(fe))
        assert clone == fe
        assert hash(clone) == hash(fe)
        assert clone.backends == fe.backends

    def test_bad_arguments(self, db_url, tmp_path):
        with pytest.raises(ValueError, match="either backends= or data_url="):
            SQLFrontend(db_url, backends={"a": str(tmp_path)}, data_url=str(tmp_path))
        with pytest.raises(ValueError, match="save_to"):
            SQLFrontend(db_url, data_url=str(tmp_path), save_to="nope")
        with pytest.raises(ValueError, match="unsupported catalog database"):
            SQLFrontend("mysql://x/y", data_url=str(tmp_path))
        fe = SQLFrontend(db_url, data_url=str(tmp_path / "d"))
        with pytest.raises(InvalidKey):
            fe.list("../x")

    def test_existing_key_in_another_backend_raises(self, db_url, tmp_path):
        a, b = ZarrBackend(str(tmp_path / "a")), ZarrBackend(str(tmp_path / "b"))
        key = key_for("run_1", "x")
        _save(SQLFrontend(db_url, backends={"a": a, "b": b}), key)
        fe_b = SQLFrontend(db_url, backends={"a": a, "b": b}, save_to="b")
        with pytest.raises(DataExistsError, match="backend 'a'"):
            fe_b.saver(key, STRAX_DTYPE)

    def test_tables_are_indexed(self, make_frontend):
        fe = make_frontend()
        insp = sa.inspect(fe.engine)
        uniques = insp.get_unique_constraints("strata_entries")
        assert any(u["column_names"] == ["run_id", "data_type", "lineage_hash"] for u in uniques)
        pk = insp.get_pk_constraint("strata_lineage_options")["constrained_columns"]
        assert pk[0] == "entry_id"
