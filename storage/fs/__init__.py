"""fsspec plumbing: URLs to filesystems and Zarr stores, the write primitives, redaction.

Everything that depends on a URL scheme lives in this package, so that backends and frontends
are written once for local disk, memory, S3 and SSH alike. Each family of protocols has a
:class:`~strata.storage.fs.transport.Transport` in its own module, found by protocol in
:data:`TRANSPORTS`:

- ``file://`` URLs and plain paths: :mod:`~strata.storage.fs.local` (commits with a temporary
  file, fsync and a hard link);
- ``memory://``: :mod:`~strata.storage.fs.memory` (checks and writes under a lock);
- ``s3://``, ``s3a://``: :mod:`~strata.storage.fs.s3` (``PutObject`` with
  ``If-None-Match: *``);
- ``ssh://``, ``sftp://``: :mod:`~strata.storage.fs.ssh` (a temporary file and SFTP's
  ``rename``, which never overwrites);
- any other fsspec protocol: :mod:`~strata.storage.fs.generic` (reads and plain writes, no
  commit primitive).

Entries are import paths, imported on first use: importing :mod:`strata.storage` imports
neither s3fs nor sshfs nor asyncssh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .generic import TRANSPORT as _GENERIC
from .lazy_registry import LazyRegistry
from .redaction import redact, redact_url
from .transport import Transport, protocols_of, sync_fs
from .urls import split_url

if TYPE_CHECKING:
    from zarr.abc.store import Store

__all__ = [
    "TRANSPORTS",
    "Transport",
    "atomic_write",
    "exclusive_write",
    "get_transport",
    "is_known_protocol",
    "open_fs",
    "redact",
    "redact_url",
    "register_transport",
    "split_url",
    "zarr_store",
]

_transports: LazyRegistry[Transport] = LazyRegistry(
    "transport",
    {
        "file": "strata.storage.fs.local:TRANSPORT",
        "local": "strata.storage.fs.local:TRANSPORT",
        "memory": "strata.storage.fs.memory:TRANSPORT",
        "s3": "strata.storage.fs.s3:TRANSPORT",
        "s3a": "strata.storage.fs.s3:TRANSPORT",
        "ssh": "strata.storage.fs.ssh:TRANSPORT",
        "sftp": "strata.storage.fs.ssh:TRANSPORT",
    },
)

TRANSPORTS: Mapping[str, Transport | str] = _transports.view
"""Protocol -> transport (or its import path), read-only; see :func:`register_transport`."""


def register_transport(protocol: str, transport: Transport | str, clobber: bool = False) -> None:
    """Make ``transport`` (or ``"package.module:attribute"``) the one for ``protocol``.

    Raises ``ValueError`` if ``protocol`` has one already, unless ``clobber`` is true.
    """
    _transports.register(protocol, transport, clobber=clobber)


def get_transport(protocol: str) -> Transport:
    """The transport of ``protocol``: its own if registered, else the plain fsspec one."""
    return _transports.get(protocol) or _GENERIC


def is_known_protocol(protocol: str) -> bool:
    """Whether ``protocol`` has a transport or an fsspec implementation (installed or not)."""
    if protocol in TRANSPORTS:
        return True
    from fsspec.registry import known_implementations, registry

    return protocol in known_implementations or protocol in registry


def _transport_of(fs: Any) -> Transport:
    for protocol in protocols_of(fs):
        if protocol in TRANSPORTS:
            return get_transport(protocol)
    # a subclass of fsspec's local or memory filesystem under a protocol of its own keeps the
    # primitives of its base
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    base = sync_fs(fs)
    if isinstance(base, LocalFileSystem):
        return get_transport("file")
    if isinstance(base, MemoryFileSystem):
        return get_transport("memory")
    return _GENERIC


def _can_commit(protocol: str) -> bool:
    try:
        return get_transport(protocol).supports_exclusive_write
    except ImportError:  # a user's transport that does not import: not one to name
        return False


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(filesystem, root path)`` for ``url`` (synchronous fsspec API)."""
    protocol, _ = split_url(url)
    return get_transport(protocol).open(url, dict(storage_options or {}), False)


def zarr_store(url: str, storage_options: Mapping[str, Any] | None = None) -> Store:
    """A Zarr v3 store rooted at ``url``: ``LocalStore`` on disk, ``FsspecStore`` elsewhere."""
    protocol, _ = split_url(url)
    return get_transport(protocol).zarr_store(url, dict(storage_options or {}))


def atomic_write(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    Local disk and SFTP: a temporary file beside it, then renamed over it. Object stores
    write whole objects anyway.
    """
    _transport_of(fs).atomic_write(fs, path, data)


def exclusive_write(fs: Any, path: str, data: bytes) -> None:
    """Create ``path`` with ``data`` only if it does not exist, atomically; else raise
    ``FileExistsError``.

    This is the commit primitive: of two writers, exactly one succeeds (see the list above).
    A filesystem without one raises ``NotImplementedError`` naming the protocols that have
    one.
    """
    transport = _transport_of(fs)
    if not transport.supports_exclusive_write:
        able = sorted(p for p in TRANSPORTS if _can_commit(p))
        raise NotImplementedError(
            f"no exclusive-create primitive for the {protocols_of(fs)[0]!r} filesystem, so "
            f"strata cannot commit to it; known: {', '.join(able)}"
        )
    transport.exclusive_write(fs, path, data)
