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
from ...commit import AttemptMissing, CommitResult, commit_manifest
from ...errors import DataCorrupted, DataNotAvailable, StorageError, os_error
from ...keys import DataKey
from ...manifest import Digest, Manifest, Partition, Segment, now_iso
from ...records import dtype_to_json
from ...saver import Saver
from .arrays import attempt_attributes, chunk_bounds, consolidated, segment_array_meta
from .dtypes import is_mapped, to_storage

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
        helps = self.metadata.get("field_help")
        units = self.metadata.get("field_units")
        self.templates = backend.array_templates(
            self.dtype,
            descriptions=helps if isinstance(helps, dict) else None,
            units=units if isinstance(units, dict) else None,
        )
        self._leased = False  # whether this copy of the saver has written the lease
        self._committed_here = False

    def __getstate__(self) -> dict[str, Any]:
        # a copy sent to a worker writes its own first lease before any data
        return {**self.__dict__, "_leased": False, "_committed_here": False}

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

    def touch_lease(self) -> None:
        """Renew this attempt's lease: gc leaves an attempt alone while its lease is younger
        than its min-age. Written as the save writes, and by a heartbeat while it computes.
        The lease is also the attempt's "not committed" marker: once this saver committed,
        it is not renewed any more.
        """
        if not self._committed_here:
            _zarr.run(self._put_lease())

    def release_lease(self) -> None:
        """Remove the lease if this attempt is committed (the commit removes it too; this
        catches a renewal by a heartbeat that raced the commit). Best effort.
        """
        try:
            if self.backend.get_metadata(self.backend_key).attempt != self.attempt:
                return
            self.backend.fs.rm_file(self.backend.layout.lease(self.backend_key, self.attempt))
        except (FileNotFoundError, DataNotAvailable, DataCorrupted):
            pass
        except OSError as e:
            logger.debug("could not remove the lease of %s: %s", self.key, e)

    async def _put_lease(self) -> None:
        body = json.dumps({"attempt": self.attempt, "renewed": now_iso()}).encode()
        await _zarr.put_bytes(self.backend.store, f"{self.prefix}/{layout.LEASE}", body)

    def _write_segment(self, name: str, data: np.ndarray) -> Segment:
        store = self.backend.store
        gpath = self.backend.layout.segment_prefix(self.backend_key, self.attempt, name)
        names = list(self.dtype.names or ())
        chunk_rows = {f: self._chunk_rows(self.dtype[f].itemsize, len(data)) for f in names}
        shape = Segment(name, len(data), chunk_rows)

        # Fields are copied out of the records here, in the calling (Dask worker) thread, not in
        # zarr's single event-loop thread. Each chunk is encoded with exactly its rows and
        # stored by this task alone; its size and crc32c go into the manifest, so a reader can
        # tell a missing, truncated or swapped chunk from the data.
        columns = {
            f: to_storage(np.ascontiguousarray(data[f]), self.dtype[f].base)
            if is_mapped(self.templates[f])
            else np.ascontiguousarray(data[f])
            for f in names
        }
        self._clear_rerun_leftovers(name)

        async def one(f: str) -> tuple[str, list[Digest], Digest]:
            # Metadata is written without zarr's parent-group creation: every object under the
            # segment has exactly one writer (this task), and no request is spent on parents.
            meta = _zarr.metadata_from_dict(
                segment_array_meta(self.templates, shape, f, self.dtype)
            )
            path = f"{gpath}/{layout.check_field(f)}"
            arr = _zarr.writable_array(store, path, meta)
            md = await _put_node(store, path, meta)
            col = columns[f]

            async def chunk(i: int, a: int, b: int) -> Digest:
                buf = await _zarr.encode_chunk(arr, i, col[a:b])
                await _zarr.put_chunk(arr, i, buf)
                return _digest(buf, ends_with_crc32c=True)

            bounds = chunk_bounds(0, len(col), chunk_rows[f])
            digests = await asyncio.gather(*(chunk(i, a, b) for i, (a, b) in enumerate(bounds)))
            return f, list(digests), md

        async def write() -> tuple[Digest, list[tuple[str, list[Digest], Digest]]]:
            # The lease marks the attempt as not committed: this copy of the saver writes it
            # before its first data (a save killed at once leaves the marker too), then renews
            # it with every segment, in the same round trip.
            if not self._leased:
                await self._put_lease()
                self._leased = True
            _, group, *arrays = await asyncio.gather(
                self._put_lease(),
                _put_node(store, gpath, _zarr.group_metadata({})),
                *(one(f) for f in names),
            )
            return group, arrays  # type: ignore[return-value]

        try:
            group, arrays = _zarr.run(write())
        except OSError as e:
            new = os_error(e, f"write {self.key} partition data", self.backend.layout.path(gpath))
            if new is None:
                raise
            raise new from e
        metadata = {"zarr.json": group, **{f"{f}/zarr.json": md for f, _, md in arrays}}
        return Segment(name, len(data), chunk_rows, {f: d for f, d, _ in arrays}, metadata)

    def _commit(self, partitions: list[Partition], segments: list[Segment]) -> Manifest:
        b = self.backend
        if not segments:
            # an empty data type is still a Zarr array of every field: one segment of 0 rows
            segments = [self._write_segment(layout.segment_name(0), self.dtype_empty())]
        attrs = attempt_attributes(self.key, self.attempt)

        async def prepare() -> Digest:
            _, digest = await asyncio.gather(
                self._put_lease(), _put_node(b.store, self.prefix, _zarr.group_metadata(attrs))
            )
            return digest

        group = _zarr.run(prepare())
        self._check_segments_exist(segments)
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
            attempt_metadata=group,
        )
        document = manifest.to_document(consolidated(manifest))
        d = b.layout.key_dir(self.backend_key)
        replaced = self._replaced_attempt() if self.overwrite else None
        b._invalidate(d)
        path = b.layout.commit(self.backend_key)
        try:
            try:
                result, committed = commit_manifest(
                    b.fs,
                    path,
                    manifest,
                    document,
                    overwrite=self.overwrite,
                    read_committed=self._read_committed,
                    policy=self.lost_race,
                )
            except OSError as e:
                new = os_error(e, f"commit {self.key}", path)
                if new is None:
                    raise
                raise new from e
        except BaseException:
            self.abort()  # lost the race, or e.g. permission denied: leave nothing behind
            raise
        b._invalidate(d)
        if result is CommitResult.LOST_RACE:
            self.abort()
            return committed
        self._committed_here = True
        self._after_commit(replaced)
        # as a stored object (FsObjectStore); idempotent, so a rerun commit finishes it too
        b._index_array(self.backend_key, committed)
        if result is CommitResult.COMMITTED:
            logger.info(
                "committed %s (%d rows, %d segments)", self.key, manifest.rows, len(segments)
            )
        return committed

    def dtype_empty(self) -> np.ndarray:
        """No records of this saver's dtype."""
        return np.zeros(0, self.dtype)

    def _replaced_attempt(self) -> str | None:
        """The attempt an overwrite is about to replace (``None`` if nothing is committed)."""
        try:
            return self.backend.get_metadata(self.backend_key).attempt
        except (DataNotAvailable, DataCorrupted):
            return None

    def _after_commit(self, replaced: str | None) -> None:
        """Markers once committed: the lease goes (this attempt is committed now); the
        attempt an overwrite replaced gets ``strata.superseded`` (gc removes it after the
        grace period); a ``manifest.json`` of format v1/v2 goes. Best effort: the commit
        document alone decides what is committed.
        """
        b, lay = self.backend, self.backend.layout
        try:
            b.fs.rm_file(lay.lease(self.backend_key, self.attempt))
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.debug("could not remove the lease of %s: %s", self.key, e)
        if replaced is not None and replaced != self.attempt:
            body = json.dumps({"superseded_by": self.attempt, "at": now_iso()}).encode()
            try:
                # the attempt folder may be a link out of the store: never write through it
                b._checked(lay.attempt_dir(self.backend_key, replaced))
                b.fs.pipe_file(lay.superseded(self.backend_key, replaced), body)
            except (OSError, StorageError) as e:
                logger.debug("could not mark %s superseded: %s", replaced, e)
        if self.overwrite:
            b._remove_legacy_manifest(self.backend_key)

    def _check_segments_exist(self, segments: list[Segment]) -> None:
        """Refuse to commit an attempt whose segments are gone (collected by a gc that took
        this save for dead): committing would name holes.
        """
        b = self.backend
        d = b.layout.attempt_dir(self.backend_key, self.attempt)
        present = set(b._ls_names(d))
        missing = [s.name for s in segments if s.name not in present]
        if missing:
            raise AttemptMissing(
                f"cannot commit {self.key}: segment(s) {missing[:5]} of attempt {self.attempt} "
                f"are gone from {b.layout.rel(d)} (removed by gc while the save ran?); nothing "
                "was committed: save again"
            )

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


def _digest(buf: Any, ends_with_crc32c: bool = False) -> Digest:
    raw = buf.as_numpy_array()
    return Digest(int(raw.nbytes), _zarr.object_crc32c(raw, ends_with_crc32c))


async def _put_node(store: Any, path: str, meta: Any) -> Digest:
    """Write the ``zarr.json`` of the node at ``path`` (and nothing else); return its digest."""
    bufs = _zarr.metadata_buffers(meta)
    for name, buf in bufs.items():
        await store.set(f"{path}/{name}", buf)
    return _digest(bufs["zarr.json"])
