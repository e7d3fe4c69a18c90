"""Open frontends and backends from URLs, by scheme (in the manner of fsspec's registry).

A URL's scheme (its protocol from :func:`~strata.storage.fs.split_url`, without a
``+driver`` suffix: ``postgresql+psycopg`` is ``postgresql``) picks its frontend:

1. a frontend registered for the scheme (:data:`FRONTENDS`): built in are directory catalogs
   for ``file`` and ``memory`` and SQL catalogs for ``sqlite``, ``postgresql`` and
   ``postgres``; :func:`register_frontend` adds more, for any scheme, fsspec protocol or not;
2. else one that an installed distribution declares in the entry-point group
   ``strata.frontends`` (``myscheme = package.module:Factory``);
3. else, for an fsspec protocol (``s3``, ``ssh``, ``gcs``, ...), a
   :class:`~strata.storage.frontends.directory.DirectoryFrontend`.

Entries are import paths, imported on first use: SQLAlchemy is loaded only for SQL catalogs,
and a missing extra raises an ``ImportError`` naming its ``pip install`` command.

>>> open_frontend("memory://strata-doctest")
DirectoryFrontend('memory://strata-doctest')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .backends.base import StorageBackend
from .errors import INSTALL_HINTS, MissingDependency
from .frontends.base import StorageFrontend
from .fs import TRANSPORTS, get_transport, is_known_protocol, redact_url, split_url
from .fs.lazy_registry import LazyRegistry

__all__ = [
    "ENTRY_POINT_GROUP",
    "FRONTENDS",
    "INSTALL_HINTS",
    "open_backend",
    "open_frontend",
    "register_frontend",
]

FrontendFactory = Callable[..., StorageFrontend]

ENTRY_POINT_GROUP = "strata.frontends"
"""The entry-point group in which other distributions declare frontends by scheme."""

_DIRECTORY = "strata.storage.frontends.directory:DirectoryFrontend"
_SQL = "strata.storage.frontends.sql:SQLFrontend"
_frontends: LazyRegistry[FrontendFactory] = LazyRegistry(
    "frontend",
    {
        "file": _DIRECTORY,
        "memory": _DIRECTORY,
        "sqlite": _SQL,
        "postgresql": _SQL,
        "postgres": _SQL,
        "strax": "strata.storage.frontends.strax:StraxDirectoryFrontend",
    },
    group=ENTRY_POINT_GROUP,
)

FRONTENDS: Mapping[str, FrontendFactory | str] = _frontends.view
"""Scheme -> frontend factory (or its import path), read-only; see :func:`register_frontend`.
Other fsspec protocols get a DirectoryFrontend."""


def register_frontend(scheme: str, factory: FrontendFactory | str, clobber: bool = False) -> None:
    """Make :func:`open_frontend` use ``factory(url, **kwargs)`` for URLs of ``scheme``.

    ``factory`` is a callable (a frontend class) or its import path
    ``"package.module:attribute"``, imported on first use. ``scheme`` need not be an fsspec
    protocol. Raises ``ValueError`` if ``scheme`` has a frontend already, unless ``clobber``.
    """
    _frontends.register(scheme, factory, clobber=clobber)


def _factory(protocol: str) -> FrontendFactory | None:
    if protocol in FRONTENDS:
        return _frontends.get(protocol)
    # postgresql+psycopg -> postgresql; registered, declared by a distribution, or None
    return _frontends.get(protocol.split("+", 1)[0])


def _require_fsspec(url: str, protocol: str) -> None:
    """Raise unless ``protocol`` is an fsspec protocol whose implementation imports."""
    if not is_known_protocol(protocol):
        raise ValueError(
            f"unknown storage URL scheme {protocol!r} in {redact_url(url)!r}: no frontend is "
            f"registered for it and it is no fsspec protocol; known: "
            f"{', '.join(_frontends.names())} (frontends), "
            f"{', '.join(sorted(TRANSPORTS))} (strata's transports) and every fsspec protocol "
            f"(fsspec.available_protocols()); add one with strata.storage.register_frontend "
            f"or the entry-point group {ENTRY_POINT_GROUP!r}"
        )
    try:
        get_transport(protocol).require(protocol)
    except MissingDependency:
        raise
    except ImportError as e:
        raise ImportError(
            f"storage URL scheme {protocol!r} needs the fsspec implementation of "
            f"{protocol!r}, which does not import: {e}"
        ) from e


def open_frontend(url: str | StorageFrontend, **kwargs: Any) -> StorageFrontend:
    """A frontend for ``url``: the one registered for its scheme, else one declared in the
    entry-point group ``strata.frontends``, else a directory catalog for any fsspec URL or
    path. Frontends pass through; ``kwargs`` go to the factory.
    """
    if isinstance(url, StorageFrontend):
        return url
    protocol, _ = split_url(url)
    factory = _factory(protocol)
    if factory is None:
        _require_fsspec(url, protocol)
        from .frontends.directory import DirectoryFrontend

        factory = DirectoryFrontend
    frontend = factory(url, **kwargs)
    if not isinstance(frontend, StorageFrontend):
        raise TypeError(
            f"the frontend factory for {protocol}:// URLs ({factory!r}) returned "
            f"{type(frontend).__name__}, not a StorageFrontend"
        )
    return frontend


def open_backend(url: str | StorageBackend, **kwargs: Any) -> StorageBackend:
    """A :class:`~strata.storage.backends.zarr.ZarrBackend` for any fsspec URL or path;
    backends pass through.
    """
    if isinstance(url, StorageBackend):
        return url
    _require_fsspec(url, split_url(url)[0])
    from .backends.zarr import ZarrBackend

    return ZarrBackend(url, **kwargs)
