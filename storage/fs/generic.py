"""The fallback transport: any fsspec protocol strata has no transport of its own for.

Filesystems come from fsspec's ``url_to_fs``. Zarr needs an asynchronous filesystem: a
synchronous implementation is wrapped in fsspec's ``AsyncFileSystemWrapper``, an asynchronous
one is opened with ``asynchronous=True``. There is no exclusive-create primitive, so such a URL
can be read and written but not committed to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import fsspec

from .transport import Transport

if TYPE_CHECKING:
    from zarr.abc.store import Store

__all__ = ["TRANSPORT", "FsspecTransport"]


class FsspecTransport(Transport):
    """Plain fsspec: ``url_to_fs`` for filesystems, wrapped for Zarr when not asynchronous."""

    name: ClassVar[str] = "fsspec"

    def require(self, protocol: str) -> None:
        """Import the fsspec implementation of ``protocol`` (``ImportError`` if missing)."""
        fsspec.get_filesystem_class(protocol)

    def open(self, url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
        """``fsspec.core.url_to_fs(url, **options)``, asynchronous for Zarr if asked."""
        fs, root = fsspec.core.url_to_fs(url, **options)
        if asynchronous:
            if not fs.async_impl:
                from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

                fs = AsyncFileSystemWrapper(fs, asynchronous=True)
            elif not fs.asynchronous:
                fs, root = fsspec.core.url_to_fs(url, asynchronous=True, **options)
        return fs, root.rstrip("/")

    def zarr_store(self, url: str, options: dict[str, Any]) -> Store:
        """An ``FsspecStore`` at ``url`` (at ``/`` for the root of a filesystem)."""
        from zarr.storage import FsspecStore

        fs, root = self.open(url, options, True)
        return FsspecStore(fs, path=root or "/")


TRANSPORT = FsspecTransport()
