"""Real Dask clusters of separate processes for the cluster tests.

A :class:`DaskProcesses` starts ``dask scheduler --port 0 --scheduler-file F`` and
``dask worker --scheduler-file F`` as subprocesses on 127.0.0.1, each in its own process group
(so a worker's nanny and its child go together), waits for readiness by polling the scheduler
file and ``Client.wait_for_workers`` under a deadline, and stops them by pid. Nothing here
sleeps to synchronise: every wait is a poll for a condition with a deadline.

Subprocesses get ``PYTHONPATH`` with the repository root, so that workers import the test
plugins (``tests.cluster.plugins``); strata itself comes from the (editable) install.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 90.0
"""Seconds any readiness or idleness wait may take before the test fails."""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition()`` until it returns something true, and return that.

    A barrier with a deadline (``TimeoutError`` naming ``what``), never a timed assertion.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of the cluster and CLI subprocesses (no cluster or storage settings
    leaked from the caller's environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "STRATA_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def strata_command() -> list[str]:
    """The installed ``strata`` console script (``python -m pipeline`` if not installed)."""
    script = shutil.which("strata")
    return [script] if script else [sys.executable, "-m", "pipeline"]


def _dask_command() -> list[str]:
    script = shutil.which("dask")
    return [script] if script else [sys.executable, "-m", "dask"]


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Stop ``proc`` and its process group: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left in its group (a nanny's worker, a resource tracker)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout)


class DaskProcesses:
    """A scheduler and workers started as subprocesses; :meth:`stop` ends them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = directory / "scheduler.json"
        self.scheduler: subprocess.Popen[Any] | None = None
        self.workers: list[subprocess.Popen[Any]] = []
        self.address = ""

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[Any]:
        log = open(self.directory / f"{name}.log", "wb")  # the child keeps its own copy
        try:
            return subprocess.Popen(
                [*_dask_command(), *args],
                cwd=self.directory,
                env=subprocess_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        finally:
            log.close()

    def logs(self) -> str:
        """The tail of every process log (for failure messages)."""
        out = []
        for p in sorted(self.directory.glob("*.log")):
            out.append(
                f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            )
        return "\n".join(out)

    def start_scheduler(self) -> str:
        """Start the scheduler; return its address once it has written the scheduler file."""
        self.scheduler = self._spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(self.scheduler_file),
                "--idle-timeout",
                "900",  # a leaked scheduler ends itself
            ],
        )

        def address() -> str | None:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"the scheduler exited:\n{self.logs()}")
            try:
                return str(json.loads(self.scheduler_file.read_text())["address"])
            except (FileNotFoundError, ValueError, KeyError):
                return None

        self.address = wait_for(address, "the scheduler file")
        return self.address

    def start_worker(
        self,
        name: str,
        nthreads: int = 2,
        memory_limit: str = "0",
        nanny: bool = True,
    ) -> subprocess.Popen[Any]:
        """Start one worker process (with a nanny unless ``nanny=False``)."""
        args = [
            "worker",
            "--scheduler-file",
            str(self.scheduler_file),
            "--host",
            "127.0.0.1",
            "--name",
            name,
            "--nthreads",
            str(nthreads),
            "--memory-limit",
            memory_limit,
            "--local-directory",
            str(self.directory / f"{name}-space"),
            "--no-dashboard",
            "--death-timeout",
            "60",  # a worker whose scheduler is gone ends itself
            "--nanny" if nanny else "--no-nanny",
        ]
        proc = self._spawn(name, args)
        self.workers.append(proc)
        return proc

    def client(self, **kwargs: Any) -> Any:
        """A new ``distributed.Client`` of this cluster (never the default client)."""
        from distributed import Client

        return Client(scheduler_file=str(self.scheduler_file), set_as_default=False, **kwargs)

    def wait_for_workers(self, client: Any, n: int) -> None:
        """Wait until ``n`` workers are connected."""
        try:
            client.wait_for_workers(n, timeout=DEADLINE)
        except TimeoutError as e:
            raise TimeoutError(f"{n} workers did not connect:\n{self.logs()}") from e

    def stop(self) -> None:
        """Stop the workers, then the scheduler (by pid, with their process groups)."""
        for proc in self.workers:
            stop_process(proc)
        if self.scheduler is not None:
            stop_process(self.scheduler)


def worker_pids(client: Any) -> dict[str, int]:
    """``{worker address: pid}`` of the worker processes (not their nannies)."""
    return dict(client.run(os.getpid))


def cluster_idle(client: Any) -> bool:
    """Whether the scheduler knows no task and no worker holds or runs one."""
    if client.run_on_scheduler(_scheduler_tasks):
        return False
    return not any(client.run(_worker_tasks).values())


def _scheduler_tasks(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def _worker_tasks(dask_worker: Any) -> int:
    return len(dask_worker.state.tasks)


def start_cluster(
    directory: Path, n_workers: int = 2, nthreads: int = 2, **worker_options: Any
) -> tuple[DaskProcesses, Any]:
    """Start a scheduler and ``n_workers`` workers; return them and a connected client."""
    procs = DaskProcesses(directory)
    try:
        procs.start_scheduler()
        for i in range(n_workers):
            procs.start_worker(f"w{i}", nthreads=nthreads, **worker_options)
        client = procs.client()
        procs.wait_for_workers(client, n_workers)
    except BaseException:
        procs.stop()
        raise
    return procs, client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaskProcesses, Any]]:
    """A shared cluster (2 workers with nannies, 2 threads each) and a client of it, for
    tests that leave it as they found it (idle, every worker alive)."""
    procs, client = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield procs, client
    finally:
        client.close()
        procs.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., tuple[DaskProcesses, Any]]]:
    """A factory of clusters of their own (for tests that kill or constrain workers);
    every one is stopped after the test."""
    started: list[tuple[DaskProcesses, Any]] = []

    def make(**options: Any) -> tuple[DaskProcesses, Any]:
        procs, client = start_cluster(tmp_path / f"cluster{len(started)}", **options)
        started.append((procs, client))
        return procs, client

    yield make
    for procs, client in started:
        client.close()
        procs.stop()
