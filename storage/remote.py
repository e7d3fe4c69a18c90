"""Remote storage: ``s3://`` (s3fs) and ``ssh://`` (sshfs) for strata's fsspec plumbing.

:func:`ensure_registered` fills the hooks of :mod:`strata.storage.fs` for these schemes:

- **filesystems** (``FS_FACTORIES``): ``s3://bucket/prefix`` and
  ``ssh://[user@]host[:port]/path`` (also ``sftp://``; ``ssh://host/~/path`` is relative to
  the login directory). For Zarr, the SSH filesystem is wrapped in fsspec's
  ``AsyncFileSystemWrapper``: sshfs cannot be created with ``asynchronous=True`` outside a
  running event loop ("Loop is not running").
- **the commit primitive** (``EXCLUSIVE_WRITERS``): S3 ``PutObject`` with
  ``If-None-Match: *`` (the server refuses to replace an existing object); SFTP writes a
  temporary file and renames it with the protocol's plain ``rename``, which never overwrites
  (OpenSSH links the new name, failing if it exists).
- **atomic replacement** (``ATOMIC_WRITERS``): SFTP writes a temporary file and renames it with
  ``posix-rename``, so a reader sees the old or the new file, never a part.

Credentials come from the usual places unless ``storage_options`` give them: for S3 the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3``, ...),
``~/.aws/config`` and ``~/.aws/credentials`` (``profile=``), or instance roles; for SSH the
user's ``~/.ssh/config`` (host aliases, ``User``, ``Port``, ``IdentityFile``), keys in
``~/.ssh`` and the ssh-agent. Host keys are checked only when ``known_hosts`` is given (as
sshfs does).

strata's defaults, each overridable through ``storage_options``:

- S3: ``use_listings_cache=False`` (a listing must never come from a stale cache, since
  catalog decisions rest on it), ``max_concurrency=1`` (s3fs otherwise sends a ``HEAD``
  before every ``GET`` to decide whether to split it), botocore ``connect_timeout=5``,
  ``read_timeout=30`` and 3 attempts, and ``retries=2`` outer s3fs attempts. Prefixes are not
  created (S3 has no directories) and buckets never are: a missing bucket is an error.
- SSH: ``connect_timeout=10`` and keep-alives every 15 s (a dead server is noticed in under a
  minute); a connection the server dropped is reopened on the next operation.

Failures are translated into the errors below, each naming the URL without secrets.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import StorageError
from .fs import ATOMIC_WRITERS, EXCLUSIVE_WRITERS, FS_FACTORIES, redact_url

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "BucketNotFound",
    "RemoteStorageError",
    "StorageUnreachable",
    "ensure_registered",
    "parse_ssh_url",
]

logger = logging.getLogger(__name__)

S3_INSTALL_HINT = "s3:// URLs need s3fs: pip install 'strata-lineage[s3]'"
SSH_INSTALL_HINT = "ssh:// URLs need sshfs: pip install 'strata-lineage[ssh]'"

S3_CONFIG_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 30,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
S3_DEFAULTS: dict[str, Any] = {"use_listings_cache": False, "max_concurrency": 1}
S3_RETRIES = 2
SSH_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalive_interval": 15,
    "keepalive_count_max": 3,
}


# -- errors ----------------------------------------------------------------------------------
class RemoteStorageError(StorageError, OSError):
    """A remote store failed in a way that is neither "not found" nor "already exists"."""


class StorageUnreachable(RemoteStorageError, ConnectionError):
    """The server cannot be reached: refused, unresolvable, timed out or disconnected."""


class AuthenticationFailed(RemoteStorageError, PermissionError):
    """The server refused the credentials (or none could be found, or a key did not load)."""


class AccessDenied(RemoteStorageError, PermissionError):
    """The credentials were accepted but do not permit the operation."""


class BucketNotFound(RemoteStorageError):
    """The S3 bucket does not exist.

    Deliberately not a ``FileNotFoundError``: that would read as "no data stored here".
    """


_S3_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
        "UnrecognizedClientException",
    }
)
_S3_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})


def _client_error(exc: BaseException) -> Any:
    """The botocore ``ClientError`` behind ``exc`` (s3fs re-raises it as an OSError)."""
    from botocore.exceptions import ClientError

    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 5:
        if isinstance(e, ClientError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _s3_error(fs: Any, exc: BaseException, params: dict[str, Any]) -> BaseException | None:
    """Translate an S3 failure into strata's errors; ``None`` leaves it as it is."""
    import botocore.exceptions as bx

    if isinstance(exc, StorageError):
        return None
    bucket = params.get("Bucket") or ""
    key = params.get("Key") or params.get("Prefix") or ""
    url = f"s3://{bucket}/{key}".rstrip("/") if bucket else "s3://"
    endpoint = fs.endpoint_url or fs.client_kwargs.get("endpoint_url")
    where = f"{url} (endpoint {redact_url(endpoint)})" if endpoint else url
    err = _client_error(exc)
    if err is not None:
        info = err.response.get("Error", {})
        code = str(info.get("Code", ""))
        msg = info.get("Message") or code
        if code == "NoSuchBucket":
            return BucketNotFound(
                f"S3 bucket {bucket!r} does not exist: {where}; create it first "
                "(strata never creates buckets)"
            )
        if code in _S3_AUTH_CODES:
            return AuthenticationFailed(
                f"S3 refused the credentials for {where}: {msg} ({code}); check the key, "
                "secret and token (storage_options, AWS_* variables or the AWS profile)"
            )
        if code in _S3_DENIED_CODES:
            return AccessDenied(f"S3 access denied: {where}: {msg} ({code})")
        return None
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return AuthenticationFailed(
            f"no usable AWS credentials for {where}: give key and secret in storage_options, "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of "
            "~/.aws/credentials (profile=... or AWS_PROFILE)"
        )
    if isinstance(exc, bx.ProfileNotFound):
        return AuthenticationFailed(f"{where}: {exc}")
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError | TimeoutError | ConnectionError):
        return StorageUnreachable(f"cannot reach the S3 server for {where}: {exc}")
    from fsspec.exceptions import FSTimeoutError

    if isinstance(exc, FSTimeoutError):
        return StorageUnreachable(f"S3 request for {where} timed out")
    return None


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
    reason = getattr(cause, "reason", "") or str(cause) or type(cause).__name__
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
        return StorageUnreachable(f"cannot connect to {where}: {cause}")
    if isinstance(cause, asyncssh.SFTPError):
        return RemoteStorageError(f"SFTP error on {where}: {reason}")
    return None


# -- S3 --------------------------------------------------------------------------------------
@functools.cache
def _s3_class() -> type:
    """``StrataS3FileSystem``: s3fs that translates errors and never creates buckets."""
    try:
        import s3fs
    except ImportError as e:
        raise ImportError(S3_INSTALL_HINT) from e

    class StrataS3FileSystem(s3fs.S3FileSystem):
        """s3fs with strata's error translation; creates no buckets and no prefixes."""

        async def _call_s3(self, method: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super()._call_s3(method, *args, **kwargs)
            except Exception as e:
                params = args[0] if args and isinstance(args[0], dict) else kwargs
                new = _s3_error(self, e, params)
                if new is None:
                    raise
                raise new from e

        async def set_session(self, refresh: bool = False, kwargs: Any = None) -> Any:
            s3 = await super().set_session(refresh=refresh, kwargs=kwargs or {})
            if self.asynchronous and getattr(self, "_strata_closer", None) is None:
                # s3fs closes the HTTP session of synchronous instances only; Zarr's
                # asynchronous one would otherwise leak it ("Unclosed client session").
                self._strata_closer = weakref.finalize(
                    self, type(self).close_session, asyncio.get_running_loop(), self._s3creator
                )
            return s3

        async def _mkdir(self, path: str, *args: Any, **kwargs: Any) -> None:
            # S3 has no directories; and a bucket is made by its owner, not as a side effect
            # of writing under a mistyped name.
            _, key, _ = self.split_path(path)
            if key:
                return
            await super()._mkdir(path, *args, **kwargs)

        async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
            _, key, _ = self.split_path(path)
            if key:
                return
            await super()._makedirs(path, exist_ok=exist_ok)

        async def _rm_file(self, path: str, **kwargs: Any) -> None:
            # S3 deletes a missing object "successfully"; callers (removal of a committed
            # key) need to know it was not there, as on a file system.
            if not await self._exists(path):
                raise FileNotFoundError(errno.ENOENT, f"no such object: s3://{path}")
            await super()._rm_file(path, **kwargs)

    StrataS3FileSystem.__module__ = __name__
    StrataS3FileSystem.__qualname__ = "StrataS3FileSystem"
    return StrataS3FileSystem


def _s3_fs(url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
    root = url.split("://", 1)[1].strip("/")
    if not root or root.split("/", 1)[0] in ("", ".", ".."):
        raise ValueError(f"an S3 URL needs a bucket: s3://bucket[/prefix], got {url!r}")
    opts = {**S3_DEFAULTS, **options}
    retries = int(opts.pop("retries", S3_RETRIES))
    opts["config_kwargs"] = {**S3_CONFIG_DEFAULTS, **(opts.get("config_kwargs") or {})}
    fs = _s3_class()(skip_instance_cache=True, asynchronous=asynchronous, **opts)
    fs.retries = max(1, retries)
    return fs, root


def _s3_exclusive_write(fs: Any, path: str, data: bytes) -> None:
    """PutObject with ``If-None-Match: *``: the server refuses to replace an object.

    A ``409 ConditionalRequestConflict`` (another conditional write to the same key is in
    flight) is retried: one of the writers then gets ``412``, which s3fs raises as
    ``FileExistsError``. A server that ignores the condition makes the last writer win; its
    manifest still names one attempt, so readers never see a mix.
    """
    for attempt in range(3):
        try:
            fs.pipe_file(path, data, mode="create")
            return
        except FileExistsError:
            raise
        except OSError as e:
            err = _client_error(e)
            code = err.response.get("Error", {}).get("Code") if err is not None else None
            if code != "ConditionalRequestConflict" or attempt == 2:
                raise
            logger.debug("conditional write conflict on %s; retrying", path)


# -- SSH -------------------------------------------------------------------------------------
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
        raise ImportError(SSH_INSTALL_HINT) from e

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


def _ssh_fs(url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
    host, from_url, path = parse_ssh_url(url)
    opts = {**SSH_DEFAULTS, **from_url, **options}
    cls = _ssh_class()
    try:
        fs = cls(host, skip_instance_cache=True, **opts)
    except Exception as e:
        where = redact_url(url)
        new = _ssh_error(e, where, connecting=True)
        if new is None:
            raise
        raise new from e
    if asynchronous:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        return AsyncFileSystemWrapper(fs, asynchronous=True), path
    return fs, path


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


def _sync_fs(fs: Any) -> Any:
    return getattr(fs, "sync_fs", fs)  # unwrap fsspec's AsyncFileSystemWrapper


def _ssh_exclusive_write(fs: Any, path: str, data: bytes) -> None:
    """A temporary file beside ``path``, then an SFTP ``rename`` that does not overwrite."""
    from fsspec.asyn import sync

    fs = _sync_fs(fs)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(tmp, data)
    try:
        try:
            sync(fs.loop, _sftp_rename_noreplace, fs, tmp, path)
        except FileExistsError:
            raise
        except Exception as e:
            new = _ssh_error(e, _ssh_where(fs, path))
            if new is None:
                raise
            raise new from e
    except BaseException:
        try:
            fs.rm_file(tmp)
        except OSError as e:  # gc removes *.tmp leftovers
            logger.debug("could not remove %s: %s", tmp, e)
        raise


def _ssh_atomic_write(fs: Any, path: str, data: bytes) -> None:
    """A temporary file beside ``path``, then ``posix-rename`` over it."""
    fs = _sync_fs(fs)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(tmp, data)
    try:
        fs.mv(tmp, path)
    except BaseException:
        try:
            fs.rm_file(tmp)
        except OSError as e:
            logger.debug("could not remove %s: %s", tmp, e)
        raise


# -- registration ----------------------------------------------------------------------------
def ensure_registered() -> None:
    """Register the ``s3``/``ssh`` hooks in :mod:`strata.storage.fs` (idempotent, imports nothing).

    Hooks already present (registered by the user) are kept.
    """
    for scheme in ("s3", "s3a"):
        FS_FACTORIES.setdefault(scheme, _s3_fs)
    for scheme in ("ssh", "sftp"):
        FS_FACTORIES.setdefault(scheme, _ssh_fs)
    EXCLUSIVE_WRITERS.setdefault("s3", _s3_exclusive_write)
    for scheme in ("ssh", "sftp"):
        EXCLUSIVE_WRITERS.setdefault(scheme, _ssh_exclusive_write)
        ATOMIC_WRITERS.setdefault(scheme, _ssh_atomic_write)


def __getattr__(name: str) -> Any:
    # The filesystem classes are built on first use (their packages are optional extras);
    # module attributes make instances picklable by reference.
    if name == "StrataS3FileSystem":
        return _s3_class()
    if name == "StrataSSHFileSystem":
        return _ssh_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
