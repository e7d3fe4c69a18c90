"""ZarrBackend: compressed Zarr v3 over any fsspec URL.

The layout below the root URL is :mod:`strata.storage.layout`'s; the read path is in
:mod:`.read` and the write path (:class:`~.write.ZarrSaver`) in :mod:`.write`. Every array is
plain Zarr v3 with ``dimension_names``, so zarr-python and xarray open it without strata.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from zarr.codecs import Crc32cCodec

from ... import _zarr, layout
from ...codecs import CompressorLike, compressors
from ...errors import (
    DataCorrupted,
    DataExistsError,
    DataNotAvailable,
    InvalidKey,
    ReadOnlyError,
    StorageError,
)
from ...fs import atomic_write, open_fs, redact, redact_url, split_url, zarr_store
from ...keys import DataKey, validate_run_id
from ...lazy import LazyData
from ...manifest import Manifest
from ...objects.fsstore import FsObjectStore  # stored objects: see that module
from ...records import dtype_to_json
from ..base import StorageBackend
from .arrays import array_templates, consolidated
from .chunks import clear_plans
from .read import build_loader
from .write import ZarrSaver

__all__ = ["GC_GRACE_SECONDS", "ZarrBackend"]

logger = logging.getLogger(__name__)

# Filesystems and Zarr stores are built once per process and URL: tasks on a worker share
# them. The key holds the pid, so a forked process never uses its parent's connections.
_CACHE: dict[tuple[int, str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()

GC_GRACE_SECONDS = 24 * 3600.0
"""How long gc keeps an attempt an overwrite superseded, for readers that opened its manifest
before the overwrite (a day: longer than any sensible read)."""


# manifests parsed, per commit document path: (its bytes, the manifest)
_MANIFESTS: dict[str, tuple[bytes, Manifest]] = {}
_MANIFESTS_LOCK = threading.Lock()
_MANIFESTS_MAX = 256

DEFAULT_CHUNK_TARGET_MB = 4.0
"""Default uncompressed size of a stored chunk (MiB). Small enough that a ``time_range``
cutting into a partition reads little beyond its rows (a 10% range of 30 MB partitions reads
~12% of the stored bytes, against ~20% at 32 MiB), large enough that reads and writes are not
bound by per-object costs (measured: full reads and writes no slower than at 32 MiB)."""


DEFAULT_SHARD_TARGET_MB = 64.0
"""Default uncompressed size of a shard (MiB): an array of a segment with several chunks
stores them about this many bytes to an object (Zarr v3 sharding, :mod:`.shards`). On S3 a
full read of 300 MB took half the time with one object per field and segment than with 4 MiB
objects (GETs cost client and server time each); a time range still reads single chunks."""


def _parse_time(iso: str) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)


def _rebuild(cls: type[ZarrBackend], kwargs: dict[str, Any]) -> ZarrBackend:
    return cls(**kwargs)


_TEMPLATES: dict[str, str] = {}
"""Array templates made (JSON) by dtype, codecs, descriptions and units, in this process."""


class ZarrBackend(FsObjectStore, StorageBackend):
    """Stores data types as Zarr v3 groups under an fsspec URL.

    Parameters
    ----------
    url
        A local path, ``file://``, ``memory://``, ``s3://bucket/prefix``, ``ssh://host/path``
        or any fsspec URL.
    storage_options
        Passed to fsspec (credentials, endpoints). Never shown in reprs or errors.
    compressor
        A preset name (see :data:`strata.storage.codecs.PRESETS`), a zarr or numcodecs codec,
        or a list of them. A crc32c checksum is always appended.
    chunk_target_mb
        Uncompressed size of a chunk in MiB; much smaller partitions are merged.
    shard_target_mb
        Uncompressed size of a shard in MiB: several chunks of an array in one stored object
        (Zarr v3 ``sharding_indexed``); ``0`` stores one object per chunk.
    readonly
        Refuse savers and removals.
    allow_nonstandard_codecs
        Accept codecs outside the Zarr v3 core set (numcodecs lz4, zlib, bz2, lzma), which only
        zarr-python reads; refused by default.

    """

    supports_listing = True
    supports_exclusive_create = True
    supports_gc = True
    supports_recompression = True
    supports_verify = True

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        compressor: CompressorLike = None,
        chunk_target_mb: float = DEFAULT_CHUNK_TARGET_MB,
        readonly: bool = False,
        allow_nonstandard_codecs: bool = False,
        shard_target_mb: float = DEFAULT_SHARD_TARGET_MB,
    ) -> None:
        self.protocol, self.root = split_url(url)
        self.url = url if "://" in url else self.root
        self.storage_options = dict(storage_options or {})
        self.compressor = compressor
        # the checksum is always the last codec: decoded first, it refuses damaged chunks
        self.allow_nonstandard_codecs = allow_nonstandard_codecs
        self.compressors = [*compressors(compressor, allow_nonstandard_codecs), Crc32cCodec()]
        if not chunk_target_mb > 0:
            raise ValueError(f"chunk_target_mb must be positive, got {chunk_target_mb!r}")
        self.chunk_target_mb = chunk_target_mb
        if not shard_target_mb >= 0:
            raise ValueError(f"shard_target_mb must be 0 (no shards) or more: {shard_target_mb!r}")
        self.shard_target_mb = shard_target_mb
        self.readonly = readonly

    # -- identity ---------------------------------------------------------------------------
    def _init_kwargs(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "compressor": self.compressor,
            "chunk_target_mb": self.chunk_target_mb,
            "readonly": self.readonly,
            "allow_nonstandard_codecs": self.allow_nonstandard_codecs,
            "shard_target_mb": self.shard_target_mb,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._init_kwargs()))

    def _token(self) -> str:
        # the backend's identity in the per-process caches; built once (url and options are
        # the backend's own copies, set when it was made)
        token: str | None = self.__dict__.get("_token_cache")
        if token is None:
            token = json.dumps([self.url, repr(sorted(self.storage_options.items()))])
            self.__dict__["_token_cache"] = token
        return token

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ZarrBackend):
            return NotImplemented
        return type(self) is type(other) and repr(self._init_kwargs()) == repr(other._init_kwargs())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._token()))

    def __repr__(self) -> str:
        opts = f", storage_options={redact(self.storage_options)!r}" if self.storage_options else ""
        return f"{type(self).__name__}({redact_url(self.url)!r}{opts})"

    @property
    def chunk_target_bytes(self) -> int:
        """Target uncompressed chunk size in bytes."""
        return max(1, int(self.chunk_target_mb * 2**20))

    @property
    def shard_target_bytes(self) -> int:
        """Target uncompressed shard size in bytes (0: one object per chunk)."""
        return int(self.shard_target_mb * 2**20)

    def with_codecs(
        self, compressor: CompressorLike = None, chunk_target_mb: float | None = None
    ) -> ZarrBackend:
        """A copy of this backend that writes with ``compressor`` / ``chunk_target_mb``."""
        kw = self._init_kwargs()
        if compressor is not None:
            kw["compressor"] = compressor
        if chunk_target_mb is not None:
            kw["chunk_target_mb"] = chunk_target_mb
        return type(self)(**kw)

    # -- plumbing ---------------------------------------------------------------------------
    def _cache_key(self, kind: str) -> tuple[int, str, str, str]:
        return (os.getpid(), kind, type(self).__name__, self._token())

    def _cached(self, kind: str, make: Any) -> Any:
        k = self._cache_key(kind)
        with _CACHE_LOCK:
            if k not in _CACHE:
                _CACHE[k] = make()
            return _CACHE[k]

    @property
    def fs(self) -> Any:
        """The synchronous fsspec filesystem (cached per process)."""
        return self._cached("fs", lambda: open_fs(self.url, self.storage_options)[0])

    @property
    def fs_root(self) -> str:
        """The root path within :attr:`fs`."""
        root: str = self._cached("root", lambda: open_fs(self.url, self.storage_options)[1])
        return root

    @property
    def layout(self) -> layout.Layout:
        """The paths of this store (:class:`strata.storage.layout.Layout`)."""
        root = self.fs_root  # not inside the cache's lock: building it takes the lock too
        lay: layout.Layout = self._cached("layout", lambda: layout.Layout(root))
        return lay

    @property
    def is_local(self) -> bool:
        """Whether the store is on a local file system."""
        return self.protocol == "file"

    @property
    def store(self) -> Any:
        """The Zarr store rooted at the URL (cached per process)."""
        return self._cached("store", lambda: zarr_store(self.url, self.storage_options))

    def close(self) -> None:
        """Forget this process's cached filesystem, store and parsed arrays for this URL
        (closing connections where the filesystem can); the next use opens new ones.
        """
        pid, mine = os.getpid(), (type(self).__name__, self._token())
        with _CACHE_LOCK:
            items = [k for k in _CACHE if k[2:] == mine]
            objs = [(k[0] == pid, _CACHE.pop(k)) for k in items]
        for own, obj in objs:
            if own and obj.__class__.__name__.endswith("Store"):
                _zarr.clear_array_cache(obj)
                clear_plans(obj)
            closer = getattr(obj, "close", None)
            if own and callable(closer):  # another process's objects are only forgotten
                try:
                    closer()
                except Exception as e:  # closing is best effort
                    logger.debug("closing %r: %s", obj, e)

    def path(self, *parts: str) -> str:
        """An fsspec path below the root (see :meth:`strata.storage.layout.Layout.path`)."""
        return self.layout.path(*parts)

    def _invalidate(self, path: str) -> None:
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(path)

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot {what}")

    def _ls_names(self, path: str) -> list[str]:
        self._invalidate(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    # -- keys -------------------------------------------------------------------------------
    def backend_key(self, key: DataKey) -> str:
        """``<run_id>/<data_type>-<lineage hash>``."""
        return layout.backend_key(key)

    @staticmethod
    def parse_backend_key(backend_key: str) -> tuple[str, str, str]:
        """Split and validate a backend key into ``(run_id, data_type, lineage_hash)``."""
        return layout.parse_backend_key(backend_key)

    # -- metadata ---------------------------------------------------------------------------
    def _manifest_where(self, path: str) -> str:
        return f"{redact_url(self.url)}/{self.layout.rel(path)}"

    def _read_commit(self, backend_key: str) -> tuple[str, bytes]:
        """The path and bytes of the commit document of ``backend_key``: its ``zarr.json``,
        else (a key committed before format v3) its ``manifest.json``.
        """
        paths = (self.layout.commit(backend_key), self.layout.legacy_manifest(backend_key))
        if not self.is_local and getattr(self.fs, "async_impl", False):
            # both asked at once (one round trip, not two, for a key that is not there yet)
            got = self.fs.cat(list(paths), on_error="return")
            found = {self.fs._strip_protocol(k): v for k, v in got.items()}
            for path in paths:
                raw = found.get(self.fs._strip_protocol(path))
                if isinstance(raw, BaseException) and not isinstance(raw, FileNotFoundError):
                    raise raw  # refused credentials, a dead server: not "nothing committed"
            for path in paths:
                raw = found.get(self.fs._strip_protocol(path))
                if raw is not None and not isinstance(raw, BaseException):
                    return path, bytes(raw)
        else:
            for path in paths:
                if self.is_local and os.path.lexists(path):
                    self._checked(path)
                try:
                    return path, bytes(self.fs.cat_file(path))
                except FileNotFoundError:
                    continue
        raise DataNotAvailable(f"nothing committed at {backend_key!r} in {redact_url(self.url)}")

    def get_metadata(self, backend_key: str) -> Manifest:
        """Read and verify the manifest of ``backend_key`` (from its commit document)."""
        path, raw = self._read_commit(backend_key)
        where = self._manifest_where(path)
        # parsing (JSON limits, checksum, structure) costs more than a small read: reuse the
        # manifest parsed from exactly these bytes (an edited document is parsed afresh)
        with _MANIFESTS_LOCK:
            hit = _MANIFESTS.get(path)
        if hit is not None and hit[0] == raw:
            m = hit[1]
        else:
            m = Manifest.from_bytes(raw, where)
            with _MANIFESTS_LOCK:
                if len(_MANIFESTS) >= _MANIFESTS_MAX:
                    _MANIFESTS.clear()
                _MANIFESTS[path] = (raw, m)
        run_id, data_type, h = self.parse_backend_key(backend_key)
        if (m.key.run_id, m.key.data_type, m.key.lineage_hash) != (run_id, data_type, h):
            raise DataCorrupted(f"manifest {where} describes {m.key}, not {backend_key}")
        layout.check_attempt(m.attempt, f"manifest {where}")
        return m

    def list_backend_keys(self, run_id: str | None = None) -> list[str]:
        """Backend keys of committed (or partly written) data, optionally of one run."""
        if run_id is not None:
            runs = [validate_run_id(run_id)]
        else:
            runs = [r for r in self._ls_names(self.layout.data_dir()) if _is_name(r)]
        out = []
        for run in runs:
            for name in self._ls_names(self.layout.run_dir(run)):
                bk = f"{run}/{name}"
                try:
                    layout.parse_backend_key(bk)
                except InvalidKey:
                    logger.debug("not a strata key directory: %s", bk)
                    continue
                out.append(bk)
        return sorted(out)

    def list_run_ids(self) -> list[str]:
        """Run ids with a directory under ``data/``."""
        return [r for r in self._ls_names(self.layout.data_dir()) if _is_name(r)]

    def stored_bytes(self, backend_key: str, manifest: Manifest | None = None) -> int | None:
        """Bytes on storage of the committed attempt at ``backend_key`` (one listing)."""
        m = manifest if manifest is not None else self.get_metadata(backend_key)
        try:
            return int(self.fs.du(self.layout.attempt_dir(backend_key, m.attempt), total=True))
        except (OSError, ValueError) as e:
            logger.debug("could not measure %s: %s", backend_key, e)
            return None

    def data_location(self, backend_key: str, attempt: str) -> str | None:
        """The path (local) or URL (remote) of the Zarr group of ``attempt``."""
        return self._ancillary_location(self.layout.attempt_prefix(backend_key, attempt), "")

    # -- saving -----------------------------------------------------------------------------
    def saver(
        self,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        checked_absent: bool = False,
    ) -> ZarrSaver:
        """A saver for ``key``; raises ``DataExistsError`` at once if it is already committed
        (not checked again with ``checked_absent=True``: the caller just found it absent; the
        exclusive commit refuses to replace what another saver committed since).
        """
        self._check_writable(f"save {key}")
        if self.backend_key(key) != backend_key:
            raise InvalidKey(f"backend key {backend_key!r} does not belong to {key}")
        if not overwrite and not checked_absent and self.exists(backend_key):
            raise DataExistsError(
                f"{key} is already stored in {redact_url(self.url)}; "
                "pass overwrite=True to replace it"
            )
        return ZarrSaver(self, backend_key, key, dtype, metadata=metadata, overwrite=overwrite)

    def array_templates(
        self,
        dtype: np.dtype[Any],
        descriptions: dict[str, str] | None = None,
        units: dict[str, str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Per field, the Zarr v3 array metadata this backend writes, less shape and chunks.

        Made through zarr once per dtype, descriptions and units (~10 ms at the start of
        every save otherwise); each call returns its own copy.
        """
        codecs = [c.to_dict() for c in self.compressors]
        key = json.dumps(
            [dtype_to_json(dtype), codecs, descriptions, units], sort_keys=True, default=str
        )
        raw = _TEMPLATES.get(key)
        if raw is None:
            raw = json.dumps(array_templates(dtype, self.compressors, descriptions, units))
            if len(_TEMPLATES) >= 256:
                _TEMPLATES.clear()
            _TEMPLATES[key] = raw
        templates: dict[str, dict[str, Any]] = json.loads(raw)
        return templates

    def _checked(self, path: str) -> str:
        """``path``, after checking (on local disk) that no symbolic link leads it out."""
        return self.layout.check_local(path) if self.is_local else path

    def _remove_attempt(self, backend_key: str, attempt: str) -> None:
        d = self._checked(self.layout.attempt_dir(backend_key, attempt))
        self._invalidate(d)
        try:
            if self.fs.exists(d):
                self.fs.rm(d, recursive=True)
        except FileNotFoundError:
            pass
        self._invalidate(d)

    def _remove_key_dir_if_empty(self, backend_key: str) -> None:
        d = self.layout.key_dir(backend_key)
        self._invalidate(d)
        if not self._ls_names(d):
            try:
                self.fs.rmdir(d)
            except (FileNotFoundError, OSError):
                pass

    def _remove_legacy_manifest(self, backend_key: str) -> None:
        """Remove a ``manifest.json`` of format v1/v2 that a v3 commit replaced (best effort:
        the ``zarr.json`` is read first anyway).
        """
        try:
            self.fs.rm_file(self.layout.legacy_manifest(backend_key))
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.debug("could not remove the legacy manifest of %s: %s", backend_key, e)

    def restore(self, backend_key: str, manifest: Manifest) -> None:
        """Commit ``manifest`` (an earlier commit whose attempt still exists) again, replacing
        the current commit, whose attempt is removed.
        """
        self._check_writable(f"restore {backend_key}")
        attempt_dir = self.layout.attempt_dir(backend_key, manifest.attempt)
        if not self.fs.exists(attempt_dir):
            raise DataNotAvailable(
                f"cannot restore {manifest.key}: its attempt {manifest.attempt} is gone"
            )
        try:
            current: Manifest | None = self.get_metadata(backend_key)
        except (DataNotAvailable, DataCorrupted):
            current = None
        if not manifest.has_digests:
            raise DataCorrupted(
                f"cannot restore {manifest.key}: its manifest ({manifest.format}) has no "
                "object digests to commit again; save the data again instead"
            )
        document = manifest.to_document(consolidated(manifest))
        atomic_write(self.fs, self.layout.commit(backend_key), document)
        self._invalidate(self.layout.key_dir(backend_key))
        self._remove_legacy_manifest(backend_key)
        if current is not None and current.attempt != manifest.attempt:
            self._remove_attempt(backend_key, current.attempt)
        self._index_array(backend_key, manifest)

    def remove(self, backend_key: str) -> None:
        """Remove committed data: the manifest first, then the attempt directories."""
        self._check_writable(f"remove {backend_key}")
        d = self.layout.key_dir(backend_key)
        self._unindex_array(backend_key)  # stored-object index first (FsObjectStore)
        gone = 0
        for path in (self.layout.commit(backend_key), self.layout.legacy_manifest(backend_key)):
            try:
                self.fs.rm_file(path)
                gone += 1
            except FileNotFoundError:
                pass
        if not gone:
            raise DataNotAvailable(f"nothing committed at {backend_key!r}")
        self._invalidate(d)
        for name in self._ls_names(d):
            if layout.is_attempt(name):
                try:
                    self._remove_attempt(backend_key, name)
                except StorageError as e:  # e.g. a symbolic link out of the store
                    logger.warning("remove %s: leaving %s alone: %s", backend_key, name, e)
        self._remove_key_dir_if_empty(backend_key)

    # -- garbage collection -----------------------------------------------------------------
    def _age(self, path: str, now: _dt.datetime) -> float | None:
        """Seconds since ``path`` was last modified, or ``None`` if it is gone."""
        try:
            modified = self.fs.modified(path)
        except (FileNotFoundError, NotImplementedError, OSError):
            return None
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=_dt.UTC)
        return (now - modified).total_seconds()

    def _attempt_age(self, backend_key: str, attempt: str, now: _dt.datetime) -> float:
        """Seconds since the attempt's writer last renewed its lease (else since it started)."""
        started = layout.attempt_started(attempt)
        age = (now - started).total_seconds() if started is not None else 0.0
        lease = self._age(self.layout.lease(backend_key, attempt), now)
        return age if lease is None else min(age, lease)

    def gc(
        self,
        min_age_seconds: float = 3600.0,
        dry_run: bool = False,
        grace_seconds: float = GC_GRACE_SECONDS,
    ) -> list[str]:
        """Remove what failed, killed and overwritten saves left; returns the removed paths
        (relative to the root), or with ``dry_run`` the paths it would remove.

        - An attempt no manifest commits is removed once its lease (renewed by its writer while
          the save runs) is older than ``min_age_seconds``: a live save is never collected.
        - An attempt an overwrite superseded is removed only ``grace_seconds`` after the
          overwrite committed, so a reader that opened the old manifest can finish.
        - Temporary files of atomic writes older than ``min_age_seconds``, the ancillary
          directories of stored objects no document names, and run-document temporary files.

        Files that disappear while gc runs (another gc, an abort) are skipped; a damaged
        manifest leaves its key alone (reported, for inspection).
        """
        if not dry_run:
            self._check_writable("gc")
        removed: list[str] = []
        now = _dt.datetime.now(_dt.UTC)

        def rm(path: str) -> None:
            try:
                self._checked(path)
            except StorageError as e:
                logger.warning("gc: leaving %s alone: %s", path, e)
                return
            removed.append(self.layout.rel(path))
            if dry_run:
                return
            try:
                self._invalidate(path)
                self.fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass

        for bk in self.list_backend_keys():
            d = self.layout.key_dir(bk)
            try:
                live: Manifest | None = self.get_metadata(bk)
            except DataNotAvailable:
                live = None
            except DataCorrupted as e:
                logger.warning(
                    "gc: %s has a damaged manifest; leaving it for inspection: %s", bk, e
                )
                continue
            committed_at = _parse_time(live.writing_ended) if live is not None else None
            live_started = layout.attempt_started(live.attempt) if live is not None else None
            for name in self._ls_names(d):
                path = f"{d}/{name}"
                if name in (layout.COMMIT, layout.MANIFEST) or (
                    live is not None and name == live.attempt
                ):
                    continue
                if self.is_local and os.path.islink(path):
                    logger.warning("gc: %s is a symbolic link; not following it", path)
                    continue
                if layout.is_attempt(name):
                    if self._attempt_age(bk, name, now) < min_age_seconds:
                        continue  # a save in progress (or just ended)
                    started = layout.attempt_started(name)
                    superseded = (
                        live_started is not None and started is not None and started < live_started
                    )
                    if superseded and committed_at is not None:
                        if (now - committed_at).total_seconds() < grace_seconds:
                            continue  # readers of the overwritten manifest may still read it
                    rm(path)
                elif layout.is_temp_file(name):
                    age = self._age(path, now)
                    if age is not None and age >= min_age_seconds:
                        rm(path)
            if live is None and not dry_run:
                self._remove_key_dir_if_empty(bk)
        # run documents' temporary files
        runs = self.layout.runs_dir()
        for name in self._ls_names(runs):
            if layout.is_temp_file(name):
                age = self._age(f"{runs}/{name}", now)
                if age is not None and age >= min_age_seconds:
                    rm(f"{runs}/{name}")
        removed.extend(self.gc_objects(min_age_seconds=min_age_seconds, dry_run=dry_run))
        return removed

    # -- loading ----------------------------------------------------------------------------
    def loader_from_manifest(
        self,
        backend_key: str,
        manifest: Manifest,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over ``backend_key``, from its manifest (already read).

        ``fields`` selects arrays to read; ``time_range`` ``(t0, t1)`` selects records with
        ``t0 <= time < t1``, reading only overlapping partitions (and the ``time`` values of
        the partitions that straddle its ends). The graph has one task per stored chunk.
        """
        return build_loader(self, backend_key, manifest, fields=fields, time_range=time_range)

    # -- verification -----------------------------------------------------------------------
    def verify(self, backend_key: str) -> Any:
        """Check every object the manifest of ``backend_key`` names: presence, size and crc32c
        (see :mod:`strata.storage.backends.zarr.verify`); returns its
        :class:`~strata.storage.backends.zarr.verify.KeyReport`.
        """
        from .verify import verify_key

        return verify_key(self, backend_key)


def _is_name(name: str) -> bool:
    try:
        validate_run_id(name)
    except InvalidKey:
        return False
    return True
