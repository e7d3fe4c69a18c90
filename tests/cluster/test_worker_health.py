"""A cluster with no usable worker is an error in bounded time, never a hang; a plain editable
install serves real workers.

Every cluster here is ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 (see
``conftest.py``), some of them in an environment of their own: workers that cannot import
strata get a ``PYTHONPATH`` whose first entry holds a ``strata/__init__.py`` that raises
ImportError (the path finder runs before the editable install's meta path hook, so it wins).
The subprocess timeouts are guards against a hang, not assertions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

from strata.pipeline import Context
from strata.pipeline.cluster import connect, sendable_probe, wait_for_usable_workers
from strata.pipeline.demo import PLUGINS as DEMO_PLUGINS
from strata.pipeline.demo import run_document
from strata.pipeline.errors import NoUsableWorkers, SchedulerUnreachable
from strata.storage import DirectoryFrontend
from tests.cluster import plugins
from tests.cluster.conftest import (
    ROOT,
    DaskProcesses,
    stop_process,
    strata_command,
    subprocess_env,
    wait_for,
)
from tests.cluster.helpers import assert_same_stored_data

pytestmark = pytest.mark.slow

SPEC = "tests.cluster.plugins:PLUGINS"
SPEC_MODULE = plugins.__name__
WORKER_TIMEOUT = 10
"""``--worker-timeout`` of the commands that are expected to give up."""
GUARD = 240
"""Seconds after which a command that should have ended counts as hung."""
SHADOW_MESSAGE = "strata is shadowed for this test"


class EnvProcesses(DaskProcesses):
    """:class:`DaskProcesses` whose workers (or scheduler) run in an environment of their
    own (``worker_env``, ``scheduler_env``, or ``envs[name]`` for one process; default:
    ``subprocess_env()``), in working directory ``cwd``."""

    def __init__(
        self,
        directory: Path,
        worker_env: dict[str, str] | None = None,
        scheduler_env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        super().__init__(directory)
        self.worker_env = worker_env
        self.scheduler_env = scheduler_env
        self.envs: dict[str, dict[str, str]] = {}
        self.cwd = cwd or directory

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[Any]:
        env = self.envs.get(name, self.scheduler_env if name == "scheduler" else self.worker_env)
        log = open(self.directory / f"{name}.log", "wb")  # the child keeps its own copy
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                cwd=self.cwd,
                env=env if env is not None else subprocess_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        finally:
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., EnvProcesses]]:
    """A factory of :class:`EnvProcesses`; every one is stopped after the test."""
    started: list[EnvProcesses] = []

    def make(**options: Any) -> EnvProcesses:
        procs = EnvProcesses(tmp_path / f"cluster{len(started)}", **options)
        started.append(procs)
        return procs

    yield make
    for procs in started:
        procs.stop()


def shadowed_env(tmp_path: Path) -> dict[str, str]:
    """The subprocess environment with a ``strata`` package first on ``sys.path`` that fails
    to import."""
    shadow = tmp_path / "shadow"
    (shadow / "strata").mkdir(parents=True, exist_ok=True)
    (shadow / "strata" / "__init__.py").write_text(f"raise ImportError({SHADOW_MESSAGE!r})\n")
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), env["PYTHONPATH"]])
    return env


def plain_env() -> dict[str, str]:
    """The environment of a user with a plain ``pip install -e .``: no ``PYTHONPATH``, no
    cluster or storage settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DASK_", "STRATA_")) and k != "PYTHONPATH"
    }
    env["COLUMNS"] = "200"
    return env


def run_strata(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Any:
    """``strata ARGS`` in a subprocess, guarded against a hang."""
    return subprocess.run(
        [*strata_command(), *args],
        cwd=cwd,
        env=env if env is not None else subprocess_env(),
        capture_output=True,
        text=True,
        timeout=GUARD,
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_workers_that_cannot_import_strata_are_an_error_naming_the_import_error(
    processes, tmp_path
):
    procs = processes(worker_env=shadowed_env(tmp_path))
    address = procs.start_scheduler()
    for i in range(2):
        procs.start_worker(f"w{i}")
    client = procs.client()
    try:
        procs.wait_for_workers(client, 2)
        store = tmp_path / "store"
        proc = run_strata(
            [
                *("make", "run_1", "blocks", "-p", SPEC, "-s", str(store)),
                *("--scheduler", address, "--worker-timeout", str(WORKER_TIMEOUT)),
            ],
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr + procs.logs()
        err = " ".join(proc.stderr.split())
        assert "NoUsableWorkers" in err
        assert f"no usable worker at the Dask scheduler {address}" in err
        assert f"ImportError: {SHADOW_MESSAGE}" in err
        assert "2 worker(s) cannot run strata's tasks" in err
        assert "pip install" in err
        # each worker was named as soon as it was probed, on stdout
        said = f"cannot import strata.storage: ImportError: {SHADOW_MESSAGE}"
        assert proc.stdout.count(said) == 2
        # the probe did not kill the workers, and nothing was stored
        assert all(w.poll() is None for w in procs.workers)
        assert len(client.nthreads()) == 2
        assert not (store / "data").exists()
    finally:
        client.close()


def test_a_usable_worker_that_joins_later_ends_the_wait(processes, tmp_path):
    """Unusable workers are reported once and passed over; a usable one joining ends the
    wait (the Python path of the commands)."""
    procs = processes(worker_env=shadowed_env(tmp_path))
    address = procs.start_scheduler()
    procs.start_worker("bad")
    client = procs.client()
    try:
        procs.wait_for_workers(client, 1)
    finally:
        client.close()
    reports: list[str] = []
    outcome: list[Any] = []

    def wait() -> None:
        try:
            with connect(address, timeout=GUARD, modules=[SPEC_MODULE], report=reports.append) as c:
                outcome.append(sorted(c.nthreads()))
                outcome.append(wait_for_usable_workers(c, timeout=5, modules=[SPEC_MODULE]))
        except BaseException as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    wait_for(lambda: outcome or any(SHADOW_MESSAGE in r for r in reports), "the bad worker")
    procs.envs["good"] = subprocess_env()
    procs.start_worker("good")
    waiter.join(GUARD)
    assert not waiter.is_alive()
    [workers, usable] = outcome
    assert len(workers) == 2 and len(usable) == 1
    [bad] = set(workers) - set(usable)
    assert reports == [
        f"worker {bad} (bad) cannot run strata's tasks: cannot import strata.storage: "
        f"ImportError: {SHADOW_MESSAGE}",
        f"1 of 2 workers of {address} cannot run strata's tasks; tasks sent to them fail or "
        "run again elsewhere",
    ]


def test_a_scheduler_that_cannot_import_the_plugins_is_an_error_at_once(processes, tmp_path):
    """The scheduler unpickles the task graphs: without the plugin module it would fail every
    job ("Error during deserialization of the task graph"); the check says why, up front."""
    procs = processes(scheduler_env=plain_env())  # no PYTHONPATH: no `tests` package there
    address = procs.start_scheduler()
    procs.start_worker("w0")
    proc = run_strata(
        [
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(tmp_path / "store")),
            *("--scheduler", address, "--worker-timeout", str(GUARD)),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert (
        f"ClusterError: the Dask scheduler at {address} cannot run strata's tasks: cannot "
        f"import {SPEC_MODULE}: ModuleNotFoundError: No module named 'tests'"
    ) in err


def test_a_scheduler_without_workers_is_an_error_saying_no_workers(processes, tmp_path):
    procs = processes()
    address = procs.start_scheduler()
    proc = run_strata(
        [
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(tmp_path / "store")),
            *("--scheduler-file", str(procs.scheduler_file)),
        ],
        cwd=tmp_path,
        env=subprocess_env(STRATA_WORKER_TIMEOUT=str(WORKER_TIMEOUT)),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "NoUsableWorkers" in err
    assert f"no workers joined the Dask scheduler at {address} within {WORKER_TIMEOUT} s" in err
    assert f"has no workers yet: waiting up to {WORKER_TIMEOUT} s" in proc.stdout
    # the Python path says the same
    with pytest.raises(NoUsableWorkers, match="no workers joined"):
        connect(address, timeout=1)


def test_a_scheduler_that_does_not_answer_is_an_error_naming_it(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = run_strata(
        [
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(tmp_path / "store")),
            *("--scheduler", address, "--worker-timeout", "3"),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "SchedulerUnreachable" in err
    assert f"cannot reach the Dask scheduler at {address} within 3 s" in err
    with pytest.raises(SchedulerUnreachable, match="cannot reach"):
        connect(address, timeout=1)


def test_a_job_whose_workers_all_die_ends_with_an_error(processes, tmp_path):
    """The only worker is killed while it computes a partition: after --worker-timeout
    seconds without workers the command fails instead of waiting for ever."""
    procs = processes()
    address = procs.start_scheduler()
    procs.start_worker("w0")
    gate = tmp_path / "gate"
    gate.mkdir()
    cli = subprocess.Popen(
        [
            *strata_command(),
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(tmp_path / "store")),
            *("--scheduler", address, "--worker-timeout", str(WORKER_TIMEOUT)),
            *("-c", "n_partitions=2", "-c", f"gate_dir={gate}", "-c", "gate_partition=0"),
        ],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: plugins.marks(gate, "gate"), "partition 0 to start on the worker")
        stop_process(procs.workers[0])
        out, err = cli.communicate(timeout=GUARD)
    finally:
        stop_process(cli)
    assert cli.returncode == 1, out + err
    err = " ".join(err.split())
    assert "NoUsableWorkers" in err
    assert f"the Dask cluster at {address} has had no workers for" in err


def test_a_plain_editable_install_serves_workers_whose_directory_holds_storage(processes, tmp_path):
    """No PYTHONPATH anywhere: the scheduler, the workers and the command import strata from
    the install, and the cluster stores what a threaded run stores. The workers' working
    directory and the local directory on their ``sys.path`` hold a folder named ``storage``
    (distributed's spill folder has that name): a top-level package ``storage`` would resolve
    to it, ``strata.storage`` does not."""
    home = tmp_path / "home"
    (home / "storage").mkdir(parents=True)
    env = plain_env()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import strata.pipeline as p, strata.storage as s; "
            "print(p.__file__); print(s.__file__)",
        ],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == [
        str(ROOT / "pipeline" / "__init__.py"),
        str(ROOT / "storage" / "__init__.py"),
    ]
    procs = processes(worker_env=env, scheduler_env=env, cwd=home)
    address = procs.start_scheduler()
    for i in range(2):
        name = f"w{i}"
        # --local-directory D puts D/dask-scratch-space on the worker's sys.path
        (procs.directory / f"{name}-space" / "dask-scratch-space" / "storage").mkdir(parents=True)
        procs.start_worker(name, nthreads=1)
    client = procs.client()
    try:
        procs.wait_for_workers(client, 2)
        # the trap is set: `storage` is the empty folder there, `strata.storage` the package
        on_path = client.run(sendable_probe(), ("storage",), on_error="return")
        assert list(on_path.values()) == [None, None]
        missing = client.run(sendable_probe(), ("storage.errors",), on_error="return")
        assert {str(v) for v in missing.values()} == {
            "cannot import storage.errors: ModuleNotFoundError: No module named 'storage.errors'"
        }
    finally:
        client.close()
    run, n_partitions = "demo_000", 4
    stores = {}
    for which in ("cluster", "threads"):
        fe = DirectoryFrontend(str(tmp_path / which))
        fe.write_run_metadata(run, run_document(run, n_partitions=n_partitions))
        stores[which] = fe
    proc = run_strata(
        [
            *("make", run, "peak_basics", "--plugins", "strata.pipeline.demo:PLUGINS"),
            *("--storage", stores["cluster"].url, "--scheduler", address),
        ],
        cwd=home,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + procs.logs()
    assert f"Dask cluster {address}: 2 worker(s), 2 thread(s)" in proc.stdout
    with dask.config.set(scheduler="threads"):
        ref = Context(storage=[stores["threads"]], register=DEMO_PLUGINS)
        ref.make(run, "peak_basics")
    got = {str(e.key) for e in stores["cluster"].list(run)}
    assert got == {str(e.key) for e in stores["threads"].list(run)}
    assert str(ref.key_for(run, "peak_basics")) in got
    for entry in stores["threads"].list(run):
        assert_same_stored_data(stores["cluster"], stores["threads"], entry.key)
    np.testing.assert_array_equal(
        stores["cluster"].loader(ref.key_for(run, "peak_basics")).to_numpy(),
        ref.get_array(run, "peak_basics"),
    )
