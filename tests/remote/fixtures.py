"""pytest fixtures for remote storage: a moto S3 server and an OpenSSH sshd (real servers).

Use them from any test module with ``pytest_plugins = ["tests.remote.fixtures"]`` in the root
``conftest.py`` (``tests/remote/conftest.py`` imports them for the tests here). Each server is
started once per session; every test gets a fresh bucket or directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.remote.servers import S3Server, SSHServer


def forget(url: str) -> None:
    """Drop the filesystems and stores strata cached for ``url`` (closing SSH connections)."""
    from strata.storage.backends.zarr import backend as zb

    with zb._CACHE_LOCK:
        for k in [k for k in zb._CACHE if url in k[3]]:
            del zb._CACHE[k]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server (child process) that counts the requests it receives."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket."""
    return s3_server.create_bucket()


@pytest.fixture
def s3_options(s3_server: S3Server) -> dict:
    """storage_options for :func:`s3_server`."""
    return s3_server.storage_options()


@pytest.fixture
def s3_url(s3_bucket: str) -> Iterator[str]:
    """``s3://<fresh bucket>/strata``."""
    url = f"s3://{s3_bucket}/strata"
    yield url
    forget(url)


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SSHServer]:
    """OpenSSH sshd on 127.0.0.1 (key login as the current user)."""
    if not SSHServer.available():
        pytest.fail("OpenSSH sshd is not installed: run .ci/install-system.sh")
    with SSHServer() as server:
        yield server


@pytest.fixture
def ssh_options(ssh_server: SSHServer) -> dict:
    """storage_options for :func:`ssh_server` (client key, known_hosts)."""
    return ssh_server.storage_options()


@pytest.fixture
def ssh_url(ssh_server: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ssh://user@127.0.0.1:port/<fresh directory>/store``."""
    d = tmp_path_factory.mktemp(f"ssh-{uuid.uuid4().hex[:6]}")
    url = ssh_server.url(f"{d}/store")
    yield url
    forget(url)
