"""A real one-node SLURM on this machine, and Dask clusters of SLURM jobs started by
``deploy/slurm/start_cluster.py``.

:class:`SlurmServer` generates a munge key and a ``slurm.conf`` in a temporary directory (one
node at 127.0.0.1 with this machine's CPUs and memory as ``slurmd -C`` reports them, one
partition, ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, no cgroups, free
ports, state, spool and logs in the directory), starts ``munged``, ``slurmctld -D`` and
``slurmd -D`` as child processes and waits with a bounded poll until ``sinfo`` reports the
node idle. :meth:`SlurmServer.stop` cancels every job and stops the daemons by pid.

:class:`WorkerJobs` runs ``start_cluster.py`` as a user would, with the repository's
``jobqueue.yaml`` and only its SITE values overridden for this node (:func:`site_overrides`),
and waits for the scheduler file it writes.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.cluster.conftest import DEADLINE, ROOT, stop_process, subprocess_env, wait_for

START_CLUSTER = ROOT / "deploy" / "slurm" / "start_cluster.py"
PARTITION = "strata"
NODE = "node1"
JOB_NAME = "strata-worker"  # jobqueue.yaml: jobqueue.slurm.name
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "scancel", "scontrol", "sbatch")
INSTALL_HINT = (
    "apt-get install -y --no-install-recommends slurm-wlm munge (.ci/install-system.sh does it)"
)


def find_program(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories (not on a normal user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=path)


def missing_programs() -> list[str]:
    """The SLURM and munge programs this machine lacks."""
    return [p for p in (*DAEMONS, *CLIENTS) if find_program(p) is None]


def free_port() -> int:
    """A TCP port that nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_hardware() -> tuple[int, int]:
    """``(CPUs, RealMemory in MiB)`` of this machine, as slurmd itself detects them."""
    out = subprocess.run(
        [str(find_program("slurmd")), "-C"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    memory = re.search(r"\bRealMemory=(\d+)", out)
    if not cpus or not memory:
        raise RuntimeError(f"cannot read CPUs and RealMemory from `slurmd -C`: {out!r}")
    return int(cpus[1]), int(memory[1])


def mungekey_argv(d: str) -> list[str]:
    """The command that makes the munge key in the daemons' directory ``d``."""
    return ["mungekey", "--create", "--keyfile", f"{d}/munge/munge.key"]


def munged_argv(d: str) -> list[str]:
    """munged in the foreground, everything of it in ``d``."""
    return [
        "munged",
        "--foreground",
        f"--key-file={d}/munge/munge.key",
        f"--socket={d}/run/munge.socket",
        f"--pid-file={d}/run/munged.pid",
        f"--log-file={d}/log/munged.log",
        f"--seed-file={d}/munge/munged.seed",
    ]


def slurmctld_argv(d: str) -> list[str]:
    """slurmctld in the foreground with the configuration in ``d``."""
    return ["slurmctld", "-D", "-f", f"{d}/slurm.conf"]


def slurmd_argv(d: str) -> list[str]:
    """slurmd in the foreground, as node :data:`NODE`, with the configuration in ``d``."""
    return ["slurmd", "-D", "-N", NODE, "-f", f"{d}/slurm.conf"]


def slurm_conf(
    d: str, host: str, user: str, cpus: str, memory: str, ctld_port: str, slurmd_port: str
) -> str:
    """The ``slurm.conf`` of the one-node cluster whose daemons keep everything in ``d``.

    ``host`` is this machine's short host name (slurmctld checks that it runs on the host
    the file names), ``cpus`` and ``memory`` (MiB) what ``slurmd -C`` reports.
    """
    return "\n".join(
        [
            "ClusterName=strata",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={d}/run/munge.socket",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/run/slurmctld.pid",
            f"SlurmdPidFile={d}/run/slurmd.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log",
            f"SlurmdLogFile={d}/log/slurmd.log",
            # no cgroups: processes tracked by parent pid, no task containment
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "KillWait=5",  # seconds between SIGTERM and SIGKILL of a cancelled job
            "MinJobAge=3600",  # ended jobs stay visible to `scontrol show job`
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} "
            f"CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


class SlurmServer:
    """munged, slurmctld and slurmd in a temporary directory; :meth:`stop` ends them."""

    def __init__(self) -> None:
        # Not under pytest's basetemp: munged wants every directory above its socket
        # searchable by all (pytest makes its base directory 0700).
        self.directory = Path(tempfile.mkdtemp(prefix="strata-slurm-"))
        self.directory.chmod(0o755)
        self.conf = self.directory / "slurm.conf"
        self.socket = self.directory / "run" / "munge.socket"
        self.log_dir = self.directory / "log"
        self.cpus, self.memory_mb = node_hardware()
        self.user = getpass.getuser()
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.env = {"SLURM_CONF": str(self.conf)}
        """What the SLURM client commands (and sbatch's jobs) need in their environment."""

    # -- processes ----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log_dir / f"{name}.out", "wb") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                [str(find_program(argv[0])), *argv[1:]],
                cwd=self.directory,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )

    def _check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        """The tail of every daemon log (for failure messages)."""
        out = []
        for p in sorted(self.log_dir.glob("*")):
            tail = p.read_text(errors="replace").splitlines()[-20:]
            out.append(f"--- {p.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def start(self) -> SlurmServer:
        """Generate the key and configuration, start the daemons, wait for an idle node."""
        d = self.directory
        for sub, mode in (("munge", 0o700), ("run", 0o755), ("state", 0o700), ("spool", 0o755)):
            (d / sub).mkdir(mode=mode)
            (d / sub).chmod(mode)  # whatever the umask
        self.log_dir.mkdir()
        argv = mungekey_argv(str(d))
        subprocess.run(
            [str(find_program(argv[0])), *argv[1:]], check=True, capture_output=True, timeout=60
        )
        self._spawn("munged", munged_argv(str(d)))

        def munge_ready() -> bool:
            self._check_running()
            return self.socket.exists()

        wait_for(munge_ready, "munged's socket")
        conf = slurm_conf(
            str(d),
            host=socket.gethostname().split(".")[0],
            user=self.user,
            cpus=str(self.cpus),
            memory=str(self.memory_mb),
            ctld_port=str(free_port()),
            slurmd_port=str(free_port()),
        )
        self.conf.write_text(conf)
        self._spawn("slurmctld", slurmctld_argv(str(d)))
        self._spawn("slurmd", slurmd_argv(str(d)))

        def idle() -> bool:
            self._check_running()
            out = self.command("sinfo", "--noheader", "--nodes", NODE, "--format", "%T")
            return out.returncode == 0 and out.stdout.strip() == "idle"

        try:
            wait_for(idle, f"sinfo to report node {NODE} idle")
        except TimeoutError as e:
            raise TimeoutError(f"{e}:\n{self.logs()}") from e
        return self

    def command(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster (output captured, not checked)."""
        return subprocess.run(
            [str(find_program(program)), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def check(self, program: str, *args: str) -> str:
        """:meth:`command`, whose failure is an error with its output; returns stdout."""
        out = self.command(program, *args)
        if out.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    # -- jobs ---------------------------------------------------------------------------------
    def jobs(self) -> dict[str, tuple[str, str]]:
        """``{job id: (name, state)}`` of the jobs squeue lists (pending and running)."""
        out = self.check("squeue", "--noheader", "--format", "%i|%j|%T")
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return {r[0]: (r[1], r[2]) for r in rows}

    def job_field(self, job_id: str, name: str) -> str:
        """One ``Name=value`` field of ``scontrol show job`` (ended jobs too)."""
        out = self.check("scontrol", "--oneliner", "show", "job", job_id)
        m = re.search(rf"\b{name}=(\S*)", out)
        if not m:
            raise RuntimeError(f"no {name} for job {job_id}: {out!r}")
        return m[1]

    def job_state(self, job_id: str) -> str:
        """The ``JobState`` of a job (``RUNNING``, ``COMPLETED``, ``CANCELLED``, ...)."""
        return self.job_field(job_id, "JobState")

    def cancel_all(self) -> None:
        """Cancel every job and wait until squeue lists none."""
        ids = list(self.jobs())
        if ids:
            self.command("scancel", *ids)
        wait_for(lambda: not self.jobs(), "every job to end")

    def stop(self) -> None:
        """Cancel the jobs left over, stop the daemons by pid and remove the directory."""
        try:
            if all(p.poll() is None for p in self.procs.values()) and self.procs:
                self.cancel_all()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                if name in self.procs:
                    stop_process(self.procs[name])
            shutil.rmtree(self.directory, ignore_errors=True)


def site_overrides(directory: Path, python: str = sys.executable, **extra: str) -> dict[str, str]:
    """The SITE values of ``jobqueue.yaml`` for this node, as ``--set`` values of
    start_cluster.py (``extra`` adds or replaces some, e.g. ``walltime``).

    One worker process of one thread and 2 GiB per job, so two jobs fit the two cores of
    these machines; ``python`` (this interpreter) instead of a virtual environment's (the
    prologue activates none); job logs, spill space and a dashboard on a free port in the
    test's ``directory``.
    """
    values = {
        "queue": PARTITION,
        "cores": "1",
        "processes": "1",
        "memory": "2GiB",
        "python": python,
        "job-script-prologue": json.dumps(["export PYTHONUNBUFFERED=1"]),
        "log-directory": str(directory / "jobs"),
        "local-directory": str(directory / "spill"),
        "scheduler-options": json.dumps({"dashboard_address": ":0"}),
    }
    values.update(extra)
    return values


FAULT_SITE = {"cores": "2", "job-cpu": "1"}
"""Site values of the fault tests: two threads per worker on one booked CPU, so one thread
can wait at a test's gate while the other works (the threads mostly wait on I/O)."""
LIFETIME_SITE = {
    **FAULT_SITE,
    "walltime": "00:01:00",
    "worker-extra-args": json.dumps(["--lifetime", "40s", "--lifetime-stagger", "0s"]),
}
"""...and of the lifetime test: the worker retires at 40 s, before its 1 min walltime (the
repository's jobqueue.yaml: 55 +- 4 min of 1 h)."""


def set_args(overrides: dict[str, str]) -> list[str]:
    """``--set KEY=VALUE`` arguments of start_cluster.py."""
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def start_cluster_argv(jobs: int, scheduler_file: str, overrides: dict[str, str]) -> list[str]:
    """start_cluster.py's command line as the README shows it (from the repository root)."""
    return [
        "python",
        str(START_CLUSTER.relative_to(ROOT)),
        *("--system", "slurm", "--jobs", str(jobs), "--scheduler-file", scheduler_file),
        *set_args(overrides),
    ]


class WorkerJobs:
    """``python deploy/slurm/start_cluster.py --system slurm --jobs N ...`` in the background.

    :meth:`start` waits for its scheduler file; :meth:`stop` ends it with SIGTERM (it cancels
    its jobs) and waits until squeue lists none of its jobs.
    """

    def __init__(
        self, slurm: SlurmServer, directory: Path, jobs: int, overrides: dict[str, str]
    ) -> None:
        self.slurm = slurm
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "jobs").mkdir(exist_ok=True)
        self.scheduler_file = directory / "scheduler.json"
        self.argv = start_cluster_argv(jobs, str(self.scheduler_file), overrides)
        self.proc: subprocess.Popen[Any] | None = None
        self.log = directory / "start_cluster.log"

    def logs(self) -> str:
        """The tail of start_cluster.py's output and of the jobs' logs."""
        out = []
        for p in [self.log, *sorted((self.directory / "jobs").glob("*"))]:
            if p.exists():
                tail = p.read_text(errors="replace").splitlines()[-15:]
                out.append(f"--- {p.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def start(self) -> WorkerJobs:
        """Start start_cluster.py and wait until its scheduler file is there."""
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / self.argv[1]), *self.argv[2:]],
                cwd=self.directory,
                env=subprocess_env(**self.slurm.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"start_cluster.py exited:\n{self.logs()}")
            return self.scheduler_file.exists()

        wait_for(ready, "start_cluster.py's scheduler file")
        return self

    @property
    def address(self) -> str:
        """The scheduler's address (from the scheduler file)."""
        return str(json.loads(self.scheduler_file.read_text())["address"])

    def client(self, **kwargs: Any) -> Any:
        """A new ``distributed.Client`` of this cluster (never the default client)."""
        from distributed import Client

        return Client(scheduler_file=str(self.scheduler_file), set_as_default=False, **kwargs)

    def wait_for_workers(self, client: Any, n: int) -> None:
        """Wait until ``n`` workers (jobs) are connected."""
        try:
            client.wait_for_workers(n, timeout=DEADLINE)
        except TimeoutError as e:
            raise TimeoutError(f"{n} worker jobs did not connect:\n{self.logs()}") from e

    def our_jobs(self) -> dict[str, str]:
        """``{job id: state}`` of this cluster's jobs that squeue lists."""
        return {i: s for i, (name, s) in self.slurm.jobs().items() if name == JOB_NAME}

    def stop(self) -> None:
        """SIGTERM start_cluster.py (it cancels its jobs); wait until they are gone."""
        if self.proc is not None:
            stop_process(self.proc, timeout=60)
        leftover = list(self.our_jobs())
        if leftover:  # a job it did not know of yet when it stopped
            self.slurm.command("scancel", *leftover)
        wait_for(lambda: not self.our_jobs(), "the worker jobs to end")


def job_ids(client: Any) -> dict[str, str]:
    """``{worker address: SLURM job id}`` of the connected workers."""
    return dict(client.run(_job_id))


def _job_id() -> str:
    return os.environ.get("SLURM_JOB_ID", "")


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one shell line (for messages)."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def assert_same_data(got: Any, want: Any, key: Any) -> None:
    """``key`` is stored in the frontends ``got`` and ``want`` with equal manifests (the same
    partition table, segments with the same size and checksum of every chunk and metadata
    document, codecs and dtype) and reads back as byte-equal arrays."""
    import dask

    mg, mw = got.get_metadata(key), want.get_metadata(key)
    assert mg.has_digests and mw.has_digests
    assert any(seg.chunks for seg in mg.segments), "no per-chunk digests to compare"
    assert mg.partitions == mw.partitions
    assert mg.segments == mw.segments
    assert mg.arrays == mw.arrays
    assert mg.dtype == mw.dtype
    assert mg.metadata == mw.metadata
    with dask.config.set(scheduler="sync"):
        a, b = got.loader(key).to_numpy(), want.loader(key).to_numpy()
    assert a.dtype == b.dtype and len(a) == sum(p.rows for p in mw.partitions) > 0
    assert a.tobytes() == b.tobytes()
