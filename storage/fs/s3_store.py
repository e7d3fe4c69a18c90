"""The Zarr store of ``s3://`` URLs: obstore where the options allow it, else s3fs.

Chunks and shards, the bulk of a save's and a read's requests, go through the Zarr store;
the catalog (manifests, listings, the commit's ``If-None-Match`` PUT) goes through the s3fs
filesystem either way. Through s3fs each request costs ~3.5-4 ms of Python in the event-loop
thread (aiobotocore's preparation, signing and response parsing; measured on this project's
2-core machines), so one process keeps at most latency / 4 ms requests in flight: 5-8 at
20 ms. zarr's :class:`zarr.storage.ObjectStore` over obstore (Rust: ``object_store`` on
tokio) prepares, signs and parses off the interpreter (~0.25 ms of Python a request), so
every request a batch has is in flight at once and the decoding threads keep the cores.

:func:`obstore_settings` maps the s3fs ``storage_options`` strata understands to obstore's
settings: explicit credentials (``key``/``secret``/``token``) or ``anon=True``, an
``endpoint_url`` or a region, timeouts and retries. Anything else (an AWS profile, the
environment's credential chain alone, a custom session, requester-pays, SSE options, ...)
keeps s3fs as the chunk store, so a store opens the same objects with the same identity as
its catalog. ``storage_options={"chunk_store": "s3fs"}`` or ``"obstore"`` chooses
explicitly (``"obstore"`` raises if the options cannot be mapped).

:class:`S3ChunkStore` is zarr's ObjectStore with strata's error translation (checked against
obstore 0.12 and zarr 3.1.6): a missing object is ``None`` as in every Zarr store, an
existing one on exclusive create is ``FileExistsError``, refused credentials and access are
:class:`~strata.storage.errors.AuthenticationFailed` and
:class:`~strata.storage.errors.AccessDenied`, and every other failure (connection, timeout,
a range past an object's end, a server error) is
:class:`~strata.storage.errors.RemoteStorageError`, an ``OSError`` naming the object, with
the URL redacted.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import re
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from ..errors import (
    AccessDenied,
    AuthenticationFailed,
    MissingDependency,
    RemoteStorageError,
)
from .redaction import redact_url

# S3ChunkStore is a module attribute too, built on first use (see __getattr__)
__all__ = [
    "CHUNK_STORES",
    "check_chunk_store",
    "obstore_settings",
    "s3_chunk_store",
]

CHUNK_STORES = ("auto", "obstore", "s3fs")
"""Values of the ``chunk_store`` storage option of ``s3://`` URLs."""

# s3fs options that obstore_settings maps or that do not concern the chunk store
_MAPPED = frozenset(
    {
        "key",
        "secret",
        "token",
        "anon",
        "endpoint_url",
        "client_kwargs",
        "config_kwargs",
        "retries",
        "use_listings_cache",
        "max_concurrency",
        "skip_instance_cache",
        "use_ssl",
        "chunk_store",
    }
)
_CLIENT_KWARGS = frozenset({"endpoint_url", "region_name", "verify"})
_CONFIG_KWARGS = frozenset(
    {"max_pool_connections", "connect_timeout", "read_timeout", "retries", "s3"}
)
_WHOLE_REQUEST_TIMEOUT_S = 600
"""obstore's timeout is for a whole request (s3fs's ``read_timeout`` is per socket read): long
enough for a 64 MiB shard on a slow link."""


def obstore_settings(options: dict[str, Any]) -> dict[str, Any] | None:
    """Keyword arguments of ``obstore.store.S3Store`` equivalent to the s3fs ``options``
    (strata's defaults already merged), or ``None`` if some option has no equivalent or the
    credentials are not explicit (then s3fs stays the chunk store).

    >>> obstore_settings({"key": "K", "secret": "S", "endpoint_url": "http://h:9"})["endpoint"]
    'http://h:9'
    >>> obstore_settings({"profile": "dev"}) is None
    True
    """
    if set(options) - _MAPPED:
        return None
    client = dict(options.get("client_kwargs") or {})
    config = dict(options.get("config_kwargs") or {})
    if set(client) - _CLIENT_KWARGS or set(config) - _CONFIG_KWARGS:
        return None
    s3cfg = config.get("s3") or {}
    if set(s3cfg) - {"addressing_style"}:
        return None
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    region = client.get("region_name")
    anon = bool(options.get("anon", False))
    key, secret = options.get("key"), options.get("secret")
    if not anon and not (key and secret):
        return None  # the credential chain (profiles, env, roles) is s3fs's to resolve
    if not endpoint and not region:
        return None  # AWS itself: botocore finds a bucket's region, object_store does not
    out: dict[str, Any] = {"region": str(region or "us-east-1")}
    if anon:
        out["skip_signature"] = True
    else:
        out["access_key_id"] = str(key)
        out["secret_access_key"] = str(secret)
        if options.get("token"):
            out["session_token"] = str(options["token"])
    client_options: dict[str, Any] = {
        "timeout": f"{_WHOLE_REQUEST_TIMEOUT_S}s",
        "connect_timeout": f"{float(config.get('connect_timeout', 5)):g}s",
    }
    if endpoint:
        out["endpoint"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            client_options["allow_http"] = True
        style = s3cfg.get("addressing_style", "path")
        out["virtual_hosted_style_request"] = style == "virtual"
    if client.get("verify") is False:
        client_options["allow_invalid_certificates"] = True
    out["client_options"] = client_options
    attempts = (config.get("retries") or {}).get("max_attempts", 3)
    out["retry_config"] = {
        "max_retries": max(0, int(attempts) - 1),
        "retry_timeout": datetime.timedelta(seconds=float(config.get("read_timeout", 30))),
        "backoff": {
            "init_backoff": datetime.timedelta(milliseconds=100),
            "max_backoff": datetime.timedelta(seconds=5),
            "base": 2.0,
        },
    }
    return out


def check_chunk_store(choice: Any) -> str:
    """``choice`` if it is a valid ``chunk_store`` storage option, else ``ValueError``."""
    if choice not in CHUNK_STORES:
        raise ValueError(
            f"storage option chunk_store must be one of {', '.join(CHUNK_STORES)}, got {choice!r}"
        )
    return str(choice)


def s3_chunk_store(url: str, bucket: str, prefix: str, options: dict[str, Any]) -> Any | None:
    """An :class:`S3ChunkStore` at ``bucket/prefix``, or ``None`` when s3fs should be the
    chunk store (see the module's notes; ``options`` with strata's defaults merged).
    """
    choice = check_chunk_store(options.get("chunk_store", "auto"))
    if choice == "s3fs":
        return None
    settings = obstore_settings(options)
    if settings is None:
        if choice == "obstore":
            raise ValueError(
                f"chunk_store='obstore' for {redact_url(url)}: these storage options have no "
                "obstore equivalent (it needs explicit key and secret, or anon=True, and an "
                "endpoint_url or client_kwargs.region_name; no profile or session options)"
            )
        return None
    try:
        from obstore.store import S3Store
    except ImportError:
        if choice == "obstore":
            raise MissingDependency("s3", "obstore is not installed") from None
        return None
    if prefix:
        settings["prefix"] = prefix
    return _store_class()(S3Store(bucket, **settings), url=redact_url(url))


_CODE = re.compile(r"<Code>([A-Za-z0-9.]{1,64})</Code>")


def _summary(e: BaseException) -> str:
    """The message of obstore's error ``e`` without its debug dump, and the S3 error code if
    the server gave one (obstore 0.12 puts the response body in the message, no code apart).
    """
    text = str(e)
    code = _CODE.search(text)
    head = text.split("\n", 1)[0].split(": <?xml", 1)[0]
    if len(head) > 300:
        head = head[:300] + "..."
    return redact_url(f"{head} ({code.group(1)})" if code else head)


def _translate(e: BaseException, what: str) -> BaseException | None:
    """The strata error for an obstore failure of ``what`` (``None``: leave it as it is)."""
    import obstore.exceptions as ox

    if isinstance(e, FileNotFoundError | FileExistsError):
        return None
    if isinstance(e, ox.UnauthenticatedError):
        return AuthenticationFailed(
            f"S3 refused the credentials for {what}: {_summary(e)}; check the key, secret "
            "and token of the storage options"
        )
    if isinstance(e, ox.PermissionDeniedError):
        return AccessDenied(f"S3 access denied: {what}: {_summary(e)}")
    if isinstance(e, ox.BaseError):
        return RemoteStorageError(f"S3 request for {what} failed: {_summary(e)}")
    return None


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Raise obstore's failures of ``what`` as strata's errors (see :func:`_translate`)."""
    try:
        yield
    except Exception as e:
        new = _translate(e, what)
        if new is None:
            raise
        raise new from e


@functools.cache
def _store_class() -> type:
    try:
        from zarr.storage import ObjectStore
    except ImportError as e:  # pragma: no cover - zarr 3.1 has it
        raise MissingDependency("s3", str(e)) from e

    class S3ChunkStore(ObjectStore):
        """zarr's ObjectStore over obstore's ``S3Store``, raising strata's errors."""

        def __init__(self, store: Any, *, url: str = "s3://", read_only: bool = False) -> None:
            super().__init__(store, read_only=read_only)
            self._url = url

        def __repr__(self) -> str:
            return f"S3ChunkStore({self._url!r})"

        def __str__(self) -> str:
            return self._url

        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, S3ChunkStore)
                and other._url == self._url
                and (other.store == self.store)
            )

        __hash__ = None  # type: ignore[assignment]

        def with_read_only(self, read_only: bool = False) -> Any:
            return type(self)(self.store, url=self._url, read_only=read_only)

        def _where(self, key: str) -> str:
            return f"{self._url.rstrip('/')}/{key}"

        async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
            with _translated(self._where(key)):
                return await super().get(key, *args, **kwargs)

        async def set(self, key: str, value: Any) -> None:
            with _translated(self._where(key)):
                await super().set(key, value)

        async def delete(self, key: str) -> None:
            with _translated(self._where(key)):
                await super().delete(key)

        async def exists(self, key: str) -> bool:
            with _translated(self._where(key)):
                return bool(await super().exists(key))

        def list_prefix(self, prefix: str) -> AsyncGenerator[str, None]:
            return self._listed(super().list_prefix(prefix), prefix)

        def list_dir(self, prefix: str) -> AsyncGenerator[str, None]:
            return self._listed(super().list_dir(prefix), prefix)

        def list(self) -> AsyncGenerator[str, None]:
            return self._listed(super().list(), "")

        async def _listed(
            self, it: AsyncGenerator[str, None], prefix: str
        ) -> AsyncGenerator[str, None]:
            with _translated(f"listing {self._where(prefix)}"):
                async for k in it:
                    yield k

    S3ChunkStore.__module__ = __name__
    S3ChunkStore.__qualname__ = "S3ChunkStore"
    return S3ChunkStore


def __getattr__(name: str) -> Any:
    # built on first use (zarr's ObjectStore imports obstore lazily); a module attribute makes
    # instances picklable by reference
    if name == "S3ChunkStore":
        return _store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
