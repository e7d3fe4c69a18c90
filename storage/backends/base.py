"""The StorageBackend role: loads stored payloads lazily and makes Savers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ..keys import DataKey
from ..lazy import LazyData
from ..manifest import Manifest
from ..objects.store import ObjectStore
from ..saver import Saver

__all__ = ["StorageBackend"]


class StorageBackend(ObjectStore, ABC):
    """Where payloads live. A frontend (catalog) resolves keys to ``backend_key`` strings;
    the backend reads and writes what they name.

    Backends pickle by their constructor arguments and compare by value, so Dask workers can
    receive them and read or write storage directly.

    Every backend is also an object store (the openff-evaluator contract, see
    :class:`~strata.storage.objects.store.ObjectStore`): public ``store_object``,
    ``retrieve_object``, ``has_object``, ``query`` and ``remove_object`` built on the
    primitives ``_store_object``, ``_retrieve_object`` and ``_object_exists``, called under a
    reentrant lock.
    """

    readonly: bool = False

    @abstractmethod
    def backend_key(self, key: DataKey) -> str:
        """The backend key under which ``key`` is (or would be) stored."""

    @abstractmethod
    def get_metadata(self, backend_key: str) -> Manifest:
        """The committed manifest; ``DataNotAvailable`` if nothing is committed there."""

    @abstractmethod
    def loader(
        self,
        backend_key: str,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over the stored data, after reading only the manifest."""

    @abstractmethod
    def saver(
        self,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Saver:
        """A :class:`~strata.storage.saver.Saver` that commits ``key`` at ``backend_key``."""

    @abstractmethod
    def remove(self, backend_key: str) -> None:
        """Remove committed data (manifest first, so it stops being visible at once)."""

    def exists(self, backend_key: str) -> bool:
        """Whether data is committed at ``backend_key``."""
        from ..errors import DataNotAvailable

        try:
            self.get_metadata(backend_key)
        except DataNotAvailable:
            return False
        return True
