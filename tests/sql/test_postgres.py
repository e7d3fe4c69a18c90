"""The frontend conformance suite and SQL-specific behaviour on a real PostgreSQL server."""

from __future__ import annotations

import pytest

from strata.storage.frontends.sql import SQLFrontend
from tests.conformance import FrontendTests
from tests.sql.sqltests import SQLCatalogTests

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(postgres_url):
    return postgres_url


class TestPostgresFrontend(FrontendTests, SQLCatalogTests):
    @pytest.fixture
    def make_frontend(self, db_url, tmp_path):
        return lambda **kw: SQLFrontend(
            db_url, data_url=str(tmp_path / "data"), chunk_target_mb=0.25, **kw
        )

    def test_password_never_shown(self, postgres_server, tmp_path):
        url = postgres_server.url().replace("postgres@", "postgres:s3cret@")
        fe = SQLFrontend(url, data_url=str(tmp_path / "d"))
        assert "s3cret" not in repr(fe)
        assert "s3cret" not in str(fe)

    def test_plain_postgresql_url_uses_psycopg3(self, db_url, tmp_path):
        plain = db_url.replace("postgresql+psycopg://", "postgresql://")
        fe = SQLFrontend(plain, data_url=str(tmp_path / "d"))
        assert fe.engine.dialect.driver == "psycopg"
