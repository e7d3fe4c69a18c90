"""The ``s3://`` transport (s3fs): S3 and S3-compatible object stores.

``s3://bucket/prefix`` (also ``s3a://``) opens :class:`StrataS3FileSystem`, s3fs with strata's
error translation, which creates no buckets and no prefixes. The commit primitive is
``PutObject`` with ``If-None-Match: *``: the server refuses to replace an existing object.

Credentials come from the usual places unless ``storage_options`` give them: the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3``, ...), ``~/.aws/config`` and
``~/.aws/credentials`` (``profile=``), or instance roles.

strata's defaults, each overridable through ``storage_options``: ``use_listings_cache=False``
(a listing must never come from a stale cache, since catalog decisions rest on it),
``max_concurrency=1`` (s3fs otherwise sends a ``HEAD`` before every ``GET`` to decide whether
to split it), botocore ``max_pool_connections=64`` (requests in flight per saver and process:
:func:`pool_size`), no ``Expect: 100-continue`` on uploads (botocore asks before every ``PUT``
of a file-like body: a second round trip per object, to spare sending a body the server would
refuse, which strata's writes never expect),
``connect_timeout=5``, ``read_timeout=30`` and 3 attempts, and
``retries=2`` outer s3fs attempts. A missing bucket is an error, never created.

Failures are translated into :mod:`strata.storage.errors` (``BucketNotFound``,
``AuthenticationFailed``, ``AccessDenied``, ``StorageUnreachable``), each naming the URL
without secrets. s3fs is imported on first use (the ``s3`` extra).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import weakref
from typing import Any, ClassVar

from ..errors import (
    AccessDenied,
    AuthenticationFailed,
    BucketNotFound,
    MissingDependency,
    StorageError,
    StorageUnreachable,
)
from .redaction import redact_url
from .s3_store import check_chunk_store, s3_chunk_store
from .transport import Transport

# StrataS3FileSystem is a module attribute too, built on first use (see __getattr__)
__all__ = ["S3_CONFIG_DEFAULTS", "S3_DEFAULTS", "TRANSPORT", "S3Transport", "pool_size"]

logger = logging.getLogger(__name__)

S3_CONFIG_DEFAULTS: dict[str, Any] = {
    # botocore's pool holds 10 connections by default: a save keeps the objects of several
    # segments in flight at once (every chunk of every field), so the pool is what limits it;
    # a saver keeps as many requests in flight as the pool holds (pool_size)
    "max_pool_connections": 64,
    "connect_timeout": 5,
    "read_timeout": 30,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
S3_DEFAULTS: dict[str, Any] = {"use_listings_cache": False, "max_concurrency": 1}
S3_RETRIES = 2


def pool_size(options: dict[str, Any]) -> int:
    """The botocore connection pool size ``options`` (a backend's storage options) give:
    ``config_kwargs.max_pool_connections``, else :data:`S3_CONFIG_DEFAULTS`'.
    """
    cfg = options.get("config_kwargs") or {}
    n = cfg.get("max_pool_connections", S3_CONFIG_DEFAULTS["max_pool_connections"])
    try:
        size = int(n)
    except (TypeError, ValueError):
        raise ValueError(
            f"config_kwargs.max_pool_connections must be a positive integer, got {n!r}"
        ) from None
    if size < 1:
        raise ValueError(f"config_kwargs.max_pool_connections must be at least 1, got {size}")
    return size


def _no_expect_continue(params: dict[str, Any], **kwargs: Any) -> None:
    """Drop botocore's ``Expect: 100-continue`` (one round trip more per ``PUT``)."""
    params.get("headers", {}).pop("Expect", None)


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
        msg = redact_url(str(info.get("Message") or code))
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
        return AuthenticationFailed(f"{where}: {redact_url(str(exc))}")
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError | TimeoutError | ConnectionError):
        return StorageUnreachable(f"cannot reach the S3 server for {where}: {redact_url(str(exc))}")
    from fsspec.exceptions import FSTimeoutError

    if isinstance(exc, FSTimeoutError):
        return StorageUnreachable(f"S3 request for {where} timed out")
    return None


@functools.cache
def _s3_class() -> type:
    """``StrataS3FileSystem``: s3fs that translates errors and never creates buckets."""
    try:
        import s3fs
    except ImportError as e:
        raise MissingDependency("s3", str(e)) from e

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
            # after botocore's own handler (registered on the same event) has added it
            s3.meta.events.register_last(
                "before-call.s3", _no_expect_continue, unique_id="strata-no-expect-continue"
            )
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


def _root(url: str) -> str:
    """``bucket/prefix`` of an ``s3://`` URL (``ValueError`` if it names no bucket)."""
    root = url.split("://", 1)[1].strip("/")
    if not root or root.split("/", 1)[0] in ("", ".", ".."):
        raise ValueError(f"an S3 URL needs a bucket: s3://bucket[/prefix], got {redact_url(url)!r}")
    return root


def _with_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` over strata's s3fs and botocore defaults."""
    opts = {**S3_DEFAULTS, **options}
    opts["config_kwargs"] = {**S3_CONFIG_DEFAULTS, **(opts.get("config_kwargs") or {})}
    return opts


class S3Transport(Transport):
    """S3 through :class:`StrataS3FileSystem`; commits with ``If-None-Match: *``."""

    name: ClassVar[str] = "s3"
    supports_exclusive_write: ClassVar[bool] = True

    def require(self, protocol: str) -> None:
        """Import s3fs (``MissingDependency`` naming the ``s3`` extra if it is missing)."""
        _s3_class()

    def open(self, url: str, options: dict[str, Any], asynchronous: bool) -> tuple[Any, str]:
        """A new :class:`StrataS3FileSystem` (no instance cache) and ``bucket/prefix``."""
        root = _root(url)
        opts = _with_defaults(options)
        check_chunk_store(opts.pop("chunk_store", "auto"))
        retries = int(opts.pop("retries", S3_RETRIES))
        fs = _s3_class()(skip_instance_cache=True, asynchronous=asynchronous, **opts)
        fs.retries = max(1, retries)
        return fs, root

    def zarr_store(self, url: str, options: dict[str, Any]) -> Any:
        """The chunk store of ``url``: obstore's S3 client where the options map to it, else
        an ``FsspecStore`` over :class:`StrataS3FileSystem` (see :mod:`.s3_store`).
        """
        bucket, _, prefix = _root(url).partition("/")
        store = s3_chunk_store(url, bucket, prefix, _with_defaults(options))
        if store is not None:
            return store
        return super().zarr_store(url, options)

    def exclusive_write(self, fs: Any, path: str, data: bytes) -> None:
        """``PutObject`` with ``If-None-Match: *``: the server refuses to replace an object.

        A ``409 ConditionalRequestConflict`` (another conditional write to the same key is in
        flight) is retried: one of the writers then gets ``412``, which s3fs raises as
        ``FileExistsError``. A server that ignores the condition makes the last writer win;
        its manifest still names one attempt, so readers never see a mix.
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


TRANSPORT = S3Transport()


def __getattr__(name: str) -> Any:
    # The filesystem class is built on first use (s3fs is an optional extra); a module
    # attribute makes instances picklable by reference.
    if name == "StrataS3FileSystem":
        return _s3_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
