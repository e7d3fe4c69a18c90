"""The SLURM fixture (one session-wide one-node cluster) and clusters of worker jobs.

Without the SLURM and munge programs the tests fail with the install command when this is
root (CI installs them: .ci/install-system.sh); a user who is not root and lacks them gets a
skip that says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.slurm.batch import (
    INSTALL_HINT,
    PARTITION,
    SlurmServer,
    WorkerJobs,
    missing_programs,
    site_overrides,
)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmServer]:
    """munged, slurmctld and slurmd on this machine, their node idle; stopped afterwards."""
    missing = missing_programs()
    if missing:
        msg = f"SLURM/munge programs not found: {', '.join(missing)} ({INSTALL_HINT})"
        if os.geteuid() != 0:
            pytest.skip(msg + "; not root, so not installable here")
        pytest.fail(msg)
    server = SlurmServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def worker_jobs(
    slurm: SlurmServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[WorkerJobs, Any]]]:
    """A factory: ``make(jobs, **site_values)`` starts start_cluster.py with ``jobs`` worker
    jobs (SITE values of :func:`~tests.slurm.batch.site_overrides`, ``extra`` replacing
    some) and returns it and a client once every job's worker is connected. Everything is
    stopped after the test, and the partition is left up.
    """
    started: list[tuple[WorkerJobs, Any]] = []

    def make(jobs: int = 2, wait: bool = True, **extra: str) -> tuple[WorkerJobs, Any]:
        directory = tmp_path / f"cluster{len(started)}"
        directory.mkdir()
        overrides = site_overrides(directory, **extra)
        cluster = WorkerJobs(slurm, directory, jobs, overrides)
        try:
            cluster.start()
            client = cluster.client()
        except BaseException:
            cluster.stop()
            raise
        started.append((cluster, client))
        if wait:
            cluster.wait_for_workers(client, jobs)
        return cluster, client

    try:
        yield make
    finally:
        for cluster, client in started:
            client.close()
            cluster.stop()
        slurm.command("scontrol", "update", f"PartitionName={PARTITION}", "State=UP")
