"""Open frontends and backends from URLs, by scheme (in the manner of fsspec's registry).

>>> open_frontend("memory://strata-doctest")
DirectoryFrontend('memory://strata-doctest')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fsspec

from .backends.base import StorageBackend
from .backends.zarr import ZarrBackend
from .frontends.base import StorageFrontend
from .frontends.directory import DirectoryFrontend
from .fs import split_url

__all__ = [
    "FRONTENDS",
    "INSTALL_HINTS",
    "open_backend",
    "open_frontend",
    "register_frontend",
]

FrontendFactory = Callable[..., StorageFrontend]

FRONTENDS: dict[str, FrontendFactory] = {
    "file": DirectoryFrontend,
    "memory": DirectoryFrontend,
}
"""Scheme -> frontend factory. Other fsspec schemes get a DirectoryFrontend."""

INSTALL_HINTS = {
    "s3": "pip install 'strata-lineage[s3]' (s3fs)",
    "ssh": "pip install 'strata-lineage[ssh]' (sshfs)",
    "sqlite": "pip install 'strata-lineage[sql]' (SQLAlchemy)",
    "postgresql": "pip install 'strata-lineage[sql]' (SQLAlchemy, psycopg)",
}


def register_frontend(scheme: str, factory: FrontendFactory) -> None:
    """Make ``open_frontend`` use ``factory(url, **kwargs)`` for URLs of ``scheme``."""
    FRONTENDS[scheme.lower()] = factory


def _sql_frontend(url: str, **kwargs: Any) -> StorageFrontend:
    """An SQLFrontend, imported on first use: SQLAlchemy is loaded only for SQL catalogs."""
    try:
        from .frontends.sql import SQLFrontend
    except ImportError as e:
        hint = INSTALL_HINTS["postgresql" if _scheme(url).startswith("postgres") else "sqlite"]
        raise ImportError(f"SQL catalogs need an extra: {hint}") from e
    return SQLFrontend(url, **kwargs)


for _s in ("sqlite", "postgresql", "postgres"):
    register_frontend(_s, _sql_frontend)


def _scheme(url: str) -> str:
    if "://" in url:
        s = url.split("://", 1)[0].lower()
        return s.split("+", 1)[0]  # postgresql+psycopg -> postgresql
    return "file"


def _check_fsspec(url: str) -> None:
    protocol, _ = split_url(url)
    if protocol in ("file", "memory"):
        return
    from fsspec.registry import known_implementations, registry

    known = set(known_implementations) | set(registry)
    if protocol not in known:
        raise ValueError(
            f"unknown storage URL scheme {protocol!r} in {url.split('://')[0]}://...; "
            f"known: {', '.join(sorted(set(FRONTENDS) | {'s3', 'ssh'}))} and fsspec protocols"
        )
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        hint = INSTALL_HINTS.get(protocol, f"install the fsspec implementation of {protocol!r}")
        raise ImportError(f"storage URL scheme {protocol!r} needs an extra: {hint}") from e


def open_frontend(url: str | StorageFrontend, **kwargs: Any) -> StorageFrontend:
    """A frontend for ``url``: a directory catalog for paths and fsspec URLs, an SQL catalog
    for ``sqlite://`` and ``postgresql://`` (once registered). Frontends pass through.
    """
    if isinstance(url, StorageFrontend):
        return url
    scheme = _scheme(url)
    if scheme in FRONTENDS:
        if scheme not in ("sqlite", "postgresql", "postgres"):
            _check_fsspec(url)
        return FRONTENDS[scheme](url, **kwargs)
    if scheme in INSTALL_HINTS and scheme in ("sqlite", "postgresql"):
        raise ImportError(f"{scheme} catalogs need an extra: {INSTALL_HINTS[scheme]}")
    _check_fsspec(url)
    return DirectoryFrontend(url, **kwargs)


def open_backend(url: str | StorageBackend, **kwargs: Any) -> StorageBackend:
    """A :class:`ZarrBackend` for any fsspec URL or path; backends pass through."""
    if isinstance(url, StorageBackend):
        return url
    _check_fsspec(url)
    return ZarrBackend(url, **kwargs)
