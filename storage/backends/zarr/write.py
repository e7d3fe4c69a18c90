"""The write path of :class:`~strata.storage.backends.zarr.ZarrBackend`: :class:`ZarrSaver`.

A saver writes a new attempt group (one segment group per written run of partitions, one array
per field in it), each object by exactly one task, then commits through
:func:`strata.storage.commit.commit_manifest`.

A segment is encoded in the task that made it (:mod:`.encode`: the bytes zarr would write);
its writes then run on zarr's event loop (:mod:`.pending`) while the task returns, so the
requests of many segments are in flight at once. The commit waits for all of them, then in one
round trip renews the lease, writes the attempt's group and lists the attempt, and refuses to
commit if any object the manifest names is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import __version__, _zarr, layout
from ...commit import AttemptMissing, CommitResult, commit_manifest
from ...errors import DataCorrupted, DataNotAvailable, StorageError, os_error
from ...keys import DataKey
from ...manifest import Digest, Manifest, Partition, Segment, now_iso
from ...records import dtype_to_json
from ...saver import Saver
from .arrays import SegmentDocuments, attempt_attributes, chunk_bounds, consolidated
from .dtypes import is_mapped, to_storage
from .encode import MIN_PARALLEL_BYTES, ChunkEncoder, encoder_for, in_order
from .pending import MIN_BYTES_IN_FLIGHT, PendingWrites, write_concurrency
from .shards import index_bytes, shard_chunks_for, shardable

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
        self._first_lease: Any = None  # the future of that first lease write
        self._lease_lock = threading.Lock()
        self._committed_here = False

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to a worker writes its own first lease before any data, and waits for
        # its writes in the task that makes them: the commit may run in another process.
        state = {**self.__dict__, "_leased": False, "_committed_here": False}
        state["_defer_writes"] = False
        state["_first_lease"] = None
        for k in ("_pending", "_encoder_cache", "_documents_cache", "_lease_lock"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lease_lock = threading.Lock()

    def _start_lease(self) -> Any:
        """Start this copy's first lease write (once) and return its future: it runs while
        the first segment is encoded, and that segment's data waits for it.
        """
        with self._lease_lock:
            if self._first_lease is None:
                self._first_lease = _zarr.submit(self._put_lease())
            return self._first_lease

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

    def _encoders(self) -> dict[str, ChunkEncoder | None]:
        enc = self.__dict__.get("_encoder_cache")
        if enc is None:
            enc = {f: encoder_for(tpl) for f, tpl in self.templates.items()}
            self._encoder_cache = enc
        return enc

    def _documents(self) -> SegmentDocuments:
        docs = self.__dict__.get("_documents_cache")
        if docs is None:
            docs = self._documents_cache = SegmentDocuments(self.templates, self.dtype)
        return docs

    def _writes(self) -> PendingWrites:
        w = self.__dict__.get("_pending")
        if w is None:
            w = PendingWrites(
                write_concurrency(self.backend),
                max(MIN_BYTES_IN_FLIGHT, 2 * self.chunk_target_bytes),
            )
            self._pending = w
        return w

    def _write_segment(self, name: str, data: np.ndarray) -> Segment:
        store = self.backend.store
        gpath = self.backend.layout.segment_prefix(self.backend_key, self.attempt, name)
        names = list(self.dtype.names or ())
        chunk_rows = {f: self._chunk_rows(self.dtype[f].itemsize, len(data)) for f in names}
        encoders = self._encoders()
        shard_chunks = {}  # several chunks of a field: stored in shards (see .shards)
        for f in names:
            n = math.ceil(len(data) / chunk_rows[f])
            target = self.backend.shard_target_bytes
            k = shard_chunks_for(n, chunk_rows[f] * self.dtype[f].itemsize, target)
            if k > 1 and encoders[f] is not None and shardable(self.templates[f]):
                shard_chunks[f] = k
        shape = Segment(name, len(data), chunk_rows, shard_chunks=shard_chunks)
        lease = self._start_lease()
        self._clear_rerun_leftovers(name)

        # Every chunk of the segment is encoded with exactly its rows on the process's
        # encoding pool (.encode.in_order: all cores, to the end of a save), not in zarr's
        # single event-loop thread; its size and crc32c go into the manifest, so a reader can
        # tell a missing, truncated or swapped chunk from the data. Only the encoded bytes
        # travel on: the PUTs need nothing else, and the partition's memory is free once this
        # returns.
        objects: list[tuple[str, tuple[bytes, ...]]] = []  # key, parts of the object
        chunks: dict[str, list[Digest]] = {}
        metadata: dict[str, Digest] = {}
        group_doc = _zarr.metadata_buffers(_zarr.group_metadata({}))["zarr.json"].to_bytes()
        objects.append((f"{gpath}/zarr.json", (group_doc,)))
        metadata["zarr.json"] = _digest_bytes(group_doc, False)
        docs = self._documents()
        fields = []  # per field: array path, zarr's array (if zarr encodes), column, bounds
        for f in names:
            path = f"{gpath}/{layout.check_field(f)}"
            arr = None  # zarr's array, for a chain only zarr's codec pipeline encodes
            if encoders[f] is None:
                meta = _zarr.metadata_from_dict(docs.document(shape, f))
                arr = _zarr.writable_array(store, path, meta)
            col = data[f]
            if is_mapped(self.templates[f]):
                col = to_storage(np.ascontiguousarray(col), self.dtype[f].base)
            fields.append((f, path, arr, col, chunk_bounds(0, len(col), chunk_rows[f])))
        jobs = (
            functools.partial(_encode, encoders[f], arr, col, i, a, b, chunk_rows[f])
            for f, _, arr, col, bounds in fields
            for i, (a, b) in enumerate(bounds)
        )
        with contextlib.closing(
            in_order(jobs, parallel=data.nbytes >= MIN_PARALLEL_BYTES)
        ) as encoded:
            self._collect(fields, encoded, shape, store, lease, objects, chunks, metadata)
        return Segment(name, len(data), chunk_rows, chunks, metadata, shard_chunks)

    def _collect(
        self,
        fields: list[tuple[str, str, Any, np.ndarray, list[tuple[int, int]]]],
        encoded: Iterator[tuple[bytes, ...]],
        shape: Segment,
        store: Any,
        lease: Any,
        objects: list[tuple[str, tuple[bytes, ...]]],
        chunks: dict[str, list[Digest]],
        metadata: dict[str, Digest],
    ) -> None:
        """Take the encoded chunks of ``fields`` in order into their objects (chunks, or
        shards with their index), the digests into ``chunks`` and ``metadata``, and hand the
        objects to the writes (as they add up to a chunk's bytes, unless writes are deferred;
        the rest at the end).
        """
        docs = self._documents()
        held, first = 0, True  # encoded bytes not yet handed to a write; no flush yet
        for f, path, _, _, bounds in fields:
            # Metadata is written without zarr's parent-group creation: every object under the
            # segment has exactly one writer (this task), and no request is spent on parents.
            doc = docs.document_bytes(shape, f)
            objects.append((f"{path}/zarr.json", (doc,)))
            metadata[f"{f}/zarr.json"] = _digest_bytes(doc, False)
            digests = []
            k = shape.shard(f)
            inner: list[bytes] = []  # the stored bytes of the shard's chunks so far
            for i in range(len(bounds)):
                parts = next(encoded)
                # the recorded crc32c of a chunk is its trailing checksum (_zarr.object_crc32c)
                digests.append(
                    Digest(sum(len(p) for p in parts), int.from_bytes(parts[-1][-4:], "little"))
                )
                if k > 1:
                    inner.extend(parts)
                    if (i + 1) % k and i + 1 < len(bounds):
                        continue
                    sizes = [d.size for d in digests[i // k * k :]]
                    parts = (*inner, index_bytes(sizes, k))
                    inner = []
                objects.append((f"{path}/{docs.chunk_key(f, i // k)}", parts))
                if not self._defer_writes:
                    held += sum(len(q) for q in parts)
                    if held >= self.chunk_target_bytes:
                        # waiting in this task anyway: write as encoded, so a task holds its
                        # partition and about one chunk of encoded bytes, not a segment's
                        self._flush(store, list(objects), lease, renew=first)
                        objects.clear()
                        held, first = 0, False
            chunks[f] = digests
        # The lease marks the attempt as not committed: this copy of the saver writes it
        # before its first data (a save killed at once leaves the marker too), then renews
        # it with every segment, alongside the segment's objects.
        self._flush(store, objects, lease, renew=first)

    def _flush(
        self, store: Any, objects: list[tuple[str, tuple[bytes, ...]]], lease: Any, renew: bool
    ) -> None:
        """Hand ``objects`` to the writes in flight (and wait for them, unless deferred)."""
        writes = self._writes()
        future = writes.submit(
            self._segment_writes(store, objects, lease, renew),
            sum(len(p) for _, parts in objects for p in parts),
        )
        if not self._defer_writes:
            self._wait(writes, future)

    async def _segment_writes(
        self,
        store: Any,
        objects: list[tuple[str, tuple[bytes, ...]]],
        lease: Any,
        renew: bool = True,
    ) -> None:
        writes = self._writes()
        if not self._leased:
            await asyncio.wrap_future(lease)  # the lease before the first data
            self._leased = True
        if not renew:
            if self.backend.is_local:
                files = [(self.backend.layout.path(k), b) for k, b in objects]
                await writes.limited(asyncio.to_thread(_write_files, files))
            else:
                await _zarr.gather_started_in_turn(
                    writes.limited(_zarr.put_bytes(store, k, b"".join(p))) for k, p in objects
                )
            return
        if self.backend.is_local:
            # One thread writes the segment's files: each folder made once, each file written
            # in place (zarr's LocalStore makes every parent and renames a temporary file per
            # object). Nothing under an uncommitted attempt is read before the commit checks
            # it, and a rerun of the task clears what a killed one left (_clear_rerun_leftovers).
            files = [(self.backend.layout.path(k), b) for k, b in objects]
            await asyncio.gather(
                writes.limited(self._put_lease()),
                writes.limited(asyncio.to_thread(_write_files, files)),
            )
            return
        await _zarr.gather_started_in_turn(
            [
                writes.limited(self._put_lease()),
                *(writes.limited(_zarr.put_bytes(store, k, b"".join(p))) for k, p in objects),
            ]
        )

    def _wait(self, writes: PendingWrites, future: Any = None) -> None:
        """Wait for this saver's writes (or only ``future``); raise the first failure as
        strata's error naming the key.
        """
        try:
            writes.wait(future)
        except OSError as e:
            new = os_error(
                e, f"write {self.key} partition data", self.backend.layout.path(self.prefix)
            )
            if new is None:
                raise
            raise new from e

    def _commit(self, partitions: list[Partition], segments: list[Segment]) -> Manifest:
        b = self.backend
        if not segments:
            # an empty data type is still a Zarr array of every field: one segment of 0 rows
            segments = [self._write_segment(layout.segment_name(0), self.dtype_empty())]
        # every write of this save has landed (or failed: then nothing is committed)
        self._wait(self._writes())
        attrs = attempt_attributes(self.key, self.attempt)
        group_doc = _zarr.metadata_buffers(_zarr.group_metadata(attrs))["zarr.json"].to_bytes()
        group = _digest_bytes(group_doc, False)
        expected = self._expected_keys(segments)

        async def prepare() -> set[str]:
            # The lease renewal, the attempt's group and the check that everything the
            # manifest names exists go in one round trip: the listing is of objects the saver
            # wrote before, never of the group written beside it.
            _, _, present = await asyncio.gather(
                self._put_lease(),
                _zarr.put_bytes(b.store, f"{self.prefix}/zarr.json", group_doc),
                _list_keys(b.store, self.prefix),
            )
            return present

        present = _zarr.run(prepare())
        self._check_objects_exist(expected, present)
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
        document = manifest.to_document(consolidated(manifest, self._documents()))
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
        # the lease goes while the markers and the stored-object index are written
        lease = _zarr.submit(_delete_key(b.store, f"{self.prefix}/{layout.LEASE}"))
        try:
            self._after_commit(replaced)
            # as a stored object (FsObjectStore); idempotent, so a rerun commit finishes it too
            b._index_array(self.backend_key, committed)
        finally:
            try:
                lease.result()
            except OSError as e:  # best effort: the commit document alone decides
                logger.debug("could not remove the lease of %s: %s", self.key, e)
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
        """Markers once committed (the lease is removed beside them): the attempt an
        overwrite replaced gets ``strata.superseded`` (gc removes it after the grace period);
        a ``manifest.json`` of format v1/v2 goes. Best effort: the commit document alone
        decides what is committed.
        """
        b, lay = self.backend, self.backend.layout
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

    def _expected_keys(self, segments: list[Segment]) -> dict[str, str]:
        """Store key -> what it is, of every object the manifest of ``segments`` names."""
        docs = self._documents()  # a chunk's key depends on the field alone, not the segment
        out = {}
        for seg in segments:
            gpath = self.backend.layout.segment_prefix(self.backend_key, self.attempt, seg.name)
            out[f"{gpath}/zarr.json"] = f"segment {seg.name}"
            for f in self.dtype.names or ():
                path = f"{gpath}/{layout.check_field(f)}"
                out[f"{path}/zarr.json"] = f"segment {seg.name} array {f}"
                k = seg.shard(f)
                for i in range(seg.n_objects(f)):
                    what = f"chunk {i}" if k == 1 else f"shard {i} (chunks {i * k}-{i * k + k - 1})"
                    key = f"{path}/{docs.chunk_key(f, i)}"
                    out[key] = f"segment {seg.name} array {f} {what}"
        return out

    def _check_objects_exist(self, expected: dict[str, str], present: set[str]) -> None:
        """Refuse to commit an attempt whose objects are gone (collected by a gc that took
        this save for dead): committing would name holes (invariants 9 and 10).
        """
        missing = [what for k, what in expected.items() if k not in present]
        if missing:
            d = self.backend.layout.attempt_dir(self.backend_key, self.attempt)
            raise AttemptMissing(
                f"cannot commit {self.key}: {len(missing)} object(s) of attempt {self.attempt} "
                f"are gone from {self.backend.layout.rel(d)} ({', '.join(missing[:5])}; "
                "removed by gc while the save ran?); nothing was committed: save again"
            )

    def _read_committed(self) -> Manifest:
        self.backend._invalidate(self.backend.layout.key_dir(self.backend_key))
        return self.backend.get_metadata(self.backend_key)

    def abort(self) -> None:
        """Remove this attempt's directory (its uncommitted segments). Does nothing if this
        attempt was committed (by this object or a copy of it on a worker).
        """
        b = self.backend
        pending = self.__dict__.get("_pending")
        if pending is not None:
            pending.discard()  # nothing of this attempt may land after its removal
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


def _encode(
    enc: ChunkEncoder | None, arr: Any, col: np.ndarray, i: int, a: int, b: int, rows: int
) -> tuple[bytes, ...]:
    """The stored bytes of chunk ``i`` (rows ``a:b`` of ``col``), as parts: by strata's
    encoder, or by zarr's codec pipeline for a chain the encoder does not take.
    """
    if enc is not None:
        return enc.encode_parts(col[a:b], rows)
    buf = _zarr.run(_zarr.encode_chunk(arr, i, np.ascontiguousarray(col[a:b])))
    return (buf.to_bytes(),)


def _digest_bytes(raw: bytes, ends_with_crc32c: bool) -> Digest:
    """Size and crc32c of a stored object's bytes (as the manifest records them)."""
    return Digest(len(raw), _zarr.object_crc32c(np.frombuffer(raw, np.uint8), ends_with_crc32c))


def _write_files(files: list[tuple[str, tuple[bytes, ...]]]) -> None:
    """Write each ``(path, parts)`` on local disk, making each folder once.

    Each file is written under a temporary name and renamed into place, so a file is always
    one writer's whole bytes, even when a task presumed lost (a worker cut off, not dead)
    writes the same object as its rerun. A killed writer leaves a ``*.partial`` file, inside
    an attempt that gc removes whole or that its rerun's commit lists and ignores.
    """
    made: set[str] = set()
    tag = f"{os.getpid()}-{threading.get_ident()}"
    for path, data in files:
        d = os.path.dirname(path)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        tmp = f"{path}.{tag}.partial"
        try:
            with open(tmp, "wb") as f:
                for part in data:
                    f.write(part)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


async def _list_keys(store: Any, prefix: str) -> set[str]:
    """Every key below ``prefix`` of ``store`` (one listing)."""
    return {k async for k in store.list_prefix(prefix)}


async def _delete_key(store: Any, key: str) -> None:
    await store.delete(key)
