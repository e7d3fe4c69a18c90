"""Superruns (strax's ``define_run``): runs made of subruns, or of time ranges of them.

The scenarios follow strax's tests/test_superruns.py: the run document of a superrun, creating
and loading superrun data, what is saved and where, redefinition, time ranges, and the same on
a real two-process Dask cluster.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest

from strata.pipeline import Context, InvalidRunDefinition, PipelineError
from strata.storage import DataNotAvailable, DirectoryFrontend
from tests.helpers import two_worker_client
from tests.pipeline import toys

SUBRUNS = ("s0", "s1", "s2")
T0 = {"s0": 0, "s1": 1000, "s2": 2000}
"""Start of each subrun [ns]: three partitions of 100 ns each, then a gap."""


def subrun_documents(frontend, runs=SUBRUNS):
    for i, run in enumerate(runs):
        frontend.write_run_metadata(
            run,
            {
                "t0": T0[run],
                "start": f"2024-01-0{i + 1}T00:00:00+00:00",
                "end": f"2024-01-0{i + 1}T01:00:00+00:00",
                "mode": ["mode_a", "mode_b"][i % 2],
                "source": "test",
                "tags": [{"name": f"tag{i}"}],
            },
        )


@pytest.fixture
def ctx(frontend):
    subrun_documents(frontend)
    c = Context(storage=[frontend], register=toys.SUPER)
    c.define_run("_sr", list(SUBRUNS))
    return c


def pulses_of(run, factor=3.0):
    out = np.concatenate(
        [toys.ticks_numpy(T0[run] + i * 100, T0[run] + (i + 1) * 100, 4) for i in range(3)]
    )
    out["value"] *= factor
    return out


def test_run_document_of_a_superrun(frontend):
    subrun_documents(frontend)
    ctx = Context(storage=[frontend], register=toys.SUPER)
    doc = ctx.define_run("_sr", ["s2", "s0", "s1"])  # listed out of time order
    assert ctx.run_metadata("_sr") == doc
    assert list(doc["sub_run_spec"]) == ["s0", "s1", "s2"]  # sorted by the subruns' start
    assert set(doc["sub_run_spec"].values()) == {"all"}
    assert doc["start"] == "2024-01-01T00:00:00+00:00"
    assert doc["end"] == "2024-01-03T01:00:00+00:00"
    assert doc["livetime"] == 3 * 3600.0
    assert doc["mode"] == ["mode_a", "mode_b"]
    assert doc["source"] == ["test"]
    assert doc["tags"] == [{"name": "tag0"}, {"name": "tag1"}, {"name": "tag2"}]


def test_create_and_load_superruns(ctx, frontend, calls):
    subrun_data = ctx.get_array(list(SUBRUNS), "pulse_area", add_run_id_field=False)
    np.testing.assert_array_equal(subrun_data, np.concatenate([pulses_of(r) for r in SUBRUNS]))
    calls.clear()
    superrun_data = ctx.get_array("_sr", "pulse_area")  # the subruns' stored data, concatenated
    assert dict(calls) == {}
    assert superrun_data.tobytes() == subrun_data.tobytes()
    # a type that allows superruns is computed from the superrun's concatenated inputs
    tagged = ctx.get_array("_sr", "run_tagged")
    assert set(tagged["run_len"]) == {len("_sr")}
    np.testing.assert_array_equal(tagged["time"], subrun_data["time"])
    np.testing.assert_allclose(tagged["value"], subrun_data["value"] * 2 / 3)
    assert calls["RunTagged"] == 9  # one call per partition of the three subruns
    # not saved without write_superruns, and nothing is stored under the superrun
    assert not ctx.is_stored("_sr", "run_tagged")
    assert [e.key.run_id for e in frontend.list("_sr")] == []


def test_write_superruns_saves_under_a_key_with_the_subruns(ctx, frontend, calls):
    ctx.set_context_config({"write_superruns": True})
    ctx.make("_sr", "run_tagged")
    assert ctx.is_stored("_sr", "run_tagged")
    # the subruns' data it was made from is saved under the subruns (strax does the same)
    for run in SUBRUNS:
        assert ctx.is_stored(run, "pulse_area")
        assert ctx.is_stored(run, "pulses")
        assert not ctx.is_stored(run, "run_tagged")
    lineage = ctx.lineage("_sr", "run_tagged")
    assert lineage["run_tagged"] == ["RunTagged", "1", {}]
    entries = {dt: lineage[dt][2]["_subruns"] for dt in ("pulses", "pulse_area")}
    assert [row[0] for row in entries["pulse_area"]] == list(SUBRUNS)
    for row in entries["pulse_area"]:
        assert row[1] is None  # whole subruns
        assert row[2] == ctx.key_for(row[0], "pulse_area").lineage_hash
    # its partitions are the subruns' partitions, in time order
    m = ctx.get_metadata("_sr", "run_tagged")
    assert [(p.start, p.end) for p in m.partitions] == [
        (T0[r] + i * 100, T0[r] + (i + 1) * 100) for r in SUBRUNS for i in range(3)
    ]
    calls.clear()
    stored = ctx.get_array("_sr", "run_tagged")
    assert dict(calls) == {}
    assert len(stored) == 36 and set(stored["run_len"]) == {3}
    # only the superrun's own result is stored under it
    assert [e.key.data_type for e in frontend.list("_sr")] == ["run_tagged"]


def test_loading_a_superrun_is_lazy_over_the_subruns_partitions(ctx, calls):
    ctx.make(list(SUBRUNS), "pulse_area")
    calls.clear()
    arr = ctx.get_dask("_sr", "pulse_area", fields=["time", "value"])
    assert arr.shape == (36,)  # known: read from the subruns' manifests only
    assert not any(np.isnan(c) for c in arr.chunks[0])
    per_subrun = [len(ctx.get_dask(r, "pulse_area").chunks[0]) for r in SUBRUNS]
    assert len(arr.chunks[0]) == sum(per_subrun)  # the subruns' stored chunks, nothing more
    assert dict(calls) == {}
    expected = np.concatenate([pulses_of(r) for r in SUBRUNS])
    np.testing.assert_array_equal(arr.compute()["value"], expected["value"])
    # a time range reads only what overlaps, from both kinds of type
    got = ctx.get_array("_sr", "pulse_area", time_range=(1050, 2150))
    sel = expected[(expected["time"] >= 1050) & (expected["time"] < 2150)]
    assert got.tobytes() == sel.tobytes()
    ds = ctx.get_xarray("_sr", "pulse_area")
    assert ds.sizes["row"] == 36


def test_superrun_triggers_subrun_processing(ctx, frontend):
    ctx.set_context_config({"write_superruns": True})
    assert not ctx.is_stored("s0", "pulse_area")
    ctx.make("_sr", "explicit_tagged", save="explicit_tagged")
    assert ctx.is_stored("_sr", "explicit_tagged")
    assert all(ctx.is_stored(r, "pulse_area") for r in SUBRUNS)
    assert not any(ctx.is_stored(r, "explicit_tagged") for r in SUBRUNS)
    # EXPLICIT and not in save=: computed, not saved
    ctx2 = Context(storage=[frontend], register=toys.SUPER, write_superruns=True)
    ctx2.define_run("_sr2", list(SUBRUNS))
    ctx2.make("_sr2", "explicit_tagged")
    assert not ctx2.is_stored("_sr2", "explicit_tagged")


def test_make_of_a_concatenated_type_makes_the_subruns(ctx, calls):
    ctx.make("_sr", "pulse_area")
    assert all(ctx.is_stored(r, "pulse_area") for r in SUBRUNS)
    assert calls["PulseArea"] == 9
    seen: list[tuple[int, int]] = []
    ctx.make("_sr", "pulse_area", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 0)]  # stored in every subrun: nothing to do, nothing read


def test_redefining_a_superrun_changes_its_keys(ctx):
    ctx.set_context_config({"write_superruns": True})
    ctx.make("_sr", "run_tagged")
    key = ctx.key_for("_sr", "run_tagged")
    ctx.define_run("_sr", list(SUBRUNS[:-1]))
    assert ctx.key_for("_sr", "run_tagged") != key
    assert not ctx.is_stored("_sr", "run_tagged")
    assert len(ctx.get_array("_sr", "pulse_area")) == 24
    # the listing order does not matter: the key depends on the set
    ctx.define_run("_sr", list(reversed(SUBRUNS)))
    assert ctx.key_for("_sr", "run_tagged") == key
    assert ctx.is_stored("_sr", "run_tagged")
    # other subrun data (other options upstream) is another key too
    assert ctx.key_for("_sr", "run_tagged", config={"n_per_partition": 2}) != key


def test_time_ranges_of_subruns(ctx, calls):
    ctx.define_run("_part", {"s0": [(50, 150), (250, 300)], "s1": "all"})
    expected_s0 = pulses_of("s0")
    t = expected_s0["time"]
    expected = np.concatenate(
        [expected_s0[((t >= 50) & (t < 150)) | ((t >= 250) & (t < 300))], pulses_of("s1")]
    )
    computed = ctx.get_array("_part", "pulse_area")  # nothing stored yet: computed
    assert computed.tobytes() == expected.tobytes()
    calls.clear()
    stored = ctx.get_array("_part", "pulse_area")  # the subruns are stored now: read lazily
    assert dict(calls) == {}
    assert stored.tobytes() == expected.tobytes()
    row = ctx.lineage("_part", "pulse_area")["pulse_area"][2]["_subruns"][0]
    assert row[:2] == ["s0", [[50, 150], [250, 300]]]
    assert ctx.key_for("_part", "pulse_area") != ctx.key_for("_sr", "pulse_area")
    # with a time range on top
    got = ctx.get_array("_part", "pulse_area", time_range=(100, 1100))
    assert (
        got.tobytes() == expected[(expected["time"] >= 100) & (expected["time"] < 1100)].tobytes()
    )
    assert len(ctx.get_array("_part", "pulse_area", time_range=(500, 900))) == 0


def test_define_run_from_records(ctx):
    peaks = np.zeros(3, dtype=[("run_id", "U2"), ("time", np.int64), ("endtime", np.int64)])
    peaks["run_id"] = ["s1", "s0", "s1"]
    peaks["time"] = [1010, 20, 1200]
    peaks["endtime"] = [1060, 30, 1250]
    doc = ctx.define_run("_roi", peaks)
    assert doc["sub_run_spec"] == {"s0": [[20, 30]], "s1": [[1010, 1060], [1200, 1250]]}
    got = ctx.get_array("_roi", "pulses")
    allp = np.concatenate([pulses_of(r, factor=1.0) for r in ("s0", "s1")])
    t = allp["time"]
    keep = ((t >= 20) & (t < 30)) | ((t >= 1010) & (t < 1060)) | ((t >= 1200) & (t < 1250))
    assert got.tobytes() == allp[keep].tobytes()
    doc = ctx.define_run(
        "_roi1", peaks[peaks["run_id"] == "s0"][["time", "endtime"]], from_run="s0"
    )
    assert doc["sub_run_spec"] == {"s0": [[20, 30]]}


def test_subruns_that_overlap_in_time_are_refused(frontend):
    ctx = Context(storage=[frontend], register=[toys.Ticks, toys.Doubled])
    ctx.define_run("_both", ["a", "b"])  # Ticks: every run covers [0, 400)
    with pytest.raises(InvalidRunDefinition, match=r"subruns 'a' \[0, 400\) and 'b' \[0, 400\)"):
        ctx.get_array("_both", "doubled")
    ctx.make(["a", "b"], "ticks")
    with pytest.raises(InvalidRunDefinition, match="overlap in time"):
        ctx.get_array("_both", "ticks")  # the stored path checks it too
    ctx.define_run("_halves", {"a": [(0, 200)], "b": [(200, 400)]})
    got = ctx.get_array("_halves", "ticks")  # disjoint ranges are fine
    run = np.concatenate([toys.ticks_numpy(i * 100, (i + 1) * 100, 5) for i in range(4)])
    assert (
        got.tobytes() == np.concatenate([run[run["time"] < 200], run[run["time"] >= 200]]).tobytes()
    )
    assert len(ctx.get_array("_halves", "doubled")) == 20  # and computed from them


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("sr", ["s0"], "must start with '_'"),
        ("_sr", [], "no run_id given"),
        ("_sr", ["_other"], "is a superrun"),
        ("_sr", ["s0", "s0"], "listed twice"),
        ("_sr", {"s/0": "all"}, "invalid run_id 's/0'"),
        ("_sr", {"s0": [(10, 5)]}, r"\(10, 5\) is empty or reversed"),
        ("_sr", {"s0": [(0, 50), (40, 60)]}, "sorted and not overlap"),
        ("_sr", {"s0": "some"}, "time ranges must be 'all'"),
        ("_sr", {"s0": [(0.5, 2)]}, "integer"),
        ("_s-r", ["s0"], "invalid run_id"),
    ],
)
def test_bad_definitions_are_refused(ctx, name, data, match):
    with pytest.raises(PipelineError, match=match) as info:
        ctx.define_run(name, data)
    assert isinstance(info.value, ValueError)


def test_superrun_documents_read_from_storage_are_validated(ctx, frontend):
    frontend.write_run_metadata("_hand", {"sub_run_spec": {"../etc": "all"}})
    with pytest.raises(InvalidRunDefinition, match=r"invalid run_id '\.\./etc'"):
        ctx.key_for("_hand", "pulse_area")
    frontend.write_run_metadata("_nospec", {"mode": "x"})
    with pytest.raises(InvalidRunDefinition, match="has no 'sub_run_spec'"):
        ctx.get_array("_nospec", "pulses")
    with pytest.raises(InvalidRunDefinition, match="no run document"):
        ctx.key_for("_undefined", "pulses")
    row = ctx.available_for_run("_undefined").set_index("data_type").loc["pulses"]
    assert "no run document" in row["note"]


def test_storing_with_a_second_frontend(tmp_path, calls):
    """Subruns in a read-only frontend: the superrun goes to the writable one only."""
    first = DirectoryFrontend(str(tmp_path / "first"))
    subrun_documents(first)
    Context(storage=[first], register=toys.SUPER).make(list(SUBRUNS), "pulse_area")
    ro = DirectoryFrontend(str(tmp_path / "first"), readonly=True)
    second = DirectoryFrontend(str(tmp_path / "second"))
    ctx = Context(storage=[ro, second], register=toys.SUPER, write_superruns=True)
    ctx.define_run("_sr", list(SUBRUNS))  # written to the first writable frontend
    assert second.run_metadata("_sr")["sub_run_spec"] == dict.fromkeys(SUBRUNS, "all")
    calls.clear()
    ctx.make("_sr", "run_tagged")
    assert calls["PulseArea"] == 0  # loaded from the read-only frontend
    assert [e.key.data_type for e in second.list("_sr")] == ["run_tagged"]
    assert second.list("s0") == []
    with pytest.raises(DataNotAvailable, match="concatenation of its subruns"):
        ctx.get_metadata("_sr", "pulse_area")
    row = ctx.available_for_run("_sr").set_index("data_type").loc["pulse_area"]
    assert not row["is_stored"] and "stored in every subrun" in row["note"]


def test_superrun_dependencies_and_sources(ctx):
    assert ctx.get_source("_sr", "run_tagged") == set()
    ctx.make(list(SUBRUNS), "pulses")
    deps = ctx.stored_dependencies("_sr", "run_tagged")
    assert deps == {"run_tagged": False, "pulses": True, "pulse_area": False}
    assert ctx.get_source("_sr", "run_tagged") == {"pulses"}


@pytest.mark.slow
def test_superruns_on_a_two_process_cluster(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "cluster"))
    subrun_documents(fe)
    with two_worker_client() as client:
        ctx = Context(storage=[fe], register=toys.SUPER, client=client, write_superruns=True)
        ctx.define_run("_sr", {"s0": "all", "s1": [(1000, 1150)], "s2": "all"})
        ctx.make("_sr", "run_tagged")
        assert ctx.is_stored("_sr", "run_tagged")
        assert all(ctx.is_stored(r, "pulse_area") for r in SUBRUNS)
        on_cluster = ctx.get_array("_sr", "run_tagged")
        lazy = ctx.get_dask("_sr", "pulse_area").compute()
    threads = DirectoryFrontend(str(tmp_path / "threads"))
    subrun_documents(threads)
    local = Context(storage=[threads], register=toys.SUPER)
    local.define_run("_sr", {"s0": "all", "s1": [(1000, 1150)], "s2": "all"})
    with dask.config.set(scheduler="threads"):
        expected = local.get_array("_sr", "run_tagged")
        expected_area = local.get_array("_sr", "pulse_area")
    assert on_cluster.tobytes() == expected.tobytes()
    assert lazy.tobytes() == expected_area.tobytes()
    assert len(on_cluster) == 12 + 6 + 12  # s1: its records with 1000 <= time < 1150
