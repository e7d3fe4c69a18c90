"""Fixtures that run the conformance suites (``tests/conformance.py``) on strata's Zarr backend
and directory catalog at a ``url`` fixture, with an out-of-band view of the store."""

from __future__ import annotations

from typing import Any

import fsspec
import pytest

from strata.storage import DirectoryFrontend, ZarrBackend

CHUNK_MB = 0.25


class FsOutOfBand:
    """Reads and writes a store's files with a plain fsspec filesystem of its own (the
    layout spelled out here independently of strata's layout module)."""

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        if "://" not in url:
            url = f"file://{url}"
        if url.startswith(("ssh://", "sftp://")):
            from strata.storage.fs import open_fs  # sshfs needs strata's URL parsing

            self.fs, self.root = open_fs(url, storage_options)
        else:
            self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = self.root.rstrip("/")

    def path(self, backend_key: str, *rest: str) -> str:
        """The path of a file below a key's directory."""
        return "/".join([self.root, "data", backend_key, *rest])

    def manifest(self, backend_key: str) -> bytes:
        """The stored commit document (the key's ``zarr.json``) of ``backend_key``."""
        return bytes(self.fs.cat_file(self.path(backend_key, "zarr.json")))

    def put_manifest(self, backend_key: str, data: bytes) -> None:
        """Replace the stored commit document of ``backend_key``."""
        self.fs.pipe_file(self.path(backend_key, "zarr.json"), data)


class URLStore:
    """``make_backend``, ``make_frontend`` and ``oob`` for a ``ZarrBackend`` and a
    ``DirectoryFrontend`` at the ``url`` fixture (with the ``storage_options`` fixture)."""

    @pytest.fixture
    def storage_options(self) -> dict:
        return {}

    @pytest.fixture
    def make_backend(self, url, storage_options):
        def make(**kw):
            return ZarrBackend(
                url, storage_options=storage_options, **{"chunk_target_mb": CHUNK_MB, **kw}
            )

        return make

    @pytest.fixture
    def make_frontend(self, url, storage_options):
        return lambda **kw: DirectoryFrontend(
            url, storage_options=storage_options, chunk_target_mb=CHUNK_MB, **kw
        )

    @pytest.fixture
    def oob(self, url, storage_options):
        return FsOutOfBand(url, storage_options)
