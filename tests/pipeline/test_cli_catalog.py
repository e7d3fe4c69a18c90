"""The CLI with an SQL catalog: ``--catalog`` / ``STRATA_CATALOG`` in front of the storage."""

from __future__ import annotations

from click.testing import CliRunner

from strata.pipeline import demo
from strata.pipeline.cli import main
from strata.storage.frontends.sql import SQLFrontend


def test_make_ls_gc_through_a_catalog(tmp_path):
    catalog, data = f"sqlite:///{tmp_path / 'cat.db'}", str(tmp_path / "data")
    fe = SQLFrontend(catalog, data_url=data)
    fe.write_run_metadata("demo_000", demo.run_document("demo_000"))
    runner = CliRunner()
    made = runner.invoke(main, ["make", "demo_000", "records", "-s", data, "--catalog", catalog])
    assert made.exit_code == 0, made.output
    stored = {e.key.data_type for e in fe.list("demo_000")}
    assert "records" in stored
    listed = runner.invoke(main, ["ls", "demo_000", "-s", data], env={"STRATA_CATALOG": catalog})
    assert listed.exit_code == 0, listed.output
    assert "records" in listed.output and "SQLFrontend" in listed.output
    swept = runner.invoke(main, ["gc", "--min-age", "0", "-s", data, "--catalog", catalog])
    assert swept.exit_code == 0, swept.output
    assert "removed 0 leftover" in swept.output
    # the data directory alone (no catalog) holds the same committed keys
    plain = runner.invoke(main, ["ls", "demo_000", "-s", data])
    assert "records" in plain.output
