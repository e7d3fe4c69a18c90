"""Loading several runs at once: the ``run_id`` field, ``ignore_errors``, bytes run ids.

Follows strax's test_multi_run_loading_with_errors (tests/test_context.py) and the
``add_run_id_field`` part of tests/test_superruns.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from strata.pipeline import Context, CreationForbidden
from strata.storage import DataNotAvailable
from tests.pipeline import toys

RUNS = [f"{i:06}" for i in range(10)]


@pytest.fixture
def ctx(frontend):
    return Context(storage=[frontend], register=[toys.Ticks, toys.Doubled, toys.FailsFor])


def ticks_run(offset=0.0):
    return np.concatenate([toys.ticks_numpy(i * 100, (i + 1) * 100, 5, offset) for i in range(4)])


def test_several_runs_get_a_run_id_field(ctx):
    arr = ctx.get_array(["r2", "r10"], "ticks")
    assert arr.dtype.names == ("run_id", "time", "endtime", "value")
    assert arr.dtype["run_id"] == np.dtype("<U3")  # fixed width: the longest run id
    assert list(arr["run_id"]) == ["r2"] * 20 + ["r10"] * 20  # in the order given
    for name in ("time", "endtime", "value"):
        np.testing.assert_array_equal(arr[name], np.concatenate([ticks_run()[name]] * 2))
    plain = ctx.get_array(["r2", "r10"], "ticks", add_run_id_field=False)
    assert plain.dtype == ticks_run().dtype and len(plain) == 40
    assert ctx.get_array("r2", "ticks").dtype.names == ("time", "endtime", "value")
    one = ctx.get_array("r2", "ticks", add_run_id_field=True)
    assert set(one["run_id"]) == {"r2"}
    sel = ctx.get_array(["r2", "r10"], "ticks", fields=["value"])
    assert sel.dtype.names == ("run_id", "value")


def test_several_runs_lazily(ctx, calls):
    ctx.make(["a", "bb"], "ticks")
    calls.clear()
    lazy = ctx.get_dask(["a", "bb"], "ticks", fields=["time"])
    assert lazy.dtype.names == ("run_id", "time")
    assert lazy.shape == (40,)  # stored: known lengths
    assert dict(calls) == {}
    np.testing.assert_array_equal(
        lazy.compute(), ctx.get_array(["a", "bb"], "ticks", fields="time")
    )


def test_multi_run_loading_with_errors(ctx, caplog):
    made = [r for i, r in enumerate(RUNS) if i != 4]
    ctx.make(made, "ticks")
    ctx.set_context_config({"forbid_creation_of": "*"})
    with pytest.raises(DataNotAvailable):
        ctx.get_array(RUNS, "ticks", ignore_errors=False)
    with caplog.at_level(logging.WARNING, logger="strata.pipeline.context"):
        records = ctx.get_array(RUNS, "ticks", ignore_errors=True)
    assert sorted(set(records["run_id"])) == made
    assert list(ctx.failed_runs) == [RUNS[4]]
    assert isinstance(ctx.failed_runs[RUNS[4]], CreationForbidden)
    assert f"failed and were skipped: {RUNS[4]}" in caplog.text
    assert len(records) == 20 * len(made)
    df = ctx.get_df(RUNS, "ticks", ignore_errors=True)
    assert sorted(df["run_id"].unique()) == made
    ctx.get_array(made[:2], "ticks")
    assert ctx.failed_runs == {}  # from the last call only
    with pytest.raises(CreationForbidden):  # every run failed: the first error is raised
        ctx.get_array([RUNS[4], "nope"], "ticks", ignore_errors=True)
    assert set(ctx.failed_runs) == {RUNS[4], "nope"}


def test_errors_while_computing_skip_only_their_run(ctx, frontend):
    for run, fail in (("ok1", False), ("bad", True), ("ok2", False)):
        frontend.write_run_metadata(run, {"fail": fail})
    with pytest.raises(RuntimeError, match="run bad is bad"):
        ctx.get_array(["ok1", "bad", "ok2"], "fails_for")
    arr = ctx.get_array(["ok1", "bad", "ok2"], "fails_for", ignore_errors=True)
    assert list(dict.fromkeys(arr["run_id"])) == ["ok1", "ok2"]
    assert str(ctx.failed_runs["bad"]) == "run bad is bad"
    # a failure while resolving options (no run document) is the run's own too
    arr = ctx.get_array(["ok1", "nodoc"], "fails_for", ignore_errors=True)
    assert set(arr["run_id"]) == {"ok1"} and "no run metadata" in str(ctx.failed_runs["nodoc"])


def test_bytes_run_ids_are_decoded(ctx):
    assert ctx.key_for(b"r1", "doubled") == ctx.key_for("r1", "doubled")
    ctx.make([b"r1", np.bytes_(b"r2")], "doubled")
    assert ctx.is_stored("r1", "doubled") and ctx.is_stored(np.str_("r2"), "doubled")
    arr = ctx.get_array(np.array([b"r1", b"r2"]), "doubled")
    assert list(dict.fromkeys(arr["run_id"])) == ["r1", "r2"]
    assert len(ctx.get_df(b"r1", "doubled")) == 20
    with pytest.raises(ValueError, match="not UTF-8"):
        ctx.get_array(b"\xff", "doubled")
    with pytest.raises(ValueError, match="run id must be a string"):
        ctx.get_array([1, 2], "doubled")
