"""The storage conformance suites against a real S3 server (moto) and a real sshd."""

from __future__ import annotations

import pytest

from strata.storage import DirectoryFrontend
from tests.conformance import BackendTests, FrontendTests, SaverTests


class S3:
    @pytest.fixture
    def url(self, s3_url):
        return s3_url

    @pytest.fixture
    def storage_options(self, s3_options):
        return s3_options

    @pytest.fixture
    def make_frontend(self, url, storage_options):
        return lambda **kw: DirectoryFrontend(
            url, storage_options=storage_options, chunk_target_mb=0.25, **kw
        )


class SSH:
    @pytest.fixture
    def url(self, ssh_url):
        return ssh_url

    @pytest.fixture
    def storage_options(self, ssh_options):
        return ssh_options

    @pytest.fixture
    def make_frontend(self, url, storage_options):
        return lambda **kw: DirectoryFrontend(
            url, storage_options=storage_options, chunk_target_mb=0.25, **kw
        )


class TestS3Backend(S3, BackendTests):
    pass


class TestS3Saver(S3, SaverTests):
    pass


class TestS3Frontend(S3, FrontendTests):
    pass


class TestSSHBackend(SSH, BackendTests):
    pass


class TestSSHSaver(SSH, SaverTests):
    pass


class TestSSHFrontend(SSH, FrontendTests):
    pass
