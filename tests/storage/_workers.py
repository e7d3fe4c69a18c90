"""Functions run in child processes by the commit tests (importable for spawn)."""

from __future__ import annotations

import sys

import numpy as np

from strata.storage import DataExistsError, DataKey, ZarrBackend
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage("records", threshold=1))


def race_save(url: str, seed: int, barrier, results) -> None:
    """Create a saver, wait for the other process, then save and commit."""
    backend = ZarrBackend(url, chunk_target_mb=0.25)
    parts, intervals = make_run([400, 5, 300, 0, 800], seed=seed)
    saver = backend.saver(backend.backend_key(KEY), KEY, STRAX_DTYPE)
    barrier.wait()
    try:
        saver.save(parts, intervals).compute()
        results.put((seed, "committed", np.concatenate(parts).tobytes()))
    except DataExistsError as e:
        results.put((seed, "exists", str(e)))


def save_then_hang(url: str) -> None:
    """Write two partitions of a streaming save, say so, then block until killed."""
    backend = ZarrBackend(url, chunk_target_mb=0.25)
    parts, intervals = make_run([3000, 3000, 3000], seed=3)
    saver = backend.saver(backend.backend_key(KEY), KEY, STRAX_DTYPE)
    saver.save_partition(parts[0], *intervals[0])
    saver.save_partition(parts[1], *intervals[1])
    print("mid-save", flush=True)
    sys.stdin.read()  # blocks: the parent kills us here
    saver.close()


if __name__ == "__main__":
    save_then_hang(sys.argv[1])
