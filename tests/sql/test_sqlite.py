"""The frontend conformance suite and SQL-specific behaviour on an SQLite catalog."""

from __future__ import annotations

import subprocess
import sys

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


def test_sqlalchemy_is_imported_only_for_sql_catalogs(tmp_path):
    code = (
        "import sys, storage\n"
        f"storage.open_frontend({str(tmp_path / 'dir')!r})\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        f"fe = storage.open_frontend('sqlite:///{tmp_path}/c.db')\n"
        "assert type(fe).__name__ == 'SQLFrontend' and 'sqlalchemy' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fe = SQLFrontend("sqlite:///catalog.db")  # relative to the working directory
    assert fe.db_url == f"sqlite:///{tmp_path}/catalog.db"
    assert fe.backends["data"].url == str(tmp_path / "catalog_data")
    with pytest.raises(ValueError, match="data_url= or backends="):
        SQLFrontend("sqlite://")
