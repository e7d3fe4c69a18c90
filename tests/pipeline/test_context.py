"""Making and reading data through a Context (Dask's threaded scheduler)."""

from __future__ import annotations

import numpy as np
import pytest

from strata.pipeline import (
    Context,
    CreationForbidden,
    IncompatibleTargets,
    PipelineError,
    PluginOutputError,
)
from strata.storage import DataNotAvailable, DirectoryFrontend
from tests.pipeline import toys


@pytest.fixture
def ctx(frontend):
    frontend.write_run_metadata("r1", {"calibration": {"gain": 2.0}})
    return Context(storage=[frontend], register=toys.TOYS)


def ticks_run(n_partitions=4, n=5, offset=0.0, partition_ns=100):
    return np.concatenate(
        [
            toys.ticks_numpy(i * partition_ns, (i + 1) * partition_ns, n, offset)
            for i in range(n_partitions)
        ]
    )


def stored_types(frontend, run_id="r1"):
    return sorted(e.key.data_type for e in frontend.list(run_id))


# -- results ----------------------------------------------------------------------------------
def test_get_array_equals_numpy(ctx, calls):
    got = ctx.get_array("r1", "doubled")
    expected = ticks_run()
    expected["value"] *= 2
    assert got.dtype == toys.VALUE_DTYPE
    np.testing.assert_array_equal(got, expected)
    assert calls["Ticks"] == 4
    assert calls["Doubled"] == 4


def test_make_saves_and_a_second_make_computes_nothing(ctx, frontend, calls):
    ctx.make("r1", "doubled")
    assert stored_types(frontend) == ["doubled", "ticks"]
    assert dict(calls) == {"Ticks": 4, "Doubled": 4}
    assert ctx.is_stored("r1", "doubled")
    assert ctx.is_stored("r1", "ticks")
    calls.clear()
    ctx.make("r1", "doubled")
    got = ctx.get_array("r1", "doubled")
    assert dict(calls) == {}
    expected = ticks_run()
    expected["value"] *= 2
    np.testing.assert_array_equal(got, expected)
    # the stored partitions are the source's partitions
    m = frontend.get_metadata(ctx.key_for("r1", "doubled"))
    assert [(p.start, p.end) for p in m.partitions] == [
        (0, 100),
        (100, 200),
        (200, 300),
        (300, 400),
    ]
    assert m.metadata["plugin"] == "Doubled"
    assert m.metadata["version"] == "1"


def test_stored_upstream_is_loaded_not_computed(ctx, calls):
    ctx.make("r1", "ticks")
    calls.clear()
    ctx.make("r1", "doubled")
    assert dict(calls) == {"Doubled": 4}


def test_several_runs_in_one_make(ctx, frontend, calls):
    ctx.make(["r1", "r2", "r3"], "doubled")
    for run in ("r1", "r2", "r3"):
        assert ctx.is_stored(run, "doubled")
    assert calls["Ticks"] == 12
    df = ctx.get_df(["r1", "r2"], "doubled")
    assert list(df["run_id"].unique()) == ["r1", "r2"]
    assert len(df) == 40


def test_progress_counts_partitions_and_commits(ctx):
    seen = []
    ctx.make("r1", "doubled", progress=lambda done, total: seen.append((done, total)))
    # 4 Ticks + 4 Doubled computations, 2 commits
    assert seen[0] == (0, 10)
    assert seen[-1] == (10, 10)
    seen.clear()
    ctx.make("r1", "doubled", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 0)]


def test_get_df_get_dask_get_xarray(ctx, calls):
    expected = ticks_run()
    expected["value"] *= 2
    arr = ctx.get_dask("r1", "doubled")  # not stored: a lazy graph
    assert calls["Doubled"] == 0
    np.testing.assert_array_equal(arr.compute(), expected)
    assert not ctx.is_stored("r1", "doubled")  # lazy reads never save
    ds = ctx.get_xarray("r1", "doubled")
    np.testing.assert_array_equal(ds["value"].values, expected["value"])
    ctx.make("r1", "doubled")
    calls.clear()
    arr = ctx.get_dask("r1", "doubled", fields=["value"])
    assert arr.shape == (20,)  # stored: known chunks
    assert arr.dtype.names == ("value",)
    ds = ctx.get_xarray("r1", "doubled")
    assert ds.sizes["row"] == 20
    assert ds.attrs["run_id"] == "r1"
    np.testing.assert_array_equal(ds["time"].values, expected["time"])
    df = ctx.get_df("r1", "doubled", fields=["time", "value"])
    assert list(df.columns) == ["time", "value"]
    np.testing.assert_array_equal(df["value"].to_numpy(), expected["value"])
    assert dict(calls) == {}


def test_fields_and_unknown_fields(ctx):
    got = ctx.get_array("r1", "doubled", fields=["value", "time"])
    assert got.dtype.names == ("value", "time")
    with pytest.raises(ValueError, match=r"no field\(s\) \['nope'\]"):
        ctx.get_array("r1", "doubled", fields=["nope"])
    ctx.make("r1", "doubled")
    with pytest.raises(ValueError, match="nope"):
        ctx.get_array("r1", "doubled", fields=["nope"])


@pytest.mark.parametrize("stored", [False, True])
def test_time_range_selects_and_never_saves(ctx, frontend, calls, stored):
    if stored:
        ctx.make("r1", "doubled")
        calls.clear()
    full = ticks_run()
    full["value"] *= 2
    got = ctx.get_array("r1", "doubled", time_range=(140, 260))
    sel = full[(full["time"] >= 140) & (full["time"] < 260)]
    np.testing.assert_array_equal(got, sel)
    if not stored:
        assert not ctx.is_stored("r1", "doubled")
        assert not ctx.is_stored("r1", "ticks")
        # only the partitions overlapping the range were computed
        assert calls["Ticks"] == 2
        assert calls["Doubled"] == 2
    else:
        assert dict(calls) == {}


# -- save_when ----------------------------------------------------------------------------------
def test_save_when(frontend, calls):
    ctx = Context(
        storage=[frontend],
        register=[
            toys.Ticks,
            toys.NeverSaved,
            toys.TargetSaved,
            toys.ExplicitSaved,
            toys.OnTopOfTarget,
        ],
    )
    ctx.make("r1", "never_saved")
    assert stored_types(frontend) == ["ticks"]  # ALWAYS (the default) saves intermediates
    ctx.make("r1", "explicit_saved")
    assert "explicit_saved" not in stored_types(frontend)
    ctx.make("r1", "explicit_saved", save="explicit_saved")
    assert "explicit_saved" in stored_types(frontend)
    ctx.make("r1", "on_top")
    assert "target_saved" not in stored_types(frontend)  # an intermediate, not a target
    assert "on_top" in stored_types(frontend)
    ctx.make("r1", "target_saved")
    assert "target_saved" in stored_types(frontend)
    with pytest.raises(PipelineError, match="never saves 'never_saved'"):
        ctx.make("r1", "never_saved", save="never_saved")


def test_saves_go_to_every_writable_frontend_that_takes_the_type(tmp_path, calls):
    a = DirectoryFrontend(str(tmp_path / "a"))
    b = DirectoryFrontend(str(tmp_path / "b"), take_only=["doubled"])
    ro = DirectoryFrontend(str(tmp_path / "ro"), readonly=True)
    ctx = Context(storage=[ro, a, b], register=toys.TOYS)
    ctx.make("r1", "doubled")
    assert stored_types(a) == ["doubled", "ticks"]
    assert stored_types(b) == ["doubled"]
    assert stored_types(ro) == []


def test_loads_from_the_first_frontend_that_has_it(tmp_path, calls):
    a = DirectoryFrontend(str(tmp_path / "a"))
    b = DirectoryFrontend(str(tmp_path / "b"))
    Context(storage=[b], register=toys.TOYS).make("r1", "ticks")
    ctx = Context(storage=[a, b], register=toys.TOYS)
    calls.clear()
    ctx.make("r1", "doubled")
    assert calls["Ticks"] == 0
    assert stored_types(a) == ["doubled"]  # ticks was loaded from b, not copied to a
    row = ctx.available_for_run("r1").set_index("data_type").loc["ticks"]
    assert row["is_stored"]
    assert "/b" in row["frontend"]


# -- several outputs, kinds, alignment ------------------------------------------------------------
def test_multi_output_plugin(ctx, frontend, calls):
    ctx.make("r1", "low")
    assert stored_types(frontend) == ["high", "low", "ticks"]  # both outputs saved
    assert calls["Split"] == 4
    ticks = ticks_run()
    low, high = ctx.get_array("r1", "low"), ctx.get_array("r1", "high")
    np.testing.assert_array_equal(low, ticks[ticks["value"] < 0])
    np.testing.assert_array_equal(high, ticks[ticks["value"] >= 0])
    assert calls["Split"] == 4  # loaded
    assert ctx.key_for("r1", "low") != ctx.key_for("r1", "high")
    assert set(ctx.lineage("r1", "low")) == {"low", "ticks"}


def test_same_kind_merged_side_by_side(ctx, calls):
    got = ctx.get_array("r1", ["ticks", "tick_info"])
    assert got.dtype.names == ("time", "endtime", "value", "positive")
    ticks = ticks_run()
    np.testing.assert_array_equal(got["value"], ticks["value"])
    np.testing.assert_array_equal(got["positive"], ticks["value"] > 0)
    # stored: the lazy path merges too, reading only the fields asked for
    ctx.make("r1", ["ticks", "tick_info"])
    calls.clear()
    got2 = ctx.get_array("r1", ["ticks", "tick_info"], fields=["positive", "value"])
    assert got2.dtype.names == ("positive", "value")
    np.testing.assert_array_equal(got2["positive"], ticks["value"] > 0)
    df = ctx.get_df("r1", ["tick_info", "ticks"])
    assert list(df.columns) == ["time", "endtime", "positive", "value"]
    assert dict(calls) == {}


def test_different_kinds_are_not_merged(ctx):
    with pytest.raises(IncompatibleTargets, match="different data kinds"):
        ctx.get_array("r1", ["ticks", "doubled"])


def test_dependencies_with_different_partitions_are_aligned_by_time(ctx, frontend, calls):
    ctx.make("r1", "combined")
    got = ctx.get_array("r1", "combined")
    # ticks: 4 partitions of 100 ns; coarse: 2 of 200 ns -> 2 output partitions
    assert list(zip(got["time"], got["endtime"], strict=True)) == [(0, 200), (200, 400)]
    assert list(got["n_ticks"]) == [10, 10]
    assert list(got["n_coarse"]) == [3, 3]
    assert list(got["first_tick"]) == [0, 200]
    assert list(got["last_tick"]) == [180, 380]
    m = frontend.get_metadata(ctx.key_for("r1", "combined"))
    assert [(p.start, p.end) for p in m.partitions] == [(0, 200), (200, 400)]


def test_alignment_when_boundaries_do_not_nest(ctx, calls):
    ctx.set_config({"coarse_ns": 150})  # coarse: [0,150) [150,300) [300,400)
    got = ctx.get_array("r1", "combined")
    assert list(zip(got["time"], got["endtime"], strict=True)) == [(0, 300), (300, 400)]
    assert list(got["n_ticks"]) == [15, 5]
    assert list(got["n_coarse"]) == [6, 3]


def test_alignment_with_a_stored_dependency(ctx, calls):
    ctx.make("r1", "coarse")  # loaded from storage, ticks computed
    got = ctx.get_array("r1", "combined")
    assert list(got["n_ticks"]) == [10, 10]
    assert list(got["n_coarse"]) == [3, 3]


# -- fuzzy matching and forbidden creation --------------------------------------------------------
def test_fuzzy_for_options_loads_data_made_with_another_value(frontend, calls):
    Context(storage=[frontend], register=toys.TOYS).make("r1", "doubled")  # factor 2
    calls.clear()
    ctx = Context(
        storage=[frontend],
        register=toys.TOYS,
        config={"factor": 3.0},
        fuzzy_for_options=["factor"],
    )
    got = ctx.get_array("r1", "doubled")
    assert dict(calls) == {}
    np.testing.assert_array_equal(got["value"], ticks_run()["value"] * 2)
    assert ctx.is_stored("r1", "doubled")
    # nothing was saved under the factor-3 key
    assert not frontend.is_stored(ctx.key_for("r1", "doubled"))
    # what is computed from fuzzy data is not saved either
    ctx.register(toys.OnTopOfTarget)

    class OnDoubled(toys.Doubled):
        provides = "on_doubled"
        depends_on = "doubled"

        def compute(self, doubled, start, end):
            return super().compute(ticks=doubled, start=start, end=end)

    ctx.register(OnDoubled)
    ctx.make("r1", "on_doubled")
    assert "on_doubled" not in stored_types(frontend)
    # without fuzziness, factor 3 is computed and saved
    ctx.set_context_config({"fuzzy_for_options": ()})
    assert not ctx.is_stored("r1", "doubled")
    np.testing.assert_array_equal(ctx.get_array("r1", "doubled")["value"], ticks_run()["value"] * 3)
    assert frontend.is_stored(ctx.key_for("r1", "doubled"))


def test_fuzzy_for_data_type(frontend, calls):
    Context(storage=[frontend], register=toys.TOYS).make("r1", "doubled")
    ctx = Context(
        storage=[frontend], register=toys.TOYS, config={"offset": 1.0}, fuzzy_for=["ticks"]
    )
    calls.clear()
    got = ctx.get_array("r1", "doubled")  # doubled's lineage differs only in ticks
    assert dict(calls) == {}
    np.testing.assert_array_equal(got["value"], ticks_run()["value"] * 2)
    row = ctx.available_for_run("r1").set_index("data_type").loc["doubled"]
    assert row["is_stored"]
    assert "fuzzy match" in row["note"]


def test_forbid_creation_of_raises_instead_of_computing(frontend, calls):
    ctx = Context(storage=[frontend], register=toys.TOYS, forbid_creation_of=["ticks"])
    with pytest.raises(CreationForbidden, match="forbids creating 'ticks'") as e:
        ctx.get_array("r1", "doubled")
    assert isinstance(e.value, DataNotAvailable)
    assert dict(calls) == {}
    assert stored_types(frontend) == []
    Context(storage=[frontend], register=toys.TOYS).make("r1", "ticks")
    calls.clear()
    ctx.make("r1", "doubled")  # ticks is loaded; doubled may be created
    assert dict(calls) == {"Doubled": 4}
    ctx.set_context_config({"forbid_creation_of": "*"})
    with pytest.raises(CreationForbidden):
        ctx.make("r1", "tick_info")


# -- bad plugins --------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["dtype", "bounds", "unsorted", "raise"])
def test_bad_plugin_output_commits_nothing(frontend, how):
    ctx = Context(storage=[frontend], register=[toys.Ticks, toys.Broken], config={"how": how})
    expected = RuntimeError if how == "raise" else PluginOutputError
    with pytest.raises(expected) as e:
        ctx.make("r1", "broken")
    if how != "raise":
        assert "Broken (run 'r1', partition 2 [200, 300))" in str(e.value)
    assert not ctx.is_stored("r1", "broken")
    assert "broken" not in stored_types(frontend)
    # the failed attempt was removed, not left for gc
    assert frontend.gc(min_age_seconds=0, dry_run=True) == []


def test_bad_partitions_of_a_source(frontend):
    class Reversed(toys.Ticks):
        def partitions(self, run_id):
            return [(100, 0)]

    ctx = Context(storage=[frontend], register=Reversed)
    with pytest.raises(PluginOutputError, match=r"Reversed.partitions\('r1'\): partition 0"):
        ctx.make("r1", "ticks")


# -- inspection and copying -----------------------------------------------------------------------
def test_available_for_run_and_run_metadata(ctx, frontend):
    ctx.make("r1", "doubled")
    df = ctx.available_for_run("r1").set_index("data_type")
    assert df.loc["doubled", "is_stored"]
    assert df.loc["ticks", "is_stored"]
    assert not df.loc["combined", "is_stored"]
    assert df.loc["tick_info", "data_kind"] == "ticks"
    assert df.loc["doubled", "lineage_hash"] == ctx.key_for("r1", "doubled").lineage_hash
    assert ctx.run_metadata("r1") == {"calibration": {"gain": 2.0}}
    with pytest.raises(DataNotAvailable, match="no run metadata for run 'r9'"):
        ctx.run_metadata("r9")
    # a missing run document is reported, not raised
    df9 = ctx.available_for_run("r9").set_index("data_type")
    assert "no run metadata" in df9.loc["gained", "note"]


def test_data_info_and_show_config(ctx):
    info = ctx.data_info("ticks")
    assert list(info.columns) == ["Field name", "Data type", "Comment"]
    assert info.to_dict("records")[2] == {
        "Field name": "value",
        "Data type": "float64",
        "Comment": "A wiggly value",
    }
    cfg = ctx.show_config("doubled")
    assert set(cfg["option"]) == {
        "factor",
        "verbose",
        "n_per_partition",
        "partition_ns",
        "n_partitions",
        "offset",
    }
    ctx.set_config({"factor": 4.0})
    assert cfg.set_index("option").loc["factor", "current"] == "<default>"
    assert ctx.show_config("doubled").set_index("option").loc["factor", "current"] == 4.0


def test_copy_to_frontend(ctx, frontend, tmp_path, calls):
    ctx.make("r1", "doubled")
    other = DirectoryFrontend(str(tmp_path / "other"))
    calls.clear()
    m = ctx.copy_to_frontend("r1", "doubled", other)
    assert dict(calls) == {}
    key = ctx.key_for("r1", "doubled")
    assert m.key == key
    assert other.is_stored(key)
    src = frontend.get_metadata(key)
    assert [(p.start, p.end, p.rows) for p in m.partitions] == [
        (p.start, p.end, p.rows) for p in src.partitions
    ]
    assert m.metadata == src.metadata
    np.testing.assert_array_equal(other.loader(key).to_numpy(), frontend.loader(key).to_numpy())
    # again: already there
    assert ctx.copy_to_frontend("r1", "doubled", other).attempt == m.attempt
    with pytest.raises(DataNotAvailable, match="cannot copy"):
        ctx.copy_to_frontend("r1", "combined", other)


def test_context_without_storage_computes(calls):
    ctx = Context(register=toys.TOYS)
    assert len(ctx.get_array("r1", "doubled")) == 20
    ctx.make("r1", "doubled")  # nothing to save: computed anyway
    assert calls["Doubled"] == 8


def test_storage_given_as_url(tmp_path):
    ctx = Context(storage=str(tmp_path / "s"), register=toys.TOYS)
    ctx.make("r1", "ticks")
    assert ctx.is_stored("r1", "ticks")
    assert isinstance(ctx.storage[0], DirectoryFrontend)
