"""Faults the batch system causes, on a real SLURM, while `strata make --scheduler-file` saves.

Each test holds one partition at the gate of ``tests.cluster.plugins.Blocks`` (its
computation leaves a mark naming its process and waits for the test to release it), so the
fault strikes while a save is under way, and synchronises on real conditions only: marks on
disk, what the scheduler reports, what squeue and scontrol report.

* ``scancel`` of a worker job: the save finishes on the other worker (the cluster also asks
  for a job in place of the cancelled one); what died with the job is computed again;
  nothing is visible before the commit; gc has nothing to do afterwards.
* A worker job reaching its ``--lifetime`` (set below its walltime, as jobqueue.yaml does):
  the worker retires, its results move to the other worker instead of being computed again,
  and its job ends COMPLETED before the walltime; a new job is submitted in its place.
* Every worker job gone (cancelled while the partition is down, so their replacements wait):
  `strata make` fails with ``NoUsableWorkers`` after ``--worker-timeout`` and aborts its
  save: nothing is visible and nothing is left for gc; once the partition is up again the
  replacement jobs start and a rerun completes the save.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import get_task_stream

from strata.pipeline import Context
from strata.storage import DataKey, DirectoryFrontend
from strata.storage.layout import Layout, backend_key
from tests.cluster import plugins
from tests.cluster.conftest import DEADLINE, strata_command, subprocess_env, wait_for, worker_pids
from tests.cluster.helpers import attempt_dirs
from tests.slurm.batch import (
    FAULT_SITE,
    LIFETIME_SITE,
    PARTITION,
    SlurmServer,
    assert_same_data,
    command_line,
    job_ids,
)

pytestmark = pytest.mark.slow

SPEC = "tests.cluster.plugins:PLUGINS"
N = 12
HELD = N - 1  # the partition held at the gate: the last one, so the others run first
# 2.2 MB partitions: over 1/16 of the default chunk target (32 MiB), so each is written as
# its own segment by its own stage task as soon as it is computed
CONFIG = {"n_partitions": N, "rows": 8000, "width": 64}


class Make:
    """`strata make run_1 blocks` of ``CONFIG`` on the cluster, as a background process."""

    def __init__(self, store: Path, scheduler_file: Path, log: Path, *extra: str) -> None:
        self.argv = [
            *strata_command(),
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(store)),
            *("--scheduler-file", str(scheduler_file)),
            *(a for k, v in CONFIG.items() for a in ("-c", f"{k}={v}")),
            *extra,
        ]
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=store.parent,
                env=subprocess_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def result(self, timeout: float = 4 * DEADLINE) -> tuple[int, str]:
        """Wait for it (bounded); its exit status and output."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return code, self.log.read_text(errors="replace")

    def kill(self) -> None:
        """Kill it if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def gated(gate: Path) -> list[str]:
    return ["-c", f"gate_dir={gate}", "-c", f"gate_partition={HELD}"]


def release(gate: Path) -> None:
    (gate / "release").touch()


def key_of_blocks() -> DataKey:
    return Context(register=plugins.PLUGINS, config=CONFIG).key_for("run_1", "blocks")


def reference(tmp_path: Path) -> DirectoryFrontend:
    """``blocks`` of ``CONFIG`` saved by a clean run on threads."""
    fe = DirectoryFrontend(str(tmp_path / "reference"))
    with dask.config.set(scheduler="threads"):
        Context(storage=[fe], register=plugins.PLUGINS, config=CONFIG).make("run_1", "blocks")
    return fe


def nothing_visible(store: Path) -> bool:
    """Nothing is stored in ``store`` for run_1: no key is found or listed."""
    fe = DirectoryFrontend(str(store))
    return not fe.is_stored(key_of_blocks()) and fe.list("run_1") == []


def segments_written(store: Path) -> list[Path]:
    """The chunk files of the ``data`` field written so far, in any attempt."""
    key_dir = Path(Layout(str(store)).key_dir(backend_key(key_of_blocks())))
    return list(key_dir.glob("a*/s*/data/c/*"))


def gc_output(store: Path, *extra: str) -> str:
    argv = [*strata_command(), "gc", "-s", str(store), "--min-age", "0", *extra]
    proc = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{command_line(argv)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def stage_keys_held_by(client: Any, worker: str) -> list[str]:
    """The stage tasks (one per written segment) whose results ``worker`` holds."""
    held = client.has_what().get(worker, ())
    return [k for k in held if isinstance(k, str) and k.startswith("stage-")]


def written_all_but_one(client: Any, first: str) -> bool:
    """Whether ``first`` holds the segments of every partition but the held one; an error if
    it has gone already (its lifetime ran out before the test got there: a slow machine)."""
    if first not in client.nthreads():
        raise AssertionError(
            "the first worker reached its lifetime before it had written 11 segments and the "
            "second job had started; LIFETIME_SITE is too short for this machine"
        )
    return len(stage_keys_held_by(client, first)) == N - 1


def test_scancel_of_a_worker_job_mid_save(
    slurm: SlurmServer, worker_jobs: Any, tmp_path: Path
) -> None:
    ref = reference(tmp_path)
    cluster, client = worker_jobs(jobs=2, **FAULT_SITE)
    jobs, pids = job_ids(client), worker_pids(client)
    gate, store = tmp_path / "gate", tmp_path / "store"
    gate.mkdir()
    with get_task_stream(client) as ts:
        make = Make(store, cluster.scheduler_file, tmp_path / "make.log", *gated(gate))
        try:
            [(_, victim_pid)] = wait_for(lambda: plugins.marks(gate, "gate"), "the held partition")
            [victim] = [addr for addr, pid in pids.items() if pid == victim_pid]
            # the victim holds results of stage tasks: segments it wrote, that the commit needs
            lost = wait_for(lambda: stage_keys_held_by(client, victim), "segments on the victim")
            assert nothing_visible(store)
            slurm.check("scancel", jobs[victim])
            wait_for(lambda: victim not in client.nthreads(), "the scheduler to lose the job")
            wait_for(lambda: slurm.job_state(jobs[victim]) == "CANCELLED", "CANCELLED")
            assert nothing_visible(store)
            release(gate)
            code, out = make.result()
        finally:
            make.kill()
    assert code == 0, out
    assert f"made {key_of_blocks()}" in out
    [survivor] = [addr for addr in jobs if addr != victim]
    # what died with the job ran again: its segments (rewritten in the same attempt) and the
    # held partition, computed by the victim and again by another worker
    rerun = {t["key"] for t in ts.data if t["worker"] != victim}
    assert set(lost) <= rerun
    held = {pid for index, pid in plugins.marks(gate, "computed") if index == HELD}
    assert victim_pid in held and len(held) == 2
    assert pids[survivor] in {pid for _, pid in plugins.marks(gate, "computed")}
    key = key_of_blocks()
    fe = DirectoryFrontend(str(store))
    assert_same_data(fe, ref, key)
    assert len(attempt_dirs(store, key)) == 1
    assert "would remove 0 leftover attempt(s)" in gc_output(store, "--dry-run")
    # --jobs 2 keeps two jobs: one is submitted in place of the cancelled one
    wait_for(
        lambda: len(set(cluster.our_jobs()) - set(jobs.values())) == 1,
        "a job in place of the cancelled one",
    )


def test_worker_job_reaching_its_lifetime_hands_its_data_over(
    slurm: SlurmServer, worker_jobs: Any, tmp_path: Path
) -> None:
    ref = reference(tmp_path)
    # Another user's job holds every CPU but one: of the cluster's two jobs one runs, the
    # other waits in the queue until the test ends that job.
    other = slurm.check(
        *("sbatch", "--parsable", "--job-name", "other-user", "--output", "/dev/null"),
        *("--cpus-per-task", str(slurm.cpus - 1), "--time", "10", "--wrap", "sleep 600"),
    ).strip()
    try:
        wait_for(lambda: slurm.job_state(other) == "RUNNING", "the other job to run")
        cluster, client = worker_jobs(jobs=2, wait=False, **LIFETIME_SITE)
        cluster.wait_for_workers(client, 1)
        [(first, first_job)] = job_ids(client).items()
        waiting = set(cluster.our_jobs()) - {first_job}
        assert [cluster.our_jobs()[j] for j in waiting] == ["PENDING"]
        assert slurm.job_field(first_job, "TimeLimit") == "00:01:00"
        [first_pid] = worker_pids(client).values()
        gate, store = tmp_path / "gate", tmp_path / "store"
        gate.mkdir()
        with get_task_stream(client) as ts:
            make = Make(store, cluster.scheduler_file, tmp_path / "make.log", *gated(gate))
            try:
                # the first worker computed and wrote every partition but the held one
                wait_for(lambda: plugins.marks(gate, "gate"), "the held partition")
                wait_for(lambda: written_all_but_one(client, first), "the other segments")
                slurm.check("scancel", other)  # the second job starts
                cluster.wait_for_workers(client, 2)
                [second] = set(client.nthreads()) - {first}
                second_pid = worker_pids(client)[second]
                # the first worker's lifetime ends: it retires, its results move to the second,
                # which takes over the held partition
                wait_for(lambda: first not in client.nthreads(), "the first worker to retire")
                wait_for(
                    lambda: (HELD, second_pid) in plugins.marks(gate, "gate"),
                    "the second worker to take the held partition",
                )
                assert nothing_visible(store)
                release(gate)
                code, out = make.result()
            finally:
                make.kill()
        assert code == 0, out
        # nothing was computed twice but the partition that was running when the worker left
        stages = [t for t in ts.data if isinstance(t["key"], str) and t["key"].startswith("stage-")]
        assert len(stages) == len({t["key"] for t in stages}) == N
        assert sum(t["worker"] == first for t in stages) == N - 1
        computed = plugins.marks(gate, "computed")
        assert sorted(i for i, _ in computed) == [*range(N - 1), HELD, HELD]
        assert {pid for i, pid in computed if i != HELD} == {first_pid}
        # the first job ended on its own (the worker retired) before its walltime
        wait_for(
            lambda: slurm.job_state(first_job) not in ("RUNNING", "COMPLETING"),
            "the first job to end",
        )
        assert slurm.job_state(first_job) == "COMPLETED"
        key = key_of_blocks()
        assert_same_data(DirectoryFrontend(str(store)), ref, key)
        assert "would remove 0 leftover attempt(s)" in gc_output(store, "--dry-run")
        # and a job was submitted in its place
        wait_for(
            lambda: set(cluster.our_jobs()) - {first_job, *waiting},
            "a job in place of the retired one",
        )
    finally:
        slurm.command("scancel", other)


def test_all_worker_jobs_gone_is_a_named_error_and_a_rerun_completes(
    slurm: SlurmServer, worker_jobs: Any, tmp_path: Path
) -> None:
    ref = reference(tmp_path)
    cluster, client = worker_jobs(jobs=2, **FAULT_SITE)
    jobs = job_ids(client)
    gate, store = tmp_path / "gate", tmp_path / "store"
    gate.mkdir()
    # (the gate options are untracked: the key is that of the rerun without them)
    make = Make(
        store, cluster.scheduler_file, tmp_path / "make.log", *gated(gate), "--worker-timeout", "10"
    )
    try:
        wait_for(lambda: plugins.marks(gate, "gate"), "the held partition")
        wait_for(lambda: segments_written(store), "a segment to be written")
        # maintenance: the partition takes no new jobs and the running ones are cancelled
        slurm.check("scontrol", "update", f"PartitionName={PARTITION}", "State=DOWN")
        slurm.check("scancel", *jobs.values())
        wait_for(lambda: not client.nthreads(), "the scheduler to lose every worker")
        code, out = make.result(timeout=DEADLINE)  # --worker-timeout 10 bounds it
    finally:
        make.kill()
    assert code == 1, out
    assert "Error: NoUsableWorkers:" in out
    assert "has had no workers for" in out and "gave up after 10 s" in out
    key = key_of_blocks()
    # the client aborted its save: what the workers wrote is gone, nothing is left for gc
    assert nothing_visible(store)
    assert attempt_dirs(store, key) == []
    assert "would remove 0 leftover attempt(s)" in gc_output(store, "--dry-run")
    # the cluster asked for jobs in place of the cancelled ones: they wait for the partition
    wait_for(
        lambda: (
            [s for j, s in cluster.our_jobs().items() if j not in jobs.values()]
            == ["PENDING", "PENDING"]
        ),
        "two jobs waiting for the partition",
    )
    slurm.check("scontrol", "update", f"PartitionName={PARTITION}", "State=UP")
    rerun = Make(store, cluster.scheduler_file, tmp_path / "rerun.log")  # waits for a worker
    code, out = rerun.result()
    assert code == 0, out
    assert f"made {key}" in out
    assert_same_data(DirectoryFrontend(str(store)), ref, key)
    assert len(attempt_dirs(store, key)) == 1
    assert "would remove 0 leftover attempt(s)" in gc_output(store, "--dry-run")
