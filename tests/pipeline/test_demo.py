"""The demo pipeline: deterministic, and equal to calling its plugins directly."""

from __future__ import annotations

import numpy as np
import pytest

from strata.pipeline import Context, demo
from strata.storage import DirectoryFrontend


@pytest.fixture
def ctx(frontend):
    for run in ("run_a", "run_b"):
        frontend.write_run_metadata(run, demo.run_document(run, n_partitions=3))
    return Context(storage=[frontend], register=demo.PLUGINS)


def direct(run_id: str, doc: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Every demo data type of a run, computed by calling the plugins with numpy."""
    raw_p = demo.RawRecords(
        run_id=run_id,
        run_start=doc["start_ns"],
        run_duration=doc["duration_ns"],
        pulse_rate=doc["daq"]["pulse_rate"],
        seed=seed,
    )
    rec_p = demo.Records(run_id=run_id, gains=doc["calibration"]["gains"])
    peaks_p, basics_p = demo.Peaks(run_id=run_id), demo.PeakBasics(run_id=run_id)
    out: dict[str, list[np.ndarray]] = {
        t: [] for t in ("raw_records", "records", "peaks", "peak_basics")
    }
    for start, end in raw_p.partitions(run_id):
        raw = raw_p.compute(start=start, end=end)
        rec = rec_p.compute(raw_records=raw, start=start, end=end)
        peaks = peaks_p.compute(records=rec, start=start, end=end)
        basics = basics_p.compute(peaks=peaks, start=start, end=end)
        for name, arr in zip(out, (raw, rec, peaks, basics), strict=True):
            out[name].append(arr)
    return {k: np.concatenate(v) for k, v in out.items()}


def test_get_array_equals_the_plugins_called_directly(ctx):
    expected = direct("run_a", ctx.run_metadata("run_a"))
    assert len(expected["peak_basics"]) > 100
    for target in ("peak_basics", "peaks", "records", "raw_records"):
        got = ctx.get_array("run_a", target)
        assert got.tobytes() == expected[target].tobytes(), target
    # and the same after loading from storage
    assert ctx.is_stored("run_a", "peak_basics")
    assert ctx.get_array("run_a", "peak_basics").tobytes() == expected["peak_basics"].tobytes()


def test_physics_is_plausible(ctx):
    rec = ctx.get_array("run_a", "records", fields=["area", "baseline", "channel"])
    assert abs(np.median(rec["baseline"]) - 200) < 0.1
    assert np.all(np.abs(rec["baseline"] - 200) < 3)  # noise of 1.5 ADC, 16 samples
    basics = ctx.get_df("run_a", ["peaks", "peak_basics"])
    assert {"area", "width", "n_channels", "max_channel_fraction", "dt"} <= set(basics.columns)
    assert basics["n_channels"].between(1, 8).all()
    # two populations: small narrow and large wide peaks
    small, large = basics[basics["area"] < 60], basics[basics["area"] > 150]
    assert len(small) > 50
    assert len(large) > 50
    assert large["width"].median() > 2 * small["width"].median()


def test_deterministic_per_run_and_seed(ctx, tmp_path):
    a = ctx.get_array("run_a", "raw_records")
    other = DirectoryFrontend(str(tmp_path / "other"))
    other.write_run_metadata("run_a", demo.run_document("run_a", n_partitions=3))
    ctx2 = Context(storage=[other], register=demo.PLUGINS)
    assert ctx2.get_array("run_a", "raw_records").tobytes() == a.tobytes()
    assert ctx.get_array("run_b", "raw_records").tobytes() != a.tobytes()
    ctx2.set_config({"seed": 1})
    assert ctx2.key_for("run_a", "raw_records") != ctx.key_for("run_a", "raw_records")
    assert ctx2.get_array("run_a", "raw_records").tobytes() != a.tobytes()


def test_gains_come_from_the_run_document(ctx):
    la, lb = ctx.lineage("run_a", "peak_basics"), ctx.lineage("run_b", "peak_basics")
    assert la["records"][2]["gains"] == demo.true_gains("run_a")
    assert la["records"] != lb["records"]
    assert la["raw_records"] == lb["raw_records"]  # same simulation settings


def test_demo_dtypes_follow_options(ctx):
    ctx.set_config({"record_length": 50, "peak_samples": 64})
    rec = ctx.get_array("run_a", "records", time_range=(0, 2**62))
    assert rec.dtype["data"].shape == (50,)
    assert ctx.get_dask("run_a", "peaks").dtype["data"].shape == (64,)
