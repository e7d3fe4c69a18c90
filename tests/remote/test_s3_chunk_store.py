"""The chunk store of ``s3://`` URLs: obstore where the options map to it, s3fs otherwise.

On the session's moto server: both stores read what the other wrote, exactly; failures are
strata's errors naming the object without secrets; a batch of requests is in flight at once
through obstore (counted by the benchmark's latency proxy, nothing timed).
"""

from __future__ import annotations

import os
import pickle
import socket
import sys

import numpy as np
import pytest
from zarr.storage import FsspecStore

from strata.storage import DataKey, DirectoryFrontend, ZarrBackend, _zarr
from strata.storage.errors import RemoteStorageError
from strata.storage.fs.s3_store import S3ChunkStore, obstore_settings
from tests.helpers import STRAX_DTYPE, lineage, make_run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

from latency_proxy import LatencyProxy, fetch_stats, reset_stats

KEY = DataKey("run_1", "records", lineage("records", threshold=150))
BASE = {"key": "AKIAX", "secret": "sekrit-NOT-REAL", "endpoint_url": "http://127.0.0.1:9"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- which options map to obstore --------------------------------------------------------------
def test_explicit_credentials_and_an_endpoint_map_to_obstore():
    s = obstore_settings(
        {
            **BASE,
            "token": "tok",
            "client_kwargs": {"region_name": "eu-west-3", "verify": False},
            "config_kwargs": {
                "connect_timeout": 2,
                "read_timeout": 7,
                "retries": {"max_attempts": 4},
            },
        }
    )
    assert s is not None
    assert (s["access_key_id"], s["secret_access_key"], s["session_token"]) == (
        "AKIAX",
        "sekrit-NOT-REAL",
        "tok",
    )
    assert (s["endpoint"], s["region"], s["virtual_hosted_style_request"]) == (
        "http://127.0.0.1:9",
        "eu-west-3",
        False,
    )
    assert s["client_options"]["allow_http"] is True
    assert s["client_options"]["allow_invalid_certificates"] is True
    assert s["client_options"]["connect_timeout"] == "2s"
    assert s["retry_config"]["max_retries"] == 3
    assert s["retry_config"]["retry_timeout"].total_seconds() == 7


def test_anonymous_access_skips_signing():
    s = obstore_settings({"anon": True, "client_kwargs": {"region_name": "us-west-2"}})
    assert s is not None and s["skip_signature"] is True and "access_key_id" not in s
    assert "endpoint" not in s  # AWS itself, region given


@pytest.mark.parametrize(
    "options",
    [
        {"profile": "dev", "endpoint_url": "http://h:1"},  # a profile: botocore's to resolve
        {"endpoint_url": "http://h:1"},  # no credentials: the environment's chain
        {"key": "k", "endpoint_url": "http://h:1"},  # half a pair
        {"key": "k", "secret": "s"},  # AWS with no region: botocore finds the bucket's region
        {**BASE, "requester_pays": True},
        {**BASE, "client_kwargs": {"endpoint_url": "http://h:1", "proxies": {}}},
        {**BASE, "config_kwargs": {"signature_version": "s3v4"}},
        {**BASE, "config_kwargs": {"s3": {"addressing_style": "path", "payload_signing": 1}}},
    ],
)
def test_options_without_an_obstore_equivalent_keep_s3fs(options):
    assert obstore_settings(options) is None
    be = ZarrBackend("s3://bucket-x/p", storage_options=options)
    assert isinstance(be.store, FsspecStore)


def test_the_choice_can_be_forced_and_is_checked():
    assert isinstance(ZarrBackend("s3://bucket-x/p", storage_options=BASE).store, S3ChunkStore)
    forced = ZarrBackend("s3://bucket-x/p", storage_options={**BASE, "chunk_store": "s3fs"})
    assert isinstance(forced.store, FsspecStore)
    with pytest.raises(ValueError, match=r"chunk_store='obstore'.*no obstore equivalent"):
        _ = ZarrBackend(
            "s3://bucket-x/p", storage_options={"profile": "dev", "chunk_store": "obstore"}
        ).store
    with pytest.raises(ValueError, match=r"chunk_store must be one of auto, obstore, s3fs.*'rust'"):
        _ = ZarrBackend("s3://bucket-x/p", storage_options={**BASE, "chunk_store": "rust"}).fs


def test_the_store_names_no_secret():
    store = ZarrBackend("s3://bucket-x/p", storage_options=BASE).store
    assert "sekrit" not in repr(store) + str(store)
    assert str(store) == "s3://bucket-x/p"


# -- on moto -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("writer", "reader"), [("obstore", "s3fs"), ("s3fs", "obstore")])
def test_each_store_reads_what_the_other_wrote(s3_url, s3_options, writer, reader):
    w = DirectoryFrontend(s3_url, storage_options={**s3_options, "chunk_store": writer})
    parts, intervals = make_run([3000, 0, 17, 2500], seed=5)
    w.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    r = DirectoryFrontend(s3_url, storage_options={**s3_options, "chunk_store": reader})
    ref = np.concatenate(parts)
    np.testing.assert_array_equal(r.loader(KEY).to_numpy(), ref)
    np.testing.assert_array_equal(r.loader(KEY).fields["data"].compute(), ref["data"])
    part = r.loader(
        KEY, fields=["area"], time_range=(int(ref["time"][100]), int(ref["time"][4000]))
    )
    np.testing.assert_array_equal(part.to_numpy()["area"], ref["area"][100:4000])
    assert r.backend.verify(r.find(KEY).backend_key).problems == []


def test_a_missing_object_is_none_and_ranges_listings_deletes_work(s3_url, s3_options):
    store = ZarrBackend(s3_url, storage_options=s3_options).store
    assert isinstance(store, S3ChunkStore)
    assert _zarr.run(_zarr.fetch_key(store, "nothing/here")) is None
    _zarr.run(_zarr.put_bytes(store, "obj", b"0123456789"))
    got = _zarr.run(_zarr.fetch_range(store, "obj", 2, 6))
    assert got.to_bytes() == b"2345"

    async def listed() -> list[str]:
        return [k async for k in store.list_prefix("")]

    assert _zarr.run(listed()) == ["obj"]
    _zarr.run(store.delete("obj"))
    assert _zarr.run(listed()) == []


def test_a_range_past_the_end_is_an_os_error_naming_the_object(s3_url, s3_options):
    store = ZarrBackend(s3_url, storage_options=s3_options).store
    _zarr.run(_zarr.put_bytes(store, "short", b"0123"))
    with pytest.raises(RemoteStorageError, match=r"s3://.*/strata/short.*InvalidRange") as e:
        _zarr.run(_zarr.fetch_range(store, "short", 10, 20))
    assert isinstance(e.value, OSError)


def test_an_unreachable_server_is_a_named_error_without_secrets(s3_bucket):
    opts = {**BASE, "endpoint_url": f"http://127.0.0.1:{_free_port()}"}
    opts["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 1}
    store = ZarrBackend(f"s3://{s3_bucket}/strata", storage_options=opts).store
    with pytest.raises(RemoteStorageError, match=rf"s3://{s3_bucket}/strata/c/0") as e:
        _zarr.run(_zarr.fetch_key(store, "c/0"))
    assert "sekrit" not in str(e.value)
    with pytest.raises(RemoteStorageError):
        _zarr.run(_zarr.put_bytes(store, "c/0", b"x"))


def test_a_backend_on_obstore_pickles_by_its_arguments(s3_url, s3_options):
    be = ZarrBackend(s3_url, storage_options=s3_options)
    assert isinstance(be.store, S3ChunkStore)
    again = pickle.loads(pickle.dumps(be))
    assert again == be and isinstance(again.store, S3ChunkStore)


def test_a_batch_of_reads_is_in_flight_at_once(s3_server, s3_bucket):
    # 64 GETs behind a proxy that holds every response 200 ms: obstore sends them all before
    # the first answer comes back
    with LatencyProxy(f"127.0.0.1:{s3_server.port}", delay_ms=200) as proxy:
        opts = {**s3_server.storage_options(), "endpoint_url": proxy.endpoint}
        store = ZarrBackend(f"s3://{s3_bucket}/strata", storage_options=opts).store
        _zarr.run(_zarr.put_bytes(store, "obj", b"x" * 1000))
        reset_stats(proxy.endpoint)
        got = _zarr.run(
            _zarr.gather_started_in_turn(_zarr.fetch_key(store, "obj") for _ in range(64))
        )
        stats = fetch_stats(proxy.endpoint)
    assert [g.to_bytes() for g in got] == [b"x" * 1000] * 64
    assert stats["requests"] == 64
    assert stats["max_in_flight"] >= 60
