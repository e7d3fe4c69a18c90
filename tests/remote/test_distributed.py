"""Dask workers in other processes read and write S3 and SSH directly (stores pickle)."""

from __future__ import annotations

import os
import pickle

import dask
import numpy as np
import pytest

from strata.storage import DataKey, DirectoryFrontend
from strata.storage.copy import copy_data
from tests.helpers import PARTITION_NS, STRAX_DTYPE, lineage, make_records, two_worker_client

pytestmark = pytest.mark.slow

KEY = DataKey("run_1", "records", lineage("records", threshold=1))
SIZES = [1200, 4, 0, 900, 2, 2, 1500]


@pytest.fixture(scope="module")
def client():
    with two_worker_client() as c:
        yield c


@pytest.fixture(params=["s3", "ssh"])
def frontend(request):
    if request.param == "s3":
        url, opts = request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")
    else:
        url, opts = request.getfixturevalue("ssh_url"), request.getfixturevalue("ssh_options")
    return DirectoryFrontend(url, storage_options=opts, chunk_target_mb=0.25)


def _worker_pid(_: object) -> int:
    return os.getpid()


def _partitions():
    """Partitions computed on the workers (never materialized in the test process)."""
    make = dask.delayed(make_records, pure=True)
    intervals = [(i * PARTITION_NS, (i + 1) * PARTITION_NS) for i in range(len(SIZES))]
    parts = [
        make(n, s, e, seed=i) for i, (n, (s, e)) in enumerate(zip(SIZES, intervals, strict=True))
    ]
    ref = np.concatenate(
        [
            make_records(n, s, e, seed=i)
            for i, (n, (s, e)) in enumerate(zip(SIZES, intervals, strict=True))
        ]
    )
    return parts, intervals, ref


def test_frontend_pickles(frontend):
    clone = pickle.loads(pickle.dumps(frontend))
    assert clone == frontend
    assert repr(clone) == repr(frontend)


def test_workers_write_and_read_remote_data(client, frontend):
    parts, intervals, ref = _partitions()
    worker_pids = set(client.run(os.getpid).values())
    assert os.getpid() not in worker_pids
    assert len(worker_pids) == 2
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        manifest = client.compute(frontend.saver(KEY, STRAX_DTYPE).save(parts, intervals)).result()
    assert manifest.rows == len(ref)
    ran = {t["key"] if isinstance(t["key"], str) else t["key"][0] for t in ts.data}
    assert any(str(k).startswith("stage-") for k in ran)
    assert any(str(k).startswith("commit-") for k in ran)
    assert {t["worker"] for t in ts.data} <= set(client.scheduler_info()["workers"])

    lazy = frontend.loader(KEY)
    got = client.compute(lazy.array).result()
    assert got.tobytes() == ref.tobytes()
    # and one field of a time range, read on the workers
    t0, t1 = 3 * PARTITION_NS + 10_000, 6 * PARTITION_NS
    part = client.compute(frontend.loader(KEY, fields=["area"], time_range=(t0, t1)).array).result()
    np.testing.assert_array_equal(
        part["area"], ref["area"][(ref["time"] >= t0) & (ref["time"] < t1)]
    )


def test_copy_on_the_cluster(client, s3_url, s3_options, ssh_url, ssh_options):
    src = DirectoryFrontend(s3_url, storage_options=s3_options, chunk_target_mb=0.25)
    dst = DirectoryFrontend(ssh_url, storage_options=ssh_options)
    parts, intervals, ref = _partitions()
    client.compute(src.saver(KEY, STRAX_DTYPE).save(parts, intervals)).result()
    m = copy_data(src, dst, KEY, compressor="zstd", rechunk_mb=0.1, client=client)
    assert m.rows == len(ref)
    assert dst.loader(KEY).to_numpy().tobytes() == ref.tobytes()


def test_pipeline_make_and_get_array_on_the_cluster(client, frontend):
    from strata.pipeline import Context
    from tests.pipeline import toys

    frontend.write_run_metadata("r1", {"calibration": {"gain": 1.5}})
    ctx = Context(storage=[frontend], register=toys.TOYS, client=client)
    ctx.make("r1", "gained")
    assert sorted(e.key.data_type for e in frontend.list("r1")) == ["gained", "ticks"]
    want = np.concatenate([toys.ticks_numpy(i * 100, (i + 1) * 100, 5) for i in range(4)])
    want["value"] *= 1.5
    np.testing.assert_array_equal(ctx.get_array("r1", "gained"), want)
