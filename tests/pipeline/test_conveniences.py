"""What strax users call every day: metadata, sizes, lineage diffs, sources, per-call config,
target filters; errors that are also the builtin the contract promises; loading order by
storage kind.

Follows strax's tests/test_context.py (test_get_source, test_compare_metadata,
test_available_for_run) where it has a test.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from strata.pipeline import (
    ClusterError,
    Context,
    CreationForbidden,
    InvalidRequest,
    OptionError,
    PipelineError,
    UnknownDataType,
)
from strata.pipeline.build import loading_order
from strata.storage import DataNotAvailable, DirectoryFrontend, Manifest
from tests.pipeline import toys


@pytest.fixture
def ctx(frontend):
    return Context(storage=[frontend], register=toys.TOYS)


def stored_types(frontend, run_id="r1"):
    return sorted(e.key.data_type for e in frontend.list(run_id))


def test_get_metadata_and_size_mb(ctx):
    with pytest.raises(DataNotAvailable, match="is not stored in any frontend"):
        ctx.get_metadata("r1", "doubled")
    ctx.make("r1", "doubled")
    m = ctx.get_metadata("r1", "doubled")
    assert isinstance(m, Manifest)
    assert m.key == ctx.key_for("r1", "doubled")
    assert [(p.start, p.end, p.rows) for p in m.partitions] == [
        (i * 100, (i + 1) * 100, 5) for i in range(4)
    ]
    assert ctx.size_mb("r1", "doubled") == 20 * toys.VALUE_DTYPE.itemsize / 1e6
    stored = ctx.size_mb("r1", "doubled", stored=True)
    assert 0 < stored


def test_compare_metadata(ctx, tmp_path):
    ctx.make("r1", "doubled")
    old = ctx.get_metadata("r1", "doubled")
    same = ctx.compare_metadata(("r1", "doubled"), old)
    assert same["same"] and same["changed"] == {}
    assert same["a"]["key"] == same["b"]["key"] == str(old.key)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(old.to_dict()))
    assert ctx.compare_metadata(old.key, str(path))["same"]
    assert ctx.compare_metadata({"lineage": old.key.lineage}, old.key.lineage)["same"]
    # a strax metadata document: {"lineage": {...}}, tuples and all
    strax_doc = {"lineage": {dt: tuple(v) for dt, v in old.key.lineage.items()}}
    assert ctx.compare_metadata(strax_doc, ("r1", "doubled"))["same"]

    ctx.set_config({"factor": 3.0, "offset": 1.0})
    diff = ctx.compare_metadata(("r1", "doubled"), old)
    assert not diff["same"]
    assert diff["changed"] == {
        "doubled": {"options": {"factor": {"a": 3, "b": 2}}},
        "ticks": {"options": {"offset": {"a": 1, "b": 0}}},
    }
    other = ctx.compare_metadata(("r1", "doubled"), ("r1", "tick_info"))
    assert other["only_in_a"] == ["doubled"] and other["only_in_b"] == ["tick_info"]
    assert other["changed"] == {}  # both made from the same ticks
    with pytest.raises(InvalidRequest, match="expected a"):
        ctx.compare_metadata(42, old)
    with pytest.raises(InvalidRequest, match="cannot read metadata file"):
        ctx.compare_metadata(str(tmp_path / "missing.json"), old)


def test_get_source_and_stored_dependencies(frontend):
    ctx = Context(storage=[frontend], register=[toys.Ticks, toys.Doubled, toys.OnTopOfTarget])
    ctx.register(toys.TargetSaved)
    ctx.set_context_config({"forbid_creation_of": ("doubled",)})
    for target in ("ticks", "doubled"):
        assert not ctx.is_stored("r1", target)
    assert ctx.get_source("r1", "ticks") == set()  # a source plugin computes it
    assert ctx.get_source("r1", "doubled") is None  # forbidden and not stored
    with pytest.raises(CreationForbidden):
        ctx.stored_dependencies("r1", "doubled")
    assert ctx.get_source("r1", "doubled", check_forbidden=False) == set()
    ctx.make("r1", "ticks")
    assert ctx.get_source("r1", "ticks") == {"ticks"}
    assert ctx.get_source("r1", "doubled", check_forbidden=False) == {"ticks"}
    ctx.set_context_config({"forbid_creation_of": ()})
    ctx.make("r1", "doubled")
    assert ctx.get_source("r1", "doubled") == {"doubled"}
    assert ctx.get_source("r1", ["doubled", "on_top"]) == {"doubled", "ticks"}
    assert ctx.stored_dependencies("r1", "on_top") == {
        "on_top": False,
        "target_saved": False,
        "ticks": True,
    }
    assert stored_types(frontend) == ["doubled", "ticks"]  # asking saves nothing


def test_per_call_config(ctx, frontend, calls):
    base = ctx.get_array("r1", "doubled")
    tripled = ctx.get_array("r1", "doubled", config={"factor": 3.0})
    np.testing.assert_allclose(tripled["value"], base["value"] * 1.5)
    assert ctx.config == {}  # the context is not changed
    key3 = ctx.key_for("r1", "doubled", config={"factor": 3.0})
    assert key3 != ctx.key_for("r1", "doubled")
    assert frontend.is_stored(key3)  # saved under its own key
    assert ctx.is_stored("r1", "doubled", config={"factor": 3.0})
    calls.clear()
    ctx.make("r1", "doubled", config={"factor": 3.0})
    assert dict(calls) == {}
    df = ctx.get_df("r1", "doubled", config={"factor": 3.0})
    np.testing.assert_allclose(df["value"], tripled["value"])
    lazy = ctx.get_dask("r1", "doubled", config={"factor": 3.0})
    np.testing.assert_allclose(lazy.compute()["value"], tripled["value"])
    assert ctx.lineage("r1", "doubled", config={"factor": 3.0})["doubled"][2]["factor"] == 3
    with pytest.raises(OptionError, match=r"unknown option 'factr'.*did you mean 'factor'"):
        ctx.get_array("r1", "doubled", config={"factr": 3.0})
    with pytest.raises(OptionError, match="expected float"):
        ctx.make("r1", "doubled", config={"factor": "x"})


def test_available_for_run_with_target_patterns(ctx):
    ctx.make("r1", "ticks")
    all_types = list(ctx.available_for_run("r1")["data_type"])
    assert all_types == sorted(ctx.plugins)
    df = ctx.available_for_run("r1", include_targets="t*")
    assert list(df["data_type"]) == ["tick_info", "ticks"]
    assert list(df["is_stored"]) == [False, True]
    df = ctx.available_for_run("r1", include_targets=["t*", "low"], exclude_targets="*_info")
    assert list(df["data_type"]) == ["low", "ticks"]
    df = ctx.available_for_run("r1", include_targets="^(hi|lo)", pattern_type="re")
    assert list(df["data_type"]) == ["high", "low"]
    assert ctx.available_for_run("r1", include_targets="nothing*").empty
    with pytest.raises(InvalidRequest, match="pattern_type must be one of 'fnmatch', 're'"):
        ctx.available_for_run("r1", pattern_type="glob")
    with pytest.raises(InvalidRequest, match="bad regular expression"):
        ctx.available_for_run("r1", include_targets="(", pattern_type="re")


# -- errors as the contract says ----------------------------------------------------------
def test_save_of_a_never_saved_type_is_a_value_error(frontend):
    ctx = Context(storage=[frontend], register=[toys.Ticks, toys.NeverSaved])
    for call in (ctx.make, ctx.get_array):
        with pytest.raises(ValueError, match="never saves 'never_saved'") as info:
            call("r1", "ticks", save="never_saved")
        assert isinstance(info.value, PipelineError)
    assert stored_types(frontend) == []  # refused before anything ran
    with pytest.raises(UnknownDataType, match="did you mean 'ticks'"):
        ctx.make("r1", "ticks", save="tics")


def test_other_request_errors_are_value_errors(ctx):
    cases = [
        lambda: ctx.get_array("r1", "doubled", fields=["nope"]),
        lambda: ctx.get_array([], "doubled"),
        lambda: ctx.get_array("r1", ()),
        lambda: ctx.set_config({}, mode="merge"),
    ]
    for case in cases:
        with pytest.raises(PipelineError) as info:
            case()
        assert isinstance(info.value, ValueError)
    with pytest.raises(PipelineError) as info:
        ctx.set_config(["factor"])  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    with pytest.raises(PipelineError) as info:
        ctx.set_context_config({"write_superruns": "yes"})
    assert isinstance(info.value, TypeError)
    assert issubclass(ClusterError, RuntimeError)


# -- loading order by storage kind ---------------------------------------------------------
def test_loads_come_from_the_nearest_frontend(tmp_path, calls):
    far = DirectoryFrontend(str(tmp_path / "far"))
    near = DirectoryFrontend(str(tmp_path / "near"))
    Context(storage=[far, near], register=toys.TOYS).make("r1", "ticks")
    assert stored_types(far) == stored_types(near) == ["ticks"]  # saves go to both
    far.storage_kind = "remote"
    near.storage_kind = "local"
    ctx = Context(storage=[far, near], register=toys.TOYS)
    key = ctx.key_for("r1", "ticks")

    def source(c: Context) -> str:
        return c.available_for_run("r1").set_index("data_type").loc["ticks", "frontend"]

    assert source(ctx) == repr(near)  # listed second, but nearer
    assert ctx.get_metadata("r1", "ticks") == near.get_metadata(key)
    # the far copy is the one that differs: a recompressed copy of the same key
    ctx.copy_to_frontend("r1", "ticks", 0, compressor="zstd", overwrite=True)
    assert far.get_metadata(key).arrays != near.get_metadata(key).arrays
    assert ctx.get_metadata("r1", "ticks").arrays == near.get_metadata(key).arrays
    near.remove(key)  # now only the far one has it
    assert source(ctx) == repr(far)
    calls.clear()
    ctx.make("r1", "doubled")
    assert calls["Ticks"] == 0  # loaded from the far frontend
    assert stored_types(far) == ["doubled", "ticks"]
    assert stored_types(near) == ["doubled"]  # saves still go to every writable frontend
    # ties are broken by the order given
    near.storage_kind = "remote"
    assert source(Context(storage=[far, near], register=toys.TOYS)) == repr(far)
    Context(storage=[near], register=toys.TOYS).make("r1", "ticks")
    assert source(Context(storage=[near, far], register=toys.TOYS)) == repr(near)
    assert source(Context(storage=[far, near], register=toys.TOYS)) == repr(far)


def test_loading_order_of_kinds():
    kinds = ["tape", "remote", "local", "compressed", "memory", "online", "local"]
    fes = [types.SimpleNamespace(storage_kind=k, i=i) for i, k in enumerate(kinds)]
    order = [(fe.storage_kind, fe.i) for fe in loading_order(fes)]  # type: ignore[arg-type]
    assert order == [
        ("memory", 4),
        ("local", 2),
        ("local", 6),
        ("online", 5),
        ("compressed", 3),
        ("remote", 1),
        ("tape", 0),
    ]
    no_kind = types.SimpleNamespace(i=0)  # a frontend without the attribute counts as local
    fes = [no_kind, types.SimpleNamespace(storage_kind="memory", i=1)]
    assert [fe.i for fe in loading_order(fes)] == [1, 0]  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="storage_kind 'nearline'; known kinds"):
        loading_order([types.SimpleNamespace(storage_kind="nearline")])  # type: ignore[list-item]
