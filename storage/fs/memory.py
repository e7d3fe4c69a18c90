"""The ``memory://`` transport: fsspec's process-wide in-memory filesystem (tests, doctests).

Exclusive create checks and writes under one lock; fsspec's memory filesystem is shared by
every instance in the process, so one lock per process is the right scope.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from .generic import FsspecTransport

__all__ = ["TRANSPORT", "MemoryTransport"]

_lock = threading.Lock()


class MemoryTransport(FsspecTransport):
    """fsspec's memory filesystem, with exclusive create under a lock."""

    name: ClassVar[str] = "memory"
    supports_exclusive_write: ClassVar[bool] = True

    def require(self, protocol: str) -> None:
        """Nothing to import: fsspec ships the memory filesystem."""

    def exclusive_write(self, fs: Any, path: str, data: bytes) -> None:
        """Create ``path`` unless it exists, checking and writing under the process lock."""
        with _lock:
            if fs.exists(path):
                raise FileExistsError(path)
            fs.pipe_file(path, data)


TRANSPORT = MemoryTransport()
