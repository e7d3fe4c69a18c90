"""The local transport: ``file://`` URLs and plain paths.

Zarr gets its own ``LocalStore``. Both write primitives first write a temporary file beside
the target (``<name>.<32 hex>.tmp``, see :func:`strata.storage.layout.temp_name`) and fsync
it; :meth:`LocalTransport.atomic_write` then renames it over the target, while
:meth:`LocalTransport.exclusive_write` hard-links it into place, since ``link`` fails if the
target exists where ``rename`` would replace it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

from fsspec.implementations.local import LocalFileSystem

from .transport import Transport, temp_name
from .urls import split_url

if TYPE_CHECKING:
    from zarr.abc.store import Store

__all__ = ["TRANSPORT", "LocalTransport"]


def _durable_temp_copy(path: str, data: bytes) -> str:
    """Write ``data`` durably to a new temporary file beside ``path``; return its name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


class LocalTransport(Transport):
    """Local disk through fsspec's ``LocalFileSystem`` and Zarr's ``LocalStore``."""

    name: ClassVar[str] = "file"
    supports_exclusive_write: ClassVar[bool] = True

    def open(self, url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
        """A ``LocalFileSystem`` and the absolute path of ``url``."""
        return LocalFileSystem(**options), split_url(url)[1]

    def zarr_store(self, url: str, options: dict[str, Any]) -> Store:
        """Zarr's ``LocalStore`` at the path of ``url``."""
        from zarr.storage import LocalStore

        return LocalStore(split_url(url)[1])

    def atomic_write(self, fs: Any, path: str, data: bytes) -> None:
        """A temporary file beside ``path``, fsynced, then renamed over it."""
        os.replace(_durable_temp_copy(path, data), path)

    def exclusive_write(self, fs: Any, path: str, data: bytes) -> None:
        """A temporary file beside ``path``, fsynced, then hard-linked into place."""
        tmp = _durable_temp_copy(path, data)
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)


TRANSPORT = LocalTransport()
