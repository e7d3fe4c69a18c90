"""Copy stored data between frontends, verified, in parallel: local -> S3, S3 -> SSH, ...

:func:`copy_data` reads every partition of a stored key from the source, saves it through the
destination frontend's own saver (so it is committed like any save: manifest last, exclusive),
optionally with another compressor and chunk size, then reads the copy back and compares a
sha256 of every partition's decoded values with the one taken from the source. Reading,
writing and verifying are Dask graphs: they run on threads by default, or on a
``distributed`` cluster whose workers talk to both stores directly.
"""

from __future__ import annotations

import copy as _copy
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends.base import StorageBackend
from .codecs import CompressorLike
from .commit import lease_heartbeat
from .errors import DataCorrupted, DataNotAvailable
from .frontends.base import StorageFrontend
from .keys import DataKey
from .lazy import LazyData
from .manifest import Manifest
from .registry import open_frontend

__all__ = ["copy_data", "partition_digests"]

logger = logging.getLogger(__name__)


def copy_data(
    src_frontend: StorageFrontend | str,
    dst_frontend: StorageFrontend | str,
    key: DataKey,
    compressor: CompressorLike = None,
    rechunk_mb: float | None = None,
    client: Any = None,
    *,
    overwrite: bool = False,
) -> Manifest:
    """Copy stored ``key`` from ``src_frontend`` to ``dst_frontend``; return the new manifest.

    Parameters
    ----------
    src_frontend, dst_frontend
        Frontends, or URLs for :func:`strata.storage.open_frontend`.
    key
        The stored key (exact lineage) to copy.
    compressor
        Recompress with this compressor (a preset name such as ``"zstd"``, or a codec); by
        default the destination frontend's own.
    rechunk_mb
        Rechunk to this uncompressed chunk size in MiB; by default the destination's own.
    client
        A ``distributed.Client`` (or a Dask scheduler name) to run on; by default Dask's
        current scheduler (a distributed client if one is active, else threads).
    overwrite
        Replace data already stored under ``key`` at the destination.

    Returns
    -------
    Manifest
        The committed manifest at the destination. Its partitions are the source's.

    Raises
    ------
    DataNotAvailable
        ``key`` is not stored at the source.
    DataExistsError
        ``key`` is already stored at the destination (and ``overwrite`` is false).
    ReadOnlyError
        The destination is read-only or does not take the data type.
    DataCorrupted
        The copy read back differs from the source; the copy is removed again.

    """
    src = open_frontend(src_frontend)
    dst = open_frontend(dst_frontend)
    loc = src.find(key)
    m = src.manifest_at(loc)
    target = _with_codecs(dst, compressor, rechunk_mb)
    replaced = _stored_manifest(target, key) if overwrite else None
    saver = target.saver(m.key, m.np_dtype, metadata=m.metadata, overwrite=overwrite)
    lazy = src.loader_at(loc)
    parts = _partitions(lazy, m)
    intervals = [(p.start, p.end) for p in m.partitions]
    compute = _computer(client)

    import dask

    digest = dask.delayed(_digest, pure=True)
    with lease_heartbeat([saver]):
        written, src_sums = compute(saver.save(parts, intervals), [digest(p) for p in parts])
    try:
        copied = target.loader(key)
        dst_sums = compute([digest(p) for p in _partitions(copied, written)])[0]
        _compare(key, src_sums, dst_sums)
    except DataCorrupted:
        if replaced is not None:
            # an in-place rewrite (or an overwrite): the replaced attempt is still there, so
            # the old commit is restored exactly and the new attempt removed
            logger.error("copy of %s to %r does not match its source; restoring", key, dst)
            target.restore(key, replaced)
        else:
            logger.error("copy of %s to %r does not match its source; removing it", key, dst)
            target.remove(key)
        raise
    logger.info(
        "copied %s from %r to %r: %d rows in %d partitions, verified",
        key,
        src,
        dst,
        written.rows,
        len(written.partitions),
    )
    return written


def _stored_manifest(frontend: StorageFrontend, key: DataKey) -> Manifest | None:
    try:
        return frontend.manifest_at(frontend.find(key))
    except DataNotAvailable:
        return None


def partition_digests(lazy: LazyData, client: Any = None) -> list[str]:
    """sha256 (hex) of the decoded values of every partition of ``lazy``, in parallel."""
    import dask

    digest = dask.delayed(_digest, pure=True)
    out = _computer(client)([digest(p) for p in _partitions(lazy, lazy.manifest)])[0]
    return list(out)


def _partitions(lazy: LazyData, m: Manifest) -> list[Any]:
    """One Dask array per partition of ``m``, sliced from the loaded data (rows in order)."""
    out = []
    offset = 0
    for p in m.partitions:
        out.append(lazy.array[offset : offset + p.rows])
        offset += p.rows
    if offset != len(lazy):
        raise DataCorrupted(
            f"{m.key}: the partition table counts {offset} rows but {len(lazy)} were loaded"
        )
    return out


def _digest(data: np.ndarray) -> str:
    """sha256 over the decoded values, field by field (independent of memory layout)."""
    h = hashlib.sha256()
    h.update(str(len(data)).encode())
    for name in data.dtype.names or ():
        h.update(name.encode())
        h.update(np.ascontiguousarray(data[name]).tobytes())
    return h.hexdigest()


def _compare(key: DataKey, src: Sequence[str], dst: Sequence[str]) -> None:
    """Raise ``DataCorrupted`` naming the partitions whose digests differ."""
    if len(src) != len(dst):
        raise DataCorrupted(f"copy of {key}: {len(dst)} partitions, the source has {len(src)}")
    bad = [i for i, (a, b) in enumerate(zip(src, dst, strict=True)) if a != b]
    if bad:
        raise DataCorrupted(
            f"copy of {key}: partition(s) {bad} differ from the source after writing "
            "(sha256 of the decoded values)"
        )


def _computer(client: Any) -> Any:
    import dask

    def compute(*args: Any) -> tuple[Any, ...]:
        if client is None:
            return dask.compute(*args)
        return dask.compute(*args, scheduler=client)

    return compute


def _with_codecs(
    frontend: StorageFrontend, compressor: CompressorLike, rechunk_mb: float | None
) -> StorageFrontend:
    """``frontend``, or a copy whose backends compress and chunk as asked."""
    if compressor is None and rechunk_mb is None:
        return frontend
    variant = _copy.copy(frontend)  # frontends copy (and pickle) by constructor arguments
    variant.backends = dict(variant.backends)  # never modify the original's
    replaced: dict[int, StorageBackend] = {}
    for name, b in list(variant.backends.items()):
        if not b.supports_recompression:
            continue
        new = b.with_codecs(compressor=compressor, chunk_target_mb=rechunk_mb)
        replaced[id(b)] = new
        variant.backends[name] = new
    if not replaced:
        raise ValueError(
            f"{frontend!r} has no backend that can recompress or rechunk; "
            "copy without compressor= and rechunk_mb="
        )
    for attr, value in list(vars(variant).items()):  # e.g. DirectoryFrontend.backend
        if id(value) in replaced:
            setattr(variant, attr, replaced[id(value)])
    return variant
