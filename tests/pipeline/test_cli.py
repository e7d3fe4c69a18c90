"""The ``strata`` command: the demo and ``ls`` as subprocesses, the rest in-process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.pipeline.cli import main
from strata.storage import DirectoryFrontend

ROOT = Path(__file__).resolve().parents[2]
TOYS = "tests.pipeline.toys:TOYS"


def run_strata(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("STRATA_STORAGE", None)
    # the installed console script, as a user runs it (python -m pipeline if not installed)
    script = shutil.which("strata")
    command = [script] if script else [sys.executable, "-m", "pipeline"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """``strata demo --runs 2`` run once in a fresh directory."""
    cwd = tmp_path_factory.mktemp("demo")
    proc = run_strata("demo", "--runs", "2", cwd=cwd)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return cwd, proc.stdout


@pytest.mark.slow
def test_demo_then_ls_as_subprocesses(demo_dir):
    cwd, out = demo_dir
    assert "making peak_basics" in out
    for dt in ("raw_records", "records", "peaks", "peak_basics"):
        assert dt in out
    assert "MB/s" in out
    assert "ratio" in out
    m = re.search(r"area spectrum written to (\S+\.png)", out)
    assert m, out
    png = Path(m.group(1))
    assert png.parent == cwd
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fe = DirectoryFrontend(str(cwd / "strata_data"))
    assert fe.list_runs() == ["demo_000", "demo_001"]
    assert len(fe.list()) == 8

    ls = run_strata("ls", cwd=cwd)
    assert ls.returncode == 0, ls.stderr
    for e in fe.list():
        assert e.key.lineage_hash in ls.stdout
    ls1 = run_strata("ls", "demo_001", cwd=cwd)
    assert "demo_001" in ls1.stdout
    assert "demo_000" not in ls1.stdout


@pytest.mark.slow
def test_info_runs_gc_and_make_on_the_demo_store(demo_dir):
    cwd, _ = demo_dir
    store = str(cwd / "strata_data")
    runner = CliRunner()
    r = runner.invoke(main, ["info", "demo_000", "peak_basics", "-s", store])
    assert r.exit_code == 0, r.output
    assert "(stored)" in r.output
    assert "Peak area [PE]" in r.output
    assert '"gains"' in r.output
    r = runner.invoke(main, ["runs", "-s", store])
    assert r.exit_code == 0
    assert "demo_000" in r.output
    assert "demo" in r.output
    r = runner.invoke(main, ["gc", "--dry-run", "--min-age", "0", "-s", store])
    assert r.exit_code == 0
    assert "would remove 0" in r.output
    r = runner.invoke(main, ["make", "demo_001", "peaks", "-s", store])
    assert r.exit_code == 0
    assert "already stored" in r.output


def test_make_with_plugins_from_a_module(tmp_path):
    store = str(tmp_path / "s")
    runner = CliRunner()
    args = ["make", "r1", "doubled", "-p", TOYS, "-s", store]
    r = runner.invoke(main, [*args, "-c", "factor=3"])
    assert r.exit_code == 0, r.output
    assert "made r1-doubled-" in r.output
    fe = DirectoryFrontend(store)
    assert sorted(e.key.data_type for e in fe.list("r1")) == ["doubled", "ticks"]
    # a single class, and a whole module, work too
    r = runner.invoke(main, ["make", "r2", "ticks", "-p", "tests.pipeline.toys:Ticks", "-s", store])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["make", "r2", "tick_info", "-p", "tests.pipeline.toys", "-s", store])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["make", "r1", "dubled", "-p", TOYS], "did you mean 'doubled'"),
        (
            ["make", "r1", "doubled", "-p", TOYS, "-c", "fator=3"],
            "unknown option 'fator'",
        ),
        (
            ["make", "r1", "doubled", "-p", TOYS, "-c", 'factor="x"'],
            "expected float",
        ),
        (
            ["make", "r1", "doubled", "-p", "tests.pipeline.toys:nothing"],
            "has no attribute 'nothing'",
        ),
        (["make", "r1", "doubled", "-p", "no_such_module_x"], "cannot import 'no_such_module_x'"),
        (["make", "r1", "doubled", "-p", "tests.pipeline.toys:VALUE_DTYPE"], "not a Plugin class"),
        (["make", "r1", "records"], "no run metadata for run 'r1'"),
        (["make", "bad-run", "peaks"], "invalid run_id"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, args, message):
    r = CliRunner().invoke(main, [*args, "-s", str(tmp_path / "s")])
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("command", ["demo", "make", "ls", "info", "runs", "gc"])
def test_every_command_explains_itself(command):
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0
    assert "Usage: main" in r.output or "Usage: strata" in r.output
    doc = r.output.split("\n\n")[1].strip()
    assert len(doc) > 30, r.output


def test_ls_of_an_empty_store(tmp_path):
    r = CliRunner().invoke(main, ["ls", "-s", str(tmp_path / "empty")])
    assert r.exit_code == 0
    assert "nothing stored" in r.output
