"""``strata runs``: the run-selection filters on the command line, over several storages."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from strata.pipeline import Context
from strata.pipeline.cli import main
from strata.storage import open_frontend
from tests.pipeline import toys

TOYS = "tests.pipeline.toys"


@pytest.fixture
def stores(tmp_path):
    first, second = str(tmp_path / "first"), f"sqlite:///{tmp_path}/second.db"
    a, b = open_frontend(first), open_frontend(second)
    a.write_run_metadata_many(
        {
            "r1": {"mode": "nice", "tags": [{"name": "interesting"}], "source": {"name": "Kr"}},
            "r2": {"mode": "nice", "tags": [{"name": "bad"}, {"name": "interesting"}]},
        }
    )
    b.write_run_metadata_many(
        {"r3": {"mode": "funny", "tags": ["_blinded"]}, "r1": {"mode": "overridden"}}
    )
    Context(storage=[a], register=[toys.Ticks]).make("r1", "ticks")
    return first, second


def run(*args: str) -> str:
    r = CliRunner().invoke(main, ["runs", *args])
    assert r.exit_code == 0, r.output
    return r.output


def rows(output: str) -> list[str]:
    """The run ids of the table's rows (runs of these tests are named r<digit>)."""
    ids = [line.split()[0] for line in output.splitlines() if line.strip()]
    return [i for i in ids if len(i) == 2 and i[0] == "r" and i[1].isdigit()]


def test_runs_lists_every_storage_once(stores):
    first, second = stores
    out = run("-s", first, "-s", second, "-f", "source.name")
    assert rows(out) == ["r1", "r2", "r3"]
    r1 = next(line for line in out.splitlines() if line.strip().startswith("r1"))
    assert "nice" in r1 and "Kr" in r1 and "overridden" not in r1  # the first storage wins
    assert "3 run(s)" in out


def test_runs_filters(stores):
    first, second = stores
    s = ["-s", first, "-s", second]
    assert rows(run(*s, "--run-mode", "nice")) == ["r1", "r2"]
    assert rows(run(*s, "--include-tags", "interesting", "--exclude-tags", "bad")) == ["r1"]
    assert rows(run(*s, "--include-tags", "blinded")) == ["r3"]
    assert rows(run(*s, "--run-id", "r[23]")) == ["r2", "r3"]
    assert rows(run(*s, "--run-mode", "fun", "--pattern-type", "re")) == ["r3"]
    out = run(*s, "--available", "ticks", "-p", TOYS)
    assert rows(out) == ["r1"]
    assert "ticks" in out
    assert "no runs" in run(*s, "--run-mode", "nothing")


def test_runs_errors_are_one_line(stores):
    first, _ = stores
    r = CliRunner().invoke(main, ["runs", "-s", first, "--run-id", "(", "--pattern-type", "re"])
    assert r.exit_code == 1
    assert "invalid regular expression" in r.output
    r = CliRunner().invoke(main, ["runs", "-s", first, "-f", "a..b"])
    assert r.exit_code == 1 and "invalid run document field" in r.output
