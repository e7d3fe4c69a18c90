"""Functions run in separate processes by the SQL catalog tests (importable under spawn)."""

from __future__ import annotations

import traceback

import numpy as np

from strata.storage import DataExistsError, DataKey
from strata.storage.frontends.sql import SQLFrontend
from tests.helpers import STRAX_DTYPE, lineage, make_records, make_run


def key_for(run: str, data_type: str, **opts: object) -> DataKey:
    return DataKey(run, data_type, lineage(data_type, **opts))


def save_many(db_url, data_url, worker, own, shared, barrier, results) -> None:
    """Save ``own`` keys (unique to this worker) and ``shared`` keys (every worker tries)."""
    try:
        fe = SQLFrontend(db_url, data_url=data_url, chunk_target_mb=0.25)
        barrier.wait()
        out = {}
        for i, (run, dt) in enumerate([*own, *shared]):
            key = key_for(run, dt)
            parts, iv = make_run([40, 0, 25], seed=worker * 100 + i)
            try:
                fe.saver(key, STRAX_DTYPE).save(parts, iv).compute(scheduler="sync")
                out[str(key)] = ("ok", worker * 100 + i)
            except DataExistsError:
                out[str(key)] = ("exists", None)
        results.put((worker, out, None))
    except BaseException:
        results.put((worker, {}, traceback.format_exc()))


def save_and_hang(db_url, data_url, conn) -> None:
    """Write a partition of a key, report it, then wait to be killed before committing."""
    fe = SQLFrontend(db_url, data_url=data_url, chunk_target_mb=0.25)
    saver = fe.saver(key_for("run_9", "killed"), STRAX_DTYPE)
    saver.save_partition(make_records(3000, 0, seed=1), 0, 1_000_000)
    conn.send(saver.attempt)
    conn.recv()  # never answered: the parent kills this process here


def equal_records(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()
