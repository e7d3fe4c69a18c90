"""Run built graphs: on a ``distributed.Client`` if one is given or active, else on threads.

Saver sinks and requested outputs are computed in one call so shared work is done once. When a
task fails, every task already running is allowed to finish (so no save is half-way through a
commit), then the saves that did not commit are aborted and the error is raised. Progress is
reported in *units*: the compute task of each partition and the commit of each save.

On a cluster the workers compute, write and commit; the client receives only the values of
``outputs`` and the committed manifests (small metadata), never the partitions that are saved.
Progress futures are released as soon as they finish, so they do not pin partitions in worker
memory. A save that loses the commit race to another saver of the same key returns the stored
manifest (the pipeline's savers use :attr:`strata.storage.commit.LostRace.USE_STORED`), on
threads and on clusters alike.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from strata.storage.commit import lease_heartbeat

from .build import SaveTask
from .errors import ClusterError

__all__ = ["Progress", "active_client", "run_graph"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called as units (partition computations, commits) finish."""


def active_client(client: Any = None) -> Any:
    """``client`` if given, else the active default ``distributed.Client``, else ``None``.

    A scheduler set with ``dask.config.set(scheduler=...)`` to anything but a client or
    ``"distributed"`` wins over an active client, as it does for ``dask.compute``.
    """
    if client is not None:
        return client
    if "distributed" not in sys.modules:
        return None  # nobody can have started a client without importing distributed
    import dask

    configured = dask.config.get("scheduler", None)
    if configured is not None and not _is_client(configured):
        if configured not in ("distributed", "dask.distributed"):
            return None
    if _is_client(configured):
        return configured
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _is_client(obj: Any) -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import Client

    return isinstance(obj, Client)


def _abort_uncommitted(save_tasks: Sequence[SaveTask]) -> None:
    for t in save_tasks:
        try:
            committed = t.frontend.is_stored(t.saver.key)
        except Exception as e:  # a damaged manifest or an unreachable store
            logger.warning("could not check whether %s committed: %s", t.saver.key, e)
            committed = True  # never remove what might be committed data; gc handles leftovers
        if not committed:
            logger.info("aborting the save of %s", t.saver.key)
            t.saver.abort()


def run_graph(
    outputs: Sequence[Any],
    save_tasks: Sequence[SaveTask] = (),
    units: Sequence[Any] = (),
    *,
    client: Any = None,
    progress: Progress | None = None,
) -> list[Any]:
    """Compute ``outputs`` and every save sink together; return the outputs' values.

    Parameters
    ----------
    outputs
        Dask collections (``Delayed`` objects, arrays) whose values are returned.
    save_tasks
        Saver sinks to compute; those that do not commit are aborted if anything fails.
    units
        ``Delayed`` tasks that progress is counted in.
    client
        A ``distributed.Client``; by default the active one, else Dask's threaded scheduler
        (or whatever ``dask.config`` sets).
    progress
        ``progress(done, total)``, called as units finish.

    """
    sinks = [t.sink for t in save_tasks]
    collections = [*outputs, *sinks]
    if not collections:
        if progress is not None:
            progress(0, 0)
        return []
    client = active_client(client)
    # the savers' leases are renewed while we wait, so gc never takes a slow save for dead
    with lease_heartbeat([t.saver for t in save_tasks]):
        if client is not None:
            values = _run_distributed(client, collections, save_tasks, units, progress)
        else:
            values = _run_local(collections, save_tasks, units, progress)
    return values[: len(outputs)]


def _run_local(
    collections: list[Any],
    save_tasks: Sequence[SaveTask],
    units: Sequence[Any],
    progress: Progress | None,
) -> list[Any]:
    import dask
    from dask.callbacks import Callback

    configured = dask.config.get("scheduler", None)
    unit_keys = {u.key for u in units}
    done = [0]

    class _Count(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key in unit_keys and progress is not None:
                done[0] += 1
                progress(done[0], len(unit_keys))

    if progress is not None:
        progress(0, len(unit_keys))
    kwargs: dict[str, Any] = {}
    pool = None
    if configured is None:
        # Our own pool, so that after a failure we can wait for the tasks still running.
        from dask.system import CPU_COUNT

        num_workers = dask.config.get("num_workers", None) or CPU_COUNT
        pool = ThreadPoolExecutor(num_workers, thread_name_prefix="strata")
        kwargs = {"scheduler": "threads", "pool": pool}
    try:
        with _Count():
            values = list(dask.compute(*collections, **kwargs))
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        _abort_uncommitted(save_tasks)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return values


def _run_distributed(
    client: Any,
    collections: list[Any],
    save_tasks: Sequence[SaveTask],
    units: Sequence[Any],
    progress: Progress | None,
) -> list[Any]:
    from distributed import as_completed

    n = len(collections)
    unit_list = list(units) if progress is not None else []
    futures = client.compute([*collections, *unit_list])
    main = futures[:n]
    if progress is not None:
        counter = as_completed(futures[n:], loop=client.loop)  # not the default client's
        total = counter.count()
    del futures  # from here on only `counter` holds the unit futures: each is released as it
    # finishes, so no partition stays pinned in worker memory for the progress bar's sake
    try:
        if progress is not None:
            progress(0, total)
            for done, _ in enumerate(counter, 1):
                progress(done, total)
        for _ in as_completed(main, loop=client.loop):  # distributed.wait needs a default client
            pass
    except BaseException:
        client.cancel(main)
        _abort_uncommitted(save_tasks)
        raise
    failed = [f for f in main if f.status != "finished"]
    if failed:
        _abort_uncommitted(save_tasks)
        failed[0].result()  # raises the task's exception
        raise ClusterError(
            f"task {failed[0].key} ended with status {failed[0].status!r} without an error"
        )
    return list(client.gather(main))
