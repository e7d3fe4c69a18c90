"""The frontend conformance suite and SQL-specific behaviour on an SQLite catalog."""

from __future__ import annotations

import pytest

from storage.frontends.sql import SQLFrontend
from tests.conformance import FrontendTests
from tests.sql.sqltests import SQLCatalogTests


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/catalog.db"


class TestSQLiteFrontend(FrontendTests, SQLCatalogTests):
    @pytest.fixture
    def make_frontend(self, db_url, tmp_path):
        return lambda **kw: SQLFrontend(
            db_url, data_url=str(tmp_path / "data"), chunk_target_mb=0.25, **kw
        )
