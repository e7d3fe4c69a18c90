"""fsspec plumbing: URLs to filesystems and Zarr stores, secret redaction, atomic writes.

Everything that touches a URL scheme lives here, so that backends and frontends are written
once for local disk, memory, S3 and SSH alike.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import Store

__all__ = [
    "atomic_write",
    "exclusive_write",
    "open_fs",
    "redact",
    "redact_url",
    "split_url",
    "zarr_store",
]

logger = logging.getLogger(__name__)

LOCAL_PROTOCOLS = ("file", "local")
_SECRET_WORDS = ("secret", "password", "passphrase", "token", "key", "credential", "auth")


def split_url(url: str) -> tuple[str, str]:
    """Split ``url`` into ``(protocol, path)``; a plain path is ``("file", abspath)``."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"storage URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        return "file", os.path.abspath(os.path.expanduser(url))
    protocol, rest = url.split("://", 1)
    protocol = protocol.lower()
    if protocol in LOCAL_PROTOCOLS:
        return "file", os.path.abspath(os.path.expanduser(rest))
    return protocol, rest


def _is_secret(name: str) -> bool:
    n = name.lower()
    return any(w in n for w in _SECRET_WORDS) and n not in ("key_file_name",)


def redact(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options with every secret-looking value replaced by ``'***'``."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        if isinstance(v, Mapping):
            out[k] = redact(v)
        elif _is_secret(str(k)):
            out[k] = "***"
        else:
            out[k] = v
    return out


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` password removed."""
    if "://" not in url:
        return url
    protocol, rest = url.split("://", 1)
    netloc, sep, path = rest.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    return f"{protocol}://{netloc}{sep}{path}"


# Per-protocol hooks. A remote scheme (s3, ssh) registers how to build its filesystems and
# how to create a file exclusively; schemes without a hook get fsspec's defaults.
FsFactory = Callable[[str, dict[str, Any], bool], tuple[Any, str]]
ExclusiveWriter = Callable[[Any, str, bytes], None]
FS_FACTORIES: dict[str, FsFactory] = {}
EXCLUSIVE_WRITERS: dict[str, ExclusiveWriter] = {}
ATOMIC_WRITERS: dict[str, ExclusiveWriter] = {}


def _register_remote() -> None:
    # storage.remote fills the hooks for s3:// and ssh:// (it imports s3fs/sshfs only when used)
    from .remote import ensure_registered

    ensure_registered()


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(filesystem, root path)`` for ``url`` (synchronous fsspec API)."""
    protocol, path = split_url(url)
    opts = dict(storage_options or {})
    _register_remote()
    if protocol in FS_FACTORIES:
        return FS_FACTORIES[protocol](url, opts, False)
    if protocol == "file":
        return LocalFileSystem(**opts), path
    fs, root = fsspec.core.url_to_fs(url, **opts)
    return fs, root.rstrip("/")


def zarr_store(url: str, storage_options: Mapping[str, Any] | None = None) -> Store:
    """A Zarr v3 store rooted at ``url``: ``LocalStore`` on disk, ``FsspecStore`` elsewhere."""
    from zarr.storage import FsspecStore, LocalStore

    protocol, path = split_url(url)
    opts = dict(storage_options or {})
    if protocol == "file":
        return LocalStore(path)
    _register_remote()
    if protocol in FS_FACTORIES:
        afs, root = FS_FACTORIES[protocol](url, opts, True)
        return FsspecStore(afs, path=root)
    fs, root = fsspec.core.url_to_fs(url, **opts)
    if not fs.async_impl:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    elif not fs.asynchronous:
        fs, root = fsspec.core.url_to_fs(url, asynchronous=True, **opts)
    return FsspecStore(fs, path=root.rstrip("/") or "/")


def _local_temp_copy(path: str, data: bytes) -> str:
    """Write ``data`` durably to a new temporary file beside ``path``; return its name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def atomic_write(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    Local disk: a temporary file beside it, fsynced, then renamed over it. Object stores write
    whole objects anyway.
    """
    if isinstance(fs, LocalFileSystem):
        tmp = _local_temp_copy(path, data)
        os.replace(tmp, path)
        return
    _register_remote()
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ATOMIC_WRITERS:  # e.g. SFTP: a temporary file, then an atomic rename
        ATOMIC_WRITERS[protocol](fs, path, data)
    else:
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)


_memory_lock = threading.Lock()


def exclusive_write(fs: Any, path: str, data: bytes) -> None:
    """Create ``path`` with ``data`` only if it does not exist, atomically; else raise
    ``FileExistsError``.

    This is the commit primitive: of two writers, exactly one succeeds. Local disk writes a
    temporary file and hard-links it into place (``link`` fails if the target exists, unlike
    ``rename``); memory checks under a lock; remote schemes register their own primitive
    (S3 ``If-None-Match: *``, SFTP rename, which never overwrites).
    """
    _register_remote()
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in EXCLUSIVE_WRITERS:
        EXCLUSIVE_WRITERS[protocol](fs, path, data)
        return
    if isinstance(fs, LocalFileSystem):
        tmp = _local_temp_copy(path, data)
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return
    from fsspec.implementations.memory import MemoryFileSystem

    if isinstance(fs, MemoryFileSystem):
        with _memory_lock:
            if fs.exists(path):
                raise FileExistsError(path)
            fs.pipe_file(path, data)
        return
    raise NotImplementedError(
        f"no exclusive-create primitive for the {protocol!r} filesystem; "
        f"known: file, memory, {', '.join(sorted(EXCLUSIVE_WRITERS)) or '(none registered)'}"
    )
