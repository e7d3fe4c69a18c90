"""The frontend conformance suite and SQL-specific behaviour on an SQLite catalog."""

from __future__ import annotations

import subprocess
import sys

import pytest

from strata.storage.frontends.sql import SQLFrontend
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
        "import sys\nfrom strata import storage\n"
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


def test_context_and_cli_with_a_sqlite_url(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from strata.pipeline import Context
    from strata.pipeline.cli import main
    from strata.storage import StoredArrayQuery
    from tests.pipeline import toys

    monkeypatch.chdir(tmp_path)
    url = "sqlite:///catalog.db"
    ctx = Context(storage=[url], register=toys.TOYS)
    ctx.storage[0].write_run_metadata("r1", {"calibration": {"gain": 2.0}})
    ctx.make("r1", "doubled")
    fe = SQLFrontend(url)
    assert sorted(e.key.data_type for e in fe.list("r1")) == ["doubled", "ticks"]
    again = Context(storage=[url], register=toys.TOYS)
    assert again.is_stored("r1", "doubled")
    assert again.get_array("r1", "doubled").tobytes() == ctx.get_array("r1", "doubled").tobytes()
    assert set(fe.query(StoredArrayQuery(run_id="r1"))) == {("r1",)}
    ls = CliRunner().invoke(main, ["ls", "-s", url])
    assert ls.exit_code == 0, ls.output
    assert "doubled" in ls.output
    runs = CliRunner().invoke(main, ["runs", "-s", url])
    assert runs.exit_code == 0, runs.output
    assert "r1" in runs.output
