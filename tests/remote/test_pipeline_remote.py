"""The pipeline on remote storage: make + get_array with data and run metadata on S3 and SSH."""

from __future__ import annotations

import numpy as np
import pytest

from strata.pipeline import Context
from strata.storage import DirectoryFrontend
from tests.pipeline import toys
from tests.remote.fixtures import forget


@pytest.fixture(params=["s3", "ssh"])
def remote(request):
    """``(url, storage_options)`` of a fresh S3 bucket or SSH directory."""
    if request.param == "s3":
        return request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")
    return request.getfixturevalue("ssh_url"), request.getfixturevalue("ssh_options")


def expected_gained(gain: float) -> np.ndarray:
    out = np.concatenate([toys.ticks_numpy(i * 100, (i + 1) * 100, 5) for i in range(4)])
    out["value"] *= gain
    return out


def test_make_and_get_array(remote):
    url, opts = remote
    toys.CALLS.clear()
    fe = DirectoryFrontend(url, storage_options=opts)
    fe.write_run_metadata("r1", {"calibration": {"gain": 2.5}})
    ctx = Context(storage=[fe], register=toys.TOYS)
    ctx.make("r1", "gained")
    assert sorted(e.key.data_type for e in fe.list("r1")) == ["gained", "ticks"]
    assert dict(toys.CALLS) == {"Ticks": 4, "Gained": 4}

    # another context, another frontend instance: everything is loaded, nothing computed
    toys.CALLS.clear()
    again = Context(storage=[DirectoryFrontend(url, storage_options=opts)], register=toys.TOYS)
    assert again.is_stored("r1", "gained")
    np.testing.assert_array_equal(again.get_array("r1", "gained"), expected_gained(2.5))
    got = again.get_array("r1", "gained", fields=["value"], time_range=(100, 300))
    want = expected_gained(2.5)
    np.testing.assert_array_equal(
        got["value"], want["value"][(want["time"] >= 100) & (want["time"] < 300)]
    )
    assert dict(toys.CALLS) == {}


def test_copy_to_frontend_between_remotes(s3_url, s3_options, ssh_url, ssh_options):
    src = DirectoryFrontend(s3_url, storage_options=s3_options)
    dst = DirectoryFrontend(ssh_url, storage_options=ssh_options)
    src.write_run_metadata("r1", {"calibration": {"gain": 3.0}})
    ctx = Context(storage=[src, dst], register=toys.TOYS)
    ctx.make("r1", "gained")  # saved to both writable frontends
    only_src = Context(storage=[src], register=toys.TOYS)
    target = DirectoryFrontend(ssh_url + "-copy", storage_options=ssh_options)
    try:
        m = only_src.copy_to_frontend("r1", "gained", target)
        assert m.rows == 20
        np.testing.assert_array_equal(target.loader(m.key).to_numpy(), expected_gained(3.0))
    finally:
        forget(target.url)
