"""A run much larger than the workers' memory limit is saved streaming, partition by
partition, without a worker being paused, spilling or killed for memory."""

from __future__ import annotations

import resource

import dask
import pytest

from strata.pipeline import Context
from strata.storage import DirectoryFrontend
from tests.cluster import plugins
from tests.cluster.conftest import worker_pids

pytestmark = pytest.mark.slow

MEMORY_LIMIT = 300e6
CONFIG = {"n_partitions": 64, "rows": 80_000, "width": 64}  # 64 x 21.9 MB = 1.4 GB


def _peak_rss(dask_worker) -> int:
    """Peak resident memory of the worker process so far, in bytes (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _spilled_bytes(dask_worker) -> float:
    """Bytes the worker's memory manager has spilled to disk so far."""
    return dask_worker.data.cumulative_metrics.get(("disk-write", "bytes"), 0.0)


def test_streaming_save_under_a_small_worker_memory_limit(make_cluster, tmp_path):
    procs, client = make_cluster(n_workers=2, nthreads=1, memory_limit=str(int(MEMORY_LIMIT)))
    limits = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
    assert set(limits.values()) == {int(MEMORY_LIMIT)}
    before = worker_pids(client)
    # partitions of 22 MB are written as they come (over half the chunk target) in chunks of
    # about 8 MiB
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=8)
    ctx = Context(storage=[fe], register=plugins.PLUGINS, config=CONFIG, client=client)
    seen: list[tuple[int, int]] = []
    ctx.make("run_1", "blocks", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (65, 65)
    m = fe.get_metadata(ctx.key_for("run_1", "blocks"))
    assert m.nbytes > 2 * 2 * MEMORY_LIMIT  # over twice the memory of the whole cluster
    # the same worker processes, none restarted by its nanny
    assert worker_pids(client) == before
    peaks = client.run(_peak_rss)
    assert max(peaks.values()) < MEMORY_LIMIT, peaks
    # ... and nothing held up: never spilled, never paused, never near the kill threshold
    assert set(client.run(_spilled_bytes).values()) == {0.0}
    for log in procs.directory.glob("w*.log"):
        text = log.read_text(errors="replace")
        for sign in (
            "Pausing worker",
            "memory budget",
            "Restarting",
            "Unmanaged memory use is high",
        ):
            assert sign not in text, f"{log.name}: {sign!r}"
    # complete: every partition holds exactly the records computed (checked on the workers,
    # one partition per task)
    assert [p.rows for p in m.partitions] == [CONFIG["rows"]] * CONFIG["n_partitions"]
    check = dask.delayed(plugins.stored_partition_is, pure=True)
    matches = dask.compute(
        [
            check(fe, m.key, i, p.start, p.end, CONFIG["rows"], CONFIG["width"])
            for i, p in enumerate(m.partitions)
        ],
        scheduler=client,
    )[0]
    assert all(matches)
    assert worker_pids(client) == before
