"""The commit protocol across processes: concurrent savers, and a saver killed mid-save."""

from __future__ import annotations

import multiprocessing as mp
import signal
import subprocess
import sys

import numpy as np
import pytest

from strata.storage import DirectoryFrontend, ZarrBackend
from tests.helpers import STRAX_DTYPE, make_run
from tests.storage._workers import KEY, race_save


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_one_commit_never_a_mix(tmp_path, round_):
    url = str(tmp_path / "store")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=race_save, args=(url, seed, barrier, results)) for seed in (1, 2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, p.exitcode
    kinds = sorted(o[1] for o in outcomes)
    assert kinds == ["committed", "exists"], [o[:2] for o in outcomes]
    winner = next(o for o in outcomes if o[1] == "committed")
    backend = ZarrBackend(url)
    got = backend.loader(backend.backend_key(KEY)).to_numpy()
    assert got.tobytes() == winner[2]  # all of the winner's data, none of the loser's
    assert backend.gc(min_age_seconds=0) == []  # the loser cleaned up after itself


def test_killed_saver_leaves_nothing_visible(tmp_path):
    url = str(tmp_path / "store")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage._workers", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "mid-save"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    frontend = DirectoryFrontend(url)
    assert not frontend.is_stored(KEY)
    assert frontend.list() == []
    # segments were written: gc finds and removes exactly that attempt
    assert frontend.gc(min_age_seconds=3600) == []
    removed = frontend.gc(min_age_seconds=0)
    assert len(removed) == 1 and removed[0].startswith(f"data/{KEY.run_id}/{KEY.name}/a")
    assert frontend.gc(min_age_seconds=0) == []
    # a rerun succeeds
    parts, intervals = make_run([100, 200], seed=9)
    frontend.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    assert frontend.loader(KEY).to_numpy().tobytes() == np.concatenate(parts).tobytes()
