"""DirectoryFrontend: the catalog is the storage layout itself; no database needed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from ..backends.zarr import ZarrBackend
from ..backends.zarr.backend import DEFAULT_CHUNK_TARGET_MB, DEFAULT_SHARD_TARGET_MB
from ..codecs import CompressorLike
from ..errors import DataCorrupted, DataNotAvailable, InvalidKey
from ..fs import atomic_write, redact_url, split_url
from ..keys import DataKey, lineage_matches
from .base import Entry, Location, StorageFrontend

__all__ = ["DirectoryFrontend", "storage_kind_of_url"]

logger = logging.getLogger(__name__)

_READ_BATCH = 512  # run documents read per batch (concurrently on object stores)


def storage_kind_of_url(url: str) -> str:
    """The storage kind of a directory catalog at ``url``: ``memory`` for ``memory://``,
    ``local`` for paths and ``file://`` URLs (also a cluster file system mounted here),
    ``remote`` for every other scheme (``s3://``, ``ssh://``, ``gcs://``, ...).

    >>> [storage_kind_of_url(u) for u in ("memory://x", "/data", "s3://b")]
    ['memory', 'local', 'remote']
    """
    protocol = split_url(url)[0]
    if protocol == "memory":
        return "memory"
    return "local" if protocol == "file" else "remote"


class DirectoryFrontend(StorageFrontend):
    """A catalog that is the directory layout of one :class:`ZarrBackend` at ``url``.

    An exact :meth:`find` reads one manifest and lists nothing; the location it returns holds
    that manifest, so a load reads nothing more before the chunks. A fuzzy find lists the data
    directory of that run and compares the stored lineages of that data type.

    Parameters
    ----------
    url
        Any URL :class:`~strata.storage.backends.zarr.ZarrBackend` accepts.
    storage_options
        fsspec options (credentials are never shown).
    readonly, take_only, exclude
        See :class:`~strata.storage.frontends.base.StorageFrontend`.
    compressor, chunk_target_mb, shard_target_mb
        Passed to the backend for new saves.
    storage_kind
        How far the data is; default from the URL (:func:`storage_kind_of_url`).

    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        readonly: bool = False,
        take_only: Iterable[str] = (),
        exclude: Iterable[str] = (),
        compressor: CompressorLike = None,
        chunk_target_mb: float = DEFAULT_CHUNK_TARGET_MB,
        storage_kind: str | None = None,
        shard_target_mb: float = DEFAULT_SHARD_TARGET_MB,
    ) -> None:
        super().__init__(
            readonly=readonly,
            take_only=take_only,
            exclude=exclude,
            storage_kind=storage_kind or storage_kind_of_url(url),
        )
        self.backend = ZarrBackend(
            url,
            storage_options=storage_options,
            compressor=compressor,
            chunk_target_mb=chunk_target_mb,
            readonly=readonly,
            shard_target_mb=shard_target_mb,
        )
        self.backends = {"zarr": self.backend}
        self._kwargs = {
            "url": url,
            "storage_options": storage_options,
            "readonly": readonly,
            "take_only": self.take_only,
            "exclude": self.exclude,
            "compressor": compressor,
            "chunk_target_mb": chunk_target_mb,
            "shard_target_mb": shard_target_mb,
        }

    @property
    def url(self) -> str:
        """The root URL."""
        return self.backend.url

    def _default_storage_kind(self) -> str:
        return storage_kind_of_url(self._kwargs["url"])

    def __repr__(self) -> str:
        ro = ", readonly=True" if self.readonly else ""
        return f"DirectoryFrontend({redact_url(self.backend.url)!r}{ro})"

    # -- primitives -------------------------------------------------------------------------
    def _find(
        self, key: DataKey, fuzzy_for: tuple[str, ...], fuzzy_for_options: tuple[str, ...]
    ) -> tuple[Location, DataKey]:
        bk = self.backend.backend_key(key)
        try:
            m = self.backend.get_metadata(bk)
            if m.key == key:
                return Location("zarr", bk, m), key
        except DataNotAvailable:
            pass
        if not fuzzy_for and not fuzzy_for_options:
            raise DataNotAvailable(f"{key} is not stored in {self!r}")
        for other in self.backend.list_backend_keys(key.run_id):
            if not other.split("/", 1)[1].startswith(f"{key.data_type}-") or other == bk:
                continue
            try:
                m = self.backend.get_metadata(other)
            except DataNotAvailable:
                continue
            except (DataCorrupted, InvalidKey) as e:
                logger.warning("skipping %s in fuzzy search: %s", other, e)
                continue
            if m.key.data_type == key.data_type and lineage_matches(
                m.key.lineage, key.lineage, fuzzy_for, fuzzy_for_options
            ):
                return Location("zarr", other, m), m.key
        raise DataNotAvailable(
            f"{key} is not stored in {self!r}, not even fuzzily "
            f"(fuzzy_for={list(fuzzy_for)}, fuzzy_for_options={list(fuzzy_for_options)})"
        )

    def _list(self, run_id: str | None) -> list[Entry]:
        out = []
        for bk in self.backend.list_backend_keys(run_id):
            try:
                m = self.backend.get_metadata(bk)
            except (DataNotAvailable, InvalidKey):
                continue  # an uncommitted attempt, or not ours
            except DataCorrupted as e:
                logger.warning("listing: %s", e)
                self.skipped.append(str(e))
                continue
            out.append(Entry.of(m, Location("zarr", bk, m)))
        return out

    def _backend_for_save(self, key: DataKey) -> str:
        return "zarr"

    def _run_path(self, run_id: str) -> str:
        return self.backend.layout.run_document(run_id)

    def _read_run_metadata(self, run_id: str) -> dict[str, Any]:
        path = self._run_path(run_id)
        try:
            raw = self.backend.fs.cat_file(path)
        except FileNotFoundError:
            raise DataNotAvailable(f"no run metadata for run {run_id!r} in {self!r}") from None
        return self._parse_run_document(run_id, raw)

    def _write_run_metadata(self, run_id: str, doc: dict[str, Any]) -> None:
        raw = json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode()
        path = self._run_path(run_id)
        atomic_write(self.backend.fs, path, raw)
        self.backend._invalidate(path.rsplit("/", 1)[0])

    def _list_runs(self) -> list[str]:
        runs = self.run_ids_with_documents()
        runs.update(self.backend.list_run_ids())
        return sorted(runs)

    def run_ids_with_documents(self) -> set[str]:
        """Run ids with a document in ``runs/`` (one listing)."""
        lay = self.backend.layout
        runs = {lay.run_id_of_document(n) for n in self.backend._ls_names(lay.runs_dir())}
        return {r for r in runs if r is not None}

    def _iter_run_documents(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Two listings, then the documents in batches (concurrent requests on object
        stores).
        """
        documented = sorted(self.run_ids_with_documents())
        with_data = set(self.backend.list_run_ids())
        docs: dict[str, dict[str, Any] | None] = dict.fromkeys(with_data - set(documented))
        fs = self.backend.fs
        for i in range(0, len(documented), _READ_BATCH):
            batch = {self._run_path(r): r for r in documented[i : i + _READ_BATCH]}
            raws = fs.cat(list(batch), on_error="return")
            for path, run_id in batch.items():
                raw = raws.get(path)
                if raw is None:  # a filesystem that renames the paths it returns
                    try:
                        raw = fs.cat_file(path)
                    except Exception as e:  # handled as cat's errors are
                        raw = e
                if isinstance(raw, FileNotFoundError):  # removed since the listing
                    if run_id in with_data:
                        docs[run_id] = None
                    continue
                if isinstance(raw, BaseException):  # the transport's error, not the data's
                    raise raw
                try:
                    docs[run_id] = self._parse_run_document(run_id, raw)
                except DataCorrupted as e:
                    logger.warning("run query: %s", e)
                    self.skipped.append(str(e))
        for run_id in sorted(docs):
            yield run_id, docs[run_id]
