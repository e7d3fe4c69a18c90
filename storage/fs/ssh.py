"""The ``ssh://`` transport (sshfs): a file system reached over SFTP.

``ssh://[user[:password]@]host[:port]/path`` (also ``sftp://``; ``ssh://host/~/path`` is
relative to the login directory) opens :class:`StrataSSHFileSystem`, sshfs with strata's error
translation, ranged reads and reconnection. For Zarr it is wrapped in fsspec's
``AsyncFileSystemWrapper``: sshfs cannot be created with ``asynchronous=True`` outside a
running event loop ("Loop is not running").

Both write primitives write a temporary file beside the target first. The commit primitive
then renames it with SFTP's plain ``rename``, which never overwrites (OpenSSH links the new
name, failing if it exists); atomic replacement renames it with ``posix-rename``, so a reader
sees the old or the new file, never a part.

Credentials come from the usual places unless ``storage_options`` give them: the user's
``~/.ssh/config`` (host aliases, ``User``, ``Port``, ``IdentityFile``), keys in ``~/.ssh`` and
the ssh-agent. Host keys are checked only when ``known_hosts`` is given (as sshfs does).
strata's defaults, each overridable: ``connect_timeout=10`` and keep-alives every 15 s (a dead
server is noticed in under a minute); a connection the server dropped is reopened on the next
operation.

Failures are translated into :mod:`strata.storage.errors` (``AuthenticationFailed``,
``AccessDenied``, ``StorageUnreachable``, ``RemoteStorageError``), each naming the URL without
secrets. sshfs and asyncssh are imported on first use (the ``ssh`` extra).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from ..errors import (
    AccessDenied,
    AuthenticationFailed,
    MissingDependency,
    RemoteStorageError,
    StorageError,
    StorageUnreachable,
)
from .redaction import redact_url
from .transport import Transport, sync_fs, temp_name

# StrataSSHFileSystem is a module attribute too, built on first use (see __getattr__)
__all__ = ["SSH_DEFAULTS", "TRANSPORT", "SSHTransport", "parse_ssh_url"]

logger = logging.getLogger(__name__)

SSH_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalive_interval": 15,
    "keepalive_count_max": 3,
}


def _ssh_where(fs: Any, path: str = "") -> str:
    """``ssh://user@host:port/path`` of an SSH filesystem (never a password)."""
    opts = getattr(fs, "storage_options", {}) or {}
    host = fs.storage_args[0] if getattr(fs, "storage_args", None) else "?"
    user = opts.get("username")
    port = opts.get("port")
    netloc = f"{user}@{host}" if user else str(host)
    if port:
        netloc += f":{port}"
    if path and not path.startswith("/"):
        path = "/~/" + path
    return f"ssh://{netloc}{path}"


def _ssh_error(exc: BaseException, where: str, connecting: bool = False) -> BaseException | None:
    """Translate an SSH/SFTP failure into strata's errors; ``None`` leaves it as it is."""
    import asyncssh
    from fsspec.exceptions import FSTimeoutError

    if isinstance(exc, StorageError | FileNotFoundError | FileExistsError):
        return None
    cause = exc.__cause__ if isinstance(exc, PermissionError) and exc.__cause__ else exc
    reason = redact_url(str(getattr(cause, "reason", "") or cause) or type(cause).__name__)
    if isinstance(cause, asyncssh.PermissionDenied):  # the server refused to authenticate us
        return AuthenticationFailed(
            f"SSH authentication to {where} was refused: {reason}; check the user name, "
            "client_keys / IdentityFile, the ssh-agent and the key's passphrase"
        )
    if isinstance(cause, asyncssh.HostKeyNotVerifiable):
        return AuthenticationFailed(
            f"the SSH host key of {where} is not trusted by the given known_hosts: {reason}"
        )
    if isinstance(cause, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        return AuthenticationFailed(f"cannot load the SSH client key for {where}: {reason}")
    if isinstance(cause, asyncssh.SFTPPermissionDenied | PermissionError):
        return AccessDenied(f"permission denied on {where}: {reason}")
    if isinstance(cause, asyncssh.SFTPNoSuchFile):
        return FileNotFoundError(errno.ENOENT, f"no such file or directory: {where}")
    if isinstance(cause, asyncio.TimeoutError | TimeoutError | FSTimeoutError):
        what = "connecting to" if connecting else "waiting for"
        return StorageUnreachable(f"SSH timed out {what} {where}")
    if isinstance(
        cause,
        asyncssh.DisconnectError
        | asyncssh.ConnectionLost
        | asyncssh.ChannelOpenError
        | ConnectionError
        | BrokenPipeError,
    ):
        return StorageUnreachable(f"SSH connection to {where} failed: {reason}")
    if connecting and isinstance(cause, OSError):  # unresolvable host, no route, ...
        return StorageUnreachable(f"cannot connect to {where}: {reason}")
    if isinstance(cause, asyncssh.SFTPError):
        return RemoteStorageError(f"SFTP error on {where}: {reason}")
    return None


def parse_ssh_url(url: str) -> tuple[str, dict[str, Any], str]:
    """Split ``ssh://[user[:password]@]host[:port]/path`` into ``(host, options, path)``.

    ``options`` holds ``username``, ``port`` and ``password`` where the URL gives them. The
    path is absolute; ``/~/rest`` (or ``/~``) is relative to the login directory.

    >>> parse_ssh_url("ssh://alice@cluster:2222/data/strata")
    ('cluster', {'username': 'alice', 'port': 2222}, '/data/strata')
    >>> parse_ssh_url("ssh://cluster/~/strata")[2]
    'strata'
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("ssh", "sftp") or not parts.hostname:
        raise ValueError(
            f"not an SSH URL: {redact_url(url)!r}; expected ssh://[user@]host[:port]/path"
        )
    opts: dict[str, Any] = {}
    if parts.username:
        opts["username"] = unquote(parts.username)
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad port in SSH URL {redact_url(url)!r}") from e
    if port:
        opts["port"] = port
    if parts.password:
        opts["password"] = unquote(parts.password)
    path = unquote(parts.path) or "/"
    if path == "/~" or path.startswith("/~/"):
        path = path[3:].strip("/") or "."
    elif len(path) > 1:
        path = path.rstrip("/")
    return parts.hostname, opts, path


_SSH_ASYNC_METHODS = (
    "_info",
    "_ls",
    "_cat_file",
    "_pipe_file",
    "_rm_file",
    "_rmdir",
    "_rm",
    "_mkdir",
    "_makedirs",
    "_mv",
    "_put_file",
    "_get_file",
    "_cp_file",
    "_checksum",
    "_modified",
)


async def _ssh_reconnect_if_lost(fs: Any) -> None:
    """Open a new connection if the server dropped the old one (restart, network blip).

    Filesystems live as long as the process (Dask workers keep them): without this, one lost
    connection would fail every later operation. The failed operation itself is not retried,
    since it may have taken effect.
    """
    client = getattr(fs, "_client", None)
    if client is None or not client.is_closed():
        return
    lock = fs.__dict__.setdefault("_strata_reconnect_lock", asyncio.Lock())
    async with lock:
        if not fs._client.is_closed():
            return
        logger.info("SSH connection to %s was lost; reconnecting", _ssh_where(fs))
        from sshfs.pools import SFTPSoftChannelPool

        opts = dict(fs.storage_options)
        opts.pop("timeout", None)
        max_sessions = int(opts.pop("max_sessions", 10))
        pool_type = opts.pop("pool_type", SFTPSoftChannelPool)
        sftp_kwargs = opts.pop("sftp_client_kwargs", None) or {}
        opts.setdefault("known_hosts", None)
        fs._client, fs._pool = await fs._connect(
            fs.storage_args[0],
            pool_type,
            max_sftp_channels=max_sessions - 2,
            connect_args=opts,
            sftp_client_kwargs=sftp_kwargs,
        )


def _translating(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapper(self: Any, path: Any = "", *args: Any, **kwargs: Any) -> Any:
        try:
            await _ssh_reconnect_if_lost(self)
            return await method(self, path, *args, **kwargs)
        except Exception as e:
            shown = path if isinstance(path, str) else str(path[0]) if path else ""
            new = _ssh_error(e, _ssh_where(self, shown))
            if new is None:
                raise
            raise new from e

    return wrapper


@functools.cache
def _ssh_class() -> type:
    """``StrataSSHFileSystem``: sshfs that translates errors and reads byte ranges."""
    try:
        import sshfs
        from fsspec.asyn import sync_wrapper
    except ImportError as e:
        raise MissingDependency("ssh", str(e)) from e

    base = sshfs.SSHFileSystem

    async def _cat_file(
        self: Any, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        # sshfs ignores start/end (it would return the whole file for a ranged read)
        if start is None and end is None:
            return await base._cat_file(self, path, **kwargs)
        async with self._pool.get() as channel, channel.open(path, "rb") as f:
            size = 0
            if (start is not None and start < 0) or (end is not None and end < 0):
                size = int((await channel.stat(path)).size)
            lo = 0 if start is None else (start if start >= 0 else max(0, size + start))
            hi = None if end is None else (end if end >= 0 else size + end)
            await f.seek(lo)
            return await f.read(-1 if hi is None else max(0, hi - lo))

    ns: dict[str, Any] = {name: _translating(getattr(base, name)) for name in _SSH_ASYNC_METHODS}
    ns["_cat_file"] = _translating(_cat_file)
    # sshfs binds these sync forms to its own coroutines at class creation: rebind them
    for name in ("mkdir", "makedirs", "modified", "checksum"):
        ns[name] = sync_wrapper(ns[f"_{name}"])
    ns["protocol"] = ("ssh", "sftp")  # sshfs leaves fsspec's "abstract"
    ns["__doc__"] = "sshfs with strata's error translation and ranged reads."
    ns["__module__"] = __name__
    cls = type("StrataSSHFileSystem", (base,), ns)
    cls.__qualname__ = "StrataSSHFileSystem"
    return cls


async def _sftp_rename_noreplace(fs: Any, src: str, dst: str) -> None:
    import asyncssh

    await _ssh_reconnect_if_lost(fs)
    async with fs._pool.get() as channel:
        try:
            await channel.rename(src, dst)  # SFTP v3 rename: fails if dst exists
        except asyncssh.SFTPError:
            if await channel.exists(dst):
                raise FileExistsError(
                    errno.EEXIST, f"already exists: {_ssh_where(fs, dst)}"
                ) from None
            raise


def _via_temp_file(fs: Any, path: str, data: bytes, rename: Callable[[str], None]) -> None:
    """Write ``data`` to a temporary file beside ``path``, then ``rename(tmp)`` it into place;
    the temporary file is removed if that fails (else gc removes ``*.tmp`` leftovers).
    """
    tmp = temp_name(path)
    fs.pipe_file(tmp, data)
    try:
        rename(tmp)
    except BaseException:
        try:
            fs.rm_file(tmp)
        except OSError as e:
            logger.debug("could not remove %s: %s", tmp, e)
        raise


class SSHTransport(Transport):
    """SFTP through :class:`StrataSSHFileSystem`; commits with a rename that never overwrites."""

    name: ClassVar[str] = "ssh"
    supports_exclusive_write: ClassVar[bool] = True

    def require(self, protocol: str) -> None:
        """Import sshfs (``MissingDependency`` naming the ``ssh`` extra if it is missing)."""
        _ssh_class()

    def open(self, url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
        """A new :class:`StrataSSHFileSystem` (wrapped for Zarr) and the path of ``url``."""
        host, from_url, path = parse_ssh_url(url)
        opts = {**SSH_DEFAULTS, **from_url, **options}
        cls = _ssh_class()
        try:
            fs = cls(host, skip_instance_cache=True, **opts)
        except Exception as e:
            new = _ssh_error(e, redact_url(url), connecting=True)
            if new is None:
                raise
            raise new from e
        if asynchronous:
            from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

            return AsyncFileSystemWrapper(fs, asynchronous=True), path
        return fs, path

    def exclusive_write(self, fs: Any, path: str, data: bytes) -> None:
        """A temporary file beside ``path``, then an SFTP ``rename`` that does not overwrite."""
        from fsspec.asyn import sync

        fs = sync_fs(fs)

        def rename(tmp: str) -> None:
            try:
                sync(fs.loop, _sftp_rename_noreplace, fs, tmp, path)
            except FileExistsError:
                raise
            except Exception as e:
                new = _ssh_error(e, _ssh_where(fs, path))
                if new is None:
                    raise
                raise new from e

        _via_temp_file(fs, path, data, rename)

    def atomic_write(self, fs: Any, path: str, data: bytes) -> None:
        """A temporary file beside ``path``, then ``posix-rename`` over it."""
        fs = sync_fs(fs)
        _via_temp_file(fs, path, data, lambda tmp: fs.mv(tmp, path))


TRANSPORT = SSHTransport()


def __getattr__(name: str) -> Any:
    # The filesystem class is built on first use (sshfs is an optional extra); a module
    # attribute makes instances picklable by reference.
    if name == "StrataSSHFileSystem":
        return _ssh_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
