"""The contract of a transport: how strata reaches one family of fsspec protocols.

A transport opens filesystems and Zarr stores for its URLs and provides the two write
primitives the commit protocol rests on. :mod:`strata.storage.fs` finds it by protocol; each
lives in its own module (:mod:`.local`, :mod:`.memory`, :mod:`.s3`, :mod:`.ssh`, and the
:mod:`.generic` fallback for every other fsspec protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..layout import temp_name

if TYPE_CHECKING:
    from zarr.abc.store import Store

__all__ = ["Transport", "protocols_of", "sync_fs", "temp_name"]


def protocols_of(fs: Any) -> tuple[str, ...]:
    """The protocol names of a filesystem (fsspec gives a string or a tuple)."""
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def sync_fs(fs: Any) -> Any:
    """The synchronous filesystem behind fsspec's ``AsyncFileSystemWrapper`` (or ``fs``)."""
    return getattr(fs, "sync_fs", fs)


class Transport:
    """How strata reaches the URLs of one family of fsspec protocols.

    Subclasses implement :meth:`open` and, where the storage has one, the exclusive-create
    primitive (setting ``supports_exclusive_write``).
    """

    name: ClassVar[str] = "fsspec"
    """A short name for messages."""
    supports_exclusive_write: ClassVar[bool] = False
    """Whether :meth:`exclusive_write` is implemented (the commit primitive)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def require(self, protocol: str) -> None:
        """Raise ``ImportError`` (with its install hint) if ``protocol`` cannot be used here
        because its package is missing. Imports the package; opens nothing.
        """

    def open(self, url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
        """Return ``(filesystem, root path)`` for ``url``; asynchronous for Zarr's store."""
        raise NotImplementedError

    def zarr_store(self, url: str, options: dict[str, Any]) -> Store:
        """A Zarr v3 store rooted at ``url`` (an ``FsspecStore`` over :meth:`open`)."""
        from zarr.storage import FsspecStore

        fs, root = self.open(url, options, True)
        return FsspecStore(fs, path=root)

    def atomic_write(self, fs: Any, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` so that readers see the old or the new file, never a
        part. This default suits object stores, which write whole objects anyway.
        """
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)

    def exclusive_write(self, fs: Any, path: str, data: bytes) -> None:
        """Create ``path`` with ``data`` only if it does not exist, atomically; else raise
        ``FileExistsError``. Of two writers, exactly one succeeds.
        """
        raise NotImplementedError(f"the {self.name} transport has no exclusive-create primitive")
