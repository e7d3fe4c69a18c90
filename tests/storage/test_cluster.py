"""Savers and loaders on a real multi-process Dask cluster."""

from __future__ import annotations

import numpy as np
import pytest

from strata.storage import DataKey, DirectoryFrontend
from tests.helpers import STRAX_DTYPE, lineage, make_run, two_worker_client


@pytest.fixture(scope="module")
def client():
    with two_worker_client() as c:
        yield c


def test_parallel_save_and_load_on_two_worker_processes(client, tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.25)
    key = DataKey("run_1", "records", lineage())
    parts, intervals = make_run([3000, 2500, 0, 10, 20, 4000, 3000, 5], seed=4)
    futures = [client.scatter(p) for p in parts]
    import dask

    delayed_parts = [dask.delayed(lambda x: x)(f) for f in futures]
    manifest = fe.saver(key, STRAX_DTYPE).save(delayed_parts, intervals).compute()
    assert manifest.rows == sum(len(p) for p in parts)
    # segments were written by both worker processes
    lazy = fe.loader(key)
    got = lazy.array.compute()
    assert got.tobytes() == np.concatenate(parts).tobytes()
    area = lazy.fields["area"].sum().compute()
    assert np.isclose(area, np.concatenate(parts)["area"].sum())


def test_stage_tasks_spread_over_both_workers(client, tmp_path):
    from distributed import get_task_stream

    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.25)
    key = DataKey("run_1", "records", lineage(x=2))
    parts, intervals = make_run([3000] * 8, seed=5)
    with get_task_stream(client) as ts:
        manifest = fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    assert len(manifest.segments) == 8  # every partition its own segment, one writer each
    workers = {t["worker"] for t in ts.data if t["key"].startswith("stage-")}
    assert len(workers) == 2
    assert fe.loader(key).to_numpy().tobytes() == np.concatenate(parts).tobytes()
