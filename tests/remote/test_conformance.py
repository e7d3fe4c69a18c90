"""The storage conformance suites against a real S3 server (moto) and a real sshd."""

from __future__ import annotations

import pytest

from tests.conformance import BackendTests, FrontendTests, SaverTests
from tests.stores import URLStore


class Remote(URLStore):
    """Each suite once on S3 and once on SSH."""

    @pytest.fixture(params=["s3", "ssh"])
    def scheme(self, request):
        return request.param

    @pytest.fixture
    def url(self, request, scheme):
        return request.getfixturevalue(f"{scheme}_url")

    @pytest.fixture
    def storage_options(self, request, scheme):
        return request.getfixturevalue(f"{scheme}_options")


class TestRemoteBackend(Remote, BackendTests):
    pass


class TestRemoteSaver(Remote, SaverTests):
    pass


class TestRemoteFrontend(Remote, FrontendTests):
    pass
