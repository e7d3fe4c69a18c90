"""The Saver role: validate, merge and write partitions of one data type, then commit.

A :class:`Saver` is a Dask graph sink. :meth:`Saver.save` takes a Dask collection of
partitions and returns a lazy ``Delayed`` whose computation writes every partition in parallel
and commits. The graph has three layers:

1. one *stage* task per partition validates it; a partition of at least
   ``1 / MERGE_GROUP`` of the target chunk size is written at once as its own segment, a
   smaller one is passed on in memory (so a merge task never holds more than about one chunk);
2. one *merge* task per group of consecutive partitions writes runs of small partitions as
   shared segments (so many small partitions do not make many tiny objects);
3. one *commit* task writes the manifest, last.

Each segment is written by exactly one task, so there are no locks and no shared chunks. Only
small partitions travel between tasks; large ones are written where they were computed.

:meth:`Saver.save_partition` and :meth:`Saver.close` are the same protocol without Dask.

Subclasses implement the I/O: :meth:`Saver._write_segment`, :meth:`Saver._commit` and
:meth:`Saver.abort`.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from .commit import LostRace
from .keys import DataKey
from .layout import segment_name
from .manifest import INT64_MAX, INT64_MIN, Manifest, Partition, Segment, now_iso
from .records import check_dtype, check_partition

__all__ = ["MERGE_GROUP", "SEGMENT_CHUNKS", "Saver"]

logger = logging.getLogger(__name__)

MERGE_GROUP = 16
"""Consecutive partitions handled by one merge task. Partitions smaller than
``segment_target_bytes / MERGE_GROUP`` are merged, so a merge task holds at most about one
segment's worth of data, whatever the partition sizes."""

SEGMENT_CHUNKS = 8
"""Chunk targets' worth of small partitions merged into one segment (``segment_target_bytes``;
32 MiB at the default 4 MiB chunk target). Small chunks (a few MiB, for time-range reads) must
not mean a segment, and its ``zarr.json`` documents, per small partition."""

# A staged partition: (index, Partition entry, written Segment or None, small data or None)
_Staged = tuple[int, Partition, Segment | None, np.ndarray | None, str]
# The result of a merge task: entries in order, and when its earliest stage task started
_Merged = tuple[list[tuple[Partition, Segment | None]], str]


class Saver(ABC):
    """Writes one data type under one key; nothing is visible until :meth:`close` or the
    computation of :meth:`save` commits.

    Parameters
    ----------
    key
        The key the data is committed under.
    dtype
        The record dtype every partition must have.
    chunk_target_bytes
        Uncompressed size of a chunk. Partitions under ``1/MERGE_GROUP`` of
        ``segment_target_bytes`` (:data:`SEGMENT_CHUNKS` times this) are
        merged into shared segments of about that size.
    metadata
        Extra JSON-able metadata stored in the manifest.
    overwrite
        Replace data already committed under the key instead of raising ``DataExistsError``.

    """

    def __init__(
        self,
        key: DataKey,
        dtype: Any,
        *,
        chunk_target_bytes: int,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.key = key
        self.dtype = check_dtype(dtype)
        if chunk_target_bytes < 1:
            raise ValueError(f"chunk_target_bytes must be positive, got {chunk_target_bytes}")
        self.chunk_target_bytes = int(chunk_target_bytes)
        self.segment_target_bytes = self.chunk_target_bytes * SEGMENT_CHUNKS
        self.metadata = dict(metadata or {})
        self.overwrite = overwrite
        self.started = now_iso()
        self.attempt_token = uuid.uuid4().hex[:12]
        """Unique to this save attempt; names its Dask tasks and its storage."""
        # streaming state
        self._index = 0
        self._last_end: int | None = None
        self._entries: list[Partition] = []
        self._segments: list[Segment] = []
        self._buffer: list[tuple[int, Partition, np.ndarray]] = []
        self._closed = False
        self.lost_race = LostRace.RAISE
        """What a lost commit race means (see :class:`~strata.storage.commit.LostRace`)."""
        self.on_commit: tuple[Any, Any] | None = None
        """``(frontend, location)`` to register the commit with, for catalogs that index."""
        self._defer_writes = False
        """Whether :meth:`_write_segment` may return before its writes finish (the commit
        waits for them). Set by :meth:`save` for the process that runs the whole graph; a
        saver's copy on another process, and the streaming form, write before returning."""
        self.prechecked = False
        """Set by a caller whose partitions were validated by ``check_partition`` against
        this dtype and exactly the intervals given to :meth:`save` (the pipeline, for plugin
        outputs it checked): only the dtype and shape are checked again then."""

    # -- I/O primitives -------------------------------------------------------------------
    @abstractmethod
    def _write_segment(self, name: str, data: np.ndarray) -> Segment:
        """Write ``data`` (validated records) as the segment ``name``; return its description."""

    @abstractmethod
    def _commit(self, partitions: list[Partition], segments: list[Segment]) -> Manifest:
        """Write the manifest, last and exclusively; return it."""

    @abstractmethod
    def abort(self) -> None:
        """Remove whatever this save attempt wrote. Safe to call more than once."""

    def touch_lease(self) -> None:  # noqa: B027 - optional
        """Renew this save's lease, so gc knows it is alive (backends with leases override)."""

    def release_lease(self) -> None:  # noqa: B027 - optional
        """Remove this save's lease if it is committed (after a heartbeat); optional."""

    # -- shared logic ---------------------------------------------------------------------
    def _where(self, index: int, start: int, end: int) -> str:
        return f"{self.key} partition {index} [{start}, {end})"

    def _stage(self, index: int, data: Any, start: int, end: int) -> _Staged:
        began = now_iso()
        if not (
            self.prechecked
            and isinstance(data, np.ndarray)
            and data.dtype == self.dtype
            and data.ndim == 1
        ):
            data = check_partition(data, self.dtype, start, end, self._where(index, start, end))
        if len(data) == 0:
            return index, Partition(start, end, 0, 0, None, 0), None, None, began
        entry = Partition(start, end, len(data), int(data.nbytes), None, 0)
        if data.nbytes * MERGE_GROUP >= self.segment_target_bytes:
            seg = self._write_segment(segment_name(index), data)
            return index, _with_segment(entry, seg.name, 0), seg, None, began
        return index, entry, None, data, began

    def _merge_task(self, staged: Sequence[_Staged]) -> _Merged:
        return self._merge(staged), min(s[4] for s in staged)

    def _merge(self, staged: Sequence[_Staged]) -> list[tuple[Partition, Segment | None]]:
        """Write runs of small staged partitions as shared segments."""
        out: list[tuple[Partition, Segment | None]] = []
        run: list[tuple[int, Partition, np.ndarray]] = []

        def flush() -> None:
            if not run:
                return
            data = np.concatenate([d for _, _, d in run]) if len(run) > 1 else run[0][2]
            seg = self._write_segment(segment_name(run[0][0]), data)
            offset = 0
            for k, (_, entry, d) in enumerate(run):
                if entry.rows:
                    entry = _with_segment(entry, seg.name, offset)
                out.append((entry, seg if k == 0 else None))
                offset += len(d)
            run.clear()

        pending_bytes = 0
        for index, entry, seg, data, _ in staged:
            if data is None:
                if entry.rows:  # written on its own: ends a run
                    flush()
                    pending_bytes = 0
                    out.append((entry, seg))
                elif run:  # an empty partition inside a run keeps its place in it
                    run.append((index, entry, _empty(self.dtype)))
                else:
                    out.append((entry, None))
                continue
            run.append((index, entry, data))
            pending_bytes += data.nbytes
            if pending_bytes >= self.segment_target_bytes:
                flush()
                pending_bytes = 0
        flush()
        return out

    def _finish(self, merged: Sequence[_Merged]) -> Manifest:
        entries = [e for group, _ in merged for e, _ in group]
        segments = [s for group, _ in merged for _, s in group if s is not None]
        if merged:
            self.started = min(began for _, began in merged)  # when writing really began
        return self._committed(self._commit(entries, segments))

    def _committed(self, manifest: Manifest) -> Manifest:
        if self.on_commit is not None:
            frontend, location = self.on_commit
            frontend._register(self.key, location, manifest)
        return manifest

    @staticmethod
    def _check_intervals(intervals: Sequence[tuple[int, int]], last_end: int | None) -> None:
        prev = last_end
        for i, (start, end) in enumerate(intervals):
            for what, t in (("start", start), ("end", end)):
                if not INT64_MIN <= t <= INT64_MAX:
                    raise ValueError(
                        f"partition {i}: {what} {t} does not fit int64 (ns times must lie in "
                        f"[{INT64_MIN}, {INT64_MAX}])"
                    )
            if end < start:
                raise ValueError(f"partition {i}: end {end} is before start {start}")
            if prev is not None and start < prev:
                raise ValueError(
                    f"partition {i} [{start}, {end}) overlaps or precedes the previous one "
                    f"(which ends at {prev}); partitions must be in time order"
                )
            prev = end

    # -- Dask form ------------------------------------------------------------------------
    def save(self, partitions: Any, intervals: Sequence[tuple[int, int]]) -> Any:
        """Return a lazy ``dask.delayed.Delayed`` that writes ``partitions`` and commits.

        Parameters
        ----------
        partitions
            A sequence of ``Delayed`` objects or numpy arrays, one per partition, or a
            one-dimensional structured ``dask.array.Array`` whose blocks are the partitions.
        intervals
            ``[(start, end), ...]``, one per partition, in time order.

        Computing the result (threaded scheduler or a distributed client) returns the
        committed :class:`~strata.storage.manifest.Manifest`. If any task fails, nothing is
        committed; call :meth:`abort` (or ``gc``) to remove what was written.

        """
        import dask
        import dask.array as da

        if isinstance(partitions, da.Array):
            if partitions.ndim != 1:
                raise ValueError(f"a dask array of partitions must be 1-D, got {partitions.ndim}-D")
            parts: list[Any] = list(partitions.to_delayed().ravel())
        else:
            parts = list(partitions)
        intervals = [(int(s), int(e)) for s, e in intervals]
        if len(parts) != len(intervals):
            raise ValueError(f"{len(parts)} partitions but {len(intervals)} intervals")
        self._check_intervals(intervals, None)
        self._defer_writes = True  # tasks of this process hand their writes on; copies do not
        name = str(self.key)
        stage = dask.delayed(type(self)._stage, pure=False)
        staged = [
            stage(self, i, p, s, e, dask_key_name=f"stage-{name}-{self.attempt_token}-{i}")
            for i, (p, (s, e)) in enumerate(zip(parts, intervals, strict=True))
        ]
        merge = dask.delayed(type(self)._merge_task, pure=False)
        merged = [
            merge(
                self,
                staged[g : g + MERGE_GROUP],
                dask_key_name=f"merge-{name}-{self.attempt_token}-{g}",
            )
            for g in range(0, len(staged), MERGE_GROUP)
        ]
        finish = dask.delayed(type(self)._finish, pure=False)
        return finish(self, merged, dask_key_name=f"commit-{name}-{self.attempt_token}")

    # -- streaming form -------------------------------------------------------------------
    def save_partition(self, data: np.ndarray, start: int, end: int) -> None:
        """Write one partition (in time order) without Dask; small ones are buffered."""
        if self._closed:
            raise RuntimeError(f"saver for {self.key} is closed")
        self._check_intervals([(int(start), int(end))], self._last_end)
        staged = self._stage(self._index, data, int(start), int(end))
        if self._index == 0:
            self.started = staged[4]
        self._index += 1
        self._last_end = int(end)
        index, entry, seg, small, _ = staged
        if small is None and entry.rows:
            self._flush_buffer()
            self._entries.append(entry)
            assert seg is not None
            self._segments.append(seg)
            return
        if small is None and not self._buffer:
            self._entries.append(entry)
            return
        self._buffer.append((index, entry, small if small is not None else _empty(self.dtype)))
        if sum(d.nbytes for _, _, d in self._buffer) >= self.segment_target_bytes:
            self._flush_buffer()

    def _flush_buffer(self) -> None:
        if not self._buffer:
            return
        staged: list[_Staged] = [
            (i, e, None, d if e.rows else None, "") for i, e, d in self._buffer
        ]
        for entry, seg in self._merge(staged):
            self._entries.append(entry)
            if seg is not None:
                self._segments.append(seg)
        self._buffer.clear()

    def close(self) -> Manifest:
        """Flush buffered partitions and commit; returns the manifest."""
        if self._closed:
            raise RuntimeError(f"saver for {self.key} is already closed")
        try:
            self._flush_buffer()
            manifest = self._committed(self._commit(self._entries, self._segments))
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True
        return manifest

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._closed = True
            self.abort()
        elif not self._closed:
            self.close()


def _with_segment(entry: Partition, segment: str, offset: int) -> Partition:
    return Partition(entry.start, entry.end, entry.rows, entry.nbytes, segment, offset)


def _empty(dtype: np.dtype[Any]) -> np.ndarray:
    return np.zeros(0, dtype=dtype)
