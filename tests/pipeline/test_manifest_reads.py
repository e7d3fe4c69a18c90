"""A stored read costs one manifest GET per data type: the location and manifest found while
planning are passed to the loader (counted on a counting fsspec filesystem)."""

from __future__ import annotations

import uuid

import dask
import pytest

from strata.pipeline import Context, demo
from strata.storage import DirectoryFrontend
from tests.storage.test_laziness import CountingFS


def _manifest_reads() -> dict[str, int]:
    return {p: n for p, n in CountingFS.reads.items() if p.endswith("zarr.json")}


@pytest.fixture
def ctx():
    fe = DirectoryFrontend(f"countmem://reads-{uuid.uuid4().hex}", chunk_target_mb=0.25)
    fe.write_run_metadata("run_1", demo.run_document("run_1", n_partitions=3, pulse_rate=300.0))
    context = Context(storage=[fe], register=demo.PLUGINS)
    with dask.config.set(scheduler="threads"):
        context.make("run_1", ["peaks", "peak_basics"])
    CountingFS.reset()
    return context


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_one_stored_type_reads_its_manifest_once(ctx, scheduler):
    with dask.config.set(scheduler=scheduler):
        arr = ctx.get_array("run_1", "peaks")
    assert len(arr) > 0
    reads = _manifest_reads()
    assert list(reads.values()) == [1], reads
    assert next(iter(reads)).rsplit("/", 2)[1].startswith("peaks-")


def test_two_types_side_by_side_read_each_manifest_once(ctx):
    with dask.config.set(scheduler="threads"):
        arr = ctx.get_array("run_1", ["peaks", "peak_basics"], fields=["time", "area", "width"])
    assert len(arr) > 0 and set(arr.dtype.names) == {"time", "area", "width"}
    reads = _manifest_reads()
    assert sorted(p.rsplit("/", 2)[1].split("-")[0] for p in reads) == ["peak_basics", "peaks"]
    assert set(reads.values()) == {1}, reads
    assert CountingFS.listings == []


def test_a_make_looks_for_each_commit_once():
    """Making a type that is not stored looks for its commit document once: the saver does
    not check again what planning just found absent (a round trip per save on object
    stores); the commit is exclusive either way."""
    fe = DirectoryFrontend(f"countmem://make-{uuid.uuid4().hex}", chunk_target_mb=0.25)
    fe.write_run_metadata("run_1", demo.run_document("run_1", n_partitions=3, pulse_rate=300.0))
    context = Context(storage=[fe], register=demo.PLUGINS)
    CountingFS.reset()
    with dask.config.set(scheduler="threads"):
        context.make("run_1", "peaks")
    key = context.key_for("run_1", "peaks")
    commit = fe.backend.layout.commit(fe.backend.backend_key(key))
    looked = {p: n for p, n in CountingFS.attempts.items() if p.endswith(commit.lstrip("/"))}
    assert list(looked.values()) == [1], CountingFS.attempts
    assert context.is_stored("run_1", "peaks")
