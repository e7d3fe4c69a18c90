"""Rewriting a stored key in place, and listing a store with a damaged manifest."""

from __future__ import annotations

import dask
import numpy as np
from click.testing import CliRunner

from strata.pipeline import Context, demo
from strata.pipeline.cli import main
from strata.storage import DirectoryFrontend


def _ctx(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.25)
    fe.write_run_metadata("run_1", demo.run_document("run_1", n_partitions=3, pulse_rate=300.0))
    return fe, Context(storage=[fe], register=demo.PLUGINS)


def test_copy_to_the_same_frontend_rewrites_in_place(tmp_path):
    fe, ctx = _ctx(tmp_path)
    with dask.config.set(scheduler="threads"):
        ctx.make("run_1", "records")
        before = ctx.get_array("run_1", "records")
        key = ctx.key_for("run_1", "records")
        old = fe.get_metadata(key)
        m = ctx.copy_to_frontend("run_1", "records", 0, rechunk_mb=0.002, overwrite=True)
        after = ctx.get_array("run_1", "records")
    assert m.attempt != old.attempt
    assert after.tobytes() == before.tobytes()
    assert max(s.chunk_rows["data"] for s in m.segments) < max(
        s.chunk_rows["data"] for s in old.segments
    )
    # the replaced attempt is kept for readers until the grace period ends
    assert fe.gc(min_age_seconds=0) == []
    [gone] = fe.gc(min_age_seconds=0, grace_seconds=0)
    assert old.attempt in gone
    np.testing.assert_array_equal(fe.loader(key).to_numpy(), before)


def test_ls_lists_around_a_damaged_manifest_and_names_it(tmp_path):
    fe, ctx = _ctx(tmp_path)
    with dask.config.set(scheduler="threads"):
        ctx.make("run_1", ["records", "peaks"])
    bad = ctx.key_for("run_1", "records")
    path = tmp_path / "store" / "data" / "run_1" / bad.name / "zarr.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)  # valid JSON, hostile depth
    result = CliRunner().invoke(main, ["ls", "run_1", "-s", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert "peaks" in result.output
    assert "skipped (unreadable)" in result.output and bad.name in result.output
    assert sorted(e.key.data_type for e in fe.list("run_1")) == ["peaks", "raw_records"]
    assert fe.skipped and "nested deeper" in fe.skipped[0]
