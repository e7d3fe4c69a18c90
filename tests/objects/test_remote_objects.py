"""The object-store suite on real remote servers: S3 (moto) and SFTP (OpenSSH sshd).

Ancillary directories are uploaded through fsspec and come back as ``s3://`` or ``ssh://``
URLs.
"""

from __future__ import annotations

import pytest

from tests.objects.objtests import FsObjectStoreTests

pytestmark = pytest.mark.slow


class TestS3Objects(FsObjectStoreTests):
    @pytest.fixture
    def url(self, s3_url):
        return s3_url

    @pytest.fixture
    def storage_options(self, s3_options):
        return s3_options


class TestSSHObjects(FsObjectStoreTests):
    @pytest.fixture
    def url(self, ssh_url):
        return ssh_url

    @pytest.fixture
    def storage_options(self, ssh_options):
        return ssh_options
