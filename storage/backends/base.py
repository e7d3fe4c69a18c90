"""The StorageBackend role: loads stored payloads lazily and makes Savers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..codecs import CompressorLike
from ..errors import DataNotAvailable, StorageError
from ..keys import DataKey
from ..lazy import LazyData
from ..manifest import Manifest
from ..objects.store import ObjectStore
from ..saver import Saver

if TYPE_CHECKING:
    from .zarr.verify import KeyReport

__all__ = ["StorageBackend"]


class StorageBackend(ObjectStore, ABC):
    """Where payloads live. A frontend (catalog) resolves keys to ``backend_key`` strings;
    the backend reads and writes what they name.

    Backends pickle by their constructor arguments and compare by value, so Dask workers can
    receive them and read or write storage directly.

    Subclasses implement :meth:`backend_key`, :meth:`get_metadata`, :meth:`loader_from_manifest`,
    :meth:`saver` and :meth:`remove`; a backend that can list what it stores sets
    ``supports_listing`` and implements :meth:`list_backend_keys` (and so on for the other
    capabilities below). Callers ask the flags, never the class.

    Every backend is also an object store (the openff-evaluator contract, see
    :class:`~strata.storage.objects.store.ObjectStore`): public ``store_object``,
    ``retrieve_object``, ``has_object``, ``query`` and ``remove_object`` built on the
    primitives ``_store_object``, ``_retrieve_object`` and ``_object_exists``, called under a
    reentrant lock.
    """

    readonly: bool = False
    """Refuses savers, removals and gc."""
    supports_listing: bool = False
    """:meth:`list_backend_keys` works (catalog scans, gc, ``strata ls``)."""
    supports_exclusive_create: bool = False
    """Two savers of one key cannot both commit (an atomic create-if-absent primitive)."""
    supports_gc: bool = False
    """:meth:`gc` removes what failed saves left."""
    supports_recompression: bool = False
    """:meth:`with_codecs` gives a variant that writes with other codecs or chunk sizes."""
    supports_verify: bool = False
    """:meth:`verify` checks committed data against its manifest (``strata verify``)."""

    @abstractmethod
    def backend_key(self, key: DataKey) -> str:
        """The backend key under which ``key`` is (or would be) stored."""

    @abstractmethod
    def get_metadata(self, backend_key: str) -> Manifest:
        """The committed manifest; ``DataNotAvailable`` if nothing is committed there."""

    @abstractmethod
    def loader_from_manifest(
        self,
        backend_key: str,
        manifest: Manifest,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over the data ``manifest`` (already read) commits."""

    def loader(
        self,
        backend_key: str,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over the stored data, after reading only the manifest.

        ``fields`` selects arrays to read; ``time_range`` ``(t0, t1)`` selects records with
        ``t0 <= time < t1``, reading only overlapping partitions.
        """
        m = self.get_metadata(backend_key)
        return self.loader_from_manifest(backend_key, m, fields=fields, time_range=time_range)

    @abstractmethod
    def saver(
        self,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        checked_absent: bool = False,
    ) -> Saver:
        """A :class:`~strata.storage.saver.Saver` that commits ``key`` at ``backend_key``.

        ``checked_absent=True``: the caller has just found ``key`` not stored here, so the
        early ``DataExistsError`` check (a round trip on object stores) is skipped; the commit
        still never replaces data another saver committed meanwhile.
        """

    @abstractmethod
    def remove(self, backend_key: str) -> None:
        """Remove committed data (manifest first, so it stops being visible at once)."""

    def exists(self, backend_key: str) -> bool:
        """Whether data is committed at ``backend_key``."""
        try:
            self.get_metadata(backend_key)
        except DataNotAvailable:
            return False
        return True

    # -- capabilities -----------------------------------------------------------------------
    def _unsupported(self, what: str, flag: str) -> StorageError:
        return StorageError(f"{self!r} cannot {what} ({type(self).__name__}.{flag} is False)")

    def list_backend_keys(self, run_id: str | None = None) -> list[str]:
        """Backend keys with stored data (committed or not), optionally of one run."""
        raise self._unsupported("list its keys", "supports_listing")

    def list_run_ids(self) -> list[str]:
        """Run ids with stored data."""
        return sorted({bk.split("/", 1)[0] for bk in self.list_backend_keys()})

    def stored_bytes(self, backend_key: str, manifest: Manifest | None = None) -> int | None:
        """Bytes on storage of the committed data at ``backend_key``, or ``None`` if this
        backend cannot tell. ``manifest``, if given, saves reading it again.
        """
        return None

    def data_location(self, backend_key: str, attempt: str) -> str | None:
        """A path or URL of the payload of the committed ``attempt`` of ``backend_key`` (its
        ancillary directory as a stored object), or ``None`` if it has none.
        """
        return None

    def gc(
        self,
        min_age_seconds: float = 3600.0,
        dry_run: bool = False,
        grace_seconds: float = 24 * 3600.0,
    ) -> list[str]:
        """Remove what failed or killed saves left (attempts whose lease is older than
        ``min_age_seconds``) and what overwrites superseded (``grace_seconds`` after the
        overwrite); returns what was (or would be) removed.
        """
        raise self._unsupported("gc", "supports_gc")

    def restore(self, backend_key: str, manifest: Manifest) -> None:
        """Commit ``manifest`` (an earlier commit whose attempt still exists) again, replacing
        the current commit, whose attempt is removed.
        """
        raise self._unsupported("restore an earlier commit", "supports_gc")

    def with_codecs(
        self, compressor: CompressorLike = None, chunk_target_mb: float | None = None
    ) -> StorageBackend:
        """A copy of this backend that writes with ``compressor`` / ``chunk_target_mb``."""
        raise self._unsupported("recompress or rechunk", "supports_recompression")

    def verify(self, backend_key: str) -> KeyReport:
        """Check the data committed at ``backend_key`` against its manifest: every object it
        names exists with the recorded size and digest. Returns a report (a damaged manifest
        is a failed report); ``DataNotAvailable`` if nothing is committed there.
        """
        raise self._unsupported("verify", "supports_verify")

    def close(self) -> None:
        """Release this process's connections and caches of this backend (reopened on use)."""
