"""Operations on whole object stores (openff-evaluator's ``MutableLocalFileStorage``): merge
with ``update`` / ``+=``, ``subset`` into another store, the in-memory object cache, and how
"the same object" is decided (``identity_fields`` or ``to_storage_query``).

The merge scenarios follow openff-evaluator's ``test_storage/test_mutable.py``: merging keeps
the target's objects and the source's, and an overlapping replaceable object is replaced by the
one with more information (lower statistical inefficiency). Stores are real ``ZarrBackend``
objects on local disk, ``memory://`` and (one test) a real S3 server.
"""

from __future__ import annotations

import os
import pickle

import fsspec
import pytest

from strata.storage import DataKey, ZarrBackend
from strata.storage.objects import (
    BaseDataQuery,
    BaseStoredData,
    InvalidObject,
    ReplaceableData,
    StoredArrayData,
    StoredArrayQuery,
    object_key,
)
from strata.storage.objects.base import _REGISTRY
from strata.storage.objects.store import StoreOutcome
from tests.helpers import LOCAL_URL_KINDS, STRAX_DTYPE, lineage, local_url, make_run
from tests.objects.workers import make_ancillary


class SimulationData(ReplaceableData, stored_name="test.ops.SimulationData"):
    """openff's StoredSimulationData, reduced: the same substance, state and calculation is the
    same data; a lower statistical inefficiency is more information.
    """

    identity_fields = ("substance", "temperature", "calculation_id")

    substance: str
    temperature: float
    calculation_id: str
    statistical_inefficiency: float

    @classmethod
    def has_ancillary_data(cls) -> bool:
        return True

    @classmethod
    def most_information(cls, stored, other):
        if other.statistical_inefficiency < stored.statistical_inefficiency:
            return other
        return stored


class ForceField(BaseStoredData, stored_name="test.ops.ForceField"):
    """openff's ForceFieldData: hashable, an identical one is the same object."""

    source: str


class EquilibrationQuery(BaseDataQuery):
    substance: str | None = None
    temperature: float | None = None

    @classmethod
    def data_class(cls):
        return EquilibrationData


class EquilibrationData(ReplaceableData, stored_name="test.ops.EquilibrationData"):
    """Identity by openff's ``to_storage_query()`` instead of identity_fields."""

    substance: str
    temperature: float
    molecules: int

    def to_storage_query(self):
        return EquilibrationQuery(substance=self.substance, temperature=self.temperature)

    @classmethod
    def most_information(cls, stored, other):
        return other if other.molecules > stored.molecules else stored


@pytest.fixture(params=LOCAL_URL_KINDS)
def kind(request):
    return request.param


@pytest.fixture
def make_store(kind, tmp_path):
    made = []

    def make(tag: str) -> ZarrBackend:
        b = ZarrBackend(local_url(kind, tmp_path / tag, tag))
        made.append(b)
        return b

    return make


@pytest.fixture
def scratch(tmp_path):
    d = tmp_path / "scratch"
    d.mkdir()
    return str(d)


def read(store, path: str, name: str) -> bytes:
    opts = store.storage_options if "://" in path else {}
    with fsspec.open(f"{path}/{name}", "rb", **opts) as f:
        return f.read()


def sim(substance, calc, ineff):
    return SimulationData(
        substance=substance, temperature=298.15, calculation_id=calc, statistical_inefficiency=ineff
    )


class SimulationQuery(BaseDataQuery):
    substance: str | None = None

    @classmethod
    def data_class(cls):
        return SimulationData


class ForceFieldQuery(BaseDataQuery):
    source: str | None = None

    @classmethod
    def data_class(cls):
        return ForceField


QUERIES = {SimulationData: SimulationQuery, ForceField: ForceFieldQuery}


def keys_of(store, cls):
    """Keys of every stored object of ``cls``."""
    return sorted(k for rows in store.query(QUERIES[cls]()).values() for k, _, _ in rows)


# -- update / += ------------------------------------------------------------------------------
@pytest.mark.parametrize("combine", ["update", "iadd"])
def test_update_keeps_target_and_source_objects(make_store, scratch, combine):
    """openff: test_update_copies_all_objects (target keeps its object, gets the source's,
    the source keeps its own)."""
    a, b = make_store("a"), make_store("b")
    key_a = a.store_object(sim("C", "a-1", 1.0), make_ancillary(scratch, "a1"))
    key_b1 = b.store_object(sim("C", "b-1", 0.8), make_ancillary(scratch, "b1"))
    key_b2 = b.store_object(sim("O", "b-2", 1.2), make_ancillary(scratch, "b2"))
    if combine == "update":
        report = a.update(b)
        assert report.outcomes == {key_b1: StoreOutcome.STORED, key_b2: StoreOutcome.STORED}
    else:
        same = a
        a += b
        assert a is same
    assert keys_of(a, SimulationData) == sorted([key_a, key_b1, key_b2])
    assert keys_of(b, SimulationData) == sorted([key_b1, key_b2])
    obj, path = a.retrieve_object(key_b2)
    assert obj == sim("O", "b-2", 1.2)
    assert read(a, path, "sub/note.txt") == b"b2"  # a copy of the ancillary files
    assert a.retrieve_object(key_b2)[1] != b.retrieve_object(key_b2)[1]
    assert read(b, b.retrieve_object(key_b2)[1], "sub/note.txt") == b"b2"


def test_update_replaces_overlap_with_more_information(make_store, scratch):
    """openff: test_update_replaces_overlapping_data_by_statistical_inefficiency."""
    a, b = make_store("a"), make_store("b")
    overlap = a.store_object(sim("C", "shared-id", 2.5), make_ancillary(scratch, "a_overlap"))
    a.store_object(sim("O", "a-only-1", 1.3), make_ancillary(scratch, "a1"))
    a.store_object(sim("CC", "a-only-2", 1.1), make_ancillary(scratch, "a2"))
    assert b.store_object(sim("C", "shared-id", 2.5 - 1e-6), make_ancillary(scratch, "b_overlap"))
    b.store_object(sim("O", "b-only-1", 1.4), make_ancillary(scratch, "b1"))
    b.store_object(sim("CC", "b-only-2", 1.6), make_ancillary(scratch, "b2"))

    report = a.update(b)

    assert len(keys_of(a, SimulationData)) == 5  # 3 + 3 - 1 overlap
    assert report.outcomes[overlap] is StoreOutcome.REPLACED
    assert report.count(StoreOutcome.STORED) == 2
    replaced, path = a.retrieve_object(overlap)
    assert replaced.statistical_inefficiency < 2.5
    assert read(a, path, "sub/note.txt") == b"b_overlap"  # its files came along


def test_update_keeps_the_stored_object_with_more_information(make_store, scratch):
    a, b = make_store("a"), make_store("b")
    key = a.store_object(sim("C", "x", 0.5), make_ancillary(scratch, "good"))
    b.store_object(sim("C", "x", 0.9), make_ancillary(scratch, "worse"))
    assert a.update(b).outcomes == {key: StoreOutcome.KEPT}
    obj, path = a.retrieve_object(key)
    assert obj.statistical_inefficiency == 0.5
    assert read(a, path, "sub/note.txt") == b"good"


def test_update_deduplicates_identical_objects(make_store):
    """openff: test_combine_deduplicates_force_fields."""
    a, b = make_store("a"), make_store("b")
    ka = a.store_object(ForceField(source="openff-2.2.1.offxml"))
    kb = b.store_object(ForceField(source="openff-2.2.1.offxml"))
    assert ka == kb
    assert a.update(b).outcomes == {ka: StoreOutcome.KEPT}
    assert keys_of(a, ForceField) == [ka]


def test_update_leaves_array_data_alone_and_names_unknown_classes(make_store, monkeypatch):
    a, b = make_store("a"), make_store("b")
    key = DataKey("run_1", "records", lineage())
    b.saver(b.backend_key(key), key, STRAX_DTYPE).save(*make_run([3])).compute()
    assert b.query(StoredArrayQuery(run_id="run_1"))
    ff = b.store_object(ForceField(source="x"))

    class Unknown(BaseStoredData, stored_name="test.ops.Unknown"):
        value: int

    b.store_object(Unknown(value=1))
    monkeypatch.delitem(_REGISTRY, "test.ops.Unknown")  # as in a process that lacks the class

    report = a.update(b)

    assert report.outcomes == {ff: StoreOutcome.STORED}
    assert len(report.skipped) == 1 and "'test.ops.Unknown'" in report.skipped[0]
    assert "not registered" in str(report.skipped[0])
    assert a.query(StoredArrayQuery()) == {}  # arrays move with copy_data, not as objects
    assert str(report) == "1 stored, 0 replaced, 0 kept, 1 skipped"


def test_update_refuses_what_is_not_a_store(make_store):
    with pytest.raises(TypeError, match="object store"):
        make_store("a").update({"not": "a store"})  # type: ignore[arg-type]


# -- subset -----------------------------------------------------------------------------------
def test_subset_by_query_keys_and_everything(make_store, scratch, tmp_path):
    src = make_store("src")
    kc = src.store_object(sim("C", "1", 1.0), make_ancillary(scratch, "c"))
    ko = src.store_object(sim("O", "2", 1.0), make_ancillary(scratch, "o"))
    kf = src.store_object(ForceField(source="ff"))

    by_query = src.subset(make_store("q"), query=SimulationQuery(substance="C"))
    assert keys_of(by_query, SimulationData) == [kc] and keys_of(by_query, ForceField) == []
    obj, path = by_query.retrieve_object(kc)
    assert obj.substance == "C" and read(by_query, path, "sub/note.txt") == b"c"

    by_keys = src.subset(make_store("k"), keys=[ko, kf])
    assert keys_of(by_keys, SimulationData) == [ko] and keys_of(by_keys, ForceField) == [kf]

    everything = src.subset(str(tmp_path / "all"))  # a URL: a new ZarrBackend
    assert isinstance(everything, ZarrBackend)
    assert keys_of(everything, SimulationData) == sorted([kc, ko])
    assert keys_of(everything, ForceField) == [kf]
    assert keys_of(src, SimulationData) == sorted([kc, ko])  # the source is unchanged


def test_subset_refuses_a_store_with_objects_unless_asked(make_store):
    src, dest = make_store("src"), make_store("dest")
    k = src.store_object(ForceField(source="new"))
    old = dest.store_object(ForceField(source="old"))
    with pytest.raises(ValueError, match="already holds stored objects"):
        src.subset(dest)
    assert keys_of(dest, ForceField) == [old]
    src.subset(dest, require_empty=False)
    assert keys_of(dest, ForceField) == sorted([k, old])


def test_subset_refuses_array_data_and_ambiguous_selections(make_store):
    src = make_store("src")
    key = DataKey("run_1", "records", lineage())
    src.saver(src.backend_key(key), key, STRAX_DTYPE).save(*make_run([3])).compute()
    [(array_key, _, _)] = next(iter(src.query(StoredArrayQuery(run_id="run_1")).values()))
    with pytest.raises(TypeError, match="copy_data"):
        src.subset(make_store("d1"), keys=[array_key])
    with pytest.raises(TypeError, match="array data types"):
        src.subset(make_store("d2"), query=StoredArrayQuery())
    with pytest.raises(ValueError, match="not both"):
        src.subset(make_store("d3"), keys=[array_key], query=StoredArrayQuery())
    with pytest.raises(ValueError, match="another store"):
        src.subset(src)
    # everything: the array's object is not copied
    assert src.subset(make_store("d4")).query(StoredArrayQuery()) == {}


# -- identity: to_storage_query, or refusal ---------------------------------------------------
def test_to_storage_query_decides_the_same_object(make_store):
    store = make_store("s")
    small = EquilibrationData(substance="C", temperature=300, molecules=100)
    big = EquilibrationData(substance="C", temperature=300, molecules=1000)
    other = EquilibrationData(substance="C", temperature=310, molecules=10)
    key = store.store_object(small)
    assert object_key(big) == key != object_key(other)
    assert store.has_object(big) == key
    assert store.store_object(big) == key
    assert store.retrieve_object(key)[0] == big  # replaced: more molecules
    assert store.store_object(small) == key
    assert store.retrieve_object(key)[0] == big
    assert store.store_object(other) != key


def test_a_storage_query_that_misses_its_object_is_refused(make_store):
    class Liar(EquilibrationData, stored_name="test.ops.Liar"):
        def to_storage_query(self):
            return EquilibrationQuery(substance="not " + self.substance)

    with pytest.raises(InvalidObject, match="does not match the object itself"):
        make_store("s").store_object(Liar(substance="C", temperature=1, molecules=1))


def test_replaceable_data_without_identity_is_refused_at_definition():
    with pytest.raises(TypeError, match=r"without identity_fields.*Set identity_fields = "):

        class Nameless(ReplaceableData, stored_name="test.ops.Nameless"):
            samples: int

            @classmethod
            def most_information(cls, stored, other):
                return other

    assert "test.ops.Nameless" not in _REGISTRY

    with pytest.raises(TypeError, match="not both"):

        class Both(EquilibrationData, stored_name="test.ops.Both"):
            identity_fields = ("substance",)

    class StillAbstract(ReplaceableData, stored_name="test.ops.StillAbstract"):
        """An intermediate base class (no most_information yet) may leave identity open."""

        samples: int


# -- the object cache ---------------------------------------------------------------------------
def test_object_cache_is_off_by_default_and_serves_copies(make_store):
    store = make_store("s")
    assert store.object_cache_info is None
    key = store.store_object(ForceField(source="a"))
    store.enable_object_cache(max_objects=10)
    first, _ = store.retrieve_object(key)
    second, _ = store.retrieve_object(key)
    assert first == second == ForceField(source="a")
    info = store.object_cache_info
    assert (info["hits"], info["misses"], info["objects"]) == (1, 1, 1)
    second.source = "mutated by the caller"
    assert store.retrieve_object(key)[0].source == "a"
    with pytest.raises(TypeError, match="not a SimulationData"):
        store.retrieve_object(key, SimulationData)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.object_cache_info is None  # a worker's copy starts without a cache


def test_object_cache_is_invalidated_by_writes_through_it(make_store, scratch):
    store = make_store("s")
    store.enable_object_cache()
    key = store.store_object(sim("C", "x", 2.0), make_ancillary(scratch, "first"))
    assert store.retrieve_object(key)[0].statistical_inefficiency == 2.0
    store.store_object(sim("C", "x", 1.0), make_ancillary(scratch, "better"))
    obj, path = store.retrieve_object(key)
    assert obj.statistical_inefficiency == 1.0
    assert read(store, path, "sub/note.txt") == b"better"
    other = make_store("o")
    other.store_object(sim("C", "x", 0.5), make_ancillary(scratch, "merged"))
    store.update(other)
    assert store.retrieve_object(key)[0].statistical_inefficiency == 0.5
    ff = store.store_object(ForceField(source="gone"))
    store.retrieve_object(ff)
    store.remove_object(ff)
    with pytest.raises(KeyError):
        store.retrieve_object(ff)


def test_object_cache_does_not_see_other_writers_until_cleared_or_aged(kind, tmp_path, scratch):
    url = local_url(kind, tmp_path, "shared")
    reader, writer = ZarrBackend(url), ZarrBackend(url)
    key = writer.store_object(sim("C", "x", 2.0), make_ancillary(scratch, "a"))
    reader.enable_object_cache()
    assert reader.retrieve_object(key)[0].statistical_inefficiency == 2.0
    writer.store_object(sim("C", "x", 1.0), make_ancillary(scratch, "b"))
    assert reader.retrieve_object(key)[0].statistical_inefficiency == 2.0  # stale, documented
    reader.clear_object_cache()
    assert reader.retrieve_object(key)[0].statistical_inefficiency == 1.0
    reader.enable_object_cache(max_age_seconds=0)
    reader.retrieve_object(key)
    writer.store_object(sim("C", "x", 0.1), make_ancillary(scratch, "c"))
    assert reader.retrieve_object(key)[0].statistical_inefficiency == 0.1
    reader.disable_object_cache()
    assert reader.object_cache_info is None
    with pytest.raises(ValueError, match="max_objects"):
        reader.enable_object_cache(max_objects=0)


def test_object_cache_forgets_array_objects_an_overwrite_replaces(make_store):
    store = make_store("s")
    store.enable_object_cache()
    key = DataKey("run_1", "records", lineage())
    store.saver(store.backend_key(key), key, STRAX_DTYPE).save(*make_run([3])).compute()
    [(okey, _, _)] = next(iter(store.query(StoredArrayQuery(run_id="run_1")).values()))
    assert store.retrieve_object(okey)[0].rows == 3
    saver = store.saver(store.backend_key(key), key, STRAX_DTYPE, overwrite=True)
    saver.save(*make_run([5])).compute()
    got = store.retrieve_object(okey)[0]
    assert isinstance(got, StoredArrayData) and got.rows == 5


# -- a remote source ----------------------------------------------------------------------------
@pytest.mark.slow
def test_update_and_subset_from_s3(s3_url, s3_options, tmp_path, scratch):
    remote = ZarrBackend(s3_url, storage_options=s3_options)
    key = remote.store_object(sim("C", "s3", 1.0), make_ancillary(scratch, "on_s3"))
    local = ZarrBackend(str(tmp_path / "local"))
    assert local.update(remote).outcomes == {key: StoreOutcome.STORED}
    obj, path = local.retrieve_object(key)
    assert obj == sim("C", "s3", 1.0)
    assert not path.startswith("s3://") and os.path.isdir(path)
    assert read(local, path, "sub/note.txt") == b"on_s3"
    assert read(local, path, "payload.bin") == read(
        remote, remote.retrieve_object(key)[1], "payload.bin"
    )
    back = local.subset(ZarrBackend(f"{s3_url}-copy", storage_options=s3_options), keys=key)
    assert read(back, back.retrieve_object(key)[1], "sub/note.txt") == b"on_s3"
