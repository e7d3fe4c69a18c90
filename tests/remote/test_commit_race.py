"""The commit protocol under real concurrency on S3 and SSH: of racing writers, one commits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from strata.storage import DataExistsError, DataKey, ZarrBackend
from strata.storage.fs import exclusive_write, open_fs
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage("records", threshold=1))


@pytest.fixture(params=["s3", "ssh"])
def remote(request):
    """``(url, storage_options)`` of a fresh S3 bucket or SSH directory."""
    if request.param == "s3":
        return request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")
    return request.getfixturevalue("ssh_url"), request.getfixturevalue("ssh_options")


def _race(n: int, target) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ("ok", target(i))
        except Exception as e:
            results[i] = ("error", e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_exclusive_create_one_winner(remote):
    url, opts = remote
    # one filesystem (one connection) per writer, as in separate processes
    filesystems = [
        open_fs(
            url,
            {**opts, "connect_timeout": 9 + i}
            if url.startswith("ssh")
            else {**opts, "config_kwargs": {"connect_timeout": 9 + i}},
        )
        for i in range(4)
    ]
    assert len({id(fs) for fs, _ in filesystems}) == 4
    for round_ in range(5):
        path = f"{filesystems[0][1]}/r{round_}/manifest.json"

        def write(i, path=path):
            fs, _ = filesystems[i]
            exclusive_write(fs, path, f"writer {i}".encode())
            return i

        results = _race(4, write)
        winners = [r[1] for r in results if r[0] == "ok"]
        losers = [r[1] for r in results if r[0] == "error"]
        assert len(winners) == 1, results
        assert all(isinstance(e, FileExistsError) for e in losers), losers
        assert filesystems[0][0].cat_file(path) == f"writer {winners[0]}".encode()


def test_racing_savers_one_commits_never_a_mix(remote):
    url, opts = remote
    backend = ZarrBackend(url, storage_options=opts, chunk_target_mb=0.25)
    datasets = [make_run([400, 5, 300, 0, 800], seed=seed) for seed in (1, 2, 3)]
    savers = [backend.saver(backend.backend_key(KEY), KEY, STRAX_DTYPE) for _ in datasets]

    def save(i):
        parts, intervals = datasets[i]
        return savers[i].save(parts, intervals).compute(scheduler="threads")

    results = _race(3, save)
    committed = [i for i, r in enumerate(results) if r[0] == "ok"]
    assert len(committed) == 1, results
    assert all(isinstance(r[1], DataExistsError) for r in results if r[0] == "error")
    got = backend.loader(backend.backend_key(KEY)).to_numpy()
    assert got.tobytes() == np.concatenate(datasets[committed[0]][0]).tobytes()
    assert backend.gc(min_age_seconds=0) == []  # the losers removed their attempts
