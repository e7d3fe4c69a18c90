"""deploy/slurm used as a user would, on a real SLURM: start_cluster.py submits the worker
jobs with the repository's jobqueue.yaml (SITE values set for this node), `strata demo` and
`strata make --scheduler-file` run the demo pipeline in those jobs, and what they store is
byte-identical to a run on threads.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from distributed import get_task_stream

from strata.pipeline.cli import main
from strata.storage import DataKey, DirectoryFrontend
from tests.cluster.conftest import ROOT, strata_command, subprocess_env
from tests.slurm.batch import (
    JOB_NAME,
    LIFETIME_SITE,
    PARTITION,
    START_CLUSTER,
    assert_same_data,
    command_line,
    job_ids,
    munged_argv,
    mungekey_argv,
    set_args,
    site_overrides,
    slurm_conf,
    slurmctld_argv,
    slurmd_argv,
    start_cluster_argv,
)

pytestmark = pytest.mark.slow

DEMO = "strata.pipeline.demo:PLUGINS"
RUNS = ("demo_000", "demo_001")


def strata_here(*args: str) -> str:
    """The ``strata`` command in this process (in the current directory); its output."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, f"strata {command_line(args)}:\n{result.output}"
    return result.output


def strata(*args: str, cwd: Path, timeout: float = 240) -> str:
    """Run the ``strata`` command as a process of its own (as a user's shell does); its
    stdout (a failure shows all its output)."""
    argv = [*strata_command(), *args]
    proc = subprocess.run(
        argv, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{command_line(argv)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def assert_same_store(
    got: DirectoryFrontend, want: DirectoryFrontend, runs: tuple[str, ...]
) -> dict[str, DataKey]:
    """Every key of ``want`` is in ``got`` and nothing else, with the same data
    (:func:`~tests.slurm.batch.assert_same_data`), and so is the run metadata."""
    keys = {str(e.key): e.key for run in runs for e in want.list(run)}
    assert sorted(str(e.key) for run in runs for e in got.list(run)) == sorted(keys)
    for key in keys.values():
        assert_same_data(got, want, key)
    for run in runs:
        assert got.run_metadata(run) == want.run_metadata(run)
    return keys


def test_start_cluster_dry_run_shows_this_sites_job_script(tmp_path: Path) -> None:
    """The job script start_cluster.py renders with the SITE values of this node: they (and
    nothing else) replace the repository's values."""
    proc = subprocess.run(
        [
            *(sys.executable, str(START_CLUSTER), "--system", "slurm", "--dry-run"),
            *set_args(site_overrides(tmp_path)),
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"#SBATCH -J {JOB_NAME}" in lines
    assert f"#SBATCH -p {PARTITION}" in lines
    assert "#SBATCH -t 01:00:00" in lines  # the repository's walltime
    assert "#SBATCH --cpus-per-task=1" in lines
    assert "--lifetime 55m --lifetime-stagger 4m" in proc.stdout  # the repository's
    assert "--death-timeout 120" in proc.stdout
    # a misspelt key is an error naming it, not a value silently ignored
    bad = subprocess.run(
        [sys.executable, str(START_CLUSTER), "--dry-run", "--set", "partition=strata"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "'partition' is not a dask-jobqueue key of jobqueue.slurm" in bad.stderr
    assert "queue" in bad.stderr


def demo_commands(d: str, scheduler_file: str) -> dict[str, list[list[str]]]:
    """The strata commands of the demo test, as the README shows them (``d``: the cluster's
    directory): the reference on threads, the same on the SLURM jobs, the gc check."""
    ref, store = f"{d}/threads", f"{d}/slurm"
    on = ("--scheduler-file", scheduler_file)
    return {
        "threads": [
            ["strata", "demo", "--runs", "2", "--scheduler", "threads", "-s", ref],
            ["strata", "make", "demo_001", "peak_basics", "-c", "gap_ns=500", "-s", ref],
        ],
        "slurm": [
            ["strata", "demo", "--runs", "2", "-s", store, *on],
            [
                "strata",
                "make",
                "demo_001",
                "peak_basics",
                "-p",
                DEMO,
                "-s",
                store,
                "-c",
                "gap_ns=500",
                *on,
            ],
        ],
        "gc": [["strata", "gc", "-s", store, "--min-age", "0", "--dry-run"]],
    }


def test_demo_pipeline_in_slurm_jobs_stores_what_threads_store(
    worker_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, client = worker_jobs(jobs=2)
    d = cluster.directory
    monkeypatch.chdir(d)  # where `strata demo` writes its plot
    commands = demo_commands(str(d), str(cluster.scheduler_file))
    for argv in commands["threads"]:  # the reference: in this process, on threads
        strata_here(*argv[1:])
    jobs = job_ids(client)
    assert sorted(jobs.values()) == sorted(cluster.our_jobs())  # the workers are those jobs
    assert set(cluster.our_jobs().values()) == {"RUNNING"}
    with get_task_stream(client) as ts:
        demo, make = commands["slurm"]
        out = strata(*demo[1:], cwd=d)
        assert f"Dask cluster {cluster.address}: 2 worker(s), 2 thread(s)" in out
        assert "made peak_basics of 2 run(s)" in out
        out = strata(*make[1:], cwd=d)
        assert f"Dask cluster {cluster.address}: 2 worker(s)" in out
        assert "made demo_001-peak_basics-" in out
    # the work ran in the SLURM jobs' workers: computing, writing and committing
    kinds = {t["key"].split("-")[0] for t in ts.data if isinstance(t["key"], str)}
    assert {"compute", "stage", "commit"} <= kinds
    assert {t["worker"] for t in ts.data} <= set(jobs)
    got, want = DirectoryFrontend(str(d / "slurm")), DirectoryFrontend(str(d / "threads"))
    keys = assert_same_store(got, want, RUNS)
    assert len(keys) == 10  # 4 data types per run, and peaks + peak_basics with gap_ns=500
    [gc] = commands["gc"]
    assert "would remove 0 leftover attempt(s)" in strata_here(*gc[1:])


# -- the README says what was run -------------------------------------------------------------
README = ROOT / "deploy" / "slurm" / "README.md"
TRIED = "## Tried here"


def readme_section() -> str:
    """The section of deploy/slurm/README.md that says what the tests run."""
    text = README.read_text()
    assert TRIED in text, f"{README}: no '{TRIED}' section"
    section = text.split(TRIED, 1)[1]
    return section.split("\n## ", 1)[0]


def console_commands(text: str) -> list[list[str]]:
    """The ``$ ...`` lines (with ``\\`` continuations) of the console blocks, split into words;
    ``a && b`` is two commands."""
    out: list[list[str]] = []
    block, current = False, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            block = stripped == "```console" and not block
            continue
        if not block or not (current or stripped.startswith("$ ")):
            continue
        current = f"{current} {stripped}" if current else stripped[2:]
        if current.endswith("\\"):
            current = current[:-1]
            continue
        out.extend(shlex.split(part, comments=True) for part in current.split(" && "))
        current = ""
    return out


def conf_block(text: str) -> str:
    """The body of the fenced block opened by ```` ```text slurm.conf ````."""
    opening = "```text slurm.conf\n"
    assert opening in text, f"{README}: no {opening.strip()!r} block"
    return text.split(opening, 1)[1].split("```", 1)[0]


def test_readme_shows_the_commands_these_tests_run() -> None:
    """Every daemon, start_cluster.py and strata command the tests run, and the slurm.conf
    they write, appear in the README's section as they are run (with ``$SLURM_DIR``,
    ``$DIR``, ``$PYTHON`` and the machine's values as shell variables)."""
    section = readme_section()
    shown = console_commands(section)
    sd, d = "$SLURM_DIR", "$DIR"
    expected = [
        mungekey_argv(sd),
        munged_argv(sd),
        slurmctld_argv(sd),
        slurmd_argv(sd),
        start_cluster_argv(2, f"{d}/scheduler.json", site_overrides(Path(d), "$PYTHON")),
        start_cluster_argv(
            2, f"{d}/scheduler.json", site_overrides(Path(d), "$PYTHON", **LIFETIME_SITE)
        ),
        *(argv for group in demo_commands(d, f"{d}/scheduler.json").values() for argv in group),
    ]
    missing = [command_line(argv) for argv in expected if argv not in shown]
    assert not missing, f"{README}: not shown as run:\n" + "\n".join(missing)
    conf = slurm_conf(sd, "$HOST", "$USER", "$CPUS", "$MEMORY", "$CTLD_PORT", "$SLURMD_PORT")
    assert conf_block(section) == conf
