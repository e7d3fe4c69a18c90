"""A save on a real S3 server (moto): no ``Expect: 100-continue``, exact data with many or few
requests in flight, and a commit that refuses when an object it names is gone.
"""

from __future__ import annotations

import io

import dask
import numpy as np
import pytest

from strata.storage import DataKey, DirectoryFrontend, _zarr
from strata.storage.commit import AttemptMissing
from strata.storage.fs.s3 import _no_expect_continue, pool_size
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage("records", threshold=140))
OTHER = DataKey("run_1", "records", lineage("records", threshold=141))


def _save(fe, key, sizes, seed):
    parts, intervals = make_run(list(sizes), seed=seed)
    with dask.config.set(scheduler="threads", num_workers=2):
        fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    return np.concatenate(parts)


def test_a_save_sends_no_expect_continue(s3_url, s3_options):
    # through s3fs (botocore asks before a PUT); obstore's client never asks
    opts = {**s3_options, "chunk_store": "s3fs"}
    fe = DirectoryFrontend(s3_url, storage_options=opts, chunk_target_mb=0.05)
    _save(fe, OTHER, (50,), 1)  # the store's client exists from here on
    sent: list[dict] = []

    def record(request, **kwargs):
        sent.append(
            {"method": request.method, **{k.lower(): v for k, v in request.headers.items()}}
        )

    client = fe.backend.store.fs.s3
    client.meta.events.register("before-send.s3", record, unique_id="test-record")
    try:
        ref = _save(fe, KEY, (900, 900, 40), 2)
    finally:
        client.meta.events.unregister("before-send.s3", unique_id="test-record")
    puts = [h for h in sent if h["method"] == "PUT"]
    assert len(puts) > 20  # chunks and zarr.json documents of three segments
    assert [h for h in puts if "expect" in h] == []
    np.testing.assert_array_equal(fe.loader(KEY).to_numpy(), ref)

    # the control: botocore's own handler does ask, for a file-like body, without strata's
    control: list[dict] = []
    client.meta.events.unregister("before-call.s3", unique_id="strata-no-expect-continue")
    client.meta.events.register(
        "before-send.s3",
        lambda request, **kw: control.append({k.lower(): v for k, v in request.headers.items()}),
        unique_id="test-control",
    )
    try:
        bucket, _, prefix = s3_url.split("://", 1)[1].partition("/")
        _zarr.run(client.put_object(Bucket=bucket, Key=f"{prefix}/x", Body=io.BytesIO(b"x" * 9)))
    finally:
        client.meta.events.unregister("before-send.s3", unique_id="test-control")
        client.meta.events.register_last(
            "before-call.s3", _no_expect_continue, unique_id="strata-no-expect-continue"
        )
    assert [h.get("expect") for h in control] in ([b"100-continue"], ["100-continue"])


@pytest.mark.parametrize("pool", [2, 96])
def test_a_save_is_exact_with_few_or_many_requests_in_flight(s3_url, s3_options, pool):
    opts = {**s3_options, "config_kwargs": {"max_pool_connections": pool}}
    assert pool_size(opts) == pool
    fe = DirectoryFrontend(s3_url, storage_options=opts, chunk_target_mb=0.02)
    ref = _save(fe, KEY, (800, 3, 3, 1500, 0, 700, 700), 3)
    np.testing.assert_array_equal(fe.loader(KEY).to_numpy(), ref)
    report = fe.backend.verify(fe.find(KEY).backend_key)
    assert report.problems == [] and report.objects > 50


def test_pool_size_is_checked():
    with pytest.raises(ValueError, match="max_pool_connections"):
        pool_size({"config_kwargs": {"max_pool_connections": 0}})
    with pytest.raises(ValueError, match="max_pool_connections"):
        pool_size({"config_kwargs": {"max_pool_connections": "many"}})


def test_commit_refuses_when_an_object_vanished_on_s3(s3_server, s3_url, s3_options):
    fe = DirectoryFrontend(s3_url, storage_options=s3_options, chunk_target_mb=0.05)
    parts, intervals = make_run([600, 600], seed=4)
    saver = fe.saver(KEY, STRAX_DTYPE)
    for p, (s, e) in zip(parts, intervals, strict=True):
        saver.save_partition(p, s, e)
    bucket, _, prefix = s3_url.split("://", 1)[1].partition("/")
    s3 = s3_server.client()
    attempt = f"{prefix}/data/{saver.backend_key}/{saver.attempt}/".lstrip("/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=attempt)["Contents"]]
    chunk = next(k for k in sorted(keys) if "/c/" in k)
    s3.delete_object(Bucket=bucket, Key=chunk)
    with pytest.raises(AttemptMissing, match="chunk"):
        saver.close()
    assert not fe.is_stored(KEY)
