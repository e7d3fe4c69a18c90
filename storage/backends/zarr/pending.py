"""A saver's writes in flight: PUTs that run on zarr's event loop while its tasks compute on.

A segment's objects are encoded in the task that made the partition; their PUTs need only the
encoded bytes. Waiting for them in that task would keep a Dask thread idle for the round trips
and bound the requests in flight by the number of threads (two segments on two cores).
:class:`PendingWrites` lets the task return at once: the PUTs run on the loop, at most
``concurrency`` at a time (the connection pool's size: more would only queue in the pool), and
at most ``max_bytes`` of encoded data wait for them (a task that would exceed it waits: memory
stays bounded however fast partitions are made). The commit waits for every write first, so
invariant 2 (the commit last) holds, and a failed write fails the commit.

Only the process that runs the whole save uses this (Dask's threaded scheduler, the streaming
form); a saver copied to a worker process waits for its own writes in the task (see
``ZarrSaver.__getstate__``), since the commit may run elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ... import _zarr

__all__ = ["DEFAULT_CONCURRENCY", "MIN_BYTES_IN_FLIGHT", "PendingWrites", "write_concurrency"]

T = TypeVar("T")

DEFAULT_CONCURRENCY = 64
"""Requests in flight per saver on stores without a connection pool of their own (local disk:
zarr's executor threads bound it further)."""

MIN_BYTES_IN_FLIGHT = 64 * 2**20
"""Encoded bytes a saver may hold for writes in flight, at least (else two chunk targets)."""


def write_concurrency(backend: Any) -> int:
    """Requests a saver of ``backend`` keeps in flight: on S3 the botocore connection pool's
    size (``config_kwargs.max_pool_connections`` of the storage options, else strata's
    default), else :data:`DEFAULT_CONCURRENCY`.
    """
    if getattr(backend, "protocol", None) in ("s3", "s3a"):
        from ...fs.s3 import pool_size

        return pool_size(getattr(backend, "storage_options", None) or {})
    return DEFAULT_CONCURRENCY


class PendingWrites:
    """Writes of one saver submitted to zarr's event loop, bounded in requests and bytes.

    Parameters
    ----------
    concurrency
        Requests in flight at most (see :meth:`limited`).
    max_bytes
        Bytes of submitted, unfinished writes at most; :meth:`submit` waits beyond it.

    """

    def __init__(self, concurrency: int, max_bytes: int) -> None:
        if concurrency < 1:
            raise ValueError(f"write concurrency must be at least 1, got {concurrency}")
        self.concurrency = int(concurrency)
        self.max_bytes = int(max_bytes)
        self._cond = threading.Condition()
        self._bytes = 0
        self._futures: list[concurrent.futures.Future[Any]] = []
        self._sem: asyncio.Semaphore | None = None  # made on the loop, used there only

    async def limited(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (one request) when fewer than ``concurrency`` are in flight."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        async with self._sem:
            return await coro

    def submit(self, coro: Coroutine[Any, Any, Any], nbytes: int) -> concurrent.futures.Future[Any]:
        """Start ``coro`` (writing ``nbytes``) on zarr's loop; waits first while the bytes in
        flight would exceed ``max_bytes`` (unless nothing is in flight).
        """
        with self._cond:
            while self._bytes > 0 and self._bytes + nbytes > self.max_bytes:
                self._cond.wait()
            self._bytes += nbytes
        try:
            future = _zarr.submit(coro)
        except BaseException:
            coro.close()
            with self._cond:
                self._bytes -= nbytes
                self._cond.notify_all()
            raise

        def done(_: Any) -> None:
            with self._cond:
                self._bytes -= nbytes
                self._cond.notify_all()

        future.add_done_callback(done)
        with self._cond:
            self._futures.append(future)
        return future

    def wait(self, future: concurrent.futures.Future[Any] | None = None) -> None:
        """Wait for ``future``, or for every write submitted so far; raise the first failure."""
        with self._cond:
            if future is None:
                futures, self._futures = self._futures, []
            else:
                futures = [future]
                self._futures = [f for f in self._futures if f is not future]
        if not futures:
            return
        concurrent.futures.wait(futures)
        for f in futures:
            e = f.exception()
            if e is not None:
                raise e

    def discard(self) -> None:
        """Wait for every write, ignoring failures (before removing what they wrote)."""
        with self._cond:
            futures, self._futures = self._futures, []
        concurrent.futures.wait(futures)
