"""The write path of :class:`~strata.storage.backends.zarr.ZarrBackend`: :class:`ZarrSaver`.

A saver writes a new attempt group (one segment group per written run of partitions, one array
per field in it), each object by exactly one task, then commits through
:func:`strata.storage.commit.commit_manifest`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import __version__, _zarr, layout
from ...commit import CommitResult, commit_manifest
from ...errors import DataCorrupted, DataNotAvailable
from ...keys import DataKey
from ...manifest import Manifest, Partition, Segment, now_iso
from ...records import dtype_to_json
from ...saver import Saver
from .arrays import chunk_bounds, segment_array_meta

if TYPE_CHECKING:
    from .backend import ZarrBackend

__all__ = ["ZarrSaver"]

logger = logging.getLogger(__name__)


class ZarrSaver(Saver):
    """Writes one data type as a new attempt group of a :class:`ZarrBackend`, then commits it
    with an exclusively created manifest.
    """

    def __init__(
        self,
        backend: ZarrBackend,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__(
            key,
            dtype,
            chunk_target_bytes=backend.chunk_target_bytes,
            metadata=metadata,
            overwrite=overwrite,
        )
        json.dumps(self.metadata, allow_nan=False)  # metadata must be plain JSON
        self.backend = backend
        self.backend_key = backend_key
        self.attempt = layout.new_attempt()
        self.prefix = backend.layout.attempt_prefix(backend_key, self.attempt)
        self.templates = backend.array_templates(self.dtype)

    def _chunk_rows(self, row_bytes: int, rows: int) -> int:
        max_rows = max(1, self.chunk_target_bytes // max(1, row_bytes))
        nchunks = max(1, math.ceil(rows / max_rows))
        return max(1, math.ceil(rows / nchunks))

    def _clear_rerun_leftovers(self, name: str) -> None:
        """On local disk, remove what an earlier run of this segment's task left (a task rerun
        after its worker was killed: zarr's ``*.partial`` temporary files). The segment has
        one writer, this task, so nothing else can be writing there. Object stores write
        whole objects and leave no such files; one ``stat`` is the whole cost otherwise.
        """
        if self.backend.is_local:
            path = self.backend.layout.path(
                self.backend.layout.segment_prefix(self.backend_key, self.attempt, name)
            )
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)

    def _write_segment(self, name: str, data: np.ndarray) -> Segment:
        store = self.backend.store
        gpath = self.backend.layout.segment_prefix(self.backend_key, self.attempt, name)
        names = list(self.dtype.names or ())
        seg = Segment(
            name, len(data), {f: self._chunk_rows(self.dtype[f].itemsize, len(data)) for f in names}
        )

        # Fields are copied out of the records here, in the calling (Dask worker) thread, not in
        # zarr's single event-loop thread; each chunk is then set on its own with exactly its
        # rows, so zarr neither allocates a fill-valued chunk to merge into nor scans the chunk
        # for emptiness (write_empty_chunks: the manifest, not chunk presence, says what exists).
        columns = {f: np.ascontiguousarray(data[f]) for f in names}
        self._clear_rerun_leftovers(name)

        async def one(f: str) -> None:
            # Metadata is written without zarr's parent-group creation: every object under the
            # segment has exactly one writer (this task), and no request is spent on parents.
            meta = _zarr.metadata_from_dict(segment_array_meta(self.templates, seg, f, self.dtype))
            path = f"{gpath}/{layout.check_field(f)}"
            arr = _zarr.writable_array(store, path, meta)
            await _zarr.put_metadata(store, path, meta)
            col = columns[f]
            await asyncio.gather(
                *(
                    arr.setitem(slice(a, b), col[a:b])
                    for a, b in chunk_bounds(0, len(col), seg.chunk_rows[f])
                )
            )

        async def write() -> None:
            await asyncio.gather(
                _zarr.put_metadata(store, gpath, _zarr.group_metadata({})),
                *(one(f) for f in names),
            )

        _zarr.run(write())
        return seg

    def _commit(self, partitions: list[Partition], segments: list[Segment]) -> Manifest:
        b = self.backend
        attrs = {"strata": {"key": self.key.to_dict(), "attempt": self.attempt}}
        _zarr.run(_zarr.put_metadata(b.store, self.prefix, _zarr.group_metadata(attrs)))
        manifest = Manifest(
            key=self.key,
            dtype=dtype_to_json(self.dtype),
            arrays=self.templates,
            attempt=self.attempt,
            partitions=partitions,
            segments=segments,
            writing_started=self.started,
            writing_ended=now_iso(),
            metadata=self.metadata,
            strata_version=__version__,
        )
        d = b.layout.key_dir(self.backend_key)
        old: Manifest | None = None
        if self.overwrite:
            try:
                old = b.get_metadata(self.backend_key)
            except (DataNotAvailable, DataCorrupted):
                old = None
        b._invalidate(d)
        try:
            result, committed = commit_manifest(
                b.fs,
                b.layout.manifest(self.backend_key),
                manifest,
                overwrite=self.overwrite,
                read_committed=self._read_committed,
                policy=self.lost_race,
            )
        except BaseException:
            self.abort()  # lost the race, or e.g. permission denied: leave nothing behind
            raise
        b._invalidate(d)
        if result is CommitResult.LOST_RACE:
            self.abort()
            return committed
        if old is not None and old.attempt != self.attempt:
            b._remove_attempt(self.backend_key, old.attempt)
        # as a stored object (FsObjectStore); idempotent, so a rerun commit finishes it too
        b._index_array(self.backend_key, committed)
        if result is CommitResult.COMMITTED:
            logger.info(
                "committed %s (%d rows, %d segments)", self.key, manifest.rows, len(segments)
            )
        return committed

    def _read_committed(self) -> Manifest:
        self.backend._invalidate(self.backend.layout.key_dir(self.backend_key))
        return self.backend.get_metadata(self.backend_key)

    def abort(self) -> None:
        """Remove this attempt's directory (its uncommitted segments). Does nothing if this
        attempt was committed (by this object or a copy of it on a worker).
        """
        b = self.backend
        try:
            if b.get_metadata(self.backend_key).attempt == self.attempt:
                return
        except (DataNotAvailable, DataCorrupted):
            pass
        try:
            b._remove_attempt(self.backend_key, self.attempt)
            b._remove_key_dir_if_empty(self.backend_key)
        except (FileNotFoundError, OSError) as e:
            logger.debug("abort of %s: %s", self.attempt, e)
