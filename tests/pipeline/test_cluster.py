"""The pipeline on a real multi-process Dask cluster (two worker processes)."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from distributed import get_task_stream

from strata.pipeline import Context, PluginOutputError, demo
from strata.storage import DirectoryFrontend
from tests.helpers import two_worker_client
from tests.pipeline import toys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    with two_worker_client() as c:
        yield c


def _store(tmp_path, name, runs=("run_a", "run_b")):
    fe = DirectoryFrontend(str(tmp_path / name))
    for run in runs:
        fe.write_run_metadata(run, demo.run_document(run, n_partitions=4))
    return fe


def test_demo_on_two_worker_processes_equals_threads(client, tmp_path):
    fe = _store(tmp_path, "cluster")
    ctx = Context(storage=[fe], register=demo.PLUGINS, client=client)
    seen: list[tuple[int, int]] = []
    with get_task_stream(client) as ts:
        ctx.make(["run_a", "run_b"], "peak_basics", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (40, 40)  # 2 runs x 4 partitions x 4 plugins + 2 x 4 commits
    workers = {t["worker"] for t in ts.data if t["key"].startswith("compute-")}
    assert len(workers) == 2  # partitions were computed in both processes
    for run in ("run_a", "run_b"):
        assert {e.key.data_type for e in fe.list(run)} == set(ctx.plugins)
    # the same on threads, in another store
    threads = Context(storage=[_store(tmp_path, "threads")], register=demo.PLUGINS)
    with dask.config.set(scheduler="threads"):
        expected = threads.get_array("run_b", ["peaks", "peak_basics"])
    got = ctx.get_array("run_b", ["peaks", "peak_basics"])
    assert got.tobytes() == expected.tobytes()
    # a second make has nothing to do
    seen.clear()
    ctx.make(["run_a", "run_b"], "peak_basics", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 0)]


def test_active_client_is_used_without_being_passed(client, tmp_path):
    fe = _store(tmp_path, "active", runs=("run_c",))
    ctx = Context(storage=[fe], register=toys.TOYS)  # client=None: the active one
    with get_task_stream(client) as ts:
        arr = ctx.get_array("run_c", "doubled")
    assert len(arr) == 20
    assert any(t["key"].startswith("compute-Doubled") for t in ts.data)
    np.testing.assert_array_equal(ctx.get_array("run_c", "ticks")["time"], arr["time"])


def test_bad_output_on_the_cluster_commits_nothing(client, tmp_path):
    fe = _store(tmp_path, "bad", runs=("run_d",))
    ctx = Context(
        storage=[fe], register=[toys.Ticks, toys.Broken], config={"how": "bounds"}, client=client
    )
    with pytest.raises(
        PluginOutputError, match=r"Broken \(run 'run_d', partition 2 \[200, 300\)\)"
    ):
        ctx.make("run_d", "broken")
    assert not ctx.is_stored("run_d", "broken")
    assert fe.gc(min_age_seconds=0, dry_run=True) == []
    # on a cluster, independent saves run to the end and commit
    assert ctx.is_stored("run_d", "ticks")
